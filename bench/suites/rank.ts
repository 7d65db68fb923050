// Suite `rank`: the ranking API end to end through the local `wrangler dev`, on the UCI demo store (seeded,
// refreshed and published to KV by the real batch loop) with session state recorded through POST /v1/batch:
// POST /v1/rank with 100 and 1,000 candidates and GET /v1/recommendations?placement=home, warm and cold, at 1, 10
// and 50 connections; in the same run the floor (the empty endpoint at the same connection counts) and a baseline
// that answers the same re-rank request from Postgres on every request (POST /__bench/rank-postgres); variants of
// the request that show where the time goes; and the pure core `rank()` timed in Node on the same data.
// docs/benchmarks.md#rank defines warm and cold.
import { seedUciRetail } from "../../scripts/lib/seed.ts";
import { userListKey } from "../../src/publish/keys.ts";
import { CatalogueOrder } from "../../src/rank/catalog.ts";
import { DEFAULT_RANKING_CONFIG } from "../../src/rank/config.ts";
import { type RankInput, rank } from "../../src/rank/core.ts";
import { percentile } from "../lib/load.ts";
import {
  type BenchUser,
  candidatesFor,
  coldSeries,
  database,
  publishedCatalogOrder,
  type Query,
  rankInput,
  readNeighbors,
  readStore,
  recordSessions,
  refreshAndPublish,
  type StoreData,
  streamLength,
  waitForOutboxes,
} from "../lib/rank-data.ts";
import {
  FLOOR_PATH,
  type Measurement,
  type MeasureOptions,
  type PairedMeasurement,
  type Relative,
  relativeTo,
  type Suite,
  type SuiteContext,
  warnings,
} from "../lib/suite.ts";

/** Purchases seeded (the newest N of the UCI file, as `npm run dev` seeds); BENCH_RANK_EVENTS overrides. */
const DEFAULT_EVENTS = 50_000;
/** Users the warm measurements cycle through. */
const WARM_USERS = 200;
/** A benchmark user has at least this many published candidates. */
const MIN_CANDIDATES = 10;
const SIZES = [100, 1000] as const;
const CONNECTIONS = [1, 10, 50] as const;
const ENDPOINTS = ["rank100", "rank1000", "recsHome"] as const;
/** Requests per cold measurement: one per user, each user asked by no other measurement (`coldSeries`). */
const COLD_REQUESTS = 150;
/**
 * Users in all, each with a recorded session: the warm pool, then users of their own for each cold measurement. A
 * store with fewer benchmark users gives each cold measurement fewer requests (`coldSeries`), never shared users.
 */
const POOL_USERS = WARM_USERS + CONNECTIONS.length * ENDPOINTS.length * COLD_REQUESTS;
/** Sequential fresh-isolate requests (caches reset before each one). */
const COLD_START_SAMPLES = 40;
const CORE_WARM_UP_CALLS = 300;
const CORE_CALLS = 2_000;
const SERVER_KEY = "local-server-key";

type Conns = (typeof CONNECTIONS)[number];
type Endpoint = (typeof ENDPOINTS)[number];

const JSON_HEADERS = { "content-type": "application/json", authorization: `Bearer ${SERVER_KEY}` };
const AUTH = { authorization: `Bearer ${SERVER_KEY}` };

interface RankMeasurement extends Measurement {
  /** Measured answers whose `degraded` list was not empty (a source missed its deadline or failed). */
  degraded: number;
}

/** Counts degraded answers of a measurement (the body's `degraded` list not empty). */
function degradedCounter(): { inspect: (status: number, body: string) => void; count: () => number } {
  let n = 0;
  return {
    inspect: (status, body) => {
      if (status === 200 && !body.includes('"degraded":[]')) n++;
    },
    count: () => n,
  };
}

