// Suite `publish`: batch outputs → Workers KV through the local stack's PublishCoordinator (wrangler dev, its alarms
// firing for real), for USERS changed user lists (default 100,000; BENCH_PUBLISH_USERS overrides), next to the
// floor measured in the same run: plain KV puts of the same count from a bench route, 900 per request (one
// invocation's budget, as one coordinator alarm). Then a re-publish with nothing changed (must write 0 keys) and
// one where 1% of the users changed (must write exactly those). Bar (docs/benchmarks.md): 100k changed users
// within one 15-minute cron interval, never above the per-invocation limits.
import { openPool } from "../../src/stores/db.ts";
import type { Suite, SuiteContext } from "../lib/suite.ts";

const DEFAULT_USERS = 100_000;
const CANDIDATES = 10;
const FLOOR_PUTS_PER_REQUEST = 900;
const CHANGED_SHARE = 0.01;
const POLL_MS = 1000;
const PUBLISH_TIMEOUT_MS = 30 * 60_000;

interface JobStats {
  written: number;
  tombstones: number;
  sharedWritten: number;
  steps: number;
  invocations: number;
  opsTotal: number;
  maxOpsPerInvocation: number;
  pointerWritten: boolean;
}

interface Status {
  job: { version: number; stats: JobStats } | null;
  lastVersion: number;
  versions: Array<{ version: number; stableWrites: number; runId: number | null }>;
}

/** Attempts per request: wrangler dev reloads the Worker when someone edits src/, dropping requests in flight. */
const ATTEMPTS = 5;

