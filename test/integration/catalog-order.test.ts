// The publisher's measure of the catalogue's order (src/publish/sources.ts catalogOrderStat) against the real
// Postgres, in a schema of its own: the same pairs and near pairs as CatalogueOrder.measure (src/rank/catalog.ts)
// over the same lists, with ids sorted in code-unit order (upper case before lower case, as in JavaScript) whatever
// the database's collation.
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { openDb } from "../../src/publish/db.ts";
import { catalogOrderStat } from "../../src/publish/sources.ts";
import { CatalogueOrder, orderPredictive } from "../../src/rank/catalog.ts";
import { openPool } from "../../src/stores/db.ts";

const stack = inject("stack");
const settings = { databaseUrl: stack.DATABASE_URL, localWsProxy: stack.NEON_LOCAL_WS_PROXY };
const schema = `t_order_${crypto.randomUUID().replaceAll("-", "").slice(0, 12)}`;
const pool = openPool(settings);
const { db, end } = openDb(settings, schema);

// N products p000 … p599 and three whose place depends on the collation: in code-unit order "P5" and "Q1" come
// before every "p…" and "p010a" right after "p010". Large enough that 2 × 12 places are a small share (chance 4 %).
const N = 600;
const ids = [...Array.from({ length: N }, (_, i) => `p${String(i).padStart(3, "0")}`), "P5", "Q1", "p010a"];
const p = (i: number) => `p${String(i).padStart(3, "0")}`;

/** Next-items lists, best first: mostly the following products (near), some far ones, some outside the catalogue. */
function lists(): Map<string, Array<[string, number]>> {
  const out = new Map<string, Array<[string, number]>>();
  for (let i = 0; i < N; i++) {
    out.set(p(i), [
      [p((i + 1) % N), 5],
      [p((i + 300) % N), 4],
      ["not-in-catalogue", 3],
      [p((i + 2) % N), 2],
    ]);
  }
  // "P5" sits first in code-unit order: p000 and p001 are 2 and 3 places away (near at span ≥ 3).
  out.set("P5", [
    [p(0), 2],
    [p(1), 1],
  ]);
  out.set("p010a", [[p(11), 1]]);
  return out;
}

async function write(listsById: Map<string, Array<[string, number]>>) {
  await pool.query(`delete from "${schema}".item_neighbors`);
  const values: unknown[] = [];
  const tuples: string[] = [];
  for (const [id, list] of listsById)
    list.forEach(([n, score], r) => {
      values.push(id, n, score, r + 1);
      const k = values.length;
      tuples.push(`('next', $${k - 3}, $${k - 2}, $${k - 1}, $${k}, 1)`);
    });
  await pool.query(
    `insert into "${schema}".item_neighbors (kind, product_id, neighbor_id, score, rank, model_version) values ${tuples.join(", ")}`,
    values,
  );
  // Other kinds do not count.
  await pool.query(
    `insert into "${schema}".item_neighbors (kind, product_id, neighbor_id, score, rank, model_version)
     values ('similar', 'p000', 'p001', 1, 1, 1)`,
  );
}

beforeAll(async () => {
  await pool.query(
    [
      `create schema "${schema}"`,
      ...["catalog", "item_neighbors"].map((t) => `create table "${schema}".${t} (like public.${t} including all)`),
    ].join(";\n"),
  );
  await pool.query(`insert into "${schema}".catalog (id, title) select id, id from unnest($1::text[]) id`, [ids]);
});

afterAll(async () => {
  await pool.query(`drop schema if exists "${schema}" cascade`);
  await end();
  await pool.end();
});

describe("catalogOrderStat", () => {
  it("counts the near neighbours among the top ones exactly as CatalogueOrder.measure does", async () => {
    const l = lists();
    await write(l);
    const order = new CatalogueOrder(ids);
    for (const [span, top] of [
      [12, 10],
      [1, 10],
      [3, 2],
      [2, 1],
    ] as const) {
      const sql = await catalogOrderStat(db, span, top);
      expect(sql).toEqual(order.measure(l, top, span));
    }
    // By hand, span 1, top 10: each p-product's neighbours in the catalogue are i+1, i+300, i+2 (3 pairs; the unknown
    // id is no pair); near at span 1 only i+1, except p599 → p000 (599 places apart) and p010 → p011 (p010a lies
    // between them: 2 places). "P5" → p000, p001 (2 and 3 places); "p010a" → p011 (1 place). Pairs N·3 + 2 + 1.
    expect(await catalogOrderStat(db, 1, 10)).toEqual({ pairs: 3 * N + 3, near: N - 1, products: N + 3, span: 1 });
  });

  it("finds an order that predicts the next items, and none in shuffled ids", async () => {
    await write(lists());
    expect(orderPredictive(await catalogOrderStat(db))).toBe(true);
    // The same lists over ids that carry no order: each product's followers are spread over the catalogue.
    const shuffled = new Map<string, Array<[string, number]>>();
    for (let i = 0; i < N; i++) {
      const at = (k: number) => p((i * 7 + k * 17) % N);
      shuffled.set(p(i), [
        [at(1), 3],
        [at(2), 2],
        [at(3), 1],
      ]);
    }
    await write(shuffled);
    const stat = await catalogOrderStat(db);
    expect(stat.pairs).toBeGreaterThanOrEqual(100);
    expect(orderPredictive(stat)).toBe(false);
  });
});
