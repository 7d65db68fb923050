// Erasure and suppression (docs/privacy.md) in workerd, against the real Postgres, Redis, KV and session objects:
// a user's data is put everywhere through the real paths (collection API → session objects → outbox → stream →
// loader → Postgres; a rejected event → dead letters), erased with one admin call, and every store is then read
// back through its own client — not through the code under test. Another user's data must survive.
import { runInDurableObject } from "cloudflare:test";
import { env, exports } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { QUARANTINE_SUFFIX } from "../../src/batch/consumer.ts";
import { runLoader } from "../../src/batch/loader.ts";
import type { CollectedEvent } from "../../src/collect/event.ts";
import { MAX_DEAD_LETTER_RAW_BYTES } from "../../src/collect/limits.ts";
import { loadConfig } from "../../src/config.ts";
import type { ApiError } from "../../src/errors.ts";
import { eraseUser } from "../../src/privacy/erase.ts";
import { ERASURE_LOCK } from "../../src/privacy/warehouse.ts";
import { COORDINATOR_NAME, type PublishCoordinator } from "../../src/publish/coordinator.ts";
import { userListKey } from "../../src/publish/keys.ts";
import { KV_OPS_PER_INVOCATION } from "../../src/publish/kv-budget.ts";
import type { SessionState } from "../../src/session/session-state.ts";
import { EVENT_STREAM, STREAM_FIELDS } from "../../src/session/stream.ts";
import { openClient } from "../../src/stores/db.ts";
import { append, dbSettings, event, loaderRedis, redis, sql, streamNames, withDb } from "./batch-helpers.ts";
import { ADMIN_KEY, BASE, basic, collect, streamedEvent, uid, WRITE_KEY, wrapSessions } from "./collect-helpers.ts";
import { countingKv, type OpLog } from "./publish-helpers.ts";
import { appFetch } from "./rank-helpers.ts";

const admin = (method: string, path: string) =>
  exports.default.fetch(new Request(`${BASE}${path}`, { method, headers: { authorization: `Bearer ${ADMIN_KEY}` } }));

const send = (path: string, body: unknown) => collect(path, body, { headers: { authorization: basic(WRITE_KEY) } });

const viewEvent = (ids: { userId?: string | number; anonymousId?: string }, productId: string) => ({
  type: "track",
  event: "Product Viewed",
  properties: { product_id: productId, price: 10 },
  messageId: uid("m"),
  ...ids,
});

/** Every stream entry of these user keys in the production stream (read with a second client). */
async function streamEntriesOf(keys: readonly string[]): Promise<CollectedEvent[]> {
  const wanted = new Set(keys);
  const entries = (await redis().exec<unknown[]>(["XRANGE", EVENT_STREAM, "-", "+"])) as unknown[][];
  const out: CollectedEvent[] = [];
  for (const [, flat] of entries) {
    const f = flat as string[];
    const field = (name: string) => f[f.indexOf(name) + 1] ?? "";
    if (wanted.has(field(STREAM_FIELDS.userKey))) out.push(JSON.parse(field(STREAM_FIELDS.event)) as CollectedEvent);
  }
  return out;
}

/** Loads what the session objects delivered for `keys` into Postgres with the real loader (a stream of this test). */
async function loadIntoWarehouse(keys: readonly string[]): Promise<void> {
  const names = streamNames("privacy");
  const delivered = await streamEntriesOf(keys);
  for (const key of keys)
    await append(
      names.stream,
      delivered.filter((e) => userKeyOf(e) === key),
      key,
    );
  const report = await withDb((db) => runLoader({ db, redis: loaderRedis() }, { ...names }));
  expect(report.status).toBe("ok");
}

const userKeyOf = (e: CollectedEvent) => (e.userId ? `u:${e.userId}` : `a:${e.anonymousId}`);

async function counts(userId: string, keys: readonly string[]) {
  const [row] = await sql<Record<string, number>>(
    `select (select count(*)::int from events where user_key = any($1) or user_id = $2) as events,
            (select count(*)::int from interactions where user_key = any($1)) as interactions,
            (select count(*)::int from identities where user_id = $2) as identities,
            (select count(*)::int from user_candidates where user_key = any($1)) as candidates`,
    [keys, userId],
  );
  if (!row) throw new Error("no row");
  return row;
}

