-- The learning loop's model lifecycle: every registration, shadow start, promotion and rollback, with the
-- route-table version it wrote and why, so "which model answered this intent when" is one query.
CREATE TABLE IF NOT EXISTS switchyard.model_events
(
    event_id             String,
    event                LowCardinality(String),
    model_id             String,
    kind                 LowCardinality(String),
    intents              Array(String),
    route_table_version  String,
    reason               String CODEC(ZSTD(3)),
    details              String CODEC(ZSTD(3)),
    created_at           DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    CONSTRAINT event_known CHECK event IN ('registered', 'shadow_started', 'shadow_stopped', 'promoted',
                                           'rolled_back', 'promotion_refused')
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(created_at)
ORDER BY (model_id, event_id);
