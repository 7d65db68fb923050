// Properties of the collection parser for arbitrary input (fast-check, fixed seeds): body decoding under the byte
// cap, the envelope, per-event validation and normalisation, dead-letter entries and the JSON helpers. Bad input
// is a value or an ApiError with a 4xx status — never another exception — and nothing reaches a shared prototype.
import fc from "fast-check";
import { describe, expect, it, vi } from "vitest";
import { readBodyBytes, readJsonBody } from "../../src/collect/body.ts";
import { deadLetterEntry } from "../../src/collect/dead-letter-entry.ts";
import { type Endpoint, readEnvelope } from "../../src/collect/envelope.ts";
import { EVENT_TYPES, type EventType, userKey } from "../../src/collect/event.ts";
import { canonicalJson, jsonDepthExceeds, jsonSize, truncateUtf8, utf8Length } from "../../src/collect/json.ts";
import {
  MAX_BATCH_EVENTS,
  MAX_DEAD_LETTER_RAW_BYTES,
  MAX_EVENT_AGE_MS,
  MAX_FUTURE_SKEW_MS,
  MAX_ID_LENGTH,
  MAX_JSON_DEPTH,
  MAX_REQUEST_BYTES,
} from "../../src/collect/limits.ts";
import { DERIVED_MESSAGE_ID_PREFIX } from "../../src/collect/message-id.ts";
import { type NormalizeContext, normalizeEvent, REJECTION_CODES } from "../../src/collect/normalize.ts";
import { basicAuthUser, resolveSource } from "../../src/collect/sources.ts";
import { parseIsoTimestamp } from "../../src/collect/timestamps.ts";
import { loadConfig } from "../../src/config.ts";
import {
  asGivenOrParsed,
  checkPrototypesAfterAll,
  deepJsonText,
  hostileJson,
  hostileKey,
  hostileString,
  hostileValue,
  jsonOf,
  malformedJsonText,
  objectWith,
  survivesUtf8,
  unicodeString,
  valueOr4xx,
} from "../support/fuzz.ts";
import { eventArbitraries } from "../support/fuzz-events.ts";

// Shrinking a counterexample can take a while on a loaded machine.
vi.setConfig({ testTimeout: 60_000 });

checkPrototypesAfterAll();

const NOW = Date.UTC(2026, 10, 26, 12, 0, 0);
const ctx = (extra: Partial<NormalizeContext> = {}): NormalizeContext => ({
  sourceId: "shop",
  receivedAt: NOW,
  ip: "203.0.113.9",
  ...extra,
});

const encoder = new TextEncoder();

async function gzipped(bytes: Uint8Array): Promise<Uint8Array> {
  const stream = new Blob([bytes as Uint8Array<ArrayBuffer>]).stream().pipeThrough(new CompressionStream("gzip"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

function request(body: BodyInit | null, headers: Record<string, string>): Request {
  return new Request("http://lastmile.test/v1/batch", {
    method: "POST",
    headers,
    body,
    ...(body instanceof ReadableStream ? { duplex: "half" } : {}),
  } as RequestInit);
}

/** A body that arrives in `chunks`, each after a short pause (a slow client). */
function slowStream(chunks: Uint8Array[], pauseMs: number): ReadableStream<Uint8Array> {
  let i = 0;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      await new Promise((r) => setTimeout(r, pauseMs));
      const chunk = chunks[i++];
      if (chunk) controller.enqueue(chunk);
      else controller.close();
    },
  });
}

const contentType = fc.oneof(
  fc.constantFrom(
    "application/json",
    "application/json; charset=utf-8",
    "text/plain",
    "text/plain;charset=UTF-8",
    "application/octet-stream",
    "application/vnd.segment+json",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "text/html",
    "APPLICATION/JSON",
    "",
  ),
  fc.string({ maxLength: 30 }).filter((s) => /^[\x20-\x7e]*$/.test(s)),
);