/** A user with a pre-login visitor, a warehouse-only device, a candidate list in KV and a dead letter. */
async function userEverywhere() {
  const userId = uid("erase-me");
  const anon = uid("anon");
  const oldDevice = uid("old-device");
  const visits = [viewEvent({ anonymousId: anon }, "p-1"), viewEvent({ anonymousId: anon }, "p-2")];
  await send("/v1/batch", { batch: visits });
  const identify = {
    type: "identify",
    userId,
    anonymousId: anon,
    traits: { email: "x@example.com" },
    messageId: uid("m"),
  };
  const bought = { ...viewEvent({ userId, anonymousId: anon }, "p-3"), event: "Product Added" };
  const rejected = { type: "track", userId, messageId: uid("m") }; // no event name → dead letter
  const res = await send("/v1/batch", { batch: [identify, bought, rejected] });
  expect(res.rejected.map((r) => r.index)).toEqual([2]);
  // Delivered to the stream by the objects' alarms (the visitor's two events were merged into the user's object).
  await streamedEvent(bought.messageId, `u:${userId}`);
  for (const v of visits) await streamedEvent(v.messageId, `a:${anon}`);
  const keys = [`u:${userId}`, `a:${anon}`];
  await loadIntoWarehouse(keys);
  // An older device known only to the warehouse (its session object long expired): an identify in the stream.
  const names = streamNames("privacy-old");
  await append(names.stream, [
    event("identify", { userId, anonymousId: oldDevice }),
    event("track", {
      anonymousId: oldDevice,
      userId: null,
      event: "Product Viewed",
      properties: { product_id: "p-9" },
    }),
  ]);
  await withDb((db) => runLoader({ db, redis: loaderRedis() }, { ...names }));
  // What the publisher would have shipped for the user.
  await sql(
    `insert into user_candidates (user_key, product_ids, scores, reasons, model_version) values ($1, '{p-5}', '{1}', '{batch}', 0)`,
    [`u:${userId}`],
  );
  await sql(`insert into published_keys (key, content_hash, version) values ($1, 'h', 'v1')`, [`u:u:${userId}`]);
  await env.ONLINE_STORE.put(userListKey(`u:${userId}`), JSON.stringify([{ v: 1, items: [["p-5", 1, "batch"]] }]));
  return { userId, anon, oldDevice, keys: [...keys, `a:${oldDevice}`], rejectedMessageId: rejected.messageId };
}

