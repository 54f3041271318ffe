-- One row per request seen on the `requests` topic. ReplacingMergeTree keyed on (store_id, request_id),
-- versioned by ingested_at, so replaying the topic does not double count: query with FINAL (or argMax)
-- for exact counts before background merges catch up.
CREATE TABLE IF NOT EXISTS switchyard.requests
(
    request_id   String,
    store_id     LowCardinality(String),
    terminal_id  LowCardinality(String),
    customer_id  Nullable(String),
    channel      LowCardinality(String),
    locale       LowCardinality(String),
    text         String CODEC(ZSTD(3)),
    created_at   DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    attributes   Map(String, String) CODEC(ZSTD(3)),
    topic        LowCardinality(String),
    `partition`  UInt32,
    `offset`     UInt64 CODEC(T64, ZSTD(1)),
    ingested_at  DateTime64(6, 'UTC') DEFAULT now64(6) CODEC(Delta, ZSTD(1))
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(created_at)
ORDER BY (store_id, request_id)
TTL toDateTime(created_at) + INTERVAL 365 DAY DELETE;
