// The data of the `rank` suite (bench/suites/rank.ts): the UCI demo store seeded and refreshed into the local
// stack, the benchmark users (UCI customers with a published batch list) with session state recorded through the
// collection API, their request bodies, and the inputs of the ranking core for the Node microbenchmark, read from
// the same Postgres rows the publish shipped to KV.
import { LOCAL_KEYS } from "../../scripts/lib/local-keys.ts";
import { mulberry32 } from "../../scripts/lib/prng.ts";
import { BUY_AGAIN_REASON, CATALOG_ROW_COLUMNS, catalogRowOf } from "../../src/publish/codec.ts";
import { type Product, product, terms } from "../../src/rank/catalog.ts";
import type { RankInput, Scored, SessionSignals } from "../../src/rank/core.ts";
import { EVENT_STREAM } from "../../src/session/stream.ts";
import { openPool } from "../../src/stores/db.ts";
import type { SuiteContext } from "./suite.ts";

/** Session events recorded per benchmark user: a page, a search, five views and an add to cart. */
export const SESSION_VIEWS = 5;

export interface BenchUser {
  userKey: string;
  userId: string;
  /** Products viewed in the recorded session, oldest first (the last one is the newest). */
  viewed: string[];
  carted: string;
  query: string;
  /** The user's published batch candidates (best first). */
  batch: Array<{ productId: string; score: number }>;
  /** Categories of the user's purchases, most frequent first, with counts. */
  purchasedCategories: Array<[string, number]>;
}

export interface StoreData {
  products: Map<string, Product>;
  popular: Scored[];
  trending: Scored[];
  popularByCategory: Map<string, Scored[]>;
  users: BenchUser[];
}

export type Query = (text: string, params?: unknown[]) => Promise<Array<Record<string, unknown>>>;

/** One pool for the suite's own reads, closed by `end`. */
export function database(ctx: SuiteContext): { q: Query; end: () => Promise<void> } {
  const pool = openPool({ databaseUrl: ctx.vars.DATABASE_URL ?? "", localWsProxy: ctx.vars.NEON_LOCAL_WS_PROXY });
  return {
    q: async (text, params = []) => (await pool.query(text, params)).rows as Array<Record<string, unknown>>,
    end: () => pool.end(),
  };
}

const ADMIN = { authorization: `Bearer ${LOCAL_KEYS.adminKey}` };