/** Bytes a client might send: JSON of hostile values, malformed JSON, random bytes, invalid UTF-8. */
const bodyBytes = fc.oneof(
  hostileValue.map((v) => encoder.encode(JSON.stringify(v) ?? "null")),
  malformedJsonText.map((t) => encoder.encode(t)),
  fc.uint8Array({ maxLength: 200 }),
  fc.constantFrom(
    new Uint8Array([0xff, 0xfe, 0x7b, 0x7d]),
    new Uint8Array([0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0xc3, 0x22, 0x7d]),
    new Uint8Array([0xef, 0xbb, 0xbf, 0x7b, 0x7d]),
    new Uint8Array([0x1f, 0x8b, 0x08, 0x00]),
  ),
);

describe("readJsonBody: any bytes, any Content-Type, any Content-Encoding", () => {
  it("returns the parsed JSON or a 4xx ApiError, never another exception", async () => {
    await fc.assert(
      fc.asyncProperty(
        bodyBytes,
        contentType,
        fc.constantFrom("", "identity", "gzip", "x-gzip", "GZIP", "br", "deflate", "gzip, br"),
        fc.boolean(),
        async (bytes, type, encoding, compress) => {
          const wire = compress && encoding.toLowerCase().includes("gzip") ? await gzipped(bytes) : bytes;
          const headers: Record<string, string> = { "content-type": type };
          if (encoding) headers["content-encoding"] = encoding;
          const result = await valueOr4xx(() => readJsonBody(request(wire, headers), MAX_REQUEST_BYTES));
          if (result.ok) {
            // What it returns is exactly what the bytes say (decompressed when they were gzip).
            expect(result.value.value).toEqual(JSON.parse(new TextDecoder().decode(bytes)));
            expect(result.value.bytes).toBe(bytes.byteLength);
          } else {
            expect([400, 413, 415]).toContain(result.error.status);
          }
        },
      ),
      { seed: 0x5eed_0101, numRuns: 400 },
    );
  });

  it("refuses a body over the cap with 413 whatever its encoding, before or while reading it", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 4096 }),
        fc.integer({ min: 1, max: 3 }),
        fc.boolean(),
        fc.option(fc.constantFrom("abc", "-1", "1e12", "99999999999999999999", ""), { nil: undefined }),
        async (limit, factor, compress, declared) => {
          const bytes = encoder.encode(JSON.stringify({ pad: "x".repeat(limit * factor) }));
          const headers: Record<string, string> = { "content-type": "application/json" };
          if (compress) headers["content-encoding"] = "gzip";
          if (declared !== undefined) headers["content-length"] = declared;
          const wire = compress ? await gzipped(bytes) : bytes;
          const result = await valueOr4xx(() => readJsonBody(request(wire, headers), limit));
          expect(result.ok).toBe(false);
          if (!result.ok) {
            expect(result.error.code).toBe("payload_too_large");
            expect(result.error.details).toMatchObject({ limit, unit: "bytes" });
          }
        },
      ),
      { seed: 0x5eed_0102, numRuns: 150 },
    );
  });

  it("stops a gzip bomb at the cap: 413 with atLeast, the rest of the stream never inflated", async () => {
    const zeros = new Uint8Array(8 * 1024 * 1024);
    const bomb = await gzipped(zeros);
    expect(bomb.byteLength).toBeLessThan(MAX_REQUEST_BYTES / 20);
    const result = await valueOr4xx(() =>
      readJsonBody(
        request(bomb, { "content-type": "application/json", "content-encoding": "gzip" }),
        MAX_REQUEST_BYTES,
      ),
    );
    expect(result.ok).toBe(false);
    if (!result.ok) {
      expect(result.error.code).toBe("payload_too_large");
      expect(result.error.details).toMatchObject({ limit: MAX_REQUEST_BYTES, unit: "bytes", atLeast: true });
      // The reader stopped within one inflated chunk past the cap.
      expect(result.error.details?.actual as number).toBeLessThan(MAX_REQUEST_BYTES + 1024 * 1024);
    }
  });

  it("reads a body that arrives slowly in random pieces, gzip'd or not, exactly as sent", async () => {
    await fc.assert(
      fc.asyncProperty(hostileJson, fc.integer({ min: 1, max: 6 }), fc.boolean(), async (value, pieces, compress) => {
        const text = JSON.stringify(value) ?? "null";
        const plain = encoder.encode(text);
        const wire = compress ? await gzipped(plain) : plain;
        const size = Math.ceil(wire.byteLength / pieces);
        const chunks = Array.from({ length: pieces }, (_, i) => wire.slice(i * size, (i + 1) * size));
        const headers: Record<string, string> = { "content-type": "text/plain" };
        if (compress) headers["content-encoding"] = "gzip";
        const body = await readJsonBody(request(slowStream(chunks, 2), headers), MAX_REQUEST_BYTES);
        expect(body.value).toEqual(value);
      }),
      { seed: 0x5eed_0103, numRuns: 40 },
    );
  });

  it("turns a truncated or corrupt gzip stream into 400 bad_request", async () => {
    await fc.assert(
      fc.asyncProperty(hostileJson, fc.nat(), fc.nat({ max: 255 }), async (value, at, flip) => {
        const wire = await gzipped(encoder.encode(JSON.stringify(value) ?? "null"));
        const broken = wire.slice(0, Math.max(10, at % wire.byteLength));
        const at5 = broken.byteLength - 5;
        if (broken.byteLength === wire.byteLength) broken[at5] = (broken[at5] ?? 0) ^ (flip | 1);
        const result = await valueOr4xx(() =>
          readBodyBytes(request(broken, { "content-encoding": "gzip" }), MAX_REQUEST_BYTES),
        );
        if (!result.ok) expect(result.error.code).toBe("bad_request");
      }),
      { seed: 0x5eed_0104, numRuns: 100 },
    );
  });
});

