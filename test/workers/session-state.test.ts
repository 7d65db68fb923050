// SessionState inside workerd, against the real local Redis: recording every e-commerce event, dedupe, sessions,
// decay, identity merge, read-only snapshots, the outbox under a Redis outage, expiry and compaction.
import { evictDurableObject, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it, vi } from "vitest";
import type { CollectedEvent } from "../../src/collect/event.ts";
import {
  AFFINITY_MAX,
  DAY_MS,
  HOUR_MS,
  INTERACTIONS_MAX,
  MERGED_MAX,
  MINUTE_MS,
  RECENT_MAX,
  SEEN_MAX,
} from "../../src/session/limits.ts";
import { FLUSH_MAX_BYTES, OUTBOX_FLUSH_DELAY_MS } from "../../src/session/outbox.ts";
import type { SessionState } from "../../src/session/session-state.ts";
import type { SessionSnapshot } from "../../src/session/snapshot.ts";
import {
  EVENT_STREAM,
  pushToStream,
  SEEN_KEY_PREFIX,
  STREAM_FIELDS,
  TREND_PRODUCT_PREFIX,
  trendBucket,
} from "../../src/session/stream.ts";
import { HALF_LIFE_MS } from "../../src/session/weights.ts";
import { openRedis } from "../../src/stores/redis.ts";
import { collectedEvent } from "../support/events.ts";
import { type SessionCalls, wrapSessions } from "./collect-helpers.ts";

const T0 = Date.parse("2026-11-20T10:00:00.000Z");

/** A second Redis client: assertions read back what the object wrote through another path. */
const redis = () => openRedis({ url: env.UPSTASH_REDIS_REST_URL, token: env.UPSTASH_REDIS_REST_TOKEN });

let counter = 0;
const uid = (prefix: string) => `${prefix}-${crypto.randomUUID()}`;

function track(
  name: string,
  properties: Record<string, unknown>,
  opts: { at?: number; userId?: string | null; anonymousId?: string | null; messageId?: string } = {},
): CollectedEvent {
  return base("track", { event: name, properties }, opts);
}

function base(
  type: CollectedEvent["type"],
  fields: Partial<CollectedEvent>,
  opts: { at?: number; userId?: string | null; anonymousId?: string | null; messageId?: string } = {},
): CollectedEvent {
  const at = new Date(opts.at ?? T0).toISOString();
  return collectedEvent({
    messageId: opts.messageId ?? `m-${++counter}-${crypto.randomUUID()}`,
    type,
    userId: opts.userId ?? null,
    anonymousId: opts.anonymousId === undefined ? (opts.userId ? null : "anon") : opts.anonymousId,
    timestamp: at,
    originalTimestamp: at,
    sentAt: at,
    receivedAt: at,
    sourceId: "test-source",
    ...fields,
  });
}

/** The message an RPC call failed with (RPC promises are not plain promises: resolve them first). */
async function failure(call: Promise<unknown>): Promise<string> {
  try {
    await call;
  } catch (error) {
    return error instanceof Error ? error.message : String(error);
  }
  throw new Error("expected the call to fail");
}

const stub = (key: string) => env.SESSION_STATE.getByName(key);

/** Every hand-over the object asks for takes 300 ms: an erasure can land while a record awaits it. */
async function slowHandOvers(key: string): Promise<void> {
  await wrapSessions(key, (_name, other) => ({
    handOver: async (...args: [string, string, boolean]) => {
      await new Promise((resolve) => setTimeout(resolve, 300));
      return other.handOver(...args);
    },
  }));
}

/** For `wrapSessions`: the first `handOver` asked of `key` reaches its object, but the reply is lost. */
function firstReplyLost(key: string) {
  let lost = false;
  return (name: string, other: SessionCalls) =>
    name !== key
      ? {}
      : {
          handOver: async (...args: [string, string, boolean]) => {
            const answer = await other.handOver(...args);
            if (lost) return answer;
            lost = true;
            throw new Error("injected: reply lost");
          },
        };
}

/** Fixes the object's clock (it reads time only through `clock`). */
async function setClock(key: string, now: number): Promise<void> {
  await runInDurableObject(stub(key), (o: SessionState) => {
    o.clock = () => now;
  });
}

/**
 * A visitor and a user object sharing one clock, set to the real time (no alarm they set is due for real during the
 * test); `at` moves both.
 */
async function visitorAndUser() {
  const [user, anon] = [uid("user"), uid("anon")];
  const [u, a] = [`u:${user}`, `a:${anon}`];
  const start = Date.now();
  const at = async (time: number) => {
    await setClock(u, time);
    await setClock(a, time);
  };
  await at(start);
  return { user, anon, u, a, start, at };
}
type VisitorAndUser = Awaited<ReturnType<typeof visitorAndUser>>;

/** Waits until the post-record flush has drained the outbox. */
/** Runs the object's alarm (the outbox drains from it) until nothing is pending. */
async function drained(key: string): Promise<SessionSnapshot> {
  return vi.waitFor(
    async () => {
      await runDurableObjectAlarm(stub(key));
      const s = await stub(key).snapshot(key);
      if (s.outbox.pending !== 0) throw new Error(`outbox still has ${s.outbox.pending}`);
      return s;
    },
    { timeout: 10_000, interval: 50 },
  );
}

async function streamEntriesFor(messageIds: readonly string[]): Promise<string[]> {
  const entries = await redis().xrange(EVENT_STREAM, "-", "+");
  const wanted = new Set(messageIds);
  return Object.values(entries)
    .map((fields) => String((fields as Record<string, unknown>).id))
    .filter((id) => wanted.has(id));
}

/** Calls `seen` with every SQL statement the object runs from now on (until it is evicted), then runs it. */
async function watchStatements(key: string, seen: (query: string, bindings: unknown[]) => void): Promise<void> {
  await runInDurableObject(stub(key), (_o: SessionState, state) => {
    const storage = state.storage.sql;
    const exec = storage.exec.bind(storage);
    Object.assign(storage, {
      exec: (query: string, ...bindings: unknown[]) => {
        seen(query, bindings);
        return exec(query, ...bindings);
      },
    });
  });
}

/** Rows of the bounded tables of a session object, counted in its storage. */
async function rowCounts(key: string) {
  return runInDurableObject(stub(key), (_o: SessionState, state) => {
    const n = (q: string) => Number(state.storage.sql.exec<{ n: number }>(q).one().n);
    return {
      interactions: n("SELECT COUNT(*) AS n FROM interactions"),
      viewed: n("SELECT COUNT(*) AS n FROM recent WHERE kind = 'viewed'"),
      longTerm: n("SELECT COUNT(*) AS n FROM affinities WHERE horizon = 'longTerm'"),
      session: n("SELECT COUNT(*) AS n FROM affinities WHERE horizon = 'session'"),
      seen: n("SELECT COUNT(*) AS n FROM seen"),
    };
  });
}

describe("record + snapshot", () => {
  it("records a product view and shows it in the snapshot", async () => {
    const key = `a:${uid("v")}`;
    await setClock(key, T0 + MINUTE_MS);
    const e = track(
      "Product Viewed",
      { product_id: "p1", category: "Shoes", brand: "Acme", price: 42 },
      {
        anonymousId: key.slice(2),
      },
    );
    expect(await stub(key).record(key, [e])).toEqual({ accepted: 1, duplicates: 0 });
    const s = await stub(key).snapshot(key);
    expect(s.exists).toBe(true);
    expect(s.userKey).toBe(key);
    expect(s.viewed).toEqual(["p1"]);
    expect(s.interactions[0]).toMatchObject({
      kind: "view",
      productId: "p1",
      category: "Shoes",
      brand: "Acme",
      price: 42,
    });
    expect(s.counters).toEqual({ events: 1, duplicates: 0 });
    expect(s.affinities.longTerm.map((a) => a.token).sort()).toEqual(["brand:acme", "category:shoes", "price:25-50"]);
  });

  it("understands every Segment e-commerce event", async () => {
    const anon = uid("shopper");
    const key = `a:${anon}`;
    await setClock(key, T0 + 20 * MINUTE_MS);
    const o = { anonymousId: anon };
    const at = (min: number) => ({ ...o, at: T0 + min * MINUTE_MS });
    const events = [
      track("Products Searched", { query: "  Red   Shoes " }, at(0)),
      track(
        "Product List Viewed",
        { category: "Shoes", products: [{ product_id: "p1" }, { product_id: "p2" }] },
        at(1),
      ),
      track("Product Clicked", { product_id: "p1", category: "Shoes" }, at(2)),
      track(
        "Product Viewed",
        { product_id: "p1", category: "Shoes", brand: "Acme", price: "59.90", tags: ["red"] },
        at(3),
      ),
      track("Product Added", { product_id: "p1", category: "Shoes", brand: "Acme", price: 59.9, quantity: 1 }, at(4)),
      track("Product Added", { product_id: "p2", category: "Socks", price: 5 }, at(5)),
      track("Product Removed", { product_id: "p2", category: "Socks", price: 5 }, at(6)),
      track("Product Added to Wishlist", { product_id: "p4", category: "Hats", brand: "Hatco" }, at(7)),
      track("Cart Viewed", { products: [{ product_id: "p1" }] }, at(8)),
      track("Checkout Started", { order_id: "o1", products: [{ product_id: "p1" }] }, at(9)),
      track(
        "Order Completed",
        {
          order_id: "o1",
          revenue: 59.9,
          products: [{ product_id: "p1", category: "Shoes", price: 59.9, quantity: 1 }],
        },
        at(10),
      ),
      base("page", { name: "Product", properties: { productId: "p3", category: "Boots" } }, at(11)),
      track("Signed Up", { plan: "free" }, at(12)),
    ];
    expect(await stub(key).record(key, events)).toEqual({ accepted: events.length, duplicates: 0 });
    const s = await stub(key).snapshot(key);
    expect(s.searches).toEqual(["red shoes"]);
    expect(s.viewed).toEqual(["p3", "p1"]);
    expect(s.carted).toEqual([]);
    expect(s.purchased).toEqual(["p1"]);
    expect(s.wishlisted).toEqual(["p4"]);
    expect(s.interactions.map((i) => i.kind)).toEqual([
      "view",
      "purchase",
      "checkout",
      "cart_view",
      "wishlist",
      "remove_from_cart",
      "add_to_cart",
      "add_to_cart",
      "view",
      "click",
      "list_view",
      "search",
    ]);
    expect(s.interactions.at(-1)).toMatchObject({ kind: "search", query: "red shoes", productId: null });
    expect(s.counters).toEqual({ events: events.length, duplicates: 0 });
    expect(s.session).toMatchObject({
      startedAt: T0,
      lastEventAt: T0 + 12 * MINUTE_MS,
      eventCount: events.length,
      active: true,
    });
    const longTerm = new Map(s.affinities.longTerm.map((a) => [a.token, a.score]));
    // Shoes: list view, click, view, add, purchase — the strongest category.
    expect(s.affinities.longTerm[0]?.token).toBe("category:shoes");
    expect(longTerm.get("tag:red")).toBeGreaterThan(0);
    // Socks: added (+3) then removed (−1.5) → positive but below the add alone.
    expect(longTerm.get("category:socks")).toBeGreaterThan(1);
    expect(longTerm.get("category:socks")).toBeLessThan(3);
    expect(longTerm.get("category:boots")).toBeCloseTo(1, 2);
    // Session and long-term scores agree within one active session (modulo their different decay).
    expect(s.affinities.session.map((a) => a.token)).toContain("category:shoes");
  });

  it("answers exists:false for a never-seen user", async () => {
    const key = `u:${uid("nobody")}`;
    const s = await stub(key).snapshot(key);
    expect(s).toMatchObject({ exists: false, userKey: key, interactions: [], counters: { events: 0, duplicates: 0 } });
  });

  it("rejects a malformed key and a key of another object", async () => {
    const key = `a:${uid("k")}`;
    expect(await failure(stub(key).record("nope", []))).toMatch(/user key/);
    await stub(key).record(key, [track("Product Viewed", { product_id: "p" }, { anonymousId: key.slice(2) })]);
    expect(await failure(stub(key).record(`a:${uid("other")}`, []))).toMatch(/belongs to/);
    expect(await failure(stub(key).snapshot(`a:${uid("other")}`))).toMatch(/belongs to/);
  });
});

