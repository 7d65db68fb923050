import { describe, expect, it } from "vitest";
import { canonicalJson, jsonSize, toLastMember, truncateUtf8, utf8Length } from "../../src/collect/json.ts";
import { MAX_EVENT_AGE_MS, MAX_EVENT_BYTES, MAX_FUTURE_SKEW_MS, MAX_ID_LENGTH } from "../../src/collect/limits.ts";
import { DERIVED_MESSAGE_ID_PREFIX, deriveMessageId } from "../../src/collect/message-id.ts";
import {
  type NormalizeContext,
  type NormalizeResult,
  normalizeEvent,
  type RejectionCode,
  rawUserKey,
} from "../../src/collect/normalize.ts";
import { parseIsoTimestamp, resolveTimestamp } from "../../src/collect/timestamps.ts";
import { interpret } from "../../src/session/ecommerce.ts";
import { MAX_PRODUCT_ID_CHARS } from "../../src/session/limits.ts";

const NOW = Date.UTC(2026, 10, 26, 12, 0, 0);
const ctx = (extra: Partial<NormalizeContext> = {}): NormalizeContext => ({
  sourceId: "shop",
  receivedAt: NOW,
  ip: "203.0.113.9",
  ...extra,
});

async function ok(raw: unknown, extra: Partial<NormalizeContext> = {}) {
  const result = await normalizeEvent(raw, 0, ctx(extra));
  if (!result.ok) throw new Error(`rejected: ${result.rejection.code} ${result.rejection.message}`);
  return result.event;
}

async function rejected(raw: unknown, code: RejectionCode, extra: Partial<NormalizeContext> = {}) {
  const result: NormalizeResult = await normalizeEvent(raw, 7, ctx(extra));
  expect(result.ok, JSON.stringify(raw).slice(0, 200)).toBe(false);
  if (result.ok) throw new Error("unreachable");
  expect(result.rejection.code).toBe(code);
  expect(result.rejection.index).toBe(7);
  expect(result.rejection.message.length).toBeGreaterThan(5);
  return result.rejection;
}

describe("normalizeEvent: the six types", () => {
  it("normalises a Segment track call into the canonical event", async () => {
    const event = await ok({
      type: "track",
      event: "Product Viewed",
      userId: "u1",
      anonymousId: "a1",
      messageId: "m-1",
      properties: { product_id: "p1", price: 10 },
      context: { library: { name: "analytics.js" }, page: { path: "/p/1" } },
    });
    expect(event).toEqual({
      messageId: "m-1",
      type: "track",
      userId: "u1",
      anonymousId: "a1",
      previousId: null,
      groupId: null,
      event: "Product Viewed",
      name: null,
      properties: { product_id: "p1", price: 10 },
      traits: {},
      context: { library: { name: "analytics.js" }, page: { path: "/p/1" }, ip: "203.0.113.9" },
      timestamp: new Date(NOW).toISOString(),
      originalTimestamp: null,
      sentAt: null,
      receivedAt: new Date(NOW).toISOString(),
      sourceId: "shop",
    });
  });

  it("keeps page/screen names, identify traits, alias previousId and group ids", async () => {
    const page = await ok({ type: "page", name: "Home", anonymousId: "a", properties: { path: "/" }, messageId: "1" });
    expect([page.type, page.name, page.properties]).toEqual(["page", "Home", { path: "/" }]);
    const screen = await ok({ type: "screen", name: "Cart", userId: "u", messageId: "2" });
    expect(screen.name).toBe("Cart");
    const identify = await ok({ type: "identify", userId: "u", traits: { email: "x@y.z" }, messageId: "3" });
    expect(identify.traits).toEqual({ email: "x@y.z" });
    const alias = await ok({ type: "alias", userId: "u", previousId: "a", messageId: "4" });
    expect([alias.userId, alias.previousId]).toEqual(["u", "a"]);
    const group = await ok({ type: "group", userId: "u", groupId: 42, traits: { plan: "pro" }, messageId: "5" });
    expect([group.groupId, group.traits]).toEqual(["42", { plan: "pro" }]);
  });

  it("lets the path decide the type of single-event endpoints", async () => {
    const event = await ok({ type: "identify", event: "Signed Up", userId: "u" }, { pathType: "track" });
    expect(event.type).toBe("track");
    expect(event.event).toBe("Signed Up");
  });

  it("drops fields of other types (a page's event, a track's previousId)", async () => {
    const event = await ok({ type: "page", event: "x", previousId: "p", groupId: "g", anonymousId: "a" });
    expect([event.event, event.previousId, event.groupId]).toEqual([null, null, null]);
  });
});

