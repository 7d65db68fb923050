// The local stack, shared by `npm run dev` and the test setup: a real PostgreSQL with a
// Postgres-over-WebSocket proxy in front (the Neon driver's path), a real redis-server with an
// Upstash-REST-compatible gateway in front (the @upstash/redis path), migrations applied.
import { join } from "node:path";
import { ensureDatabase, migrateDatabase } from "./migrate.ts";
import { startPgWsProxy } from "./pg-ws-proxy.ts";
import { freePort } from "./ports.ts";
import { startPostgres } from "./postgres.ts";
import { startRedis } from "./redis.ts";
import { startUpstashGateway } from "./upstash-gateway.ts";

export interface StackOptions {
  /** Folder for Postgres data (and Redis's append-only file when `persistRedis`). */
  stateDir: string;
  database: string;
  redisToken: string;
  persistRedis: boolean;
  output?: "inherit" | "quiet";
  log?: (line: string) => void;
}

export interface Stack {
  /** The settings a Worker (or a script) needs to reach the stack, as Worker variable names. */
  vars: {
    DATABASE_URL: string;
    NEON_LOCAL_WS_PROXY: string;
    UPSTASH_REDIS_REST_URL: string;
    UPSTASH_REDIS_REST_TOKEN: string;
  };
  ports: { postgres: number; pgWsProxy: number; redis: number; redisGateway: number };
  pids: { postgres: number | undefined; redis: number | undefined };
  /** Stops Redis alone (fault injection and health checks); `restartRedis` brings it back on the same port. */
  stopRedis(): Promise<void>;
  restartRedis(): Promise<void>;
  stopPostgres(): Promise<void>;
  restartPostgres(): Promise<void>;
  stop(): Promise<void>;
}

export async function startStack(options: StackOptions): Promise<Stack> {
  const log = options.log ?? (() => {});
  const output = options.output ?? "quiet";
  const ports = {
    postgres: await freePort(),
    pgWsProxy: 0,
    redis: await freePort(),
    redisGateway: 0,
  };
  const pgOptions = { dataDir: join(options.stateDir, "postgres"), port: ports.postgres, output };
  const redisOptions = {
    port: ports.redis,
    ...(options.persistRedis ? { dataDir: join(options.stateDir, "redis") } : {}),
    output,
  };

  const stopAll: Array<() => Promise<void>> = [];
  const stop = async () => {
    for (const fn of stopAll.splice(0).reverse()) await fn().catch(() => {});
  };
  try {
    log(`postgres: starting on 127.0.0.1:${ports.postgres}`);
    let postgres = await startPostgres(pgOptions);
    stopAll.push(() => postgres.stop());

    const proxy = await startPgWsProxy({ port: 0, target: { host: postgres.host, port: postgres.port } });
    ports.pgWsProxy = proxy.port;
    stopAll.push(() => proxy.close());

    log(`redis: starting on 127.0.0.1:${ports.redis}`);
    let redis = await startRedis(redisOptions);
    stopAll.push(() => redis.stop());
    const gateway = await startUpstashGateway({ redisPort: ports.redis, port: 0, token: options.redisToken });
    ports.redisGateway = gateway.port;
    stopAll.push(() => gateway.close());

    const adminDb = { databaseUrl: postgres.url("postgres"), localWsProxy: proxy.wsProxy };
    await ensureDatabase(adminDb, options.database);
    const db = { databaseUrl: postgres.url(options.database), localWsProxy: proxy.wsProxy };
    log("postgres: applying migrations");
    await migrateDatabase(db);

    return {
      vars: {
        DATABASE_URL: db.databaseUrl,
        NEON_LOCAL_WS_PROXY: db.localWsProxy,
        UPSTASH_REDIS_REST_URL: gateway.url,
        UPSTASH_REDIS_REST_TOKEN: options.redisToken,
      },
      ports,
      get pids() {
        return { postgres: postgres.child.process.pid, redis: redis.child.process.pid };
      },
      stopRedis: () => redis.stop(),
      restartRedis: async () => {
        redis = await startRedis(redisOptions);
      },
      stopPostgres: () => postgres.stop(),
      restartPostgres: async () => {
        postgres = await startPostgres(pgOptions);
      },
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}
