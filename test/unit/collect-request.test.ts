// The request-level pieces of collection: body reading, envelope, write keys, CORS, admin key matching, config.
import { describe, expect, it } from "vitest";
import { bearerToken, matchesAnyKey } from "../../src/auth.ts";
import { readJsonBody } from "../../src/collect/body.ts";
import { anySourceAllowsOrigin, corsPreflightHeaders, corsResponseHeaders } from "../../src/collect/cors.ts";
import { deadLetterEntry } from "../../src/collect/dead-letter-entry.ts";
import { bodyWriteKey, readEnvelope } from "../../src/collect/envelope.ts";
import { jsonSize } from "../../src/collect/json.ts";
import { MAX_BATCH_EVENTS, MAX_DEAD_LETTER_RAW_BYTES } from "../../src/collect/limits.ts";
import { basicAuthUser, resolveSource } from "../../src/collect/sources.ts";
import { ConfigError, LOCAL_SOURCE, parseSources } from "../../src/config.ts";
import { ApiError } from "../../src/errors.ts";
import { EXPOSURE_SOURCE } from "../../src/experiments/exposure.ts";

/** Gzip with the web-standard CompressionStream (the same API the Worker decompresses with). */
async function gzip(data: string | Uint8Array): Promise<Uint8Array> {
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  const stream = new Blob([bytes]).stream().pipeThrough(new CompressionStream("gzip"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

function request(body: BodyInit | null, headers: Record<string, string> = {}): Request {
  return new Request("http://x/v1/batch", { method: "POST", body, headers });
}

async function refusal(promise: Promise<unknown> | (() => unknown)): Promise<ApiError> {
  try {
    await (typeof promise === "function" ? promise() : promise);
  } catch (error) {
    expect(error).toBeInstanceOf(ApiError);
    return error as ApiError;
  }
  throw new Error("expected an ApiError");
}

describe("readJsonBody", () => {
  it("parses JSON whatever the content type says, if it is JSON", async () => {
    for (const type of ["application/json", "text/plain;charset=UTF-8", "application/vnd.x+json", ""]) {
      const body = await readJsonBody(request('{"a":1}', type ? { "content-type": type } : {}), 100);
      expect(body).toEqual({ value: { a: 1 }, bytes: 7 });
    }
    // A form content type is fine too when the body still is JSON.
    expect(
      (await readJsonBody(request('{"a":1}', { "content-type": "application/x-www-form-urlencoded" }), 100)).value,
    ).toEqual({ a: 1 });
  });

  it("answers invalid_json for JSON content types and 415 for others", async () => {
    expect((await refusal(readJsonBody(request("{nope", { "content-type": "application/json" }), 100))).code).toBe(
      "invalid_json",
    );
    expect((await refusal(readJsonBody(request("{nope", { "content-type": "text/plain" }), 100))).code).toBe(
      "invalid_json",
    );
    expect(
      (await refusal(readJsonBody(request("a=1&b=2", { "content-type": "application/x-www-form-urlencoded" }), 100)))
        .code,
    ).toBe("unsupported_media_type");
    expect((await refusal(readJsonBody(request(""), 100))).code).toBe("invalid_json");
    expect((await refusal(readJsonBody(request(null), 100))).code).toBe("invalid_json");
    expect((await refusal(readJsonBody(request(new Uint8Array([0x7b, 0xff, 0x7d])), 100))).code).toBe("invalid_json");
  });

  it("takes bodies of exactly the limit and refuses one byte more", async () => {
    const exact = `"${"x".repeat(98)}"`;
    expect((await readJsonBody(request(exact), 100)).bytes).toBe(100);
    const over = await refusal(readJsonBody(request(`"${"x".repeat(99)}"`), 100));
    expect(over.code).toBe("payload_too_large");
    expect(over.details).toMatchObject({ limit: 100, actual: 101 });
  });

  it("refuses a declared Content-Length over the limit before reading", async () => {
    const r = new Request("http://x", { method: "POST", body: "{}", headers: { "content-length": "5000" } });
    const error = await refusal(readJsonBody(r, 100));
    expect(error.details).toEqual({ limit: 100, actual: 5000, unit: "bytes" });
  });

  it("decompresses gzip and caps the decompressed size", async () => {
    const json = JSON.stringify({ batch: [{ a: "x".repeat(50) }] });
    const body = await readJsonBody(request(await gzip(json), { "content-encoding": "gzip" }), 1000);
    expect(body.bytes).toBe(json.length);
    // 10 MB of zeros gzip to ~10 KB: stopped at the cap.
    const bomb = await gzip(new Uint8Array(10_000_000).fill(0x20));
    expect(bomb.length).toBeLessThan(20_000);
    const error = await refusal(readJsonBody(request(bomb, { "content-encoding": "gzip" }), 100_000));
    expect(error.code).toBe("payload_too_large");
    expect(error.details).toMatchObject({ limit: 100_000, atLeast: true });
  });

  it("refuses corrupt gzip and unknown encodings", async () => {
    expect((await refusal(readJsonBody(request("not gzip", { "content-encoding": "gzip" }), 100))).code).toBe(
      "bad_request",
    );
    expect((await refusal(readJsonBody(request("{}", { "content-encoding": "br" }), 100))).code).toBe(
      "unsupported_media_type",
    );
  });
});

describe("readEnvelope", () => {
  it("wraps single events and reads batches with their defaults", () => {
    expect(readEnvelope({ event: "e" }, { kind: "single", type: "track" })).toEqual({
      items: [{ event: "e" }],
      defaults: {},
    });
    const envelope = readEnvelope(
      { batch: [{ type: "page" }], context: { a: 1 }, integrations: { All: false }, sentAt: "2026-11-26T00:00:00Z" },
      { kind: "batch" },
    );
    expect(envelope.defaults).toEqual({
      context: { a: 1 },
      integrations: { All: false },
      sentAt: Date.UTC(2026, 10, 26),
      // {"a":1} and {"All":false}: what every event of the batch inherits, in JSON bytes.
      inheritedBytes: 7 + 13,
    });
  });

  it("refuses bodies that are not an envelope", () => {
    for (const body of [[], "x", null, {}, { batch: {} }, { batch: [], context: {} }]) {
      const error = (() => {
        try {
          readEnvelope(body, { kind: "batch" });
        } catch (e) {
          return e as ApiError;
        }
      })();
      expect(error?.code, JSON.stringify(body)).toBe("validation_failed");
    }
    expect(() => readEnvelope([{}], { kind: "webhook" })).toThrow(ApiError);
    expect(() => readEnvelope({ batch: [{}], context: [] }, { kind: "batch" })).toThrow(/context/);
    expect(() => readEnvelope({ batch: [{}], sentAt: "soon" }, { kind: "batch" })).toThrow(/sentAt/);
  });

  it("takes exactly MAX_BATCH_EVENTS and refuses one more with 413", async () => {
    expect(readEnvelope({ batch: new Array(MAX_BATCH_EVENTS).fill({}) }, { kind: "batch" }).items).toHaveLength(
      MAX_BATCH_EVENTS,
    );
    const error = await refusal(() =>
      readEnvelope({ batch: new Array(MAX_BATCH_EVENTS + 1).fill({}) }, { kind: "batch" }),
    );
    expect(error.status).toBe(413);
    expect(error.details).toEqual({ limit: MAX_BATCH_EVENTS, actual: MAX_BATCH_EVENTS + 1, unit: "events" });
  });

  it("finds a body's writeKey", () => {
    expect(bodyWriteKey({ writeKey: "k" })).toBe("k");
    expect(bodyWriteKey({ writeKey: 5 })).toBeUndefined();
    expect(bodyWriteKey([])).toBeUndefined();
  });
});

describe("write keys and sources", () => {
  const sources = parseSources(
    JSON.stringify([
      { id: "web", writeKey: "wk-web", allowedOrigins: ["https://shop.example"] },
      { id: "off", writeKey: "wk-off", enabled: false, allowedOrigins: ["https://old.example"] },
    ]),
    "production",
  );
  const basic = (user: string, password = "") => `Basic ${btoa(`${user}:${password}`)}`;

  it("reads the username of Basic auth and ignores the password", () => {
    expect(basicAuthUser(basic("wk-web"))).toBe("wk-web");
    expect(basicAuthUser(basic("wk-web", '""'))).toBe("wk-web");
    expect(basicAuthUser(`basic ${btoa("nocolon")}`)).toBe("nocolon");
    expect(basicAuthUser("Bearer abc")).toBeUndefined();
    expect(basicAuthUser(null)).toBeUndefined();
    expect(() => basicAuthUser("Basic %%%")).toThrow(ApiError);
  });

  it("prefers the header, then the body, then the query", () => {
    expect(resolveSource(sources, { header: basic("wk-web"), body: "wk-nope" }).id).toBe("web");
    expect(resolveSource(sources, { header: null, body: "wk-web", query: "wk-nope" }).id).toBe("web");
    expect(resolveSource(sources, { header: null, query: "wk-web" }).id).toBe("web");
  });

  it("answers 401 for missing and unknown keys, 403 for disabled sources", async () => {
    const missing = await refusal(() => resolveSource(sources, { header: null }));
    expect(missing.code).toBe("unauthorized");
    // A Basic challenge would make browsers show a login dialog on same-origin requests.
    expect(missing.headers?.["WWW-Authenticate"]).toBeUndefined();
    expect((await refusal(() => resolveSource(sources, { header: basic("wk-x") }))).code).toBe("unauthorized");
    expect((await refusal(() => resolveSource(sources, { header: basic("wk-off") }))).code).toBe("forbidden");
  });

  it("allows an origin for CORS only where an enabled source allows it", () => {
    const web = sources.byId.get("web");
    expect(corsResponseHeaders("https://shop.example", web, sources)).toMatchObject({
      "Access-Control-Allow-Origin": "https://shop.example",
    });
    expect(corsResponseHeaders("https://evil.example", web, sources)).toEqual({});
    expect(corsResponseHeaders(undefined, web, sources)).toEqual({});
    expect(anySourceAllowsOrigin(sources, "https://old.example")).toBe(false); // its source is disabled
    expect(corsPreflightHeaders("https://shop.example", sources)).toMatchObject({
      "Access-Control-Allow-Headers": "Content-Type, Authorization, Content-Encoding, AnonymousId, *",
    });
    expect(corsPreflightHeaders("https://evil.example", sources)).toEqual({});
    for (const headers of [
      corsResponseHeaders("https://shop.example", web, sources),
      corsPreflightHeaders("https://shop.example", sources),
    ]) {
      expect(Object.keys(headers)).not.toContain("Access-Control-Allow-Credentials");
    }
  });
});

describe("parseSources", () => {
  it("accepts the write keys Basic auth can carry, and each one authenticates as the header's username", () => {
    const keys = ["wk_3f9", "a b", "wk.~!#$%&'()*+,/;<=>?@[]^`{|}", "clé-ÿ"];
    const sources = parseSources(JSON.stringify(keys.map((writeKey, i) => ({ id: `s${i}`, writeKey }))), "production");
    keys.forEach((writeKey, i) => {
      expect(resolveSource(sources, { header: `Basic ${btoa(`${writeKey}:`)}` }).id, writeKey).toBe(`s${i}`);
    });
  });

  it("defaults to the local source in development and test only", () => {
    expect(parseSources(undefined, "development").list).toEqual([LOCAL_SOURCE]);
    expect(parseSources("", "test").byWriteKey.get("local-write-key")?.id).toBe("local");
    expect(parseSources(undefined, "production").list).toEqual([]);
  });

  it("fills defaults and normalises origins", () => {
    const [source] = parseSources(
      '[{"id":"a","writeKey":"k","allowedOrigins":["https://Shop.example/","*"]}]',
      "production",
    ).list;
    expect(source).toEqual({
      id: "a",
      writeKey: "k",
      enabled: true,
      allowedOrigins: ["https://shop.example", "*"],
      trustedServer: false,
    });
  });

  it("refuses malformed sources with messages that never contain the write key", () => {
    const cases: [string, RegExp][] = [
      ["nope", /not valid JSON/],
      ['{"id":"a"}', /array/],
      ['[{"id":"a b","writeKey":"secret-1"}]', /SOURCES\[0\]\.id/],
      ['[{"id":"a","writeKey":""}]', /writeKey/],
      ['[{"id":"a","writeKey":"secret-1","enabled":"yes"}]', /enabled/],
      ['[{"id":"a","writeKey":"secret-1","allowedOrigins":["https://x.example/path"]}]', /allowedOrigins\[0\]/],
      ['[{"id":"a","writeKey":"secret-1","allowedOrigins":"*"}]', /allowedOrigins must be an array/],
      ['[{"id":"a","writeKey":"secret-1","allowedOrigin":["*"]}]', /unknown field "allowedOrigin"/],
      ['[{"id":"a","writeKey":"secret-1"},{"id":"a","writeKey":"secret-2"}]', /used twice/],
      ['[{"id":"a","writeKey":"secret-1"},{"id":"b","writeKey":"secret-1"}]', /write key of source "a"/],
      // Basic auth cuts the username at the first colon: such a key could never authenticate in the header.
      [
        '[{"id":"a","writeKey":"secret-1"},{"id":"b","writeKey":"secret-:2"}]',
        /SOURCES\[1\]\.writeKey must not contain ":"/,
      ],
      ['[{"id":"a","writeKey":"secret-\\u0000"}]', /SOURCES\[0\]\.writeKey must not contain/],
      ['[{"id":"a","writeKey":"secret-\\t1"}]', /SOURCES\[0\]\.writeKey must not contain/],
      ['[{"id":"a","writeKey":"secret-\\u0085"}]', /SOURCES\[0\]\.writeKey must not contain/],
      ['[{"id":"a","writeKey":"secret-€"}]', /SOURCES\[0\]\.writeKey must not contain/],
    ];
    for (const [value, message] of cases) {
      let error: unknown;
      try {
        parseSources(value, "production");
      } catch (e) {
        error = e;
      }
      expect(error, value).toBeInstanceOf(ConfigError);
      expect((error as Error).message).toMatch(message);
      expect((error as Error).message).not.toMatch(/secret-/);
    }
  });

  it("refuses the exposures' source id: a client's Recommendations Shown events under it would count as exposures", () => {
    const value = JSON.stringify([
      { id: "web", writeKey: "secret-1" },
      { id: EXPOSURE_SOURCE, writeKey: "secret-2" },
    ]);
    expect(() => parseSources(value, "production")).toThrow(ConfigError);
    expect(() => parseSources(value, "production")).toThrow(/^SOURCES\[1\]\.id "lastmile" is reserved/);
  });
});

describe("dead-letter entries", () => {
  const meta = { sourceId: "s", requestId: "r", receivedAt: "2026-11-26T00:00:00.000Z" };

  it("keep the raw event with its reason", () => {
    const entry = deadLetterEntry(
      { type: "track", messageId: "m" },
      { index: 3, code: "missing_event", message: "x", messageId: "m" },
      meta,
    );
    expect(entry).toEqual({
      ...meta,
      index: 3,
      code: "missing_event",
      message: "x",
      messageId: "m",
      raw: '{"type":"track","messageId":"m"}',
      rawBytes: 32,
      truncated: false,
    });
  });

  it("leave out a write key the event carried (a single-event body is the event), and nothing else", () => {
    const event = { type: "track", userId: "u", properties: { writeKey: "kept" } };
    const entry = deadLetterEntry(
      { writeKey: "wk-secret", ...event },
      { index: 0, code: "missing_event", message: "x" },
      meta,
    );
    expect(entry.raw).not.toContain("wk-secret");
    expect(JSON.parse(entry.raw)).toEqual(event);
    expect(entry.rawBytes).toBe(jsonSize(event));
    // A `__proto__` key stays an own field of what is kept, as sent.
    const proto = deadLetterEntry(
      JSON.parse('{"writeKey":"wk-secret","__proto__":{"x":1}}'),
      { index: 0, code: "invalid_type", message: "x" },
      meta,
    );
    expect(proto.raw).toBe('{"__proto__":{"x":1}}');
    expect(deadLetterEntry(["wk-secret"], { index: 0, code: "invalid_event", message: "x" }, meta).raw).toBe(
      '["wk-secret"]',
    );
  });

  it("truncate big events and note the original size", () => {
    const raw = { pad: "€".repeat(20_000) };
    const entry = deadLetterEntry(raw, { index: 0, code: "event_too_large", message: "x" }, meta);
    expect(entry.truncated).toBe(true);
    expect(entry.rawBytes).toBe(60_010);
    expect(new TextEncoder().encode(entry.raw).length).toBeLessThanOrEqual(MAX_DEAD_LETTER_RAW_BYTES);
    expect(entry.messageId).toBeNull();
  });
});

describe("admin keys", () => {
  it("match any configured key, exactly", async () => {
    expect(await matchesAnyKey("k2", ["k1", "k2"])).toBe(true);
    expect(await matchesAnyKey("k", ["k1", "k2"])).toBe(false);
    expect(await matchesAnyKey("k22", ["k1", "k2"])).toBe(false);
    expect(await matchesAnyKey("", [])).toBe(false);
  });

  it("read Bearer tokens only", () => {
    expect(bearerToken("Bearer abc")).toBe("abc");
    expect(bearerToken("bearer  abc ")).toBe("abc");
    expect(bearerToken("Basic abc")).toBeUndefined();
    expect(bearerToken(undefined)).toBeUndefined();
  });
});
