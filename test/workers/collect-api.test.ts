// The collection API's wire compatibility: every endpoint and path style, write keys, body encodings, the
// response format and what reaches the SessionState objects.
import { env, exports } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import type { EventType } from "../../src/collect/event.ts";
import { MAX_REQUEST_BYTES } from "../../src/collect/limits.ts";
import {
  BASE,
  basic,
  collect,
  envWithSources,
  gzip,
  post,
  recordingSessions,
  refused,
  streamedEvent,
  uid,
  WRITE_KEY,
} from "./collect-helpers.ts";

const auth = { authorization: basic(WRITE_KEY) };

/** A valid event of each type (what the path's type needs). */
function eventOf(type: EventType, userId = uid("u")): Record<string, unknown> {
  const common = { userId, messageId: uid("m") };
  switch (type) {
    case "track":
      return { ...common, event: "Product Viewed", properties: { product_id: "p1" } };
    case "page":
    case "screen":
      return { ...common, name: "Home" };
    case "identify":
      return { ...common, traits: { plan: "pro" } };
    case "alias":
      return { ...common, previousId: uid("a") };
    case "group":
      return { ...common, groupId: "acme" };
  }
}

const PATHS: [EventType, string, string][] = [
  ["track", "/v1/track", "/v1/t"],
  ["page", "/v1/page", "/v1/p"],
  ["screen", "/v1/screen", "/v1/s"],
  ["identify", "/v1/identify", "/v1/i"],
  ["alias", "/v1/alias", "/v1/a"],
  ["group", "/v1/group", "/v1/g"],
];

describe("endpoints and path styles", () => {
  it("takes one event on each long and short single-event path, the path deciding the type", async () => {
    const sessions = recordingSessions();
    const testEnv = { ...env, SESSION_STATE: sessions.namespace };
    for (const [type, long, short] of PATHS) {
      for (const path of [long, short]) {
        // The body claims another type: the path wins (Segment's endpoints work that way).
        const body = { ...eventOf(type), type: type === "track" ? "page" : "track" };
        expect(await collect(path, body, { headers: auth, env: testEnv }), path).toEqual({
          success: true,
          accepted: 1,
          duplicates: 0,
          rejected: [],
        });
        expect(sessions.calls.at(-1)?.events[0]?.type, path).toBe(type);
      }
    }
    expect(sessions.calls).toHaveLength(12);
  });

  it("stores single events in the real session objects", async () => {
    for (const [type, long] of PATHS) {
      const result = await collect(long, eventOf(type), { headers: auth });
      expect(result.accepted, type).toBe(1);
    }
  });

  it("takes batches on /v1/batch, /v1/import and /v1/b", async () => {
    for (const path of ["/v1/batch", "/v1/import", "/v1/b"]) {
      const batch = PATHS.map(([type]) => ({ type, ...eventOf(type) }));
      const result = await collect(path, { batch }, { headers: auth });
      expect(result, path).toEqual({ success: true, accepted: 6, duplicates: 0, rejected: [] });
    }
  });

  it("takes RudderStack's beacon batches on /beacon/v1/batch, the key in ?writeKey=", async () => {
    // The JavaScript SDK with useBeacon: navigator.sendBeacon(`${dataPlaneUrl}/beacon/v1/batch?writeKey=…`, blob):
    // a beacon can carry no Authorization header, and the SDK puts no writeKey in the body.
    const batch = [
      { type: "page", ...eventOf("page") },
      { type: "track", ...eventOf("track") },
    ];
    const beacon = { raw: JSON.stringify({ batch, sentAt: new Date().toISOString() }) };
    const headers = { "content-type": "text/plain;charset=UTF-8" };
    const result = await collect(`/beacon/v1/batch?writeKey=${WRITE_KEY}`, null, { ...beacon, headers });
    expect(result).toEqual({ success: true, accepted: 2, duplicates: 0, rejected: [] });
    await refused(post("/beacon/v1/batch?writeKey=nope", null, { ...beacon, headers }), 401, "unauthorized");
    await refused(post("/beacon/v1/batch", null, { ...beacon, headers }), 401, "unauthorized");
    // The query key is this path's (and the webhook's) only: elsewhere it is no credential.
    await refused(post(`/v1/batch?writeKey=${WRITE_KEY}`, null, { ...beacon, headers }), 401, "unauthorized");
  });

  it("takes webhook deliveries: one event with its own type, key by Basic auth or ?writeKey=", async () => {
    const delivery = {
      type: "track",
      event: "Order Completed",
      userId: uid("u"),
      messageId: uid("m"),
      properties: { products: [{ product_id: "p1" }] },
      receivedAt: "2026-11-20T10:00:00.000Z",
      timestamp: new Date(Date.now() - 120_000).toISOString(),
      sentAt: new Date(Date.now() - 100_000).toISOString(),
      originalTimestamp: new Date(Date.now() - 130_000).toISOString(),
    };
    const sessions = recordingSessions();
    const testEnv = { ...env, SESSION_STATE: sessions.namespace };
    expect((await collect("/v1/webhook", delivery, { headers: auth, env: testEnv })).accepted).toBe(1);
    expect((await collect(`/v1/webhook?writeKey=${WRITE_KEY}`, delivery, { env: testEnv })).accepted).toBe(1);
    // The upstream pipeline already corrected `timestamp`: it is kept (not recomputed from sentAt).
    expect(sessions.calls[0]?.events[0]?.timestamp).toBe(delivery.timestamp);
    // A body writeKey is not a webhook credential.
    await refused(post("/v1/webhook", { ...delivery, writeKey: WRITE_KEY }), 401, "unauthorized");
    // A webhook event without a type is rejected, not guessed.
    const untyped = await collect("/v1/webhook", { userId: "u", event: "x" }, { headers: auth });
    expect(untyped.rejected).toEqual([expect.objectContaining({ index: 0, code: "invalid_type" })]);
    await refused(post("/v1/webhook", [delivery], { headers: auth }), 400, "validation_failed");
  });

  it("answers 405 for other methods and 404 for unknown paths", async () => {
    const res = await exports.default.fetch(`${BASE}/v1/track`);
    await refused(res, 405, "method_not_allowed");
    expect(res.headers.get("allow")).toBe("POST, OPTIONS");
    await refused(post("/v1/tracks", {}, { headers: auth }), 404, "not_found");
  });
});