describe("normalizeEvent: rejections", () => {
  it("rejects non-objects", async () => {
    for (const raw of [null, 1, "track", [{ type: "track" }]]) await rejected(raw, "invalid_event");
  });

  it("rejects a missing or unknown type in batches", async () => {
    await rejected({ userId: "u" }, "invalid_type");
    await rejected({ type: "click", userId: "u" }, "invalid_type");
    await rejected({ type: 3, userId: "u" }, "invalid_type");
  });

  it("needs a userId or an anonymousId", async () => {
    await rejected({ type: "page" }, "missing_identity");
    await rejected({ type: "page", userId: "", anonymousId: null }, "missing_identity");
  });

  it("needs an event name on track", async () => {
    await rejected({ type: "track", userId: "u" }, "missing_event");
    await rejected({ type: "track", userId: "u", event: "" }, "missing_event");
    await rejected({ type: "track", userId: "u", event: 5 }, "invalid_field");
  });

  it("needs previousId and userId on alias, groupId on group", async () => {
    await rejected({ type: "alias", userId: "u" }, "missing_previous_id");
    await rejected({ type: "alias", anonymousId: "a", previousId: "p" }, "missing_user_id");
    await rejected({ type: "group", userId: "u" }, "missing_group_id");
  });

  it("takes ids as strings or numbers only, bounded in length", async () => {
    const numeric = await ok({ type: "page", userId: 123, anonymousId: -45, messageId: 9 });
    expect([numeric.userId, numeric.anonymousId, numeric.messageId]).toEqual(["123", "-45", "9"]);
    await rejected({ type: "page", userId: true }, "invalid_id");
    await rejected({ type: "page", userId: { id: 1 } }, "invalid_id");
    await rejected({ type: "page", anonymousId: ["a"] }, "invalid_id");
    await rejected({ type: "page", userId: "u", messageId: {} }, "invalid_id");
    expect((await ok({ type: "page", userId: "x".repeat(MAX_ID_LENGTH) })).userId).toHaveLength(MAX_ID_LENGTH);
    await rejected({ type: "page", userId: "x".repeat(MAX_ID_LENGTH + 1) }, "invalid_id");
    await rejected({ type: "group", userId: "u", groupId: "g".repeat(MAX_ID_LENGTH + 1) }, "invalid_id");
  });

  it("refuses a numeric id JSON could not carry exactly, a user's or a product's", async () => {
    // 12345678901234567891 and 12345678901234567000 parse to the same number: two people, one session.
    await rejected(JSON.parse('{"type":"page","userId":12345678901234567891}'), "invalid_id");
    await rejected({ type: "page", anonymousId: 2 ** 53 }, "invalid_id");
    await rejected({ type: "page", userId: "u", messageId: 0.1 + 0.2 }, "invalid_id");
    expect((await ok({ type: "page", userId: Number.MAX_SAFE_INTEGER })).userId).toBe("9007199254740991");
    const viewed = (id: unknown) => ({
      type: "track",
      userId: "u",
      event: "Product Viewed",
      properties: { product_id: id },
    });
    const big =
      '{"type":"track","userId":"u","event":"Product Viewed","properties":{"product_id":98765432109876543210}}';
    await rejected(JSON.parse(big), "invalid_product_id");
    await rejected(viewed(1.5), "invalid_product_id");
    const order = { product_id: "a" };
    await rejected(
      {
        type: "track",
        userId: "u",
        event: "Order Completed",
        properties: { products: [order, { productId: 2 ** 60 }] },
      },
      "invalid_product_id",
    );
    expect((await ok(viewed(42))).properties).toMatchObject({ product_id: 42 });
  });

  it("checks only the ids the e-commerce reading takes: an order's own id or a custom event's is no product id", async () => {
    // Server libraries write 64-bit integers digit for digit; such an `id` names an order or a comment here.
    const order =
      '{"type":"track","userId":"u1","event":"Order Completed","properties":{"id":1234567890123456789,' +
      '"order_id":"o-1","products":[{"product_id":"p1","price":5,"quantity":1}]}}';
    expect(interpret(await ok(JSON.parse(order))).map((i) => i.productId)).toEqual(["p1"]);
    await ok(
      JSON.parse('{"type":"track","userId":"u1","event":"Comment Posted","properties":{"id":1234567890123456789}}'),
    );
    await ok({
      type: "track",
      userId: "u1",
      event: "Products Searched",
      properties: { id: "x".repeat(300), query: "mug" },
    });
    await rejected({ type: "page", userId: "u1", properties: { id: 2 ** 60 } }, "invalid_product_id");
  });

  it("refuses ids holding a NUL (the warehouse's text would lose it and name another id)", async () => {
    await rejected({ type: "page", userId: "u\u0000x" }, "invalid_id");
    await rejected({ type: "page", anonymousId: "\u0000" }, "invalid_id");
    await rejected({ type: "page", userId: "u", messageId: "m\u0000" }, "invalid_id");
    await rejected({ type: "alias", userId: "u", anonymousId: "a", previousId: "a\u0000" }, "invalid_id");
    await rejected({ type: "group", userId: "u", groupId: "g\u0000" }, "invalid_id");
    const product = { type: "track", userId: "u", event: "Product Viewed", properties: { product_id: "p\u0000" } };
    await rejected(product, "invalid_product_id");
    expect((await ok({ type: "page", userId: "u\u0001x" })).userId).toBe("u\u0001x");
  });

  it("refuses a product id with an unpaired surrogate (stored as UTF-8 it would become U+FFFD: two ids one)", async () => {
    const viewed = (productId: string) => ({
      type: "track",
      userId: "u",
      event: "Product Viewed",
      properties: { product_id: productId },
    });
    await rejected(viewed("p\ud800"), "invalid_product_id");
    await rejected(viewed("\udfffp"), "invalid_product_id");
    expect((await ok(viewed("p\ud83d\ude00"))).properties).toEqual({ product_id: "p\ud83d\ude00" });
  });

  it("refuses a product id longer than the catalogue's limit, wherever the event names it", async () => {
    const long = "p".repeat(MAX_PRODUCT_ID_CHARS + 1);
    const at = "p".repeat(MAX_PRODUCT_ID_CHARS);
    const viewed = (props: Record<string, unknown>) => ({
      type: "track",
      userId: "u",
      event: "Product Viewed",
      properties: props,
    });
    expect((await ok(viewed({ product_id: at }))).properties).toEqual({ product_id: at });
    await rejected(viewed({ product_id: long }), "invalid_product_id");
    await rejected(viewed({ productId: long }), "invalid_product_id");
    await rejected({ type: "page", userId: "u", properties: { id: long } }, "invalid_product_id");
    await rejected(
      {
        type: "track",
        userId: "u",
        event: "Order Completed",
        properties: { order_id: "o", products: [{ product_id: "ok" }, { product_id: long }] },
      },
      "invalid_product_id",
    );
  });

  it("takes a screen's or page's name from `event` when it has no `name`, as RudderStack's mobile SDKs send it", async () => {
    // RudderStack Android/iOS: screen("Cart") sends { type: "screen", event: "Cart", properties: { name: "Cart" } }.
    const screen = await ok({ type: "screen", event: "Cart", properties: { name: "Cart" }, anonymousId: "a" });
    expect([screen.name, screen.event]).toEqual(["Cart", null]);
    const page = await ok({ type: "page", event: "Home", anonymousId: "a" });
    expect(page.name).toBe("Home");
    // `name` wins; an `event` that is no string names nothing (and is not a reason to reject the page).
    expect((await ok({ type: "screen", name: "Cart", event: "Other", anonymousId: "a" })).name).toBe("Cart");
    expect((await ok({ type: "page", event: 5, anonymousId: "a" })).name).toBeNull();
    expect((await ok({ type: "screen", event: "", anonymousId: "a" })).name).toBeNull();
  });

  it("needs properties, traits, context and integrations to be objects when present", async () => {
    for (const field of ["properties", "traits", "context", "integrations"]) {
      await rejected({ type: "track", event: "e", userId: "u", [field]: [] }, "invalid_field");
      await rejected({ type: "track", event: "e", userId: "u", [field]: "x" }, "invalid_field");
      await ok({ type: "track", event: "e", userId: "u", [field]: null });
    }
    await rejected({ type: "page", userId: "u", name: 5 }, "invalid_field");
  });

  it("rejects timestamps that are not ISO 8601 strings", async () => {
    await rejected({ type: "page", userId: "u", timestamp: "yesterday" }, "invalid_timestamp");
    await rejected({ type: "page", userId: "u", timestamp: 1_700_000_000_000 }, "invalid_timestamp");
    await rejected({ type: "page", userId: "u", sentAt: "2026-13-45T00:00:00Z" }, "invalid_timestamp");
    await rejected({ type: "page", userId: "u", originalTimestamp: "Tue, 01 Dec 2026" }, "invalid_timestamp");
  });

  it("reports the client's messageId with a rejection", async () => {
    const r = await rejected({ type: "track", userId: "u", messageId: "m-9" }, "missing_event");
    expect(r.messageId).toBe("m-9");
    const none = await rejected({ type: "track", userId: "u" }, "missing_event");
    expect(none).not.toHaveProperty("messageId");
    expect((await rejected({ type: "track", userId: "u", messageId: 42 }, "missing_event")).messageId).toBe("42");
    // Only a usable one: a messageId that is itself the reason of an invalid_id is not echoed back.
    for (const messageId of ["m\u0000x", "m\ud800x", "\udc00", "x".repeat(MAX_ID_LENGTH + 1), {}, true]) {
      const r = await rejected({ type: "track", event: "E", userId: "u", messageId }, "invalid_id");
      expect(r).not.toHaveProperty("messageId");
    }
    const other = await rejected({ type: "track", event: "E", userId: "u\u0000", messageId: "m\u0000" }, "invalid_id");
    expect(other).not.toHaveProperty("messageId");
  });

  it("measures an accepted event as it is checked against the limit, with what it inherits", async () => {
    const raw = { type: "track", event: "e", userId: "u", messageId: "m" };
    const plain = await normalizeEvent(raw, 0, ctx());
    expect(plain.ok && plain.bytes).toBe(jsonSize(raw));
    const inheriting = await normalizeEvent(raw, 0, ctx({ defaults: { context: { a: "b" }, inheritedBytes: 9 } }));
    expect(inheriting.ok && inheriting.bytes).toBe(jsonSize(raw) + 9);
  });

  it("accepts an event of exactly 32 KB and rejects one byte more", async () => {
    const base = { type: "track", event: "e", userId: "u", messageId: "m", properties: { pad: "" } };
    const pad = MAX_EVENT_BYTES - jsonSize(base);
    const atLimit = { ...base, properties: { pad: "x".repeat(pad) } };
    expect(jsonSize(atLimit)).toBe(MAX_EVENT_BYTES);
    await ok(atLimit);
    const over = { ...base, properties: { pad: "x".repeat(pad + 1) } };
    const r = await rejected(over, "event_too_large");
    expect(r.message).toContain(String(MAX_EVENT_BYTES + 1));
  });

  it("measures size in UTF-8 bytes, not characters", async () => {
    const base = { type: "track", event: "e", userId: "u", properties: { pad: "" } };
    const chars = Math.floor((MAX_EVENT_BYTES - jsonSize(base)) / 3) + 1;
    await rejected({ ...base, properties: { pad: "€".repeat(chars) } }, "event_too_large");
  });
});

