// Postgres through the Neon serverless driver, the same code in production (Neon) and locally (a real
// Postgres behind a Postgres-over-WebSocket proxy). Connections open and close within one invocation:
// a Worker may not keep sockets across requests.
import { Client, neonConfig, Pool } from "@neondatabase/serverless";
import { drizzle } from "drizzle-orm/neon-serverless";
import * as schema from "./schema.ts";

export interface DbSettings {
  databaseUrl: string;
  /**
   * `host:port/path` of a local Postgres-over-WebSocket proxy. Used only when the database URL points at this
   * machine (localhost, 127.0.0.0/8, ::1); a Neon URL always goes through Neon's own proxy over TLS.
   */
  localWsProxy?: string | undefined;
}

const LOCAL_HOSTS = /^(localhost|127(?:\.\d{1,3}){3}|\[::1\])$/;

export function isLocalDatabase(databaseUrl: string): boolean {
  try {
    return LOCAL_HOSTS.test(new URL(databaseUrl).hostname);
  } catch {
    return false;
  }
}

/**
 * Points the driver at the local proxy when the URL is local. The settings are the driver's global ones:
 * one isolate serves one deployment, which is either local or not.
 */
export function configureNeon(settings: DbSettings): void {
  if (!isLocalDatabase(settings.databaseUrl)) return;
  if (!settings.localWsProxy) {
    throw new Error("a local DATABASE_URL needs NEON_LOCAL_WS_PROXY (host:port/path of the WebSocket proxy)");
  }
  const proxy = settings.localWsProxy;
  neonConfig.wsProxy = (host, port) => `${proxy}?address=${host}:${port}`;
  // Plain ws:// to the loopback proxy, and no TLS to Postgres behind it.
  neonConfig.useSecureWebSocket = false;
  neonConfig.forceDisablePgSSL = true;
  neonConfig.pipelineTLS = false;
  neonConfig.pipelineConnect = false;
}

/**
 * The driver reports a socket that closes after (or while) we end it as an 'error' event; with no listener
 * that event would be an uncaught exception. Query failures still reach the caller through rejected promises.
 */
function ignoreLateSocketErrors(emitter: { on(event: "error", listener: (error: Error) => void): unknown }) {
  emitter.on("error", () => {});
}

/**
 * How long a pool waits for a connection before the query fails: long enough for a Neon compute to wake from
 * suspension (typically well under a few seconds), short enough that a dead endpoint fails a cron step instead of
 * hanging it. The failure ("timeout exceeded when trying to connect") is transient for src/batch/retry.ts.
 */
export const POOL_CONNECT_TIMEOUT_MS = 10_000;

/** A pool for one invocation; call `end()` before the invocation finishes. */
export function openPool(settings: DbSettings, options: { connectTimeoutMs?: number } = {}): Pool {
  configureNeon(settings);
  const pool = new Pool({
    connectionString: settings.databaseUrl,
    max: 4,
    connectionTimeoutMillis: options.connectTimeoutMs ?? POOL_CONNECT_TIMEOUT_MS,
  });
  ignoreLateSocketErrors(pool);
  return pool;
}

export function openClient(settings: DbSettings): Client {
  configureNeon(settings);
  const client = new Client(settings.databaseUrl);
  ignoreLateSocketErrors(client);
  return client;
}

export function drizzleOn(pool: Pool) {
  return drizzle({ client: pool, schema });
}
export type Database = ReturnType<typeof drizzleOn>;
type TransactionBody<T> = Parameters<Database["transaction"]>[0] extends (tx: infer Tx) => Promise<unknown>
  ? (tx: Tx) => Promise<T>
  : never;
/** BEGIN's options: isolation level, access mode. */
export type TransactionConfig = Parameters<Database["transaction"]>[1];

/**
 * One transaction on a client checked out of the database's pool. Use this, not `db.transaction()`: drizzle's
 * pool transaction runs BEGIN before its try/finally, so a BEGIN that fails on a broken connection never releases
 * the client (and `pool.end()` then waits for it forever); and after a failed ROLLBACK it hands the broken client
 * back to the pool for the next caller. Here the client is released in every case, and destroyed (not reused)
 * whenever the transaction failed: its connection may be the reason.
 */
export async function transaction<T>(
  db: Pick<Database, "$client">,
  body: TransactionBody<T>,
  config?: TransactionConfig,
): Promise<T> {
  const client = await db.$client.connect();
  let failed = false;
  // A checked-out client has no listener of the pool's. A backend that dies between two statements (an admin
  // termination, a compute suspended) makes the driver emit 'error' on the client, which with no listener is an
  // uncaught exception. The next statement fails, and the transaction with it; the client is destroyed either way.
  const onError = () => {
    failed = true;
  };
  client.on("error", onError);
  try {
    return await drizzle({ client, schema }).transaction(body, config);
  } catch (error) {
    failed = true;
    throw error;
  } finally {
    // A healthy client goes back to the pool, which listens to its idle clients; a destroyed one keeps the listener
    // for errors its socket may still report. `true` destroys the client instead of pooling it.
    if (!failed) client.removeListener("error", onError);
    client.release(failed);
  }
}
