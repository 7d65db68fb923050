// PUT /v1/admin/catalog writes into DATABASE_SCHEMA, as every other warehouse route does (docs/configuration.md).
import { env } from "cloudflare:workers";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createApp } from "../../src/app.ts";
import { sql } from "./batch-helpers.ts";
import { createSchema, dropSchema, type Query } from "./publish-helpers.ts";

let schema = "";
let q: Query;
beforeAll(async () => {
  ({ schema, q } = await createSchema("catschema"));
});
afterAll(async () => {
  await dropSchema(schema);
});

describe("PUT /v1/admin/catalog with DATABASE_SCHEMA", () => {
  it("writes the items into the configured schema, not public", async () => {
    const id = `cat-${crypto.randomUUID()}`;
    const res = await createApp().request(
      "/v1/admin/catalog",
      {
        method: "PUT",
        headers: { authorization: "Bearer local-admin-key", "content-type": "application/json" },
        body: JSON.stringify({ items: [{ id, title: "Schema Mug" }] }),
      },
      { ...env, DATABASE_SCHEMA: schema },
    );
    expect(res.status).toBe(200);
    const inPublic = await sql("select id from public.catalog where id = $1", [id]);
    await sql("delete from public.catalog where id = $1", [id]);
    const inSchema = await q("select id from catalog where id = $1", [id]);
    expect({ inSchema: inSchema.length, inPublic: inPublic.length }).toEqual({ inSchema: 1, inPublic: 0 });
  });
});