describe("rawUserKey: whose a rejected event is", () => {
  it("reads the ids as collection does: userId first, a number as its text, an invalid id as none", () => {
    expect(rawUserKey({ type: "track", userId: "u1", anonymousId: "a1" })).toBe("u:u1");
    expect(rawUserKey({ userId: 12346 })).toBe("u:12346");
    expect(rawUserKey({ userId: "", anonymousId: "a1" })).toBe("a:a1");
    expect(rawUserKey({ userId: { id: 1 }, anonymousId: "a1" })).toBe("a:a1");
    expect(rawUserKey({ userId: "x".repeat(MAX_ID_LENGTH + 1) })).toBeNull();
    expect(rawUserKey({ userId: "x\ud800" })).toBeNull();
    expect(rawUserKey({ type: "track" })).toBeNull();
    expect(rawUserKey([{ userId: "u1" }])).toBeNull();
    expect(rawUserKey("u1")).toBeNull();
  });
});

describe("normalizeEvent: server-owned fields", () => {
  it("overwrites context.ip with the connecting IP and drops a client's", async () => {
    const event = await ok({ type: "page", userId: "u", messageId: "m", context: { ip: "1.2.3.4", locale: "de" } });
    expect(event.context).toEqual({ ip: "203.0.113.9", locale: "de" });
    const local = await ok({ type: "page", userId: "u", context: { ip: "1.2.3.4" } }, { ip: null });
    expect(local.context).not.toHaveProperty("ip");
  });

  it("keeps the context.ip a server library or a webhook sends: the connecting address is not the user's", async () => {
    // Segment's spec: server libraries collect no IP; the caller passes the user's in context.ip. A webhook's
    // upstream has set it from the user's own request.
    const own = await ok({ type: "page", userId: "u", context: { ip: "1.2.3.4" } }, { clientIp: true });
    expect(own.context.ip).toBe("1.2.3.4");
    const inherited = await ok(
      { type: "page", userId: "u" },
      { clientIp: true, defaults: { context: { ip: "2001:db8::1" } } },
    );
    expect(inherited.context.ip).toBe("2001:db8::1");
    // Without one (or with one that is no address), the connecting address as before; none off Cloudflare.
    expect((await ok({ type: "page", userId: "u" }, { clientIp: true })).context.ip).toBe("203.0.113.9");
    const notText = await ok({ type: "page", userId: "u", context: { ip: { v: 4 } } }, { clientIp: true });
    expect(notText.context.ip).toBe("203.0.113.9");
    const local = await ok({ type: "page", userId: "u" }, { clientIp: true, ip: null });
    expect(local.context).not.toHaveProperty("ip");
  });

  it("drops a client's context.lastmile and sets its own flags", async () => {
    const event = await ok({ type: "page", userId: "u", messageId: "m", context: { lastmile: { fake: 1 } } });
    expect(event.context).not.toHaveProperty("lastmile");
    const derived = await ok({ type: "page", userId: "u" });
    expect(derived.context.lastmile).toEqual({ messageIdDerived: true });
  });

  it("stamps receivedAt and the source id, whatever the client sends", async () => {
    const event = await ok({ type: "page", userId: "u", receivedAt: "2020-01-01T00:00:00Z", sourceId: "evil" });
    expect(event.receivedAt).toBe(new Date(NOW).toISOString());
    expect(event.sourceId).toBe("shop");
  });

  it("merges batch-level context and integrations key by key, the event's own winning", async () => {
    const event = await ok(
      { type: "page", userId: "u", messageId: "m", context: { locale: "fr" }, integrations: { Mixpanel: false } },
      { defaults: { context: { locale: "de", library: { name: "n" } }, integrations: { All: true, Mixpanel: true } } },
    );
    expect(event.context).toEqual({ locale: "fr", library: { name: "n" }, ip: "203.0.113.9" });
    expect(event.integrations).toEqual({ All: true, Mixpanel: false });
    const plain = await ok({ type: "page", userId: "u" });
    expect(plain).not.toHaveProperty("integrations");
  });

  it("does not modify the raw event (dead letters and hashes read it afterwards)", async () => {
    const raw = { type: "page", userId: "u", context: { ip: "1.1.1.1" } };
    const copy = structuredClone(raw);
    await ok(raw, { defaults: { context: { a: 1 } } });
    expect(raw).toEqual(copy);
  });
});