describe("dedupe", () => {
  it("gives a repeated messageId no second effect, in the object and in Redis", async () => {
    const anon = uid("dup");
    const key = `a:${anon}`;
    const product = uid("prod");
    await setClock(key, T0 + MINUTE_MS);
    const e = track("Product Viewed", { product_id: product, category: "Dup" }, { anonymousId: anon });
    expect(await stub(key).record(key, [e, e])).toEqual({ accepted: 1, duplicates: 1 });
    await drained(key);
    expect(await stub(key).record(key, [e])).toEqual({ accepted: 0, duplicates: 1 });
    const s = await drained(key);
    expect(s.counters).toEqual({ events: 1, duplicates: 2 });
    expect(s.interactions).toHaveLength(1);
    expect(s.affinities.longTerm.find((a) => a.token === "category:dup")?.score).toBeCloseTo(1, 3);
    // Exactly one stream entry and one trending increment.
    expect(await streamEntriesFor([e.messageId])).toEqual([e.messageId]);
    const entries = Object.values(await redis().xrange(EVENT_STREAM, "-", "+")) as Record<string, unknown>[];
    const entry = entries.find((f) => f[STREAM_FIELDS.messageId] === e.messageId);
    expect(entry?.[STREAM_FIELDS.userKey]).toBe(key);
    const body = entry?.[STREAM_FIELDS.event];
    expect(typeof body === "string" ? JSON.parse(body) : body).toEqual(e);
    const r = redis();
    expect(await r.zscore(`${TREND_PRODUCT_PREFIX}${trendBucket(T0)}`, product)).toBe(1);
    expect(await r.exists(`${SEEN_KEY_PREFIX}${e.messageId}`)).toBe(1);
  });

  it("answers a call repeated under its attempt as accepted, applies nothing twice, and keeps other calls' ids duplicates", async () => {
    const anon = uid("attempt");
    const key = `a:${anon}`;
    await setClock(key, T0 + MINUTE_MS);
    const view = (product: string) =>
      track("Product Viewed", { product_id: product, category: "Retried" }, { anonymousId: anon });
    const earlier = view("p0");
    expect(await stub(key).record(key, [earlier])).toEqual({ accepted: 1, duplicates: 0 });
    const [v1, v2] = [view("p1"), view("p2")];
    // An id another call stored, two new ones, and one of them twice.
    const batch = [earlier, v1, v2, v1];
    const attempt = crypto.randomUUID();
    expect(await stub(key).record(key, batch, { attempt })).toEqual({ accepted: 2, duplicates: 2 });
    // The same call again, as a hand-off retries it when the first answer is lost: answered as the first time.
    expect(await stub(key).record(key, batch, { attempt })).toEqual({ accepted: 2, duplicates: 2 });
    // Any other call finds every id seen: under another attempt, or none.
    expect(await stub(key).record(key, batch, { attempt: crypto.randomUUID() })).toEqual({
      accepted: 0,
      duplicates: 4,
    });
    expect(await stub(key).record(key, batch)).toEqual({ accepted: 0, duplicates: 4 });
    const s = await drained(key);
    expect(s.counters.events).toBe(3);
    expect(s.interactions.map((i) => i.productId).sort()).toEqual(["p0", "p1", "p2"]);
    expect(s.affinities.longTerm.find((a) => a.token === "category:retried")?.score).toBeCloseTo(3, 3);
    const ids = [earlier, v1, v2].map((e) => e.messageId);
    expect((await streamEntriesFor(ids)).sort()).toEqual([...ids].sort());
  });

  it("refuses an attempt that is not a short string", async () => {
    const key = `a:${uid("attempt")}`;
    const e = track("Product Viewed", { product_id: "p" }, { anonymousId: key.slice(2) });
    for (const attempt of ["", "x".repeat(65), 42]) {
      expect(await failure(stub(key).record(key, [e], { attempt } as { attempt: string }))).toMatch(/attempt/);
    }
    expect((await stub(key).snapshot(key)).exists).toBe(false);
  });
});

describe("schema migration", () => {
  /** The object's schema version and the columns of its seen table, read from its storage. */
  const schemaOf = (key: string) =>
    runInDurableObject(stub(key), (_o: SessionState, state) => ({
      version: state.storage.sql.exec("SELECT value FROM meta WHERE key = 'schema_version'").one().value,
      seen: state.storage.sql
        .exec("PRAGMA table_info(seen)")
        .toArray()
        .map((c) => c.name),
    }));

  it("adds the attempt column to an object of schema version 1, whose ids stay duplicates", async () => {
    const anon = uid("v1");
    const key = `a:${anon}`;
    await setClock(key, T0 + MINUTE_MS);
    const old = track("Product Viewed", { product_id: "old" }, { anonymousId: anon });
    await stub(key).record(key, [old]);
    // The object as version 1 left it: its seen table without the column.
    await runInDurableObject(stub(key), (_o: SessionState, state) => {
      state.storage.sql.exec("ALTER TABLE seen DROP COLUMN attempt");
      state.storage.sql.exec("UPDATE meta SET value = '1' WHERE key = 'schema_version'");
    });
    expect(await schemaOf(key)).toEqual({ version: "1", seen: ["message_id", "at"] });
    await evictDurableObject(stub(key));
    await setClock(key, T0 + MINUTE_MS);
    const fresh = track("Product Viewed", { product_id: "new" }, { anonymousId: anon });
    const attempt = crypto.randomUUID();
    expect(await stub(key).record(key, [old, fresh], { attempt })).toEqual({ accepted: 1, duplicates: 1 });
    expect(await stub(key).record(key, [old, fresh], { attempt })).toEqual({ accepted: 1, duplicates: 1 });
    expect(await schemaOf(key)).toEqual({ version: "2", seen: ["message_id", "at", "attempt"] });
    expect((await stub(key).snapshot(key)).counters.events).toBe(2);
  });

  it("opens an object that a previous deploy set back to version 1 after the column was added", async () => {
    const anon = uid("v1");
    const key = `a:${anon}`;
    await setClock(key, T0 + MINUTE_MS);
    const attempt = crypto.randomUUID();
    const first = track("Product Viewed", { product_id: "first" }, { anonymousId: anon });
    await stub(key).record(key, [first], { attempt });
    // Version 1's code opening a version 2 database writes its own version back and leaves the column.
    await runInDurableObject(stub(key), (_o: SessionState, state) => {
      state.storage.sql.exec("UPDATE meta SET value = '1' WHERE key = 'schema_version'");
    });
    await evictDurableObject(stub(key));
    await setClock(key, T0 + MINUTE_MS);
    expect(await stub(key).record(key, [first], { attempt })).toEqual({ accepted: 1, duplicates: 0 });
    expect(await schemaOf(key)).toEqual({ version: "2", seen: ["message_id", "at", "attempt"] });
  });
});

