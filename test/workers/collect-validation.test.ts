// Validation through the Worker: every bad input with its code and index, the size and count limits at and over
// the edge, dead letters, dedupe, derived messageIds and timestamps — read back through the admin API and the
// session objects.
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import type { DeadLetter } from "../../src/collect/dead-letter-entry.ts";
import { jsonSize } from "../../src/collect/json.ts";
import {
  MAX_BATCH_EVENTS,
  MAX_DEAD_LETTER_RAW_BYTES,
  MAX_EVENT_AGE_MS,
  MAX_EVENT_BYTES,
  MAX_REQUEST_BYTES,
  MAX_USER_BATCH_BYTES,
} from "../../src/collect/limits.ts";
import type { SessionSnapshot } from "../../src/session/snapshot.ts";
import {
  adminGet,
  basic,
  collect,
  envWithSources,
  post,
  recordingSessions,
  refused,
  storedGzip,
  uid,
  WRITE_KEY,
} from "./collect-helpers.ts";

const auth = { authorization: basic(WRITE_KEY) };

async function deadLetters(requestId: string | null): Promise<DeadLetter[]> {
  const res = await adminGet("/v1/admin/dead-letters?source=local&limit=1000");
  expect(res.status).toBe(200);
  const body = (await res.json()) as { deadLetters: DeadLetter[] };
  return body.deadLetters.filter((d) => d.requestId === requestId).sort((a, b) => a.index - b.index);
}

async function snapshotOf(userId: string): Promise<SessionSnapshot> {
  const res = await adminGet(`/v1/admin/users/${encodeURIComponent(userId)}`);
  expect(res.status).toBe(200);
  return (await res.json()) as SessionSnapshot;
}

/** An event padded so that its JSON is exactly `bytes` long. */
function eventOfSize(bytes: number, fields: Record<string, unknown>): Record<string, unknown> {
  const base = { ...fields, properties: { pad: "" } };
  const event = { ...fields, properties: { pad: "x".repeat(bytes - jsonSize(base)) } };
  expect(jsonSize(event)).toBe(bytes);
  return event;
}

