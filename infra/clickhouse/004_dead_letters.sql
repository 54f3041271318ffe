-- Records a stage could not process, with the reason and the original bytes, one row per source offset
-- (topic, partition, offset), so a replayed dead letter is stored once.
CREATE TABLE IF NOT EXISTS switchyard.dead_letters
(
    stage        LowCardinality(String),
    topic        LowCardinality(String),
    `partition`  UInt32,
    `offset`     UInt64,
    request_id   Nullable(String),
    error_type   LowCardinality(String),
    reason       String CODEC(ZSTD(3)),
    original     String CODEC(ZSTD(3)),
    failed_at    DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1))
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(failed_at)
ORDER BY (topic, `partition`, `offset`)
TTL toDateTime(failed_at) + INTERVAL 180 DAY DELETE;
