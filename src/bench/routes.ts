// Bench-only routes: reference endpoints that `npm run bench` (docs/benchmarks.md) measures to know what the
// platform itself costs, so every suite can report its figures relative to that floor. They exist only when the
// Worker variable BENCH_ROUTES is "true" (the bench harness sets it for its own local Worker); otherwise they
// answer the same 404 as any unknown path. Routes:
//   GET /__bench/empty                   { ok: true }: the cost of an empty endpoint
//   GET /__bench/do?users=N&prefix=P     one SessionState ping() per user P:0 … P:N-1, concurrently: { calls: N }
//   POST /__bench/collect-floor          a /v1/batch body: parse it, one SessionState ping() per distinct user
//                                        (the user's key, as collection routes it), concurrently: { users: N }
//   POST /__bench/collect-floor?write=1  the same, but each call carries the user's events and the object stores
//                                        them in one durable write (benchWrite): { users: N }
//   POST /__bench/collect-floor?log=1    the empty calls, plus the whole batch stored in one durable write in one of
//                                        8 intake objects (a write-ahead log's cost): { users: N }
//   POST /__bench/kv-put?n=N&prefix=P     the publish floor: N plain KV puts (≤ 900, one invocation's budget) of
//                                        ~1 KB values, as many in flight as the publisher uses: { puts: N }
//   POST /__bench/publish/start           start a publish on the PublishCoordinator ("global"): StartResult
//   GET  /__bench/publish/status          the coordinator's status (job, versions)
//   POST /__bench/load/run?stream=S       one loader run over stream S (production code, bench budget): LoadReport
//   POST /__bench/load/baseline?stream=S&n=N  the load baseline: the first N entries of S, one INSERT per event
//   POST /__bench/rank-postgres           the ranking baseline: a POST /v1/rank body answered from Postgres on every
//                                        request (the user's candidates and the candidates' catalogue rows, through
//                                        the Neon driver, no online store), ranked by the same core: { items }
//   POST /__bench/rank-caches/reset       drops the ranking path's isolate caches (pointer, config, catalogue,
//                                        popular/trending and neighbour lists, live trending): the next request is
//                                        answered as by a fresh isolate
//   POST /__bench/rank-parse              reads and validates a POST /v1/rank body like the route, ranks nothing;
//                                        with ?answerBytes=N it answers N bytes of JSON (the transport floor)
import { Hono } from "hono";
import type { AppEnv } from "../app.ts";
import { parseEntries, runLoader } from "../batch/loader.ts";
import type { CollectedEvent } from "../collect/event.ts";
import { groupByUser } from "../collect/handoff.ts";
import { eachLimit } from "../concurrency.ts";
import { loadConfig } from "../config.ts";
import { ApiError } from "../errors.ts";
import { BUY_AGAIN_REASON, CATALOG_ROW_COLUMNS, catalogRowOf } from "../publish/codec.ts";
import { COORDINATOR_NAME } from "../publish/coordinator.ts";
import { openDb } from "../publish/db.ts";
import { KV_PUT_CONCURRENCY } from "../publish/kv-budget.ts";
import { type Product, product } from "../rank/catalog.ts";
import { DEFAULT_RANKING_CONFIG } from "../rank/config.ts";
import { rank } from "../rank/core.ts";
import { resetOnlineStoreCaches } from "../rank/online-store.ts";
import { parseRankParams, type RankParams } from "../rank/request.ts";
import { resetTrendingCaches } from "../rank/trending.ts";
import { STREAM_FIELDS } from "../session/stream.ts";
import { openPool } from "../stores/db.ts";
import { openRedis } from "../stores/redis.ts";
import { events } from "../stores/schema.ts";

export const BENCH_MAX_USERS = 500;
const DEFAULT_PREFIX = "bench";
const MAX_PREFIX_LENGTH = 100;

export const benchRoutes = new Hono<AppEnv>();

benchRoutes.use("/__bench/*", async (c, next) => {
  if (c.env.BENCH_ROUTES !== "true") {
    throw new ApiError("not_found", `no route for ${c.req.method} ${new URL(c.req.url).pathname}`);
  }
  await next();
});

benchRoutes.get("/__bench/empty", (c) => c.json({ ok: true }));

benchRoutes.get("/__bench/do", async (c) => {
  const usersParam = c.req.query("users") ?? "1";
  const users = Number(usersParam);
  if (!/^\d+$/.test(usersParam) || users < 1 || users > BENCH_MAX_USERS) {
    throw new ApiError("bad_request", `users must be an integer from 1 to ${BENCH_MAX_USERS}`);
  }
  const prefix = c.req.query("prefix") || DEFAULT_PREFIX;
  if (prefix.length > MAX_PREFIX_LENGTH) {
    throw new ApiError("bad_request", `prefix must be at most ${MAX_PREFIX_LENGTH} characters`);
  }
  await Promise.all(Array.from({ length: users }, (_, i) => c.env.SESSION_STATE.getByName(`${prefix}:${i}`).ping()));
  return c.json({ calls: users });
});

