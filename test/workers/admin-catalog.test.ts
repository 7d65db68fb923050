// PUT /v1/admin/catalog inside workerd against the real Postgres: JSON and CSV upserts, updated_at moving only on
// real changes, every bad row reported with its reasons (and nothing written), limits and the admin key.
import { exports } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { CATALOG_WRITE_LOCK, MAX_CATALOG_ITEMS } from "../../src/batch/catalog.ts";
import { openClient } from "../../src/stores/db.ts";
import { sql, uid } from "./batch-helpers.ts";
import { gzip, refused } from "./collect-helpers.ts";
import { dbSettings } from "./publish-helpers.ts";

const ADMIN = { authorization: "Bearer local-admin-key" };

function put(
  body: string | Uint8Array,
  contentType: string,
  headers: Record<string, string> = ADMIN,
): Promise<Response> {
  return exports.default.fetch(
    new Request("http://lastmile.test/v1/admin/catalog", {
      method: "PUT",
      headers: { "content-type": contentType, ...headers },
      body,
    }),
  );
}

const putJson = (value: unknown) => put(JSON.stringify(value), "application/json");

interface CatalogRow {
  id: string;
  title: string;
  category: string | null;
  brand: string | null;
  tags: string[];
  price: number | null;
  currency: string | null;
  in_stock: boolean;
  visible: boolean;
  attributes: Record<string, unknown>;
  updated_at: Date;
}

async function rows(ids: string[]): Promise<Map<string, CatalogRow>> {
  const list = await sql<CatalogRow>("select * from catalog where id = any($1)", [ids]);
  return new Map(list.map((r) => [r.id, r]));
}