async function json<T>(ctx: SuiteContext, method: string, path: string): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      const res = await fetch(`${ctx.url}${path}`, { method, signal: AbortSignal.timeout(120_000) });
      const body = (await res.json()) as T;
      if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${JSON.stringify(body)}`);
      return body;
    } catch (error) {
      // Every request here is idempotent (puts of the same keys, status reads) except start, which answers busy.
      if (attempt >= ATTEMPTS) throw error;
      ctx.log(`${method} ${path}: ${String(error)}; retrying`);
      await new Promise((resolve) => setTimeout(resolve, 2000));
    }
  }
}

async function sql(ctx: SuiteContext, text: string, params: unknown[] = []) {
  const pool = openPool({ databaseUrl: ctx.vars.DATABASE_URL ?? "", localWsProxy: ctx.vars.NEON_LOCAL_WS_PROXY });
  try {
    return (await pool.query(text, params)).rows as Array<Record<string, unknown>>;
  } finally {
    await pool.end();
  }
}

/** Starts a publish, waits for it, and reads its run's stats from batch_runs. */
async function publish(ctx: SuiteContext, label: string) {
  const started = await json<{ status: string; runId: number }>(ctx, "POST", "/__bench/publish/start");
  if (started.status !== "started") throw new Error(`${label}: publish did not start: ${JSON.stringify(started)}`);
  const t0 = performance.now();
  for (;;) {
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    const status = await json<Status>(ctx, "GET", "/__bench/publish/status");
    if (!status.job) break;
    ctx.log(`${label}: ${status.job.stats.written} keys written, ${status.job.stats.invocations} alarms so far`);
    if (performance.now() - t0 > PUBLISH_TIMEOUT_MS) throw new Error(`${label}: no end after 30 minutes`);
  }
  const [row] = await sql(ctx, "select status, stats from batch_runs where id = $1", [started.runId]);
  const stats = row?.stats as JobStats & { durationMs: number; keysWritten: number; keysPerSecond: number };
  const wallS = (performance.now() - t0) / 1000;
  return {
    status: row?.status,
    stableKeysWritten: stats.written + stats.tombstones,
    keysWritten: stats.keysWritten,
    durationS: Math.round(stats.durationMs / 100) / 10,
    keysPerSecond: stats.keysPerSecond,
    alarms: stats.invocations,
    maxKvOpsPerInvocation: stats.maxOpsPerInvocation,
    kvOpsTotal: stats.opsTotal,
    pointerWritten: stats.pointerWritten,
    polledWallS: Math.round(wallS * 10) / 10,
  };
}

const suite: Suite = {
  name: "publish",
  description: "publish N changed user lists to KV via the PublishCoordinator's alarms vs plain KV puts; re-publish",
  async run(ctx) {
    const users = Number(process.env.BENCH_PUBLISH_USERS ?? DEFAULT_USERS);
    ctx.log(`publish: seeding ${users} users x ${CANDIDATES} candidates into user_candidates`);
    const t0 = performance.now();
    const [model] = await sql(
      ctx,
      "insert into model_versions (model, version, status) values ('user_candidates', $1, 'ready') returning id",
      [`bench-${Date.now()}`],
    );
    await sql(
      ctx,
      `insert into user_candidates (user_key, product_ids, scores, reasons, model_version)
       select 'u:bench' || g, array_agg('p' || ((g * 7 + r) % 4000) order by r), array_agg(1.0 / r + (g % 13) / 100.0 order by r),
              array_agg('category:c' || (g % 20) order by r), $1
       from generate_series(1, $2) g, generate_series(1, $3) r
       group by g`,
      [model?.id, users, CANDIDATES],
    );
    const seedS = (performance.now() - t0) / 1000;

    // The floor: the same number of plain puts through the binding, 900 per invocation.
    ctx.log(`floor: ${users} plain KV puts, ${FLOOR_PUTS_PER_REQUEST} per request`);
    const f0 = performance.now();
    for (let done = 0; done < users; done += FLOOR_PUTS_PER_REQUEST) {
      const n = Math.min(FLOOR_PUTS_PER_REQUEST, users - done);
      await json(ctx, "POST", `/__bench/kv-put?n=${n}&prefix=${done}`);
    }
    const floorS = (performance.now() - f0) / 1000;
    const floor = { puts: users, durationS: Math.round(floorS * 10) / 10, putsPerSecond: Math.round(users / floorS) };
    ctx.log(`floor: ${floor.putsPerSecond} puts/s`);

    const full = await publish(ctx, "publish.full");
    const unchanged = await publish(ctx, "publish.unchanged");
    const changed = Math.round(users * CHANGED_SHARE);
    await sql(
      ctx,
      "update user_candidates set scores[1] = scores[1] + 1 where user_key in (select 'u:bench' || g from generate_series(1, $1) g)",
      [changed],
    );
    const partial = await publish(ctx, "publish.onePercent");

    const results = {
      users,
      candidatesPerUser: CANDIDATES,
      seedS: Math.round(seedS * 10) / 10,
      floor,
      full,
      unchanged,
      onePercent: { changedUsers: changed, ...partial },
    };
    const relative = {
      full: {
        against: "floor.putsPerSecond",
        keysPerSecondRatio: Math.round((full.keysPerSecond / floor.putsPerSecond) * 1000) / 1000,
        projected100kUsersS: Math.round(100_000 / Math.max(1, full.keysPerSecond)),
      },
    };
    const notes = [
      "floor: plain ONLINE_STORE.put of ~1 KB values from /__bench/kv-put, 900 per request (one invocation's budget), " +
        "16 in flight; the publish writes through the same binding from the coordinator's alarms.",
      "full: every user list is new. keysPerSecond = stable keys written / (pointer write − start), from the publish " +
        "run's batch_runs stats; alarms = coordinator invocations; maxKvOpsPerInvocation must stay <= 1,000.",
      "unchanged: nothing changed since the previous publish: stableKeysWritten and keysWritten must be 0 and no " +
        "pointer is written.",
      `onePercent: ${changed} users' lists changed: exactly those keys + the pointer are written.`,
      "Local KV (miniflare) is consistent: the coordinator's settle wait before the pointer (60 s in production) is 0 " +
        "locally, so durations exclude it.",
    ];
    if (unchanged.keysWritten !== 0) notes.push(`WARNING unchanged: ${unchanged.keysWritten} keys written`);
    if (full.maxKvOpsPerInvocation > 1000) notes.push("WARNING full: an invocation exceeded 1,000 KV operations");
    return { floor: { path: "/__bench/kv-put" }, results, relative, notes };
  },
};

export default suite;