describe("write keys", () => {
  const event = () => ({ ...eventOf("track") });

  it("accepts Basic auth (writeKey as username, empty or '\"\"' password) and a body writeKey", async () => {
    expect((await collect("/v1/track", event(), { headers: auth })).accepted).toBe(1);
    expect((await collect("/v1/track", event(), { headers: { authorization: basic(WRITE_KEY, '""') } })).accepted).toBe(
      1,
    );
    expect((await collect("/v1/track", { ...event(), writeKey: WRITE_KEY })).accepted).toBe(1);
    expect((await collect("/v1/batch", { batch: [{ type: "track", ...event() }], writeKey: WRITE_KEY })).accepted).toBe(
      1,
    );
  });

  it("answers 401 for a missing or unknown key, without a Basic challenge (no browser login dialog)", async () => {
    const missing = await post("/v1/track", event());
    expect(missing.headers.has("www-authenticate")).toBe(false);
    await refused(missing, 401, "unauthorized");
    await refused(post("/v1/track", event(), { headers: { authorization: basic("nope") } }), 401, "unauthorized");
    await refused(post("/v1/track", { ...event(), writeKey: "nope" }), 401, "unauthorized");
    await refused(post("/v1/track", event(), { headers: { authorization: "Basic !!!" } }), 401, "unauthorized");
  });

  it("lets the header win over the body", async () => {
    await refused(
      post("/v1/track", { ...event(), writeKey: WRITE_KEY }, { headers: { authorization: basic("nope") } }),
      401,
      "unauthorized",
    );
  });

  it("answers 403 for a disabled source and routes each key to its source", async () => {
    const sessions = recordingSessions();
    const testEnv = envWithSources(
      [
        { id: "web", writeKey: "wk-web" },
        { id: "old", writeKey: "wk-old", enabled: false },
      ],
      { SESSION_STATE: sessions.namespace },
    );
    const body = await refused(
      post("/v1/track", event(), { headers: { authorization: basic("wk-old") }, env: testEnv }),
      403,
      "forbidden",
    );
    expect(body.error.sourceId).toBe("old");
    await collect("/v1/track", event(), { headers: { authorization: basic("wk-web") }, env: testEnv });
    expect(sessions.calls[0]?.events[0]?.sourceId).toBe("web");
    // The local default source only exists while SOURCES is unset.
    await refused(post("/v1/track", event(), { headers: auth, env: testEnv }), 401, "unauthorized");
  });
});