/** Intake objects of the collect suite's log floor (?log=1). */
const LOG_SHARDS = 8;

/**
 * The floor of collection: what a batch costs before validation, dedupe and session updates — reading and parsing
 * the body and one Durable Object round trip per distinct user, the least any design that keeps per-user state in
 * objects must do.
 */
benchRoutes.post("/__bench/collect-floor", async (c) => {
  // Unvalidated: an absent id reads as absent (userKey tests each id's truthiness).
  const body = (await c.req.json()) as { batch?: Array<Pick<CollectedEvent, "userId" | "anonymousId">> };
  const groups = groupByUser(body.batch ?? []);
  const write = c.req.query("write") === "1";
  // The log floor: the whole batch stored once, in one of LOG_SHARDS intake objects, and an empty call per user.
  const log = c.req.query("log") === "1";
  const calls: Array<Promise<unknown>> = [...groups].map(([key, events]) => {
    const stub = c.env.SESSION_STATE.getByName(key);
    return write ? stub.benchWrite(events) : stub.ping();
  });
  if (log) {
    const shard = Math.floor(Math.random() * LOG_SHARDS);
    calls.push(c.env.SESSION_STATE.getByName(`bench-intake:${shard}`).benchWrite(body.batch ?? []));
  }
  await Promise.all(calls);
  return c.json({ users: groups.size });
});

/** Plain KV puts per request: one invocation's budget, like one coordinator alarm. */
export const BENCH_KV_PUTS_MAX = 900;
const BENCH_VALUE = JSON.stringify({ f: 1, e: [[1, 0, Array.from({ length: 20 }, (_, i) => [`p${i}`, 0.5, null])]] });

function intParam(value: string | undefined, name: string, fallback: number, max: number): number {
  if (value === undefined || value === "") return fallback;
  if (!/^\d+$/.test(value) || Number(value) < 1 || Number(value) > max) {
    throw new ApiError("bad_request", `${name} must be an integer from 1 to ${max}`);
  }
  return Number(value);
}

benchRoutes.post("/__bench/kv-put", async (c) => {
  const n = intParam(c.req.query("n"), "n", 100, BENCH_KV_PUTS_MAX);
  const prefix = (c.req.query("prefix") || "bench").slice(0, MAX_PREFIX_LENGTH);
  const keys = Array.from({ length: n }, (_, i) => `floor:${prefix}:${i}`);
  await eachLimit(keys, KV_PUT_CONCURRENCY, (key) => c.env.ONLINE_STORE.put(key, BENCH_VALUE));
  return c.json({ puts: n });
});

const coordinator = (env: Env) => env.PUBLISH_COORDINATOR.getByName(COORDINATOR_NAME);

benchRoutes.post("/__bench/publish/start", async (c) => {
  const ops = c.req.query("opsPerAlarm");
  return c.json(
    await coordinator(c.env).start({
      trigger: "admin",
      ...(ops ? { opsPerAlarm: intParam(ops, "opsPerAlarm", 900, 990) } : {}),
    }),
  );
});

benchRoutes.get("/__bench/publish/status", async (c) => c.json(await coordinator(c.env).status()));

function benchDeps(env: Env) {
  const config = loadConfig(env);
  if (!config.database || !config.redis) throw new ApiError("dependency_unavailable", "Postgres and Redis needed");
  return { database: config.database, redis: openRedis({ ...config.redis, rawResults: true }) };
}

benchRoutes.post("/__bench/load/run", async (c) => {
  const stream = c.req.query("stream");
  if (!stream) throw new ApiError("bad_request", "stream is required");
  const { database, redis } = benchDeps(c.env);
  const { db, end } = openDb(database);
  try {
    const report = await runLoader(
      { db, redis },
      {
        trigger: "admin",
        stream,
        group: c.req.query("group") || `bench-${stream}`,
        leaseName: `bench-load-${stream}`,
        batchSize: intParam(c.req.query("batchSize"), "batchSize", 1000, 10_000),
        writers: intParam(c.req.query("writers"), "writers", 2, 4),
        budgetMs: 120_000,
        maxBatches: 10_000,
        deleteAcked: false,
      },
    );
    return c.json(report);
  } finally {
    await end();
  }
});

