// The ranking service under faults (docs/ranking.md#failure): `answer()` with the real sources (depsFromEnv: the
// SessionState objects, the local KV, Redis) wrapped to throw or never answer, and the HTTP API with Redis on a
// port where nothing listens. A fault is never a 5xx: the answer comes within the deadlines, flags what it worked
// around, and is still a full list from the other sources. Timing bounds are generous fault detectors (a hanging
// source must not hold the answer near a second), not performance measurements.
import { env } from "cloudflare:workers";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { DEFAULT_RANKING_CONFIG, RANKING_CONFIG_KEY } from "../../src/rank/config.ts";
import { depsFromEnv } from "../../src/rank/deps.ts";
import { LOAD_GIVE_UP_MS, POINTER_TTL_MS } from "../../src/rank/online-store.ts";
import { parseRankParams, type RankParams } from "../../src/rank/request.ts";
import { answer, loadHead, type RankAnswer, type RankDeps } from "../../src/rank/service.ts";
import {
  type Answer,
  appFetch,
  ids,
  publishFixture,
  resetCaches,
  SERVER_KEY,
  settled,
  shopFixture,
  track,
} from "./rank-helpers.ts";

let shop: ReturnType<typeof shopFixture>;
let id: (name: string) => string;
const pending: Promise<unknown>[] = [];
const ctx = { waitUntil: (p: Promise<unknown>) => void pending.push(p.catch(() => undefined)) };

beforeEach(async () => {
  shop = shopFixture(`f${crypto.randomUUID().slice(0, 8)}`);
  id = shop.id;
  await publishFixture(shop);
  await Promise.all(pending.splice(0));
});

const never = <T>() => new Promise<T>(() => {});
/**
 * The KV reads faultyKv left hanging, failed when the test ends: work handed to waitUntil on them (a load of the
 * shared keys) then settles, and the next test's beforeEach does not wait on it forever.
 */
const hung: Array<(error: Error) => void> = [];
afterEach(() => {
  for (const fail of hung.splice(0)) fail(new Error("the test is over"));
});
const pops = (from: number, to: number) =>
  Array.from({ length: to - from + 1 }, (_, i) => id(`pop${String(from + i).padStart(2, "0")}`));
const organic = (a: RankAnswer | Answer) => ids(a).filter((x) => x !== id("tr1"));

type Fault = "throw" | "hang" | null;

/** The local KV, failing (or hanging) on the reads `fault` picks. A new object: a cold isolate cache. */
function faultyKv(fault: (keys: string[]) => Fault): KVNamespace {
  const real = env.ONLINE_STORE;
  return {
    get(key: string | string[], options?: unknown) {
      const f = fault(Array.isArray(key) ? key : [key]);
      if (f === "throw") return Promise.reject(new Error("KV is down"));
      if (f === "hang") return new Promise((_, reject) => hung.push(reject));
      return (real.get as (k: unknown, o: unknown) => Promise<unknown>)(key, options);
    },
  } as unknown as KVNamespace;
}

const isHead = (keys: string[]) => keys.includes("ptr");
const isLists = (keys: string[]) => keys.some((k) => k.startsWith("u:") || k.startsWith("i:"));
const isShared = (keys: string[]) => keys.some((k) => /^v\d+:/.test(k));

/** `kv` with `config` (a ranking config document's body) served as the stored ranking config. */
function withConfig(kv: KVNamespace, config: Record<string, unknown>): KVNamespace {
  const doc = JSON.stringify({ version: "test", updatedAt: 0, config });
  return {
    async get(key: string | string[], options?: unknown) {
      const value = await (kv.get as (k: unknown, o: unknown) => Promise<unknown>)(key, options);
      if (!Array.isArray(key) || !key.includes(RANKING_CONFIG_KEY)) return value;
      const values = new Map(value as Map<string, string | null>);
      values.set(RANKING_CONFIG_KEY, doc);
      return values;
    },
  } as unknown as KVNamespace;
}

function deps(patch: Partial<RankDeps> = {}): RankDeps {
  return { ...depsFromEnv(env, ctx), ...patch };
}

const isItemLists = (keys: string[]) => keys.some((k) => k.startsWith("i:"));