describe("sessions and decay", () => {
  it("starts a new session after 30 minutes without events", async () => {
    const anon = uid("sess");
    const key = `a:${anon}`;
    await setClock(key, T0 + 50 * MINUTE_MS);
    const o = { anonymousId: anon };
    await stub(key).record(key, [
      track("Product Viewed", { product_id: "a", category: "First" }, { ...o, at: T0 }),
      track("Product Viewed", { product_id: "b", category: "First" }, { ...o, at: T0 + 10 * MINUTE_MS }),
    ]);
    const first = (await stub(key).snapshot(key)).session;
    expect(first).toMatchObject({ startedAt: T0, eventCount: 2 });
    await stub(key).record(key, [
      track("Product Viewed", { product_id: "c", category: "Second" }, { ...o, at: T0 + 45 * MINUTE_MS }),
    ]);
    const s = await stub(key).snapshot(key);
    expect(s.session).toMatchObject({
      startedAt: T0 + 45 * MINUTE_MS,
      lastEventAt: T0 + 45 * MINUTE_MS,
      eventCount: 1,
      active: true,
    });
    expect(s.session?.id).not.toBe(first?.id);
    expect(s.interactions[0]?.sessionId).toBe(s.session?.id);
    expect(s.interactions[1]?.sessionId).toBe(first?.id);
    // The session horizon was reset; the long-term one remembers both visits.
    expect(s.affinities.session.map((a) => a.token)).toEqual(["category:second"]);
    expect(s.affinities.longTerm.map((a) => a.token)).toEqual(["category:first", "category:second"]);
  });

  it("starts a new session in the middle of one call, on top of rows stored by an earlier call", async () => {
    const anon = uid("split");
    const key = `a:${anon}`;
    await setClock(key, T0 + 60 * MINUTE_MS);
    const o = { anonymousId: anon };
    const view = (id: string, category: string, min: number) =>
      track("Product Viewed", { product_id: id, category }, { ...o, at: T0 + min * MINUTE_MS });
    await stub(key).record(key, [view("a", "First", 0)]);
    // One call: the stored session rows are read once, updated, then dropped at the 30-minute gap.
    await stub(key).record(key, [view("b", "First", 5), view("c", "Second", 50), view("a", "Second", 51)]);
    const s = await stub(key).snapshot(key);
    expect(s.session).toMatchObject({ startedAt: T0 + 50 * MINUTE_MS, eventCount: 2 });
    expect(s.affinities.session.map((a) => a.token)).toEqual(["category:second"]);
    const longTerm = new Map(s.affinities.longTerm.map((a) => [a.token, a.score]));
    // Two views each (weight 1), decayed over at most an hour of a 30-day half-life.
    expect(longTerm.get("category:first")).toBeCloseTo(2, 2);
    expect(longTerm.get("category:second")).toBeCloseTo(2, 2);
    // The session horizon holds only the two views after the gap, each decayed to the snapshot (10 and 9 minutes).
    const decayed = (minutes: number) => 0.5 ** ((minutes * MINUTE_MS) / HALF_LIFE_MS.session);
    expect(s.affinities.session[0]?.score).toBeCloseTo(decayed(10) + decayed(9), 6);
    // "a" was viewed again: one recent row, now the newest.
    expect(s.viewed).toEqual(["a", "c", "b"]);
    expect(await rowCounts(key)).toMatchObject({ session: 1, longTerm: 2, viewed: 3 });
  });

  it("reads and writes a call's affinities and recent items in a few statements, not one or two per row", async () => {
    const anon = uid("stmts");
    const key = `a:${anon}`;
    await setClock(key, T0 + HOUR_MS);
    const view = (i: number, min: number) =>
      track(
        "Product Viewed",
        { product_id: `p${i}`, category: `c${i}`, brand: `b${i}`, price: 10 + i, tags: [`t${i}`, `u${i}`] },
        { anonymousId: anon, at: T0 + min * MINUTE_MS },
      );
    // A returning visitor: half of the next call's rows are already stored.
    await stub(key).record(
      key,
      Array.from({ length: 5 }, (_, i) => view(i, i)),
    );
    const statements: string[] = [];
    await watchStatements(key, (query) => statements.push(query));
    // 10 views × 5 tokens (category, brand, price band, two tags) × 2 horizons, and 10 recent items.
    await stub(key).record(
      key,
      Array.from({ length: 10 }, (_, i) => view(i, 10 + i)),
    );
    const on = (table: string) => statements.filter((q) => new RegExp(`\\b${table}\\b`).test(q)).length;
    // ~80 distinct affinity rows (prices share bands): 2 reads of ≤ 45 keys and 5 writes of ≤ 18 rows (Durable Object
    // SQLite binds at most 100 parameters per statement), where a read and a write per row ran 164; 10 recent
    // items: 1 + 1.
    expect(on("affinities")).toBeLessThanOrEqual(8);
    expect(on("recent")).toBeLessThanOrEqual(2);
    // The dedupe is one insert (no read when no id was seen before), then the prune and the oldest id for the alarm.
    expect(on("seen")).toBeLessThanOrEqual(3);
    expect(statements.length).toBeLessThanOrEqual(25);
    const s = await stub(key).snapshot(key);
    expect(s.viewed.slice(0, 3)).toEqual(["p9", "p8", "p7"]);
    expect(s.viewed).toHaveLength(10);
    expect(s.affinities.longTerm.find((a) => a.token === "category:c0")?.score).toBeCloseTo(2, 2);
  });

  it("keeps a product carted when a removal or a purchase from before its add arrives in a later call", async () => {
    const anon = uid("late-cart");
    const key = `a:${anon}`;
    await setClock(key, T0 + HOUR_MS);
    const o = { anonymousId: anon };
    await stub(key).record(key, [
      track("Product Added", { product_id: "kept" }, { ...o, at: T0 + 10 * MINUTE_MS }),
      track("Product Added", { product_id: "bought" }, { ...o, at: T0 + 10 * MINUTE_MS }),
      track("Product Added", { product_id: "gone" }, { ...o, at: T0 }),
      track("Order Completed", { products: [{ product_id: "paid" }] }, { ...o, at: T0 + 30 * MINUTE_MS }),
    ]);
    // Late arrivals (an offline queue replayed): events from before the adds, and one after.
    await stub(key).record(key, [
      track("Product Removed", { product_id: "kept" }, { ...o, at: T0 + 5 * MINUTE_MS }),
      track("Order Completed", { products: [{ product_id: "bought" }] }, { ...o, at: T0 + 5 * MINUTE_MS }),
      track("Product Removed", { product_id: "gone" }, { ...o, at: T0 + 5 * MINUTE_MS }),
      // Added before it was bought: not in the cart any more (as a merge unites the sets).
      track("Product Added", { product_id: "paid" }, { ...o, at: T0 + 25 * MINUTE_MS }),
    ]);
    const s = await stub(key).snapshot(key);
    expect(s.carted).toEqual(["kept", "bought"]);
    expect(s.purchased).toEqual(["paid", "bought"]);
    // Within one call too: events are applied in event-time order.
    await stub(key).record(key, [
      track("Product Added", { product_id: "same-call" }, { ...o, at: T0 + 20 * MINUTE_MS }),
      track("Product Removed", { product_id: "same-call" }, { ...o, at: T0 + 15 * MINUTE_MS }),
    ]);
    expect((await stub(key).snapshot(key)).carted).toEqual(["same-call", "kept", "bought"]);
  });

  it("decays affinities lazily to the time of the snapshot", async () => {
    const anon = uid("decay");
    const key = `a:${anon}`;
    await setClock(key, T0);
    await stub(key).record(key, [
      track("Product Added", { product_id: "x", category: "Decay" }, { anonymousId: anon, at: T0 }),
    ]);
    const score = async (now: number, horizon: "session" | "longTerm") => {
      await setClock(key, now);
      const s = await stub(key).snapshot(key);
      return s.affinities[horizon].find((a) => a.token === "category:decay")?.score;
    };
    expect(await score(T0, "longTerm")).toBeCloseTo(3, 6);
    expect(await score(T0 + 15 * MINUTE_MS, "session")).toBeCloseTo(3 * 2 ** -0.5, 6);
    expect(await score(T0 + 30 * DAY_MS, "longTerm")).toBeCloseTo(1.5, 6);
    expect(await score(T0 + 60 * DAY_MS, "longTerm")).toBeCloseTo(0.75, 6);
    // Once the visit is over, the session horizon is empty.
    expect(await score(T0 + 31 * MINUTE_MS, "session")).toBeUndefined();
  });

  it("answers the lean snapshot like the full one, decayed to its time, and shows a new event at once", async () => {
    const anon = uid("lean");
    const key = `a:${anon}`;
    await setClock(key, T0);
    await stub(key).record(key, [
      track("Product Viewed", { product_id: "v1", category: "Lamps" }, { anonymousId: anon, at: T0 }),
      track("Product Added", { product_id: "c1", category: "Mugs" }, { anonymousId: anon, at: T0 }),
    ]);
    const same = (lean: SessionSnapshot, full: SessionSnapshot) => {
      expect(lean.viewed).toEqual(full.viewed);
      expect(lean.carted).toEqual(full.carted);
      expect(lean.session).toEqual(full.session);
      expect(lean.affinities).toEqual(full.affinities);
      expect(lean.interactions).toEqual([]);
    };
    // The first lean read builds the in-memory model, the second is answered from it: both match the full read.
    same(await stub(key).snapshot(key, { lean: true }), await stub(key).snapshot(key));
    await setClock(key, T0 + 10 * MINUTE_MS);
    same(await stub(key).snapshot(key, { lean: true }), await stub(key).snapshot(key));
    // Half of the session half-life later (from T0: 15 min) the Mugs add (3) has decayed to 3 · 2^-0.5.
    await setClock(key, T0 + 15 * MINUTE_MS);
    const later = await stub(key).snapshot(key, { lean: true });
    expect(later.affinities.session.find((a) => a.token === "category:mugs")?.score).toBeCloseTo(3 * 2 ** -0.5, 6);
    // A new event reaches the very next lean read.
    await stub(key).record(key, [
      track("Product Viewed", { product_id: "v2", category: "Lamps" }, { anonymousId: anon, at: T0 + 15 * MINUTE_MS }),
    ]);
    const after = await stub(key).snapshot(key, { lean: true });
    expect(after.viewed[0]).toBe("v2");
    same(after, await stub(key).snapshot(key));
    // The visit ends: the lean read says so too.
    await setClock(key, T0 + 50 * MINUTE_MS);
    const ended = await stub(key).snapshot(key, { lean: true });
    expect(ended.session?.active).toBe(false);
    expect(ended.affinities.session).toEqual([]);
    same(ended, await stub(key).snapshot(key));
    // A key of another object is refused from memory as from storage.
    expect(await failure(stub(key).snapshot(`a:${uid("other")}`, { lean: true }))).toMatch(/belongs to/);
  });
});

describe("snapshot is read-only", () => {
  async function storageState(key: string) {
    return runInDurableObject(stub(key), async (_o: SessionState, state) => {
      const sql = state.storage.sql;
      const tables = sql
        .exec<{ name: string }>(
          "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '_cf%' AND name NOT LIKE 'sqlite%' ORDER BY name",
        )
        .toArray()
        .map((t) => t.name);
      const contents: Record<string, unknown[]> = {};
      for (const t of tables) contents[t] = sql.exec(`SELECT * FROM ${t}`).toArray();
      return { size: sql.databaseSize, tables, contents, alarm: await state.storage.getAlarm() };
    });
  }

  it("writes nothing for an existing user", async () => {
    const anon = uid("ro");
    const key = `a:${anon}`;
    await setClock(key, T0 + MINUTE_MS);
    await stub(key).record(key, [track("Product Viewed", { product_id: "p", category: "C" }, { anonymousId: anon })]);
    await drained(key);
    const before = await storageState(key);
    expect(before.tables).toContain("profile");
    await setClock(key, T0 + 40 * DAY_MS);
    await stub(key).snapshot(key);
    await stub(key).snapshot();
    expect(await storageState(key)).toEqual(before);
  });

  it("creates nothing for a never-seen user", async () => {
    const key = `u:${uid("ghost")}`;
    await stub(key).snapshot(key);
    const after = await storageState(key);
    expect(after.tables).toEqual([]);
    expect(after.alarm).toBeNull();
  });
});

