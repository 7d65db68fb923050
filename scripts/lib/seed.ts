// The demo seed: the UCI Online Retail data (scripts/lib/uci-retail.ts) into the warehouse — the catalogue
// through the catalogue upsert, every customer's sale line as an "Order Completed" event with its purchase
// interaction through the same derivation (src/batch/warehouse.ts) and bulk inserts (src/batch/bulk.ts) as the
// loader. Message ids are deterministic, inserts are ON CONFLICT DO NOTHING: seeding twice adds nothing.
// Used by `npm run seed` and by `npm run dev` when the catalogue is empty.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import { inArray, sql } from "drizzle-orm";
import { insertEvents, insertInteractions } from "../../src/batch/bulk.ts";
import { type CatalogItem, upsertCatalog } from "../../src/batch/catalog.ts";
import { OTHER_CATEGORY } from "../../src/batch/categories.ts";
import { type EventRow, type InteractionRow, warehouseRows } from "../../src/batch/warehouse.ts";
import type { CollectedEvent } from "../../src/collect/event.ts";
import { type Database, type DbSettings, drizzleOn, openPool } from "../../src/stores/db.ts";
import { catalog, events } from "../../src/stores/schema.ts";
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
   * lies inside the recommenders' day-based windows, as a live store's would). Omit to keep the original dates.
   * Either applies only to a first seed of the file: once some of its purchases are in the warehouse, a later seed
   * shifts by their shift (timeShift).
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
  /** Added to every purchase time (ms); `earlier`: the shift of this file's purchases seeded before. */
  shift: { ms: number; earlier: boolean };
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

type Purchase = { line: RetailLine; event: CollectedEvent };

/**
 * Purchases looked up to find an earlier seed's shift: the newest, which every seed loads (all of the file, or the
 * newest N), a few hundred in case some of their customers were erased since.
 */
const SHIFT_PROBES = 500;

/** The newest `count` purchases, in time order (stable: the file is in time order already, ties keep its order). */
function newest(purchases: readonly Purchase[], count: number): Purchase[] {
  return purchases
    .map((p, k) => ({ p, k }))
    .sort((a, b) =>
      a.p.event.timestamp < b.p.event.timestamp ? -1 : a.p.event.timestamp > b.p.event.timestamp ? 1 : a.k - b.k,
    )
    .slice(Math.max(0, purchases.length - count))
    .map(({ p }) => p);
}

/**
 * The shift (ms) added to every purchase time. Purchases of this file already in the warehouse decide it: a later
 * seed (`npm run seed` after `npm run dev` loaded the newest 50,000) shifts by their constant, so the history keeps
 * its order whatever `endAt` it is given. Otherwise the shift that puts the newest purchase at `endAt`, or none.
 */
async function timeShift(
  db: Database,
  purchases: readonly Purchase[],
  endAt: Date | undefined,
): Promise<SeedReport["shift"]> {
  const earlier = await earlierShift(db, newest(purchases, SHIFT_PROBES));
  if (earlier !== null) return { ms: earlier, earlier: true };
  return { ms: endAt && purchases.length > 0 ? endAt.getTime() - newestTime(purchases) : 0, earlier: false };
}

/** The shift of those of `probes` already in the warehouse (event time − time in the file); null for none. */
async function earlierShift(db: Database, probes: readonly Purchase[]): Promise<number | null> {
  const original = new Map(probes.map((p) => [p.event.messageId, Date.parse(p.event.timestamp)]));
  if (original.size === 0) return null;
  const [seeded] = await db
    .select({ messageId: events.messageId, eventTime: events.eventTime })
    .from(events)
    .where(inArray(events.messageId, [...original.keys()]))
    .limit(1);
  const at = seeded && original.get(seeded.messageId);
  return seeded && at !== undefined ? seeded.eventTime.getTime() - at : null;
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
      .filter((p): p is Purchase => p.event !== null);
    if (options.newestEvents !== undefined && purchases.length > options.newestEvents) {
      purchases = newest(purchases, options.newestEvents);
    }
    const shift = await timeShift(db, purchases, options.endAt);
    if (shift.earlier) {
      say(`times shifted by ${(shift.ms / 86_400_000).toFixed(2)} days, as the purchases of this file seeded before`);
    }
    if (shift.ms !== 0) {
      purchases = purchases.map(({ line, event }) => {
        const shifted = new Date(Date.parse(event.timestamp) + shift.ms).toISOString();
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
      shift,
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
