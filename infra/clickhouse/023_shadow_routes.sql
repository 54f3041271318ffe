-- What a candidate intent classifier (a registered router model in shadow mode) predicted for each live request,
-- beside the classifier that actually routed it: both read the same embedding, the candidate is never obeyed.
-- Compared in ClickHouse with the route corrections and confirmations in feedback (joined on request_id).
CREATE TABLE IF NOT EXISTS switchyard.shadow_routes
(
    request_id           String,
    candidate            LowCardinality(String),
    candidate_version    LowCardinality(String),
    intent               LowCardinality(String),
    confidence           Float64,
    incumbent_version    LowCardinality(String),
    incumbent_intent     LowCardinality(String),
    incumbent_confidence Float64,
    created_at           DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1))
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(created_at)
ORDER BY (candidate, request_id)
TTL toDateTime(created_at) + INTERVAL 180 DAY DELETE;
