// Pure pieces of the batch loop: event → warehouse rows, identity merging, Postgres-safe JSON, CSV, catalogue
// validation and the retry policy.
import { DrizzleQueryError } from "drizzle-orm";
import { describe, expect, it } from "vitest";
import { postgresJson } from "../../src/batch/bulk.ts";
import { parseCatalogCsv, parseCatalogFile, parseCatalogJson, validateItem } from "../../src/batch/catalog.ts";
import { CsvError, csvRecords } from "../../src/batch/csv.ts";
import { parseEntries } from "../../src/batch/loader.ts";
import { backoffDelay, describeFailure, isTransientError, withRetry } from "../../src/batch/retry.ts";
import { countryOf, mergeIdentities, warehouseRows } from "../../src/batch/warehouse.ts";
import type { CollectedEvent } from "../../src/collect/event.ts";
import { MAX_PRODUCT_ID_CHARS } from "../../src/session/limits.ts";
import { collectedEvent } from "../support/events.ts";

const AT = "2026-11-20T10:00:00.000Z";

function ev(type: CollectedEvent["type"], fields: Partial<CollectedEvent> = {}): CollectedEvent {
  return collectedEvent({ messageId: "m1", type, anonymousId: "a1", timestamp: AT, receivedAt: AT, ...fields });
}

describe("warehouseRows", () => {
  it("maps a product event to one interaction with the live session's weight", () => {
    const rows = warehouseRows(
      ev("track", { event: "Product Added", properties: { product_id: "p1", price: "9.5", quantity: 2 } }),
    );
    expect(rows.event).toMatchObject({ userKey: "a:a1", productId: "p1", type: "track", event: "Product Added" });
    expect(rows.interactions).toEqual([
      {
        messageId: "m1",
        position: 0,
        userKey: "a:a1",
        productId: "p1",
        kind: "add_to_cart",
        weight: 3,
        quantity: 2,
        price: 9.5,
        orderId: null,
        eventTime: AT,
      },
    ]);
    expect(rows.identities).toEqual([]);
  });

  it("explodes Order Completed per product with quantities and the order id; skips products without an id", () => {
    const rows = warehouseRows(
      ev("track", {
        userId: "u1",
        event: "Order Completed",
        properties: {
          order_id: 42,
          products: [
            { product_id: "a", quantity: 1 },
            "junk",
            { sku: "no-id", quantity: 3 },
            { id: "c", quantity: "4" },
          ],
        },
      }),
      "u:merged",
    );
    expect(rows.event.userKey).toBe("u:merged");
    expect(rows.interactions.map((i) => [i.position, i.productId, i.quantity, i.orderId, i.userKey])).toEqual([
      [0, "a", 1, "42", "u:merged"],
      [2, "c", 4, "42", "u:merged"],
    ]);
    expect(rows.identities).toEqual([{ anonymousId: "a1", userId: "u1", at: AT }]);
  });

  it("stores a price or quantity outside the plausible range as null, keeping the event's properties as sent", () => {
    const products = [
      { product_id: "huge", price: 1e200, quantity: 1 },
      { product_id: "negative", price: "-1e10", quantity: 2_000_000 },
      { product_id: "edge", price: 1e9, quantity: -1_000_000 },
      { product_id: "plain", price: 4.5, quantity: 2.4 },
    ];
    const rows = warehouseRows(ev("track", { event: "Order Completed", properties: { order_id: "o", products } }));
    expect(rows.interactions.map((i) => [i.productId, i.price, i.quantity])).toEqual([
      ["huge", null, 1],
      ["negative", null, null],
      ["edge", 1e9, -1_000_000],
      ["plain", 4.5, 2],
    ]);
    expect(rows.event.properties).toEqual({ order_id: "o", products });
  });

  it("never yields a product id over the catalogue's limit (a B-tree index entry cannot hold a few KB)", () => {
    // Collection refuses such events; an entry written before that rule must not fail its whole load batch.
    const long = "p".repeat(MAX_PRODUCT_ID_CHARS + 1);
    const rows = warehouseRows(
      ev("track", {
        event: "Order Completed",
        properties: { order_id: "o", products: [{ product_id: long }, { product_id: "b" }] },
      }),
    );
    expect(rows.interactions.map((i) => [i.position, i.productId])).toEqual([[1, "b"]]);
    const viewed = warehouseRows(ev("track", { event: "Product Viewed", properties: { product_id: long } }));
    expect(viewed.interactions).toEqual([]);
    expect(viewed.event.productId).toBeNull();
    expect(viewed.event.properties).toEqual({ product_id: long });
  });

  it("keeps non-e-commerce events without interactions, and products of pages", () => {
    expect(warehouseRows(ev("track", { event: "Newsletter Signup" })).interactions).toEqual([]);
    expect(
      warehouseRows(ev("track", { event: "Product Shared", properties: { product_id: "s1" } })).event.productId,
    ).toBe("s1");
    const page = warehouseRows(ev("page", { name: "PDP", properties: { productId: "p9" } }));
    expect(page.interactions.map((i) => [i.kind, i.productId])).toEqual([["view", "p9"]]);
    expect(page.event.name).toBe("PDP");
    const search = warehouseRows(ev("track", { event: "Products Searched", properties: { query: "mug" } }));
    expect(search.interactions).toEqual([]);
  });

  it("links alias previous ids and identify pairs", () => {
    const alias = warehouseRows(ev("alias", { userId: "u1", previousId: "old", anonymousId: null }));
    expect(alias.identities).toEqual([{ anonymousId: "old", userId: "u1", at: AT }]);
    const identify = warehouseRows(ev("identify", { userId: "u1", anonymousId: "a1" }));
    expect(identify.identities).toEqual([{ anonymousId: "a1", userId: "u1", at: AT }]);
  });

  it("normalises times and reads the country code", () => {
    const rows = warehouseRows(
      ev("track", { timestamp: "2026-11-20T11:00:00+01:00", context: { location: { country: "de" } } }),
    );
    expect(rows.event.eventTime).toBe(AT);
    expect(rows.event.country).toBe("DE");
    expect(countryOf({ location: { country: "Germany" } })).toBeNull();
    expect(countryOf({})).toBeNull();
    expect(warehouseRows(ev("track", { timestamp: "garbage" })).event.eventTime).toBe(AT);
  });
});

