// Helpers for the publisher and refresh Worker tests (test/workers/publish*.test.ts, refresh*.test.ts). Test files
// run in parallel against ONE Postgres database, so every test gets its own Postgres schema (a copy of the
// warehouse tables, made with CREATE TABLE … LIKE) and the code under test runs with `search_path` set to it; KV is
// isolated per test file by the vitest plugin. The only fake is `countingKv`: it wraps the real local KV binding
// and counts operations per invocation, nothing else.
import { runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import type { PublishCoordinator } from "../../src/publish/coordinator.ts";
import { openClient } from "../../src/stores/db.ts";

export const dbSettings = () => ({ databaseUrl: env.DATABASE_URL, localWsProxy: env.NEON_LOCAL_WS_PROXY });

const TABLES = [
  "catalog",
  "events",
  "interactions",
  "identities",
  "model_versions",
  "item_neighbors",
  "user_candidates",
  "popular_items",
  "batch_runs",
  "leases",
  "published_keys",
  "sync_state",
  "erased_users",
] as const;

export type Query = <T = Record<string, unknown>>(text: string, params?: unknown[]) => Promise<T[]>;

/** A fresh schema with empty copies of the warehouse tables, and a query function bound to it. */
export async function createSchema(label: string): Promise<{ schema: string; q: Query }> {
  const schema = `t_${label}_${crypto.randomUUID().replaceAll("-", "").slice(0, 12)}`;
  const q: Query = async <T>(text: string, params: unknown[] = []) => {
    const client = openClient(dbSettings());
    await client.connect();
    try {
      await client.query(`set search_path to "${schema}"`);
      return (await client.query(text, params)).rows as T[];
    } finally {
      await client.end();
    }
  };
  const ddl = [
    `create schema "${schema}"`,
    ...TABLES.map((t) => `create table "${schema}".${t} (like public.${t} including all)`),
  ];
  await runDdl(ddl.join(";\n"));
  return { schema, q };
}

export async function dropSchema(schema: string): Promise<void> {
  await runDdl(`drop schema if exists "${schema}" cascade`);
}

/**
 * Runs DDL (one implicit transaction). Test files run in parallel against one database, creating and dropping their
 * schemas while others' statements (a publish's alarm, say) hold locks on tables: when Postgres picks the DDL as a
 * deadlock's victim, it is rolled back whole, so it is simply run again.
 */
async function runDdl(text: string): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    const client = openClient(dbSettings());
    await client.connect();
    try {
      await client.query(text);
      return;
    } catch (error) {
      if ((error as { code?: string }).code !== DEADLOCK_DETECTED || attempt >= 5) throw error;
    } finally {
      await client.end();
    }
  }
}

/** SQLSTATE of a transaction Postgres chose as the victim of a deadlock. */
const DEADLOCK_DETECTED = "40P01";

export interface KvOp {
  op: string;
  key: string | string[];
}

/** Every invocation's KV operations, in order: one array per call of the wrapper (= per invocation). */
export type OpLog = KvOp[][];

const COUNTED = new Set(["get", "getWithMetadata", "put", "delete", "list"]);

/** Wraps a KV binding so that every operation is recorded in a new entry of `log`; behaviour is unchanged. */
export function countingKv(log: OpLog): (kv: KVNamespace) => KVNamespace {
  return (kv) => {
    const ops: KvOp[] = [];
    log.push(ops);
    return new Proxy(kv, {
      get(target, property, receiver) {
        const value = Reflect.get(target, property, receiver) as unknown;
        if (typeof value !== "function") return value;
        if (typeof property === "string" && COUNTED.has(property)) {
          return (...args: unknown[]) => {
            ops.push({ op: property, key: args[0] as string | string[] });
            return (value as (...a: unknown[]) => unknown).apply(target, args);
          };
        }
        return (value as (...a: unknown[]) => unknown).bind(target);
      },
    });
  };
}

/** A coordinator of its own for one test, with the counting wrapper installed. */
export async function coordinator(log: OpLog) {
  const stub = env.PUBLISH_COORDINATOR.getByName(`test-${crypto.randomUUID()}`);
  await runInDurableObject(stub, (instance: PublishCoordinator) => {
    instance.wrapKv = countingKv(log);
  });
  return stub;
}

/**
 * Runs the coordinator's alarms until its job is done. An alarm that made no progress (the job waits, e.g. for the
 * pointer's 1-write-per-second spacing) is followed by a short pause instead of a busy loop.
 */
export async function drain(stub: DurableObjectStub<PublishCoordinator>, timeoutMs = 25_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const before = (await stub.status()).job;
    if (!before) return;
    await runDurableObjectAlarm(stub);
    const after = (await stub.status()).job;
    if (!after) return;
    if (after.stats.steps === before.stats.steps && after.phase === before.phase) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
  throw new Error(`the publish did not finish within ${timeoutMs} ms`);
}

/** Puts of an op log, flattened. */
export const puts = (log: OpLog) =>
  log
    .flat()
    .filter((o) => o.op === "put")
    .map((o) => String(o.key));

/** A model version row of a test's own; returns its id. */
export async function modelVersion(q: Query, model: string): Promise<number> {
  const [row] = await q<{ id: string }>(
    "insert into model_versions (model, version, status) values ($1, $2, 'ready') returning id",
    [model, crypto.randomUUID()],
  );
  return Number(row?.id);
}
