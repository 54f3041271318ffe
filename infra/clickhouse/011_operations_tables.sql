-- One row per model call from the `model.calls` topic (the answerer's calls, probes included): provider health,
-- timeouts and errors by provider and model. Deduplicated on call_id; kept 90 days.
CREATE TABLE IF NOT EXISTS switchyard.model_calls
(
    call_id      String,
    request_id   Nullable(String),
    provider     LowCardinality(String),
    model        LowCardinality(String),
    started_at   DateTime64(6, 'UTC') CODEC(Delta, ZSTD(1)),
    latency_ms   Float64 CODEC(Gorilla, ZSTD(1)),
    ttft_ms      Nullable(Float64),
    tokens_in    UInt32,
    tokens_out   UInt32,
    outcome      LowCardinality(String),
    error        String CODEC(ZSTD(3))
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(started_at)
ORDER BY (provider, call_id)
TTL toDateTime(started_at) + INTERVAL 90 DAY DELETE;
-- Consumer lag by stage, sampled every few seconds by the telemetry process: per partition, the group's
-- committed offset against the partition's last stable offset (what a read_committed consumer can reach).
CREATE TABLE IF NOT EXISTS switchyard.consumer_lag
(
    sampled_at   DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    stage        LowCardinality(String),
    group_id     LowCardinality(String),
    topic        LowCardinality(String),
    `partition`  UInt32,
    committed    Int64,
    end_offset   Int64,
    lag          Int64
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(sampled_at)
ORDER BY (stage, sampled_at, topic, `partition`)
TTL toDateTime(sampled_at) + INTERVAL 30 DAY DELETE;
-- The telemetry writer's own work, one row per flushed batch: records decoded, rows written, and the time spent
-- decoding and mapping (decode_ms) and inserting (insert_ms). The "monitoring" share of the orchestration work.
CREATE TABLE IF NOT EXISTS switchyard.telemetry_batches
(
    flushed_at   DateTime64(6, 'UTC') CODEC(Delta, ZSTD(1)),
    records      UInt32,
    audited      UInt32,
    `rows`       UInt32,
    decode_ms    Float64,
    insert_ms    Float64
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(flushed_at)
ORDER BY flushed_at
TTL toDateTime(flushed_at) + INTERVAL 90 DAY DELETE;