describe("identity merge", () => {
  const identify = (userId: string, anonymousId: string, at = T0 + 5 * MINUTE_MS) =>
    base("identify", { traits: { plan: "pro" } }, { userId, anonymousId, at });

  it("merges the visitor into the user once, forwards later visitor events, and counts nothing twice", async () => {
    const anon = uid("anon");
    const user = uid("user");
    const a = `a:${anon}`;
    const u = `u:${user}`;
    for (const key of [a, u]) await setClock(key, T0 + 10 * MINUTE_MS);
    const anonEvents = [
      track("Product Viewed", { product_id: "p1", category: "Lamps" }, { anonymousId: anon, at: T0 }),
      track("Product Added", { product_id: "p2", category: "Lamps" }, { anonymousId: anon, at: T0 + MINUTE_MS }),
    ];
    await stub(a).record(a, anonEvents);

    const first = identify(user, anon);
    expect(await stub(u).record(u, [first])).toEqual({ accepted: 1, duplicates: 0 });
    const merged = await stub(u).snapshot(u);
    expect(merged.anonymousIds).toEqual([anon]);
    expect(merged.userId).toBe(user);
    expect(merged.interactions.map((i) => i.productId)).toEqual(["p2", "p1"]);
    expect(merged.carted).toEqual(["p2"]);
    expect(merged.counters.events).toBe(3);
    const lamps = merged.affinities.longTerm.find((x) => x.token === "category:lamps")?.score;
    expect(lamps).toBeGreaterThan(3.9);
    // One visit: the anonymous browsing and the login are the same session.
    expect(merged.session?.startedAt).toBe(T0);
    expect((await stub(a).snapshot(a)).mergedInto).toBe(u);

    // identify again (a new message), and concurrently twice: no second merge.
    await Promise.all([stub(u).record(u, [identify(user, anon)]), stub(u).record(u, [identify(user, anon)])]);
    const again = await stub(u).snapshot(u);
    expect(again.interactions).toHaveLength(2);
    expect(again.counters.events).toBe(5);
    expect(again.affinities.longTerm.find((x) => x.token === "category:lamps")?.score).toBeCloseTo(lamps ?? 0, 6);

    // A later anonymous-only event reaches the user; a client retry of an old anonymous event is a duplicate there.
    const later = track(
      "Product Viewed",
      { product_id: "p3", category: "Lamps" },
      { anonymousId: anon, at: T0 + 6 * MINUTE_MS },
    );
    expect(await stub(a).record(a, [later])).toEqual({ accepted: 1, duplicates: 0 });
    expect(await stub(a).record(a, [anonEvents[0] as CollectedEvent])).toEqual({ accepted: 0, duplicates: 1 });
    const after = await stub(u).snapshot(u);
    expect(after.viewed).toEqual(["p3", "p1"]);
    expect(after.counters).toEqual({ events: 6, duplicates: 1 });

    // The visitor object drops its copy once the user confirmed the merge.
    await vi.waitFor(async () => expect((await stub(a).snapshot(a)).interactions).toEqual([]), { timeout: 5_000 });

    // Every event reached the stream exactly once, whichever object's outbox carried it.
    await drained(a);
    await drained(u);
    const ids = [...anonEvents, first, later].map((e) => e.messageId);
    expect((await streamEntriesFor(ids)).sort()).toEqual([...ids].sort());
  });

  it("finds at the user the ids a visitor's call stored when that call is retried after the visitor was merged", async () => {
    const { user, anon, u, a, start } = await visitorAndUser();
    const views = ["p1", "p2"].map((product, i) =>
      track("Product Viewed", { product_id: product }, { anonymousId: anon, at: start + i }),
    );
    const attempt = crypto.randomUUID();
    expect(await stub(a).record(a, views, { attempt })).toEqual({ accepted: 2, duplicates: 0 });
    // The visitor logs in before the call is retried: its state, seen ids included, moves to the user.
    await stub(u).record(u, [base("identify", {}, { userId: user, anonymousId: anon, at: start + 2 })]);
    expect((await stub(a).snapshot(a)).mergedInto).toBe(u);
    // The retried call is forwarded to the user, which finds the ids under the call's attempt.
    expect(await stub(a).record(a, views, { attempt })).toEqual({ accepted: 2, duplicates: 0 });
    expect(await stub(a).record(a, views, { attempt: crypto.randomUUID() })).toEqual({ accepted: 0, duplicates: 2 });
    const merged = await stub(u).snapshot(u);
    expect(merged.counters.events).toBe(3);
    expect(merged.interactions.map((i) => i.productId)).toEqual(["p2", "p1"]);
  });

  it("claims a visitor id that identify names before the visitor sent anything", async () => {
    const anon = uid("early");
    const user = uid("user");
    const a = `a:${anon}`;
    const u = `u:${user}`;
    await stub(u).record(u, [identify(user, anon)]);
    expect((await stub(a).snapshot(a)).mergedInto).toBe(u);
    await stub(a).record(a, [track("Product Viewed", { product_id: "late" }, { anonymousId: anon })]);
    const s = await stub(u).snapshot(u);
    expect(s.viewed).toEqual(["late"]);
    expect(s.anonymousIds).toEqual([anon]);
  });

  it("merges an aliased user into the new user id", async () => {
    const oldId = uid("old");
    const newId = uid("new");
    const oldKey = `u:${oldId}`;
    const newKey = `u:${newId}`;
    await stub(oldKey).record(oldKey, [
      track("Product Viewed", { product_id: "o1", category: "Old" }, { userId: oldId }),
    ]);
    const alias = base("alias", { previousId: oldId }, { userId: newId, anonymousId: null });
    await stub(newKey).record(newKey, [alias]);
    const s = await stub(newKey).snapshot(newKey);
    expect(s.viewed).toEqual(["o1"]);
    expect(s.mergedKeys).toContain(oldKey);
    expect((await stub(oldKey).snapshot(oldKey)).mergedInto).toBe(newKey);
    // Events still sent under the old id land in the new user.
    await stub(oldKey).record(oldKey, [track("Product Viewed", { product_id: "o2" }, { userId: oldId })]);
    expect((await stub(newKey).snapshot(newKey)).viewed).toEqual(["o2", "o1"]);
  });

  /** A user with a view, aliased into a new user id; the reply of its hand-over is lost. */
  async function aliasReplyLost() {
    const [newId, oldId] = [uid("new"), uid("old")];
    const [newKey, oldKey] = [`u:${newId}`, `u:${oldId}`];
    await stub(oldKey).record(oldKey, [track("Product Viewed", { product_id: "o1" }, { userId: oldId })]);
    await wrapSessions(newKey, firstReplyLost(oldKey));
    await stub(newKey).record(newKey, [base("alias", { previousId: oldId }, { userId: newId, anonymousId: null })]);
    // The old user's object marked itself merged into the new one, which did not get its state.
    expect((await stub(oldKey).snapshot(oldKey)).mergedInto).toBe(newKey);
    expect((await stub(newKey).snapshot(newKey)).viewed).toEqual([]);
    return { newId, oldId, newKey, oldKey };
  }

  it("asks an aliased user whose hand-over reply was lost again with the next record, whatever its events name", async () => {
    const { newId, oldId, newKey, oldKey } = await aliasReplyLost();
    // An event under the old id, forwarded to the new user's object: it names no key to merge.
    const [o2, n1] = [T0 + MINUTE_MS, T0 + 2 * MINUTE_MS];
    await stub(oldKey).record(oldKey, [track("Product Viewed", { product_id: "o2" }, { userId: oldId, at: o2 })]);
    await stub(newKey).record(newKey, [track("Product Viewed", { product_id: "n1" }, { userId: newId, at: n1 })]);
    const s = await stub(newKey).snapshot(newKey);
    expect(s.viewed).toEqual(["n1", "o2", "o1"]);
    expect(s.mergedKeys).toContain(oldKey);
    await vi.waitFor(async () => expect((await stub(oldKey).snapshot(oldKey)).viewed).toEqual([]), { timeout: 5_000 });
  });

  it("erases with the new user an aliased user whose hand-over reply was lost, before anything asked it again", async () => {
    const { newKey, oldKey, oldId } = await aliasReplyLost();
    // The alias also claimed the old id's visitor object (it answered).
    const linked = [`a:${oldId}`, oldKey];
    expect((await stub(newKey).linkedKeys()).sort()).toEqual(linked);
    const erased = await stub(newKey).erase({ suppress: false });
    expect({ complete: erased.complete, erased: erased.erased.sort() }).toEqual({
      complete: true,
      erased: [...linked, newKey].sort(),
    });
    const old = await stub(oldKey).snapshot(oldKey);
    expect({ exists: old.exists, viewed: old.viewed }).toEqual({ exists: false, viewed: [] });
  });

  /**
   * A visitor with a view logs in as a user; the visitor's object hands itself over, but the reply is lost. The user
   * is aliased into a new user id before it records anything else.
   */
  async function loginReplyLostThenAlias() {
    const [anon, oldId, newId] = [uid("anon"), uid("old"), uid("new")];
    const [a, oldKey, newKey] = [`a:${anon}`, `u:${oldId}`, `u:${newId}`];
    const view = track("Product Viewed", { product_id: "p-visitor", category: "Lamps" }, { anonymousId: anon });
    expect(await stub(a).record(a, [view])).toEqual({ accepted: 1, duplicates: 0 });
    await wrapSessions(oldKey, firstReplyLost(a));
    await stub(oldKey).record(oldKey, [identify(oldId, anon)]);
    expect((await stub(a).snapshot(a)).mergedInto).toBe(oldKey);
    expect((await stub(oldKey).snapshot(oldKey)).viewed).toEqual([]);
    await stub(newKey).record(newKey, [base("alias", { previousId: oldId }, { userId: newId, anonymousId: null })]);
    expect((await stub(oldKey).snapshot(oldKey)).mergedInto).toBe(newKey);
    return { anon, newId, a, newKey, view };
  }

  it("a hand-over left unanswered by a user aliased away since is asked by the new user: a visitor's retry is a duplicate there", async () => {
    const { a, newKey, view } = await loginReplyLostThenAlias();
    // The client retries the visitor's view within 24 h: forwarded to the new user, which merges the visitor first.
    expect(await stub(a).record(a, [view])).toEqual({ accepted: 0, duplicates: 1 });
    const user = await stub(newKey).snapshot(newKey);
    // identify + alias + the view, once
    expect({ events: user.counters.events, viewed: user.viewed }).toEqual({ events: 3, viewed: ["p-visitor"] });
    expect((await stub(a).snapshot(a)).mergedInto).toBe(newKey);
    await vi.waitFor(async () => expect((await stub(a).snapshot(a)).viewed).toEqual([]), { timeout: 5_000 });
  });

  it("a visitor merged into a user aliased away since, its reply lost, hands itself over to the new user", async () => {
    const { anon, newId, a, newKey } = await loginReplyLostThenAlias();
    // The logged-in visitor's next event carries both ids and goes to the new user, which asks the visitor's object.
    await stub(newKey).record(newKey, [
      track("Product Viewed", { product_id: "p-user" }, { userId: newId, anonymousId: anon, at: T0 + 10 * MINUTE_MS }),
    ]);
    expect((await stub(newKey).snapshot(newKey)).viewed).toEqual(["p-user", "p-visitor"]);
    expect((await stub(a).snapshot(a)).mergedInto).toBe(newKey);
  });

  it("two users aliasing each other at the same moment: one absorbs the other, and neither forwards in a loop", async () => {
    for (let round = 0; round < 5; round++) {
      const [idA, idB] = [uid("A"), uid("B")];
      const [kA, kB] = [`u:${idA}`, `u:${idB}`];
      await stub(kA).record(kA, [track("Product Viewed", { product_id: "pa" }, { userId: idA })]);
      await stub(kB).record(kB, [track("Product Viewed", { product_id: "pb" }, { userId: idB })]);
      const aliasAB = base("alias", { previousId: idB }, { userId: idA, anonymousId: null });
      const aliasBA = base("alias", { previousId: idA }, { userId: idB, anonymousId: null });
      await Promise.all([stub(kA).record(kA, [aliasAB]), stub(kB).record(kB, [aliasBA])]);
      const [sA, sB] = [await stub(kA).snapshot(kA), await stub(kB).snapshot(kB)];
      // Exactly one of them is merged away, into the other, which holds both users' views.
      const merged = [sA.mergedInto, sB.mergedInto];
      expect(merged.filter((m) => m !== null)).toHaveLength(1);
      const [home, away] = sA.mergedInto === null ? [kA, kB] : [kB, kA];
      expect(merged).toContain(home);
      expect((await stub(home).snapshot(home)).viewed.sort()).toEqual(["pa", "pb"]);
      // Later events under either id are recorded, in the surviving object.
      const awayId = away.slice(2);
      await stub(away).record(away, [track("Product Viewed", { product_id: "later" }, { userId: awayId })]);
      expect((await stub(home).snapshot(home)).viewed).toContain("later");
    }
  });

  it("a chain of merges at the same moment (A absorbs B while B absorbs C) ends with everything in A", async () => {
    for (let round = 0; round < 5; round++) {
      const [idA, idB, idC] = [uid("A"), uid("B"), uid("C")];
      const [kA, kB, kC] = [`u:${idA}`, `u:${idB}`, `u:${idC}`];
      for (const [k, id, p] of [
        [kA, idA, "pa"],
        [kB, idB, "pb"],
        [kC, idC, "pc"],
      ] as const) {
        await stub(k).record(k, [track("Product Viewed", { product_id: p }, { userId: id })]);
      }
      await Promise.all([
        stub(kA).record(kA, [base("alias", { previousId: idB }, { userId: idA, anonymousId: null })]),
        stub(kB).record(kB, [base("alias", { previousId: idC }, { userId: idB, anonymousId: null })]),
      ]);
      expect((await stub(kA).snapshot(kA)).viewed.sort()).toEqual(["pa", "pb", "pc"]);
      expect((await stub(kB).snapshot(kB)).mergedInto).toBe(kA);
      expect((await stub(kC).snapshot(kC)).mergedInto).not.toBeNull();
    }
  });

  it("a merge retried after `busy`, by an object merged away while it waited, goes to its new owner", async () => {
    // u:z… sorts after u:p…, so after a `busy` it waits 100 ms before asking again: u:b absorbs it meanwhile.
    const [idZ, idP, idB] = [`z-${crypto.randomUUID()}`, `p-${crypto.randomUUID()}`, `b-${crypto.randomUUID()}`];
    const [kZ, kP, kB] = [`u:${idZ}`, `u:${idP}`, `u:${idB}`];
    await stub(kP).record(kP, [track("Product Viewed", { product_id: "from-p" }, { userId: idP })]);
    await stub(kZ).record(kZ, [track("Product Viewed", { product_id: "from-z" }, { userId: idZ })]);
    // u:p answers `busy` (as while it absorbs someone) until u:b has absorbed u:z.
    const busy = { answered: 0, over: false };
    await wrapSessions(kZ, (name, other) =>
      name === kP
        ? {
            handOver: async (...args: [string, string, boolean]) => {
              if (busy.over) return other.handOver(...args);
              busy.answered++;
              return { status: "busy" };
            },
          }
        : {},
    );
    const zAliasesP = stub(kZ).record(kZ, [base("alias", { previousId: idP }, { userId: idZ, anonymousId: null })]);
    await vi.waitFor(() => expect(busy.answered).toBeGreaterThan(0), { timeout: 5_000, interval: 2 });
    await stub(kB).record(kB, [base("alias", { previousId: idZ }, { userId: idB, anonymousId: null })]);
    busy.over = true;
    expect((await stub(kZ).snapshot(kZ)).mergedInto).toBe(kB);
    await zAliasesP;
    // u:z forwarded the alias to u:b, which merged u:p: nothing of p is left behind in an object merged into no one.
    const [p, b] = [await stub(kP).snapshot(kP), await stub(kB).snapshot(kB)];
    expect({ pMergedInto: p.mergedInto, bViewed: b.viewed.sort() }).toEqual({
      pMergedInto: kB,
      bViewed: ["from-p", "from-z"],
    });
  });

  it("stores nothing of an event whose user was erased and suppressed while its record awaited a hand-over", async () => {
    const [user, anon] = [uid("user"), uid("anon")];
    const u = `u:${user}`;
    await slowHandOvers(u);
    const viewed = track("Product Viewed", { product_id: "secret" }, { userId: user, anonymousId: anon });
    const pending = stub(u).record(u, [viewed]);
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect((await stub(u).erase({ suppress: true })).complete).toBe(true);
    await pending;
    const after = await stub(u).snapshot(u);
    expect(after).toMatchObject({ exists: false, suppressed: true, viewed: [] });
    expect(after.outbox.pending).toBe(0);
  });

  it("erases a visitor whose hand-over an erasure overtook, so the next login cannot merge its data back", async () => {
    const [user, anon] = [uid("user"), uid("anon")];
    const [u, a] = [`u:${user}`, `a:${anon}`];
    await stub(a).record(a, [track("Product Viewed", { product_id: "secret-prelogin" }, { anonymousId: anon })]);
    await slowHandOvers(u);
    // The login is in flight (its hand-over takes 300 ms) when the user is erased, without suppression.
    const login = track("Product Viewed", { product_id: "p-login" }, { userId: user, anonymousId: anon });
    const pending = stub(u).record(u, [login]);
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(await stub(u).erase({ suppress: false })).toMatchObject({ complete: true, unreached: [] });
    await pending;
    // Read back from the visitor's own object: the erasure called it (the login had asked it for a hand-over), so its
    // pre-login history is gone; the hand-over that reached it afterwards found it empty and claimed it for the user,
    // as the login links the two. It is not suppressed.
    const visitor = await stub(a).snapshot(a);
    expect({
      mergedInto: visitor.mergedInto,
      viewed: visitor.viewed,
      events: visitor.counters.events,
      pending: visitor.outbox.pending,
    }).toEqual({ mergedInto: u, viewed: [], events: 0, pending: 0 });
    expect((await stub(a).suppression()).suppressed).toBe(false);
    // The user's next login on that device brings nothing of it back.
    await stub(u).record(u, [track("Product Viewed", { product_id: "p-next" }, { userId: user, anonymousId: anon })]);
    expect((await stub(u).snapshot(u)).viewed).not.toContain("secret-prelogin");
  });

  it("erases a visitor that handed itself over to a login whose reply an erasure overtook", async () => {
    const [user, anon] = [uid("user"), uid("anon")];
    const [u, a] = [`u:${user}`, `a:${anon}`];
    await stub(a).record(a, [track("Product Viewed", { product_id: "secret-prelogin" }, { anonymousId: anon })]);
    // The hand-over reaches the visitor at once (it marks itself merged and keeps its data for the user); the reply
    // takes 300 ms.
    await wrapSessions(u, (_name, other) => ({
      handOver: async (...args: [string, string, boolean]) => {
        const answer = await other.handOver(...args);
        await new Promise((resolve) => setTimeout(resolve, 300));
        return answer;
      },
    }));
    const pending = stub(u).record(u, [
      track("Product Viewed", { product_id: "p" }, { userId: user, anonymousId: anon }),
    ]);
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(await stub(u).erase({ suppress: true })).toMatchObject({ complete: true, unreached: [] });
    expect(await pending).toMatchObject({ accepted: 0, suppressed: 1 });
    const visitor = await stub(a).snapshot(a);
    expect({ exists: visitor.exists, viewed: visitor.viewed, suppressed: visitor.suppressed }).toEqual({
      exists: false,
      viewed: [],
      suppressed: true,
    });
    expect((await stub(u).snapshot(u)).exists).toBe(false);
  });

  it("merges no further object into a user erased and suppressed between two hand-overs of one record", async () => {
    const [idZ, idP] = [uid("Z"), uid("P")];
    const [kZ, kP, aP] = [`u:${idZ}`, `u:${idP}`, `a:${idP}`];
    await stub(kZ).record(kZ, [track("Product Viewed", { product_id: "z-own" }, { userId: idZ })]);
    await stub(kP).record(kP, [track("Product Viewed", { product_id: "p-history" }, { userId: idP })]);
    // An alias asks a:<previousId> first, then u:<previousId>; the first hand-over takes 300 ms.
    await wrapSessions(kZ, (name, other) =>
      name === aP
        ? {
            handOver: async (...args: [string, string, boolean]) => {
              await new Promise((resolve) => setTimeout(resolve, 300));
              return other.handOver(...args);
            },
          }
        : {},
    );
    const alias = base("alias", { previousId: idP }, { userId: idZ, anonymousId: null });
    const pending = stub(kZ).record(kZ, [alias]);
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect((await stub(kZ).erase({ suppress: true })).complete).toBe(true);
    expect(await pending).toEqual({ accepted: 0, duplicates: 0, suppressed: 1 });
    // The erased, suppressed object holds nobody's state: u:<previousId> was not asked, and keeps its own.
    const z = await stub(kZ).snapshot(kZ);
    expect({ exists: z.exists, viewed: z.viewed, mergedKeys: z.mergedKeys, suppressed: z.suppressed }).toEqual({
      exists: false,
      viewed: [],
      mergedKeys: [],
      suppressed: true,
    });
    const p = await stub(kP).snapshot(kP);
    expect({ mergedInto: p.mergedInto, viewed: p.viewed }).toEqual({ mergedInto: null, viewed: ["p-history"] });
  });

  it("remembers a merged object an erasure could not reach, and the next erasure erases it", async () => {
    const [user, anon] = [uid("user"), uid("anon")];
    const [u, a] = [`u:${user}`, `a:${anon}`];
    await stub(a).record(a, [track("Product Viewed", { product_id: "secret" }, { anonymousId: anon })]);
    await stub(u).record(u, [identify(user, anon)]);
    expect((await stub(u).snapshot(u)).mergedKeys).toContain(a);
    // The erasure's call to the visitor's object fails once.
    let failOnce = true;
    await wrapSessions(u, (name, other) => ({
      erase: async (options: { suppress: boolean }) => {
        if (name === a && failOnce) {
          failOnce = false;
          throw new Error("injected: object unreachable");
        }
        return other.erase(options);
      },
    }));
    expect(await stub(u).erase({ suppress: false })).toEqual({ erased: [u], complete: false, unreached: [a] });
    expect((await stub(a).snapshot(a)).exists).toBe(true);
    // The user's object no longer holds data, yet the next erasure still calls the visitor's object.
    expect((await stub(u).snapshot(u)).exists).toBe(false);
    expect(await stub(u).linkedKeys()).toEqual([a]);
    expect(await stub(u).erase({ suppress: false })).toEqual({ erased: [a], complete: true, unreached: [] });
    expect((await stub(a).snapshot(a)).exists).toBe(false);
    expect(await stub(u).linkedKeys()).toEqual([]);
  });

  it("keeps the pointer of a merged visitor id alive while a logged-in user keeps sending it, past 90 days", async () => {
    const { user, anon, u, a, start, at } = await visitorAndUser();
    await stub(a).record(a, [
      track("Product Viewed", { product_id: "before-login" }, { anonymousId: anon, at: start }),
    ]);
    await stub(u).record(u, [identify(user, anon, start)]);
    // Logged in on that device for 91 days: every event carries both ids and goes to u:, none to a:.
    for (let day = 10; day <= 91; day += 10) {
      await at(start + day * DAY_MS);
      await stub(u).record(u, [
        track(
          "Product Viewed",
          { product_id: `day${day}` },
          { userId: user, anonymousId: anon, at: start + day * DAY_MS },
        ),
      ]);
    }
    // The visitor object's alarm, 95 days after the merge: the id is in use, so its pointer stays.
    await at(start + 95 * DAY_MS);
    expect(await runDurableObjectAlarm(stub(a))).toBe(true);
    expect((await stub(a).snapshot(a)).mergedInto).toBe(u);
    // Logged out on the device (same anonymousId): the browsing still reaches the user.
    await stub(a).record(a, [
      track("Product Viewed", { product_id: "after-logout" }, { anonymousId: anon, at: start + 95 * DAY_MS }),
    ]);
    expect((await stub(u).snapshot(u)).viewed).toContain("after-logout");
  });

  /**
   * A visitor who logged in as the user at `start`; its id then unused for 91 days (the user is active elsewhere) until
   * the visitor object expires, pointer and all; back on that device on day 92, browsing anonymously. `dayAfter` runs
   * on the day after the login.
   */
  async function backAfterExpiry(dayAfter?: (v: VisitorAndUser) => Promise<void>) {
    const v = await visitorAndUser();
    const { user, anon, u, a, start, at } = v;
    await stub(a).record(a, [
      track("Product Viewed", { product_id: "before-login" }, { anonymousId: anon, at: start }),
    ]);
    await stub(u).record(u, [identify(user, anon, start)]);
    await at(start + DAY_MS);
    await dayAfter?.(v);
    await at(start + 60 * DAY_MS);
    await stub(u).record(u, [
      track("Product Viewed", { product_id: "elsewhere" }, { userId: user, at: start + 60 * DAY_MS }),
    ]);
    await at(start + 91 * DAY_MS);
    expect(await runDurableObjectAlarm(stub(a))).toBe(true);
    expect((await stub(a).snapshot(a)).exists).toBe(false);
    const back = start + 92 * DAY_MS;
    await at(back);
    await stub(a).record(a, [track("Product Viewed", { product_id: "came-back" }, { anonymousId: anon, at: back })]);
    return { ...v, back };
  }

  it("merges a visitor id again when its pointer expired and it comes back, keeping its first merge time", async () => {
    const other = uid("other");
    // A second device's id merged the day after the first login (the first one stays the experiments' unit).
    const { user, anon, u, a, back } = await backAfterExpiry(async ({ user, u, start }) => {
      await stub(u).record(u, [identify(user, other, start + DAY_MS)]);
    });
    await stub(u).record(u, [identify(user, anon, back + MINUTE_MS)]);
    const s = await stub(u).snapshot(u);
    expect(s.viewed).toEqual(["came-back", "elsewhere", "before-login"]);
    expect(s.anonymousIds).toEqual([other, anon]);
    expect((await stub(u).snapshot(u, { lean: true })).anonymousIds).toEqual([anon]);
    expect((await stub(a).snapshot(a)).mergedInto).toBe(u);
  });

  it("merges what a visitor recorded after its pointer expired when the refresh's first reply was lost", async () => {
    const { user, anon, u, a, back } = await backAfterExpiry();
    // The login's refresh reaches the visitor object, which marks itself merged into the user; the reply is lost.
    await wrapSessions(u, firstReplyLost(a));
    await stub(u).record(u, [identify(user, anon, back + MINUTE_MS)]);
    expect((await stub(a).snapshot(a)).mergedInto).toBe(u);
    expect((await stub(u).snapshot(u)).viewed).not.toContain("came-back");
    // The next event naming the id asks again and hears `again`, with a state the user never merged: merged now.
    await stub(u).record(u, [identify(user, anon, back + 2 * MINUTE_MS)]);
    const s = await stub(u).snapshot(u);
    expect({ viewed: s.viewed, events: s.counters.events }).toEqual({
      viewed: ["came-back", "elsewhere", "before-login"],
      events: 6,
    });
    await vi.waitFor(async () => expect((await stub(a).snapshot(a)).viewed).toEqual([]), { timeout: 5_000 });
  });

  it("merges a visitor that came back once when two refreshes ask at once and the later one is answered first", async () => {
    const { user, anon, u, a, back } = await backAfterExpiry();
    // The first refresh's reply (the state, freshly handed over) waits until the second call is done.
    let calls = 0;
    let firstAnswered = () => {};
    let secondDone = () => {};
    const answered = new Promise<void>((resolve) => (firstAnswered = resolve));
    const done = new Promise<void>((resolve) => (secondDone = resolve));
    await wrapSessions(u, (name, other) =>
      name === a
        ? {
            handOver: async (...args: [string, string, boolean]) => {
              const answer = await other.handOver(...args);
              if (++calls === 1) {
                firstAnswered();
                await done;
              }
              return answer;
            },
          }
        : {},
    );
    const first = stub(u).record(u, [identify(user, anon, back + MINUTE_MS)]);
    await answered;
    // The second call hears `again`, with the state the first reply carries: no call merged it yet.
    await stub(u).record(u, [identify(user, anon, back + 2 * MINUTE_MS)]);
    secondDone();
    await first;
    const s = await stub(u).snapshot(u);
    expect({ viewed: s.viewed, events: s.counters.events }).toEqual({
      viewed: ["came-back", "elsewhere", "before-login"],
      events: 6,
    });
  });

  /**
   * The user `key` keeps browsing from elsewhere on day 2 (this write drops its seen ids of a visitor's events merged
   * on day 0: 24-hour window); then the clocks move to day 31, when a refresh is due. Returns that time and the user's
   * snapshot then.
   */
  async function untilRefresh(key: string, userId: string, start: number, at: (time: number) => Promise<void>) {
    await at(start + 2 * DAY_MS);
    await stub(key).record(key, [
      track("Product Viewed", { product_id: "p-day2" }, { userId, anonymousId: null, at: start + 2 * DAY_MS }),
    ]);
    const later = start + 31 * DAY_MS;
    await at(later);
    return { later, before: await stub(key).snapshot(key) };
  }

  it("only releases, and does not merge again, a visitor whose release was lost when the refresh asks it", async () => {
    const { user, anon, u, a, start, at } = await visitorAndUser();
    const viewed = track(
      "Product Viewed",
      { product_id: "p1", category: "Lamps", brand: "Acme" },
      { anonymousId: anon, at: start },
    );
    await stub(a).record(a, [
      viewed,
      track("Product Viewed", { product_id: "p2", category: "Lamps" }, { anonymousId: anon, at: start + 1_000 }),
      track("Product Added", { product_id: "p2", category: "Lamps" }, { anonymousId: anon, at: start + 2_000 }),
      // Counted, but no interaction: only the seen ids tell a second merge that the user already has it.
      base("page", { name: "Home", properties: {} }, { anonymousId: anon, at: start + 3_000 }),
    ]);
    // A client retry: the visitor object counts a duplicate, which the merge hands over with the rest.
    expect(await stub(a).record(a, [viewed])).toEqual({ accepted: 0, duplicates: 1 });
    // The user's object asks the visitor for its state normally; its first `release` call is lost.
    const calls = { releases: 0, answers: [] as { status: string; again?: boolean }[] };
    await wrapSessions(u, (name, other) =>
      name === a
        ? {
            handOver: async (...args: [string, string, boolean]) => {
              const answer = await other.handOver(...args);
              calls.answers.push({ status: answer.status, again: "again" in answer ? answer.again : undefined });
              return answer;
            },
            release: async (intoKey: string) => {
              if (++calls.releases === 1) throw new Error("injected: release lost");
              return other.release(intoKey);
            },
          }
        : {},
    );
    await stub(u).record(u, [identify(user, anon, start + MINUTE_MS)]);
    await vi.waitFor(() => expect(calls.releases).toBe(1), { timeout: 5_000, interval: 10 });
    expect(calls.answers).toEqual([{ status: "handed-over", again: undefined }]);
    // Merged into the user, not released: the visitor object still holds its copy.
    const visitor = await stub(a).snapshot(a);
    expect({ mergedInto: visitor.mergedInto, viewed: visitor.viewed }).toEqual({ mergedInto: u, viewed: ["p2", "p1"] });
    const merged = await stub(u).snapshot(u);
    expect(merged.counters).toEqual({ events: 5, duplicates: 1 });
    expect(merged.viewed).toEqual(["p2", "p1"]);
    expect(merged.carted).toEqual(["p2"]);
    const { later, before } = await untilRefresh(u, user, start, at);
    // The logged-in user sends an event naming the id: the refresh asks the visitor object again.
    const score = (s: SessionSnapshot, token: string) => s.affinities.longTerm.find((x) => x.token === token)?.score;
    expect(score(before, "category:lamps")).toBeGreaterThan(0);
    await stub(u).record(u, [
      track("Product Viewed", { product_id: "p3", category: "Chairs" }, { userId: user, anonymousId: anon, at: later }),
    ]);
    // It answered with the state the user already has (`again`), and the user only released it.
    expect(calls.answers).toEqual([
      { status: "handed-over", again: undefined },
      { status: "handed-over", again: true },
    ]);
    await vi.waitFor(() => expect(calls.releases).toBe(2), { timeout: 5_000, interval: 10 });
    await vi.waitFor(async () => expect((await stub(a).snapshot(a)).viewed).toEqual([]), { timeout: 5_000 });
    expect((await stub(a).snapshot(a)).mergedInto).toBe(u);
    // Nothing of the visitor's counted twice: one more event, the same duplicates, the same scores.
    const after = await stub(u).snapshot(u);
    expect(after.counters).toEqual({ events: before.counters.events + 1, duplicates: before.counters.duplicates });
    expect(after.interactions.map((i) => i.productId)).toEqual(["p3", "p-day2", "p2", "p2", "p1"]);
    expect(after.viewed).toEqual(["p3", "p-day2", "p2", "p1"]);
    expect(after.carted).toEqual(["p2"]);
    expect(after.anonymousIds).toEqual([anon]);
    for (const token of ["category:lamps", "brand:acme"])
      expect(score(after, token), token).toBeCloseTo(score(before, token) ?? Number.NaN, 9);
  });

  /** `visitorAndUser`, and a new user id the user is aliased into later (its object shares the clock). */
  async function visitorUserAndNewId() {
    const v = await visitorAndUser();
    const newId = uid("new");
    const n = `u:${newId}`;
    const at = async (time: number) => {
      await v.at(time);
      await setClock(n, time);
    };
    await at(v.start);
    const alias = (time: number) =>
      stub(n).record(n, [base("alias", { previousId: v.user }, { userId: newId, anonymousId: null, at: time })]);
    return { ...v, newId, n, at, alias };
  }

  it("only releases a visitor whose release to a user aliased away since was lost, when the new user's refresh asks it", async () => {
    const { user, anon, u, a, newId, n, start, at, alias } = await visitorUserAndNewId();
    const viewed = track("Product Viewed", { product_id: "p1", category: "Lamps" }, { anonymousId: anon, at: start });
    await stub(a).record(a, [
      viewed,
      track("Product Added", { product_id: "p1", category: "Lamps" }, { anonymousId: anon, at: start + 1_000 }),
      // Counted, but no interaction: only the seen ids tell a second merge that the user already has it.
      base("page", { name: "Home", properties: {} }, { anonymousId: anon, at: start + 2_000 }),
    ]);
    // A client retry: the visitor's object counts a duplicate, which the merge hands over with the rest.
    expect(await stub(a).record(a, [viewed])).toEqual({ accepted: 0, duplicates: 1 });
    // The user merges the visitor, and its `release` call is lost: the visitor's object keeps its copy.
    let releases = 0;
    await wrapSessions(u, (name) =>
      name === a
        ? {
            release: async () => {
              releases++;
              throw new Error("injected: release lost");
            },
          }
        : {},
    );
    await stub(u).record(u, [identify(user, anon, start + MINUTE_MS)]);
    await vi.waitFor(() => expect(releases).toBe(1), { timeout: 5_000, interval: 10 });
    await alias(start + 2 * MINUTE_MS);
    // A visitor event goes through the user to the new user; the visitor's object points at the new user from then on.
    await stub(a).record(a, [
      track("Product Viewed", { product_id: "p2" }, { anonymousId: anon, at: start + 3 * MINUTE_MS }),
    ]);
    const visitor = await stub(a).snapshot(a);
    expect({ mergedInto: visitor.mergedInto, viewed: visitor.viewed }).toEqual({ mergedInto: n, viewed: ["p1"] });
    const { later, before } = await untilRefresh(n, newId, start, at);
    // An event of the new user names the id: the refresh asks the visitor's object, which answers `again` with the state
    // the old user merged.
    await stub(n).record(n, [
      track(
        "Product Viewed",
        { product_id: "p3", category: "Chairs" },
        { userId: newId, anonymousId: anon, at: later },
      ),
    ]);
    await vi.waitFor(async () => expect((await stub(a).snapshot(a)).viewed).toEqual([]), { timeout: 5_000 });
    const after = await stub(n).snapshot(n);
    const lamps = (s: SessionSnapshot) => s.affinities.longTerm.find((x) => x.token === "category:lamps")?.score;
    expect({ counters: after.counters, viewed: after.viewed, carted: after.carted }).toEqual({
      counters: { events: before.counters.events + 1, duplicates: before.counters.duplicates },
      viewed: ["p3", "p-day2", "p2", "p1"],
      carted: ["p1"],
    });
    expect(lamps(after)).toBeCloseTo(lamps(before) ?? Number.NaN, 9);
  });

  it("keeps alive, with the refresh, a visitor's pointer that names a user aliased away since", async () => {
    const { user, anon, u, a, newId, n, start, at, alias } = await visitorUserAndNewId();
    await stub(a).record(a, [track("Product Viewed", { product_id: "p1" }, { anonymousId: anon, at: start })]);
    await stub(u).record(u, [identify(user, anon, start + MINUTE_MS)]);
    await vi.waitFor(async () => expect((await stub(a).snapshot(a)).viewed).toEqual([]), { timeout: 5_000 });
    await alias(start + 2 * MINUTE_MS);
    // Logged in on that device from then on: the events carry both ids and go to the new user, none to the visitor.
    const later = start + 31 * DAY_MS;
    await at(later);
    await stub(n).record(n, [
      track("Product Viewed", { product_id: "p2" }, { userId: newId, anonymousId: anon, at: later }),
    ]);
    // The refresh asked the visitor's object, which pointed at the old user: it points at the new user now.
    expect((await stub(a).snapshot(a)).mergedInto).toBe(n);
    // 95 days after the login its alarm keeps the pointer, and the id's anonymous browsing reaches the new user.
    await at(start + 95 * DAY_MS);
    expect(await runDurableObjectAlarm(stub(a))).toBe(true);
    await stub(a).record(a, [
      track("Product Viewed", { product_id: "after-logout" }, { anonymousId: anon, at: start + 95 * DAY_MS }),
    ]);
    expect((await stub(n).snapshot(n)).viewed).toEqual(["after-logout", "p2", "p1"]);
  });

  it("forwards a visitor's events through a chain of user aliases longer than one call's hops, and shortens it", async () => {
    // a:X logs in as u:A, then u:A is aliased into u:B, u:B into u:C, … : six objects, five pointers.
    const anon = uid("anon");
    const ids = ["A", "B", "C", "D", "E", "F"].map(uid);
    const keys = ids.map((id) => `u:${id}`);
    const a = `a:${anon}`;
    await stub(a).record(a, [track("Product Viewed", { product_id: "anon" }, { anonymousId: anon })]);
    await stub(keys[0] as string).record(keys[0] as string, [identify(ids[0] as string, anon)]);
    for (let i = 1; i < ids.length; i++) {
      const alias = base("alias", { previousId: ids[i - 1] }, { userId: ids[i], anonymousId: null });
      await stub(keys[i] as string).record(keys[i] as string, [alias]);
    }
    const owner = keys.at(-1) as string;
    for (const [i, key] of keys.slice(0, -1).entries()) {
      expect((await stub(key).snapshot(key)).mergedInto, key).toBe(keys[i + 1]);
    }
    // The visitor comes back logged out: its events reach the last user (no "forwarding loop"), through the chain.
    const later = track("Product Viewed", { product_id: "later" }, { anonymousId: anon });
    expect(await stub(a).record(a, [later])).toEqual({ accepted: 1, duplicates: 0 });
    expect((await stub(owner).snapshot(owner)).viewed).toEqual(["later", "anon"]);
    // The chain is shorter now (path compression): the visitor points at the owner, so its next event takes one hop,
    // and every other merged object at the owner or at an object pointing at it.
    const into = new Map<string, string | null>();
    for (const key of [a, ...keys]) into.set(key, (await stub(key).snapshot(key)).mergedInto);
    expect(into.get(a)).toBe(owner);
    for (const key of keys.slice(0, -1)) {
      const next = into.get(key) as string;
      expect(next === owner || into.get(next) === owner, `${key} → ${next}`).toBe(true);
    }
    expect(await stub(a).record(a, [later])).toEqual({ accepted: 0, duplicates: 1 });
  });

  it("fails a call cleanly when merged objects point at each other in a cycle", async () => {
    // Not reachable through merges (an object that is merged absorbs nothing): written directly, as corruption would.
    const anon = uid("anon");
    const a = `a:${anon}`;
    const [kP, kQ, kR] = [uid("P"), uid("Q"), uid("R")].map((id) => `u:${id}`) as [string, string, string];
    const pointers: [string, string][] = [
      [a, kP],
      [kP, kQ],
      [kQ, kR],
      [kR, kP],
    ];
    for (const [key] of pointers) {
      const id = key.slice(2);
      const who = key.startsWith("a:") ? { anonymousId: id } : { userId: id };
      await stub(key).record(key, [track("Product Viewed", { product_id: "x" }, who)]);
    }
    for (const [key, into] of pointers) {
      await runInDurableObject(stub(key), (_o: SessionState, state) => {
        state.storage.sql.exec("UPDATE profile SET merged_into = ?, released = 1", into);
      });
    }
    const event = track("Product Viewed", { product_id: "lost" }, { anonymousId: anon });
    for (let attempt = 0; attempt < 2; attempt++) {
      expect(await failure(stub(a).record(a, [event]))).toMatch(/^record: forwarding loop/);
    }
    for (const [key] of pointers) {
      const s = await stub(key).snapshot(key);
      // Nothing recorded anywhere, and no object made to point at itself.
      expect({ viewed: s.viewed, pointsAtItself: s.mergedInto === key }, key).toEqual({
        viewed: ["x"],
        pointsAtItself: false,
      });
      expect(s.mergedInto, key).not.toBeNull();
    }
  });

  it("does not merge a visitor id that already belongs to another user", async () => {
    const anon = uid("shared");
    const [u1, u2] = [`u:${uid("first")}`, `u:${uid("second")}`];
    await stub(`a:${anon}`).record(`a:${anon}`, [track("Product Viewed", { product_id: "s1" }, { anonymousId: anon })]);
    await stub(u1).record(u1, [identify(u1.slice(2), anon)]);
    await stub(u2).record(u2, [identify(u2.slice(2), anon)]);
    expect((await stub(u1).snapshot(u1)).viewed).toEqual(["s1"]);
    const second = await stub(u2).snapshot(u2);
    expect(second.viewed).toEqual([]);
    expect(second.anonymousIds).toEqual([]);
  });
});

