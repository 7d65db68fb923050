// Suite `soak`: collection and ranking together under sustained load for minutes, on the UCI demo store (seeded,
// refreshed and published by the real batch loop; sessions recorded through the collection API, as in `rank`).
// Windows of WINDOW_S seconds, each running at the same time browser batches into POST /v1/batch (10 events, one
// visitor, fresh message ids) and POST /v1/rank with 100 candidates for the store's users; after each window the
// resident memory of the workerd processes is sampled. Reported per window and overall: p50/p99, throughput, errors
// and non-2xx, and memory (first vs last window: growth). Then RANK_ONLY_WINDOWS windows of ranking alone (no new
// events stored), to tell growth that follows the stored data from growth that does not. The floor (the empty
// endpoint) is measured before and after the soak in the same run at 10 connections (the soak's total), and before
// it at 5 (each of its loads' own count). BENCH_SOAK_SECONDS sets the total (default 180); BENCH_SOAK_VISITORS the
// number of visitors the browser batches go to (default 2,000). With few visitors every object reaches the bounds of
// its tables within the first windows (docs/session.md), so the later windows show the steady state: memory must
// then be flat.
import { LOCAL_KEYS } from "../../scripts/lib/local-keys.ts";
import { seedUciRetail } from "../../scripts/lib/seed.ts";
import {
  candidatesFor,
  database,
  readStore,
  recordSessions,
  refreshAndPublish,
  streamLength,
  waitForOutboxes,
} from "../lib/rank-data.ts";
import { floorFor, type Measurement, relativeTo, type Suite } from "../lib/suite.ts";
import { HeapSampler, type HeapWindow, workerdRssMiB } from "../lib/workerd-memory.ts";

const DEFAULT_SECONDS = 180;
const WINDOW_S = 30;
const EVENTS = 20_000;
const USERS = 300;
const CONNECTIONS_EACH = 5;
const DEFAULT_VISITORS = 2_000;
/** Windows of ranking alone after the mixed windows. */
const RANK_ONLY_WINDOWS = 3;

const RANK_HEADERS = { "content-type": "application/json", authorization: `Bearer ${LOCAL_KEYS.serverKey}` };
const COLLECT_HEADERS = {
  "content-type": "application/json",
  authorization: `Basic ${Buffer.from(`${LOCAL_KEYS.writeKey}:`).toString("base64")}`,
};

function browserBatch(run: string, i: number, visitors: number, products: readonly string[]): string {
  const now = new Date().toISOString();
  const anonymousId = `soak-visitor-${i % visitors}`;
  const batch = Array.from({ length: 10 }, (_, j) => {
    const product = products[(i * 7 + j) % products.length];
    return j === 0
      ? { type: "page", name: "Home", anonymousId, messageId: `${run}-${i}-${j}`, timestamp: now }
      : {
          type: "track",
          event: j === 9 ? "Product Added" : "Product Viewed",
          anonymousId,
          messageId: `${run}-${i}-${j}`,
          timestamp: now,
          properties: { product_id: product },
        };
  });
  return JSON.stringify({ batch, sentAt: now });
}

const summary = (m: Measurement) => ({
  requests: m.requests,
  rps: m.rps,
  p50Ms: m.p50Ms,
  p99Ms: m.p99Ms,
  maxMs: m.maxMs,
  errors: m.errors,
  non2xx: m.non2xx,
});