describe("timestamps", () => {
  const sec = 1000;

  it("corrects client clock skew with receivedAt − (sentAt − originalTimestamp)", async () => {
    // The client's clock is 1 hour behind: it stamped the event 5 s before sending.
    const clientNow = NOW - 3600 * sec;
    const event = await ok({
      type: "page",
      userId: "u",
      originalTimestamp: new Date(clientNow - 5 * sec).toISOString(),
      sentAt: new Date(clientNow).toISOString(),
    });
    expect(event.timestamp).toBe(new Date(NOW - 5 * sec).toISOString());
    expect(event.originalTimestamp).toBe(new Date(clientNow - 5 * sec).toISOString());
    expect(event.sentAt).toBe(new Date(clientNow).toISOString());
  });

  it("uses `timestamp` as the client time when there is no originalTimestamp (analytics.js)", async () => {
    const event = await ok({
      type: "page",
      userId: "u",
      timestamp: "2026-11-26T13:00:00.000Z",
      sentAt: "2026-11-26T13:00:02.000Z",
    });
    expect(event.timestamp).toBe(new Date(NOW - 2 * sec).toISOString());
    expect(event.originalTimestamp).toBe("2026-11-26T13:00:00.000Z");
  });

  it("applies a batch-level sentAt to events without their own", async () => {
    const event = await ok(
      { type: "page", userId: "u", timestamp: "2026-11-26T10:00:00Z" },
      { defaults: { sentAt: Date.parse("2026-11-26T10:00:10Z") } },
    );
    expect(event.timestamp).toBe(new Date(NOW - 10 * sec).toISOString());
    expect(event.sentAt).toBe("2026-11-26T10:00:10.000Z");
  });

  it("falls back to the client time without sentAt, and to receivedAt without either", async () => {
    expect((await ok({ type: "page", userId: "u", timestamp: "2026-11-26T11:00:00Z" })).timestamp).toBe(
      "2026-11-26T11:00:00.000Z",
    );
    expect((await ok({ type: "page", userId: "u", sentAt: "2026-11-26T11:00:00Z" })).timestamp).toBe(
      new Date(NOW).toISOString(),
    );
  });

  it("clamps to [receivedAt − 31 days, receivedAt + 1 minute] and flags it", async () => {
    const old = await ok({ type: "page", userId: "u", messageId: "m", timestamp: "2020-01-01T00:00:00Z" });
    expect(old.timestamp).toBe(new Date(NOW - MAX_EVENT_AGE_MS).toISOString());
    expect(old.context.lastmile).toEqual({ timestampClamped: true });
    expect(old.originalTimestamp).toBe("2020-01-01T00:00:00Z");
    const future = await ok({ type: "page", userId: "u", messageId: "m", timestamp: "2027-01-01T00:00:00Z" });
    expect(future.timestamp).toBe(new Date(NOW + MAX_FUTURE_SKEW_MS).toISOString());
    const edge = await ok({
      type: "page",
      userId: "u",
      messageId: "m",
      timestamp: new Date(NOW + 60_000).toISOString(),
    });
    expect(edge.context).not.toHaveProperty("lastmile");
  });

  it("trusts an upstream-corrected timestamp for webhooks", () => {
    const r = resolveTimestamp({
      timestamp: NOW - 300_000,
      originalTimestamp: NOW - 400_000,
      sentAt: NOW - 399_000,
      receivedAt: NOW,
      trustTimestamp: true,
    });
    expect(r).toEqual({ ms: NOW - 300_000, clamped: false, method: "client" });
  });

  it("parses ISO 8601 date-times only", () => {
    expect(parseIsoTimestamp("2026-11-26T19:17:05.192Z")).toBe(Date.UTC(2026, 10, 26, 19, 17, 5, 192));
    expect(parseIsoTimestamp("2026-11-26T20:17:05+01:00")).toBe(Date.UTC(2026, 10, 26, 19, 17, 5));
    expect(parseIsoTimestamp("2026-11-26T19:17:05.123456Z")).toBe(Date.UTC(2026, 10, 26, 19, 17, 5, 123));
    expect(parseIsoTimestamp("2026-11-26")).toBe(Date.UTC(2026, 10, 26));
    for (const bad of ["", "now", "1700000000", "11/26/2026", "2026-11-26T25:00:00Z"]) {
      expect(parseIsoTimestamp(bad), bad).toBeUndefined();
    }
  });

  it("refuses calendar dates that do not exist, which Date.parse rolls over into the next month", () => {
    // Date.parse("2026-02-30T10:00:00Z") is March 2: an event two days off, not an invalid_timestamp.
    for (const bad of ["2026-02-30T10:00:00Z", "2026-02-29", "2026-04-31T00:00:00+02:00", "2026-06-31 12:00"]) {
      expect(parseIsoTimestamp(bad), bad).toBeUndefined();
    }
    expect(parseIsoTimestamp("2028-02-29T10:00:00Z")).toBe(Date.UTC(2028, 1, 29, 10));
    expect(parseIsoTimestamp("2026-01-31T23:59:59.999-05:00")).toBe(Date.UTC(2026, 1, 1, 4, 59, 59, 999));
    expect(parseIsoTimestamp("2026-12-31")).toBe(Date.UTC(2026, 11, 31));
  });
});