describe("per-event validation in a batch", () => {
  it("rejects each bad event by index with its code, accepts the good ones, and dead-letters the rejects", async () => {
    const userId = uid("u");
    const ok = (i: number) => ({ type: "track", event: "Fine", userId, messageId: `ok-${i}-${userId}` });
    const bad: [unknown, string][] = [
      ["not an event", "invalid_event"],
      [{ event: "No Type", userId }, "invalid_type"],
      [{ type: "click", userId }, "invalid_type"],
      [{ type: "track", event: "Nobody" }, "missing_identity"],
      [{ type: "track", userId, messageId: "no-name" }, "missing_event"],
      [{ type: "alias", userId }, "missing_previous_id"],
      [{ type: "alias", anonymousId: "a", previousId: "p" }, "missing_user_id"],
      [{ type: "group", userId }, "missing_group_id"],
      [{ type: "track", event: "E", userId: { id: 1 } }, "invalid_id"],
      [{ type: "track", event: "E", userId: "x".repeat(257) }, "invalid_id"],
      [{ type: "track", event: "E", userId, properties: [1, 2] }, "invalid_field"],
      [{ type: "identify", userId, traits: "vip" }, "invalid_field"],
      [{ type: "page", userId, context: 5 }, "invalid_field"],
      [{ type: "page", userId, timestamp: "last tuesday" }, "invalid_timestamp"],
      [eventOfSize(MAX_EVENT_BYTES + 1, { type: "track", event: "Huge", userId }), "event_too_large"],
    ];
    const batch: unknown[] = [ok(0)];
    for (const [event] of bad) batch.push(event, ok(batch.length));
    const res = await post("/v1/batch", { batch }, { headers: auth });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { accepted: number; duplicates: number; rejected: Record<string, unknown>[] };
    expect(body.accepted).toBe(bad.length + 1);
    expect(body.rejected.map((r) => [r.index, r.code])).toEqual(bad.map(([, code], i) => [2 * i + 1, code]));
    expect(body.rejected[4]).toEqual({
      index: 9,
      code: "missing_event",
      message: "a track event needs an event name",
      messageId: "no-name",
    });

    // Every reject is in the dead-letter store, durable before the response: raw, reason, index, request id.
    const requestId = res.headers.get("x-request-id");
    const stored = await deadLetters(requestId);
    expect(stored.map((d) => [d.index, d.code])).toEqual(body.rejected.map((r) => [r.index, r.code]));
    for (const d of stored) {
      expect(d.sourceId).toBe("local");
      expect(Date.parse(d.receivedAt)).toBeLessThanOrEqual(Date.now());
      expect(d.rawBytes).toBe(jsonSize(batch[d.index]));
    }
    expect(stored[0]?.raw).toBe('"not an event"');
    expect(JSON.parse(stored[4]?.raw ?? "")).toEqual(batch[9]);
    const huge = stored.at(-1);
    expect(huge?.truncated).toBe(true);
    expect(huge?.rawBytes).toBe(MAX_EVENT_BYTES + 1);
    expect(new TextEncoder().encode(huge?.raw).length).toBeLessThanOrEqual(MAX_DEAD_LETTER_RAW_BYTES);
  });

  it("answers a single-event endpoint's invalid event with 200 and the rejection (Segment answers 200 too)", async () => {
    const res = await post("/v1/track", { userId: "u", messageId: "m-single" }, { headers: auth });
    expect(await res.json()).toEqual({
      success: true,
      accepted: 0,
      duplicates: 0,
      rejected: [
        { index: 0, code: "missing_event", message: "a track event needs an event name", messageId: "m-single" },
      ],
    });
    expect((await deadLetters(res.headers.get("x-request-id"))).map((d) => d.code)).toEqual(["missing_event"]);
  });

  it("reports no messageId for an event rejected because its messageId is unusable (NUL, unpaired surrogate)", async () => {
    const userId = uid("u");
    const batch = [
      { type: "track", event: "E", userId, messageId: "m\u0000x" },
      { type: "track", event: "E", userId, messageId: "m\ud800x" },
    ];
    const res = await post("/v1/batch", { batch }, { headers: auth });
    const text = await res.text();
    expect(res.status, text).toBe(200);
    const body = JSON.parse(text) as { rejected: { index: number; code: string; messageId?: string }[] };
    expect(body.rejected.map((r) => r.code)).toEqual(["invalid_id", "invalid_id"]);
    // Stringified: a lone surrogate cannot cross vitest's websocket.
    expect(JSON.stringify(body.rejected.map((r) => r.messageId ?? null))).toBe("[null,null]");
    const stored = await deadLetters(res.headers.get("x-request-id"));
    expect(stored.map((d) => [d.code, d.messageId])).toEqual([
      ["invalid_id", null],
      ["invalid_id", null],
    ]);
  });

  it("keeps no write key a single-event body carried in its dead letter", async () => {
    const secretKey = `wk-server-${crypto.randomUUID()}`;
    const testEnv = envWithSources([{ id: "backend", writeKey: secretKey, trustedServer: true }]);
    // The write key in the body (docs/collection.md#authentication-write-keys, 2.) of an event rejected (no name).
    const event = { userId: uid("u"), messageId: uid("m") };
    const res = await post("/v1/track", { writeKey: secretKey, ...event }, { env: testEnv });
    expect(res.status).toBe(200);
    const list = (await (
      await adminGet("/v1/admin/dead-letters?source=backend&limit=1000", undefined, testEnv)
    ).json()) as {
      deadLetters: DeadLetter[];
    };
    const letters = list.deadLetters.filter((d) => d.requestId === res.headers.get("x-request-id"));
    expect(letters.map((d) => d.code)).toEqual(["missing_event"]);
    expect(letters[0]?.raw).not.toContain(secretKey);
    expect(JSON.parse(letters[0]?.raw ?? "")).toEqual(event);
    expect(letters[0]?.rawBytes).toBe(jsonSize(event));
  });

  it("refuses bodies that are no batch, and empty batches, with 400 and stores nothing", async () => {
    for (const body of [{ batch: [] }, { batch: {} }, { events: [] }, [{ type: "track" }], "batch"]) {
      const res = await post("/v1/batch", body, { headers: auth });
      await refused(res, 400, "validation_failed");
      expect(await deadLetters(res.headers.get("x-request-id"))).toEqual([]);
    }
    await refused(post("/v1/batch", { batch: [{}], context: "x" }, { headers: auth }), 400, "validation_failed");
    await refused(post("/v1/track", [1], { headers: auth }), 400, "validation_failed");
  });
});