describe("mergeIdentities", () => {
  it("keeps one row per pair with the earliest and latest times", () => {
    expect(
      mergeIdentities([
        { anonymousId: "a", userId: "u", at: "2026-01-02T00:00:00.000Z" },
        { anonymousId: "a", userId: "u", at: "2026-01-01T00:00:00.000Z" },
        { anonymousId: "a", userId: "u", at: "2026-01-03T00:00:00.000Z" },
        { anonymousId: "b", userId: "u", at: "2026-01-01T00:00:00.000Z" },
      ]),
    ).toEqual([
      { anonymousId: "a", userId: "u", firstSeen: "2026-01-01T00:00:00.000Z", lastSeen: "2026-01-03T00:00:00.000Z" },
      { anonymousId: "b", userId: "u", firstSeen: "2026-01-01T00:00:00.000Z", lastSeen: "2026-01-01T00:00:00.000Z" },
    ]);
  });
});

describe("parseEntries", () => {
  it("parses stream entries, skipping deleted, malformed and repeated ones", () => {
    const e = ev("track", { event: "Product Viewed", properties: { product_id: "p" } });
    const parsed = parseEntries([
      { id: "1-0", fields: { id: "m1", user: "u:x", e: JSON.stringify(e) } },
      { id: "2-0", fields: { id: "m1", user: "u:x", e: JSON.stringify(e) } },
      { id: "3-0", fields: null },
      { id: "4-0", fields: { id: "m2", user: "u:x", e: "{" } },
      { id: "5-0", fields: { id: "m3", user: "u:x", e: JSON.stringify({ ...e, type: "other" }) } },
    ]);
    expect(parsed.events.map((r) => [r.messageId, r.userKey, r.streamId])).toEqual([["m1", "u:x", "1-0"]]);
    expect(parsed).toMatchObject({ missing: 1, malformed: 2 });
    expect(parsed.interactions).toHaveLength(1);
  });

  it("counts an entry whose rows cannot be derived as malformed instead of failing the batch", () => {
    const e = ev("track", { event: "Product Viewed", properties: { product_id: "p" } });
    // No user field, an empty userId and no anonymousId: the event has no user key.
    const keyless = { id: "1-0", fields: { id: "m1", e: JSON.stringify({ ...e, userId: "", anonymousId: null }) } };
    const { groupId: _g, ...withoutGroup } = { ...e, messageId: "m2", anonymousId: "a\u0000b" };
    const partial = { id: "2-0", fields: { id: "m2", e: JSON.stringify(withoutGroup) } };
    const parsed = parseEntries([keyless, partial]);
    expect(parsed.events.map((r) => [r.messageId, r.userKey, r.anonymousId, r.groupId])).toEqual([
      ["m2", "a:ab", "ab", undefined],
    ]);
    expect(parsed).toMatchObject({ missing: 0, malformed: 1 });
  });
});

