// Database creation and migrations, through the same Neon driver the Worker uses (locally via the
// WebSocket proxy). drizzle's migrator reads migrations/ from disk, so it runs in Node, not in a Worker.
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { migrate } from "drizzle-orm/neon-serverless/migrator";
import { type DbSettings, drizzleOn, openPool } from "../../src/stores/db.ts";

export const MIGRATIONS_FOLDER = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "migrations");

/** Creates `database` on the server `settings` points at, unless it exists. */
export async function ensureDatabase(settings: DbSettings, database: string): Promise<void> {
  if (!/^[a-z_][a-z0-9_]*$/.test(database)) throw new Error(`unsafe database name: ${database}`);
  const pool = openPool(settings);
  try {
    const { rowCount } = await pool.query("select 1 from pg_database where datname = $1", [database]);
    if (!rowCount) await pool.query(`create database "${database}"`);
  } finally {
    await pool.end();
  }
}

export async function migrateDatabase(settings: DbSettings): Promise<void> {
  const pool = openPool(settings);
  try {
    await migrate(drizzleOn(pool), { migrationsFolder: MIGRATIONS_FOLDER });
  } finally {
    await pool.end();
  }
}