async function expectOk(ctx: SuiteContext, path: string, init: RequestInit): Promise<Record<string, unknown>> {
  const res = await fetch(`${ctx.url}${path}`, { ...init, signal: AbortSignal.timeout(30_000) });
  const body = (await res.json().catch(() => null)) as Record<string, unknown> | null;
  if (res.status !== 200 || !body) {
    throw new Error(`${path} answered ${res.status} ${JSON.stringify(body).slice(0, 500)}: not ready to measure`);
  }
  return body;
}

/** The answer uses every source: a session, a batch list, the catalogue, nothing degraded. */
function checkAnswer(label: string, body: Record<string, unknown>, items: number): void {
  const sources = body.sources as Record<string, { status: string }>;
  const problems: string[] = [];
  if ((body.items as unknown[]).length !== items) problems.push(`${(body.items as unknown[]).length} items`);
  for (const s of ["session", "batch", "catalog", "popular"]) {
    if (sources[s]?.status !== "ok") problems.push(`${s} ${sources[s]?.status}`);
  }
  if ((body.degraded as string[]).length) problems.push(`degraded ${JSON.stringify(body.degraded)}`);
  if (problems.length) throw new Error(`${label}: ${problems.join(", ")}: the data is not what the suite measures`);
}

/** Sequential requests, each after a cache reset (not timed), timed from the client: a fresh isolate's answers. */
async function coldStart(
  ctx: SuiteContext,
  label: string,
  request: (i: number) => { path: string; init: RequestInit },
): Promise<{ path: string; samples: number; p50Ms: number; p90Ms: number; maxMs: number; meanMs: number }> {
  const times: number[] = [];
  let path = "";
  ctx.log(`${label}: ${COLD_START_SAMPLES} sequential requests, caches reset before each`);
  for (let i = 0; i < COLD_START_SAMPLES; i++) {
    const reset = await fetch(`${ctx.url}/__bench/rank-caches/reset`, { method: "POST" });
    await reset.body?.cancel();
    const r = request(i);
    path = r.path.split("?")[0] as string;
    const t0 = performance.now();
    const res = await fetch(`${ctx.url}${r.path}`, r.init);
    await res.arrayBuffer();
    times.push(performance.now() - t0);
    if (res.status !== 200) throw new Error(`${label}: ${r.path} answered ${res.status}`);
  }
  const sorted = times.sort((a, b) => a - b);
  const r2 = (n: number) => Math.round(n * 100) / 100;
  return {
    path,
    samples: sorted.length,
    p50Ms: r2(percentile(sorted, 50)),
    p90Ms: r2(percentile(sorted, 90)),
    maxMs: r2(sorted[sorted.length - 1] ?? Number.NaN),
    meanMs: r2(sorted.reduce((s, v) => s + v, 0) / sorted.length),
  };
}

/** `rank()` timed per call in this process, over the users in turn. */
function timeCore(inputs: RankInput[]): { calls: number; p50Ms: number; p90Ms: number; p99Ms: number; maxMs: number } {
  const config = DEFAULT_RANKING_CONFIG;
  let sink = 0;
  for (let i = 0; i < CORE_WARM_UP_CALLS; i++)
    sink += rank(inputs[i % inputs.length] as RankInput, config).items.length;
  const times: number[] = [];
  for (let i = 0; i < CORE_CALLS; i++) {
    const input = inputs[i % inputs.length] as RankInput;
    const t0 = performance.now();
    sink += rank(input, config).items.length;
    times.push(performance.now() - t0);
  }
  if (sink < 0) throw new Error("unreachable");
  const sorted = times.sort((a, b) => a - b);
  const r3 = (n: number) => Math.round(n * 1000) / 1000;
  return {
    calls: CORE_CALLS,
    p50Ms: r3(percentile(sorted, 50)),
    p90Ms: r3(percentile(sorted, 90)),
    p99Ms: r3(percentile(sorted, 99)),
    maxMs: r3(sorted[sorted.length - 1] ?? Number.NaN),
  };
}