const suite: Suite = {
  name: "soak",
  description: `collection (POST /v1/batch) and ranking (POST /v1/rank) together for minutes, then ranking alone: p50/p99, errors, workerd memory per ${WINDOW_S} s window`,
  async run(ctx) {
    const run = `soak-${Date.now().toString(36)}`;
    const totalS = Number(process.env.BENCH_SOAK_SECONDS ?? DEFAULT_SECONDS);
    const windows = Math.max(2, Math.round(totalS / WINDOW_S));
    const visitors = Number(process.env.BENCH_SOAK_VISITORS ?? DEFAULT_VISITORS);
    if (!Number.isInteger(visitors) || visitors < 1) throw new Error("BENCH_SOAK_VISITORS must be a positive integer");
    const { q, end } = database(ctx);
    try {
      ctx.log(`soak: seeding the UCI demo store (newest ${EVENTS} purchases), refreshing and publishing`);
      await seedUciRetail({
        settings: { databaseUrl: ctx.vars.DATABASE_URL ?? "", localWsProxy: ctx.vars.NEON_LOCAL_WS_PROXY },
        newestEvents: EVENTS,
        endAt: new Date(),
      });
      await refreshAndPublish(ctx, q);
      const data = await readStore(q, USERS, 10);
      const users = data.users;
      if (users.length < 50) throw new Error(`only ${users.length} users have a published batch list`);
      const streamBefore = await streamLength(ctx);
      await waitForOutboxes(ctx, streamBefore, await recordSessions(ctx, q, data, run));
      const rankBodies = users.map((u, i) =>
        JSON.stringify({ userId: u.userId, candidates: candidatesFor(data, u, 100, i + 1) }),
      );
      const products = [...data.products.keys()];
      // Every visitor's object exists before the soak: memory growth then means growth, not new objects.
      ctx.log(`soak: one batch for each of ${visitors} visitors first`);
      // Retried like a client would: a reload of the Worker under wrangler dev drops connections for a moment.
      const send = async (body: string) => {
        for (let attempt = 1; ; attempt++) {
          const res = await fetch(`${ctx.url}/v1/batch`, { method: "POST", headers: COLLECT_HEADERS, body }).catch(
            () => null,
          );
          await res?.arrayBuffer();
          if (res?.status === 200) return;
          if (attempt >= 5)
            throw new Error(`warming the visitors: POST /v1/batch answered ${res?.status ?? "nothing"}`);
          await new Promise((r) => setTimeout(r, 1000 * attempt));
        }
      };
      for (let i = 0; i < visitors; i += 20) {
        const n = Math.min(20, visitors - i);
        await Promise.all(
          Array.from({ length: n }, (_, k) => send(browserBatch(`${run}-warm`, i + k, visitors, products))),
        );
      }
      // At the soak's two counts: 10 connections in all, 5 for each of its loads (what a window's rank is compared with).
      const floorBefore = await ctx.measureFloor([CONNECTIONS_EACH, 10]);
      const rssStart = workerdRssMiB();
      const heap = new HeapSampler();
      const series: Array<{
        window: number;
        collect: ReturnType<typeof summary>;
        rank: ReturnType<typeof summary>;
        rssMiB: number;
        heap: HeapWindow;
      }> = [];
      let batchNo = 0;
      let lastRank: Measurement | undefined;
      for (let w = 0; w < windows; w++) {
        ctx.log(`soak: window ${w + 1}/${windows} (${WINDOW_S} s)`);
        heap.start();
        const [collect, rank] = await Promise.all([
          ctx.measure(`soak.collect.w${w + 1}`, {
            path: `/v1/batch (10 events, one visitor of ${visitors})`,
            method: "POST",
            headers: COLLECT_HEADERS,
            next: () => ({ path: "/v1/batch", body: browserBatch(run, batchNo++, visitors, products) }),
            connections: CONNECTIONS_EACH,
            durationS: WINDOW_S,
            warmUpRequests: 0,
          }),
          ctx.measure(`soak.rank.w${w + 1}`, {
            path: "/v1/rank (100 candidates, user {i})",
            method: "POST",
            headers: RANK_HEADERS,
            next: (i) => ({ path: "/v1/rank", body: rankBodies[i % rankBodies.length] as string }),
            connections: CONNECTIONS_EACH,
            durationS: WINDOW_S,
            warmUpRequests: 0,
          }),
        ]);
        lastRank = rank;
        series.push({
          window: w + 1,
          collect: summary(collect),
          rank: summary(rank),
          rssMiB: workerdRssMiB(),
          heap: await heap.stop(),
        });
      }
      // Then ranking alone (no new events stored): does memory keep growing without new data?
      const rankOnly: Array<{
        window: number;
        rank: ReturnType<typeof summary>;
        rssMiB: number;
        heap: HeapWindow;
      }> = [];
      for (let w = 0; w < RANK_ONLY_WINDOWS; w++) {
        ctx.log(`soak: ranking alone, window ${w + 1}/${RANK_ONLY_WINDOWS} (${WINDOW_S} s)`);
        heap.start();
        const rank = await ctx.measure(`soak.rankOnly.w${w + 1}`, {
          path: "/v1/rank (100 candidates, user {i})",
          method: "POST",
          headers: RANK_HEADERS,
          next: (i) => ({ path: "/v1/rank", body: rankBodies[i % rankBodies.length] as string }),
          connections: CONNECTIONS_EACH * 2,
          durationS: WINDOW_S,
          warmUpRequests: 0,
        });
        rankOnly.push({ window: w + 1, rank: summary(rank), rssMiB: workerdRssMiB(), heap: await heap.stop() });
      }
      // Still serving after minutes of load? (A crashed or restarting Worker answers nothing here.)
      const healthAfter = await fetch(`${ctx.url}/health`, { signal: AbortSignal.timeout(10_000) })
        .then((res) => res.status)
        .catch(() => 0);
      const floorAfter = await ctx.measureFloor([10]);

      const sum = (pick: (s: (typeof series)[number]) => number) => series.reduce((a, s) => a + pick(s), 0);
      const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? Number.NaN;
      const requests =
        sum((s) => s.collect.requests + s.rank.requests) + rankOnly.reduce((a, s) => a + s.rank.requests, 0);
      const failures =
        sum((s) => s.collect.errors + s.collect.non2xx + s.rank.errors + s.rank.non2xx) +
        rankOnly.reduce((a, s) => a + s.rank.errors + s.rank.non2xx, 0);
      const first = series[0]?.rssMiB ?? Number.NaN;
      const last = series.at(-1)?.rssMiB ?? Number.NaN;
      // The second half of the mixed windows: once the objects' tables are at their bounds this must be ~1.
      const middle = series[Math.floor((series.length - 1) / 2)]?.rssMiB ?? Number.NaN;
      const results = {
        seconds: windows * WINDOW_S,
        visitors,
        healthStatusAfter: healthAfter,
        connections: { collect: CONNECTIONS_EACH, rank: CONNECTIONS_EACH },
        requests,
        events: sum((s) => s.collect.requests) * 10,
        errorRate: requests > 0 ? failures / requests : 0,
        collect: {
          p50MsMedianOfWindows: median(series.map((s) => s.collect.p50Ms)),
          p99MsWorstWindow: Math.max(...series.map((s) => s.collect.p99Ms)),
          rpsMedianOfWindows: median(series.map((s) => s.collect.rps)),
        },
        rank: {
          p50MsMedianOfWindows: median(series.map((s) => s.rank.p50Ms)),
          p99MsWorstWindow: Math.max(...series.map((s) => s.rank.p99Ms)),
          rpsMedianOfWindows: median(series.map((s) => s.rank.rps)),
        },
        memory: {
          rssStartMiB: rssStart,
          rssFirstWindowMiB: first,
          rssLastWindowMiB: last,
          rssMaxMiB: Math.max(...series.map((s) => s.rssMiB)),
          growthLastOverFirst: Math.round((last / first) * 1000) / 1000,
          growthSecondHalf: Math.round((last / middle) * 1000) / 1000,
          // The Worker's isolate (its V8 heap: what the platform limits per isolate), sampled every 2 s: the live
          // heap (lowest sample) of the first and last mixed windows, and the largest heap seen.
          heapLiveFirstWindowMiB: series[0]?.heap.minUsedMiB ?? null,
          heapLiveLastWindowMiB: series.at(-1)?.heap.minUsedMiB ?? null,
          heapMaxUsedMiB: Math.max(...series.map((s) => s.heap.maxUsedMiB ?? 0)),
          heapMaxTotalMiB: Math.max(...series.map((s) => s.heap.maxTotalMiB ?? 0)),
        },
        windows: series,
        rankOnly: {
          windows: rankOnly,
          rssFirstMiB: rankOnly[0]?.rssMiB ?? Number.NaN,
          rssLastMiB: rankOnly.at(-1)?.rssMiB ?? Number.NaN,
        },
      };
      const before = floorBefore.c10 as Measurement;
      const after = floorAfter.c10 as Measurement;
      // The last mixed window's ranking against the floor at the same connection count (5).
      const rankFloor = lastRank && floorFor(lastRank, floorBefore);
      if (!lastRank || !rankFloor)
        throw new Error(`no floor at ${CONNECTIONS_EACH} connections to compare ranking with`);
      return {
        floor: floorBefore,
        results: { ...results, floorAfter: summary(after) },
        relative: {
          floorP50AfterOverBefore: Math.round((after.p50Ms / before.p50Ms) * 100) / 100,
          floorRpsAfterOverBefore: Math.round((after.rps / before.rps) * 100) / 100,
          lastWindowRank: relativeTo(lastRank, rankFloor.measurement, `${rankFloor.label} (before)`),
        },
        notes: [
          `${users.length} users with published lists and recorded sessions; ${visitors} visitors send browser batches`,
          "collection and ranking share the machine with the load generator and the local stack (2 cores)",
        ],
      };
    } finally {
      await end();
    }
  },
};

export default suite;
