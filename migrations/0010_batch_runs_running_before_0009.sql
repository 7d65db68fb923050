-- Rows left `running` by runs of a version before 0009 carry no lease or holder, so closeAbandonedRuns (src/batch/runs.ts)
-- would never match them. Give each the lease its kind runs under and a holder of its own: the next run that takes
-- that lease closes it as `abandoned` if its run is gone; a run still going (it holds the lease) finishes it itself.
UPDATE "batch_runs"
SET "lease" = CASE "kind" WHEN 'load' THEN 'loader' ELSE 'refresh' END,
    "holder" = 'before-0009:' || "id"
WHERE "status" = 'running' AND "kind" IN ('load', 'refresh', 'compute') AND "holder" IS NULL;