async function microbenchmark(q: Query, data: StoreData, users: BenchUser[], bodies: Map<number, string[]>) {
  const seeds = [...new Set(users.flatMap((u) => [...u.viewed, u.carted]))];
  const neighbors = await readNeighbors(q, seeds);
  const out: Record<string, ReturnType<typeof timeCore>> = {};
  for (const n of SIZES) {
    const lists = (bodies.get(n) ?? []).map(
      (b) => (JSON.parse(b) as { candidates: Array<{ productId: string; score: number }> }).candidates,
    );
    out[`rerank${n}`] = timeCore(
      users.map((u, i) => rankInput(data, u, neighbors, { mode: "rerank", candidates: lists[i] ?? [] })),
    );
  }
  out.recommendHome = timeCore(users.map((u) => rankInput(data, u, neighbors, { mode: "recommend" })));
  // A product page (the newest viewed product in view) with the adjacency source, and the same inputs without it:
  // what the catalogue's order costs a call (the sort itself is done once, here, as an isolate does it).
  const order = new CatalogueOrder(data.products.keys());
  const pdp = (u: BenchUser) => ({
    ...rankInput(data, u, neighbors, { mode: "recommend" }),
    placement: "pdp",
    context: u.viewed.slice(-1),
  });
  out.recommendPdp = timeCore(users.map((u) => ({ ...pdp(u), catalogueOrder: order })));
  out.recommendPdpNoOrder = timeCore(users.map((u) => pdp(u)));
  return out;
}

