-- The W3C trace id of the request each row belongs to (the `traceparent` Kafka header every stage continues), so
-- one request's stage rows, dead letters included, are found by trace: WHERE trace_id = '4bf92f35…'. '' where the
-- record carried none (rows written before this column). The bloom filter skips granules without the id.
ALTER TABLE switchyard.stage_events ADD COLUMN IF NOT EXISTS trace_id String DEFAULT '' AFTER work_ms;
ALTER TABLE switchyard.stage_events ADD INDEX IF NOT EXISTS trace_id_bloom trace_id TYPE bloom_filter(0.01) GRANULARITY 4;