describe("limits", () => {
  it("takes an event of exactly 32 KB and rejects one byte more, in a batch by index", async () => {
    const userId = uid("u");
    const atLimit = eventOfSize(MAX_EVENT_BYTES, { type: "track", event: "E", userId, messageId: uid("m") });
    const over = eventOfSize(MAX_EVENT_BYTES + 1, { type: "track", event: "E", userId, messageId: "too-big" });
    const result = await collect("/v1/batch", { batch: [atLimit, over] }, { headers: auth });
    expect(result.accepted).toBe(1);
    expect(result.rejected).toEqual([
      {
        index: 1,
        code: "event_too_large",
        message: `the event is ${MAX_EVENT_BYTES + 1} bytes as JSON; the limit is ${MAX_EVENT_BYTES}`,
        messageId: "too-big",
      },
    ]);
  });

  it("measures a batch's events with the context and integrations they inherit", async () => {
    const userId = uid("u");
    const context = { pad: "c".repeat(20_000) };
    const inherited = JSON.stringify(context).length;
    const fits = eventOfSize(MAX_EVENT_BYTES - inherited, { type: "track", event: "E", userId, messageId: uid("m") });
    const over = eventOfSize(MAX_EVENT_BYTES - inherited + 1, { type: "track", event: "E", userId, messageId: "over" });
    const result = await collect("/v1/batch", { batch: [fits, over], context }, { headers: auth });
    expect(result.accepted).toBe(1);
    expect(result.rejected).toEqual([
      {
        index: 1,
        code: "event_too_large",
        message: `the event is ${MAX_EVENT_BYTES + 1} bytes as JSON with the ${inherited} bytes of context and integrations it inherits from the batch; the limit is ${MAX_EVENT_BYTES}`,
        messageId: "over",
      },
    ]);
    // Context and integrations that no event could be stored with refuse the whole batch, before anything is stored.
    const huge = { batch: [{ type: "track", event: "E", userId }], context, integrations: { pad: "i".repeat(13_000) } };
    const res = post("/v1/batch", huge, { headers: auth });
    const body = await refused(res, 413, "payload_too_large");
    expect(body.error).toMatchObject({ limit: MAX_EVENT_BYTES, unit: "bytes" });
    expect(body.error.actual).toBeGreaterThan(MAX_EVENT_BYTES);
    expect(await deadLetters((await res).headers.get("x-request-id"))).toEqual([]);
  });

  it("answers 413 for an oversized event on a single-event endpoint, and takes one at the limit", async () => {
    const fields = { event: "E", userId: uid("u"), messageId: uid("m") };
    expect((await collect("/v1/track", eventOfSize(MAX_EVENT_BYTES, fields), { headers: auth })).accepted).toBe(1);
    const res = post("/v1/track", eventOfSize(MAX_EVENT_BYTES + 1, fields), { headers: auth });
    const body = await refused(res, 413, "payload_too_large");
    expect(body.error).toMatchObject({ limit: MAX_EVENT_BYTES, actual: MAX_EVENT_BYTES + 1, unit: "bytes" });
  });

  it("takes a request body of exactly 500 KB and refuses one byte more with 413", async () => {
    const userId = uid("u");
    const batch = Array.from({ length: 16 }, (_, i) =>
      eventOfSize(30_000, { type: "track", event: "E", userId, messageId: `${userId}-${i}` }),
    );
    const json = JSON.stringify({ batch });
    // JSON allows trailing whitespace: pad to the exact size.
    const exact = json + " ".repeat(MAX_REQUEST_BYTES - json.length);
    expect(exact.length).toBe(MAX_REQUEST_BYTES);
    const res = await post("/v1/batch", null, { raw: exact, headers: auth });
    expect(res.status).toBe(200);
    expect(((await res.json()) as { accepted: number }).accepted).toBe(16);

    const over = await refused(post("/v1/batch", null, { raw: `${exact} `, headers: auth }), 413, "payload_too_large");
    expect(over.error).toMatchObject({ limit: MAX_REQUEST_BYTES, actual: MAX_REQUEST_BYTES + 1, unit: "bytes" });
    // The same oversized body gzipped: the cap is on the decompressed size.
    const gz = await refused(
      post("/v1/batch", null, { raw: `${exact} `, headers: auth, gzip: true }),
      413,
      "payload_too_large",
    );
    expect(gz.error).toMatchObject({ limit: MAX_REQUEST_BYTES });
  });

  it("caps a gzip body by what it decodes to, not by its size as sent", async () => {
    // Incompressible data comes out of gzip a little bigger (stored blocks): exactly 500 KB of JSON sent so is ~50
    // bytes over 500 KB on the wire, and is within the limit.
    const userId = uid("u");
    const batch = Array.from({ length: 16 }, (_, i) =>
      eventOfSize(30_000, { type: "track", event: "E", userId, messageId: `${userId}-${i}` }),
    );
    const json = JSON.stringify({ batch });
    const exact = new TextEncoder().encode(json + " ".repeat(MAX_REQUEST_BYTES - json.length));
    const stored = storedGzip(exact);
    expect(stored.byteLength).toBeGreaterThan(MAX_REQUEST_BYTES);
    const headers = { ...auth, "content-encoding": "gzip" };
    const res = await post("/v1/batch", null, { raw: stored, headers });
    expect(res.status, await res.clone().text()).toBe(200);
    expect(((await res.json()) as { accepted: number }).accepted).toBe(16);
    // One byte more decoded is over, however it is encoded.
    const over = storedGzip(new TextEncoder().encode(`${new TextDecoder().decode(exact)} `));
    const refusedOver = await refused(post("/v1/batch", null, { raw: over, headers }), 413, "payload_too_large");
    expect(refusedOver.error).toMatchObject({ limit: MAX_REQUEST_BYTES, unit: "bytes" });
  });

  it("refuses a batch whose events inherit a large context with 413 past the per-user budget, storing nothing", async () => {
    // Every other limit is met: ~30 KB of batch context (under 32 KB), 2,000 small events of one visitor (body
    // ~330 KB), each event with what it inherits ~30 KB. Stored with its copy of the context, the visitor's one
    // record call would carry ~60 MB, past what workerd lets an RPC carry: a 503 on every retry.
    const context = { blob: "x".repeat(30_000) };
    const anonymousId = uid("a");
    const batch = Array.from({ length: 2000 }, (_, i) => ({
      type: "track",
      event: "E",
      anonymousId,
      messageId: `${anonymousId}-${i}`,
    }));
    const sessions = recordingSessions();
    const res = post(
      "/v1/batch",
      { batch, context },
      { headers: auth, env: { ...env, SESSION_STATE: sessions.namespace } },
    );
    const body = await refused(res, 413, "payload_too_large");
    // Each event measured as for the 32 KB limit, with the context it inherits.
    const actual = batch.reduce((sum, event) => sum + jsonSize(event) + jsonSize(context), 0);
    expect(body.error).toMatchObject({ limit: MAX_USER_BATCH_BYTES, actual, unit: "bytes" });
    expect(body.error.message).toContain("smaller batches");
    expect(sessions.calls).toEqual([]);
    expect(await deadLetters((await res).headers.get("x-request-id"))).toEqual([]);
  });

  it("takes a user's events up to exactly the per-user budget and refuses one byte more; other users apart", async () => {
    const context = { blob: "c".repeat(29_000) };
    const inherited = jsonSize(context);
    const count = 420;
    /** `count` events whose sizes with the context they inherit add up to `total`. */
    const inheriting = (total: number, who: (i: number) => Record<string, unknown>) => {
      const own = total - count * inherited;
      const each = Math.floor(own / count);
      return Array.from({ length: count }, (_, i) =>
        eventOfSize(i === count - 1 ? own - each * (count - 1) : each, {
          type: "track",
          event: "E",
          ...who(i),
          messageId: `m-${i}`,
        }),
      );
    };
    const userId = uid("u");
    const exact = inheriting(MAX_USER_BATCH_BYTES, () => ({ userId }));
    expect(jsonSize({ batch: exact, context })).toBeLessThan(MAX_REQUEST_BYTES);
    const sessions = recordingSessions();
    const testEnv = { ...env, SESSION_STATE: sessions.namespace };
    expect((await collect("/v1/batch", { batch: exact, context }, { headers: auth, env: testEnv })).accepted).toBe(
      count,
    );
    expect(sessions.calls.map((c) => [c.userKey, c.events.length])).toEqual([[`u:${userId}`, count]]);

    const over = inheriting(MAX_USER_BATCH_BYTES + 1, () => ({ userId }));
    const res = post("/v1/batch", { batch: over, context }, { headers: auth, env: testEnv });
    const body = await refused(res, 413, "payload_too_large");
    expect(body.error).toMatchObject({ limit: MAX_USER_BATCH_BYTES, actual: MAX_USER_BATCH_BYTES + 1, unit: "bytes" });
    expect(sessions.calls).toHaveLength(1);

    // The budget is per user (per record call): the same bytes over two users are taken.
    const other = uid("u");
    const split = inheriting(MAX_USER_BATCH_BYTES + 1, (i) => ({ userId: i % 2 === 0 ? userId : other }));
    expect((await collect("/v1/batch", { batch: split, context }, { headers: auth, env: testEnv })).accepted).toBe(
      count,
    );
    expect(sessions.calls.slice(1).map((c) => c.userKey)).toEqual([`u:${userId}`, `u:${other}`]);
  });

  it("takes exactly 2,500 events and refuses 2,501 with 413", async () => {
    const userId = uid("u");
    const batch = Array.from({ length: MAX_BATCH_EVENTS }, (_, i) => ({ type: "page", userId, messageId: `${i}` }));
    const result = await collect("/v1/batch", { batch }, { headers: auth });
    expect(result.accepted).toBe(MAX_BATCH_EVENTS);
    batch.push({ type: "page", userId, messageId: "one-more" });
    const res = await post("/v1/batch", { batch }, { headers: auth });
    const body = await refused(res, 413, "payload_too_large");
    expect(body.error).toMatchObject({ limit: MAX_BATCH_EVENTS, actual: MAX_BATCH_EVENTS + 1, unit: "events" });
  });
});

