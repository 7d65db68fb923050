// Erasure of one user across every store, and its verifier (docs/privacy.md). Called by the admin routes
// (src/admin/users.ts):
//
//   1. session objects: the subject's object erases itself and every object merged into it; then every anonymous id
//      the warehouse links to the user id (another device, an object that expired) is erased the same way.
//      With `suppress`, each keeps a flag and answers later events as `suppressed`.
//   2. Postgres: one transaction under the exclusive erasure lock records the keys in `erased_users` and deletes
//      events, interactions, identity links, candidate lists and published-key records (src/privacy/warehouse.ts).
//   3. Redis: entries of those keys in the event stream (not loaded yet) and in the loader's quarantine stream are
//      deleted (XDEL), matched by the keys the loader drops an event by (so another user's event on an erased device
//      goes too). After 2, because the loader writes both rows and quarantine entries under the shared erasure
//      lock, after looking their keys up in `erased_users`: what it quarantined before 2 committed is found here,
//      and nothing of the keys is quarantined (or loaded) after. A quarantine write the loader gave up waiting for
//      (and retried) may still land later: the keys are fenced first, and such a write adds nothing of them.
//   4. Workers KV: the users' candidate-list keys `u:<userKey>`, deleted by the publish coordinator in calls of at most
//      ERASURE_DELETES_PER_CALL keys (each call an invocation with its own KV budget).
//   5. dead letters of every source that name one of the ids.
// Then the verifier runs and its result is part of the answer. Every step is idempotent: erasing again is safe and
// finishes what a failed run left. A session object that does not answer does not stop the erasure: its key is
// recorded in `erased_users` with the others (the loader drops its events), listed as `unreached`, and the
// verifier is not clean until an erasure reaches it. Any other store that fails is a 503 with Retry-After.
import { deleteEntries, fenceQuarantine, QUARANTINE_SUFFIX, readRange } from "../batch/consumer.ts";
import { entryErasureKeys } from "../batch/loader.ts";
import { postgresError } from "../batch/retry.ts";
import type { Config } from "../config.ts";
import { ApiError } from "../errors.ts";
import { describeError, log } from "../log.ts";
import { COORDINATOR_NAME, ERASURE_DELETES_PER_CALL } from "../publish/coordinator.ts";
import { userListKey } from "../publish/keys.ts";
import { KV_BULK_GET_MAX } from "../publish/kv-budget.ts";
import type { EraseResult } from "../session/session-state.ts";
import { EVENT_STREAM } from "../session/stream.ts";
import type { Database } from "../stores/db.ts";
import type { Redis } from "../stores/redis.ts";
import {
  countWarehouse,
  erasedKeysOf,
  eraseWarehouse,
  linkedAnonymousKeys,
  type SubjectKeys,
  subjectKeys,
  type WarehouseCounts,
} from "./warehouse.ts";

/** Stream entries read per XRANGE call when looking for a user's entries. */
export const STREAM_PAGE = 1_000;
/**
 * Pages read per erasure (200,000 entries). In production the loader deletes what it loaded, so the stream holds
 * only the unloaded backlog; a longer stream is reported as `complete: false` (erase again once the loader caught up).
 */
export const STREAM_MAX_PAGES = 200;
/** Session objects, KV keys and dead-letter objects called at once. */
const FAN_OUT = 20;

export type SubjectKey = `u:${string}` | `a:${string}`;

export interface StreamScan {
  scanned: number;
  /** Entries of the subject found (the verifier) or deleted (the erasure). */
  matched: number;
  /** False when the stream was longer than STREAM_MAX_PAGES pages. */
  complete: boolean;
}

export interface ErasureVerification {
  subject: string;
  userKeys: string[];
  /** True when no store holds anything of the subject (suppression flags are not data). */
  clean: boolean;
  left: {
    /** Keys whose session object holds data (or did not answer). */
    sessionObjects: string[];
    /** `u:<userKey>` KV keys still present. */
    kv: string[];
    /** Stream entries of the keys; null when Redis is not configured. */
    stream: StreamScan | null;
    warehouse: WarehouseCounts;
    deadLetters: number;
  };
  /** Keys whose session object refuses events. */
  suppressed: string[];
}

