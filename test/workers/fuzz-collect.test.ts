// Properties of the collection API through the Worker's real entry point (fast-check, fixed seeds): any body, any
// Content-Type and Content-Encoding, any write key on every collection path answers a 2xx or a machine-readable
// 4xx — never a 5xx; malformed JSON, deep nesting, oversized and slow bodies, a gzip bomb and `__proto__` keys
// have their documented answers; in a mixed batch exactly the invalid items are rejected, every valid event is in
// its user's session (read back through the admin API) and every invalid one in the dead-letter store.
import fc from "fast-check";
import { describe, expect, it, vi } from "vitest";
import type { DeadLetter } from "../../src/collect/dead-letter-entry.ts";
import { jsonSize } from "../../src/collect/json.ts";
import { MAX_BATCH_EVENTS, MAX_REQUEST_BYTES } from "../../src/collect/limits.ts";
import { BATCH_PATHS, type CollectResponse, SINGLE_EVENT_PATHS, WEBHOOK_PATH } from "../../src/collect/routes.ts";
import type { SessionSnapshot } from "../../src/session/snapshot.ts";
import {
  checkPrototypesAfterAll,
  deepJsonText,
  hostileJson,
  hostileString,
  malformedJsonText,
  survivesUtf8,
} from "../support/fuzz.ts";
import { eventArbitraries, type WireEvent } from "../support/fuzz-events.ts";
import { adminGet, basic, gzip, streamedEvent, uid, WRITE_KEY } from "./collect-helpers.ts";
import { type Answer, answered, codeOf, send, slowBody } from "./fuzz-helpers.ts";

vi.setConfig({ testTimeout: 120_000 });

checkPrototypesAfterAll();

const SINGLE_PATHS = Object.values(SINGLE_EVENT_PATHS).flat();
const PATHS = [...SINGLE_PATHS, ...BATCH_PATHS, WEBHOOK_PATH];
const AUTH = { authorization: basic(WRITE_KEY) };
const encoder = new TextEncoder();

function postRaw(path: string, body: BodyInit | null, headers: Record<string, string> = {}): Promise<Response> {
  return send(path, { method: "POST", headers: { ...AUTH, ...headers }, body });
}

function collected(a: Answer): CollectResponse {
  expect(a.status, JSON.stringify(a.body)).toBe(200);
  return a.body as CollectResponse;
}

async function snapshotOf(userId: string): Promise<SessionSnapshot | null> {
  const res = await adminGet(`/v1/admin/users/${encodeURIComponent(userId)}?kind=user`);
  if (res.status === 404) return null;
  expect(res.status).toBe(200);
  return (await res.json()) as SessionSnapshot;
}

async function deadLettersOf(requestId: string | null): Promise<DeadLetter[]> {
  const res = await adminGet("/v1/admin/dead-letters?source=local&limit=1000");
  expect(res.status).toBe(200);
  const { deadLetters } = (await res.json()) as { deadLetters: DeadLetter[] };
  return deadLetters.filter((d) => d.requestId === requestId).sort((a, b) => a.index - b.index);
}

const NOW = Date.now();
const { validEvent, invalidEvent } = eventArbitraries({
  userId: fc.uuid(),
  id: fc.uuid(),
  types: ["track", "page", "screen", "identify", "group"],
  now: NOW,
});

const contentType = fc.constantFrom(
  "application/json",
  "text/plain;charset=UTF-8",
  "application/octet-stream",
  "application/x-www-form-urlencoded",
  "text/html",
  "multipart/form-data; boundary=x",
  "",
);

/** Bodies a client may send: events, batches (valid, invalid, hostile), JSON of anything, malformed JSON, bytes. */
const body = fc.oneof(
  validEvent.map((e) => JSON.stringify(e)),
  fc
    .array(
      fc.oneof(
        validEvent,
        invalidEvent.map((i) => i.raw),
      ),
      { minLength: 1, maxLength: 5 },
    )
    .map((batch) => JSON.stringify({ batch, writeKey: WRITE_KEY })),
  hostileJson.map((v) => JSON.stringify(v) ?? "null"),
  malformedJsonText,
  fc.uint8Array({ maxLength: 100 }),
);

const authHeader = fc.oneof(
  { weight: 4, arbitrary: fc.constant(basic(WRITE_KEY)) },
  {
    weight: 1,
    arbitrary: fc.oneof(
      fc.constantFrom("Basic", "Basic !!!", `Basic ${btoa("nope:")}`, "Bearer local-write-key", basic(WRITE_KEY, "pw")),
      hostileString.filter((s) => /^[\x20-\x7e]*$/.test(s)),
    ),
  },
  { weight: 1, arbitrary: fc.constant(null) },
);

