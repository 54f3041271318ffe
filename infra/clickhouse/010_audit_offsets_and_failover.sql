-- Where each audit record sits on the `audited` topic: the auditor recovers its chain heads from ClickHouse up
-- to the highest offset stored here, then reads only the topic's tail after it.
ALTER TABLE switchyard.audit_records ADD COLUMN IF NOT EXISTS kafka_topic LowCardinality(String) DEFAULT '' AFTER record;
ALTER TABLE switchyard.audit_records ADD COLUMN IF NOT EXISTS kafka_partition UInt32 DEFAULT 0 AFTER kafka_topic;
ALTER TABLE switchyard.audit_records ADD COLUMN IF NOT EXISTS kafka_offset UInt64 DEFAULT 0 AFTER kafka_partition;
-- The provider chain as tried when the first provider failed ("primary: timeout", then the one that answered);
-- empty when the first answered. Failover counts are read from it.
ALTER TABLE switchyard.answers ADD COLUMN IF NOT EXISTS failover Array(String) AFTER audit_hash;