describe("PUT /v1/admin/catalog", () => {
  it("upserts JSON items and moves updated_at only for rows that changed", async () => {
    const [a, b] = [uid("p"), uid("p")];
    const first = await putJson({
      items: [
        { id: a, title: "Red Mug", category: "Mugs", tags: ["red", "mug"], price: 4.5, currency: "gbp" },
        { product_id: b, name: "Tote Bag", in_stock: false, attributes: { colour: "natural" } },
      ],
    });
    expect(first.status).toBe(200);
    expect(first.headers.get("cache-control")).toBe("no-store");
    expect(await first.json()).toEqual({ received: 2, inserted: 2, updated: 0, unchanged: 0 });
    const before = await rows([a, b]);
    expect(before.get(a)).toMatchObject({ title: "Red Mug", tags: ["red", "mug"], price: 4.5, currency: "GBP" });
    expect(before.get(a)).toMatchObject({ in_stock: true, visible: true, brand: null });
    expect(before.get(b)).toMatchObject({ title: "Tote Bag", in_stock: false, attributes: { colour: "natural" } });

    await new Promise((r) => setTimeout(r, 20));
    // An array body; a unchanged, b out of stock → in stock.
    const second = await putJson([
      { id: a, title: "Red Mug", category: "Mugs", tags: ["red", "mug"], price: 4.5, currency: "GBP" },
      { id: b, title: "Tote Bag", inStock: true, attributes: { colour: "natural" } },
    ]);
    expect(await second.json()).toEqual({ received: 2, inserted: 0, updated: 1, unchanged: 1 });
    const after = await rows([a, b]);
    expect(after.get(a)?.updated_at.getTime()).toBe(before.get(a)?.updated_at.getTime());
    expect(after.get(b)?.updated_at.getTime()).toBeGreaterThan(before.get(b)?.updated_at.getTime() ?? 0);
    expect(after.get(b)?.in_stock).toBe(true);
  });

  it("accepts CSV with a header row (tags separated by |, attributes as JSON), gzip'd or not", async () => {
    const [a, b] = [uid("c"), uid("c")];
    const csv = [
      "id,title,category,brand,tags,price,currency,in_stock,visible,attributes",
      `${a},"Candle, large",Candles & Lights,Acme,white|candle,12.00,EUR,yes,1,"{""size"":""L""}"`,
      `${b},Gift card,,,,,,,false,`,
      "",
    ].join("\r\n");
    const res = await put(await gzip(csv), "text/csv; charset=utf-8", { ...ADMIN, "content-encoding": "gzip" });
    expect(res.status, await res.clone().text()).toBe(200);
    expect(await res.json()).toEqual({ received: 2, inserted: 2, updated: 0, unchanged: 0 });
    const saved = await rows([a, b]);
    expect(saved.get(a)).toMatchObject({
      title: "Candle, large",
      category: "Candles & Lights",
      brand: "Acme",
      tags: ["white", "candle"],
      price: 12,
      currency: "EUR",
      in_stock: true,
      visible: true,
      attributes: { size: "L" },
    });
    expect(saved.get(b)).toMatchObject({ title: "Gift card", category: null, price: null, visible: false, tags: [] });
  });

  it("answers 400 validation_failed with every bad row's reasons, and writes nothing", async () => {
    const good = uid("g");
    const body = {
      items: [
        { id: good, title: "Fine" },
        { id: uid("x"), title: "", price: -1 },
        { title: "no id", currency: "EURO", colour: "red" },
        "not an object",
        { id: good, title: "Twice" },
        { id: uid("x"), title: "T", tags: "a,b", in_stock: "maybe", attributes: [1] },
      ],
    };
    const error = await refused(putJson(body), 400, "validation_failed");
    expect(error.error.errorCount).toBe(5);
    const errors = error.error.errors as { index: number; id?: string; errors: { field: string; message: string }[] }[];
    expect(errors.map((e) => e.index)).toEqual([1, 2, 3, 4, 5]);
    expect(errors[0]?.errors).toEqual([
      { field: "title", message: "is required" },
      { field: "price", message: "must be a number ≥ 0" },
    ]);
    expect(errors[1]?.errors.map((e) => e.field).sort()).toEqual(["colour", "currency", "id"]);
    expect(errors[2]?.errors).toEqual([{ field: "", message: "must be an object" }]);
    expect(errors[3]).toMatchObject({ id: good, errors: [{ field: "id", message: "is also the id of item 0" }] });
    expect(errors[4]?.errors.map((e) => e.field)).toEqual(["in_stock", "attributes"]);
    expect((await rows([good])).size).toBe(0);

    const csvError = await refused(
      put(`id,title,price\n${uid("y")},Ok,1\n,Missing id,abc\n`, "text/csv"),
      400,
      "validation_failed",
    );
    expect(csvError.error.errors).toEqual([
      {
        index: 1,
        line: 3,
        errors: [
          { field: "id", message: "is required" },
          { field: "price", message: "must be a number ≥ 0" },
        ],
      },
    ]);
  });

  it("refuses what it cannot read: shapes, columns, types, sizes", async () => {
    await refused(putJson({ products: [] }), 400, "validation_failed");
    await refused(putJson({ items: [] }), 400, "validation_failed");
    await refused(put("{", "application/json"), 400, "invalid_json");
    await refused(put("id,title,colour\n1,a,red\n", "text/csv"), 400, "validation_failed");
    await refused(put('id,title\n"1,a\n', "text/csv"), 400, "bad_request");
    await refused(put("<items/>", "application/xml"), 415, "unsupported_media_type");
    const many = Array.from({ length: MAX_CATALOG_ITEMS + 1 }, (_, k) => ({ id: `m${k}`, title: "t" }));
    const tooMany = await refused(putJson({ items: many }), 413, "payload_too_large");
    expect(tooMany.error).toMatchObject({ limit: MAX_CATALOG_ITEMS, actual: MAX_CATALOG_ITEMS + 1, unit: "items" });
    await refused(put("x".repeat(11 * 1024 * 1024), "application/json"), 413, "payload_too_large");
  });

  // `{ items, currency: "GBP" }` answered 200 and stored every item without a currency: the unknown field next to
  // `items` was dropped silently, although unknown item fields are refused.
  it("refuses a field next to items, and writes nothing", async () => {
    const id = uid("f");
    for (const body of [
      { items: [{ id, title: "Mug" }], currency: "GBP" },
      { items: [{ id, title: "Mug" }], item: [{ id: uid("f"), title: "Tote" }] },
    ]) {
      const answer = await refused(putJson(body), 400, "validation_failed");
      expect(answer.error).toMatchObject({ errors: [], errorCount: 0 });
      expect(answer.error.message).toMatch(/currency|item\b/);
    }
    expect(await sql("select id from catalog where id = $1", [id])).toEqual([]);
  });

  it("needs the admin key", async () => {
    await refused(put("[]", "application/json", {}), 401, "unauthorized");
    await refused(put("[]", "application/json", { authorization: "Bearer nope" }), 401, "unauthorized");
  });

  it("refuses ids that differ only by an unpaired surrogate, and never lets one overwrite another product", async () => {
    const base = uid("s");
    await refused(
      putJson({
        items: [
          { id: `${base}\ud800`, title: "A" },
          { id: `${base}\udbff`, title: "B" },
        ],
      }),
      400,
      "validation_failed",
    );
    expect((await putJson({ items: [{ id: `${base}\ufffd`, title: "Real product", price: 10 }] })).status).toBe(200);
    await refused(putJson({ items: [{ id: `${base}\udc00`, title: "Other", price: 1 }] }), 400, "validation_failed");
    const rows = await sql<{ title: string; price: number }>("select title, price from catalog where id like $1", [
      `${base}%`,
    ]);
    expect(rows.map((r) => ({ title: r.title, price: Number(r.price) }))).toEqual([
      { title: "Real product", price: 10 },
    ]);
  });

  // JSON.parse reads 1e400 as Infinity, which JSON.stringify writes as null: the attribute was stored as null, and
  // 12345678901234567891 as 12345678901234567000, with a 200.
  it("refuses attributes holding a number JSON cannot carry exactly, in JSON and in a CSV cell, and writes nothing", async () => {
    for (const value of ["1e400", "-1e400", "12345678901234567891", '[1,{"deep":-9007199254740993}]']) {
      const id = uid("n");
      const json = `{"items":[{"id":"${id}","title":"Mug","attributes":{"weight":${value}}}]}`;
      const body = await refused(put(json, "application/json"), 400, "validation_failed");
      expect(body.error.errors, value).toEqual([
        { index: 0, id, errors: [{ field: "attributes", message: expect.stringMatching(/number/) }] },
      ]);
      const csv = `id,title,attributes\n${id},Mug,"{""weight"":${value.replaceAll('"', '""')}}"\n`;
      await refused(put(csv, "text/csv"), 400, "validation_failed");
      expect(await sql("select id from catalog where id = $1", [id]), value).toEqual([]);
    }
    // Exact numbers are kept as sent.
    const id = uid("n");
    const attributes = { weight: 0.1, max: Number.MAX_SAFE_INTEGER, min: -Number.MAX_SAFE_INTEGER, tiny: 5e-324 };
    expect((await putJson({ items: [{ id, title: "Mug", attributes }] })).status).toBe(200);
    expect((await rows([id])).get(id)?.attributes).toEqual(attributes);
  });

  it("stores a blank price as no price", async () => {
    const id = uid("b");
    expect((await putJson({ items: [{ id, title: "Mug", price: " " }] })).status).toBe(200);
    expect(await sql("select price from catalog where id = $1", [id])).toEqual([{ price: null }]);
  });
});

describe("catalogue writers", () => {
  it("take turns, and stamp rows with the time their turn began, not their transaction's start", async () => {
    // Another writer holds the turn: this upload waits for it, so the row must carry a time after its release.
    const other = openClient(dbSettings());
    await other.connect();
    const id = uid("turn");
    let pending: Promise<Response> | undefined;
    let released = 0;
    try {
      await other.query("select pg_advisory_lock($1::bigint)", [CATALOG_WRITE_LOCK.toString()]);
      pending = putJson({ items: [{ id, title: "Turn" }] });
      await new Promise((resolve) => setTimeout(resolve, 300));
      const [row] = (await other.query("select extract(epoch from clock_timestamp()) * 1000 as ms")).rows as Array<{
        ms: string;
      }>;
      released = Number(row?.ms);
      await other.query("select pg_advisory_unlock($1::bigint)", [CATALOG_WRITE_LOCK.toString()]);
    } finally {
      await other.end();
    }
    expect((await pending)?.status).toBe(200);
    const [written] = await sql<{ updated_at: Date }>("select updated_at from catalog where id = $1", [id]);
    expect(written?.updated_at.getTime()).toBeGreaterThanOrEqual(Math.floor(released));
  });
});
