-- One row per feedback event from the `feedback` topic (ratings, corrections, escalation outcomes, route
-- corrections), joined to its request on request_id. Deduplicated on feedback_id, so a replay counts once.
CREATE TABLE IF NOT EXISTS switchyard.feedback
(
    feedback_id       String,
    request_id        String,
    kind              LowCardinality(String),
    rating            Nullable(Int8),
    corrected_text    Nullable(String) CODEC(ZSTD(3)),
    corrected_intent  LowCardinality(Nullable(String)),
    outcome           LowCardinality(Nullable(String)),
    author            LowCardinality(String),
    created_at        DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    attributes        Map(String, String) CODEC(ZSTD(3))
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(created_at)
ORDER BY (request_id, feedback_id)
TTL toDateTime(created_at) + INTERVAL 365 DAY DELETE;
