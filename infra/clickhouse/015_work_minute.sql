-- Orchestration work per minute, stage and category: the sum of stage_events.work_ms, one row per map entry.
CREATE TABLE IF NOT EXISTS switchyard.work_minute
(
    minute    DateTime('UTC'),
    stage     LowCardinality(String),
    category  LowCardinality(String),
    records   UInt64,
    work_ms   Float64
)
ENGINE = SummingMergeTree((records, work_ms))
PARTITION BY toYYYYMM(minute)
ORDER BY (minute, stage, category)
TTL minute + INTERVAL 400 DAY DELETE;
CREATE MATERIALIZED VIEW IF NOT EXISTS switchyard.work_minute_mv TO switchyard.work_minute AS
SELECT minute, stage, category, count() AS records, sum(ms) AS work_ms
FROM
(
    SELECT toStartOfMinute(started_at) AS minute, stage, work_ms AS entries
    FROM switchyard.stage_events
)
ARRAY JOIN mapKeys(entries) AS category, mapValues(entries) AS ms
GROUP BY minute, stage, category;