describe("request bodies", () => {
  it("takes text/plain JSON as analytics.js sends it (key in the body, no Authorization)", async () => {
    const res = await post("/v1/t", null, {
      raw: JSON.stringify({ ...eventOf("track"), writeKey: WRITE_KEY }),
      headers: { "content-type": "text/plain;charset=UTF-8" },
    });
    expect(res.status).toBe(200);
    expect(((await res.json()) as { accepted: number }).accepted).toBe(1);
  });

  it("takes any content type, or none, as long as the body is JSON; 415 otherwise", async () => {
    for (const type of ["application/x-www-form-urlencoded", "application/octet-stream", ""]) {
      const res = await post("/v1/track", eventOf("track"), { headers: { ...auth, "content-type": type } });
      expect(res.status, type).toBe(200);
    }
    await refused(
      post("/v1/track", null, {
        raw: "a=1&b=2",
        headers: { ...auth, "content-type": "application/x-www-form-urlencoded" },
      }),
      415,
      "unsupported_media_type",
    );
  });

  it("answers 400 invalid_json for malformed and empty bodies", async () => {
    await refused(post("/v1/track", null, { raw: '{"userId": "u",', headers: auth }), 400, "invalid_json");
    await refused(post("/v1/batch", null, { raw: "", headers: auth }), 400, "invalid_json");
    await refused(
      post("/v1/t", null, { raw: "not json", headers: { ...auth, "content-type": "text/plain" } }),
      400,
      "invalid_json",
    );
  });

  it("takes gzip bodies (Content-Encoding: gzip)", async () => {
    const batch = Array.from({ length: 50 }, () => ({ type: "track", ...eventOf("track") }));
    const result = await collect("/v1/batch", { batch }, { headers: auth, gzip: true });
    expect(result.accepted).toBe(50);
  });

  it("stops a gzip bomb at the decompressed cap with 413, however small it is compressed", async () => {
    // 20 MB of JSON whitespace and one event: ~20 KB compressed.
    const bomb = await gzip(`{"batch":[${" ".repeat(20_000_000)}]}`);
    expect(bomb.byteLength).toBeLessThan(MAX_REQUEST_BYTES);
    const res = await post("/v1/batch", null, { raw: bomb, headers: { ...auth, "content-encoding": "gzip" } });
    const body = await refused(res, 413, "payload_too_large");
    expect(body.error).toMatchObject({ limit: MAX_REQUEST_BYTES, unit: "bytes", atLeast: true });
  });

  it("refuses a gzip bomb under the cap as sent that would inflate to ~480 MB: 413 at the cap", async () => {
    // Spaces, compressed ~1,000:1. The decoder (src/collect/gzip.ts) stops at the first byte past the cap; that its
    // output never grows past the cap is the decoder's own unit test (test/unit/collect-gzip.test.ts).
    const spaces = new Uint8Array(16 * 1024 * 1024).fill(0x20);
    let sent = 0;
    const source = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (sent++ >= 30) controller.close();
        else controller.enqueue(spaces);
      },
    });
    const bomb = new Uint8Array(await new Response(source.pipeThrough(new CompressionStream("gzip"))).arrayBuffer());
    expect(bomb.byteLength).toBeLessThan(MAX_REQUEST_BYTES);
    const res = await post("/v1/batch", null, { raw: bomb, headers: { ...auth, "content-encoding": "gzip" } });
    const body = await refused(res, 413, "payload_too_large");
    expect(body.error).toMatchObject({ limit: MAX_REQUEST_BYTES, atLeast: true });
  });

  it("answers 400 for a body that is not gzip although it says so, 415 for other encodings", async () => {
    await refused(
      post("/v1/batch", { batch: [] }, { headers: { ...auth, "content-encoding": "gzip" } }),
      400,
      "bad_request",
    );
    await refused(
      post("/v1/batch", { batch: [] }, { headers: { ...auth, "content-encoding": "br" } }),
      415,
      "unsupported_media_type",
    );
  });
});

