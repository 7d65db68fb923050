// Bulk writes of warehouse rows: one statement per table per batch, whatever the batch size. The rows travel as
// ONE JSON parameter expanded by `json[b]_to_recordset` — a single bind value instead of rows × columns parameters
// (Postgres allows 65,535 per statement, and parsing thousands of placeholders costs more than parsing JSON).
// Column names and types come from the drizzle schema, so a renamed column cannot drift from these statements.
//
// Conflict rules (what makes a re-load harmless): events and interactions `ON CONFLICT DO NOTHING` (a message is
// immutable once loaded); identities keep the earliest first_seen and the latest last_seen.
import { getTableColumns, type SQL, sql } from "drizzle-orm";
import type { PgColumn, PgTable } from "drizzle-orm/pg-core";
import type { Database } from "../stores/db.ts";
import { events, identities, interactions } from "../stores/schema.ts";
import type { EventRow, InteractionRow, mergeIdentities } from "./warehouse.ts";

/** What runs statements: the database or an open transaction. */
export type Executor = Pick<Database, "execute">;

/**
 * Postgres rejects NUL in text and jsonb, and jsonb rejects unpaired UTF-16 surrogates; a client can send both.
 * Strings (keys included) lose NUL and get U+FFFD for a lone surrogate, so one odd event cannot fail a batch.
 */
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;

// biome-ignore lint/suspicious/noControlCharactersInRegex: NUL is exactly what this looks for.
const NEEDS_CLEANING = /[\u0000\ud800-\udfff]/;

/** Whether cleanString may change `s` (a NUL, or a surrogate: paired ones are kept): one scan, no copy. */
export function needsCleaning(s: string): boolean {
  return NEEDS_CLEANING.test(s);
}

export function cleanString(s: string): string {
  return s.replaceAll("\u0000", "").replace(LONE_SURROGATE, "\ufffd");
}

function cleanValue(value: unknown): unknown {
  if (typeof value === "string") return cleanString(value);
  if (Array.isArray(value)) return value.map(cleanValue);
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [cleanString(k), cleanValue(v)]));
  }
  return value;
}

/** JSON that Postgres accepts as json/jsonb/text: the slow cleaning pass runs only when the fast check finds an escape. */
export function postgresJson(value: unknown): string {
  const json = JSON.stringify(value);
  // JSON.stringify writes NUL as \u0000 and a lone surrogate as \udXXX; paired surrogates stay raw characters.
  return /\\u0000|\\ud[89a-f]/i.test(json) ? JSON.stringify(cleanValue(value)) : json;
}

interface Recordset {
  /** `"col_a", "col_b"` */
  names: SQL;
  /** `json[b]_to_recordset($1) as r("col_a" text, …)` */
  source: SQL;
}

/**
 * The rows as a recordset over `table`'s columns `keys` (drizzle property names). Row objects are re-keyed by
 * column name, which is what json_to_recordset matches on.
 */
function recordset<T extends PgTable>(table: T, keys: readonly string[], rows: readonly object[]): Recordset {
  const all = getTableColumns(table) as Record<string, PgColumn>;
  const columns = keys.map((key) => {
    const column = all[key];
    if (!column) throw new Error(`no column ${key}`);
    return column;
  });
  const payload = rows.map((row) => {
    const r = row as Record<string, unknown>;
    const out: Record<string, unknown> = {};
    keys.forEach((key, i) => {
      out[(columns[i] as PgColumn).name] = r[key] ?? null;
    });
    return out;
  });
  const quoted = columns.map((c) => `"${c.name}"`);
  const definitions = columns.map((c, i) => `${quoted[i]} ${c.getSQLType()}`).join(", ");
  // With jsonb columns, parsing the document once as jsonb beats json (whose jsonb fields are parsed twice);
  // without, plain json is about twice as fast (measured on 5,000-row batches, docs/data-model.md).
  const source = columns.some((c) => c.getSQLType() === "jsonb")
    ? sql`jsonb_to_recordset(${postgresJson(payload)}::jsonb)`
    : sql`json_to_recordset(${postgresJson(payload)}::json)`;
  return { names: sql.raw(quoted.join(", ")), source: sql`${source} as r(${sql.raw(definitions)})` };
}

function rowCount(result: unknown): number {
  return (result as { rowCount?: number | null }).rowCount ?? 0;
}

const EVENT_KEYS = [
  "messageId",
  "userKey",
  "userId",
  "anonymousId",
  "type",
  "event",
  "name",
  "productId",
  "previousId",
  "groupId",
  "properties",
  "traits",
  "context",
  "country",
  "sourceId",
  "eventTime",
  "receivedAt",
  "streamId",
] as const satisfies readonly (keyof EventRow)[];

