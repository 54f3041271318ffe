-- One row per rule that matched a request, from the governor (on the request and prompt) and the answerer's
-- output guard (on the answer): which rule, of which rule-set version, found what and did what. Deduplicated on
-- (stage, rule_id, request_id, position), so a replayed batch counts once; kept a year.
CREATE TABLE IF NOT EXISTS switchyard.rule_verdicts
(
    request_id    String,
    store_id      LowCardinality(String),
    stage         LowCardinality(String),
    position      UInt16,
    rule_id       LowCardinality(String),
    rule_version  LowCardinality(String),
    kind          LowCardinality(String),
    action        LowCardinality(String),
    verdict       LowCardinality(String),
    route         LowCardinality(String),
    detail        String CODEC(ZSTD(3)),
    decided_at    DateTime64(6, 'UTC') CODEC(Delta, ZSTD(1)),
    CONSTRAINT stage_known CHECK stage IN ('governor', 'answerer')
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(decided_at)
ORDER BY (stage, rule_id, request_id, position)
TTL toDateTime(decided_at) + INTERVAL 365 DAY DELETE;
