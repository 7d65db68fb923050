// transaction() (src/stores/db.ts) on a real Postgres through the Neon driver: a transaction whose connection
// breaks — before BEGIN, or mid-transaction so that the ROLLBACK fails too — releases its client and destroys it,
// so the next transaction gets a fresh connection and pool.end() finishes. A connection that breaks is injected
// by ending the client the moment the pool hands it out, or by the backend terminating itself.
import { sql as q } from "drizzle-orm";
import { describe, expect, it } from "vitest";
import { drizzleOn, openPool, transaction } from "../../src/stores/db.ts";
import { dbSettings } from "./batch-helpers.ts";

/** Resolves with "ended" when the pool's end() finishes, "hung" if it has not after `ms`. */
async function endWithin(pool: ReturnType<typeof openPool>, ms: number): Promise<"ended" | "hung"> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const hung = new Promise<"hung">((resolve) => {
    timer = setTimeout(() => resolve("hung"), ms);
  });
  try {
    return await Promise.race([pool.end().then(() => "ended" as const), hung]);
  } finally {
    if (timer !== undefined) clearTimeout(timer);
  }
}

const backendPid = (db: ReturnType<typeof drizzleOn>) =>
  transaction(db, async (tx) => {
    const result = await tx.execute<{ pid: number }>(q`select pg_backend_pid() as pid`);
    return Number(result.rows[0]?.pid);
  });

describe("transaction() when the connection breaks", () => {
  it("a BEGIN on a dead connection fails, and the client is released: the pool still ends", async () => {
    const pool = openPool(dbSettings());
    const db = drizzleOn(pool);
    let injected = 0;
    pool.on("acquire", (client: { end(): Promise<void> }) => {
      if (injected++ === 0) void client.end().catch(() => {});
    });
    await expect(backendPid(db)).rejects.toThrow(/begin/);
    expect(injected).toBe(1);
    // The next transaction works, on a new connection.
    expect(await backendPid(db)).toBeGreaterThan(0);
    expect(await endWithin(pool, 5_000)).toBe("ended");
  });

  it("a transaction whose backend is terminated mid-way destroys its client instead of pooling it", async () => {
    const pool = openPool(dbSettings());
    const db = drizzleOn(pool);
    const first = await backendPid(db);
    await expect(
      transaction(db, async (tx) => {
        await tx.execute(q`select pg_terminate_backend(pg_backend_pid())`);
      }),
    ).rejects.toThrow();
    // The broken client was not handed back: the pool holds no client, and the next one is a new backend.
    expect(pool.totalCount).toBe(0);
    const next = await backendPid(db);
    expect(next).not.toBe(first);
    expect(await endWithin(pool, 5_000)).toBe("ended");
  });

  it("a backend terminated between two statements is no uncaught exception: the transaction fails, the client is destroyed", async () => {
    const pool = openPool(dbSettings());
    const db = drizzleOn(pool);
    const killer = openPool(dbSettings());
    let client: { emit(event: "error", error: Error): boolean } | undefined;
    let uncaught: unknown;
    pool.on("acquire", (acquired: typeof client) => {
      client = acquired;
    });
    const first = await backendPid(db);
    await expect(
      transaction(db, async (tx) => {
        const pid = Number((await tx.execute<{ pid: number }>(q`select pg_backend_pid() as pid`)).rows[0]?.pid);
        // Another connection ends this backend while the transaction waits between statements: the driver then
        // reports the server's error on the client outside any query.
        await killer.query("select pg_terminate_backend($1)", [pid]);
        await new Promise((resolve) => setTimeout(resolve, 300));
        // What the driver does with it: emit 'error' on the client. With no listener that emit throws, which in
        // the driver's socket handler is an uncaught exception. (Checked after the transaction: a throw in here would
        // only reject it, which it does anyway.)
        try {
          client?.emit("error", new Error("terminating connection due to administrator command"));
        } catch (error) {
          uncaught = error;
        }
        await tx.execute(q`select 1`);
      }),
    ).rejects.toThrow();
    expect(uncaught).toBeUndefined();
    expect(pool.totalCount).toBe(0);
    expect(await backendPid(db)).not.toBe(first);
    expect(await endWithin(pool, 5_000)).toBe("ended");
    await killer.end();
  });

  it("a committed transaction returns its value and keeps its client for the next one", async () => {
    const pool = openPool(dbSettings());
    const db = drizzleOn(pool);
    const first = await backendPid(db);
    expect(pool.idleCount).toBe(1);
    expect(await backendPid(db)).toBe(first);
    expect(await endWithin(pool, 5_000)).toBe("ended");
  });
});