describe("postgresJson", () => {
  it("is plain JSON.stringify for ordinary values", () => {
    const value = { a: "b", n: [1, null, "ü😀"] };
    expect(postgresJson(value)).toBe(JSON.stringify(value));
  });
  it("drops NUL and replaces lone surrogates, in keys too", () => {
    expect(JSON.parse(postgresJson({ "k\u0000": "a\u0000b", s: "x\ud800y", t: "\udc00", ok: "😀" }))).toEqual({
      k: "ab",
      s: "x\ufffdy",
      t: "\ufffd",
      ok: "😀",
    });
  });
});

describe("csvRecords", () => {
  const all = (text: string) => [...csvRecords(text)].map((r) => [r.line, ...r.fields]);
  it("reads quotes, doubled quotes, separators and line breaks inside quotes, CRLF and a BOM", () => {
    expect(all('\ufeffa,b\r\n"x, y","say ""hi"""\r\n"multi\nline",z\n\n3,\n')).toEqual([
      [1, "a", "b"],
      [2, "x, y", 'say "hi"'],
      [3, "multi\nline", "z"],
      [6, "3", ""],
    ]);
  });
  it("refuses an unclosed quote with its line", () => {
    expect(() => all('a\n"open,1\n')).toThrow(CsvError);
    expect(() => all('a\n"open,1\n')).toThrow(/line 2/);
  });
});

