-- Dead letters' original bytes are sealed to the operator's X25519 key (services/runtime/sealing.py): the key id
-- they were sealed to, '' for rows written before (bytes as consumed). `switchyard dead-letters show --open`
-- opens them with the private key; the associated data is the dead letter's id, derived from stage, topic,
-- partition and offset.
ALTER TABLE switchyard.dead_letters ADD COLUMN IF NOT EXISTS original_sealed_with LowCardinality(String) DEFAULT '';
