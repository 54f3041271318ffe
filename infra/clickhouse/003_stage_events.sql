-- One row per request per stage: latency, tokens, cost and outcome. Deduplicated on (stage, request_id)
-- (the latest insert wins), so a replayed or retried stage leaves one row; kept 90 days.
CREATE TABLE IF NOT EXISTS switchyard.stage_events
(
    request_id   String,
    store_id     LowCardinality(String),
    stage        LowCardinality(String),
    route        LowCardinality(String),
    provider     LowCardinality(String),
    model        LowCardinality(String),
    started_at   DateTime64(6, 'UTC') CODEC(Delta, ZSTD(1)),
    duration_ms  Float64 CODEC(Gorilla, ZSTD(1)),
    tokens_in    UInt32 CODEC(T64, ZSTD(1)),
    tokens_out   UInt32 CODEC(T64, ZSTD(1)),
    cost_usd     Float64 CODEC(Gorilla, ZSTD(1)),
    outcome      LowCardinality(String),
    error        String CODEC(ZSTD(3)),
    CONSTRAINT outcome_known CHECK outcome IN ('ok', 'dead_lettered', 'error', 'blocked', 'escalated')
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(started_at)
ORDER BY (stage, request_id)
TTL toDateTime(started_at) + INTERVAL 90 DAY DELETE;
