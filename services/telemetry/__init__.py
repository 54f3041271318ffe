"""The telemetry writer: its own consumer group on `audited` and the dead-letter topics, batch-inserting
stage timings, answers and dead letters into ClickHouse."""
