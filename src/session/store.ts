// SQLite access for one SessionState object: the schema, typed reads and writes, and compaction to the bounds of
// limits.ts. Synchronous (DO SQLite is in-process); callers group writes in `transactionSync`.
//
// Every sorted read has an index on its sort column, so its cost does not grow with the table. Row counts of the
// bounded tables are kept in memory (counted once per activation) so compaction needs no COUNT(*) per write.
import { utf8Length } from "../collect/json.ts";
import { decayFactor, rankOf } from "./decay.ts";
import {
  AFFINITY_MAX,
  INTERACTIONS_MAX,
  MERGED_MAX,
  RECENT_KINDS,
  RECENT_MAX,
  type RecentKind,
  SEEN_MAX,
} from "./limits.ts";
import type { AffinityRow, MergedRow, MergeStatus, PortableState, SeenRow, StoredInteraction } from "./model.ts";
import type { CurrentSession } from "./visit.ts";
import { HALF_LIFE_MS, HORIZONS, type Horizon, type InteractionKind } from "./weights.ts";

export const SCHEMA_VERSION = 2;

const SCHEMA = [
  "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
  `CREATE TABLE IF NOT EXISTS profile (
     id INTEGER PRIMARY KEY CHECK (id = 1),
     user_key TEXT NOT NULL,
     user_id TEXT,
     created_at INTEGER NOT NULL,
     last_event_at INTEGER,
     last_active_at INTEGER NOT NULL,
     merged_into TEXT,
     released INTEGER NOT NULL DEFAULT 0,
     session_id TEXT,
     session_started_at INTEGER,
     session_last_at INTEGER,
     session_events INTEGER NOT NULL DEFAULT 0,
     events INTEGER NOT NULL DEFAULT 0,
     duplicates INTEGER NOT NULL DEFAULT 0,
     outbox_attempts INTEGER NOT NULL DEFAULT 0,
     outbox_retry_at INTEGER)`,
  // `attempt`: the hand-off token of the record call that stored the id (null: none given, or an earlier version).
  "CREATE TABLE IF NOT EXISTS seen (message_id TEXT PRIMARY KEY, at INTEGER NOT NULL, attempt TEXT) WITHOUT ROWID",
  "CREATE INDEX IF NOT EXISTS seen_at ON seen (at)",
  `CREATE TABLE IF NOT EXISTS interactions (
     seq INTEGER PRIMARY KEY, at INTEGER NOT NULL, kind TEXT NOT NULL, product_id TEXT, category TEXT,
     brand TEXT, price REAL, query TEXT, tokens TEXT NOT NULL, message_id TEXT NOT NULL, session_id TEXT)`,
  "CREATE INDEX IF NOT EXISTS interactions_at ON interactions (at, seq)",
  `CREATE TABLE IF NOT EXISTS affinities (
     horizon TEXT NOT NULL, token TEXT NOT NULL, value REAL NOT NULL, at INTEGER NOT NULL, rank REAL NOT NULL,
     PRIMARY KEY (horizon, token)) WITHOUT ROWID`,
  "CREATE INDEX IF NOT EXISTS affinities_rank ON affinities (horizon, rank)",
  `CREATE TABLE IF NOT EXISTS recent (
     kind TEXT NOT NULL, value TEXT NOT NULL, at INTEGER NOT NULL, PRIMARY KEY (kind, value)) WITHOUT ROWID`,
  "CREATE INDEX IF NOT EXISTS recent_at ON recent (kind, at)",
  "CREATE TABLE IF NOT EXISTS merged (key TEXT PRIMARY KEY, status TEXT NOT NULL, at INTEGER NOT NULL) WITHOUT ROWID",
  "CREATE INDEX IF NOT EXISTS merged_at ON merged (at)",
  // AUTOINCREMENT: seqs are never reused, so the pending rows are always one contiguous range (cheap to count).
  `CREATE TABLE IF NOT EXISTS outbox (
     seq INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL, message_id TEXT NOT NULL, user_key TEXT NOT NULL,
     event TEXT NOT NULL)`,
];

