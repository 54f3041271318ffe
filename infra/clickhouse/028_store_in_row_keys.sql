-- A request id names a request only within its store (clients choose their ids), so the ReplacingMergeTree tables
-- keyed on a request id are keyed on the store too: another store's row with the same request id no longer
-- replaces this store's when parts merge. ClickHouse cannot add an existing column to a sorting key, so each table
-- is copied into a new one with the wider key and the two are exchanged in one step (the materialized views on
-- them follow the name); the old data is then dropped.
CREATE TABLE IF NOT EXISTS switchyard.stage_events_by_store AS switchyard.stage_events
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(started_at)
ORDER BY (stage, store_id, request_id)
TTL toDateTime(started_at) + INTERVAL 90 DAY DELETE;

INSERT INTO switchyard.stage_events_by_store SELECT * FROM switchyard.stage_events;

EXCHANGE TABLES switchyard.stage_events AND switchyard.stage_events_by_store;

DROP TABLE switchyard.stage_events_by_store;

CREATE TABLE IF NOT EXISTS switchyard.rule_verdicts_by_store AS switchyard.rule_verdicts
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(decided_at)
ORDER BY (stage, rule_id, store_id, request_id, position)
TTL toDateTime(decided_at) + INTERVAL 365 DAY DELETE;

INSERT INTO switchyard.rule_verdicts_by_store SELECT * FROM switchyard.rule_verdicts;

EXCHANGE TABLES switchyard.rule_verdicts AND switchyard.rule_verdicts_by_store;

DROP TABLE switchyard.rule_verdicts_by_store;
