// A Postgres schema of a test file's own in the test stack's database (integration project): empty copies of
// warehouse tables (CREATE TABLE … (LIKE public.… INCLUDING ALL)) for code run with its `schema` option set to it,
// since test files run in parallel against one database. Queries go through the Neon driver, one pool each.
import { inject } from "vitest";
import { type DbSettings, openPool } from "../../src/stores/db.ts";

/** The tables the publisher's per-user and per-item reads and records use (src/publish/sources.ts). */
export const STABLE_KEY_TABLES = [
  "model_versions",
  "user_candidates",
  "item_neighbors",
  "published_keys",
  "erased_users",
] as const;

export function stackSettings(): DbSettings {
  const stack = inject("stack");
  return { databaseUrl: stack.DATABASE_URL, localWsProxy: stack.NEON_LOCAL_WS_PROXY };
}

export async function query(text: string, params: unknown[] = []): Promise<Record<string, unknown>[]> {
  const pool = openPool(stackSettings());
  try {
    return (await pool.query(text, params)).rows;
  } finally {
    await pool.end();
  }
}

/** A new schema `t_<label>_<random>` holding empty copies of `tables`. */
export async function createSchema(label: string, tables: readonly string[]): Promise<string> {
  const schema = `t_${label}_${crypto.randomUUID().replaceAll("-", "").slice(0, 12)}`;
  await query(
    [
      `create schema "${schema}"`,
      ...tables.map((t) => `create table "${schema}".${t} (like public.${t} including all)`),
    ].join(";\n"),
  );
  return schema;
}

export async function dropSchema(schema: string): Promise<void> {
  await query(`drop schema if exists "${schema}" cascade`);
}