/**
 * Columns added to a table after its first version (CREATE TABLE IF NOT EXISTS leaves an existing table as it is),
 * each added when it is missing: a database that a previous deploy set back to an older `schema_version` keeps the
 * column, and is not asked to add it twice.
 */
const ADDED_COLUMNS = [{ table: "seen", column: "attempt", definition: "attempt TEXT" }] as const;

export interface Profile {
  userKey: string;
  userId: string | null;
  createdAt: number;
  lastEventAt: number | null;
  /** Server time of the last write caused by the user (expiry counts from here). */
  lastActiveAt: number;
  mergedInto: string | null;
  /** Merged away and the target confirmed it: the data tables were emptied. */
  released: boolean;
  session: CurrentSession | null;
  events: number;
  duplicates: number;
  outboxAttempts: number;
  outboxRetryAt: number | null;
}

export interface OutboxRow {
  seq: number;
  at: number;
  messageId: string;
  userKey: string;
  /** The CollectedEvent as JSON, exactly as it goes into the stream. */
  event: string;
}

type Row = Record<string, SqlStorageValue>;

const AFFINITY_CAP: Record<Horizon, number> = AFFINITY_MAX;
/** Bound parameters per statement: SQLite's default limit is far higher, but keep `IN (…)` lists modest. */
const SQL_MAX_PARAMS = 90;

const num = (v: SqlStorageValue | undefined): number => Number(v);
const optNum = (v: SqlStorageValue | undefined): number | null => (v === null || v === undefined ? null : Number(v));
const optStr = (v: SqlStorageValue | undefined): string | null => (v === null || v === undefined ? null : String(v));

export class SessionStore {
  readonly #sql: SqlStorage;
  #ready = false;
  /** Row counts of the bounded tables, by count key; loaded lazily. */
  #counts = new Map<string, number>();

  constructor(sql: SqlStorage) {
    this.#sql = sql;
  }

  // ---- schema -------------------------------------------------------------------------------------------------