describe("erasure", () => {
  it("erases a user from session objects, Redis, Postgres, KV and dead letters, and leaves others alone", async () => {
    const other = uid("keep-me");
    const otherView = viewEvent({ userId: other }, "p-1");
    expect((await send("/v1/track", otherView)).accepted).toBe(1);
    await streamedEvent(otherView.messageId, `u:${other}`);
    const u = await userEverywhere();

    const before = await counts(u.userId, u.keys);
    expect(before.events).toBeGreaterThanOrEqual(6);
    expect(before.identities).toBe(2);
    const beforeCheck = (await (await admin("GET", `/v1/admin/users/${u.userId}/erasure?kind=user`)).json()) as {
      clean: boolean;
      userKeys: string[];
    };
    expect(beforeCheck.clean).toBe(false);
    expect(beforeCheck.userKeys).toEqual([...u.keys].sort());

    const res = await admin("DELETE", `/v1/admin/users/${u.userId}?kind=user`);
    expect(res.status).toBe(200);
    const report = (await res.json()) as {
      userKeys: string[];
      deleted: { warehouse: { events: number }; deadLetters: number; stream: { matched: number } };
      verification: { clean: boolean };
    };
    expect(report.userKeys).toEqual([...u.keys].sort());
    expect(report.deleted.warehouse.events).toBe(before.events);
    expect(report.deleted.deadLetters).toBeGreaterThanOrEqual(1);
    expect(report.deleted.stream.matched).toBeGreaterThanOrEqual(3);
    expect(report.verification.clean).toBe(true);

    // Read back, each store through its own client.
    expect(await counts(u.userId, u.keys)).toEqual({ events: 0, interactions: 0, identities: 0, candidates: 0 });
    expect(await sql(`select key from published_keys where key = $1`, [`u:u:${u.userId}`])).toEqual([]);
    expect(await env.ONLINE_STORE.get(userListKey(`u:${u.userId}`))).toBeNull();
    expect(await streamEntriesOf(u.keys)).toEqual([]);
    for (const key of u.keys) {
      const snapshot = await env.SESSION_STATE.getByName(key).snapshot();
      expect(snapshot.exists, key).toBe(false);
    }
    expect((await admin("GET", `/v1/admin/users/${u.userId}?kind=user`)).status).toBe(404);
    const dead = (await (await admin("GET", "/v1/admin/dead-letters?source=local")).json()) as {
      deadLetters: { messageId: string | null }[];
    };
    expect(dead.deadLetters.map((d) => d.messageId)).not.toContain(u.rejectedMessageId);

    // The other user is untouched: session and stream entry.
    expect((await env.SESSION_STATE.getByName(`u:${other}`).snapshot()).counters.events).toBe(1);
    expect((await streamEntriesOf([`u:${other}`])).map((e) => e.messageId)).toEqual([otherView.messageId]);

    // Erasing again is safe and still clean.
    const again = (await (await admin("DELETE", `/v1/admin/users/${u.userId}?kind=user`)).json()) as {
      verification: { clean: boolean };
    };
    expect(again.verification.clean).toBe(true);
  });

  it("erases the user's entries from the loader's quarantine stream too, and leaves others' there", async () => {
    const [userId, other] = [uid("quarantined"), uid("keep-me")];
    const quarantine = `${EVENT_STREAM}${QUARANTINE_SUFFIX}`;
    const add = (key: string) =>
      redis().exec<string>(["XADD", quarantine, "*", STREAM_FIELDS.userKey, key, "error", "refused", "from", "1-0"]);
    const [mine, theirs] = [await add(`u:${userId}`), await add(`u:${other}`)];
    const ids = async () =>
      ((await redis().exec<unknown[][]>(["XRANGE", quarantine, "-", "+"])) ?? []).map((e) => String(e[0]));
    const check = (await (await admin("GET", `/v1/admin/users/${userId}/erasure?kind=user`)).json()) as {
      clean: boolean;
    };
    const res = await admin("DELETE", `/v1/admin/users/${userId}?kind=user`);
    const report = (await res.json()) as { deleted: { stream: { matched: number } } };
    const left = await ids();
    expect({
      cleanBefore: check.clean,
      status: res.status,
      matched: report.deleted.stream.matched,
      mine: left.includes(mine),
      theirs: left.includes(theirs),
    }).toEqual({ cleanBefore: false, status: 200, matched: 1, mine: false, theirs: true });
  });

  for (const [label, userId] of [
    ["a string id", uid("cut")],
    ["a numeric id", 900_000_000 + Math.floor(Math.random() * 99_999_999)],
  ] as const) {
    it(`leaves no dead letter naming ${label} cut short at the 8 KB limit`, async () => {
      // A rejected track (no event name) whose JSON reaches the limit right at the end of the id: cut at the byte,
      // the stored text would end in the id without its closing quote (or what follows a number).
      const idJson = typeof userId === "string" ? `"${userId}` : String(userId);
      const head = `{"type":"track","properties":{"pad":"`;
      const tail = `"},"userId":${idJson}`;
      const pad = "x".repeat(MAX_DEAD_LETTER_RAW_BYTES - head.length - tail.length);
      const res = await send("/v1/track", { type: "track", properties: { pad }, userId });
      expect(res.rejected.map((r) => r.code)).toEqual(["missing_event"]);
      const dead = env.DEAD_LETTERS.getByName("local");
      const id = String(userId);
      await dead.eraseMentions([id]);
      const left = (await dead.list({ limit: 1000 })).filter((r) => r.raw.includes(id));
      expect({ left: left.length, verifier: (await dead.countMentions([id])).count }).toEqual({ left: 0, verifier: 0 });
    });
  }

  it("keeps a delivered-but-unloaded event of an erased user out of the warehouse (the loader's filter)", async () => {
    const userId = uid("late");
    const names = streamNames("privacy-late");
    const late = event("track", {
      userId,
      anonymousId: null,
      event: "Product Viewed",
      properties: { product_id: "p" },
    });
    const fresh = event("track", {
      userId,
      anonymousId: null,
      event: "Product Viewed",
      properties: { product_id: "q" },
    });
    // Received before the erasure; still in a stream a loader reads.
    await append(names.stream, [late]);
    expect((await admin("DELETE", `/v1/admin/users/${userId}?kind=user`)).status).toBe(200);
    // An event received after the erasure is a new one (the user was not suppressed).
    await append(names.stream, [{ ...fresh, receivedAt: new Date(Date.now() + 60_000).toISOString() }]);
    const report = await withDb((db) => runLoader({ db, redis: loaderRedis() }, { ...names }));
    expect(report).toMatchObject({ status: "ok", erased: 1, events: 1 });
    const rows = await sql<{ message_id: string }>(`select message_id from events where user_id = $1`, [userId]);
    expect(rows.map((r) => r.message_id)).toEqual([fresh.messageId]);
  });

  it("keeps another user's in-flight events that carry the erased device out of the warehouse, links included", async () => {
    const [x, other, third, device] = [uid("erase-x"), uid("other"), uid("third"), uid("shared-device")];
    // X logged in on the device: the warehouse links the device to X, so erasing X erases the device.
    const before = streamNames("privacy-device-before");
    await append(before.stream, [event("identify", { userId: x, anonymousId: device })]);
    expect((await withDb((db) => runLoader({ db, redis: loaderRedis() }, { ...before }))).status).toBe("ok");
    // Received before the erasure, not loaded yet: another user's view on the device (recorded under that user's
    // key), a third user's alias of the device, and an event that has nothing to do with it.
    const inFlight = streamNames("privacy-device-in-flight");
    const onDevice = event("track", {
      userId: other,
      anonymousId: device,
      event: "Product Viewed",
      properties: { product_id: "p-1" },
    });
    const alias = event("alias", { userId: third, anonymousId: uid("anon"), previousId: device });
    const unrelated = event("track", { userId: other, anonymousId: null, event: "Product Viewed" });
    await append(inFlight.stream, [onDevice, alias, unrelated]);

    const erasure = (await (await admin("DELETE", `/v1/admin/users/${x}?kind=user`)).json()) as { userKeys: string[] };
    const load = await withDb((db) => runLoader({ db, redis: loaderRedis() }, { ...inFlight }));
    const verify = (await (await admin("GET", `/v1/admin/users/${x}/erasure?kind=user`)).json()) as {
      clean: boolean;
    };
    const [deviceRows] = await sql<{ events: number; identities: number }>(
      `select (select count(*)::int from events where anonymous_id = $1 or previous_id = $1) as events,
              (select count(*)::int from identities where anonymous_id = $1) as identities`,
      [device],
    );
    expect({
      deviceErased: erasure.userKeys.includes(`a:${device}`),
      load: { status: load.status, erased: load.erased, events: load.events },
      loaded: await sql(`select message_id from events where message_id = any($1)`, [
        [onDevice, alias, unrelated].map((e) => e.messageId),
      ]),
      device: deviceRows,
      verifierClean: verify.clean,
    }).toEqual({
      deviceErased: true,
      load: { status: "ok", erased: 2, events: 1 },
      loaded: [{ message_id: unrelated.messageId }],
      device: { events: 0, identities: 0 },
      verifierClean: true,
    });
  });

  it("waits for a warehouse writer in flight and deletes what it committed", async () => {
    const userId = uid("in-flight");
    const writer = openClient(dbSettings());
    await writer.connect();
    try {
      // A loader batch: holds the shared erasure lock and inserts the user's event, not yet committed.
      await writer.query("begin");
      await writer.query("select pg_advisory_xact_lock_shared($1::bigint)", [0x4c4d_4552_4153_45n.toString()]);
      const e = event("track", { userId, anonymousId: null, event: "Product Viewed" });
      await writer.query(
        `insert into events (message_id, user_key, user_id, type, event, properties, traits, context, source_id, event_time, received_at)
         values ($1, $2, $3, 'track', 'Product Viewed', '{}', '{}', '{}', 's', now(), now())`,
        [e.messageId, `u:${userId}`, userId],
      );
      const erasure = admin("DELETE", `/v1/admin/users/${userId}?kind=user`);
      await new Promise((r) => setTimeout(r, 300));
      await writer.query("commit");
      const report = (await (await erasure).json()) as { deleted: { warehouse: { events: number } } };
      expect(report.deleted.warehouse.events).toBe(1);
    } finally {
      await writer.end();
    }
    expect(await sql(`select 1 from events where user_id = $1`, [userId])).toEqual([]);
  });

  it("answers 503 with Retry-After: 30 when a warehouse writer holds the erasure lock past the lock timeout", async () => {
    const writer = openClient(dbSettings());
    await writer.connect();
    let outcome: unknown;
    try {
      // A loader batch (or the user_candidates swap) holding the lock shared for longer than the erasure waits.
      await writer.query("begin");
      await writer.query("select pg_advisory_xact_lock_shared($1::bigint)", [ERASURE_LOCK.toString()]);
      outcome = await withDb((db) =>
        eraseUser({ env, config: loadConfig(env), db, redis: undefined }, `u:${uid("lock-timeout")}`, {
          suppress: false,
          lockTimeoutMs: 300,
        }),
      ).catch((error: unknown) => error);
    } finally {
      await writer.query("rollback").catch(() => {});
      await writer.end();
    }
    const error = outcome as Partial<ApiError>;
    expect({ name: error.name, code: error.code, status: error.status, headers: error.headers }).toEqual({
      name: "ApiError",
      code: "dependency_unavailable",
      status: 503,
      headers: { "Retry-After": "30" },
    });
  });

  it("erases the dead letters that name the user by a numeric userId, and not a number of another field", async () => {
    // Clients may send a numeric userId; collection accepts it as the string id.
    const n = 900_000_000 + Math.floor(Math.random() * 99_999_999);
    const rejected = { type: "track", userId: n, messageId: uid("m") }; // no event name → dead letter
    const res = await send("/v1/batch", { batch: [viewEvent({ userId: n }, "p-1"), rejected] });
    expect(res.rejected.map((r) => r.index)).toEqual([1]);
    // Another user's rejected event holding the same digits as a quantity must stay.
    const other = { type: "track", userId: uid("other"), properties: { quantity: n }, messageId: uid("m") };
    expect((await send("/v1/batch", { batch: [other] })).rejected).toHaveLength(1);
    const before = (await (await admin("GET", `/v1/admin/users/${n}/erasure?kind=user`)).json()) as {
      left: { deadLetters: number };
    };
    expect(before.left.deadLetters).toBe(1);

    const report = (await (await admin("DELETE", `/v1/admin/users/${n}?kind=user`)).json()) as {
      deleted: { deadLetters: number };
      verification: { clean: boolean };
    };
    expect(report).toMatchObject({ deleted: { deadLetters: 1 }, verification: { clean: true } });
    const dead = (await (await admin("GET", "/v1/admin/dead-letters?source=local&limit=1000")).json()) as {
      deadLetters: { messageId: string | null }[];
    };
    const ids = dead.deadLetters.map((d) => d.messageId);
    expect(ids).not.toContain(rejected.messageId);
    expect(ids).toContain(other.messageId);
  });

  it("records a merged visitor object it could not reach as erased, reports it, and reaches it when erased again", async () => {
    const [user, anon] = [uid("user"), uid("anon")];
    const [u, a] = [`u:${user}`, `a:${anon}`];
    // Pre-login events still in the visitor's outbox (Redis unreachable for that object).
    await runInDurableObject(env.SESSION_STATE.getByName(a), (o: SessionState) => {
      o.redisSettings = () => ({ url: "http://127.0.0.1:9", token: "nope" });
    });
    expect((await send("/v1/track", viewEvent({ anonymousId: anon }, "secret-prelogin"))).accepted).toBe(1);
    // The login merges the visitor into the user (released: its outbox stays with the visitor's object).
    expect((await send("/v1/track", viewEvent({ userId: user, anonymousId: anon }, "p-login"))).accepted).toBe(1);
    expect((await env.SESSION_STATE.getByName(u).snapshot(u)).mergedKeys).toContain(a);
    // The visitor's object does not answer the erasure: neither the user's object's call nor the direct one.
    const unreachable = () => Promise.reject(new Error("injected: object unreachable"));
    await wrapSessions(u, (name) => (name === a ? { erase: unreachable } : {}));
    const sessions = {
      getByName(name: string) {
        const real = env.SESSION_STATE.getByName(name);
        if (name !== a) return real;
        return { erase: unreachable, snapshot: () => real.snapshot(), suppression: () => real.suppression() };
      },
    } as unknown as Env["SESSION_STATE"];
    const res = await appFetch({ ...env, SESSION_STATE: sessions }, `/v1/admin/users/${user}?kind=user`, {
      method: "DELETE",
      headers: { authorization: `Bearer ${ADMIN_KEY}` },
    });
    expect(res.status).toBe(200);
    const first = (await res.json()) as {
      userKeys: string[];
      deleted: { sessionObjects: string[]; unreached: string[] };
      verification: { clean: boolean; left: { sessionObjects: string[] } };
    };
    expect(first).toMatchObject({
      userKeys: [a, u].sort(),
      deleted: { sessionObjects: [u], unreached: [a] },
      verification: { clean: false, left: { sessionObjects: [a] } },
    });
    // Recorded as erased in the warehouse (the loader drops its events received before now).
    const rows = await sql<{ subject: string }>(`select subject from erased_users where user_key = $1`, [a]);
    expect(rows).toEqual([{ subject: u }]);

    // Reachable again: the next erasure finishes it.
    const second = (await (await admin("DELETE", `/v1/admin/users/${user}?kind=user`)).json()) as {
      userKeys: string[];
      deleted: { sessionObjects: string[]; unreached: string[] };
      verification: { clean: boolean };
    };
    expect(second).toMatchObject({
      userKeys: [a, u].sort(),
      deleted: { unreached: [] },
      verification: { clean: true },
    });
    expect(second.deleted.sessionObjects).toContain(a);
    const visitor = await env.SESSION_STATE.getByName(a).snapshot(a);
    expect({ exists: visitor.exists, pending: visitor.outbox.pending }).toEqual({ exists: false, pending: 0 });
  });

  it("answers 503 with Retry-After when a dead-letter object fails, and erasing again completes", async () => {
    const userId = uid("dl-down");
    await send("/v1/track", viewEvent({ userId }, "p-1"));
    const broken = {
      getByName: () => ({ eraseMentions: () => Promise.reject(new Error("injected: dead letters down")) }),
    } as unknown as Env["DEAD_LETTERS"];
    const res = await appFetch({ ...env, DEAD_LETTERS: broken }, `/v1/admin/users/${userId}?kind=user`, {
      method: "DELETE",
      headers: { authorization: `Bearer ${ADMIN_KEY}` },
    });
    expect(res.status).toBe(503);
    expect(res.headers.get("retry-after")).not.toBeNull();
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe("dependency_unavailable");
    const again = (await (await admin("DELETE", `/v1/admin/users/${userId}?kind=user`)).json()) as {
      verification: { clean: boolean };
    };
    expect(again.verification.clean).toBe(true);
  });

  it("refuses a missing or wrong kind, a bad suppress flag, and callers without the admin key", async () => {
    const id = uid("x");
    for (const [path, code] of [
      [`/v1/admin/users/${id}`, 400],
      [`/v1/admin/users/${id}?kind=robot`, 400],
      [`/v1/admin/users/${id}?kind=user&suppress=yes`, 400],
    ] as const) {
      const res = await admin("DELETE", path);
      expect(res.status, path).toBe(code);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe("bad_request");
    }
    const anonymous = await exports.default.fetch(
      new Request(`${BASE}/v1/admin/users/${id}?kind=user`, { method: "DELETE" }),
    );
    expect(anonymous.status).toBe(401);
  });
});

