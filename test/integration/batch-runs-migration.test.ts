// Migrations 0010 and 0011: a row a run of a version before 0009 (load, refresh, compute) or 0011 (publish) left
// `running` (no lease, no holder) is given the lease its kind runs under, so the next run that takes that lease closes
// it (src/batch/runs.ts closeAbandonedRuns). The real migrations' SQL, run again on rows shaped as the earlier code
// wrote them, against a database of this file's own.
import { readFileSync } from "node:fs";
import { expect, it } from "vitest";
import { closeAbandonedRuns, PUBLISH_RUN_LEASE, startRun } from "../../src/batch/runs.ts";
import { ownDatabase } from "../support/own-database.ts";

const own = ownDatabase("lastmile_test_batch_runs_migration");
const migrations = ["0010_batch_runs_running_before_0009.sql", "0011_batch_runs_publish_lease.sql"].map((file) =>
  readFileSync(new URL(`../../migrations/${file}`, import.meta.url), "utf8"),
);

it("lets the next run of a lease close the rows earlier versions left running, and no other", async () => {
  const legacy = async (kind: string, status = "running") =>
    (
      await own.pool.query<{ id: number }>(
        "insert into batch_runs (kind, trigger, status) values ($1, 'cron', $2) returning id::int as id",
        [kind, status],
      )
    ).rows[0]?.id;
  const load = await legacy("load");
  const refresh = await legacy("refresh");
  const compute = await legacy("compute");
  const publish = await legacy("publish");
  const finished = await legacy("load", "ok");
  const finishedPublish = await legacy("publish", "failed");
  // A row of this version: the migration leaves its lease and holder as they are.
  const current = await startRun(own.db, { kind: "load", trigger: "cron" }, { name: "loader", holder: "current" });

  for (const migration of [...migrations, ...migrations]) await own.pool.query(migration); // safe to run again

  const closedLoads = await closeAbandonedRuns(own.db, { name: "loader", holder: "next" });
  const closedRefreshes = await closeAbandonedRuns(own.db, { name: "refresh", holder: "next" });
  const closedPublishes = await closeAbandonedRuns(own.db, { name: PUBLISH_RUN_LEASE, holder: "next" });
  expect(closedLoads.sort((a, b) => a - b)).toEqual([load, current].sort((a, b) => (a ?? 0) - (b ?? 0)));
  expect(closedRefreshes.sort((a, b) => a - b)).toEqual([refresh, compute]);
  expect(closedPublishes).toEqual([publish]);
  const { rows } = await own.pool.query<{ id: number; status: string }>(
    "select id::int as id, status from batch_runs where id = any($1) order by id",
    [[finished, finishedPublish]],
  );
  expect(rows).toEqual([
    { id: finished, status: "ok" },
    { id: finishedPublish, status: "failed" },
  ]);
});
