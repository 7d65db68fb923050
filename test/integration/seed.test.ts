// The demo seed against the real test Postgres, from a small synthetic file in the UCI Online Retail layout
// (test/fixtures; the real data stays in ../shared/data): catalogue, purchase events and interactions, idempotent.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, inject, it } from "vitest";
import { seedUciRetail } from "../../scripts/lib/seed.ts";
import { openPool } from "../../src/stores/db.ts";

const stack = inject("stack");
const settings = { databaseUrl: stack.DATABASE_URL, localWsProxy: stack.NEON_LOCAL_WS_PROXY };
const FIXTURE = join(import.meta.dirname, "..", "fixtures", "uci-online-retail-sample.csv");
const HEADER = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country";
const dir = mkdtempSync(join(tmpdir(), "lastmile-seed-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function query<T>(text: string, params: unknown[] = []): Promise<T[]> {
  const pool = openPool(settings);
  try {
    return (await pool.query(text, params)).rows as T[];
  } finally {
    await pool.end();
  }
}

describe("seedUciRetail", () => {
  it("loads the catalogue and the customers' purchases, and a second run adds nothing", async () => {
    const first = await seedUciRetail({ settings, file: FIXTURE, chunkRows: 3 });
    expect(first).toMatchObject({
      lines: 11,
      products: 5,
      categorized: 4,
      categories: { "Candles & Lights": 1, Mugs: 1, "Cards & Wrap": 1, Christmas: 1, Other: 1 },
      events: 8, // postage, the cancellation and the line without a customer are not purchases
      eventsInserted: 8,
      interactionsInserted: 8,
      customers: 3,
      orders: 4,
      countries: 2,
      from: "2010-12-01T08:26:00.000Z",
      to: "2010-12-06T14:30:00.000Z",
    });

    const catalog = await query<{ id: string; title: string; price: number; category: string; tags: string[] }>(
      "select id, title, price, category, tags from catalog where id = any($1) order by id",
      [["90001A", "90002", "90003"]],
    );
    expect(catalog).toEqual([
      {
        id: "90001A",
        title: "WHITE HANGING HEART T-LIGHT HOLDER",
        price: 2.95,
        category: "Candles & Lights",
        tags: ["white", "hanging", "heart", "t-light", "holder"],
      },
      { id: "90002", title: "RED RETROSPOT MUG", price: 1.25, category: "Mugs", tags: ["red", "mug"] },
      {
        id: "90003",
        title: "SET OF 6 VINTAGE GIFT CARDS, ASSORTED",
        price: 3.75,
        category: "Cards & Wrap",
        tags: ["cards"],
      },
    ]);

    const purchases = await query<{ user_key: string; order_id: string; product_id: string; quantity: number }>(
      `select i.user_key, i.order_id, i.product_id, i.quantity from interactions i
       where i.message_id like 'uci-90000%' and i.kind = 'purchase' order by i.event_time, i.message_id`,
    );
    expect(purchases.map((p) => `${p.user_key} ${p.order_id} ${p.product_id}×${p.quantity}`)).toEqual([
      "u:91001 900001 90001A×6",
      "u:91001 900001 90002×12",
      "u:91002 900002 90002×4",
      "u:91002 900002 90003×2",
      "u:91002 900002 90004×1",
      "u:91003 900005 90005×1",
      "u:91003 900005 90001A×2",
      "u:91001 900006 90002×24",
    ]);
    const countries = await query<{ country: string | null; n: number }>(
      "select country, count(*)::int as n from events where message_id like 'uci-90000%' group by 1 order by 1",
    );
    expect(countries).toEqual([
      { country: "FR", n: 3 },
      { country: "GB", n: 3 },
      { country: null, n: 2 },
    ]);

    const again = await seedUciRetail({ settings, file: FIXTURE });
    expect(again).toMatchObject({ eventsInserted: 0, interactionsInserted: 0, catalog: { inserted: 0, updated: 0 } });
  });

  it("shifts a later seed by the first one's shift: `npm run dev` seeds the newest purchases, `npm run seed` the rest", async () => {
    const tag = crypto.randomUUID().replace(/\D/g, "").slice(0, 6).padEnd(6, "0");
    const rows = [1, 2, 3, 4, 5, 6].map(
      (d) => `7${tag}${d},T${tag},BLUE MUG,1,2010-12-0${d}T10:00:00Z,1.5,8${tag},France`,
    );
    const file = join(dir, "sample.csv");
    writeFileSync(file, `${[HEADER, ...rows].join("\n")}\n`);

    const first = await seedUciRetail({ settings, file, newestEvents: 3, endAt: new Date("2026-11-20T12:00:00Z") });
    expect(first).toMatchObject({ events: 3, to: "2026-11-20T12:00:00.000Z" });
    // A week later, all of the file: the three older purchases go before the three loaded first.
    const later = await seedUciRetail({ settings, file, endAt: new Date("2026-11-27T12:00:00Z") });
    expect(later).toMatchObject({ events: 6, eventsInserted: 3, from: "2026-11-15T12:00:00.000Z" });

    const events = await query<{ invoice: string; at: string }>(
      `select properties->>'order_id' as invoice, to_char(event_time at time zone 'UTC', 'YYYY-MM-DD HH24:MI') as at
       from events where user_id = $1 order by event_time, message_id`,
      [`8${tag}`],
    );
    expect(events).toEqual(
      [15, 16, 17, 18, 19, 20].map((day, k) => ({ invoice: `7${tag}${k + 1}`, at: `2026-11-${day} 12:00` })),
    );
  });

  it("can load only the newest purchases", async () => {
    const r = await seedUciRetail({ settings, file: FIXTURE, newestEvents: 3 });
    expect(r).toMatchObject({ events: 3, from: "2010-12-05T13:00:00.000Z", to: "2010-12-06T14:30:00.000Z" });
  });
});