describe("suppression", () => {
  it("erase with suppress: later events are answered as suppressed and stored nowhere, also from a new device", async () => {
    const userId = uid("suppressed");
    await send("/v1/track", viewEvent({ userId }, "p-1"));
    const erased = (await (await admin("DELETE", `/v1/admin/users/${userId}?kind=user&suppress=true`)).json()) as {
      verification: { clean: boolean; suppressed: string[] };
    };
    expect(erased.verification).toMatchObject({ clean: true, suppressed: [`u:${userId}`] });

    const device = uid("new-device");
    const before = await send("/v1/batch", { batch: [viewEvent({ anonymousId: device }, "p-7")] });
    expect(before.accepted).toBe(1); // an unknown visitor, until it logs in
    const res = await send("/v1/batch", {
      batch: [viewEvent({ userId }, "p-2"), viewEvent({ userId, anonymousId: device }, "p-3")],
    });
    expect(res).toMatchObject({ accepted: 0, duplicates: 0, suppressed: 2, rejected: [] });
    expect((await env.SESSION_STATE.getByName(`u:${userId}`).snapshot()).exists).toBe(false);
    // The device's object was erased (its pre-login view too) and refuses events from now on.
    expect((await env.SESSION_STATE.getByName(`a:${device}`).snapshot()).exists).toBe(false);
    const later = await send("/v1/track", viewEvent({ anonymousId: device }, "p-4"));
    expect(later).toMatchObject({ accepted: 0, suppressed: 1 });
    const state = (await (await admin("GET", `/v1/admin/users/${device}/suppression?kind=anonymous`)).json()) as {
      suppressed: boolean;
    };
    expect(state.suppressed).toBe(true);

    // Lifted: events are recorded again.
    expect((await admin("DELETE", `/v1/admin/users/${userId}/suppression?kind=user`)).status).toBe(200);
    const back = await send("/v1/track", viewEvent({ userId }, "p-5"));
    expect(back).toMatchObject({ accepted: 1 });
    expect(back.suppressed).toBeUndefined();
    expect((await env.SESSION_STATE.getByName(`u:${userId}`).snapshot()).counters.events).toBe(1);
  });

  it("lifting a suppression also lifts it on the devices the user logged in from while suppressed", async () => {
    const userId = uid("opt-out");
    await send("/v1/track", viewEvent({ userId }, "p-1"));
    expect((await admin("DELETE", `/v1/admin/users/${userId}?kind=user&suppress=true`)).status).toBe(200);
    // A login on a new device while suppressed: the device's object is erased and suppressed.
    const device = uid("device");
    expect(await send("/v1/track", viewEvent({ userId, anonymousId: device }, "p-2"))).toMatchObject({ suppressed: 1 });
    expect((await env.SESSION_STATE.getByName(`a:${device}`).suppression()).suppressed).toBe(true);
    // The user opts back in.
    expect((await admin("DELETE", `/v1/admin/users/${userId}/suppression?kind=user`)).status).toBe(200);
    const state = (await (await admin("GET", `/v1/admin/users/${device}/suppression?kind=anonymous`)).json()) as {
      suppressed: boolean;
    };
    expect(state.suppressed).toBe(false);
    const later = await send("/v1/track", viewEvent({ anonymousId: device }, "p-3"));
    expect(later).toMatchObject({ accepted: 1 });
    expect(later.suppressed).toBeUndefined();
  });

  it("suppression without erasure reaches every merged visitor, more than a snapshot lists", async () => {
    const userId = uid("many-devices");
    const devices = Array.from({ length: 60 }, (_, i) => uid(`d${i}`));
    const identifies = devices.map((anonymousId) => ({ type: "identify", userId, anonymousId, messageId: uid("m") }));
    expect((await send("/v1/batch", { batch: identifies })).accepted).toBe(60);
    expect((await admin("PUT", `/v1/admin/users/${userId}/suppression?kind=user`)).status).toBe(200);
    const states = await Promise.all(devices.map((d) => env.SESSION_STATE.getByName(`a:${d}`).suppression()));
    expect(states.filter((s) => !s.suppressed)).toHaveLength(0);
  });

  it("stores no dead letter of a suppressed user's rejected events", async () => {
    const userId = uid("opted-out");
    await send("/v1/track", viewEvent({ userId }, "p-1"));
    expect((await admin("DELETE", `/v1/admin/users/${userId}?kind=user&suppress=true`)).status).toBe(200);
    // The client keeps sending; some events are malformed (no event name), with the user's traits in them: beside
    // an event of the user (its object answers suppressed) and alone in a request.
    const malformed = () => ({ type: "track", userId, traits: { email: "x@example.com" }, messageId: uid("m") });
    const [beside, alone] = [malformed(), malformed()];
    const res = await send("/v1/batch", { batch: [viewEvent({ userId }, "p-2"), beside] });
    expect(res).toMatchObject({ accepted: 0, suppressed: 1 });
    expect(res.rejected.map((r) => r.index)).toEqual([1]);
    expect((await send("/v1/batch", { batch: [alone] })).rejected.map((r) => r.index)).toEqual([0]);
    // Another user's rejected event in the same request is kept.
    const kept = { type: "track", userId: uid("someone"), messageId: uid("m") };
    expect((await send("/v1/batch", { batch: [malformed(), kept] })).rejected).toHaveLength(2);
    const dead = (await (await admin("GET", "/v1/admin/dead-letters?source=local&limit=1000")).json()) as {
      deadLetters: { messageId: string | null }[];
    };
    const ids = dead.deadLetters.map((d) => d.messageId);
    expect(ids).not.toContain(beside.messageId);
    expect(ids).not.toContain(alone.messageId);
    expect(ids).toContain(kept.messageId);
    const check = (await (await admin("GET", `/v1/admin/users/${userId}/erasure?kind=user`)).json()) as {
      clean: boolean;
      left: { deadLetters: number };
    };
    expect({ clean: check.clean, deadLetters: check.left.deadLetters }).toEqual({ clean: true, deadLetters: 0 });
  });

  it("suppression without erasure keeps the data and refuses new events until lifted", async () => {
    const userId = uid("paused");
    await send("/v1/track", viewEvent({ userId }, "p-1"));
    expect((await admin("PUT", `/v1/admin/users/${userId}/suppression?kind=user`)).status).toBe(200);
    expect(await send("/v1/track", viewEvent({ userId }, "p-2"))).toMatchObject({ accepted: 0, suppressed: 1 });
    const snapshot = await env.SESSION_STATE.getByName(`u:${userId}`).snapshot();
    expect(snapshot.counters.events).toBe(1);
    expect(snapshot.viewed).toEqual(["p-1"]);
    expect((await admin("DELETE", `/v1/admin/users/${userId}/suppression?kind=user`)).status).toBe(200);
    expect(await send("/v1/track", viewEvent({ userId }, "p-3"))).toMatchObject({ accepted: 1 });
  });
});

