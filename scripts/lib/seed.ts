// The demo seed: the UCI Online Retail data (scripts/lib/uci-retail.ts) into the warehouse — the catalogue
// through the catalogue upsert, every customer's sale line as an "Order Completed" event with its purchase
// interaction through the same derivation (src/batch/warehouse.ts) and bulk inserts (src/batch/bulk.ts) as the
// loader. Message ids are deterministic, inserts are ON CONFLICT DO NOTHING: seeding twice adds nothing.
// Used by `npm run seed` and by `npm run dev` when the catalogue is empty.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import { sql } from "drizzle-orm";
import { insertEvents, insertInteractions } from "../../src/batch/bulk.ts";
import { type CatalogItem, upsertCatalog } from "../../src/batch/catalog.ts";
import { OTHER_CATEGORY } from "../../src/batch/categories.ts";
import { type EventRow, type InteractionRow, warehouseRows } from "../../src/batch/warehouse.ts";
import type { CollectedEvent } from "../../src/collect/event.ts";
import { type Database, type DbSettings, drizzleOn, openPool } from "../../src/stores/db.ts";
import { catalog } from "../../src/stores/schema.ts";
import { CatalogBuilder, parseUciLines, purchaseEvent, type RetailLine } from "./uci-retail.ts";
import { REPO_ROOT } from "./worker.ts";

/** `../shared/data` next to the repository (not part of it: the data stays where it was provided). */
export const UCI_RETAIL_FILE = join(REPO_ROOT, "..", "shared", "data", "uci-online-retail", "online_retail.csv.gz");

/**
 * Rows per INSERT statement: 5,000 events (~2 MB of JSON in one parameter) — big enough that round trips do not
 * dominate, small enough that one statement stays well under a second.
 */
export const SEED_CHUNK_ROWS = 5_000;

export interface SeedOptions {
  settings: DbSettings;
  /** The gzip'd (or plain) CSV; UCI_RETAIL_FILE by default. */
  file?: string;
  chunkRows?: number;
  /** Only the newest this-many purchase events (by invoice time; the catalogue is always complete). */
  newestEvents?: number;
  /**
   * Shift every purchase time by the same amount so that the newest one falls here (the 2010–2011 history then
   * lies inside the recommenders' day-based windows, as a live store's would). Each event keeps its original
   * time in `originalTimestamp`. Omit to keep the original dates.
   */
  endAt?: Date;
  log?: (line: string) => void;
}

export interface SeedReport {
  file: string;
  lines: number;
  products: number;
  /** Products whose category is not "Other". */
  categorized: number;
  categories: Record<string, number>;
  catalog: { inserted: number; updated: number; unchanged: number };
  /** Customer sale lines turned into events. */
  events: number;
  /** Event time of the oldest and newest seeded event (ISO), null without events. */
  from: string | null;
  to: string | null;
  eventsInserted: number;
  interactionsInserted: number;
  customers: number;
  orders: number;
  countries: number;
  timings: { readMs: number; catalogMs: number; eventsMs: number; totalMs: number };
}

/** Every line of the UCI file (gzip'd or plain), numbered within its invoice. */
export function readLines(file: string): { lines: RetailLine[]; readMs: number } {
  const started = performance.now();
  const raw = readFileSync(file);
  const lines = parseUciLines((file.endsWith(".gz") ? gunzipSync(raw) : raw).toString("utf8"));
  return { lines, readMs: Math.round(performance.now() - started) };
}

/** Whether the catalogue has no row (what `npm run dev` checks before seeding). */
export async function catalogIsEmpty(settings: DbSettings): Promise<boolean> {
  const pool = openPool(settings);
  try {
    const rows = await drizzleOn(pool).select({ one: sql<number>`1` }).from(catalog).limit(1);
    return rows.length === 0;
  } finally {
    await pool.end();
  }
}

/**
 * The time (epoch ms) of the newest purchase; -Infinity for none. A loop: spreading the full file's 396,340
 * purchases into Math.max's arguments overflows the stack.
 */
export function newestTime(purchases: ReadonlyArray<{ event: CollectedEvent }>): number {
  let newest = Number.NEGATIVE_INFINITY;
  for (const p of purchases) newest = Math.max(newest, Date.parse(p.event.timestamp));
  return newest;
}

