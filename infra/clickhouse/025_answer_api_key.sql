-- The gateway API key that asked for each answer (request attribute `api_key`; '' for requests produced straight
-- to Kafka): the gateway returns an answer only to the key that asked, and warms its per-store request windows
-- from the last minute of gateway answers after a restart.
ALTER TABLE switchyard.answers ADD COLUMN IF NOT EXISTS api_key LowCardinality(String) DEFAULT '';