describe("erasure of many keys", () => {
  it("erases a user with 520 linked devices within the KV operation budget of every invocation", async () => {
    const userId = uid("many-devices");
    const devices = Array.from({ length: 520 }, (_, i) => `${userId}-d${i}`);
    await sql(
      "insert into identities (anonymous_id, user_id, first_seen, last_seen) select d, $1, now(), now() from unnest($2::text[]) d",
      [userId, devices],
    );
    const keys = [`u:${userId}`, ...devices.map((d) => `a:${d}`)];
    for (const key of keys) await env.ONLINE_STORE.put(userListKey(key), '{"f":1,"e":[]}');
    // Counted, not changed: the erasure's own invocation and each coordinator invocation it calls.
    const own: OpLog = [];
    // Defined on a child of env (an assignment would reach env's own setter and wrap the binding for everyone).
    const counted = Object.defineProperty(Object.create(env) as Env, "ONLINE_STORE", {
      value: countingKv(own)(env.ONLINE_STORE),
    });
    const delegated: OpLog = [];
    await runInDurableObject(env.PUBLISH_COORDINATOR.getByName(COORDINATOR_NAME), (instance: PublishCoordinator) => {
      instance.wrapKv = countingKv(delegated);
    });
    try {
      const report = await withDb((db) =>
        eraseUser({ env: counted, config: loadConfig(env), db, redis: undefined }, `u:${userId}`, { suppress: false }),
      );
      const left = await Promise.all(keys.map(async (k) => (await env.ONLINE_STORE.get(userListKey(k))) !== null));
      expect({
        userKeys: report.userKeys.length,
        kv: report.deleted.kv,
        leftInKv: left.filter(Boolean).length,
        verifierKv: report.verification.left.kv,
        overBudget: [...own, ...delegated].map((ops) => ops.length).filter((n) => n > KV_OPS_PER_INVOCATION),
      }).toEqual({ userKeys: 521, kv: 521, leftInKv: 0, verifierKv: [], overBudget: [] });
    } finally {
      await runInDurableObject(env.PUBLISH_COORDINATOR.getByName(COORDINATOR_NAME), (instance: PublishCoordinator) => {
        instance.wrapKv = (kv) => kv;
      });
    }
  }, 60_000);
});
