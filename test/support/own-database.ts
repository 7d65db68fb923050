// A database of a test file's own on the test stack's Postgres (integration project): created and migrated before
// the file's tests, its pool ended after them. Reached through the Neon driver, as the Worker reaches Postgres.
import { afterAll, beforeAll, inject } from "vitest";
import { ensureDatabase, migrateDatabase } from "../../scripts/lib/migrate.ts";
import { type Database, type DbSettings, drizzleOn, openPool } from "../../src/stores/db.ts";

export interface OwnDatabase {
  settings: DbSettings;
  /** The pool and drizzle on it: set once the file's beforeAll has run. */
  pool: ReturnType<typeof openPool>;
  db: Database;
}

export function ownDatabase(name: string): OwnDatabase {
  const stack = inject("stack");
  const server: DbSettings = { databaseUrl: stack.DATABASE_URL, localWsProxy: stack.NEON_LOCAL_WS_PROXY };
  const settings: DbSettings = {
    ...server,
    databaseUrl: Object.assign(new URL(stack.DATABASE_URL), { pathname: `/${name}` }).toString(),
  };
  const own = { settings } as OwnDatabase;
  beforeAll(async () => {
    await ensureDatabase(server, name);
    await migrateDatabase(settings);
    own.pool = openPool(settings);
    own.db = drizzleOn(own.pool);
  });
  afterAll(async () => {
    await own.pool?.end();
  });
  return own;
}