describe("derived messageIds", () => {
  it("are stable for the same content, whatever the key order, sentAt or writeKey", async () => {
    const a = await deriveMessageId("shop", "track", { event: "e", userId: "u", sentAt: "2026-01-01T00:00:00Z" });
    const b = await deriveMessageId("shop", "track", {
      userId: "u",
      event: "e",
      sentAt: "2026-01-02T00:00:00Z",
      writeKey: "k",
    });
    expect(a).toBe(b);
    expect(a).toMatch(new RegExp(`^${DERIVED_MESSAGE_ID_PREFIX}[0-9a-f]{32}$`));
  });

  it("differ by source, type and content", async () => {
    const raw = { event: "e", userId: "u" };
    const base = await deriveMessageId("shop", "track", raw);
    expect(await deriveMessageId("other", "track", raw)).not.toBe(base);
    expect(await deriveMessageId("shop", "page", raw)).not.toBe(base);
    expect(await deriveMessageId("shop", "track", { ...raw, properties: { a: 1 } })).not.toBe(base);
  });

  it("are set on events that come without a messageId", async () => {
    const raw = { type: "track", event: "e", userId: "u", timestamp: "2026-11-26T11:00:00Z" };
    const first = await ok(raw);
    const retry = await ok({ ...raw, sentAt: "2026-11-26T11:00:30Z" });
    expect(first.messageId).toBe(retry.messageId);
    expect(first.messageId.startsWith(DERIVED_MESSAGE_ID_PREFIX)).toBe(true);
  });
});

