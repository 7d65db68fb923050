// The local stack of `npm run chaos` (scripts/chaos.ts), started with the launcher pieces `npm run dev` uses —
// PostgreSQL + its WebSocket proxy, redis-server (append-only file) + the Upstash gateway, the Worker under
// `wrangler dev` — on free ports in a state folder of its own, never the dev stack's. It adds the process-level
// faults: redis-server killed and restarted, Postgres stopped and started and its backends terminated, workerd
// killed with SIGKILL and restarted on the same state.
import { join } from "node:path";
import { openClient } from "../../src/stores/db.ts";
import { openRedis, type Redis } from "../../src/stores/redis.ts";
import { LOCAL_KEYS, localWorkerVars } from "./local-keys.ts";
import { freePort, portIsFree } from "./ports.ts";
import { alive, descendants } from "./processes.ts";
import { type Stack, startStack } from "./stack.ts";
import { type RunningWorker, startWorker } from "./worker.ts";

export interface ChaosStack {
  url: string;
  stack: Stack;
  /** A Redis client through the Upstash gateway, raw results (stream fields stay strings). */
  redis(): Redis;
  /** Runs one query on a connection of its own. */
  query<T>(text: string, params?: unknown[]): Promise<T[]>;
  killRedis(): Promise<void>;
  restartRedis(): Promise<void>;
  stopPostgres(): Promise<void>;
  restartPostgres(): Promise<void>;
  /** pg_terminate_backend of every other connection to the database; returns how many. */
  terminateBackends(): Promise<number>;
  /** SIGKILL to wrangler dev and every process below it (workerd): no shutdown of any kind. */
  killWorker(): Promise<void>;
  restartWorker(): Promise<void>;
  workerUp(): boolean;
  stop(): Promise<void>;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function untilGone(pids: readonly number[], timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (pids.some((pid) => alive(pid)) && Date.now() < deadline) await sleep(50);
}

export async function startChaosStack(options: { stateDir: string; port?: number }): Promise<ChaosStack> {
  const { stateDir } = options;
  const stack = await startStack({
    stateDir,
    database: "lastmile",
    redisToken: LOCAL_KEYS.redisToken,
    // The append-only file: a killed redis-server comes back with what it acknowledged.
    persistRedis: true,
    output: "quiet",
  });
  const port = options.port ?? (await freePort());
  // Its own wrangler dev registry: nothing here binds to another stack running on the machine.
  process.env.WRANGLER_REGISTRY_PATH = join(stateDir, "wrangler-registry");
  const workerOptions = {
    port,
    persistTo: join(stateDir, "wrangler"),
    varsFile: join(stateDir, ".dev.vars"),
    vars: { ...localWorkerVars(), ...stack.vars },
    output: "quiet" as const,
    timeoutMs: 180_000,
  };
  let worker: RunningWorker | undefined;
  try {
    worker = await startWorker(workerOptions);
  } catch (error) {
    await stack.stop();
    throw error;
  }
  const dbSettings = { databaseUrl: stack.vars.DATABASE_URL, localWsProxy: stack.vars.NEON_LOCAL_WS_PROXY };
  const query = async <T>(text: string, params: unknown[] = []): Promise<T[]> => {
    const client = openClient(dbSettings);
    await client.connect();
    try {
      return (await client.query(text, params)).rows as T[];
    } finally {
      await client.end().catch(() => {});
    }
  };

  return {
    url: worker.url,
    stack,
    redis: () =>
      openRedis({
        url: stack.vars.UPSTASH_REDIS_REST_URL,
        token: stack.vars.UPSTASH_REDIS_REST_TOKEN,
        rawResults: true,
      }),
    query,
    async killRedis() {
      const pid = stack.pids.redis;
      if (pid && alive(pid)) process.kill(pid, "SIGKILL");
      await untilGone(pid ? [pid] : []);
    },
    restartRedis: () => stack.restartRedis(),
    stopPostgres: () => stack.stopPostgres(),
    restartPostgres: () => stack.restartPostgres(),
    async terminateBackends() {
      const rows = await query<{ ok: boolean }>(
        `select pg_terminate_backend(pid) as ok from pg_stat_activity
         where datname = current_database() and pid <> pg_backend_pid()`,
      );
      return rows.filter((r) => r.ok).length;
    },
    async killWorker() {
      const root = worker?.child.process.pid;
      if (!root) return;
      const pids = [...descendants(root), root];
      for (const pid of pids) {
        try {
          process.kill(pid, "SIGKILL");
        } catch {
          // already gone
        }
      }
      await untilGone(pids);
      worker = undefined;
    },
    async restartWorker() {
      const deadline = Date.now() + 30_000;
      while (!(await portIsFree(port)) && Date.now() < deadline) await sleep(200);
      worker = await startWorker(workerOptions);
    },
    workerUp: () => worker !== undefined,
    async stop() {
      await worker?.stop().catch(() => {});
      await stack.stop();
    },
  };
}