const ENDPOINTS: Endpoint[] = [
  ...EVENT_TYPES.map((type): Endpoint => ({ kind: "single", type })),
  { kind: "batch" },
  { kind: "webhook" },
];

describe("readEnvelope: any parsed body", () => {
  it("yields the events to validate or a 4xx ApiError", async () => {
    const envelopeLike = objectWith({
      batch: fc.oneof(fc.array(hostileJson, { maxLength: 5 }), hostileJson),
      context: hostileJson,
      integrations: hostileJson,
      sentAt: fc.oneof(hostileString, hostileJson),
      writeKey: hostileJson,
    });
    await fc.assert(
      fc.asyncProperty(fc.oneof(hostileValue, envelopeLike), fc.constantFrom(...ENDPOINTS), async (body, endpoint) => {
        const result = await valueOr4xx(() => readEnvelope(body, endpoint));
        if (!result.ok) return;
        const { items, defaults } = result.value;
        if (endpoint.kind === "batch") {
          expect(items).toBe((body as { batch: unknown[] }).batch);
          expect(items.length).toBeGreaterThan(0);
          expect(items.length).toBeLessThanOrEqual(MAX_BATCH_EVENTS);
        } else expect(items).toEqual([body]);
        if (defaults.sentAt !== undefined) expect(Number.isFinite(defaults.sentAt)).toBe(true);
      }),
      { seed: 0x5eed_0201, numRuns: 500 },
    );
  });
});

// ---- events ----

/** Ids as clients send them: any well-formed text without NUL (an unpaired surrogate or a NUL is an invalid id). */
const id = fc.oneof(
  fc.string({ minLength: 1, maxLength: 40 }).filter((s) => !s.includes("\u0000")),
  unicodeString(20).filter((s) => s.length > 0 && survivesUtf8(s) && !s.includes("\u0000")),
  fc.integer().map(String),
);
const isoTime = fc
  .integer({ min: NOW - 400 * 86_400_000, max: NOW + 400 * 86_400_000 })
  .map((ms) => new Date(ms).toISOString());
const { validEvent, invalidEvent } = eventArbitraries({ userId: id, id, now: NOW });

const TYPE_SET = new Set<string>(EVENT_TYPES);