/**
 * Alice, who viewed p1, and a KV whose item-list reads fail as `fault` says: on home (no context product) only the
 * second read, of the seeds' neighbour lists, asks for `i:` keys. Deadlines this machine's load cannot miss for the
 * reads that work; a hanging one is cut at 300 ms.
 */
async function aliceViewedP1(fault: Fault): Promise<KVNamespace> {
  await track({ userId: id("alice") }, [{ event: "Product Viewed", properties: { product_id: id("p1") } }]);
  return withConfig(
    faultyKv((keys) => (isItemLists(keys) ? fault : null)),
    {
      deadlines: { session: 2000, kv: 300, total: 2500 },
    },
  );
}

/** An answer that lost p1's similar items with the seeds' read: still 12, alice's batch list, then popular. */
function expectWithoutSeeds(a: RankAnswer | Answer): void {
  expect(a.sources.session.status).toBe("ok");
  expect(a.items).toHaveLength(12);
  expect(organic(a).slice(0, 3)).toEqual([id("b1"), id("b2"), id("pop01")]);
  expect(ids(a)).not.toContain(id("s1"));
}

const request = (params: RankParams) => parseRankParams("recommend", params, DEFAULT_RANKING_CONFIG);
const alice = () => request({ placement: "home", userId: id("alice") });

async function timed(work: Promise<RankAnswer>): Promise<{ a: RankAnswer; ms: number }> {
  const started = performance.now();
  const a = await work;
  return { a, ms: performance.now() - started };
}

describe("the session source", () => {
  it("with a working session, alice's viewed product leads (the baseline the faults lose)", async () => {
    await track({ userId: id("alice") }, [{ event: "Product Viewed", properties: { product_id: id("p1") } }]);
    const a = await settled(() => answer(deps(), alice()));
    expect(a.sources.session.status).toBe("ok");
    expect(ids(a)[0]).toBe(id("s1"));
    expect(a.degraded).not.toContain("session_timeout");
  });

  it("a session that throws: flagged session_error, the list from batch and popular", async () => {
    const a = await answer(
      deps({
        snapshot: () => {
          throw new Error("object overloaded");
        },
      }),
      alice(),
    );
    expect(a.degraded).toContain("session_error");
    expect(a.sources.session.status).toBe("error");
    expect(a.items).toHaveLength(12);
    expect(organic(a).slice(0, 4)).toEqual([id("b1"), id("b2"), ...pops(1, 2)]);
  });

  it("a session that rejects later: the same", async () => {
    const a = await answer(deps({ snapshot: () => Promise.reject(new Error("reset")) }), alice());
    expect(a.degraded).toContain("session_error");
    expect(a.items).toHaveLength(12);
  });

  it("a session that never answers: flagged session_timeout within the deadline, still a full list", async () => {
    await track({ userId: id("alice") }, [{ event: "Product Viewed", properties: { product_id: id("p1") } }]);
    const { a, ms } = await timed(answer(deps({ snapshot: () => never() }), alice()));
    expect(ms).toBeLessThan(800);
    expect(a.degraded).toContain("session_timeout");
    expect(a.sources.session.status).toBe("timeout");
    // Without the session, s1 (similar to the viewed p1) loses its lead: batch first, then popular.
    expect(a.items).toHaveLength(12);
    expect(organic(a).slice(0, 3)).toEqual([id("b1"), id("b2"), id("pop01")]);
    expect(a.sources.batch.status).toBe("ok");
  });
});