  /** Whether this object has ever been written (a never-seen user has no tables at all). */
  hasSchema(): boolean {
    if (this.#ready) return true;
    const row = this.#sql.exec("SELECT 1 AS x FROM sqlite_master WHERE type = 'table' AND name = 'profile'").toArray();
    return row.length > 0;
  }

  /** Brings an existing database to SCHEMA_VERSION; leaves a never-written object untouched (no storage). */
  openExisting(): void {
    if (!this.hasSchema()) return;
    const version = this.#sql.exec("SELECT value FROM meta WHERE key = 'schema_version'").toArray()[0]?.value;
    if (Number(version) !== SCHEMA_VERSION) this.ensureSchema();
    this.#ready = true;
  }

  /** Creates the tables (idempotent). Called before the first write. */
  ensureSchema(): void {
    if (this.#ready) return;
    for (const statement of SCHEMA) this.#sql.exec(statement);
    for (const { table, column, definition } of ADDED_COLUMNS) {
      const columns = this.#sql.exec(`PRAGMA table_info(${table})`).toArray();
      if (!columns.some((c) => c.name === column)) this.#sql.exec(`ALTER TABLE ${table} ADD COLUMN ${definition}`);
    }
    this.#sql.exec(
      "INSERT INTO meta (key, value) VALUES ('schema_version', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
      String(SCHEMA_VERSION),
    );
    this.#ready = true;
  }

  /** After `deleteAll()`: the tables are gone. */
  forget(): void {
    this.#ready = false;
    this.#counts.clear();
  }

  /** After a failed transaction the in-memory counts may be off: recount on next use. */
  invalidateCounts(): void {
    this.#counts.clear();
  }

  databaseSize(): number {
    return this.#sql.databaseSize;
  }

  // ---- profile ------------------------------------------------------------------------------------------------

  profile(): Profile | null {
    if (!this.hasSchema()) return null;
    const r = this.#sql.exec("SELECT * FROM profile WHERE id = 1").toArray()[0];
    if (!r) return null;
    const sessionId = optStr(r.session_id);
    return {
      userKey: String(r.user_key),
      userId: optStr(r.user_id),
      createdAt: num(r.created_at),
      lastEventAt: optNum(r.last_event_at),
      lastActiveAt: num(r.last_active_at),
      mergedInto: optStr(r.merged_into),
      released: num(r.released) === 1,
      session: sessionId
        ? {
            id: sessionId,
            startedAt: num(r.session_started_at),
            lastEventAt: num(r.session_last_at),
            eventCount: num(r.session_events),
          }
        : null,
      events: num(r.events),
      duplicates: num(r.duplicates),
      outboxAttempts: num(r.outbox_attempts),
      outboxRetryAt: optNum(r.outbox_retry_at),
    };
  }

  saveProfile(p: Profile): void {
    this.#sql.exec(
      `INSERT OR REPLACE INTO profile (id, user_key, user_id, created_at, last_event_at, last_active_at, merged_into,
         released, session_id, session_started_at, session_last_at, session_events, events, duplicates,
         outbox_attempts, outbox_retry_at)
       VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      p.userKey,
      p.userId,
      p.createdAt,
      p.lastEventAt,
      p.lastActiveAt,
      p.mergedInto,
      p.released ? 1 : 0,
      p.session?.id ?? null,
      p.session?.startedAt ?? null,
      p.session?.lastEventAt ?? null,
      p.session?.eventCount ?? 0,
      p.events,
      p.duplicates,
      p.outboxAttempts,
      p.outboxRetryAt,
    );
  }

  // ---- seen (dedupe) ------------------------------------------------------------------------------------------

  isSeen(messageId: string): boolean {
    return this.#sql.exec("SELECT 1 AS x FROM seen WHERE message_id = ?", messageId).toArray().length > 0;
  }

  /** Inserts the ids not yet present, each with its own time and attempt; returns how many were new. */
  markSeen(rows: readonly SeenRow[]): number {
    const inserted = this.#insertMany(
      "INSERT OR IGNORE INTO seen (message_id, at, attempt)",
      rows.map((row) => [row.messageId, row.at, row.attempt ?? null]),
      "RETURNING 1 AS x",
    );
    this.#bump("seen", inserted);
    return inserted;
  }

  /**
   * Inserts the ids not yet present, all at `at` under `attempt`, and returns those that were new: the dedupe check
   * and its write in one statement per chunk of SQL_MAX_PARAMS − 2 ids (the time and the attempt are bound once). An
   * id repeated within `messageIds` is new at most once.
   */
  claimSeen(messageIds: readonly string[], at: number, attempt: string | null): Set<string> {
    const fresh = this.#messageIdsOf(messageIds, 2, (chunk) =>
      this.#sql.exec(
        `INSERT OR IGNORE INTO seen (message_id, at, attempt)
         SELECT column1, ?, ? FROM (VALUES ${chunk.map(() => "(?)").join(", ")}) RETURNING message_id`,
        at,
        attempt,
        ...chunk,
      ),
    );
    this.#bump("seen", fresh.size);
    return fresh;
  }

  /** Those of `messageIds` that are seen under `attempt` (stored by a call that carried the same token). */
  seenUnder(attempt: string, messageIds: readonly string[]): Set<string> {
    return this.#messageIdsOf(messageIds, 1, (chunk) =>
      this.#sql.exec(
        `SELECT message_id FROM seen WHERE message_id IN (${chunk.map(() => "?").join(", ")}) AND attempt = ?`,
        ...chunk,
        attempt,
      ),
    );
  }

  /**
   * Runs `statement` once per chunk of `ids`, each chunk SQL_MAX_PARAMS − `others` ids (the statement binds `others`
   * parameters besides), and collects the `message_id` of every row the statements return.
   */
  #messageIdsOf(ids: readonly string[], others: number, statement: (chunk: string[]) => Iterable<Row>): Set<string> {
    const found = new Set<string>();
    const perChunk = SQL_MAX_PARAMS - others;
    for (let i = 0; i < ids.length; i += perChunk) {
      for (const r of statement(ids.slice(i, i + perChunk))) found.add(String(r.message_id));
    }
    return found;
  }

  pruneSeen(before: number): number {
    const n = this.#sql.exec("DELETE FROM seen WHERE at < ? RETURNING 1 AS x", before).toArray().length;
    this.#bump("seen", -n);
    return n;
  }

  oldestSeenAt(): number | null {
    return optNum(this.#sql.exec("SELECT MIN(at) AS at FROM seen").toArray()[0]?.at);
  }

  // ---- interactions -------------------------------------------------------------------------------------------

  insertInteractions(list: readonly StoredInteraction[]): void {
    this.#insertMany(
      "INSERT INTO interactions (at, kind, product_id, category, brand, price, query, tokens, message_id, session_id)",
      list.map((i) => [
        i.at,
        i.kind,
        i.productId,
        i.category,
        i.brand,
        i.price,
        i.query,
        JSON.stringify(i.tokens),
        i.messageId,
        i.sessionId,
      ]),
    );
    this.#bump("interactions", list.length);
  }

  /** Newest first. */
  interactions(limit: number): StoredInteraction[] {
    return this.#sql
      .exec("SELECT * FROM interactions ORDER BY at DESC, seq DESC LIMIT ?", limit)
      .toArray()
      .map((r: Row) => ({
        at: num(r.at),
        kind: String(r.kind) as InteractionKind,
        productId: optStr(r.product_id),
        category: optStr(r.category),
        brand: optStr(r.brand),
        price: optNum(r.price),
        query: optStr(r.query),
        tokens: JSON.parse(String(r.tokens)) as string[],
        messageId: String(r.message_id),
        sessionId: optStr(r.session_id),
      }));
  }

  // ---- affinities ---------------------------------------------------------------------------------------------

  /** The stored rows among `keys`, by `affinityKey`: one statement per chunk of keys (absent keys are absent). */
  affinitiesAmong(keys: ReadonlyArray<{ horizon: Horizon; token: string }>): Map<string, AffinityRow> {
    const found = new Map<string, AffinityRow>();
    const pairs = keys.map((k) => [k.horizon, k.token] as const);
    for (const r of this.#selectPairs(
      "SELECT horizon, token, value, at FROM affinities WHERE (horizon, token)",
      pairs,
    )) {
      const horizon = String(r.horizon) as Horizon;
      const token = String(r.token);
      found.set(affinityKey(horizon, token), { horizon, token, value: num(r.value), at: num(r.at) });
    }
    return found;
  }

  /**
   * Writes scores in one multi-row statement per chunk; a score that reached 0 is deleted instead. `existed`
   * (whether the row was stored before) keeps the row counts exact.
   */
  putAffinities(entries: ReadonlyArray<{ row: AffinityRow; existed: boolean }>): void {
    const delta = new Map<string, number>();
    const kept: AffinityRow[] = [];
    for (const { row, existed } of entries) {
      const key = `aff:${row.horizon}`;
      if (row.value > 0) {
        kept.push(row);
        if (!existed) delta.set(key, (delta.get(key) ?? 0) + 1);
      } else if (existed) {
        this.#sql.exec("DELETE FROM affinities WHERE horizon = ? AND token = ?", row.horizon, row.token);
        delta.set(key, (delta.get(key) ?? 0) - 1);
      }
    }
    this.#insertMany(
      "INSERT OR REPLACE INTO affinities (horizon, token, value, at, rank)",
      kept.map((row) => [row.horizon, row.token, row.value, row.at, rankOf(row, HALF_LIFE_MS[row.horizon])]),
    );
    // After the writes: a count not yet loaded is then read as it now stands.
    for (const [key, n] of delta) this.#bump(key, n);
  }

  clearAffinities(horizon: Horizon): void {
    this.#sql.exec("DELETE FROM affinities WHERE horizon = ?", horizon);
    this.#counts.set(`aff:${horizon}`, 0);
  }

  /** The top tokens by current score (through the rank index), decayed to `now`. */
  topAffinities(horizon: Horizon, limit: number, now: number): { token: string; score: number }[] {
    return decayedAffinities(horizon, this.topAffinityRows(horizon, limit), now);
  }

  /** The top `limit` affinities of a horizon as stored (value at time `at`), best first. */
  topAffinityRows(horizon: Horizon, limit: number): { token: string; value: number; at: number }[] {
    return this.#sql
      .exec("SELECT token, value, at FROM affinities WHERE horizon = ? ORDER BY rank DESC LIMIT ?", horizon, limit)
      .toArray()
      .map((r: Row) => ({ token: String(r.token), value: num(r.value), at: num(r.at) }));
  }

  allAffinities(): AffinityRow[] {
    return this.#sql
      .exec("SELECT horizon, token, value, at FROM affinities")
      .toArray()
      .map((r: Row) => ({
        horizon: String(r.horizon) as Horizon,
        token: String(r.token),
        value: num(r.value),
        at: num(r.at),
      }));
  }

  // ---- recent sets --------------------------------------------------------------------------------------------

  /** The stored times of the items among `keys`, by `recentKey`. */
  recentAmong(keys: ReadonlyArray<{ kind: RecentKind; value: string }>): Map<string, number> {
    const found = new Map<string, number>();
    const pairs = keys.map((k) => [k.kind, k.value] as const);
    for (const r of this.#selectPairs("SELECT kind, value, at FROM recent WHERE (kind, value)", pairs)) {
      found.set(recentKey(String(r.kind) as RecentKind, String(r.value)), num(r.at));
    }
    return found;
  }

  /**
   * Final states of recent items after a call: `at` null = removed. `existed` = stored before the call. Present
   * items go in with one multi-row statement per chunk; removed ones that were stored are deleted.
   */
  putRecent(entries: ReadonlyArray<{ kind: RecentKind; value: string; at: number | null; existed: boolean }>): void {
    const delta = new Map<string, number>();
    const present: SqlStorageValue[][] = [];
    for (const e of entries) {
      const key = `recent:${e.kind}`;
      if (e.at !== null) {
        present.push([e.kind, e.value, e.at]);
        if (!e.existed) delta.set(key, (delta.get(key) ?? 0) + 1);
      } else if (e.existed) {
        this.#sql.exec("DELETE FROM recent WHERE kind = ? AND value = ?", e.kind, e.value);
        delta.set(key, (delta.get(key) ?? 0) - 1);
      }
    }
    this.#insertMany("INSERT OR REPLACE INTO recent (kind, value, at)", present);
    // After the writes: a count not yet loaded is then read as it now stands.
    for (const [key, n] of delta) this.#bump(key, n);
  }

  /** Newest first. */
  recent(kind: RecentKind, limit: number): string[] {
    return this.#sql
      .exec("SELECT value FROM recent WHERE kind = ? ORDER BY at DESC LIMIT ?", kind, limit)
      .toArray()
      .map((r: Row) => String(r.value));
  }

  // ---- merged keys --------------------------------------------------------------------------------------------

  mergedStatus(key: string): MergeStatus | null {
    return this.mergedRow(key)?.status ?? null;
  }

  mergedRow(key: string): MergedRow | null {
    const r = this.#sql.exec("SELECT status, at FROM merged WHERE key = ?", key).toArray()[0];
    return r ? { key, status: String(r.status) as MergeStatus, at: num(r.at) } : null;
  }

  putMerged(row: MergedRow): void {
    const existed = this.mergedStatus(row.key) !== null;
    this.#sql.exec("INSERT OR REPLACE INTO merged (key, status, at) VALUES (?, ?, ?)", row.key, row.status, row.at);
    if (!existed) this.#bump("merged", 1);
  }

  /** Newest first. */
  mergedKeys(limit: number, statuses: readonly MergeStatus[] = ["merged", "claimed"]): string[] {
    const marks = statuses.map(() => "?").join(", ");
    return this.#sql
      .exec(`SELECT key FROM merged WHERE status IN (${marks}) ORDER BY at DESC LIMIT ?`, ...statuses, limit)
      .toArray()
      .map((r: Row) => String(r.key));
  }

  /** The anonymous id merged in first (an experiment's assignment unit after a login), or null. */
  firstMergedAnonymousId(statuses: readonly MergeStatus[] = ["merged", "claimed"]): string | null {
    const marks = statuses.map(() => "?").join(", ");
    const row = this.#sql
      .exec(
        `SELECT key FROM merged WHERE status IN (${marks}) AND key LIKE 'a:%' ORDER BY at, key LIMIT 1`,
        ...statuses,
      )
      .toArray()[0];
    return row ? String((row as Row).key).slice(2) : null;
  }

  // ---- outbox -------------------------------------------------------------------------------------------------

  enqueue(rows: readonly Omit<OutboxRow, "seq">[]): void {
    this.#insertMany(
      "INSERT INTO outbox (at, message_id, user_key, event)",
      rows.map((r) => [r.at, r.messageId, r.userKey, r.event]),
    );
  }

  /** Pending rows and the oldest one's time: O(1) through the primary key (rows leave in seq order). */
  outboxStats(): { pending: number; oldestAt: number | null } {
    if (!this.hasSchema()) return { pending: 0, oldestAt: null };
    const r = this.#sql
      .exec("SELECT MIN(seq) AS lo, MAX(seq) AS hi, (SELECT at FROM outbox ORDER BY seq LIMIT 1) AS oldest FROM outbox")
      .toArray()[0];
    const lo = optNum(r?.lo);
    const hi = optNum(r?.hi);
    if (lo === null || hi === null) return { pending: 0, oldestAt: null };
    return { pending: hi - lo + 1, oldestAt: optNum(r?.oldest) };
  }

  /**
   * The oldest rows, at most `limit` of them and about `maxBytes` of event JSON in UTF-8, as it goes over the wire (at
   * least one row). A string's length counts UTF-16 units, up to three times fewer than its bytes.
   */
  outboxBatch(limit: number, maxBytes: number): OutboxRow[] {
    const rows: OutboxRow[] = [];
    let bytes = 0;
    for (const r of this.#sql.exec("SELECT * FROM outbox ORDER BY seq LIMIT ?", limit)) {
      const event = String(r.event);
      const size = utf8Length(event);
      if (rows.length > 0 && bytes + size > maxBytes) break;
      bytes += size;
      rows.push({
        seq: num(r.seq),
        at: num(r.at),
        messageId: String(r.message_id),
        userKey: String(r.user_key),
        event,
      });
    }
    return rows;
  }

  /** Deletes the delivered prefix of the outbox. */
  deleteOutboxThrough(seq: number): void {
    this.#sql.exec("DELETE FROM outbox WHERE seq <= ?", seq);
  }

  // ---- export / import (identity merge) ----------------------------------------------------------------------

  exportState(profile: Profile, withSeen = true): PortableState {
    return {
      userKey: profile.userKey,
      userId: profile.userId,
      createdAt: profile.createdAt,
      lastEventAt: profile.lastEventAt,
      session: profile.session,
      events: profile.events,
      duplicates: profile.duplicates,
      interactions: this.interactions(INTERACTIONS_MAX * 2),
      affinities: this.allAffinities(),
      recent: this.#sql
        .exec("SELECT kind, value, at FROM recent")
        .toArray()
        .map((r: Row) => ({ kind: String(r.kind) as RecentKind, value: String(r.value), at: num(r.at) })),
      merged: this.#sql
        .exec("SELECT key, status, at FROM merged")
        .toArray()
        .map((r: Row) => ({ key: String(r.key), status: String(r.status) as MergeStatus, at: num(r.at) })),
      seen: !withSeen
        ? []
        : this.#sql
            .exec("SELECT message_id, at, attempt FROM seen")
            .toArray()
            .map((r: Row) => {
              const attempt = optStr(r.attempt);
              return attempt === null
                ? { messageId: String(r.message_id), at: num(r.at) }
                : { messageId: String(r.message_id), at: num(r.at), attempt };
            }),
    };
  }

  /** Replaces interactions, affinities and recent sets with merged ones (seen and merged keys are only added to). */
  replaceData(state: Pick<PortableState, "interactions" | "affinities" | "recent">): void {
    this.#sql.exec("DELETE FROM interactions");
    this.#sql.exec("DELETE FROM affinities");
    this.#sql.exec("DELETE FROM recent");
    this.#counts.clear();
    this.#counts.set("interactions", 0);
    for (const h of HORIZONS) this.#counts.set(`aff:${h}`, 0);
    for (const k of RECENT_KINDS) this.#counts.set(`recent:${k}`, 0);
    // Each writer below counts the rows it adds, so compaction sees the merged totals.
    this.insertInteractions(state.interactions);
    // Merged rows are one per key (merge.ts), so they go in as new rows with the batched writers.
    this.putAffinities(state.affinities.map((row) => ({ row, existed: false })));
    this.putRecent(state.recent.map((r) => ({ ...r, existed: false })));
  }

  /** Empties the data tables of an object merged away (its profile, merged pointer and outbox stay). */
  releaseData(): void {
    for (const table of ["seen", "interactions", "affinities", "recent", "merged"]) {
      this.#sql.exec(`DELETE FROM ${table}`);
    }
    this.#counts.clear();
  }

  // ---- compaction ---------------------------------------------------------------------------------------------

  /** Trims every bounded table that is over its cap, oldest / lowest-ranked rows first. */
  compact(): void {
    this.#trim(
      "interactions",
      INTERACTIONS_MAX,
      "DELETE FROM interactions WHERE seq IN (SELECT seq FROM interactions ORDER BY at, seq LIMIT ?)",
    );
    this.#trim(
      "seen",
      SEEN_MAX,
      "DELETE FROM seen WHERE message_id IN (SELECT message_id FROM seen ORDER BY at LIMIT ?)",
    );
    this.#trim("merged", MERGED_MAX, "DELETE FROM merged WHERE key IN (SELECT key FROM merged ORDER BY at LIMIT ?)");
    for (const kind of RECENT_KINDS) {
      this.#trim(
        `recent:${kind}`,
        RECENT_MAX[kind],
        "DELETE FROM recent WHERE kind = ?1 AND value IN (SELECT value FROM recent WHERE kind = ?1 ORDER BY at LIMIT ?2)",
        kind,
      );
    }
    for (const horizon of HORIZONS) {
      this.#trim(
        `aff:${horizon}`,
        AFFINITY_CAP[horizon],
        "DELETE FROM affinities WHERE horizon = ?1 AND token IN (SELECT token FROM affinities WHERE horizon = ?1 ORDER BY rank LIMIT ?2)",
        horizon,
      );
    }
  }

  /** Exact row counts (tests and diagnostics). */
  tableCounts(): Record<string, number> {
    const counts: Record<string, number> = {};
    for (const table of ["seen", "interactions", "affinities", "recent", "merged", "outbox"]) {
      counts[table] = num(this.#sql.exec(`SELECT COUNT(*) AS n FROM ${table}`).one().n);
    }
    return counts;
  }

  #countOf(key: string): number {
    const cached = this.#counts.get(key);
    if (cached !== undefined) return cached;
    const [table, part] = key.split(":") as [string, string | undefined];
    let n: number;
    if (table === "recent") n = num(this.#sql.exec("SELECT COUNT(*) AS n FROM recent WHERE kind = ?", part).one().n);
    else if (table === "aff")
      n = num(this.#sql.exec("SELECT COUNT(*) AS n FROM affinities WHERE horizon = ?", part).one().n);
    else n = num(this.#sql.exec(`SELECT COUNT(*) AS n FROM ${table}`).one().n);
    this.#counts.set(key, n);
    return n;
  }

  #bump(key: string, delta: number): void {
    if (delta === 0) return;
    const cached = this.#counts.get(key);
    // Unknown counts stay unknown: the next compaction counts them once.
    if (cached !== undefined) this.#counts.set(key, cached + delta);
    else this.#counts.set(key, this.#countOf(key));
  }

  /**
   * One multi-row INSERT per chunk of rows, each chunk under the bound-parameter limit: a batch of events costs a
   * few statements instead of one per row. Returns the number of rows the statement reported back (RETURNING).
   */
  #insertMany(head: string, rows: readonly SqlStorageValue[][], tail = ""): number {
    return this.#insertRows(head, rows, tail).length;
  }

  /** As #insertMany, returning the rows the statements reported back. */
  #insertRows(head: string, rows: readonly SqlStorageValue[][], tail = ""): Row[] {
    const columns = rows[0]?.length ?? 0;
    if (columns === 0) return [];
    const perChunk = Math.max(1, Math.floor(SQL_MAX_PARAMS / columns));
    const tuple = `(${new Array(columns).fill("?").join(", ")})`;
    const returned: Row[] = [];
    for (let i = 0; i < rows.length; i += perChunk) {
      const chunk = rows.slice(i, i + perChunk);
      const values = chunk.map(() => tuple).join(", ");
      returned.push(...this.#sql.exec(`${head} VALUES ${values} ${tail}`, ...chunk.flat()).toArray());
    }
    return returned;
  }

  /** Rows of `head` IN a list of (a, b) pairs (repeats dropped), one statement per chunk under the parameter limit. */
  *#selectPairs(head: string, pairs: ReadonlyArray<readonly [string, string]>): Generator<Row> {
    const unique = [...new Map(pairs.map((p) => [pairKey(p[0], p[1]), p])).values()];
    const perChunk = Math.floor(SQL_MAX_PARAMS / 2);
    for (let i = 0; i < unique.length; i += perChunk) {
      const chunk = unique.slice(i, i + perChunk);
      const values = chunk.map(() => "(?, ?)").join(", ");
      yield* this.#sql.exec(`${head} IN (VALUES ${values})`, ...chunk.flat());
    }
  }

  #trim(key: string, cap: number, statement: string, scope?: string): void {
    const n = this.#countOf(key);
    if (n <= cap) return;
    if (scope === undefined) this.#sql.exec(statement, n - cap);
    else this.#sql.exec(statement, scope, n - cap);
    this.#counts.set(key, cap);
  }
}

/** Map key of a two-column primary key. */
const pairKey = (a: string, b: string) => `${a}\u0000${b}`;
/** Map key of an affinity row. */
export const affinityKey: (horizon: Horizon, token: string) => string = pairKey;
/** Map key of a recent item. */
export const recentKey: (kind: RecentKind, value: string) => string = pairKey;

/**
 * Stored affinity rows decayed to `now`. The order stays the stored one: every row of a horizon decays at the same
 * rate, so the ranking by decayed score does not change with time.
 */
export function decayedAffinities(
  horizon: Horizon,
  rows: readonly { token: string; value: number; at: number }[],
  now: number,
): { token: string; score: number }[] {
  const halfLife = HALF_LIFE_MS[horizon];
  return rows.map((r) => ({ token: r.token, score: r.value * decayFactor(now - r.at, halfLife) }));
}
