-- The orchestration-work split, per minute and category, in the reference form (routing, governance, context
-- stitching, monitoring, policy, data prep, audit), from the work each stage measured itself (work_minute):
--   routing            router: the request's share of its intent-classifier batch, and the route-table decision
--   context_stitching  stitcher: assembling, ranking, budgeting and rendering the context (not the wait for
--                      Weaviate's answer)
--   data_prep          stitcher: cleaning passages, flagging instruction-like text, near-duplicate detection
--   governance         governor: its share of the PII and classifier batches, redaction and verdicts; answerer:
--                      the output guard, its toxicity-batch share and restoring PII around the model call
--   policy             governor: fact extraction and the policy rules
--   audit              auditor: building and hash-chaining the audit record
--   monitoring         the telemetry writer's decode, mapping and insert time (telemetry_batches)
-- Time spent waiting (in Kafka, in a stage's queue, for a micro-batch, for the model) is not work; the model's
-- own time is not orchestration work. Percentages: share of the sum over a window.
CREATE OR REPLACE VIEW switchyard.orchestration_work AS
SELECT minute, category, sum(work_ms) AS work_ms
FROM
(
    SELECT minute, category, work_ms FROM switchyard.work_minute
    UNION ALL
    SELECT toStartOfMinute(flushed_at) AS minute, 'monitoring' AS category, decode_ms + insert_ms AS work_ms
    FROM switchyard.telemetry_batches
)
GROUP BY minute, category;