describe("normalizeEvent: any item of a batch", () => {
  it("never throws: a canonical event or a rejection with a documented code and the item's index", async () => {
    const eventLike = objectWith({
      type: fc.oneof(fc.constantFrom(...EVENT_TYPES), hostileJson),
      userId: fc.oneof(id, hostileJson),
      anonymousId: fc.oneof(id, hostileJson),
      messageId: fc.oneof(id, hostileJson),
      event: fc.oneof(hostileString, hostileJson),
      previousId: fc.oneof(id, hostileJson),
      groupId: fc.oneof(id, hostileJson),
      properties: hostileJson,
      traits: hostileJson,
      context: hostileJson,
      integrations: hostileJson,
      timestamp: fc.oneof(isoTime, hostileString, hostileJson),
      originalTimestamp: fc.oneof(isoTime, hostileJson),
      sentAt: fc.oneof(isoTime, hostileJson),
    });
    await fc.assert(
      fc.asyncProperty(
        asGivenOrParsed(eventLike),
        fc.nat({ max: MAX_BATCH_EVENTS }),
        fc.option(fc.constantFrom(...EVENT_TYPES), { nil: undefined }),
        fc.option(fc.record({ context: fc.dictionary(hostileKey, hostileJson, { maxKeys: 3 }) }), { nil: undefined }),
        async (raw, index, pathType, defaults) => {
          const extra: Partial<NormalizeContext> = {};
          if (pathType) extra.pathType = pathType;
          if (defaults) extra.defaults = defaults;
          const result = await normalizeEvent(raw, index, ctx(extra));
          if (!result.ok) {
            expect(result.rejection.index).toBe(index);
            expect(REJECTION_CODES).toContain(result.rejection.code);
            const messageId = result.rejection.messageId;
            if (messageId !== undefined) expect(messageId.length).toBeLessThanOrEqual(MAX_ID_LENGTH);
            return;
          }
          const e = result.event;
          expect(TYPE_SET.has(e.type)).toBe(true);
          if (pathType) expect(e.type).toBe(pathType);
          expect(() => userKey(e)).not.toThrow();
          for (const field of [e.userId, e.anonymousId, e.previousId, e.groupId, e.messageId]) {
            if (field === null) continue;
            expect(field.length).toBeLessThanOrEqual(MAX_ID_LENGTH);
            // Object names and SQLite text are UTF-8: an id must survive it unchanged.
            expect(survivesUtf8(field)).toBe(true);
          }
          expect(e.messageId.length).toBeGreaterThan(0);
          expect(e.messageId.length).toBeLessThanOrEqual(MAX_ID_LENGTH);
          const ms = Date.parse(e.timestamp);
          expect(ms).toBeGreaterThanOrEqual(NOW - MAX_EVENT_AGE_MS);
          expect(ms).toBeLessThanOrEqual(NOW + MAX_FUTURE_SKEW_MS);
          expect(e.receivedAt).toBe(new Date(NOW).toISOString());
          // Server-owned context: the request's IP and Lastmile's own flags only.
          expect(e.context.ip).toBe("203.0.113.9");
          const flags = e.context.lastmile as Record<string, unknown> | undefined;
          if (flags !== undefined) expect(Object.values(flags).every((v) => v === true)).toBe(true);
          for (const part of [e.properties, e.traits, e.context]) {
            expect(Object.getPrototypeOf(part)).toBe(Object.prototype);
          }
          // It travels by RPC (structured clone) and as JSON through the outbox.
          expect(structuredClone(e)).toEqual(e);
          expect(JSON.parse(JSON.stringify(e)).messageId).toBe(e.messageId);
        },
      ),
      { seed: 0x5eed_0301, numRuns: 600 },
    );
  });

  it("accepts a valid event on the batch path and keeps its messageId (derived when absent)", async () => {
    await fc.assert(
      fc.asyncProperty(validEvent, async (raw) => {
        const result = await normalizeEvent(raw, 0, ctx());
        if (!result.ok) throw new Error(`rejected ${result.rejection.code}: ${result.rejection.message}`);
        expect(result.event.type).toBe(raw.type);
        expect(result.event.userId).toBe(String(raw.userId));
        if (raw.messageId !== undefined) expect(result.event.messageId).toBe(String(raw.messageId));
        else expect(result.event.messageId).toMatch(new RegExp(`^${DERIVED_MESSAGE_ID_PREFIX}[0-9a-f]{32}$`));
        // The same content sent again (a retry, keys in another order) gets the same id.
        const again = await normalizeEvent(Object.fromEntries(Object.entries(raw).reverse()), 0, ctx());
        expect(again.ok && again.event.messageId).toBe(result.event.messageId);
      }),
      { seed: 0x5eed_0302, numRuns: 300 },
    );
  });

  it("derives different messageIds for events that differ in any field but sentAt and writeKey", async () => {
    await fc.assert(
      fc.asyncProperty(
        validEvent.map(({ messageId: _, ...e }) => e),
        hostileKey.filter((k) => !["sentAt", "writeKey", "messageId"].includes(k)),
        hostileJson,
        hostileJson,
        async (event, key, a, b) => {
          fc.pre(canonicalJson(a ?? null) !== canonicalJson(b ?? null));
          const variant = (value: unknown) => {
            const copy = { ...event };
            Object.defineProperty(copy, key, { value, enumerable: true, writable: true, configurable: true });
            return copy;
          };
          const [x, y] = await Promise.all([
            normalizeEvent(variant(a), 0, ctx()),
            normalizeEvent(variant(b), 0, ctx()),
          ]);
          if (x.ok && y.ok) expect(x.event.messageId).not.toBe(y.event.messageId);
        },
      ),
      {
        seed: 0x5eed_0303,
        numRuns: 300,
        // Found by this property: a `__proto__` field was assigned, not copied, and dropped out of the hash.
        examples: [
          [{ type: "track", userId: " ", event: " " }, "__proto__", "", false],
          [{ type: "track", userId: " ", event: " " }, "__proto__", 0, null],
        ],
      },
    );
  });

  it("gives a batch one verdict per item: exactly the invalid indexes rejected, each with its code", async () => {
    const item = fc.oneof(
      validEvent.map((raw) => ({ raw, code: null as string | null })),
      invalidEvent.map(({ raw, code }) => ({ raw, code: code as string | null })),
    );
    await fc.assert(
      fc.asyncProperty(fc.array(item, { minLength: 1, maxLength: 30 }), async (items) => {
        const results = await Promise.all(items.map(({ raw }, i) => normalizeEvent(raw, i, ctx())));
        expect(results).toHaveLength(items.length);
        const rejected = results.flatMap((r) => (r.ok ? [] : [[r.rejection.index, r.rejection.code]]));
        expect(rejected).toEqual(items.flatMap(({ code }, i) => (code === null ? [] : [[i, code]])));
      }),
      { seed: 0x5eed_0304, numRuns: 200 },
    );
  });

  it("refuses ids with an unpaired surrogate as invalid_id (they would name another id's session object)", async () => {
    // Found by a probe of the session objects: "zz\ud800" and "zz\ufffd" named one object, and the second user's
    // events failed with 503 ("this object belongs to …").
    for (const field of ["userId", "anonymousId", "messageId", "previousId"]) {
      for (const bad of ["zz\ud800", "zz\udc00", "\ud800\ud800", "a\udfffb"]) {
        const raw = { type: "alias", userId: "u", previousId: "p", [field]: bad };
        const result = await normalizeEvent(raw, 3, ctx());
        expect(!result.ok && [result.rejection.index, result.rejection.code]).toEqual([3, "invalid_id"]);
      }
    }
    // A surrogate pair is a character like any other.
    expect((await normalizeEvent({ type: "identify", userId: "zz\ud83d\ude00" }, 0, ctx())).ok).toBe(true);
  });

  it("takes the type from the path on single-event endpoints: a valid event of another type is that type", async () => {
    await fc.assert(
      fc.asyncProperty(
        validEvent,
        fc.constantFrom<EventType>("track", "page", "screen", "identify"),
        async (raw, t) => {
          const result = await normalizeEvent({ ...raw, event: "E" }, 0, ctx({ pathType: t }));
          expect(result.ok && result.event.type).toBe(t);
        },
      ),
      { seed: 0x5eed_0305, numRuns: 100 },
    );
  });
});