describe("what reaches the session objects", () => {
  it("hands over normalised events with server-owned fields, batch context merged", async () => {
    const sessions = recordingSessions();
    const testEnv = {
      ...envWithSources([{ id: "web", writeKey: "wk-web", allowedOrigins: ["*"] }]),
      SESSION_STATE: sessions.namespace,
    };
    const userId = uid("u");
    const before = Date.now();
    await collect(
      "/v1/batch",
      {
        batch: [
          {
            type: "track",
            event: "Product Viewed",
            userId,
            messageId: "m1",
            context: { ip: "6.6.6.6", locale: "fr-FR", lastmile: { forged: true } },
            integrations: { Mixpanel: false },
            receivedAt: "1999-01-01T00:00:00Z",
            sourceId: "forged",
          },
        ],
        context: { library: { name: "analytics-node", version: "2" }, locale: "de-DE" },
        integrations: { All: true },
      },
      // A browser source: what its pages send in context.ip is theirs to forge.
      { headers: { authorization: basic("wk-web"), "cf-connecting-ip": "198.51.100.7" }, env: testEnv },
    );
    const [call] = sessions.calls;
    expect(call?.userKey).toBe(`u:${userId}`);
    expect(call?.objectName).toBe(`u:${userId}`);
    const event = call?.events[0];
    expect(event?.context).toEqual({
      library: { name: "analytics-node", version: "2" },
      locale: "fr-FR",
      ip: "198.51.100.7",
    });
    expect(event?.integrations).toEqual({ All: true, Mixpanel: false });
    expect(event?.sourceId).toBe("web");
    expect(Date.parse(event?.receivedAt ?? "")).toBeGreaterThanOrEqual(before);
    expect(Date.parse(event?.receivedAt ?? "")).toBeLessThanOrEqual(Date.now());
  });

  it("keeps the user's context.ip from a server library (trustedServer source) or a webhook delivery", async () => {
    // Segment's spec: server libraries collect no IP, the caller passes the user's in context.ip; the connection
    // comes from the shop's server (or from Segment's, for a webhook), whose address is no user's.
    const sessions = recordingSessions();
    const testEnv = {
      ...envWithSources([
        { id: "backend", writeKey: "wk-backend", trustedServer: true },
        { id: "web", writeKey: "wk-web", allowedOrigins: ["*"] },
      ]),
      SESSION_STATE: sessions.namespace,
    };
    const server = { "cf-connecting-ip": "198.51.100.7" };
    const event = (ip?: string) => ({
      type: "track",
      event: "Order Completed",
      userId: uid("u"),
      ...(ip ? { context: { ip } } : {}),
    });
    const backend = { ...server, authorization: basic("wk-backend") };
    await collect("/v1/batch", { batch: [event("203.0.113.20"), event()] }, { headers: backend, env: testEnv });
    await collect("/v1/webhook", event("203.0.113.21"), { headers: backend, env: testEnv });
    const web = { ...server, authorization: basic("wk-web") };
    await collect("/v1/webhook", event("203.0.113.22"), { headers: web, env: testEnv });
    await collect("/v1/track", event("203.0.113.23"), { headers: web, env: testEnv });
    const ips = sessions.calls.map((call) => call.events[0]?.context.ip);
    // A browser source's own paths stay server-owned; an event that sends none gets the connecting address.
    expect(ips).toEqual(["203.0.113.20", "198.51.100.7", "203.0.113.21", "203.0.113.22", "198.51.100.7"]);
  });

  it("makes one record call per distinct user, in request order, userId before anonymousId", async () => {
    const sessions = recordingSessions();
    const testEnv = { ...env, SESSION_STATE: sessions.namespace };
    const [u1, u2, a1] = [uid("u"), uid("u"), uid("a")];
    const batch = [
      { type: "track", event: "A", userId: u1, messageId: "1" },
      { type: "page", anonymousId: a1, messageId: "2" },
      { type: "track", event: "B", userId: u2, messageId: "3" },
      { type: "track", event: "C", userId: u1, anonymousId: a1, messageId: "4" },
      { type: "identify", userId: u1, messageId: "5" },
      { type: "page", anonymousId: a1, messageId: "6" },
    ];
    expect((await collect("/v1/batch", { batch }, { headers: auth, env: testEnv })).accepted).toBe(6);
    const byUser = Object.fromEntries(sessions.calls.map((c) => [c.userKey, c.events.map((e) => e.messageId)]));
    expect(sessions.calls).toHaveLength(3);
    expect(byUser).toEqual({ [`u:${u1}`]: ["1", "4", "5"], [`a:${a1}`]: ["2", "6"], [`u:${u2}`]: ["3"] });
    for (const call of sessions.calls) expect(call.objectName).toBe(call.userKey);
  });

  it("delivers the same event through the real object to the warehouse stream", async () => {
    const messageId = uid("m");
    const userId = uid("u");
    const timestamp = new Date(Date.now() - 60_000).toISOString();
    await collect(
      "/v1/track",
      { userId, event: "Product Viewed", messageId, timestamp, properties: { product_id: "p9" } },
      { headers: { ...auth, "cf-connecting-ip": "192.0.2.44" } },
    );
    const streamed = await streamedEvent(messageId, `u:${userId}`);
    expect(streamed).toMatchObject({
      messageId,
      type: "track",
      event: "Product Viewed",
      timestamp,
      sourceId: "local",
      context: { ip: "192.0.2.44" },
      properties: { product_id: "p9" },
    });
  });
});
