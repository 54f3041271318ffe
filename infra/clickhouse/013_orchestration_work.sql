-- The orchestration-work split, per minute and category, in the reference form (routing, governance, context
-- stitching, monitoring, policy, data prep, audit), measured from the stage timings:
--   routing            router processing (started → finished)
--   context_stitching  stitcher processing
--   governance         governor processing, plus the answerer's time outside the model call (output guard,
--                      failover handling): answerer processing minus the provider latency
--   policy             time of a stage that records itself as `policy` (none does yet: policy rules run inside
--                      the governor and are counted there)
--   data_prep          every stage's decode and validation of its input (received → started)
--   audit              auditor processing (hash chaining)
--   monitoring         the telemetry writer's decode, mapping and insert time (telemetry_batches)
-- The model's own time is not orchestration work and is left out. Percentages: share of the sum over a window.
CREATE VIEW IF NOT EXISTS switchyard.orchestration_work AS
SELECT minute, category, sum(work_ms) AS work_ms
FROM
(
    SELECT
        minute,
        multiIf(stage = 'router', 'routing', stage = 'stitcher', 'context_stitching', stage = 'governor', 'governance',
                stage = 'answerer', 'governance', stage = 'policy', 'policy', stage = 'auditor', 'audit', 'other')
            AS category,
        duration_ms_sum AS work_ms
    FROM switchyard.stage_minute
    UNION ALL
    SELECT minute, 'data_prep' AS category, prep_ms_sum AS work_ms FROM switchyard.stage_minute
    UNION ALL
    SELECT minute, 'governance' AS category, -model_ms_sum AS work_ms FROM switchyard.answer_minute
    UNION ALL
    SELECT toStartOfMinute(flushed_at) AS minute, 'monitoring' AS category, decode_ms + insert_ms AS work_ms
    FROM switchyard.telemetry_batches
)
GROUP BY minute, category;