describe("dead-letter entries of any rejected item", () => {
  it("keep at most 8 KB of the raw JSON, a prefix of it, with its full size", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          hostileJson,
          invalidEvent.map((e) => jsonOf(e.raw)),
        ),
        fc.nat({ max: MAX_BATCH_EVENTS }),
        async (raw, index) => {
          const entry = deadLetterEntry(
            raw,
            { index, code: "invalid_event", message: "m" },
            { sourceId: "s", requestId: "r", receivedAt: new Date(NOW).toISOString() },
          );
          const json = JSON.stringify(raw);
          expect(utf8Length(entry.raw)).toBeLessThanOrEqual(MAX_DEAD_LETTER_RAW_BYTES);
          expect(json.startsWith(entry.raw)).toBe(true);
          expect(entry.rawBytes).toBe(jsonSize(raw));
          expect(entry.truncated).toBe(entry.raw !== json);
          expect(entry.index).toBe(index);
        },
      ),
      { seed: 0x5eed_0401, numRuns: 300 },
    );
  });
});

describe("JSON helpers", () => {
  it("utf8Length counts what TextEncoder writes, lone surrogates included", () => {
    fc.assert(
      fc.property(fc.oneof(unicodeString(200), hostileString), (s) => {
        expect(utf8Length(s)).toBe(encoder.encode(s).byteLength);
      }),
      { seed: 0x5eed_0501, numRuns: 500 },
    );
  });

  it("truncateUtf8 cuts on a character boundary, within the budget, to a prefix", () => {
    fc.assert(
      fc.property(unicodeString(200), fc.nat({ max: 300 }), (s, max) => {
        const cut = truncateUtf8(s, max);
        expect(utf8Length(cut)).toBeLessThanOrEqual(Math.max(max, utf8Length(s) <= max ? utf8Length(s) : 0));
        expect(encoder.encode(s).slice(0, encoder.encode(cut).byteLength)).toEqual(encoder.encode(cut));
      }),
      { seed: 0x5eed_0502, numRuns: 500 },
    );
  });

  it("canonicalJson is the same JSON with keys sorted: order-independent, parse-equal", () => {
    fc.assert(
      fc.property(hostileJson, (value) => {
        const text = canonicalJson(value);
        expect(JSON.parse(text)).toEqual(value === undefined ? null : value);
        const reversed = JSON.parse(JSON.stringify(value ?? null), (_k, v) =>
          v && typeof v === "object" && !Array.isArray(v) ? Object.fromEntries(Object.entries(v).reverse()) : v,
        );
        expect(canonicalJson(reversed)).toBe(text);
      }),
      { seed: 0x5eed_0503, numRuns: 400 },
    );
  });

  it("parseIsoTimestamp gives a finite time or nothing for any string", () => {
    fc.assert(
      fc.property(fc.oneof(hostileString, isoTime, fc.date({ noInvalidDate: false }).map(String)), (s) => {
        const ms = parseIsoTimestamp(s);
        if (ms !== undefined) expect(Number.isFinite(ms)).toBe(true);
      }),
      { seed: 0x5eed_0504, numRuns: 500 },
    );
  });
});

