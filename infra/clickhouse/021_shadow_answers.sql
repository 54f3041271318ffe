-- What a candidate model answered in shadow mode, beside what the incumbent released for the same request: the
-- candidate runs in parallel on live traffic, off the critical path, and is never shown to anyone. Compared
-- with the incumbent in ClickHouse by joining feedback (the corrected answer) and audit_records (the intent)
-- on request_id. `answered` is false where the candidate declined (below its confidence threshold).
CREATE TABLE IF NOT EXISTS switchyard.shadow_answers
(
    request_id           String,
    candidate            LowCardinality(String),
    candidate_version    LowCardinality(String),
    answered             Bool,
    confidence           Float64,
    answer               String CODEC(ZSTD(3)),
    latency_ms           Float64,
    cost_usd             Float64,
    incumbent_provider   LowCardinality(String),
    incumbent_model      LowCardinality(String),
    incumbent_answer     String CODEC(ZSTD(3)),
    incumbent_latency_ms Float64,
    incumbent_cost_usd   Float64,
    created_at           DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1))
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(created_at)
ORDER BY (candidate, request_id)
TTL toDateTime(created_at) + INTERVAL 180 DAY DELETE;