describe("dedupe and messageIds", () => {
  it("reports a repeated messageId as a duplicate, and the session shows one effect", async () => {
    const userId = uid("u");
    const event = { userId, event: "Product Viewed", messageId: uid("m"), properties: { product_id: "p1" } };
    expect(await collect("/v1/track", event, { headers: auth })).toMatchObject({ accepted: 1, duplicates: 0 });
    expect(await collect("/v1/track", event, { headers: auth })).toMatchObject({ accepted: 0, duplicates: 1 });
    // A retried batch: the same messageId twice more, next to a new event.
    const batch = [
      { type: "track", ...event },
      { type: "track", ...event, messageId: uid("m") },
    ];
    expect(await collect("/v1/batch", { batch }, { headers: auth })).toMatchObject({ accepted: 1, duplicates: 1 });
    const snapshot = await snapshotOf(userId);
    expect(snapshot.counters.events).toBe(2);
    expect(snapshot.interactions.filter((i) => i.messageId === event.messageId)).toHaveLength(1);
    expect(snapshot.viewed).toEqual(["p1"]);
  });

  it("derives the same messageId when a client retries a payload without one", async () => {
    const userId = uid("u");
    const payload = {
      userId,
      event: "Product Viewed",
      properties: { product_id: "p7" },
      timestamp: new Date(Date.now() - 5000).toISOString(),
    };
    expect(
      await collect("/v1/track", { ...payload, sentAt: new Date().toISOString() }, { headers: auth }),
    ).toMatchObject({
      accepted: 1,
    });
    // The retry: same event, new sentAt, keys in another order.
    const retry = { sentAt: new Date().toISOString(), ...payload };
    expect(await collect("/v1/track", retry, { headers: auth })).toMatchObject({ accepted: 0, duplicates: 1 });
    const snapshot = await snapshotOf(userId);
    expect(snapshot.counters.events).toBe(1);
    expect(snapshot.interactions).toHaveLength(1);
    expect(snapshot.interactions[0]?.messageId).toMatch(/^lm-[0-9a-f]{32}$/);
    // Another event of the same user without an id is not a duplicate.
    const other = await collect("/v1/track", { ...payload, properties: { product_id: "p8" } }, { headers: auth });
    expect(other).toMatchObject({ accepted: 1, duplicates: 0 });
  });
});