async function insertChunks(
  db: Database,
  events: EventRow[],
  interactions: InteractionRow[],
): Promise<{ events: number; interactions: number }> {
  // Two connections of the pool: the events and the interactions statements run side by side.
  const [e, i] = await Promise.all([insertEvents(db, events), insertInteractions(db, interactions)]);
  return { events: e, interactions: i };
}

export async function seedUciRetail(options: SeedOptions): Promise<SeedReport> {
  const started = performance.now();
  const file = options.file ?? UCI_RETAIL_FILE;
  const chunkRows = options.chunkRows ?? SEED_CHUNK_ROWS;
  const say = options.log ?? (() => {});

  const { lines, readMs } = readLines(file);
  const builder = new CatalogBuilder();
  for (const line of lines) builder.add(line);
  const items = builder.items();
  const byId = new Map<string, CatalogItem>(items.map((item) => [item.id, item]));
  const categories: Record<string, number> = {};
  for (const item of items)
    categories[item.category ?? OTHER_CATEGORY] = (categories[item.category ?? OTHER_CATEGORY] ?? 0) + 1;

  const pool = openPool(options.settings);
  try {
    const db = drizzleOn(pool);
    const catalogStarted = performance.now();
    const upserted = await upsertCatalog(db, items);
    const catalogMs = Math.round(performance.now() - catalogStarted);
    say(`catalog: ${items.length} products (${upserted.inserted} new, ${upserted.updated} changed) in ${catalogMs} ms`);

    const eventsStarted = performance.now();
    const customers = new Set<string>();
    const orders = new Set<string>();
    const countries = new Set<string>();
    let events: EventRow[] = [];
    let interactions: InteractionRow[] = [];
    let total = 0;
    let eventsInserted = 0;
    let interactionsInserted = 0;
    const flush = async () => {
      const written = await insertChunks(db, events, interactions);
      eventsInserted += written.events;
      interactionsInserted += written.interactions;
      events = [];
      interactions = [];
    };
    let purchases = lines
      .map((line) => ({ line, event: purchaseEvent(line, byId.get(line.stockCode)) }))
      .filter((p): p is { line: RetailLine; event: CollectedEvent } => p.event !== null);
    if (options.newestEvents !== undefined && purchases.length > options.newestEvents) {
      // Stable sort by time (the file is in time order already; ties keep file order), then the newest N.
      purchases = purchases
        .map((p, k) => ({ ...p, k }))
        .sort((a, b) =>
          a.event.timestamp < b.event.timestamp ? -1 : a.event.timestamp > b.event.timestamp ? 1 : a.k - b.k,
        )
        .slice(purchases.length - options.newestEvents);
    }
    if (options.endAt && purchases.length > 0) {
      const shiftMs = options.endAt.getTime() - newestTime(purchases);
      purchases = purchases.map(({ line, event }) => {
        const shifted = new Date(Date.parse(event.timestamp) + shiftMs).toISOString();
        return { line, event: { ...event, timestamp: shifted, receivedAt: shifted } };
      });
    }
    let from: string | null = null;
    let to: string | null = null;
    for (const { line, event } of purchases) {
      const rows = warehouseRows(event);
      events.push(rows.event);
      interactions.push(...rows.interactions);
      total++;
      customers.add(line.customerId);
      orders.add(line.invoice);
      if (rows.event.country) countries.add(rows.event.country);
      if (from === null || rows.event.eventTime < from) from = rows.event.eventTime;
      if (to === null || rows.event.eventTime > to) to = rows.event.eventTime;
      if (events.length >= chunkRows) await flush();
    }
    if (events.length > 0) await flush();
    const eventsMs = Math.round(performance.now() - eventsStarted);
    say(`events: ${total} purchases (${eventsInserted} new) of ${customers.size} customers in ${eventsMs} ms`);

    return {
      file,
      lines: lines.length,
      products: items.length,
      categorized: items.filter((i) => i.category !== OTHER_CATEGORY).length,
      categories,
      catalog: { inserted: upserted.inserted, updated: upserted.updated, unchanged: upserted.unchanged },
      events: total,
      from,
      to,
      eventsInserted,
      interactionsInserted,
      customers: customers.size,
      orders: orders.size,
      countries: countries.size,
      timings: { readMs, catalogMs, eventsMs, totalMs: Math.round(performance.now() - started) },
    };
  } finally {
    await pool.end();
  }
}
