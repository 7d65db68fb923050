// Helpers for the batch-loop Worker tests (test/workers/batch-*.test.ts): stream entries written the way
// SessionState's outbox writes them, a database and Redis of the test stack, and read-back through a second
// connection. Every test uses its own stream key, consumer group and lease name: test files run in parallel
// against one Redis and one database.
import { env } from "cloudflare:workers";
import { QUARANTINE_SUFFIX } from "../../src/batch/consumer.ts";
import type { CollectedEvent } from "../../src/collect/event.ts";
import { STREAM_FIELDS } from "../../src/session/stream.ts";
import { type Database, drizzleOn, openClient, openPool } from "../../src/stores/db.ts";
import { openRedis, type Redis } from "../../src/stores/redis.ts";
import { collectedEvent } from "../support/events.ts";

export const T0 = Date.parse("2026-11-20T10:00:00.000Z");
export const dbSettings = () => ({ databaseUrl: env.DATABASE_URL, localWsProxy: env.NEON_LOCAL_WS_PROXY });
export const uid = (prefix: string) => `${prefix}-${crypto.randomUUID()}`;

/** The loader's own client: raw results (stream fields are arbitrary strings). */
export const loaderRedis = (): Redis =>
  openRedis({ url: env.UPSTASH_REDIS_REST_URL, token: env.UPSTASH_REDIS_REST_TOKEN, rawResults: true });
/** A second client for assertions and setup. */
export const redis = (): Redis =>
  openRedis({ url: env.UPSTASH_REDIS_REST_URL, token: env.UPSTASH_REDIS_REST_TOKEN, rawResults: true });

/** Runs `fn` with a drizzle database on a fresh pool, closed afterwards. */
export async function withDb<T>(fn: (db: Database) => Promise<T>): Promise<T> {
  const pool = openPool(dbSettings());
  try {
    return await fn(drizzleOn(pool));
  } finally {
    await pool.end();
  }
}

/** Reads through its own connection (not the code under test's pool). */
export async function sql<T>(text: string, params: unknown[] = []): Promise<T[]> {
  const client = openClient(dbSettings());
  await client.connect();
  try {
    return (await client.query(text, params)).rows as T[];
  } finally {
    await client.end();
  }
}

export function event(
  type: CollectedEvent["type"],
  fields: Partial<CollectedEvent> & { at?: number } = {},
): CollectedEvent {
  const { at, ...rest } = fields;
  const time = new Date(at ?? T0).toISOString();
  return collectedEvent({
    messageId: uid("m"),
    type,
    anonymousId: "anon-1",
    timestamp: time,
    originalTimestamp: time,
    sentAt: time,
    receivedAt: time,
    sourceId: "test-source",
    ...rest,
  });
}

export const viewed = (productId: string, fields: Partial<CollectedEvent> & { at?: number } = {}) =>
  event("track", { event: "Product Viewed", properties: { product_id: productId, price: 12.5 }, ...fields });

/** XADDs events as the outbox does (fields id, user, e); returns the stream ids. */
export async function append(stream: string, events: readonly CollectedEvent[], userKey?: string): Promise<string[]> {
  const r = redis();
  const ids: string[] = [];
  for (const e of events) {
    const user = userKey ?? (e.userId ? `u:${e.userId}` : `a:${e.anonymousId}`);
    ids.push(
      await r.exec<string>([
        "XADD",
        stream,
        "*",
        STREAM_FIELDS.messageId,
        e.messageId,
        STREAM_FIELDS.userKey,
        user,
        STREAM_FIELDS.event,
        JSON.stringify(e),
      ]),
    );
  }
  return ids;
}

/** A promise and the function that settles it. */
export function gate(): { wait: Promise<void>; open: () => void } {
  let open: () => void = () => {};
  const wait = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { wait, open };
}

/** Unique stream, group and lease for one test. */
export function streamNames(label: string) {
  const id = crypto.randomUUID();
  return { stream: `test:${label}:${id}`, group: `g-${id}`, leaseName: `lease-${label}-${id}` };
}

/** Events in Postgres among `messageIds`, and their interactions. */
export async function loaded(messageIds: readonly string[]): Promise<{ events: number; interactions: number }> {
  const [row] = await sql<{ events: number; interactions: number }>(
    `select (select count(*)::int from events where message_id = any($1)) as events,
            (select count(*)::int from interactions where message_id = any($1)) as interactions`,
    [messageIds],
  );
  return row ?? { events: 0, interactions: 0 };
}

/** XPENDING's count for the group. */
export async function pendingCount(stream: string, group: string): Promise<number> {
  const summary = await redis().exec<unknown[]>(["XPENDING", stream, group]);
  return Number(summary[0] ?? 0);
}

/**
 * A Redis client whose reply to each command `lose` picks is lost on the way back: Redis ran the command, the caller
 * sees a network error (a transient failure).
 */
export function losingReplies(real: Redis, lose: (command: readonly (string | number)[]) => boolean): Redis {
  return new Proxy(real, {
    get(target, prop, receiver) {
      if (prop !== "exec") return Reflect.get(target, prop, receiver);
      return async (command: [string, ...(string | number)[]]) => {
        const reply = await target.exec(command);
        if (lose(command)) throw new TypeError("fetch failed");
        return reply;
      };
    },
  });
}

/**
 * A Redis client whose writes to a quarantine stream (an XADD, or a script whose first key is one) go through
 * `around`, which makes the write by calling `write` (when it likes: a test holds it up or lines writes up).
 */
export function aroundQuarantineWrites(
  real: Redis,
  around: (write: () => Promise<unknown>) => Promise<unknown>,
): Redis {
  const quarantine = (key: unknown) => String(key).endsWith(QUARANTINE_SUFFIX);
  return new Proxy(real, {
    get(target, prop, receiver) {
      if (prop === "exec") {
        return (command: [string, ...(string | number)[]]) =>
          command[0] === "XADD" && quarantine(command[1]) ? around(() => target.exec(command)) : target.exec(command);
      }
      if (prop === "eval") {
        return (script: string, keys: string[], args: unknown[]) =>
          quarantine(keys[0]) ? around(() => target.eval(script, keys, args)) : target.eval(script, keys, args);
      }
      return Reflect.get(target, prop, receiver);
    },
  });
}