async function call(ctx: SuiteContext, method: string, path: string, init: RequestInit = {}): Promise<unknown> {
  for (let attempt = 1; ; attempt++) {
    try {
      const res = await fetch(`${ctx.url}${path}`, { method, signal: AbortSignal.timeout(600_000), ...init });
      const text = await res.text();
      if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text.slice(0, 500)}`);
      return JSON.parse(text) as unknown;
    } catch (error) {
      // wrangler dev answers 503 for a moment when someone edits src/ and it reloads the Worker.
      if (attempt >= 5) throw error;
      ctx.log(`${method} ${path}: ${String(error).slice(0, 300)}; retrying`);
      await new Promise((resolve) => setTimeout(resolve, 2000 * attempt));
    }
  }
}

/**
 * POST /v1/admin/refresh (load → compute → publish started), then waits for the publish to finish. A reload of the
 * Worker (someone edited src/) can kill a refresh mid-way and leave its lease held for 15 minutes: in the suite's
 * own throwaway database the lease is then dropped and the refresh run again.
 */
export async function refreshAndPublish(ctx: SuiteContext, q: Query): Promise<{ refreshS: number; publishS: number }> {
  const t0 = performance.now();
  for (let attempt = 1; ; attempt++) {
    const refresh = (await call(ctx, "POST", "/v1/admin/refresh", { headers: ADMIN })) as {
      run: { status: string } | null;
      report?: { status?: string };
    };
    const status = refresh.run?.status ?? refresh.report?.status;
    if (status === "ok") break;
    if (attempt >= 3) throw new Error(`refresh: ${JSON.stringify(refresh).slice(0, 1000)}`);
    ctx.log(`refresh: ${status}; dropping the refresh lease and running it again`);
    await q("delete from leases where name = 'refresh'");
  }
  const t1 = performance.now();
  for (;;) {
    const status = (await call(ctx, "GET", "/__bench/publish/status")) as { job: unknown; lastVersion: number };
    if (!status.job) {
      if (status.lastVersion > 0) break;
      throw new Error("publish: the refresh started no publish");
    }
    if (performance.now() - t1 > 20 * 60_000) throw new Error("publish: no end after 20 minutes");
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
  const s = (ms: number) => Math.round(ms / 100) / 10;
  return { refreshS: s(t1 - t0), publishS: s(performance.now() - t1) };
}

/** The published pointer's measure of the catalogue's order (whether the adjacency source is on). */
export async function publishedCatalogOrder(ctx: SuiteContext): Promise<unknown> {
  const versions = (await call(ctx, "GET", "/v1/admin/versions", { headers: ADMIN })) as {
    current?: { catalogOrder?: unknown } | null;
  };
  return versions.current?.catalogOrder ?? null;
}

/** Every catalogue row as the ranking path sees it (the same normalisation as a decoded catalogue shard). */
async function readProducts(q: Query): Promise<Map<string, Product>> {
  const rows = await q(`select ${CATALOG_ROW_COLUMNS} from catalog`);
  const out = new Map<string, Product>();
  for (const r of rows) {
    const row = catalogRowOf(r);
    out.set(row.id, product(row.id, row));
  }
  return out;
}

async function readPopular(q: Query, list: "popular" | "trending"): Promise<Map<string, Scored[]>> {
  const rows = await q("select segment, product_id, score from popular_items where list = $1 order by segment, rank", [
    list,
  ]);
  const out = new Map<string, Scored[]>();
  for (const r of rows) {
    const segment = String(r.segment);
    const lst = out.get(segment) ?? [];
    lst.push([String(r.product_id), Number(r.score)]);
    out.set(segment, lst);
  }
  return out;
}

/**
 * The benchmark users: customers with at least `minCandidates` published candidates, in a fixed pseudo-random
 * order, with their most recently purchased products (what their recorded session views).
 */
export async function readStore(q: Query, count: number, minCandidates: number): Promise<StoreData> {
  const products = await readProducts(q);
  const popular = await readPopular(q, "popular");
  const trending = await readPopular(q, "trending");
  const popularByCategory = new Map<string, Scored[]>();
  for (const [segment, list] of popular) {
    if (segment.startsWith("category:")) popularByCategory.set(segment.slice("category:".length), list);
  }
  const keys = (
    await q(
      `select user_key from user_candidates where user_key like 'u:%' and cardinality(product_ids) >= $1
       order by md5(user_key) limit $2`,
      [minCandidates, count],
    )
  ).map((r) => String(r.user_key));
  const batchRows = await q(
    `select c.user_key, u.product_id, u.score from user_candidates c
     cross join lateral unnest(c.product_ids, c.scores, c.reasons) with ordinality as u(product_id, score, reason, rank)
     where c.user_key = any($1::text[]) and u.reason is distinct from $2 order by c.user_key, u.rank`,
    [keys, BUY_AGAIN_REASON],
  );
  const batch = new Map<string, Array<{ productId: string; score: number }>>();
  for (const r of batchRows) {
    const key = String(r.user_key);
    const lst = batch.get(key) ?? [];
    lst.push({ productId: String(r.product_id), score: Number(r.score) });
    batch.set(key, lst);
  }
  const recentRows = await q(
    `select user_key, (array_agg(product_id order by last desc, product_id))[1:$2] as recent
     from (select user_key, product_id, max(event_time) as last from interactions
           where user_key = any($1::text[]) group by 1, 2) t
     group by 1`,
    [keys, SESSION_VIEWS + 1],
  );
  const recent = new Map(recentRows.map((r) => [String(r.user_key), (r.recent as string[]) ?? []]));
  const catRows = await q(
    `select i.user_key, c.category, count(*)::int as n from interactions i join catalog c on c.id = i.product_id
     where i.user_key = any($1::text[]) and c.category is not null group by 1, 2 order by 1, 3 desc, 2`,
    [keys],
  );
  const cats = new Map<string, Array<[string, number]>>();
  for (const r of catRows) {
    const key = String(r.user_key);
    const lst = cats.get(key) ?? [];
    lst.push([String(r.category), Number(r.n)]);
    cats.set(key, lst);
  }
  const ids = [...products.keys()];
  const users: BenchUser[] = keys.map((userKey, i) => {
    // Views: the customer's latest purchases, topped up from the catalogue when there are too few.
    const seen = [...(recent.get(userKey) ?? [])].filter((id) => products.has(id));
    for (let k = 0; seen.length < SESSION_VIEWS + 1; k++) {
      const id = ids[(i * 131 + k * 17) % ids.length] as string;
      if (!seen.includes(id)) seen.push(id);
    }
    const viewed = seen.slice(0, SESSION_VIEWS).reverse();
    const title = products.get(viewed[viewed.length - 1] as string)?.title ?? "";
    const query = terms(title).find((w) => w.length >= 4) ?? "gift";
    return {
      userKey,
      userId: userKey.slice(2),
      viewed,
      carted: seen[SESSION_VIEWS] as string,
      query,
      batch: batch.get(userKey) ?? [],
      purchasedCategories: cats.get(userKey) ?? [],
    };
  });
  return {
    products,
    popular: popular.get("global") ?? [],
    trending: trending.get("global") ?? [],
    popularByCategory,
    users,
  };
}

/** A product as a storefront's Segment events describe it. */
function productProps(products: Map<string, Product>, id: string, raw: Map<string, Record<string, unknown>>) {
  const p = products.get(id);
  const r = raw.get(id);
  return {
    product_id: id,
    name: p?.title ?? id,
    category: (r?.category as string | null) ?? undefined,
    brand: (r?.brand as string | null) ?? undefined,
    price: p?.price ?? undefined,
  };
}

/**
 * Records each user's session through POST /v1/batch (write key, server source): a page, a search, the views
 * and an add to cart, within the last few minutes, `perRequest` users per batch.
 */
export async function recordSessions(
  ctx: SuiteContext,
  q: Query,
  data: StoreData,
  run: string,
  perRequest = 10,
): Promise<number> {
  const ids = [...new Set(data.users.flatMap((u) => [...u.viewed, u.carted]))];
  const rawRows = await q("select id, category, brand from catalog where id = any($1::text[])", [ids]);
  const raw = new Map(rawRows.map((r) => [String(r.id), r]));
  const headers = {
    "content-type": "application/json",
    authorization: `Basic ${btoa(`${LOCAL_KEYS.writeKey}:`)}`,
  };
  let events = 0;
  for (let start = 0; start < data.users.length; start += perRequest) {
    const now = Date.now();
    const batch = data.users.slice(start, start + perRequest).flatMap((u) => {
      const list: Array<Record<string, unknown>> = [
        { type: "page", name: "Home", properties: { path: "/" } },
        { type: "track", event: "Products Searched", properties: { query: u.query } },
        ...u.viewed.map((id) => ({
          type: "track",
          event: "Product Viewed",
          properties: productProps(data.products, id, raw),
        })),
        {
          type: "track",
          event: "Product Added",
          properties: { ...productProps(data.products, u.carted, raw), quantity: 1 },
        },
      ];
      return list.map((e, j) => ({
        ...e,
        userId: u.userId,
        messageId: `${run}-${u.userId}-${j}`,
        timestamp: new Date(now - (list.length - j) * 20_000).toISOString(),
      }));
    });
    const answer = (await call(ctx, "POST", "/v1/batch", { headers, body: JSON.stringify({ batch }) })) as {
      accepted?: number;
      duplicates?: number;
      rejected?: unknown[];
    };
    // A retry after a reload may find the first attempt's events recorded already: duplicates, not a problem.
    if ((answer.accepted ?? 0) + (answer.duplicates ?? 0) !== batch.length || answer.rejected?.length) {
      throw new Error(`POST /v1/batch: ${JSON.stringify(answer).slice(0, 500)}`);
    }
    events += batch.length;
  }
  return events;
}

/** One cold measurement's users: `user(i)` is the index (into the benchmark users) of its i-th request's user. */
export interface ColdSeries {
  requests: number;
  user: (i: number) => number;
}

/**
 * The users of `series` cold measurements: each its own run of consecutive users after the warm pool (users 0 to
 * warm − 1), so no cold request asks a warm user or a user of another cold measurement. Each run has `perSeries`
 * users, or, when there are fewer than warm + series × perSeries benchmark users, an equal share of those after the
 * warm pool. A request past the run's end (a measurement taken again after a reload of the Worker counts on) asks the
 * run's users again from its start.
 */
export function coldSeries(users: number, warm: number, series: number, perSeries: number): ColdSeries[] {
  const requests = Math.min(perSeries, Math.floor((users - warm) / series));
  if (requests < 1) {
    throw new Error(`${users} benchmark users leave none for ${series} cold measurements after the ${warm} warm ones`);
  }
  return Array.from({ length: series }, (_, k) => {
    const start = warm + k * requests;
    return { requests, user: (i: number) => start + (i % requests) };
  });
}

/**
 * A re-rank request's candidates, as a search or category page would send them: the user's batch candidates (up to
 * a quarter of `n`), the store's popular products (up to half of `n` with them) and other catalogue products,
 * shuffled, with descending relevance scores. Batch and popular lists are ~50 long each, so 100 candidates are a
 * quarter of each and half catalogue, 1,000 candidates ~5 % of each and ~90 % catalogue (docs/benchmarks.md#rank).
 */
export function candidatesFor(
  data: StoreData,
  user: BenchUser,
  n: number,
  seed: number,
): Array<{ productId: string; score: number }> {
  const next = mulberry32(seed);
  const chosen = new Set<string>();
  for (const b of user.batch) if (chosen.size < n / 4) chosen.add(b.productId);
  for (const [id] of data.popular) if (chosen.size < n / 2) chosen.add(id);
  const ids = [...data.products.keys()];
  while (chosen.size < n) chosen.add(ids[Math.floor(next() * ids.length)] as string);
  const list = [...chosen];
  for (let i = list.length - 1; i > 0; i--) {
    const j = Math.floor(next() * (i + 1));
    [list[i], list[j]] = [list[j] as string, list[i] as string];
  }
  return list.map((productId, i) => ({ productId, score: Math.round((1 - i / n) * 10_000) / 10_000 }));
}

/** Neighbour lists (similar, bought together) of the given seeds, best first. */
export async function readNeighbors(
  q: Query,
  seeds: string[],
): Promise<{ similar: Map<string, Scored[]>; boughtTogether: Map<string, Scored[]> }> {
  const rows = await q(
    `select kind, product_id, neighbor_id, score from item_neighbors
     where kind in ('similar', 'bought_together') and product_id = any($1::text[]) order by kind, product_id, rank`,
    [seeds],
  );
  const similar = new Map<string, Scored[]>();
  const boughtTogether = new Map<string, Scored[]>();
  for (const r of rows) {
    const map = r.kind === "similar" ? similar : boughtTogether;
    const key = String(r.product_id);
    const lst = map.get(key) ?? [];
    lst.push([String(r.neighbor_id), Number(r.score)]);
    map.set(key, lst);
  }
  return { similar, boughtTogether };
}

/** The session signals the recorded events give (signals.ts derives the same shape from the object's snapshot). */
export function signalsFor(data: StoreData, user: BenchUser): SessionSignals {
  const scaled = (counts: Map<string, number>) => {
    const max = Math.max(0, ...counts.values());
    return new Map([...counts].sort((a, b) => b[1] - a[1]).map(([k, v]) => [k, max > 0 ? v / max : 0]));
  };
  const sessionCounts = new Map<string, number>();
  const bands = new Map<string, number>();
  for (const id of [...user.viewed, user.carted]) {
    const p = data.products.get(id);
    if (p?.category) sessionCounts.set(p.category, (sessionCounts.get(p.category) ?? 0) + 1);
    if (p?.band) bands.set(p.band, (bands.get(p.band) ?? 0) + 1);
  }
  const longTerm = new Map<string, number>();
  for (const [category, n] of user.purchasedCategories) {
    const normalised = product("x", { category, price: null, inStock: true, visible: true }).category;
    if (normalised) longTerm.set(normalised, (longTerm.get(normalised) ?? 0) + n);
  }
  return {
    viewed: [...user.viewed].reverse(),
    carted: [user.carted],
    purchased: [],
    searches: [user.query],
    sessionCategories: scaled(sessionCounts),
    longTermCategories: scaled(longTerm),
    priceBands: scaled(bands),
    active: true,
  };
}

/** The core's input for one user, as the service assembles it from its sources. */
export function rankInput(
  data: StoreData,
  user: BenchUser,
  neighbors: { similar: Map<string, Scored[]>; boughtTogether: Map<string, Scored[]> },
  request: { mode: "rerank"; candidates: Array<{ productId: string; score: number }> } | { mode: "recommend" },
): RankInput {
  return {
    placement: request.mode === "rerank" ? "rerank" : "home",
    mode: request.mode,
    limit: request.mode === "rerank" ? request.candidates.length : 12,
    now: Date.now(),
    context: [],
    query: null,
    filters: {},
    session: signalsFor(data, user),
    batch: user.batch,
    similar: neighbors.similar,
    boughtTogether: neighbors.boughtTogether,
    trending: data.trending,
    popular: data.popular,
    popularByCategory: (c) => data.popularByCategory.get(c),
    ...(request.mode === "rerank" ? { candidates: request.candidates } : {}),
    catalog: (id) => data.products.get(id),
  };
}

/** XLEN of the event stream, through the local Upstash gateway. */
export async function streamLength(ctx: SuiteContext): Promise<number> {
  const res = await fetch(ctx.vars.UPSTASH_REDIS_REST_URL ?? "", {
    method: "POST",
    headers: { authorization: `Bearer ${ctx.vars.UPSTASH_REDIS_REST_TOKEN ?? ""}` },
    body: JSON.stringify(["XLEN", EVENT_STREAM]),
  });
  const body = (await res.json()) as { result?: unknown };
  return Number(body.result ?? 0);
}

/**
 * Waits until the session objects' outboxes have drained `events` new entries into the event stream: each object
 * flushes from an alarm ~30 s after its first record, a burst of one alarm per user that must not overlap a
 * measurement.
 */
export async function waitForOutboxes(ctx: SuiteContext, from: number, events: number): Promise<number> {
  const t0 = performance.now();
  for (;;) {
    const n = await streamLength(ctx);
    if (n >= from + events) return Math.round((performance.now() - t0) / 100) / 10;
    if (performance.now() - t0 > 300_000) throw new Error(`outboxes: ${n - from} of ${events} events after 5 min`);
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}