/** The naive load: read the entries, then one INSERT statement (one round trip) per event. */
benchRoutes.post("/__bench/load/baseline", async (c) => {
  const stream = c.req.query("stream");
  if (!stream) throw new ApiError("bad_request", "stream is required");
  const n = intParam(c.req.query("n"), "n", 1000, 10_000);
  const { database, redis } = benchDeps(c.env);
  const raw = await redis.exec<Array<[string, string[]]>>(["XRANGE", stream, "-", "+", "COUNT", String(n)]);
  const entries = raw.map(([id, flat]) => {
    const fields: Record<string, string> = {};
    for (let i = 0; i + 1 < flat.length; i += 2) fields[flat[i] as string] = flat[i + 1] as string;
    return { id, fields };
  });
  const parsed = parseEntries(entries);
  const { db, end } = openDb(database);
  const started = Date.now();
  try {
    for (const row of parsed.events) {
      await db
        .insert(events)
        .values({
          ...row,
          messageId: `baseline:${row.messageId}`,
          eventTime: new Date(row.eventTime),
          receivedAt: new Date(row.receivedAt),
        })
        .onConflictDoNothing();
    }
  } finally {
    await end();
  }
  const durationMs = Date.now() - started;
  return c.json({
    events: parsed.events.length,
    durationMs,
    eventsPerSecond: durationMs > 0 ? Math.round((parsed.events.length * 1000) / durationMs) : 0,
    fields: STREAM_FIELDS,
  });
});

/** A POST /v1/rank body, validated as the route validates it (default config). */
async function rankRequest(req: Request) {
  const body = (await req.json()) as RankParams;
  return parseRankParams("rerank", body, DEFAULT_RANKING_CONFIG);
}

/** The most `answerBytes` a transport floor of /__bench/rank-parse pads its answer to. */
const MAX_ANSWER_BYTES = 1_000_000;

benchRoutes.post("/__bench/rank-parse", async (c) => {
  const request = await rankRequest(c.req.raw);
  const candidates = request.candidates?.length ?? 0;
  const wanted = c.req.query("answerBytes");
  if (wanted === undefined) return c.json({ candidates });
  // The transport floor: an answer of the real answer's size, built without ranking anything.
  const bytes = intParam(wanted, "answerBytes", 1, MAX_ANSWER_BYTES);
  const head = `{"candidates":${candidates},"pad":"`;
  const pad = "x".repeat(Math.max(0, bytes - head.length - 2));
  return c.body(`${head}${pad}"}`, 200, { "content-type": "application/json" });
});

/**
 * The ranking baseline: no online store. Every request opens a pool through the Neon driver, reads the user's
 * batch candidates (user_candidates) and the catalogue rows of the given ids in parallel, and ranks them with the
 * same core as POST /v1/rank (no session, no neighbour, popular or trending lists: the baseline reads less; the
 * list's buy-again entries are left out, as a rerank does not use them).
 */
benchRoutes.post("/__bench/rank-postgres", async (c) => {
  const request = await rankRequest(c.req.raw);
  const database = loadConfig(c.env).database;
  if (!database) throw new ApiError("dependency_unavailable", "DATABASE_URL is not configured");
  const candidates = request.candidates ?? [];
  const pool = openPool(database);
  try {
    const [batch, rows] = await Promise.all([
      request.userKey
        ? pool.query(
            `select u.product_id, u.score from user_candidates c
             cross join lateral unnest(c.product_ids, c.scores, c.reasons)
               with ordinality as u(product_id, score, reason, rank)
             where c.user_key = $1 and u.reason is distinct from $2 order by u.rank`,
            [request.userKey, BUY_AGAIN_REASON],
          )
        : Promise.resolve({ rows: [] }),
      pool.query(`select ${CATALOG_ROW_COLUMNS} from catalog where id = any($1::text[])`, [
        candidates.map((x) => x.productId),
      ]),
    ]);
    const products = new Map<string, Product>();
    for (const r of rows.rows as Array<Record<string, unknown>>) {
      const row = catalogRowOf(r);
      products.set(row.id, product(row.id, row));
    }
    const output = rank(
      {
        placement: request.placement,
        mode: "rerank",
        limit: request.limit,
        now: Date.now(),
        context: [],
        query: request.query,
        filters: request.filters,
        session: null,
        batch: (batch.rows as Array<{ product_id: string; score: number }>).map((r) => ({
          productId: r.product_id,
          score: r.score,
        })),
        similar: new Map(),
        boughtTogether: new Map(),
        trending: null,
        popular: null,
        popularByCategory: () => undefined,
        candidates,
        catalog: (id) => products.get(id),
      },
      DEFAULT_RANKING_CONFIG,
    );
    return c.json({ items: output.items, catalogRows: products.size, batch: batch.rows.length });
  } finally {
    await pool.end();
  }
});

benchRoutes.post("/__bench/rank-caches/reset", (c) => {
  resetOnlineStoreCaches();
  resetTrendingCaches();
  return c.json({ ok: true });
});
