// batch_runs (src/batch/runs.ts): what an operator reads in a failed run's `error` is Postgres's own SQLSTATE and
// message, not drizzle's "Failed query: <statement> params: <values>" wrapper (which says only which statement
// failed, and carries the batch's data). A real refused statement through the real driver. And no row stays
// `running` for good: a retried start reuses its row, and the next holder of a lease closes a dead run's rows.
import { env } from "cloudflare:workers";
import { sql as sqlTag } from "drizzle-orm";
import { describe, expect, it } from "vitest";
import { REFRESH_LEASE, runRefresh } from "../../src/batch/refresh.ts";
import { ABANDONED_ERROR, closeAbandonedRuns, finishRun, startRun } from "../../src/batch/runs.ts";
import { openDb } from "../../src/publish/db.ts";
import { loaderRedis, sql, streamNames, withDb } from "./batch-helpers.ts";
import { createSchema, dbSettings, drain, dropSchema } from "./publish-helpers.ts";

it("records a refused statement's SQLSTATE and message as the run's error", async () => {
  const error = await withDb((db) =>
    db.execute(sqlTag`select ${"not a date"}::date`).then(
      () => null,
      (e) => e,
    ),
  );
  expect(error).not.toBeNull();
  const id = await withDb((db) => startRun(db, { kind: "compute", trigger: "admin" }));
  await withDb((db) => finishRun(db, id, "failed", {}, error));
  const [row] = await sql<{ error: string }>("select error from batch_runs where id = $1", [id]);
  expect(row?.error).toMatch(/^22007 invalid input syntax for type date/);
  expect(row?.error).not.toContain("Failed query");
});

describe("runs that stop without closing their row", () => {
  it("a retried start gets the row its first attempt inserted", async () => {
    const lease = { name: `lease-${crypto.randomUUID()}`, holder: crypto.randomUUID() };
    const first = await withDb((db) => startRun(db, { kind: "load", trigger: "cron" }, lease));
    const again = await withDb((db) => startRun(db, { kind: "load", trigger: "cron" }, lease));
    expect(again).toBe(first);
    const rows = await sql<{ n: number }>("select count(*)::int as n from batch_runs where holder = $1", [
      lease.holder,
    ]);
    expect(rows[0]?.n).toBe(1);
  });

  it("the next refresh and load close the rows of runs that died holding their leases", {
    timeout: 60_000,
  }, async () => {
    const { schema, q } = await createSchema("abandoned");
    const names = streamNames("abandoned");
    const coordinator = env.PUBLISH_COORDINATOR.getByName(`test-${crypto.randomUUID()}`);
    const { db, end } = openDb(dbSettings(), schema);
    try {
      // What a refresh killed during its compute leaves: its row and its compute's row `running`, its lease held
      // until it expires; the same for a load killed mid-run, and a run of another lease, which stays as it is.
      const deadRefresh = { name: REFRESH_LEASE, holder: "killed-refresh" };
      const deadLoad = { name: names.leaseName, holder: "killed-load" };
      const refreshId = await startRun(db, { kind: "refresh", trigger: "cron" }, deadRefresh);
      const computeId = await startRun(db, { kind: "compute", trigger: "cron", parentId: refreshId }, deadRefresh);
      const loadId = await startRun(db, { kind: "load", trigger: "cron" }, deadLoad);
      const otherId = await startRun(db, { kind: "load", trigger: "cron" }, { name: "another-lease", holder: "x" });
      const publishId = await startRun(db, { kind: "publish", trigger: "cron" });
      await q(
        "insert into leases (name, holder, expires_at) values ($1, $2, now() - interval '1 second'), ($3, $4, now() - interval '1 second')",
        [deadRefresh.name, deadRefresh.holder, deadLoad.name, deadLoad.holder],
      );

      const report = await runRefresh(
        { db, redis: loaderRedis(), coordinator },
        { trigger: "cron", schema, loader: { ...names, sleep: async () => {} }, publish: { settleMs: 0 } },
      );
      expect(report.status).toBe("ok");
      await drain(coordinator);

      const rows = await q<{ id: number; status: string; error: string | null; finished: boolean }>(
        "select id::int, status, error, finished_at is not null as finished from batch_runs where id = any($1) order by id",
        [[refreshId, computeId, loadId, otherId, publishId]],
      );
      expect(rows.map((r) => [r.id, r.status, r.finished])).toEqual([
        [refreshId, "abandoned", true],
        [computeId, "abandoned", true],
        [loadId, "abandoned", true],
        [otherId, "running", false],
        [publishId, "running", false],
      ]);
      expect(rows[0]?.error).toBe(ABANDONED_ERROR);
      // The new runs closed their own rows as usual.
      const fresh = await q<{ kind: string; status: string }>(
        "select kind, status from batch_runs where id = $1 or parent_id = $1 order by id",
        [report.runId],
      );
      expect(fresh.map((r) => `${r.kind}:${r.status}`)).toEqual(["refresh:ok", "load:ok", "compute:ok", "publish:ok"]);
    } finally {
      await end();
      await dropSchema(schema);
    }
  });

  it("a run that was only late, not dead, still records its outcome over `abandoned`", async () => {
    const lease = { name: `lease-${crypto.randomUUID()}`, holder: "slow" };
    const id = await withDb((db) => startRun(db, { kind: "load", trigger: "cron" }, lease));
    const closed = await withDb((db) => closeAbandonedRuns(db, { name: lease.name, holder: "next" }));
    expect(closed).toEqual([id]);
    await withDb((db) => finishRun(db, id, "ok", { events: 3 }));
    const [row] = await sql<{ status: string; error: string | null }>(
      "select status, error from batch_runs where id = $1",
      [id],
    );
    expect(row).toEqual({ status: "ok", error: null });
  });
});