export interface ErasureReport {
  subject: string;
  userKeys: string[];
  suppressed: boolean;
  /** When the subject is an anonymous id merged into a user: that user (erase it to erase the person). */
  mergedInto: string | null;
  deleted: {
    sessionObjects: string[];
    /** Keys whose session object did not answer: recorded as erased, reached by the next erasure (erase again). */
    unreached: string[];
    stream: StreamScan | null;
    warehouse: WarehouseCounts;
    kv: number;
    deadLetters: number;
  };
  verification: ErasureVerification;
}

export interface PrivacyDeps {
  env: Env;
  config: Config;
  db: Database;
  redis: Redis | undefined;
}

async function inChunks<T, R>(items: readonly T[], fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = [];
  for (let i = 0; i < items.length; i += FAN_OUT) out.push(...(await Promise.all(items.slice(i, i + FAN_OUT).map(fn))));
  return out;
}

const session = (env: Env, key: string) => env.SESSION_STATE.getByName(key);

/**
 * A store the erasure cannot go around: its failure is a 503 (erasing again is safe), with the default Retry-After
 * every `dependency_unavailable` answer gets (app.ts).
 */
async function dependency<T>(what: string, call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (error) {
    if (error instanceof ApiError) throw error;
    throw new ApiError("dependency_unavailable", `${what} did not answer; erase again shortly`, { cause: error });
  }
}

/** One session object's erasure; an object that does not answer is reported as unreached, not fatal. */
async function eraseObject(env: Env, key: string, suppress: boolean): Promise<EraseResult> {
  try {
    const result = await session(env, key).erase({ suppress });
    return { ...result, unreached: result.unreached ?? [] };
  } catch (error) {
    log("warn", "erasure: a session object did not answer", { key, error: describeError(error) });
    return { erased: [], complete: false, unreached: [key] };
  }
}

/**
 * The event stream and its quarantine (entries Postgres refused, src/batch/loader.ts): the entries of `keys` deleted
 * (or, with `dryRun`, counted) in both.
 */
export async function scanStreams(redis: Redis, keys: ReadonlySet<string>, dryRun: boolean): Promise<StreamScan> {
  const events = await scanStream(redis, keys, dryRun, EVENT_STREAM);
  const quarantine = await scanStream(redis, keys, dryRun, `${EVENT_STREAM}${QUARANTINE_SUFFIX}`);
  return {
    scanned: events.scanned + quarantine.scanned,
    matched: events.matched + quarantine.matched,
    complete: events.complete && quarantine.complete,
  };
}

/**
 * Step 3: the quarantine fenced off the keys first (a move the loader gave up waiting for adds nothing of them when it
 * lands later), then their entries deleted from both streams.
 */
async function eraseStreams(redis: Redis, userKeys: readonly string[]): Promise<StreamScan> {
  await fenceQuarantine(redis, userKeys, Date.now());
  return scanStreams(redis, new Set(userKeys), false);
}

/**
 * Reads the stream from the start and deletes (or, with `dryRun`, counts) the entries of `keys`: those the loader
 * drops once the keys are erased (entryErasureKeys: the session key that recorded the event, its user id, anonymous
 * id or an alias's previous id), so another user's event on an erased device goes too.
 */
export async function scanStream(
  redis: Redis,
  keys: ReadonlySet<string>,
  dryRun: boolean,
  stream: string,
): Promise<StreamScan> {
  const scan: StreamScan = { scanned: 0, matched: 0, complete: true };
  let start = "-";
  for (let page = 0; ; page++) {
    if (page === STREAM_MAX_PAGES) {
      scan.complete = false;
      break;
    }
    const entries = await readRange(redis, stream, start, STREAM_PAGE);
    const ids = entries.filter((e) => e.fields && entryErasureKeys(e.fields).some((k) => keys.has(k))).map((e) => e.id);
    scan.scanned += entries.length;
    scan.matched += ids.length;
    if (!dryRun) await deleteEntries(redis, stream, ids);
    const last = entries.at(-1);
    if (entries.length < STREAM_PAGE || !last) break;
    start = `(${last.id}`;
  }
  return scan;
}