describe("timestamps", () => {
  it("corrects client clock skew: timestamp = receivedAt − (sentAt − originalTimestamp)", async () => {
    const userId = uid("u");
    // The client's clock runs 2 hours behind; it queued the event for 5 seconds before sending.
    const clientNow = Date.now() - 2 * 3600_000;
    const before = Date.now();
    await collect(
      "/v1/batch",
      {
        batch: [
          {
            type: "track",
            event: "Product Viewed",
            userId,
            messageId: uid("m"),
            properties: { product_id: "p1" },
            originalTimestamp: new Date(clientNow - 5000).toISOString(),
          },
        ],
        sentAt: new Date(clientNow).toISOString(),
      },
      { headers: auth },
    );
    const after = Date.now();
    const [interaction] = (await snapshotOf(userId)).interactions;
    expect(interaction?.at).toBeGreaterThanOrEqual(before - 5000);
    expect(interaction?.at).toBeLessThanOrEqual(after - 5000);
  });

  it("clamps timestamps to [receivedAt − 31 days, receivedAt + 1 minute] and flags them", async () => {
    const sessions = recordingSessions();
    const testEnv = { ...env, SESSION_STATE: sessions.namespace };
    const userId = uid("u");
    const before = Date.now();
    const batch = [
      { type: "track", event: "Old", userId, messageId: "old", timestamp: "2019-06-01T00:00:00Z" },
      { type: "track", event: "Future", userId, messageId: "future", timestamp: "2099-01-01T00:00:00Z" },
      { type: "track", event: "Now", userId, messageId: "now", timestamp: new Date(before - 1000).toISOString() },
    ];
    await collect("/v1/batch", { batch }, { headers: auth, env: testEnv });
    const after = Date.now();
    const [old, future, now] = sessions.calls[0]?.events ?? [];
    const oldAt = Date.parse(old?.timestamp ?? "");
    expect(oldAt).toBeGreaterThanOrEqual(before - MAX_EVENT_AGE_MS);
    expect(oldAt).toBeLessThanOrEqual(after - MAX_EVENT_AGE_MS);
    expect(old?.originalTimestamp).toBe("2019-06-01T00:00:00Z");
    expect(old?.context.lastmile).toEqual({ timestampClamped: true });
    const futureAt = Date.parse(future?.timestamp ?? "");
    expect(futureAt).toBeGreaterThanOrEqual(before + 60_000);
    expect(futureAt).toBeLessThanOrEqual(after + 60_000);
    expect(future?.context.lastmile).toEqual({ timestampClamped: true });
    expect(now?.timestamp).toBe(new Date(before - 1000).toISOString());
    expect(now?.context).not.toHaveProperty("lastmile");
  });
});
