-- When the stage fetched the record: received_at → started_at is time queued inside the stage's batch,
-- and the previous stage's finish → received_at is time in Kafka between the two.
ALTER TABLE switchyard.stage_events ADD COLUMN IF NOT EXISTS received_at DateTime64(6, 'UTC') CODEC(Delta, ZSTD(1)) AFTER model;
ALTER TABLE switchyard.stage_events ADD COLUMN IF NOT EXISTS finished_at DateTime64(6, 'UTC') CODEC(Delta, ZSTD(1)) AFTER started_at;
