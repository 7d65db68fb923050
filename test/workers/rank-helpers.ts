// Helpers for the ranking Worker tests (test/workers/rank-*.test.ts): a batch snapshot written into the local KV
// in the publisher's own encodings (src/publish/codec.ts), session events recorded through the real collection API,
// and requests with a server key or a signed user token.
import { createExecutionContext, runInDurableObject, waitOnExecutionContext } from "cloudflare:test";
import { env, exports } from "cloudflare:workers";
import { expect } from "vitest";
import { createApp } from "../../src/app.ts";
import {
  type CatalogOrderStat,
  type CatalogRow,
  CODEC_FORMAT,
  catalogShardContent,
  encodePointer,
  mergeStable,
  type NeighborTuple,
  type Pointer,
  type UserCandidateTuple,
} from "../../src/publish/codec.ts";
import { COORDINATOR_NAME, DOC_VERSION_PREFIX } from "../../src/publish/coordinator.ts";
import { catalogShardKey, itemListKey, POINTER_KEY, popularListKey, userListKey } from "../../src/publish/keys.ts";
import { resetOnlineStoreCaches } from "../../src/rank/online-store.ts";
import type { RankAnswer } from "../../src/rank/service.ts";
import { signUserToken } from "../../src/rank/tokens.ts";
import { resetTrendingCaches } from "../../src/rank/trending.ts";
import { BASE, basic, collect, WRITE_KEY } from "./collect-helpers.ts";

export const SERVER_KEY = "local-server-key";
export const TOKEN_SECRET = "local-user-token-secret";
export { BASE };

export interface Fixture {
  version: number;
  generatedAt?: number;
  catalog: Array<Partial<CatalogRow> & { id: string }>;
  popular?: Record<string, NeighborTuple[]>;
  trending?: Record<string, NeighborTuple[]>;
  users?: Record<string, UserCandidateTuple[]>;
  similar?: Record<string, NeighborTuple[]>;
  boughtTogether?: Record<string, NeighborTuple[]>;
  next?: Record<string, NeighborTuple[]>;
  /** What the publisher would have measured of the catalogue's order (absent: as in an older pointer). */
  catalogOrder?: CatalogOrderStat;
}

/** Writes a snapshot the way the publisher lays it out (one catalogue shard) and clears the isolate caches. */
export async function publishFixture(f: Fixture, kv: KVNamespace = env.ONLINE_STORE): Promise<void> {
  const generatedAt = f.generatedAt ?? Date.now() - 60_000;
  const rows: CatalogRow[] = f.catalog.map((r) => ({
    title: r.id,
    category: null,
    brand: null,
    tags: [],
    price: 10,
    inStock: true,
    visible: true,
    ...r,
  }));
  const v = f.version;
  await kv.put(
    catalogShardKey(v, 0),
    JSON.stringify({ f: CODEC_FORMAT, version: v, generatedAt, shard: 0, shards: 1, ...catalogShardContent(rows) }),
  );
  const pop = (list: "popular" | "trending", segments: Record<string, NeighborTuple[]> | undefined) =>
    segments
      ? kv.put(popularListKey(v, list), JSON.stringify({ f: CODEC_FORMAT, version: v, generatedAt, list, segments }))
      : undefined;
  await pop("popular", f.popular);
  await pop("trending", f.trending);
  const stable = async (key: string, list: unknown[]) =>
    kv.put(key, mergeStable(await kv.get(key), v, generatedAt, JSON.stringify(list)));
  for (const [user, list] of Object.entries(f.users ?? {})) await stable(userListKey(user), list);
  for (const [id, list] of Object.entries(f.similar ?? {})) await stable(itemListKey("similar", id), list);
  for (const [id, list] of Object.entries(f.boughtTogether ?? {}))
    await stable(itemListKey("bought_together", id), list);
  for (const [id, list] of Object.entries(f.next ?? {})) await stable(itemListKey("next", id), list);
  const pointer: Pointer = {
    f: CODEC_FORMAT,
    version: v,
    generatedAt,
    publishedAt: generatedAt,
    modelVersion: null,
    modelVersions: {},
    catalog: { version: v, shards: 1, items: rows.length },
    popular: { popular: f.popular ? v : null, trending: f.trending ? v : null },
    ...(f.catalogOrder ? { catalogOrder: f.catalogOrder } : {}),
  };
  await kv.put(POINTER_KEY, encodePointer(pointer));
  resetCaches();
}

export function resetCaches(): void {
  resetOnlineStoreCaches();
  resetTrendingCaches();
}

/**
 * Deletes versioned admin documents (their active KV keys) and the coordinator's version counters for them, so the
 * next PUT is v1 again — what a test file starts with. (Deleting the KV key alone does not restart the numbering:
 * the counter never gives a number twice.)
 */
export async function forgetDocs(...keys: string[]): Promise<void> {
  for (const key of keys) await env.ONLINE_STORE.delete(key);
  await runInDurableObject(env.PUBLISH_COORDINATOR.getByName(COORDINATOR_NAME), async (_o, state) => {
    await state.storage.delete(keys.map((key) => `${DOC_VERSION_PREFIX}${key}`));
  });
}