describe("the online store (KV)", () => {
  it("per-user and neighbour lists failing: flagged batch_error, the popular list fills", async () => {
    const kv = faultyKv((keys) => (isLists(keys) ? "throw" : null));
    const a = await answer(deps({ kv }), alice());
    expect(a.degraded).toContain("batch_error");
    expect(a.sources.batch.status).toBe("error");
    expect(a.sources.catalog.status).toBe("ok");
    expect(a.items).toHaveLength(12);
    expect(organic(a).slice(0, 3)).toEqual(pops(1, 3));
  });

  it("per-user lists hanging: flagged batch_timeout, answered well within a second", async () => {
    const kv = faultyKv((keys) => (isLists(keys) ? "hang" : null));
    const { a, ms } = await timed(answer(deps({ kv }), alice()));
    expect(ms).toBeLessThan(800);
    expect(a.degraded).toContain("batch_timeout");
    expect(a.sources.batch.status).toBe("timeout");
    expect(a.items).toHaveLength(12);
    expect(organic(a).slice(0, 3)).toEqual(pops(1, 3));
  });

  it("the catalogue hanging: flagged catalog_timeout and catalog_unavailable, no error", async () => {
    const kv = faultyKv((keys) => (isShared(keys) ? "hang" : null));
    const { a, ms } = await timed(answer(deps({ kv }), alice()));
    expect(ms).toBeLessThan(800);
    expect(a.degraded).toEqual(expect.arrayContaining(["catalog_timeout", "catalog_unavailable"]));
    expect(a.sources.catalog.status).toBe("timeout");
    // Without the catalogue nothing can be checked: alice's batch list is kept as it is.
    expect(ids(a).slice(0, 2)).toEqual([id("b1"), id("b2")]);
  });

  it("the catalogue hanging: a rerank serves its candidates unchecked and says catalog_unavailable too", async () => {
    const kv = faultyKv((keys) => (isShared(keys) ? "hang" : null));
    const rerank = parseRankParams("rerank", { candidates: [id("oos"), id("p1")] }, DEFAULT_RANKING_CONFIG);
    const a = await answer(deps({ kv }), rerank);
    // oos is out of stock: with the catalogue, the answer would be p1 alone.
    expect(ids(a)).toEqual([id("oos"), id("p1")]);
    expect(a.degraded).toEqual(expect.arrayContaining(["catalog_timeout", "catalog_unavailable"]));
    expect(a.sources.catalog.status).toBe("timeout");
  });

  it("the catalogue hanging, then answering: a request past the give-up time loads it again", async () => {
    let fault: Fault = "hang";
    const kv = faultyKv((keys) => (isShared(keys) ? fault : null));
    let offset = 0;
    const d = deps({ kv, now: () => Date.now() + offset });
    expect((await answer(d, alice())).degraded).toContain("catalog_timeout");
    fault = null;
    // Within the give-up time, requests wait on the hung load (cut by their own deadline).
    expect((await answer(d, alice())).degraded).toContain("catalog_timeout");
    offset = LOAD_GIVE_UP_MS + 1000;
    const a = await settled(() => answer(d, alice()));
    expect(a.degraded).not.toContain("catalog_timeout");
    expect(a.degraded).not.toContain("catalog_unavailable");
    expect(a.sources.catalog.status).toBe("ok");
    expect(a.items).toHaveLength(12);
    expect(ids(a)).not.toContain(id("oos"));
  });

  it("every read failing on a cold isolate: flagged kv_error, an answer all the same", async () => {
    const kv = faultyKv(() => "throw");
    const a = await answer(deps({ kv }), alice());
    expect(a.degraded).toEqual(expect.arrayContaining(["kv_error", "catalog_unavailable"]));
    expect(a.config.version).toBe("default");
    expect(a.snapshot.version).toBeNull();
    expect(a.items.map((i) => i.productId)).not.toContain(id("oos"));
  });

  it("the head read hanging on a cold isolate: flagged kv_timeout within the KV deadline, no snapshot", async () => {
    const kv = faultyKv((keys) => (isHead(keys) ? "hang" : null));
    const { a, ms } = await timed(answer(deps({ kv }), alice()));
    expect(ms).toBeLessThan(800);
    expect(a.degraded).toEqual(expect.arrayContaining(["kv_timeout", "catalog_unavailable"]));
    expect(a.snapshot.version).toBeNull();
    expect(a.config.version).toBe("default");
  });

  it("the batch list's read failing while the seeds' read works: the batch source says error, not absent", async () => {
    await track({ userId: id("alice") }, [{ event: "Product Viewed", properties: { product_id: id("p1") } }]);
    const kv = faultyKv((keys) => (keys.some((k) => k.startsWith("u:")) ? "throw" : null));
    const a = await settled(() => answer(deps({ kv }), alice()));
    expect(a.degraded).toContain("batch_error");
    expect(a.sources.batch.status).toBe("error");
    // The seeds' neighbour lists were read: the viewed product's similar items lead.
    expect(ids(a)[0]).toBe(id("s1"));
    expect(a.items).toHaveLength(12);
  });

  it("the seeds' neighbour lists failing: flagged session_neighbors_error, 200 with batch and popular", async () => {
    const kv = await aliceViewedP1("throw");
    const res = await appFetch(
      { ...env, ONLINE_STORE: kv },
      `/v1/recommendations?placement=home&userId=${id("alice")}`,
      {
        headers: { authorization: `Bearer ${SERVER_KEY}` },
      },
    );
    const text = await res.text();
    expect(res.status, text).toBe(200);
    const a = JSON.parse(text) as Answer;
    expect(a.degraded).toContain("session_neighbors_error");
    expect(a.sources.batch.status).toBe("ok");
    expectWithoutSeeds(a);
  });

  it("the seeds' neighbour lists hanging: flagged session_neighbors_timeout, a full list all the same", async () => {
    const kv = await aliceViewedP1("hang");
    const { a, ms } = await timed(answer(deps({ kv }), alice()));
    expect(ms).toBeLessThan(2000);
    expect(a.degraded).toContain("session_neighbors_timeout");
    expect(a.degraded).not.toContain("session_timeout");
    expectWithoutSeeds(a);
  });

  it("the seeds' read failing keeps the neighbour lists the isolate holds", async () => {
    await track({ userId: id("alice") }, [{ event: "Product Viewed", properties: { product_id: id("p1") } }]);
    let fault: Fault = null;
    const kv = faultyKv((keys) => (isItemLists(keys) ? fault : null));
    const d = deps({ kv });
    const warm = await settled(() => answer(d, alice()));
    expect(ids(warm)[0]).toBe(id("s1"));
    // A second viewed product, whose lists the isolate does not hold: the seeds' read now has a key to ask KV for.
    await track({ userId: id("alice") }, [{ event: "Product Viewed", properties: { product_id: id("c1") } }]);
    fault = "throw";
    const a = await settled(() => answer(d, alice()));
    expect(a.degraded).toContain("session_neighbors_error");
    expect(a.items).toHaveLength(12);
    // p1's similar items, read before the fault, still lead; c1's bought-together items were never read.
    expect(ids(a)[0]).toBe(id("s1"));
    expect(ids(a)).toContain(id("s2"));
    expect(a.items.find((i) => i.productId === id("s1"))?.reasons[0]).toBe(`similar_to:${id("p1")}`);
    expect(ids(a)).not.toContain(id("bt1"));
  });

  it("a slow head counts against the total deadline: hanging lists are cut at what is left of it", async () => {
    // Deadlines of the published config: 500 ms per source, 550 ms for the whole answer. The head read takes 540 ms
    // of the answer's clock (a fake one, moved by the read): 10 ms are left, so the hanging lists must be given up
    // after ~10 ms, not after their own 500.
    const slowConfig = JSON.stringify({
      version: "slow",
      updatedAt: 0,
      config: { deadlines: { session: 500, kv: 500, total: 550 } },
    });
    for (const headFirst of [false, true]) {
      let offset = 0;
      const real = env.ONLINE_STORE;
      const kv = {
        async get(key: string | string[], options?: unknown) {
          const keys = Array.isArray(key) ? key : [key];
          if (isLists(keys)) return never();
          const value = await (real.get as (k: unknown, o: unknown) => Promise<unknown>)(key, options);
          if (!isHead(keys)) return value;
          offset += 540;
          const values = new Map(value as Map<string, string | null>);
          values.set(RANKING_CONFIG_KEY, slowConfig);
          return values;
        },
      } as unknown as KVNamespace;
      const d = deps({ kv, now: () => Date.now() + offset });
      // The HTTP route and the RPC entrypoint read the head first (to validate), then answer.
      const { a, ms } = await timed(headFirst ? loadHead(d).then((h) => answer(d, alice(), h)) : answer(d, alice()));
      expect(a.config.version).toBe("slow");
      expect(ms).toBeLessThan(300);
      expect(a.degraded).toContain("batch_timeout");
      expect(a.timing.head).toBeGreaterThanOrEqual(540);
      expect(a.timing.total).toBeGreaterThanOrEqual(a.timing.head ?? 0);
      expect(a.items).toHaveLength(12);
    }
  });

  it("KV failing after the head expired: the last head and in-memory catalogue stand in (stale_head)", async () => {
    let fault: Fault = null;
    const kv = faultyKv(() => fault);
    let offset = 0;
    const d = deps({ kv, now: () => Date.now() + offset });
    const warm = await answer(d, alice());
    expect(warm.degraded).not.toContain("kv_error");
    expect(warm.sources.catalog.status).toBe("ok");

    fault = "throw";
    offset = POINTER_TTL_MS + 1000;
    const a = await answer(d, alice());
    expect(a.degraded).toEqual(expect.arrayContaining(["kv_error", "stale_head"]));
    expect(a.snapshot.version).toBe(1);
    expect(a.sources.catalog.status).toBe("ok");
    expect(a.items).toHaveLength(12);
    expect(ids(a)).not.toContain(id("oos"));
    // Everything the warm answer used is still in the isolate (head, catalogue, alice's list for 30 s): the same list.
    expect(ids(a)).toEqual(ids(warm));
    expect(a.sources.batch.status).toBe("ok");
  });

  it("KV hanging after the head expired: the stale head, answered well within a second", async () => {
    let fault: Fault = null;
    const kv = faultyKv(() => fault);
    let offset = 0;
    const d = deps({ kv, now: () => Date.now() + offset });
    await answer(d, alice());
    fault = "hang";
    offset = POINTER_TTL_MS + 1000;
    const { a, ms } = await timed(answer(d, alice()));
    expect(ms).toBeLessThan(800);
    expect(a.degraded).toEqual(expect.arrayContaining(["kv_timeout", "stale_head"]));
    expect(a.items).toHaveLength(12);
  });

  it("KV hanging on a cold isolate: the HTTP API still answers 200, flagged kv_timeout", async () => {
    const kv = faultyKv(() => "hang");
    const started = performance.now();
    const res = await Promise.race([
      appFetch({ ...env, ONLINE_STORE: kv }, "/v1/recommendations?placement=home", {
        headers: { authorization: `Bearer ${SERVER_KEY}` },
      }),
      new Promise<null>((resolve) => setTimeout(() => resolve(null), 5000)),
    ]);
    expect(res, "no answer within 5 s").not.toBeNull();
    expect(performance.now() - started).toBeLessThan(2000);
    const text = await (res as Response).text();
    expect((res as Response).status, text).toBe(200);
    expect((JSON.parse(text) as Answer).degraded).toContain("kv_timeout");
  });
});

