// The launcher pieces `npm run dev` and the test setup share, against real servers: the Neon driver through
// the WebSocket proxy, the proxy's refusal to relay elsewhere, migrations that can run twice, and a
// Postgres data folder that survives a restart.
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { migrateDatabase } from "../../scripts/lib/migrate.ts";
import { startPgWsProxy } from "../../scripts/lib/pg-ws-proxy.ts";
import { freePort } from "../../scripts/lib/ports.ts";
import { type RunningPostgres, startPostgres } from "../../scripts/lib/postgres.ts";
import { isTransientError } from "../../src/batch/retry.ts";
import { openPool } from "../../src/stores/db.ts";

const stack = inject("stack");
const settings = { databaseUrl: stack.DATABASE_URL, localWsProxy: stack.NEON_LOCAL_WS_PROXY };

describe("the shared test stack", () => {
  it("runs real Postgres reached with the Neon driver through the WebSocket proxy", async () => {
    const pool = openPool(settings);
    try {
      const { rows } = await pool.query(
        "select current_database() as db, current_setting('server_version_num')::int as v",
      );
      expect(rows[0].db).toBe("lastmile_test");
      expect(rows[0].v).toBeGreaterThanOrEqual(140000);
    } finally {
      await pool.end();
    }
  });

  it("applies migrations idempotently", async () => {
    await migrateDatabase(settings);
    await migrateDatabase(settings);
    const pool = openPool(settings);
    try {
      const { rows } = await pool.query("select count(*)::int as n from drizzle.__drizzle_migrations");
      expect(rows[0].n).toBeGreaterThanOrEqual(1);
    } finally {
      await pool.end();
    }
  });
});

describe("a database that accepts connections and never answers", () => {
  it("fails the pool's query after its connect timeout, with an error the batch loop retries", async () => {
    const sockets: Socket[] = [];
    const silent = createServer((socket) => sockets.push(socket));
    await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
    const port = (silent.address() as { port: number }).port;
    const proxy = await startPgWsProxy({ port: 0, target: { host: "127.0.0.1", port } });
    const pool = openPool(
      { databaseUrl: `postgres://u:p@127.0.0.1:${port}/db`, localWsProxy: proxy.wsProxy },
      { connectTimeoutMs: 300 },
    );
    const started = Date.now();
    try {
      const error = await pool.query("select 1").then(
        () => null,
        (e: unknown) => e,
      );
      expect(error).toBeInstanceOf(Error);
      expect(String((error as Error).message)).toMatch(/timeout/i);
      expect(isTransientError(error)).toBe(true);
      // Not a hang: the timeout, not the test's, ended it.
      expect(Date.now() - started).toBeLessThan(10_000);
    } finally {
      await pool.end().catch(() => {});
      for (const socket of sockets) socket.destroy();
      await proxy.close();
      await new Promise<void>((resolve) => silent.close(() => resolve()));
    }
  });
});

describe("the Postgres-over-WebSocket proxy", () => {
  it("relays only to the Postgres it fronts", async () => {
    const pgPort = Number(new URL(stack.DATABASE_URL).port);
    const proxy = await startPgWsProxy({ port: 0, target: { host: "127.0.0.1", port: pgPort } });
    try {
      const refused = await new Promise<string>((resolve) => {
        const ws = new WebSocket(`ws://${proxy.wsProxy}?address=10.0.0.1:5432`);
        ws.onerror = () => resolve("error");
        ws.onopen = () => resolve("open");
      });
      expect(refused).toBe("error");
      const plain = await fetch(`http://127.0.0.1:${proxy.port}/v2`);
      expect(plain.status).toBe(426);
      expect((await plain.json()).error).toBe("upgrade_required");
    } finally {
      await proxy.close();
    }
  });
});

describe("the Postgres launcher", () => {
  const dir = mkdtempSync(join(tmpdir(), "lastmile-pg-"));
  let pg: RunningPostgres | undefined;
  let port: number;

  beforeAll(async () => {
    port = await freePort();
  });
  afterAll(async () => {
    await pg?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it("keeps data across a restart on the same folder", async () => {
    pg = await startPostgres({ dataDir: join(dir, "pg"), port });
    const proxy = await startPgWsProxy({ port: 0, target: { host: pg.host, port } });
    const db = { databaseUrl: pg.url("postgres"), localWsProxy: proxy.wsProxy };
    try {
      let pool = openPool(db);
      await pool.query("create table kept (v text)");
      await pool.query("insert into kept values ('still here')");
      await pool.end();

      await pg.stop();
      pg = await startPostgres({ dataDir: join(dir, "pg"), port });

      pool = openPool(db);
      const { rows } = await pool.query("select v from kept");
      await pool.end();
      expect(rows).toEqual([{ v: "still here" }]);
    } finally {
      await proxy.close();
    }
  });
});
