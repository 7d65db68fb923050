// DeadLetters: one Durable Object per collection source (named by the source id), SQLite storage. It keeps the
// events collection rejected so an admin can see what a client sends wrong (GET /v1/admin/dead-letters).
// Bounded: the newest DEAD_LETTER_MAX_ROWS rows and nothing older than DEAD_LETTER_MAX_AGE_MS, pruned on every
// write and by an alarm (so old rows go even when no new ones come). RPC only:
//   store(entries)             durable when it returns (the output gate holds the reply until the write is on disk)
//   list({ limit, before })    newest first
//   eraseMentions(ids), countMentions(ids)   erasure of a user (docs/privacy.md): rows whose raw event names one of
//                              the ids as a JSON string value, or as a number in an id field
import { DurableObject } from "cloudflare:workers";
import type { DeadLetter, DeadLetterInput } from "./dead-letter-entry.ts";
import { DEAD_LETTER_MAX_AGE_MS, DEAD_LETTER_MAX_ROWS } from "./limits.ts";

export interface DeadLetterQuery {
  limit: number;
  /** Only rows with an id below this (the `nextBefore` of the previous page). */
  before?: number;
}

interface Row extends Record<string, SqlStorageValue> {
  id: number;
  source_id: string;
  request_id: string;
  received_ms: number;
  idx: number;
  code: string;
  message: string;
  message_id: string | null;
  raw: string;
  raw_bytes: number;
  truncated: number;
}

export class DeadLetters extends DurableObject<Env> {
  private readonly sql: SqlStorage;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    this.sql.exec(`
      CREATE TABLE IF NOT EXISTS dead_letters (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        source_id TEXT NOT NULL,
        request_id TEXT NOT NULL,
        received_ms INTEGER NOT NULL,
        idx INTEGER NOT NULL,
        code TEXT NOT NULL,
        message TEXT NOT NULL,
        message_id TEXT,
        raw TEXT NOT NULL,
        raw_bytes INTEGER NOT NULL,
        truncated INTEGER NOT NULL
      );
      CREATE INDEX IF NOT EXISTS dead_letters_received ON dead_letters (received_ms);
    `);
  }

  async store(entries: DeadLetterInput[]): Promise<{ stored: number }> {
    if (entries.length === 0) return { stored: 0 };
    this.ctx.storage.transactionSync(() => {
      for (const e of entries) {
        this.sql.exec(
          `INSERT INTO dead_letters (source_id, request_id, received_ms, idx, code, message, message_id, raw, raw_bytes, truncated)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
          e.sourceId,
          e.requestId,
          Date.parse(e.receivedAt),
          e.index,
          e.code,
          e.message,
          e.messageId,
          e.raw,
          e.rawBytes,
          e.truncated ? 1 : 0,
        );
      }
      this.prune(Date.now());
    });
    if ((await this.ctx.storage.getAlarm()) === null) await this.scheduleExpiry();
    return { stored: entries.length };
  }

  async list(query: DeadLetterQuery): Promise<DeadLetter[]> {
    const since = Date.now() - DEAD_LETTER_MAX_AGE_MS;
    const before = query.before ?? Number.MAX_SAFE_INTEGER;
    const rows = this.sql
      .exec<Row>(
        "SELECT * FROM dead_letters WHERE received_ms >= ? AND id < ? ORDER BY id DESC LIMIT ?",
        since,
        before,
        query.limit,
      )
      .toArray();
    return rows.map((r) => ({
      id: r.id,
      sourceId: r.source_id,
      requestId: r.request_id,
      receivedAt: new Date(r.received_ms).toISOString(),
      index: r.idx,
      code: r.code,
      message: r.message,
      messageId: r.message_id,
      raw: r.raw,
      rawBytes: r.raw_bytes,
      truncated: r.truncated === 1,
    }));
  }

  /**
   * Erasure (docs/privacy.md): deletes the rows whose raw event holds one of `ids` as a JSON string (`"<id>"`, as
   * userId, anonymousId, previousId or anywhere else — a rejected event may be malformed, so no field is trusted),
   * or, for an id that is a number's text, as that number in an id field (`"userId":12346`: collection accepts
   * numeric ids).
   */
  async eraseMentions(ids: string[]): Promise<{ deleted: number }> {
    let deleted = 0;
    this.ctx.storage.transactionSync(() => {
      for (const needles of mentions(ids)) {
        deleted += this.sql.exec(`DELETE FROM dead_letters WHERE ${anyOf(needles)}`, ...needles).rowsWritten;
      }
    });
    return { deleted };
  }

  /** How many rows `eraseMentions(ids)` would delete (the erasure verifier). */
  async countMentions(ids: string[]): Promise<{ count: number }> {
    // Rows, not matches: a row can match needles of two statements.
    const rows = new Set<number>();
    for (const needles of mentions(ids)) {
      const sql = `SELECT id FROM dead_letters WHERE ${anyOf(needles)}`;
      for (const r of this.sql.exec<{ id: number }>(sql, ...needles)) rows.add(r.id);
    }
    return { count: rows.size };
  }

  override async alarm(): Promise<void> {
    this.prune(Date.now());
    await this.scheduleExpiry();
  }

  private prune(now: number): void {
    this.sql.exec("DELETE FROM dead_letters WHERE received_ms < ?", now - DEAD_LETTER_MAX_AGE_MS);
    this.sql.exec(
      "DELETE FROM dead_letters WHERE id <= (SELECT id FROM dead_letters ORDER BY id DESC LIMIT 1 OFFSET ?)",
      DEAD_LETTER_MAX_ROWS,
    );
  }

  /** Wakes up when the oldest row expires; no alarm while the table is empty. */
  private async scheduleExpiry(): Promise<void> {
    const oldest = this.sql.exec<{ ms: number | null }>("SELECT min(received_ms) AS ms FROM dead_letters").one().ms;
    if (oldest !== null) await this.ctx.storage.setAlarm(oldest + DEAD_LETTER_MAX_AGE_MS);
  }
}

/** A statement binds at most 100 parameters in Durable Object SQLite. */
const MENTIONS_PER_STATEMENT = 50;

/** Fields whose value collection accepts as a number too (normalize.ts `optionalId`), so a raw event may hold one. */
const NUMERIC_ID_FIELDS = ["userId", "anonymousId", "previousId", "groupId"] as const;

/**
 * How an id can appear in a raw event (compact JSON, as `deadLetterEntry` writes it): quoted and escaped anywhere (an
 * id with a quote or a backslash is escaped there too); and, when the id is the text of a number (`String(n)`, as
 * collection turns a numeric id into its string), as that number — only as the value of an id field, followed by
 * the end of the value, so that a price or a count of the same digits is no match.
 */
export function mentionNeedles(id: string): string[] {
  if (id === "") return [];
  const needles = [JSON.stringify(id)];
  const n = Number(id);
  if (id.trim() !== "" && Number.isFinite(n) && String(n) === id) {
    for (const field of NUMERIC_ID_FIELDS) needles.push(`"${field}":${id},`, `"${field}":${id}}`);
  }
  return needles;
}

/** The needles of all the ids, in groups of at most MENTIONS_PER_STATEMENT. */
function mentions(ids: readonly string[]): string[][] {
  const all = [...new Set(ids.flatMap(mentionNeedles))];
  const groups: string[][] = [];
  for (let i = 0; i < all.length; i += MENTIONS_PER_STATEMENT) groups.push(all.slice(i, i + MENTIONS_PER_STATEMENT));
  return groups;
}

function anyOf(needles: readonly string[]): string {
  return needles.map(() => "instr(raw, ?) > 0").join(" OR ");
}