describe("write keys from any Authorization header, body or query", () => {
  const sources = loadConfig({
    LASTMILE_ENV: "test",
    SOURCES: JSON.stringify([
      { id: "web", writeKey: "wk-web" },
      { id: "off", writeKey: "wk-off", enabled: false },
    ]),
  } as unknown as Env).sources;

  it("resolve to a source, or 401 / 403", async () => {
    const header = fc.oneof(
      hostileString,
      fc.string().map((s) => `Basic ${s}`),
      fc.constantFrom("wk-web:", "wk-off:", "wk-web", ":wk-web", "wk-web:pw").map((s) => `Basic ${btoa(s)}`),
      fc.constantFrom("Basic", "basic ", "Basic ===", "Basic !!!!", "Bearer wk-web"),
    );
    await fc.assert(
      fc.asyncProperty(
        fc.option(header, { nil: null }),
        fc.option(fc.oneof(hostileString, fc.constantFrom("wk-web", "wk-off")), { nil: undefined }),
        fc.option(hostileString, { nil: undefined }),
        async (h, body, query) => {
          const basic = await valueOr4xx(() => basicAuthUser(h));
          if (!basic.ok) expect(basic.error.code).toBe("unauthorized");
          const result = await valueOr4xx(() => resolveSource(sources, { header: h, body, query }));
          if (result.ok) expect(result.value.id).toBe("web");
          else expect(["unauthorized", "forbidden"]).toContain(result.error.code);
        },
      ),
      { seed: 0x5eed_0601, numRuns: 500 },
    );
  });
});