const suite: Suite = {
  name: "rank",
  description:
    "POST /v1/rank (100 / 1,000 candidates), GET /v1/recommendations: warm and cold at 1/10/50 conns vs floor and a Postgres-per-request baseline; rank() in Node",
  async run(ctx) {
    const run = `rank-${Date.now().toString(36)}`;
    const notes: string[] = [];
    const events = Number(process.env.BENCH_RANK_EVENTS ?? DEFAULT_EVENTS);
    const { q, end } = database(ctx);
    try {
      // ── data: the UCI store, refreshed and published; sessions through the collection API ──
      ctx.log(`rank: seeding the UCI demo store (newest ${events} purchases)`);
      const seeded = await seedUciRetail({
        settings: { databaseUrl: ctx.vars.DATABASE_URL ?? "", localWsProxy: ctx.vars.NEON_LOCAL_WS_PROXY },
        newestEvents: events,
        endAt: new Date(),
      });
      ctx.log("rank: POST /v1/admin/refresh (load → compute → publish), waiting for the publish");
      const refresh = await refreshAndPublish(ctx, q);
      ctx.log(`rank: refresh ${refresh.refreshS} s, publish ${refresh.publishS} s`);
      const catalogOrder = await publishedCatalogOrder(ctx);
      const data = await readStore(q, POOL_USERS, MIN_CANDIDATES);
      const users = data.users;
      if (users.length < WARM_USERS) throw new Error(`only ${users.length} users have a published batch list`);
      ctx.log(`rank: recording sessions of ${users.length} users through POST /v1/batch`);
      const streamBefore = await streamLength(ctx);
      const sessionEvents = await recordSessions(ctx, q, data, run);
      ctx.log("rank: waiting for the session objects' outboxes to drain into the event stream");
      const outboxDrainS = await waitForOutboxes(ctx, streamBefore, sessionEvents);
      // Let the burst of alarms and the gateway settle before anything is measured.
      await new Promise((resolve) => setTimeout(resolve, 5000));

      const bodies = new Map<number, string[]>(
        SIZES.map((n) => [
          n,
          users.map((u, i) => JSON.stringify({ userId: u.userId, candidates: candidatesFor(data, u, n, i + 1) })),
        ]),
      );
      const [published] = await q("select count(*)::int as keys from published_keys where key like $1", [
        `${userListKey("")}%`,
      ]).catch(() => [undefined]);

      // ── every endpoint answers with all its sources before its speed means anything ──
      // (the first answer of an isolate starts the live trending refresh in the background and says so)
      await expectOk(ctx, "/v1/rank", { method: "POST", headers: JSON_HEADERS, body: bodies.get(100)?.[0] as string });
      await new Promise((resolve) => setTimeout(resolve, 1000));
      // On a busy machine a source can miss its deadline once: a few attempts before concluding anything.
      const checked = async (label: string, path: string, init: RequestInit, items: number) => {
        for (let attempt = 1; ; attempt++) {
          try {
            checkAnswer(label, await expectOk(ctx, path, init), items);
            return;
          } catch (error) {
            if (attempt >= 5) throw error;
            await new Promise((resolve) => setTimeout(resolve, 1000));
          }
        }
      };
      for (const n of SIZES) {
        const body = bodies.get(n)?.[0] as string;
        await checked(`POST /v1/rank (${n})`, "/v1/rank", { method: "POST", headers: JSON_HEADERS, body }, n);
        const base = await expectOk(ctx, "/__bench/rank-postgres", { method: "POST", headers: JSON_HEADERS, body });
        if ((base.items as unknown[]).length !== n || !(Number(base.batch) > 0)) {
          throw new Error(`POST /__bench/rank-postgres (${n}): ${JSON.stringify(base).slice(0, 300)}`);
        }
      }
      await checked(
        "GET /v1/recommendations",
        `/v1/recommendations?placement=home&userId=${users[0]?.userId}`,
        { headers: AUTH },
        12,
      );

      /** The user (an index into `users`) of a measurement's i-th request. */
      type Pick = (i: number) => number;
      const warmUser: Pick = (i) => i % WARM_USERS;
      const rankNext = (n: number, user: Pick) => (i: number) => ({
        path: "/v1/rank",
        body: bodies.get(n)?.[user(i)] as string,
      });
      const recsNext = (user: Pick) => (i: number) =>
        `/v1/recommendations?placement=home&userId=${encodeURIComponent(users[user(i)]?.userId ?? "")}`;
      const endpoint = (name: Endpoint, user: Pick): Omit<MeasureOptions, "connections"> =>
        name === "recsHome"
          ? { path: "/v1/recommendations?placement=home&userId={user}", next: recsNext(user), headers: AUTH }
          : {
              path: `/v1/rank (${name === "rank100" ? 100 : 1000} candidates, user {user})`,
              method: "POST",
              headers: JSON_HEADERS,
              next: rankNext(name === "rank100" ? 100 : 1000, user),
            };
      // Requests still in flight when a measurement ends keep the Worker busy: the next one starts when an empty
      // request answers quickly again (at most 15 s later).
      const idle = async () => {
        const t0 = performance.now();
        await new Promise((resolve) => setTimeout(resolve, 500));
        while (performance.now() - t0 < 15_000) {
          const t = performance.now();
          const res = await fetch(`${ctx.url}${FLOOR_PATH}`).catch(() => null);
          await res?.body?.cancel();
          if (res?.status === 200 && performance.now() - t < 20) return;
          await new Promise((resolve) => setTimeout(resolve, 250));
        }
      };
      const measured: Array<[string, Measurement]> = [];
      const measureRank = async (label: string, options: Omit<MeasureOptions, "inspect">): Promise<RankMeasurement> => {
        await idle();
        const counter = degradedCounter();
        const m = await ctx.measure(label, { ...options, inspect: counter.inspect });
        const out = { ...m, degraded: counter.count() };
        measured.push([label, out]);
        return out;
      };
      const measurePlain = async (label: string, options: MeasureOptions): Promise<Measurement> => {
        await idle();
        const m = await ctx.measure(label, options);
        measured.push([label, m]);
        return m;
      };

      // Every warm user's object activated and every cache filled before the warm series: one request per warm
      // user, ten at a time (an idle object is evicted after a while, and reactivating it is part of cold).
      ctx.log(`rank: one request per warm user (${WARM_USERS}) before the warm series`);
      const prewarm = (u: BenchUser, i: number) =>
        fetch(`${ctx.url}/v1/rank`, { method: "POST", headers: JSON_HEADERS, body: bodies.get(100)?.[i] as string })
          .then((res) => res.arrayBuffer())
          .catch(() => undefined)
          .then(() => u);
      for (let i = 0; i < WARM_USERS; i += 10) {
        await Promise.all(users.slice(i, i + 10).map((u, k) => prewarm(u, i + k)));
      }

      // ── floor ──
      const floor = await ctx.measureFloor([1, 10]);
      const floorC50 = await measurePlain("floor.c50", { path: FLOOR_PATH, connections: 50 });
      const floors: Record<Conns, Measurement> = {
        1: floor.c1 as Measurement,
        10: floor.c10 as Measurement,
        50: floorC50,
      };
      measured.push(["floor.c1", floors[1]], ["floor.c10", floors[10]]);

      // ── warm: WARM_USERS users in turn, the warm-up fills every cache first ──
      const warm: Record<string, Record<string, RankMeasurement>> = {};
      const baseline: Record<string, Record<string, Measurement>> = {};
      for (const c of CONNECTIONS) {
        for (const name of ENDPOINTS) {
          warm[name] ??= {};
          (warm[name] as Record<string, RankMeasurement>)[`c${c}`] = await measureRank(`warm.${name}.c${c}`, {
            ...endpoint(name, warmUser),
            connections: c,
          });
        }
        for (const n of SIZES) {
          const name = `rank${n}`;
          baseline[name] ??= {};
          (baseline[name] as Record<string, Measurement>)[`c${c}`] = await measurePlain(`baseline.${name}.c${c}`, {
            path: `/__bench/rank-postgres (${n} candidates, user {user})`,
            method: "POST",
            headers: JSON_HEADERS,
            next: (i) => ({ path: "/__bench/rank-postgres", body: bodies.get(n)?.[i % WARM_USERS] as string }),
            connections: c,
          });
        }
      }

      // ── cold: caches reset just before, no warm-up, each request a user outside the warm pool asked by no other
      // measurement ──
      const reset = async () => {
        const res = await fetch(`${ctx.url}/__bench/rank-caches/reset`, { method: "POST" });
        await res.body?.cancel();
      };
      const cold: Record<string, Record<string, RankMeasurement>> = {};
      const coldUsers = coldSeries(users.length, WARM_USERS, CONNECTIONS.length * ENDPOINTS.length, COLD_REQUESTS);
      const coldRequests = coldUsers[0]?.requests ?? 0;
      for (const [k, c] of CONNECTIONS.entries()) {
        for (const [e, name] of ENDPOINTS.entries()) {
          cold[name] ??= {};
          const series = coldUsers[k * ENDPOINTS.length + e] as (typeof coldUsers)[number];
          (cold[name] as Record<string, RankMeasurement>)[`c${c}`] = await measureRank(`cold.${name}.c${c}`, {
            ...endpoint(name, series.user),
            connections: c,
            warmUpRequests: 0,
            requests: series.requests,
            before: reset,
          });
        }
      }
      const coldStarts = {
        empty: await coldStart(ctx, "coldStart.empty", () => ({ path: FLOOR_PATH, init: {} })),
        rank100: await coldStart(ctx, "coldStart.rank100", (i) => ({
          path: "/v1/rank",
          init: { method: "POST", headers: JSON_HEADERS, body: bodies.get(100)?.[WARM_USERS + i] as string },
        })),
        rank1000: await coldStart(ctx, "coldStart.rank1000", (i) => ({
          path: "/v1/rank",
          init: { method: "POST", headers: JSON_HEADERS, body: bodies.get(1000)?.[WARM_USERS + i] as string },
        })),
        recsHome: await coldStart(ctx, "coldStart.recsHome", (i) => ({
          path: `/v1/recommendations?placement=home&userId=${users[WARM_USERS + i]?.userId}`,
          init: { headers: AUTH },
        })),
      };

      // ── variants at one connection, warm: where the time of POST /v1/rank goes ──
      const variants: Record<string, Measurement> = {};
      const answerBytes: Record<string, number> = {};
      for (const n of SIZES) {
        // The transport floor: the same body read and validated, and an answer as long as the real one, padded.
        const real = await fetch(`${ctx.url}/v1/rank`, {
          method: "POST",
          headers: JSON_HEADERS,
          body: bodies.get(n)?.[0] as string,
        });
        const bytes = (await real.arrayBuffer()).byteLength;
        if (real.status !== 200 || bytes < 100) throw new Error(`POST /v1/rank (${n}) answered ${real.status}`);
        answerBytes[`rank${n}`] = bytes;
        variants[`transport${n}`] = await measurePlain(`variant.transport${n}.c1`, {
          path: `/__bench/rank-parse?answerBytes=${bytes} (${n} candidates: read + validate, answer ${bytes} bytes)`,
          method: "POST",
          headers: JSON_HEADERS,
          next: (i) => ({
            path: `/__bench/rank-parse?answerBytes=${bytes}`,
            body: bodies.get(n)?.[i % WARM_USERS] as string,
          }),
          connections: 1,
        });
        const anonymous = (bodies.get(n) ?? []).slice(0, WARM_USERS).map((b) => {
          const { userId: _, ...rest } = JSON.parse(b) as Record<string, unknown>;
          return JSON.stringify(rest);
        });
        const top = (bodies.get(n) ?? [])
          .slice(0, WARM_USERS)
          .map((b) => JSON.stringify({ ...(JSON.parse(b) as object), limit: 20 }));
        variants[`anonymous${n}`] = await measureRank(`variant.anonymous${n}.c1`, {
          path: `/v1/rank (${n} candidates, no user)`,
          method: "POST",
          headers: JSON_HEADERS,
          next: (i) => ({ path: "/v1/rank", body: anonymous[i % anonymous.length] as string }),
          connections: 1,
        });
        variants[`limit20_${n}`] = await measureRank(`variant.limit20_${n}.c1`, {
          path: `/v1/rank (${n} candidates, user {user}, limit 20)`,
          method: "POST",
          headers: JSON_HEADERS,
          next: (i) => ({ path: "/v1/rank", body: top[i % top.length] as string }),
          connections: 1,
        });
        variants[`parseOnly${n}`] = await measurePlain(`variant.parseOnly${n}.c1`, {
          path: `/__bench/rank-parse (${n} candidates: read + validate the body only)`,
          method: "POST",
          headers: JSON_HEADERS,
          next: (i) => ({ path: "/__bench/rank-parse", body: bodies.get(n)?.[i % WARM_USERS] as string }),
          connections: 1,
        });
      }
      // A product page: the newest viewed product in view (its neighbour lists, and its catalogue neighbours when the
      // publish found the order predictive), next to recsHome of the same run.
      variants.recsPdp = await measureRank("variant.recsPdp.c1", {
        path: "/v1/recommendations?placement=pdp&userId={user}&productId={newest viewed}",
        next: (i) => {
          const u = users[i % WARM_USERS];
          return `/v1/recommendations?placement=pdp&userId=${encodeURIComponent(u?.userId ?? "")}&productId=${encodeURIComponent(u?.viewed.at(-1) ?? "")}`;
        },
        headers: AUTH,
        connections: 1,
      });
      // ── paired, 1 connection: each endpoint interleaved with the empty one (floor, request, floor, …) ──
      const paired: Record<string, PairedMeasurement & { b: RankMeasurement }> = {};
      for (const name of ENDPOINTS) {
        await idle();
        const counter = degradedCounter();
        const label = `paired.${name}.c1`;
        const m = await ctx.measurePaired(label, {
          a: { path: FLOOR_PATH },
          b: { ...endpoint(name, warmUser), inspect: counter.inspect },
        });
        const b: RankMeasurement = { ...m.b, degraded: counter.count() };
        paired[name] = { ...m, b };
        measured.push([`${label}.floor`, m.a], [label, b]);
      }
      const floorRepeat = await measurePlain("floor.c1Repeat", { path: FLOOR_PATH, connections: 1 });

      // ── the core in Node, on the same users and candidate lists ──
      ctx.log(`core: rank() in Node, ${CORE_CALLS} calls per input size`);
      const core = await microbenchmark(q, data, users.slice(0, WARM_USERS), bodies);

      // ── relative figures and the bars ──
      const rel = (m: Measurement): Relative =>
        relativeTo(m, floors[m.connections as Conns], `floor.c${m.connections}`);
      const relTree = (tree: Record<string, Record<string, Measurement>>) =>
        Object.fromEntries(
          Object.entries(tree).map(([k, byConn]) => [
            k,
            Object.fromEntries(Object.entries(byConn).map(([c, m]) => [c, rel(m)])),
          ]),
        );
      const relative = {
        floor: { c1Repeat: rel(floorRepeat) },
        warm: relTree(warm),
        cold: relTree(cold),
        baseline: relTree(baseline),
        variants: Object.fromEntries(Object.entries(variants).map(([k, m]) => [k, rel(m)])),
      };
      const r2 = (n: number) => Math.round(n * 100) / 100;
      const bars: Record<string, number | boolean> = {};
      for (const n of SIZES) {
        const w1 = warm[`rank${n}`]?.c1 as Measurement;
        const b1 = baseline[`rank${n}`]?.c1 as Measurement;
        const w10 = warm[`rank${n}`]?.c10 as Measurement;
        const added = r2(w1.p50Ms - floors[1].p50Ms);
        const baseAdded = r2(b1.p50Ms - floors[1].p50Ms);
        const ratio = added > 0 ? r2(baseAdded / added) : Number.POSITIVE_INFINITY;
        const rps10 = Math.round((w10.rps / floors[10].rps) * 1000) / 10;
        bars[`rank${n}AddedP50Ms`] = added;
        bars[`rank${n}AddedP50Bar`] = added <= (n === 100 ? 1 : 2);
        const pairedAdded = paired[`rank${n}`]?.addedP50Ms ?? Number.NaN;
        bars[`rank${n}PairedAddedP50Ms`] = pairedAdded;
        bars[`rank${n}PairedAddedP50Bar`] = pairedAdded <= (n === 100 ? 1 : 2);
        bars[`baseline${n}AddedP50Ms`] = baseAdded;
        bars[`rank${n}BaselineAddedRatio`] = ratio;
        bars[`rank${n}BaselineRatioBar`] = ratio >= 8;
        bars[`rank${n}RpsC10PercentOfFloor`] = rps10;
        bars[`rank${n}RpsC10Bar`] = rps10 >= 50;
      }
      bars.coreRerank1000P50Ms = core.rerank1000?.p50Ms ?? Number.NaN;
      bars.coreRerank1000P50Bar = (core.rerank1000?.p50Ms ?? Number.POSITIVE_INFINITY) <= 1;

      const results = {
        data: {
          uciPurchasesSeeded: seeded.events,
          products: seeded.products,
          customersSeeded: seeded.customers,
          refreshS: refresh.refreshS,
          catalogOrder,
          answerBytes,
          publishS: refresh.publishS,
          publishedUserKeys: Number(published?.keys ?? Number.NaN),
          benchUsers: users.length,
          warmUsers: WARM_USERS,
          coldRequestsPerSeries: coldRequests,
          sessionEventsRecorded: sessionEvents,
          outboxDrainS,
          meanBatchCandidates: r2(users.reduce((s, u) => s + u.batch.length, 0) / users.length),
          rank100BodyBytes: Math.round(
            (bodies.get(100) ?? []).reduce((s, b) => s + b.length, 0) / (bodies.get(100)?.length ?? 1),
          ),
          rank1000BodyBytes: Math.round(
            (bodies.get(1000) ?? []).reduce((s, b) => s + b.length, 0) / (bodies.get(1000)?.length ?? 1),
          ),
        },
        floor: { c1: floors[1], c10: floors[10], c50: floors[50], c1Repeat: floorRepeat },
        warm,
        cold,
        baseline,
        variants,
        paired,
        coldStart: coldStarts,
        core,
        bars,
      };
      notes.push(
        "warm: the users of a pool of " +
          `${WARM_USERS} in turn (each with a recorded session and a published batch list), after the run's warm-up: ` +
          "pointer, config, catalogue, popular/trending lists, neighbour lists and live trending are in the isolate's " +
          "caches; a user's batch list is kept in the isolate for 60 s (USER_LIST_TTL_MS), so per-user lists are isolate hits too.",
        "cold: POST /__bench/rank-caches/reset right before the measurement (pointer, config, catalogue, " +
          "popular/trending lists, neighbour lists and live trending dropped), no warm-up, " +
          `${coldRequests} requests, each for a different user of its own: outside the warm pool and asked by no ` +
          "other cold measurement (their objects not asked since their sessions were recorded); only the first " +
          "request(s) find the isolate caches empty, later ones reuse what earlier ones loaded (the catalogue, " +
          "neighbour lists of shared seeds). The users' Durable Objects are live (their sessions were just recorded).",
        "coldStart: sequential requests timed with fetch() in the harness, each right after a cache reset: every " +
          "request is a fresh isolate's first answer (reads and decodes the catalogue). coldStart.empty is the same " +
          "loop on the empty endpoint (its client floor).",
        "baseline: POST /__bench/rank-postgres with the same bodies: a Neon-driver pool per request, the user's " +
          "user_candidates and the candidates' catalogue rows in two parallel queries, ranked by the same rank() " +
          "(no session, neighbour, popular or trending lists: less input than the online path).",
        "variants (warm, 1 connection): anonymous = the same body without userId (no session read, no user list, " +
          "no neighbour lists); limit20 = the same request answering the top 20 instead of all candidates; " +
          "parseOnly = /__bench/rank-parse reading and validating the body only.",
        "transport = the same, answering as many bytes of padded JSON as the real answer to the same body " +
          "(data.answerBytes): what moving the request and the answer costs, ranking nothing.",
        "core: rank() in the harness's Node process (same V8 as workerd) on inputs built from the published " +
          "Postgres rows (catalogue, popular/trending, the users' batch lists, neighbour lists of their session " +
          "items) and session signals of the recorded events; per-call time over " +
          `${CORE_CALLS} calls after ${CORE_WARM_UP_CALLS} warm-up calls.`,
        "degraded: answers of a measurement whose degraded list was not empty (a source missed its deadline: " +
          "session 30 ms, KV 30 ms by default). Such an answer is still a 200 and is counted in the figures.",
        "relative: addedP50Ms = p50Ms - floor p50Ms at the same connection count (floor.c50 for 50 connections).",
        "paired (warm, 1 connection): the endpoint and the empty one interleaved on one connection (empty, request, " +
          "empty, request, …) for the measurement's duration: addedP50Ms = the request's p50 minus the empty one's, " +
          "both from the same series (no drift between two measurements minutes apart); pairDifferenceP50Ms = the " +
          "median of each request's latency minus that of the empty request just before it. bars.rank*PairedAdded* " +
          "use addedP50Ms.",
      );
      for (const [label, m] of measured) {
        notes.push(...warnings(label, m));
        const d = (m as Partial<RankMeasurement>).degraded;
        if (d) notes.push(`WARNING ${label}: ${d} of ${m.requests} answers degraded`);
      }
      return { floor, results, relative, notes };
    } finally {
      await end();
    }
  },
};

export default suite;
