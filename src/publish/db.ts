// Postgres for the publisher and the refresh: a drizzle database on a per-invocation pool, optionally inside a
// named schema (`search_path`), which is how tests give every test file its own tables in the one test database
// (production uses `public`).
import { type Database, type DbSettings, drizzleOn, openPool } from "../stores/db.ts";

const SCHEMA_NAME = /^[a-z_][a-z0-9_]{0,62}$/;

export function validSchema(schema: string | undefined): string | undefined {
  if (schema === undefined || schema === "" || schema === "public") return undefined;
  if (!SCHEMA_NAME.test(schema)) throw new Error(`invalid schema name "${schema.slice(0, 80)}"`);
  return schema;
}

export interface OpenDb {
  db: Database;
  end(): Promise<void>;
}

/** A pool for one invocation; every connection starts with `set search_path` when `schema` is given. */
export function openDb(settings: DbSettings, schema?: string): OpenDb {
  const name = validSchema(schema);
  const pool = openPool(settings);
  if (name) {
    pool.on("connect", (client: { query(text: string): Promise<unknown> }) => {
      // Queued on the client before anything the caller sends through it.
      client.query(`set search_path to "${name}"`).catch(() => {});
    });
  }
  return { db: drizzleOn(pool), end: () => pool.end() };
}
