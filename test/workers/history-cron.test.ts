// History checks of overlapping cron runs: a refresh (the cron's load → compute → publish) started while another
// is running is skipped; several loader runs started at once; and a run that stalled past its lease's expiry while
// another took over (fencing). Whatever overlaps, every acknowledged event is loaded exactly once.
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import type { LoaderHooks } from "../../src/batch/loader.ts";
import { REFRESH_LEASE, type RefreshReport, runRefresh } from "../../src/batch/refresh.ts";
import type { PublishCoordinator } from "../../src/publish/coordinator.ts";
import { openDb } from "../../src/publish/db.ts";
import { gate, loaderRedis } from "./batch-helpers.ts";
import {
  drainAndCheck,
  expectClean,
  flushSessions,
  type HistoryRun,
  load,
  loaderNames,
  noSleep,
  runsEndedAfterEach,
  sendAll,
  userKeys,
} from "./history-helpers.ts";
import { dbSettings, drain } from "./publish-helpers.ts";

const begin = runsEndedAfterEach();

/** One refresh (the cron's load → compute → publish) in the run's schema, loading with the run's group. */
async function refresh(
  r: HistoryRun,
  coordinator: DurableObjectStub<PublishCoordinator>,
  hooks?: LoaderHooks,
): Promise<RefreshReport> {
  const { db, end } = openDb(dbSettings(), r.schema);
  try {
    return await runRefresh(
      { db, redis: loaderRedis(), coordinator },
      {
        trigger: "cron",
        schema: r.schema,
        loader: { ...loaderNames(r), batchSize: 50, sleep: noSleep, ...(hooks ? { hooks } : {}) },
        publish: { settleMs: 0 },
      },
    );
  } finally {
    await end();
  }
}

async function sentAndFlushed(label: string, seed: number): Promise<HistoryRun> {
  const r = await begin(label, { users: 12, events: 300, seed });
  await sendAll(r, r.batches);
  await flushSessions(userKeys(r));
  return r;
}

describe("history: overlapping cron runs", () => {
  it("a refresh started while another runs is skipped; the running one loads everything once", {
    timeout: 120_000,
  }, async () => {
    const r = await sentAndFlushed("cron-overlap", 501);
    const coordinator = env.PUBLISH_COORDINATOR.getByName(`history-${r.prefix}`);
    const parked = gate();
    const release = gate();
    // The first refresh parks after its first committed batch until the second has come and gone.
    const first = refresh(r, coordinator, {
      afterCommit: async ({ batch }) => {
        if (batch === 1) {
          parked.open();
          await release.wait;
        }
      },
    });
    await parked.wait;
    const second = await refresh(r, coordinator);
    release.open();
    const done = await first;
    expect(second.status).toBe("skipped");
    expect(done.status, JSON.stringify(done)).toBe("ok");
    expect(done.load).toMatchObject({ status: "ok" });
    // The publish it started runs in the coordinator's alarms: let it finish before the schema goes.
    await drain(coordinator);
    expectClean(await drainAndCheck(r));
  });

  it("loader runs started at once: one holds the lease, the others skip", { timeout: 120_000 }, async () => {
    const r = await sentAndFlushed("cron-burst", 502);
    const reports = await Promise.all([1, 2, 3].map(() => load(r, { batchSize: 20 })));
    expect(reports.filter((x) => x.status === "ok").length).toBeGreaterThanOrEqual(1);
    expect(reports.every((x) => x.status !== "failed")).toBe(true);
    expectClean(await drainAndCheck(r));
  });

  it("a run stalled past its lease's expiry cannot commit once another run took over", {
    timeout: 120_000,
  }, async () => {
    const r = await sentAndFlushed("cron-stall", 503);
    const parked = gate();
    const release = gate();
    // One writer: while batch 2 is parked nothing else of this run commits or extends the lease.
    const stalled = load(r, {
      batchSize: 20,
      writers: 1,
      leaseTtlMs: 1_500,
      hooks: {
        afterCommit: async ({ batch }) => {
          if (batch === 2) {
            parked.open();
            await release.wait;
          }
        },
      },
    });
    await parked.wait;
    // The stalled run's lease runs out; the next cron run takes over and re-reads what the stalled one left pending.
    await new Promise((resolve) => setTimeout(resolve, 2_000));
    const takeover = await load(r, { batchSize: 20 });
    expect(takeover).toMatchObject({ status: "ok", stoppedBy: "drained" });
    release.open();
    const late = await stalled;
    expect(late).toMatchObject({ status: "failed", stoppedBy: "lease_lost" });
    expectClean(await drainAndCheck(r));
  });
  it("a refresh lease left behind holds back compute and publish, never the load", { timeout: 120_000 }, async () => {
    const r = await sentAndFlushed("cron-stuck", 504);
    // A refresh that lost its database before it could release its lease: it holds for REFRESH_LEASE_TTL_MS.
    await r.q("insert into leases (name, holder, expires_at) values ($1, 'lost', now() + interval '15 minutes')", [
      REFRESH_LEASE,
    ]);
    const coordinator = env.PUBLISH_COORDINATOR.getByName(`history-${r.prefix}`);
    const report = await refresh(r, coordinator);
    expect(report.status).toBe("skipped");
    expect(report.compute).toMatchObject({ status: "skipped" });
    expect(report.load).toMatchObject({ status: "ok" });
    const [loaded] = await r.q<{ n: number }>("select count(*)::int as n from events where message_id like $1", [
      `${r.prefix}-%`,
    ]);
    expect(loaded?.n).toBe(r.history.summary().acknowledged);
    expectClean(await drainAndCheck(r));
  });
});