const INTERACTION_KEYS = [
  "messageId",
  "position",
  "userKey",
  "productId",
  "kind",
  "weight",
  "quantity",
  "price",
  "orderId",
  "eventTime",
] as const satisfies readonly (keyof InteractionRow)[];

const IDENTITY_KEYS = ["anonymousId", "userId", "firstSeen", "lastSeen"] as const;

export type IdentityRow = ReturnType<typeof mergeIdentities>[number];

/** `insert into events … on conflict do nothing` (no RETURNING). */
function eventsInsert(rows: readonly EventRow[]): SQL {
  const r = recordset(events, EVENT_KEYS, rows);
  return sql`insert into ${events} (${r.names}) select ${r.names} from ${r.source} on conflict (${sql.identifier(events.messageId.name)}) do nothing`;
}

function interactionsInsert(rows: readonly InteractionRow[]): SQL {
  const r = recordset(interactions, INTERACTION_KEYS, rows);
  return sql`insert into ${interactions} (${r.names}) select ${r.names} from ${r.source} on conflict do nothing`;
}

/** A link already covering the times is left alone (no dead tuple). */
function identitiesUpsert(rows: readonly IdentityRow[]): SQL {
  const r = recordset(identities, IDENTITY_KEYS, rows);
  return sql`
    insert into ${identities} (${r.names}) select ${r.names} from ${r.source}
    on conflict (anonymous_id, user_id) do update set
      first_seen = least(${identities.firstSeen}, excluded.first_seen),
      last_seen = greatest(${identities.lastSeen}, excluded.last_seen)
    where excluded.first_seen < ${identities.firstSeen} or excluded.last_seen > ${identities.lastSeen}`;
}

/** Inserts events that are not there yet; returns how many were new. */
export async function insertEvents(db: Executor, rows: readonly EventRow[]): Promise<number> {
  return rows.length === 0 ? 0 : rowCount(await db.execute(eventsInsert(rows)));
}

/** Inserts interactions that are not there yet; returns how many were new. */
export async function insertInteractions(db: Executor, rows: readonly InteractionRow[]): Promise<number> {
  return rows.length === 0 ? 0 : rowCount(await db.execute(interactionsInsert(rows)));
}

/** Upserts identity links (one row per pair: see `mergeIdentities`); returns how many were inserted or widened. */
export async function upsertIdentities(db: Executor, rows: readonly IdentityRow[]): Promise<number> {
  return rows.length === 0 ? 0 : rowCount(await db.execute(identitiesUpsert(rows)));
}

export interface WarehouseBatch {
  events: readonly EventRow[];
  interactions: readonly InteractionRow[];
  identities: readonly IdentityRow[];
}

export interface BatchWrite {
  events: number;
  interactions: number;
  identities: number;
}

/**
 * A whole batch in ONE statement (data-modifying CTEs): events, interactions and identities — one round trip
 * instead of three. The counts of new (or widened) rows come back in one row.
 */
export async function writeBatch(db: Executor, batch: WarehouseBatch): Promise<BatchWrite> {
  const parts: SQL[] = [];
  const counts: SQL[] = [];
  const add = (name: keyof BatchWrite, statement: SQL) => {
    // CTE "new_<table>": a CTE named like its table would shadow the table in the outer SELECT.
    parts.push(sql`${sql.raw(`new_${name}`)} as (${statement} returning 1)`);
    counts.push(sql`(select count(*) from ${sql.raw(`new_${name}`)})::int as ${sql.raw(name)}`);
  };
  if (batch.events.length > 0) add("events", eventsInsert(batch.events));
  if (batch.interactions.length > 0) add("interactions", interactionsInsert(batch.interactions));
  // In key order: concurrent batches then lock shared identity rows in the same order (no deadlock).
  if (batch.identities.length > 0) add("identities", identitiesUpsert(sortedIdentities(batch.identities)));
  if (parts.length === 0) return { events: 0, interactions: 0, identities: 0 };
  const result = await db.execute(sql`with ${sql.join(parts, sql`, `)} select ${sql.join(counts, sql`, `)}`);
  const row = (result.rows[0] ?? {}) as Partial<BatchWrite>;
  return { events: row.events ?? 0, interactions: row.interactions ?? 0, identities: row.identities ?? 0 };
}

function sortedIdentities(rows: readonly IdentityRow[]): IdentityRow[] {
  const key = (r: IdentityRow) => `${r.anonymousId}\u0000${r.userId}`;
  return [...rows].sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0));
}