describe("Redis unreachable", () => {
  it("answers 200 with the batch trending list standing in", async () => {
    resetCaches();
    const down = { ...env, UPSTASH_REDIS_REST_URL: "http://127.0.0.1:9" };
    const init = { headers: { authorization: `Bearer ${SERVER_KEY}` } };
    const path = "/v1/recommendations?placement=home&limit=3";
    // Cold: no live list yet (the refresh runs in the background and fails).
    const first = await appFetch(down, path, init);
    expect(first.status).toBe(200);
    const a = (await first.json()) as Answer;
    expect(a.degraded).toContain("trending_warming");
    expect(a.sources.trending).toMatchObject({ status: "ok", from: "kv" });
    // tr1 = trending 0.3 × 5/5, ahead of pop01 (0.024)
    expect(ids(a)).toEqual([id("tr1"), id("pop01"), id("pop02")]);
    expect(a.items[0]?.reasons).toEqual(["trending"]);
    // After the failed refresh: unavailable, and still the KV list.
    const second = await appFetch(down, path, init);
    expect(second.status).toBe(200);
    const b = (await second.json()) as Answer;
    expect(b.degraded).toContain("trending_unavailable");
    expect(b.sources.trending).toMatchObject({ status: "ok", from: "kv" });
    expect(ids(b)).toEqual([id("tr1"), id("pop01"), id("pop02")]);
  });
});