/**
 * Step 4: the `u:<userKey>` list keys deleted by the publish coordinator, ERASURE_DELETES_PER_CALL keys a call. KV
 * counts every delete against the invocation's 1,000 operations (the binding has no bulk delete): a subject with a few
 * hundred linked devices would take this invocation past them, its verifier's reads included, at every attempt.
 */
async function deleteUserLists(env: Env, userKeys: readonly string[]): Promise<void> {
  const coordinator = env.PUBLISH_COORDINATOR.getByName(COORDINATOR_NAME);
  for (let i = 0; i < userKeys.length; i += ERASURE_DELETES_PER_CALL) {
    await coordinator.deleteUserLists(userKeys.slice(i, i + ERASURE_DELETES_PER_CALL));
  }
}

/** The keys among `userKeys` whose `u:<userKey>` list key KV still holds: bulk reads, one operation per 100 keys. */
async function presentUserLists(env: Env, userKeys: readonly string[]): Promise<string[]> {
  const present: string[] = [];
  for (let i = 0; i < userKeys.length; i += KV_BULK_GET_MAX) {
    const chunk = userKeys.slice(i, i + KV_BULK_GET_MAX);
    const values = await env.ONLINE_STORE.get(chunk.map(userListKey), "text");
    for (const key of chunk) if ((values.get(userListKey(key)) ?? null) !== null) present.push(key);
  }
  return present;
}

/** Every key that belongs to the subject now: itself, keys erased under it before, anonymous ids linked to it. */
async function keysOf(deps: PrivacyDeps, subject: SubjectKey, alsoKeys: readonly string[] = []): Promise<string[]> {
  const linked = subject.startsWith("u:") ? await linkedAnonymousKeys(deps.db, [subject.slice(2)]) : [];
  const before = await erasedKeysOf(deps.db, subject);
  return subjectKeys([subject, ...alsoKeys, ...linked, ...before]).userKeys;
}

function idsOf(k: SubjectKeys): string[] {
  return [...k.userIds, ...k.anonymousIds];
}

export interface EraseOptions {
  suppress: boolean;
  /** How long the Postgres step waits for the erasure lock (default ERASURE_LOCK_TIMEOUT_MS). */
  lockTimeoutMs?: number;
}

export async function eraseUser(deps: PrivacyDeps, subject: SubjectKey, options: EraseOptions): Promise<ErasureReport> {
  const { env, config } = deps;
  const suppress = options.suppress;
  // Unknown (null) when the object does not answer; the erasure goes on.
  const mergedInto = await session(env, subject)
    .snapshot(subject)
    .then(
      (snapshot) => snapshot.mergedInto ?? null,
      () => null,
    );
  // 1. The subject's object and everything merged into it; then every other key of the subject (an object the first
  // call could not reach is called again here, directly).
  const first = await eraseObject(env, subject, suppress);
  const keys = await keysOf(deps, subject, [...first.erased, ...first.unreached]);
  const others = keys.filter((k) => !first.erased.includes(k));
  const rest = await inChunks(others, (key) => eraseObject(env, key, suppress));
  const erasedObjects = new Set([...first.erased, ...rest.flatMap((r) => r.erased)]);
  const unreached = new Set(
    [...first.unreached, ...rest.flatMap((r) => r.unreached)].filter((k) => !erasedObjects.has(k)),
  );
  // Unreached keys are the subject's too: recorded in erased_users (the loader drops their events, the next erasure
  // and the verifier find them there).
  const all = subjectKeys([...keys, ...erasedObjects, ...unreached]);
  // 2. Postgres, 3. Redis, 4. KV, 5. dead letters.
  const warehouse = await eraseWarehouse(deps.db, subject, all, suppress, options.lockTimeoutMs).catch((error) => {
    // lock_not_available (under drizzle's query wrapper): a loader transaction or the user_candidates step held the
    // lock past the lock timeout.
    if (postgresError(error)?.code !== "55P03") throw error;
    throw new ApiError("dependency_unavailable", "a warehouse write is in progress; erase again shortly", {
      headers: { "Retry-After": "30" },
      cause: error,
    });
  });
  const stream = deps.redis ? await eraseStreams(deps.redis, all.userKeys) : null;
  await dependency("Workers KV", () => deleteUserLists(env, all.userKeys));
  const deadLetters = await dependency("a dead-letter object", () =>
    inChunks(config.sources.list, (source) => env.DEAD_LETTERS.getByName(source.id).eraseMentions(idsOf(all))),
  );
  return {
    subject,
    userKeys: all.userKeys,
    suppressed: suppress,
    mergedInto,
    deleted: {
      sessionObjects: [...erasedObjects].sort(),
      unreached: [...unreached].sort(),
      stream,
      warehouse,
      kv: all.userKeys.length,
      deadLetters: deadLetters.reduce((sum, r) => sum + r.deleted, 0),
    },
    verification: await verifyErasure(deps, subject),
  };
}

