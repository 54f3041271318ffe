-- What each stage spent working on a record, per orchestration category (routing, context_stitching, data_prep,
-- governance, policy, audit), in ms, waiting excluded: the stage's StageTiming.work_ms, measured by the stage.
ALTER TABLE switchyard.stage_events ADD COLUMN IF NOT EXISTS work_ms Map(String, Float64) AFTER error;