describe("json helpers", () => {
  it("count UTF-8 bytes like TextEncoder", () => {
    for (const text of ["", "abc", "é", "€", "😀", "a😀b€", "\ud800", "x\udc00y"]) {
      expect(utf8Length(text), text).toBe(new TextEncoder().encode(text).length);
    }
  });

  it("serialise canonically with sorted keys at every depth", () => {
    expect(canonicalJson({ b: 1, a: { d: [3, { f: 1, e: 2 }], c: null } })).toBe(
      '{"a":{"c":null,"d":[3,{"e":2,"f":1}]},"b":1}',
    );
  });

  it("truncate on a character boundary", () => {
    expect(truncateUtf8("ab€", 3)).toBe("ab");
    expect(truncateUtf8("ab€", 5)).toBe("ab€");
    expect(truncateUtf8("abc", 10)).toBe("abc");
  });

  it("ends a cut JSON text at its last whole member: nothing cut short is left at the end", () => {
    expect(toLastMember('{"a":"b","userId":"victim-12')).toBe('{"a":"b",');
    expect(toLastMember('{"a":1,"userId":900123')).toBe('{"a":1,');
    expect(toLastMember('{"p":{"q":["x","y')).toBe('{"p":{"q":["x",');
    // Structural characters inside strings, escaped quotes included, do not count.
    expect(toLastMember('{"a":"x,\\"{[","b":"c')).toBe('{"a":"x,\\"{[",');
    expect(toLastMember('{"a":"x\\",y","b":1')).toBe('{"a":"x\\",y",');
    expect(toLastMember("")).toBe("");
  });
});