/** What every store still holds of the subject (and of every key erased under it). */
export async function verifyErasure(deps: PrivacyDeps, subject: SubjectKey): Promise<ErasureVerification> {
  const { env, config } = deps;
  const k = subjectKeys(await keysOf(deps, subject));
  const [objects, kv, stream, warehouse, deadLetters] = await Promise.all([
    inChunks(k.userKeys, async (key) => {
      const stub = session(env, key);
      try {
        const [snapshot, suppression] = await Promise.all([stub.snapshot(), stub.suppression()]);
        return { key, exists: snapshot.exists, suppressed: suppression.suppressed };
      } catch (error) {
        // Not known to be empty: listed as left, so the answer is not clean.
        log("warn", "erasure verifier: a session object did not answer", { key, error: describeError(error) });
        return { key, exists: true, suppressed: false };
      }
    }),
    dependency("Workers KV", () => presentUserLists(env, k.userKeys)),
    deps.redis ? scanStreams(deps.redis, new Set(k.userKeys), true) : Promise.resolve(null),
    countWarehouse(deps.db, k),
    dependency("a dead-letter object", () =>
      inChunks(config.sources.list, (source) => env.DEAD_LETTERS.getByName(source.id).countMentions(idsOf(k))),
    ),
  ]);
  const left = {
    sessionObjects: objects.filter((o) => o.exists).map((o) => o.key),
    kv,
    stream,
    warehouse,
    deadLetters: deadLetters.reduce((sum, r) => sum + r.count, 0),
  };
  const clean =
    left.sessionObjects.length === 0 &&
    left.kv.length === 0 &&
    (stream === null || (stream.matched === 0 && stream.complete)) &&
    Object.values(warehouse).every((n) => n === 0) &&
    left.deadLetters === 0;
  return {
    subject,
    userKeys: k.userKeys,
    clean,
    left,
    suppressed: objects.filter((o) => o.suppressed).map((o) => o.key),
  };
}

/**
 * Suppression without erasure (PUT) or lifted (DELETE) on every key of the subject: the keys the warehouse links to it
 * and those its session object knows (every merged object, the devices it erased and suppressed while suppressed).
 */
export async function setSuppression(
  deps: PrivacyDeps,
  subject: SubjectKey,
  suppressed: boolean,
): Promise<{ subject: string; userKeys: string[]; suppressed: boolean }> {
  const linked = await dependency("the session object", () => session(deps.env, subject).linkedKeys());
  const keys = await keysOf(deps, subject, linked);
  await dependency("a session object", () =>
    inChunks(keys, (key) => (suppressed ? session(deps.env, key).suppress() : session(deps.env, key).unsuppress())),
  );
  return { subject, userKeys: keys, suppressed };
}