describe("any request on every collection path", () => {
  it("answers a 2xx or a machine-readable 4xx, never a 5xx", async () => {
    const seen = new Set<number>();
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...PATHS),
        body,
        contentType,
        fc.constantFrom("", "gzip", "br", "identity"),
        fc.boolean(),
        authHeader,
        fc.constantFrom("POST", "POST", "POST", "GET", "PUT", "OPTIONS"),
        async (path, payload, type, encoding, compress, auth, method) => {
          const bytes = typeof payload === "string" ? encoder.encode(payload) : payload;
          const headers: Record<string, string> = { "content-type": type, origin: "https://shop.example" };
          if (auth !== null) headers.authorization = auth;
          if (encoding) headers["content-encoding"] = encoding;
          const wire = compress && encoding === "gzip" ? await gzip(bytes) : bytes;
          const init: RequestInit = { method, headers };
          if (method !== "GET") init.body = wire;
          const a = await answered(send(`${path}?writeKey=${WRITE_KEY}`, init), `${method} ${path}`);
          seen.add(a.status);
          if (method === "POST" && a.status === 200) {
            const r = a.body as CollectResponse;
            expect(r.success).toBe(true);
            expect(r.accepted + r.duplicates + (r.suppressed ?? 0) + r.rejected.length).toBeGreaterThan(0);
          }
        },
      ),
      { seed: 0x5eed_3101, numRuns: 100 },
    );
    // The runs reached stored events as well as each kind of refusal.
    expect([...seen]).toEqual(expect.arrayContaining([200, 204, 400, 401, 405, 415]));
  });

  it("refuses malformed JSON with 400 invalid_json on every path", async () => {
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...PATHS), malformedJsonText, fc.boolean(), async (path, text, compress) => {
        const headers: Record<string, string> = { "content-type": "application/json" };
        if (compress) headers["content-encoding"] = "gzip";
        const a = await answered(postRaw(path, compress ? await gzip(text) : text, headers), path);
        expect(codeOf(a)).toBe("invalid_json");
      }),
      { seed: 0x5eed_3102, numRuns: 40 },
    );
  });
});