describe("outbox", () => {
  const closedPort = { url: "http://127.0.0.1:9", token: "nope" };

  it("pushToStream fails against an unreachable Redis and is idempotent against the real one", async () => {
    const item = {
      messageId: uid("direct"),
      userKey: "a:direct",
      event: JSON.stringify(track("Product Viewed", { product_id: "d" })),
    };
    await expect(pushToStream(openRedis(closedPort), [item], T0)).rejects.toThrow();
    expect(await pushToStream(redis(), [item], T0)).toEqual({ appended: 1, duplicates: 0 });
    // A retried flush (the reply was lost) changes nothing.
    expect(await pushToStream(redis(), [item], T0)).toEqual({ appended: 0, duplicates: 1 });
    expect(await streamEntriesFor([item.messageId])).toEqual([item.messageId]);
  });

  it("keeps events while Redis is down, retries through the alarm, and delivers them exactly once", async () => {
    const anon = uid("outage");
    const key = `a:${anon}`;
    const product = uid("prod");
    const now = Date.now();
    await runInDurableObject(stub(key), (o: SessionState) => {
      o.clock = () => now;
      o.redisSettings = () => closedPort;
    });
    const events = [1, 2, 3].map((i) =>
      track("Product Viewed", { product_id: product, category: "Outage" }, { anonymousId: anon, at: now - i * 1000 }),
    );
    expect(await stub(key).record(key, events)).toEqual({ accepted: 3, duplicates: 0 });

    // record leaves the drain to the alarm; the drain fails: rows stay, a retry is scheduled on the alarm.
    const drainAt = await runInDurableObject(stub(key), (_o: SessionState, state) => state.storage.getAlarm());
    expect(drainAt).toBe(now + OUTBOX_FLUSH_DELAY_MS);
    expect(await runDurableObjectAlarm(stub(key))).toBe(true);
    const failed = await runInDurableObject(stub(key), async (_o: SessionState, state) => ({
      attempts: state.storage.sql.exec<{ n: number }>("SELECT outbox_attempts AS n FROM profile").one().n,
      retryAt: state.storage.sql.exec<{ at: number }>("SELECT outbox_retry_at AS at FROM profile").one().at,
      alarm: await state.storage.getAlarm(),
    }));
    expect(failed.attempts).toBe(1);
    expect(failed.alarm).toBe(failed.retryAt);
    expect((await stub(key).snapshot(key)).outbox.pending).toBe(3);
    expect(await streamEntriesFor(events.map((e) => e.messageId))).toEqual([]);

    // Redis is back: the alarm at the retry time delivers; running it again (alarms are at-least-once) adds nothing.
    await runInDurableObject(stub(key), (o: SessionState) => {
      o.clock = () => failed.retryAt;
      o.redisSettings = () => ({ url: env.UPSTASH_REDIS_REST_URL, token: env.UPSTASH_REDIS_REST_TOKEN });
    });
    await runDurableObjectAlarm(stub(key));
    const s = await drained(key);
    expect(s.outbox).toEqual({ pending: 0, oldestAt: null });
    await runDurableObjectAlarm(stub(key));
    expect((await streamEntriesFor(events.map((e) => e.messageId))).sort()).toEqual(
      events.map((e) => e.messageId).sort(),
    );
    // Three views, counted once each, across however many 5-minute buckets they fell into.
    const buckets = [...new Set([1, 2, 3].map((i) => trendBucket(now - i * 1000)))];
    const scores = await Promise.all(buckets.map((b) => redis().zscore(`${TREND_PRODUCT_PREFIX}${b}`, product)));
    expect(scores.reduce<number>((sum, x) => sum + Number(x ?? 0), 0)).toBe(3);
  });
  it("holds the retry backoff: an alarm that runs before the retry time (the active beat) leaves the outbox alone", async () => {
    const anon = uid("backoff");
    const key = `a:${anon}`;
    const now = Date.now();
    await runInDurableObject(stub(key), (o: SessionState) => {
      o.clock = () => now;
      o.redisSettings = () => closedPort;
    });
    await stub(key).record(key, [track("Product Viewed", { product_id: "b" }, { anonymousId: anon, at: now })]);
    const retry = async () =>
      runInDurableObject(stub(key), async (_o: SessionState, state) => ({
        ...state.storage.sql
          .exec<{ attempts: number; retryAt: number }>(
            "SELECT outbox_attempts AS attempts, outbox_retry_at AS retryAt FROM profile",
          )
          .one(),
        alarm: await state.storage.getAlarm(),
      }));
    expect(await runDurableObjectAlarm(stub(key))).toBe(true);
    const first = await retry();
    expect(first.attempts).toBe(1);
    expect(first.retryAt).toBeGreaterThan(now);
    // The alarm runs again before the retry time (the user is active: it beats every 30 s; or the seen ids' prune):
    // nothing is due, so Redis is not asked and the backoff does not grow.
    expect(await runDurableObjectAlarm(stub(key))).toBe(true);
    expect(await retry()).toEqual({ attempts: 1, retryAt: first.retryAt, alarm: first.retryAt });
    // At the retry time it tries again.
    await setClock(key, first.retryAt);
    expect(await runDurableObjectAlarm(stub(key))).toBe(true);
    expect((await retry()).attempts).toBe(2);
    expect((await stub(key).snapshot(key)).outbox.pending).toBe(1);
  });

  it("sends at most ~FLUSH_MAX_BYTES of event JSON per round trip, counted in UTF-8 bytes", async () => {
    const anon = uid("bytes");
    const key = `a:${anon}`;
    const now = Date.now();
    await setClock(key, now);
    // Each event carries 3,000 three-byte characters: ~3 KB in JavaScript's string length, ~9 KB on the wire.
    const events = Array.from({ length: 120 }, (_, i) =>
      track("Product Viewed", { product_id: `p${i}`, note: "€".repeat(3000) }, { anonymousId: anon, at: now }),
    );
    expect(await stub(key).record(key, events)).toEqual({ accepted: 120, duplicates: 0 });
    const bytes = new TextEncoder().encode(JSON.stringify(events[0])).length;
    // The seqs of the rows each round trip deleted once Redis took them.
    const through: number[] = [];
    await watchStatements(key, (query, bindings) => {
      if (/DELETE FROM outbox WHERE seq <= \?/.test(query)) through.push(Number(bindings[0]));
    });
    await drained(key);
    expect(await streamEntriesFor(events.map((e) => e.messageId))).toHaveLength(120);
    const sizes = through.map((seq, i) => seq - (through[i - 1] ?? 0));
    expect(sizes.reduce((a, b) => a + b, 0)).toBe(120);
    for (const n of sizes) expect(n * bytes).toBeLessThanOrEqual(FLUSH_MAX_BYTES);
  });

  it("refuses a call with a full outbox before anything of it applies, its identity merge included", async () => {
    const [user, anon] = [uid("user"), uid("anon")];
    const [u, a] = [`u:${user}`, `a:${anon}`];
    await stub(a).record(a, [track("Product Viewed", { product_id: "pre" }, { anonymousId: anon })]);
    await stub(u).record(u, [track("Product Viewed", { product_id: "u1" }, { userId: user })]);
    // A row far ahead of the first one: pending = max seq − min seq + 1 = 100,005, over the bound.
    await runInDurableObject(stub(u), (_o: SessionState, state) => {
      state.storage.sql.exec(
        "INSERT INTO outbox (seq, at, message_id, user_key, event) VALUES (?, 0, 'x', ?, '{}')",
        100_005,
        u,
      );
    });
    const login = base("identify", {}, { userId: user, anonymousId: anon });
    expect(await failure(stub(u).record(u, [login]))).toMatch(/^outbox full/);
    expect((await stub(a).snapshot(a)).mergedInto).toBeNull();
    const s = await stub(u).snapshot(u);
    expect({ viewed: s.viewed, mergedKeys: s.mergedKeys, events: s.counters.events }).toEqual({
      viewed: ["u1"],
      mergedKeys: [],
      events: 1,
    });
  });
});