/** The nesting depth of a parsed JSON value (recursive: for the shallow values of these properties). */
function depthOf(value: unknown): number {
  if (value === null || typeof value !== "object") return 0;
  return 1 + Math.max(0, ...Object.values(value).map(depthOf));
}

describe("nesting", () => {
  it("jsonDepthExceeds agrees with the depth of the parsed value (brackets and escapes inside strings are not depth)", () => {
    const tricky = fc.constantFrom('"[[[', '"}}}"', '\\"[', "\\", '{"a":[', "]]]");
    const value = fc.letrec<{ v: unknown }>((tie) => ({
      v: fc.oneof(
        { depthSize: "medium" },
        fc.oneof(tricky, hostileJson),
        fc.array(tie("v"), { maxLength: 3 }),
        fc.dictionary(fc.oneof(tricky, fc.string()), tie("v"), { maxKeys: 3 }),
      ),
    })).v;
    fc.assert(
      fc.property(value, fc.nat({ max: 12 }), (v, max) => {
        const text = JSON.stringify(v) ?? "null";
        expect(jsonDepthExceeds(JSON.parse(text), max)).toBe(depthOf(JSON.parse(text)) > max);
      }),
      { seed: 0x5eed_0701, numRuns: 1000 },
    );
  });

  it("accepts a one-event body nested exactly MAX_JSON_DEPTH deep and refuses one level more", async () => {
    for (const kind of ["array", "object"] as const) {
      const read = async (depth: number) => {
        const body = await readJsonBody(
          request(deepJsonText(depth, kind), { "content-type": "application/json" }),
          MAX_REQUEST_BYTES,
        );
        return valueOr4xx(() => readEnvelope(body.value, { kind: "single", type: "track" }));
      };
      // At the limit the depth passes (a bare array is then no event: validation_failed, not invalid_json).
      const at = await read(MAX_JSON_DEPTH);
      expect(at.ok ? "ok" : at.error.code).toBe(kind === "object" ? "ok" : "validation_failed");
      const over = await read(MAX_JSON_DEPTH + 1);
      expect(!over.ok && over.error.code).toBe("invalid_json");
    }
  });

  it("refuses bodies nested deeper than the limit before anything walks them; in a batch, that event only", async () => {
    // 80,000 levels (under the 500 KB cap as objects): far past what unbounded recursion over the value survives.
    for (const kind of ["array", "object"] as const) {
      const text = deepJsonText(80_000, kind);
      const body = await readJsonBody(request(text, { "content-type": "application/json" }), MAX_REQUEST_BYTES);
      const single = await valueOr4xx(() => readEnvelope(body.value, { kind: "single", type: "track" }));
      expect(!single.ok && single.error.code).toBe("invalid_json");
      // The same depth as one event of a batch: rejected on its own, and its dead letter keeps what can be kept.
      const event = { type: "track", userId: "u", event: "E", properties: { a: body.value } };
      const result = await normalizeEvent(event, 3, ctx());
      expect(result.ok ? null : result.rejection).toMatchObject({ index: 3, code: "event_too_deep" });
      if (!result.ok) {
        const letter = deadLetterEntry(event, result.rejection, { sourceId: "s", requestId: "r", receivedAt: "t" });
        expect(letter.truncated).toBe(true);
        expect(letter.raw).toContain('"userId":"u"');
        expect(letter.raw).toContain(`[nested deeper than ${MAX_JSON_DEPTH} levels]`);
      }
    }
  });
});