/** Records e-commerce track events for a visitor through the real collection API. */
export async function track(
  who: { userId?: string; anonymousId?: string },
  events: Array<{ event: string; properties?: Record<string, unknown> }>,
): Promise<void> {
  const batch = events.map((e, i) => ({
    type: "track",
    ...who,
    event: e.event,
    properties: e.properties ?? {},
    messageId: `${crypto.randomUUID()}-${i}`,
    timestamp: new Date(Date.now() - (events.length - i) * 1000).toISOString(),
  }));
  await collect("/v1/batch", { batch }, { headers: { authorization: basic(WRITE_KEY) } });
}

export async function userToken(userKey: string, ttl = 600, now = Date.now()): Promise<string> {
  return (await signUserToken(TOKEN_SECRET, userKey, now, ttl)).token;
}

export type Answer = Omit<RankAnswer, "timing">;

export async function get(path: string, auth: string | null = SERVER_KEY, headers: Record<string, string> = {}) {
  return exports.default.fetch(
    new Request(`${BASE}${path}`, { headers: { ...(auth ? { authorization: `Bearer ${auth}` } : {}), ...headers } }),
  );
}

export async function postJson(path: string, body: unknown, auth: string | null = SERVER_KEY) {
  return exports.default.fetch(
    new Request(`${BASE}${path}`, {
      method: "POST",
      headers: { "content-type": "application/json", ...(auth ? { authorization: `Bearer ${auth}` } : {}) },
      body: JSON.stringify(body),
    }),
  );
}

/** A request that must answer 200: the parsed body. */
export async function ok(res: Response | Promise<Response>): Promise<Answer> {
  const r = await res;
  const text = await r.text();
  expect(r.status, text).toBe(200);
  return JSON.parse(text) as Answer;
}

export const ids = (a: Answer) => a.items.map((i) => i.productId);

/** A request through createApp() with another env (fakes that inject faults), with a real ExecutionContext. */
export async function appFetch(testEnv: Env, path: string, init: RequestInit = {}): Promise<Response> {
  const ctx = createExecutionContext();
  const res = await createApp().request(path, init, testEnv, ctx);
  const body = await res.arrayBuffer();
  await waitOnExecutionContext(ctx);
  return new Response(body.byteLength > 0 ? body : null, { status: res.status, headers: res.headers });
}

/**
 * The shop the ranking Worker tests rank (ids prefixed with `tag`, so the live trending counters other test files
 * bump never touch them). Hand-checkable:
 *   - p1 (kitchen) has similar items s1 (0.9) and s2 (0.45); c1 (lamps) is bought with bt1 (0.8) and bt2 (0.4);
 *   - user u:<tag>-alice has the batch list b1 (0.9), b2 (0.6); nobody else has one;
 *   - the global popular list is pop01 … pop12 (scores 12 … 1) with the out-of-stock `oos` on top and c1 last; the batch
 *     trending list is tr1; every popular product has its own category (no diversity cap applies).
 */
export function shopFixture(tag: string, version = 1): Fixture & { id: (name: string) => string } {
  const id = (name: string) => `${tag}-${name}`;
  const pops = Array.from({ length: 12 }, (_, i) => `pop${String(i + 1).padStart(2, "0")}`);
  return {
    id,
    version,
    catalog: [
      { id: id("p1"), title: "Blue Mug", category: "kitchen", price: 8 },
      { id: id("s1"), title: "Green Mug", category: "kitchen", price: 9 },
      { id: id("s2"), title: "Tea Pot", category: "kitchen", price: 20 },
      { id: id("c1"), title: "Desk Lamp", category: "lamps", price: 30 },
      { id: id("bt1"), title: "Light Bulb", category: "bulbs", price: 5 },
      { id: id("bt2"), title: "Lamp Shade", category: "shades", price: 15 },
      { id: id("b1"), title: "Linen Apron", category: "aprons", price: 25 },
      { id: id("b2"), title: "Oven Glove", category: "gloves", price: 12 },
      { id: id("tr1"), title: "Trendy Vase", category: "vases", price: 40 },
      { id: id("oos"), title: "Sold Out Bowl", category: "bowls", price: 10, inStock: false },
      ...pops.map((p, i) => ({ id: id(p), title: `Popular ${p}`, category: `cat${i}`, price: 10 + i })),
    ],
    popular: {
      global: [[id("oos"), 100], ...pops.map((p, i) => [id(p), 12 - i] as [string, number]), [id("c1"), 0.5]],
    },
    trending: { global: [[id("tr1"), 5]] },
    users: {
      [`u:${id("alice")}`]: [
        [id("b1"), 0.9, "bought_together:x"],
        [id("b2"), 0.6, null],
      ],
    },
    similar: {
      [id("p1")]: [
        [id("s1"), 0.9],
        [id("s2"), 0.45],
      ],
    },
    boughtTogether: {
      [id("c1")]: [
        [id("bt1"), 0.8],
        [id("bt2"), 0.4],
      ],
    },
  };
}

/**
 * The answer once no source missed its deadline (30–50 ms by default, which a loaded test machine can miss): the
 * request is repeated a few times, and the test sees the last answer (its own assertions then fail if still late).
 */
export async function settled<A extends { degraded: string[] }>(request: () => Promise<A>, tries = 5): Promise<A> {
  let a = await request();
  for (let i = 1; i < tries && a.degraded.some((d) => d.endsWith("_timeout")); i++) a = await request();
  return a;
}