describe("expiry, deletion and compaction", () => {
  it("erases the state after 90 days without events, not before", async () => {
    const anon = uid("ttl");
    const key = `a:${anon}`;
    const now = Date.now();
    await setClock(key, now);
    await stub(key).record(key, [track("Product Viewed", { product_id: "t" }, { anonymousId: anon, at: now })]);
    await drained(key);

    await setClock(key, now + 89 * DAY_MS);
    expect(await runDurableObjectAlarm(stub(key))).toBe(true);
    expect((await stub(key).snapshot(key)).exists).toBe(true);
    const next = await runInDurableObject(stub(key), (_o: SessionState, state) => state.storage.getAlarm());
    expect(next).toBe(now + 90 * DAY_MS);

    await setClock(key, now + 90 * DAY_MS + HOUR_MS);
    expect(await runDurableObjectAlarm(stub(key))).toBe(true);
    expect((await stub(key).snapshot(key)).exists).toBe(false);
    const left = await runInDurableObject(stub(key), async (_o: SessionState, state) => ({
      tables: state.storage.sql
        .exec("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '_cf%'")
        .toArray(),
      alarm: await state.storage.getAlarm(),
    }));
    expect(left).toEqual({ tables: [], alarm: null });
  });

  it("delete() erases the user and the object starts afresh", async () => {
    const anon = uid("del");
    const key = `a:${anon}`;
    await stub(key).record(key, [track("Product Viewed", { product_id: "x" }, { anonymousId: anon })]);
    await drained(key);
    expect(await stub(key).delete()).toEqual({ deleted: true });
    expect((await stub(key).snapshot(key)).exists).toBe(false);
    expect(await runInDurableObject(stub(key), (_o: SessionState, state) => state.storage.getAlarm())).toBeNull();
    await stub(key).record(key, [track("Product Viewed", { product_id: "y" }, { anonymousId: anon })]);
    const s = await stub(key).snapshot(key);
    expect(s.viewed).toEqual(["y"]);
    expect(s.counters.events).toBe(1);
  });

  it("keeps every table within its bounds", async () => {
    const anon = uid("bulk");
    const key = `a:${anon}`;
    await setClock(key, T0 + HOUR_MS);
    const events = Array.from({ length: 600 }, (_, i) =>
      track("Product Viewed", { product_id: `p${i}`, category: `c${i}` }, { anonymousId: anon, at: T0 + i * 1000 }),
    );
    // Two calls with an eviction between them: compaction also works on counts reloaded from storage.
    await stub(key).record(key, events.slice(0, 300));
    await drained(key);
    await evictDurableObject(stub(key));
    await setClock(key, T0 + HOUR_MS);
    await stub(key).record(key, events.slice(300));
    const counts = await rowCounts(key);
    expect(counts).toEqual({
      interactions: INTERACTIONS_MAX,
      viewed: RECENT_MAX.viewed,
      longTerm: AFFINITY_MAX.longTerm,
      session: AFFINITY_MAX.session,
      seen: 600,
    });
    const s = await stub(key).snapshot(key);
    // The newest survive.
    expect(s.interactions[0]?.productId).toBe("p599");
    expect(s.viewed[0]).toBe("p599");
    expect(s.viewed.at(-1)).toBe(`p${600 - RECENT_MAX.viewed}`);
    expect(s.affinities.longTerm[0]?.token).toBe("category:c599");
    expect(s.counters.events).toBe(600);
  });

  it("forgets the oldest seen ids beyond SEEN_MAX, and still knows the newest batch when it is retried", async () => {
    const anon = uid("seen");
    const key = `a:${anon}`;
    const now = Date.now();
    await setClock(key, now);
    const first = track("Product Viewed", { product_id: "first" }, { anonymousId: anon, at: now });
    await stub(key).record(key, [first]);
    // The window is full: SEEN_MAX − 1 older ids within the last hour (not due for pruning), oldest first.
    await runInDurableObject(stub(key), (_o: SessionState, state) => {
      state.storage.sql.exec(
        `WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
         INSERT INTO seen (message_id, at) SELECT 'seed-' || i, ? + i FROM n`,
        SEEN_MAX - 2,
        now - HOUR_MS,
      );
    });
    // The row counts are kept in memory: a new activation counts the seeded rows.
    await evictDurableObject(stub(key));
    await setClock(key, now + MINUTE_MS);
    const batch = [1, 2, 3, 4, 5].map((i) =>
      track("Product Viewed", { product_id: `b${i}` }, { anonymousId: anon, at: now + i }),
    );
    expect(await stub(key).record(key, batch)).toEqual({ accepted: 5, duplicates: 0 });
    const kept = await runInDurableObject(stub(key), (_o: SessionState, state) => {
      const has = (id: string) =>
        state.storage.sql.exec("SELECT 1 FROM seen WHERE message_id = ?", id).toArray().length;
      return {
        count: Number(state.storage.sql.exec<{ n: number }>("SELECT COUNT(*) AS n FROM seen").one().n),
        evicted: ["seed-0", "seed-4"].map(has),
        survived: ["seed-5", first.messageId, ...batch.map((e) => e.messageId)].map(has),
      };
    });
    expect(kept).toEqual({ count: SEEN_MAX, evicted: [0, 0], survived: [1, 1, 1, 1, 1, 1, 1] });
    // A retried batch is still a duplicate; so is the first event, newer than every seeded id.
    expect(await stub(key).record(key, [...batch, first])).toEqual({ accepted: 0, duplicates: 6 });
    expect((await stub(key).snapshot(key)).counters).toEqual({ events: 6, duplicates: 6 });
  });

  it("trims the merged keys to MERGED_MAX, and a trimmed visitor asked again is not merged twice", async () => {
    const { user, anon, u, a, start, at } = await visitorAndUser();
    await stub(a).record(a, [
      track("Product Viewed", { product_id: "pv", category: "Trimmed" }, { anonymousId: anon, at: start }),
    ]);
    await stub(u).record(u, [base("identify", {}, { userId: user, anonymousId: anon, at: start + 1 })]);
    // Wait for the release, so the visitor answers `released` when asked again.
    await vi.waitFor(async () => expect((await stub(a).snapshot(a)).interactions).toEqual([]), { timeout: 5_000 });
    const before = await stub(u).snapshot(u);
    expect(before.anonymousIds).toEqual([anon]);
    // MERGED_MAX keys merged after the visitor: the next write trims the oldest row, the visitor's.
    await runInDurableObject(stub(u), (_o: SessionState, state) => {
      state.storage.sql.exec(
        `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
         INSERT INTO merged (key, status, at) SELECT 'a:seed-' || i, 'merged', ? + i FROM n`,
        MERGED_MAX,
        start + 1,
      );
    });
    await evictDurableObject(stub(u));
    await at(start + MINUTE_MS);
    await stub(u).record(u, [track("Product Viewed", { product_id: "pu" }, { userId: user, at: start + MINUTE_MS })]);
    const merged = () =>
      runInDurableObject(stub(u), (_o: SessionState, state) => ({
        count: Number(state.storage.sql.exec<{ n: number }>("SELECT COUNT(*) AS n FROM merged").one().n),
        visitor: state.storage.sql.exec("SELECT status FROM merged WHERE key = ?", a).toArray(),
      }));
    expect(await merged()).toEqual({ count: MERGED_MAX, visitor: [] });

    // An event names the visitor again: it is asked, answers `released`, and its state is not merged a second time.
    await stub(u).record(u, [base("identify", {}, { userId: user, anonymousId: anon, at: start + 2 * MINUTE_MS })]);
    // Back in the table (the oldest seed made room for it).
    expect(await merged()).toEqual({ count: MERGED_MAX, visitor: [{ status: "merged" }] });
    const after = await stub(u).snapshot(u);
    expect(after.viewed).toEqual(["pu", "pv"]);
    expect(after.interactions.map((i) => i.productId)).toEqual(["pu", "pv"]);
    expect(after.counters.events).toBe(before.counters.events + 2);
    const score = (s: SessionSnapshot) => s.affinities.longTerm.find((x) => x.token === "category:trimmed")?.score;
    await at(start + 2 * MINUTE_MS);
    expect(score(await stub(u).snapshot(u))).toBeCloseTo(score(before) ?? Number.NaN, 3);
    expect((await stub(a).snapshot(a)).mergedInto).toBe(u);
  });

  it("keeps the interaction ring at its bound across many calls of one activation", async () => {
    const anon = uid("ring");
    const key = `a:${anon}`;
    const now = Date.now();
    await setClock(key, now);
    // One view per call, all in one activation (no eviction in between): the in-memory row counts must keep up.
    for (let i = 0; i < INTERACTIONS_MAX + 20; i++) {
      await stub(key).record(key, [
        track("Product Viewed", { product_id: `p${i}` }, { anonymousId: anon, at: now - HOUR_MS + i * 1000 }),
      ]);
    }
    expect((await rowCounts(key)).interactions).toBe(INTERACTIONS_MAX);
    expect((await stub(key).snapshot(key)).interactions[0]?.productId).toBe(`p${INTERACTIONS_MAX + 19}`);
  });

  it("does not expire an object while a record awaits a hand-over, and looks again a beat later", async () => {
    const [user, anon] = [uid("user"), uid("anon")];
    const [u, a] = [`u:${user}`, `a:${anon}`];
    // Clocks from the real time on: an alarm set by the objects is not due for real during the test.
    const start = Date.now();
    await setClock(u, start);
    await stub(u).record(u, [track("Product Viewed", { product_id: "old" }, { userId: user, at: start })]);
    // 91 days later the user browses anonymously on a new device, then logs in.
    const now = start + 91 * DAY_MS;
    await setClock(a, now);
    await stub(a).record(a, [track("Product Viewed", { product_id: "fresh" }, { anonymousId: anon, at: now })]);
    await setClock(u, now);
    await slowHandOvers(u);
    const login = stub(u).record(u, [
      track("Product Viewed", { product_id: "login" }, { userId: user, anonymousId: anon, at: now + MINUTE_MS }),
    ]);
    await new Promise((resolve) => setTimeout(resolve, 50));
    // The user's expiry alarm (90 days without events) runs while the login awaits the hand-over.
    expect(await runDurableObjectAlarm(stub(u))).toBe(true);
    const rearmed = await runInDurableObject(stub(u), (_o: SessionState, state) => state.storage.getAlarm());
    expect(rearmed).toBe(now + OUTBOX_FLUSH_DELAY_MS);
    await login;
    // No erasure was asked for: the visitor's browsing is in the user's state, and the visitor forwards to it.
    expect((await stub(u).snapshot(u)).viewed.sort()).toEqual(["fresh", "login", "old"]);
    expect((await stub(a).snapshot(a)).mergedInto).toBe(u);
    // The login was activity: the alarm a beat later finds nothing to expire.
    expect(await runDurableObjectAlarm(stub(u))).toBe(true);
    expect((await stub(u).snapshot(u)).exists).toBe(true);
  });
});