describe("hostile bodies", () => {
  const deepEvent = (kind: "array" | "object") =>
    `{"type":"track","userId":"${uid("deep")}","event":"E","properties":{"a":${deepJsonText(10_000, kind)}}}`;

  it("refuses 10,000-deep nesting with 400 as a request's one event; in a batch, rejects that event only", async () => {
    for (const kind of ["array", "object"] as const) {
      const bodies: Array<[string, string]> = [
        ["/v1/track", deepJsonText(10_000, kind)],
        ["/v1/track", deepEvent(kind)],
        ["/v1/batch", `{"batch":[],"context":${deepJsonText(10_000, kind)}}`],
        ["/v1/webhook", deepEvent(kind)],
      ];
      for (const [path, text] of bodies) {
        const a = await answered(postRaw(path, text, { "content-type": "application/json" }), `${path} ${kind}`);
        expect(codeOf(a)).toBe("invalid_json");
      }
      const good = JSON.stringify({ type: "track", userId: uid("good"), event: "E" });
      const batch = `{"batch":[${deepEvent(kind)},${good},${deepJsonText(10_000, kind)}]}`;
      const a = await answered(postRaw("/v1/batch", batch, { "content-type": "application/json" }), `batch ${kind}`);
      const result = collected(a);
      expect(result.accepted).toBe(1);
      expect(result.rejected.map((r) => [r.index, r.code])).toEqual([
        [0, "event_too_deep"],
        [2, kind === "object" ? "event_too_deep" : "invalid_event"],
      ]);
    }
  });

  it("refuses huge arrays: a batch over 2,500 events with 413, an event holding 100,000 numbers as too large", async () => {
    const many = await answered(postRaw("/v1/batch", JSON.stringify({ batch: Array(MAX_BATCH_EVENTS + 1).fill({}) })));
    expect(codeOf(many)).toBe("payload_too_large");
    expect((many.body as { error: Record<string, unknown> }).error).toMatchObject({
      limit: MAX_BATCH_EVENTS,
      unit: "events",
    });
    const numbers = Array.from({ length: 100_000 }, (_, i) => i % 10);
    const userId = uid("huge");
    const event = { type: "track", userId, event: "E", properties: { numbers } };
    expect(codeOf(await answered(postRaw("/v1/track", JSON.stringify(event))))).toBe("payload_too_large");
    const inBatch = collected(
      await answered(postRaw("/v1/batch", JSON.stringify({ batch: [event, { ...event, properties: {} }] }))),
    );
    expect(inBatch.rejected.map((r) => [r.index, r.code])).toEqual([[0, "event_too_large"]]);
    expect(inBatch.accepted).toBe(1);
  });

  it("refuses a 600 KB body with 413 and the limit, plain or gzip'd", async () => {
    const text = JSON.stringify({ batch: [{ type: "track", userId: "u", event: "E", pad: "x".repeat(600_000) }] });
    for (const compress of [false, true]) {
      const headers: Record<string, string> = compress ? { "content-encoding": "gzip" } : {};
      const a = await answered(postRaw("/v1/batch", compress ? await gzip(text) : text, headers));
      expect(codeOf(a)).toBe("payload_too_large");
      expect((a.body as { error: Record<string, unknown> }).error).toMatchObject({
        limit: MAX_REQUEST_BYTES,
        unit: "bytes",
      });
    }
  });

  it("stops a gzip bomb (20 KB that inflates to 20 MB) at the cap: 413 with atLeast", async () => {
    const bomb = await gzip(`{"batch":[{"pad":"${"0".repeat(20_000_000)}"}]}`);
    expect(bomb.byteLength).toBeLessThan(100_000);
    const a = await answered(postRaw("/v1/batch", bomb, { "content-encoding": "gzip" }));
    expect(codeOf(a)).toBe("payload_too_large");
    expect((a.body as { error: Record<string, unknown> }).error).toMatchObject({
      limit: MAX_REQUEST_BYTES,
      unit: "bytes",
      atLeast: true,
    });
  });

  it("reads a body that arrives slowly, plain or gzip'd, and stores its events", async () => {
    for (const compress of [false, true]) {
      const userId = uid("slow");
      const batch = Array.from({ length: 6 }, (_, i) => ({
        type: "track",
        userId,
        event: "Product Viewed",
        messageId: `${userId}-${i}`,
        properties: { product_id: `${userId}-p${i}` },
      }));
      const plain = encoder.encode(JSON.stringify({ batch }));
      const wire = compress ? await gzip(plain) : plain;
      const headers: Record<string, string> = { "content-type": "text/plain" };
      if (compress) headers["content-encoding"] = "gzip";
      const r = collected(await answered(postRaw("/v1/batch", slowBody(wire, 8, 40), headers)));
      expect(r).toMatchObject({ accepted: 6, duplicates: 0, rejected: [] });
      const snapshot = await snapshotOf(userId);
      expect(snapshot?.counters.events).toBe(6);
      expect(new Set(snapshot?.viewed)).toEqual(new Set(batch.map((e) => e.properties.product_id)));
    }
  });

  it("refuses a slow body over the cap with 413 once the cap is passed", async () => {
    const wire = encoder.encode(`{"batch":[{"pad":"${"y".repeat(MAX_REQUEST_BYTES)}"}]}`);
    const a = await answered(postRaw("/v1/batch", slowBody(wire, 20, 10)));
    expect(codeOf(a)).toBe("payload_too_large");
  });

  it("answers non-JSON bodies of non-JSON types with 415, of JSON-carrying types with 400", async () => {
    const cases: Array<[string, string, string]> = [
      ["application/x-www-form-urlencoded", "type=track&userId=u", "unsupported_media_type"],
      ["text/html", "<html><body>hi</body></html>", "unsupported_media_type"],
      ["multipart/form-data; boundary=x", "--x\r\n\r\n--x--", "unsupported_media_type"],
      ["application/json", "type=track", "invalid_json"],
      ["text/plain", "<html>", "invalid_json"],
    ];
    for (const [type, text, code] of cases) {
      for (const path of ["/v1/track", "/v1/batch", "/v1/webhook"]) {
        expect(codeOf(await answered(postRaw(path, text, { "content-type": type }), `${type} ${path}`))).toBe(code);
      }
    }
  });

  it("refuses a userId with an unpaired surrogate, so it cannot take over the session of the id it collides with", async () => {
    // Found by a probe: "…\ud800" and "…\ufffd" named one session object; the second answered 503.
    const base = uid("lone");
    const event = (userId: string) =>
      JSON.stringify({
        type: "track",
        userId,
        event: "Product Viewed",
        messageId: crypto.randomUUID(),
        properties: { product_id: `${base}-p` },
      });
    const lone = collected(await answered(postRaw("/v1/batch", `{"batch":[${event(`${base}\ud800`)}]}`)));
    expect(lone.rejected.map((r) => r.code)).toEqual(["invalid_id"]);
    const replacement = collected(await answered(postRaw("/v1/track", event(`${base}\ufffd`))));
    expect(replacement).toMatchObject({ accepted: 1, rejected: [] });
    const snapshot = await snapshotOf(`${base}\ufffd`);
    expect(snapshot?.counters.events).toBe(1);
  });

  it("keeps `__proto__` keys as plain data: stored, streamed, and nothing polluted", async () => {
    const userId = uid("proto");
    const messageId = `${userId}-m`;
    const text = `{"batch":[{"type":"track","userId":"${userId}","event":"Product Viewed","messageId":"${messageId}",
      "__proto__":{"polluted":"event"},"constructor":{"prototype":{"polluted":"ctor"}},
      "properties":{"product_id":"${userId}-p","__proto__":{"polluted":"properties"}},
      "context":{"__proto__":{"polluted":"context"}}}],
      "context":{"__proto__":{"polluted":"batch"}},"__proto__":{"polluted":"envelope"}}`;
    const r = collected(await answered(postRaw("/v1/batch", text)));
    expect(r).toMatchObject({ accepted: 1, rejected: [] });
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    expect((await snapshotOf(userId))?.viewed).toEqual([`${userId}-p`]);
    // Read back from the warehouse stream: the key arrived as an own property, not as a prototype.
    const streamed = await streamedEvent(messageId, `u:${userId}`);
    expect(Object.hasOwn(streamed.properties, "__proto__")).toBe(true);
    expect(Object.getOwnPropertyDescriptor(streamed.properties, "__proto__")?.value).toEqual({
      polluted: "properties",
    });
    expect(Object.hasOwn(streamed.context, "__proto__")).toBe(true);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });
});