describe("catalogue validation", () => {
  it("normalises an item", () => {
    expect(validateItem({ id: " 7 ", title: " T ", tags: "a, b,a", price: "2.50", currency: "eur" }, /,/)).toEqual({
      item: {
        id: "7",
        title: "T",
        category: null,
        brand: null,
        tags: ["a", "b"],
        price: 2.5,
        currency: "EUR",
        inStock: true,
        visible: true,
        attributes: {},
      },
      errors: [],
    });
  });

  it("reads a catalogue file as CSV or JSON by its name, with or without a byte-order mark", () => {
    const json = JSON.stringify({ items: [{ id: "p1", title: "Mug" }] });
    for (const text of [json, `\uFEFF${json}`]) {
      expect(parseCatalogFile("shop.json", text).items.map((i) => i.id)).toEqual(["p1"]);
    }
    expect(parseCatalogFile("SHOP.CSV", "\uFEFFid,title\np2,Lamp\n").items.map((i) => i.id)).toEqual(["p2"]);
    expect(() => parseCatalogFile("shop.json", "{not json")).toThrow(SyntaxError);
  });

  it("reports limits", () => {
    const { errors } = validateItem(
      {
        id: "x".repeat(257),
        title: "t",
        tags: Array.from({ length: 33 }, (_, k) => `t${k}`),
        attributes: { a: "x".repeat(9000) },
      },
      /,/,
    );
    expect(errors.map((e) => e.field)).toEqual(["id", "tags", "attributes"]);
  });

  it("lists only the first 100 row errors but counts all", () => {
    const parsed = parseCatalogJson(Array.from({ length: 150 }, () => ({ title: "no id" })));
    expect(parsed.errors).toHaveLength(100);
    expect(parsed.errorCount).toBe(150);
  });

  it("needs id and title columns in CSV and refuses extra fields on a row", () => {
    expect(() => parseCatalogCsv("title\nx\n")).toThrow(/id column/);
    const parsed = parseCatalogCsv("id,title\n1,a,extra\n2,b\n");
    expect(parsed.items.map((i) => i.id)).toEqual(["2"]);
    expect(parsed.errors[0]).toMatchObject({ index: 0, line: 2, id: "1" });
  });

  it("refuses a row with fewer fields than the header (its missing stock and visibility would reset to true)", () => {
    const parsed = parseCatalogCsv("id,title,price,in_stock,visible\np1,Mug,4.50,no,no\np2,Bag,9.90\n");
    expect(parsed.items.map((i) => i.id)).toEqual(["p1"]);
    expect(parsed.errors[0]).toMatchObject({ index: 1, line: 3, id: "p2" });
  });

  it("reads a blank price as no price, and refuses a price that is not written as a plain number", () => {
    expect(parseCatalogJson([{ id: "p1", title: "Mug", price: " " }]).items[0]?.price).toBeNull();
    expect(parseCatalogCsv("id,title,price\np1,Mug, \n").items[0]?.price).toBeNull();
    expect(parseCatalogJson([{ id: "p1", title: "Mug", price: " 2.95 " }]).items[0]?.price).toBe(2.95);
    for (const price of ["0x10", "0b11", "1,234.50", "£2.95", "-1", "Infinity", "1e400"]) {
      expect(validateItem({ id: "p1", title: "Mug", price }, /,/).item, price).toBeNull();
    }
  });

  it("refuses text with an unpaired UTF-16 surrogate (stored as U+FFFD, it would name another product)", () => {
    const parsed = parseCatalogJson([
      { id: "p\ud800", title: "A" },
      { id: "p2", title: "B\udc00" },
      { id: "p3", title: "C", tags: ["ok", "t\udbff"] },
      { id: "p4", title: "D \ud83d\ude00" },
    ]);
    expect(parsed.items.map((i) => i.id)).toEqual(["p4"]);
    expect(parsed.errors.map((e) => e.errors[0]?.field)).toEqual(["id", "title", "tags"]);
  });

  it("takes a numeric id only as a safe integer: JSON.parse rounds a longer one to another product's id", () => {
    const text = JSON.stringify({
      items: [
        { id: "12345678901234567891", title: "Mug" },
        { id: 9007199254740991, title: "Bowl" },
        { id: 2.5, title: "Jug" },
      ],
    }).replace('"id":"12345678901234567891"', '"id":12345678901234567891');
    for (const parsed of [parseCatalogFile("catalog.json", text), parseCatalogJson(JSON.parse(text))]) {
      expect(parsed.items.map((i) => i.id)).toEqual(["9007199254740991"]);
      expect(parsed.errors.map((e) => [e.index, e.errors[0]?.field, e.errors[0]?.message])).toEqual([
        [0, "id", "must be a string; a number is taken only as an integer up to 9007199254740991 (write it in quotes)"],
        [2, "id", "must be a string; a number is taken only as an integer up to 9007199254740991 (write it in quotes)"],
      ]);
    }
    expect(parseCatalogJson([{ id: "12345678901234567891", title: "Mug" }]).items[0]?.id).toBe("12345678901234567891");
  });

  it("refuses attributes nested deeper than 64 levels in a file, as the endpoint does", () => {
    let deep: Record<string, unknown> = { leaf: 1 };
    for (let k = 0; k < 100; k++) deep = { a: deep };
    const parsed = parseCatalogFile("catalog.json", JSON.stringify([{ id: "p1", title: "Mug", attributes: deep }]));
    expect(parsed.errorCount).toBe(1);
    expect(parsed.errors[0]?.errors[0]?.field).toBe("attributes");
  });
});

