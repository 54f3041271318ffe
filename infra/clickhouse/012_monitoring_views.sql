-- Per-minute rollups, kept up to date by materialized views on every insert into the raw tables; dashboards
-- and the README's queries read these instead of scanning raw rows. Quantiles are stored as states and merged
-- at query time (quantilesMerge), so any grouping of the key (by stage, route, provider or store) is exact for
-- counts and sums. The views see every insert: a batch the telemetry writer replays after a crash (rare) is
-- counted twice here, while the raw tables deduplicate it under FINAL.
CREATE TABLE IF NOT EXISTS switchyard.stage_minute
(
    minute           DateTime('UTC'),
    stage            LowCardinality(String),
    route            LowCardinality(String),
    provider         LowCardinality(String),
    store_id         LowCardinality(String),
    events           SimpleAggregateFunction(sum, UInt64),
    failed           SimpleAggregateFunction(sum, UInt64),
    duration_ms_sum  SimpleAggregateFunction(sum, Float64),
    prep_ms_sum      SimpleAggregateFunction(sum, Float64),
    duration_ms_q    AggregateFunction(quantiles(0.5, 0.9, 0.95, 0.99), Float64),
    tokens_in        SimpleAggregateFunction(sum, UInt64),
    tokens_out       SimpleAggregateFunction(sum, UInt64),
    cost_usd         SimpleAggregateFunction(sum, Float64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (minute, stage, route, provider, store_id)
TTL minute + INTERVAL 400 DAY DELETE;
CREATE MATERIALIZED VIEW IF NOT EXISTS switchyard.stage_minute_mv TO switchyard.stage_minute AS
SELECT
    toStartOfMinute(started_at) AS minute, stage, route, provider, store_id,
    count() AS events,
    countIf(outcome != 'ok') AS failed,
    sum(duration_ms) AS duration_ms_sum,
    sum(greatest(dateDiff('microsecond', received_at, started_at), 0) / 1000.0) AS prep_ms_sum,
    quantilesState(0.5, 0.9, 0.95, 0.99)(duration_ms) AS duration_ms_q,
    sum(toUInt64(tokens_in)) AS tokens_in,
    sum(toUInt64(tokens_out)) AS tokens_out,
    sum(cost_usd) AS cost_usd
FROM switchyard.stage_events
GROUP BY minute, stage, route, provider, store_id;
-- Answers per minute by route, provider, store and verdict: end-to-end latency, tokens, cost, failovers.
CREATE TABLE IF NOT EXISTS switchyard.answer_minute
(
    minute            DateTime('UTC'),
    route             LowCardinality(String),
    provider          LowCardinality(String),
    store_id          LowCardinality(String),
    verdict           LowCardinality(String),
    answers           SimpleAggregateFunction(sum, UInt64),
    failovers         SimpleAggregateFunction(sum, UInt64),
    end_to_end_ms_sum SimpleAggregateFunction(sum, Float64),
    end_to_end_ms_q   AggregateFunction(quantiles(0.5, 0.9, 0.95, 0.99), Float64),
    model_ms_sum      SimpleAggregateFunction(sum, Float64),
    tokens_in         SimpleAggregateFunction(sum, UInt64),
    tokens_out        SimpleAggregateFunction(sum, UInt64),
    cost_usd          SimpleAggregateFunction(sum, Float64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (minute, route, provider, store_id, verdict)
TTL minute + INTERVAL 400 DAY DELETE;
CREATE MATERIALIZED VIEW IF NOT EXISTS switchyard.answer_minute_mv TO switchyard.answer_minute AS
SELECT
    toStartOfMinute(audited_at) AS minute, route, provider, store_id, verdict,
    count() AS answers,
    countIf(length(failover) > 0) AS failovers,
    sum(end_to_end_ms) AS end_to_end_ms_sum,
    quantilesState(0.5, 0.9, 0.95, 0.99)(end_to_end_ms) AS end_to_end_ms_q,
    sum(model_ms) AS model_ms_sum,
    sum(toUInt64(tokens_in)) AS tokens_in,
    sum(toUInt64(tokens_out)) AS tokens_out,
    sum(cost_usd) AS cost_usd
FROM switchyard.answers
GROUP BY minute, route, provider, store_id, verdict;
-- Dead letters per minute by stage and error type.
CREATE TABLE IF NOT EXISTS switchyard.dead_letter_minute
(
    minute        DateTime('UTC'),
    stage         LowCardinality(String),
    error_type    LowCardinality(String),
    dead_letters  SimpleAggregateFunction(sum, UInt64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (minute, stage, error_type)
TTL minute + INTERVAL 400 DAY DELETE;
CREATE MATERIALIZED VIEW IF NOT EXISTS switchyard.dead_letter_minute_mv TO switchyard.dead_letter_minute AS
SELECT toStartOfMinute(failed_at) AS minute, stage, error_type, count() AS dead_letters
FROM switchyard.dead_letters
GROUP BY minute, stage, error_type;
-- Governance and policy verdicts per minute by rule (and rule-set version) and the action it took.
CREATE TABLE IF NOT EXISTS switchyard.rule_minute
(
    minute        DateTime('UTC'),
    stage         LowCardinality(String),
    rule_id       LowCardinality(String),
    rule_version  LowCardinality(String),
    kind          LowCardinality(String),
    action        LowCardinality(String),
    matches       SimpleAggregateFunction(sum, UInt64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (minute, stage, rule_id, rule_version, kind, action)
TTL minute + INTERVAL 400 DAY DELETE;
CREATE MATERIALIZED VIEW IF NOT EXISTS switchyard.rule_minute_mv TO switchyard.rule_minute AS
SELECT toStartOfMinute(decided_at) AS minute, stage, rule_id, rule_version, kind, action, count() AS matches
FROM switchyard.rule_verdicts
GROUP BY minute, stage, rule_id, rule_version, kind, action;
-- Model calls per minute by provider, model and outcome (OK, TIMEOUT, ERROR, ...): provider health.
CREATE TABLE IF NOT EXISTS switchyard.model_call_minute
(
    minute        DateTime('UTC'),
    provider      LowCardinality(String),
    model         LowCardinality(String),
    outcome       LowCardinality(String),
    calls         SimpleAggregateFunction(sum, UInt64),
    latency_ms_q  AggregateFunction(quantiles(0.5, 0.9, 0.95, 0.99), Float64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (minute, provider, model, outcome)
TTL minute + INTERVAL 400 DAY DELETE;
CREATE MATERIALIZED VIEW IF NOT EXISTS switchyard.model_call_minute_mv TO switchyard.model_call_minute AS
SELECT
    toStartOfMinute(started_at) AS minute, provider, model, outcome,
    count() AS calls,
    quantilesState(0.5, 0.9, 0.95, 0.99)(latency_ms) AS latency_ms_q
FROM switchyard.model_calls
GROUP BY minute, provider, model, outcome;
-- Accuracy signals per minute: ratings (sum and count, and how many were 1 or 2), corrections, escalation
-- outcomes and route corrections, by feedback kind and outcome.
CREATE TABLE IF NOT EXISTS switchyard.feedback_minute
(
    minute        DateTime('UTC'),
    kind          LowCardinality(String),
    outcome       LowCardinality(String),
    events        SimpleAggregateFunction(sum, UInt64),
    rated         SimpleAggregateFunction(sum, UInt64),
    rating_sum    SimpleAggregateFunction(sum, Int64),
    low_ratings   SimpleAggregateFunction(sum, UInt64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (minute, kind, outcome)
TTL minute + INTERVAL 400 DAY DELETE;
CREATE MATERIALIZED VIEW IF NOT EXISTS switchyard.feedback_minute_mv TO switchyard.feedback_minute AS
SELECT
    toStartOfMinute(created_at) AS minute, kind, ifNull(outcome, '') AS outcome,
    count() AS events,
    countIf(rating IS NOT NULL) AS rated,
    sum(toInt64(ifNull(rating, 0))) AS rating_sum,
    countIf(rating <= 2) AS low_ratings
FROM switchyard.feedback
GROUP BY minute, kind, outcome;
-- Backfill the rollups from what the raw tables already hold.
INSERT INTO switchyard.stage_minute
SELECT
    toStartOfMinute(started_at) AS minute, stage, route, provider, store_id, count(), countIf(outcome != 'ok'),
    sum(duration_ms), sum(greatest(dateDiff('microsecond', received_at, started_at), 0) / 1000.0),
    quantilesState(0.5, 0.9, 0.95, 0.99)(duration_ms), sum(toUInt64(tokens_in)), sum(toUInt64(tokens_out)),
    sum(cost_usd)
FROM switchyard.stage_events
GROUP BY minute, stage, route, provider, store_id;
INSERT INTO switchyard.answer_minute
SELECT
    toStartOfMinute(audited_at) AS minute, route, provider, store_id, verdict, count(),
    countIf(length(failover) > 0), sum(end_to_end_ms), quantilesState(0.5, 0.9, 0.95, 0.99)(end_to_end_ms),
    sum(model_ms), sum(toUInt64(tokens_in)), sum(toUInt64(tokens_out)), sum(cost_usd)
FROM switchyard.answers
GROUP BY minute, route, provider, store_id, verdict;
INSERT INTO switchyard.dead_letter_minute
SELECT toStartOfMinute(failed_at) AS minute, stage, error_type, count()
FROM switchyard.dead_letters
GROUP BY minute, stage, error_type;
INSERT INTO switchyard.feedback_minute
SELECT
    toStartOfMinute(created_at) AS minute, kind, ifNull(outcome, '') AS outcome, count(),
    countIf(rating IS NOT NULL), sum(toInt64(ifNull(rating, 0))), countIf(rating <= 2)
FROM switchyard.feedback
GROUP BY minute, kind, outcome;