describe("a mixed batch of valid and invalid events", () => {
  /** Three users' events, each valid or invalid by one mutation (with its expected code). */
  const mixedBatch = fc
    .array(
      fc.oneof(
        fc.tuple(fc.nat({ max: 2 }), validEvent).map(([user, raw]) => ({ user, raw: raw as unknown, code: null })),
        fc.tuple(fc.nat({ max: 2 }), invalidEvent).map(([user, { raw, code }]) => ({ user, raw, code })),
      ),
      { minLength: 1, maxLength: 20 },
    )
    .filter((items) => jsonSize({ batch: items.map((i) => i.raw) }) < MAX_REQUEST_BYTES - 10_000);

  it("rejects exactly the invalid indexes, stores every valid event and dead-letters every invalid one", async () => {
    await fc.assert(
      fc.asyncProperty(mixedBatch, fc.constantFrom(...BATCH_PATHS), async (items, path) => {
        // Fresh users and ids per run: each run reads back only what it sent.
        const tag = crypto.randomUUID();
        const users = [0, 1, 2].map((u) => `${tag}-u${u}`);
        const batch = items.map(({ user, raw, code }, i): unknown => {
          if (typeof raw !== "object" || raw === null || Array.isArray(raw)) return raw;
          const e: WireEvent = { ...(raw as WireEvent) };
          // Ids a mutation made invalid (too long, an unpaired surrogate) stay as they are.
          if (typeof e.userId === "string" && e.userId.length < 100 && survivesUtf8(e.userId)) e.userId = users[user];
          if (code !== null) return e;
          // Distinct ids within the run: a client's, or one derived from distinct content.
          if (e.messageId !== undefined) e.messageId = `${tag}-m${i}`;
          else e.nonce = i;
          if (e.type === "track" && i % 2 === 0) {
            e.event = "Product Viewed";
            e.properties = { ...(e.properties as object), product_id: `${tag}-p${i}` };
          }
          return e;
        });
        const res = await postRaw(path, JSON.stringify({ batch }), { "content-type": "application/json" });
        const requestId = res.headers.get("x-request-id");
        const r = collected(await answered(res, path));

        const invalid = items.flatMap(({ code }, i) => (code === null ? [] : [[i, code]]));
        expect(r.rejected.map((x) => [x.index, x.code])).toEqual(invalid);
        const valid = items.flatMap(({ code, user }, i) => (code === null ? [{ i, user }] : []));
        expect(r.accepted).toBe(valid.length);
        expect(r.duplicates).toBe(0);

        // Every valid event is in its user's session object …
        for (const [u, userId] of users.entries()) {
          const mine = valid.filter((v) => v.user === u);
          const snapshot = await snapshotOf(userId as string);
          expect(snapshot?.counters.events ?? 0, userId).toBe(mine.length);
          const views = mine.flatMap(({ i }) => {
            const e = batch[i] as WireEvent;
            return e.event === "Product Viewed" ? [`${tag}-p${i}`] : [];
          });
          for (const view of views) expect(snapshot?.viewed).toContain(view);
        }
        // … and every invalid one in the dead-letter store, under this request's id.
        const stored = await deadLettersOf(requestId);
        expect(stored.map((d) => [d.index, d.code])).toEqual(invalid);
      }),
      { seed: 0x5eed_3201, numRuns: 30 },
    );
  });
});
