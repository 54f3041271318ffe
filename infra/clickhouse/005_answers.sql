-- One row per final answer released from `audited`: what the store was told, by which route and model,
-- at what cost and end-to-end latency. Deduplicated on request_id, so a replayed batch is counted once.
CREATE TABLE IF NOT EXISTS switchyard.answers
(
    request_id        String,
    store_id          LowCardinality(String),
    channel           LowCardinality(String),
    intent            LowCardinality(String),
    route             LowCardinality(String),
    route_kind        LowCardinality(String),
    route_reason      String CODEC(ZSTD(3)),
    verdict           LowCardinality(String),
    provider          LowCardinality(String),
    model             LowCardinality(String),
    answer            String CODEC(ZSTD(3)),
    tokens_in         UInt32,
    tokens_out        UInt32,
    cost_usd          Float64,
    model_ms          Float64,
    created_at        DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    audited_at        DateTime64(6, 'UTC') CODEC(Delta, ZSTD(1)),
    end_to_end_ms     Float64,
    audit_hash        String
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(created_at)
ORDER BY (store_id, request_id)
TTL toDateTime(created_at) + INTERVAL 365 DAY DELETE;
