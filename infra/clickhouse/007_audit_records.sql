-- One row per audit record released on `audited`: the whole decision as JSON (the Audited record in Avro's
-- JSON form, PII tokenised) next to the columns that `verify`, `replay` and the dashboard filter on. The hash
-- chain is per chain_key (the store): each row carries the hash of the one before it (seq - 1).
-- Retention is a regulatory choice: seven years here, changed by a later migration, never by editing this one.
CREATE TABLE IF NOT EXISTS switchyard.audit_records
(
    request_id           String,
    audit_id             String,
    chain_key            LowCardinality(String),
    seq                  UInt64,
    prev_hash            String,
    hash                 String,
    recorded_at          DateTime64(6, 'UTC') CODEC(Delta, ZSTD(1)),
    store_id             LowCardinality(String),
    intent               LowCardinality(String),
    route                LowCardinality(String),
    route_table_version  LowCardinality(String),
    verdict              LowCardinality(String),
    policy_version       LowCardinality(String),
    provider             LowCardinality(String),
    model                LowCardinality(String),
    prompt_template      LowCardinality(String),
    prompt_hash          String,
    record               String CODEC(ZSTD(3))
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(recorded_at)
ORDER BY (chain_key, seq, request_id)
TTL toDateTime(recorded_at) + INTERVAL 7 YEAR DELETE;
