// What every recommender module shares: the statement runner, literals for parameters, and the expressions that
// name segments the same way the live session names its tokens.
//
// Parameters are written into the SQL text as literals (checked numbers, an ISO timestamp produced by Date) rather
// than bind parameters: the statements are CREATE TEMP TABLE … AS, which Postgres cannot parameterise, and the SQL
// a reader sees in pg_stat_activity or a log is the whole query, constants included. No value from outside the
// code ever reaches these literals.
import { type SQL, sql } from "drizzle-orm";
import type { Executor } from "../bulk.ts";

export type { Executor };

/** A finite number as an SQL literal. */
export function num(value: number): SQL {
  if (!Number.isFinite(value)) throw new Error(`recommender parameter is not a finite number: ${value}`);
  return sql.raw(String(value));
}

/** A whole number ≥ 0 as an SQL literal. */
export function count(value: number): SQL {
  if (!Number.isInteger(value) || value < 0) throw new Error(`recommender parameter is not a count: ${value}`);
  return sql.raw(String(value));
}

/** A point in time as a timestamptz literal. */
export function at(time: Date): SQL {
  return sql.raw(`'${time.toISOString()}'::timestamptz`);
}

/** `n` days (fractions allowed) as an interval expression. */
export function days(n: number): SQL {
  return sql`(${num(n)} * interval '1 day')`;
}

export function hours(n: number): SQL {
  return sql`(${num(n)} * interval '1 hour')`;
}

/** A text constant of our own (an output kind, a list name) as a literal. */
export function word(value: string): SQL {
  if (!/^[a-z_]+$/.test(value)) throw new Error(`not a plain word: ${value}`);
  return sql.raw(`'${value}'`);
}

/**
 * What JavaScript's `\s` (and `String.prototype.trim`) take for white space, as a regular-expression class: Postgres's
 * own `\s` is the ASCII white space only (the C locale), so a no-break space would survive it.
 */
const JS_SPACE = String.raw`[\s\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]`;

/**
 * `category:<c>` with c normalised as src/session/ecommerce.ts `tokenValue` does (trimmed, lower case, inner
 * whitespace collapsed, at most 100 characters), so the ranking path finds a segment from a session's
 * `category:` token: white space as JavaScript's `\s` has it, and lower case by Unicode's rules (the ICU root
 * collation; `lower()` under the database's C collation changes only A–Z, so "ÉTÉ" would stay "ÉtÉ"). One
 * difference remains: the cut counts characters, where JavaScript counts UTF-16 units, so a category longer than
 * 100 characters with characters beyond the BMP is cut later here. Null for a product without a category.
 */
export function categorySegment(column: SQL): SQL {
  const trimmed = sql`regexp_replace(${column}, ${sql.raw(`'^${JS_SPACE}+|${JS_SPACE}+$'`)}, '', 'g')`;
  const collapsed = sql`regexp_replace(${trimmed}, ${sql.raw(`'${JS_SPACE}+'`)}, ' ', 'g')`;
  return sql`'category:' || left(lower(${collapsed} collate "und-x-icu"), 100)`;
}

/** Runs one statement; the number of rows it wrote (or returned). */
export async function run(db: Executor, statement: SQL): Promise<number> {
  const result = (await db.execute(statement)) as { rowCount?: number | null; rows?: unknown[] };
  return result.rowCount ?? result.rows?.length ?? 0;
}

/** The rows of a query. */
export async function rows<T>(db: Executor, query: SQL): Promise<T[]> {
  const result = (await db.execute(query)) as { rows: T[] };
  return result.rows;
}

/** What one recommender did: rows written and where the time went (step name → ms). */
export interface RecommenderResult {
  rows: number;
  steps: Record<string, number>;
  /** Anything else worth keeping with the version (sessions, baskets, users, …). */
  counts: Record<string, number>;
}

/** Times each step of a recommender, in order. */
export class Steps {
  readonly steps: Record<string, number> = {};
  readonly counts: Record<string, number> = {};
  async time<T>(name: string, fn: () => Promise<T>): Promise<T> {
    const started = performance.now();
    try {
      return await fn();
    } finally {
      this.steps[name] = Math.round(performance.now() - started);
    }
  }
  /** Runs a statement as a timed step, recording its row count under `name` too. */
  async run(db: Executor, name: string, statement: SQL): Promise<number> {
    const n = await this.time(name, () => run(db, statement));
    this.counts[name] = n;
    return n;
  }
  result(rows: number): RecommenderResult {
    return { rows, steps: this.steps, counts: this.counts };
  }
}