describe("retry policy", () => {
  it("classifies transient failures", () => {
    for (const code of ["57P01", "57P03", "53300", "08006", "40001", "ECONNRESET", "ECONNREFUSED"]) {
      expect(isTransientError(Object.assign(new Error("x"), { code })), code).toBe(true);
    }
    expect(isTransientError(new Error("Connection terminated unexpectedly"))).toBe(true);
    expect(isTransientError(new Error("Couldn't connect to compute node"))).toBe(true);
    expect(isTransientError(new TypeError("fetch failed"))).toBe(true);
    // drizzle's ROLLBACK on a connection the server terminated: its error replaces the one that broke it.
    const broken = new Error("Client has encountered a connection error and is not queryable");
    expect(isTransientError(new Error("Failed query: rollback\nparams: ", { cause: broken }))).toBe(true);
    expect(isTransientError(new Error("wrapped", { cause: Object.assign(new Error("x"), { code: "57P01" }) }))).toBe(
      true,
    );
    // The Neon driver rejects with the WebSocket's error event (not an Error) when it cannot reach the proxy.
    const socketEvent = { type: "error", message: "Network connection lost." };
    expect(isTransientError(new Error("Failed query: select 1\nparams: ", { cause: socketEvent }))).toBe(true);
    expect(isTransientError({ type: "error", message: "syntax error" })).toBe(false);
    expect(isTransientError(Object.assign(new Error("duplicate key"), { code: "23505" }))).toBe(false);
    expect(isTransientError(Object.assign(new Error("connection terminated"), { code: "42P01" }))).toBe(false);
    expect(isTransientError(new Error("password authentication failed"))).toBe(false);
    expect(isTransientError(new Error("syntax error"))).toBe(false);
  });

  it("judges drizzle's query wrapper by its cause, not by the statement and parameters in its message", () => {
    const outOfRange = Object.assign(new Error("date/time field value out of range"), { code: "22008" });
    const params = [JSON.stringify([{ properties: { title: "Checkout timed out, websocket closed" } }])];
    expect(isTransientError(new DrizzleQueryError("insert into events …", params, outOfRange))).toBe(false);
    const dropped = new Error("Connection terminated unexpectedly");
    expect(isTransientError(new DrizzleQueryError("insert into events …", params, dropped))).toBe(true);
  });

  it("describes a failure by Postgres's SQLSTATE and message, else by what drizzle wrapped", () => {
    const outOfRange = Object.assign(new Error("date/time field value out of range"), { code: "22008" });
    const wrapped = (cause: unknown) => new DrizzleQueryError("insert into events …", ['{"pad":"…"}'], cause as Error);
    expect(describeFailure(wrapped(outOfRange))).toBe("22008 date/time field value out of range");
    expect(describeFailure(wrapped(new Error("fetch failed")))).toBe("fetch failed");
    expect(describeFailure(new Error("lease lost"))).toBe("lease lost");
  });

  it("describes a failure in at most 300 characters, its SQLSTATE included", () => {
    const long = Object.assign(new Error(`value too long: ${"x".repeat(400)}`), { code: "22001" });
    const described = describeFailure(long);
    expect({ length: described.length, start: described.slice(0, 21) }).toEqual({
      length: 300,
      start: "22001 value too long:",
    });
  });

  it("draws jittered delays under an exponentially growing cap", () => {
    const policy = { attempts: 5, baseDelayMs: 100, maxDelayMs: 1000 };
    expect([0, 1, 2, 3, 4].map((r) => backoffDelay(policy, r, () => 0.999))).toEqual([99, 199, 399, 799, 999]);
    expect(backoffDelay(policy, 3, () => 0)).toBe(0);
  });

  it("retries transient failures up to the attempt limit and the deadline, never others", async () => {
    const sleeps: number[] = [];
    const sleep = async (ms: number) => {
      sleeps.push(ms);
    };
    const transient = () => Object.assign(new Error("down"), { code: "57P03" });
    let calls = 0;
    const value = await withRetry(
      async () => {
        calls++;
        if (calls < 3) throw transient();
        return "ok";
      },
      { sleep, random: () => 0.5 },
    );
    expect([value, calls, sleeps]).toEqual(["ok", 3, [100, 200]]);

    calls = 0;
    await expect(
      withRetry(
        async () => {
          calls++;
          throw transient();
        },
        { sleep, policy: { attempts: 3, baseDelayMs: 1, maxDelayMs: 1 } },
      ),
    ).rejects.toThrow("down");
    expect(calls).toBe(3);

    calls = 0;
    await expect(
      withRetry(
        async () => {
          calls++;
          throw new Error("bug");
        },
        { sleep },
      ),
    ).rejects.toThrow("bug");
    expect(calls).toBe(1);

    calls = 0;
    const now = () => 1_000;
    await expect(
      withRetry(
        async () => {
          calls++;
          throw transient();
        },
        { sleep, now, deadline: 1_250, random: () => 0.999 },
      ),
    ).rejects.toThrow("down");
    expect(calls).toBe(2); // a 199 ms pause fits before the deadline, the next (399 ms) would not
  });
});
