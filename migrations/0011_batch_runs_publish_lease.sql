-- Rows left `running` by publishes and catalogue pushes of a version before 0011 carry no lease or holder. Give each the
-- lease the publish coordinator now opens its rows under (src/publish/coordinator.ts PUBLISH_RUN_LEASE) and a holder of
-- its own: the coordinator's next publish start or push, which runs only when no job of its own is running, closes it as
-- `abandoned`; a publish still going at the upgrade finishes its row itself.
UPDATE "batch_runs"
SET "lease" = 'publish',
    "holder" = 'before-0011:' || "id"
WHERE "status" = 'running' AND "kind" = 'publish' AND "holder" IS NULL;
