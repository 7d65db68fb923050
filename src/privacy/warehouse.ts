// The warehouse side of erasure (docs/privacy.md): one transaction that records the erased keys and deletes their
// rows, and the lock that keeps it from racing the writers of per-user rows.
//
// The race: a loader batch (or the user_candidates swap) that read its input before an erasure committed must not
// write that user's rows after it, nor the loader move that user's refused entry to the quarantine stream. Every
// such writer holds `pg_advisory_xact_lock_shared(ERASURE_LOCK)` for its transaction (the quarantine XADD is made
// inside one); an erasure takes the same lock exclusively. So an erasure waits for writers in flight (and then
// deletes what they wrote), and a writer that starts later sees `erased_users` and leaves those keys out.
// user_candidates reads its input without the lock, in snapshots of its own, and takes the lock only to swap the
// lists in: it leaves out every user whose erasure (`erased_xid`) its snapshot did not see.
import { sql } from "drizzle-orm";
import type { Executor } from "../batch/bulk.ts";
import { rows } from "../batch/recommenders/sql.ts";
import { candidateStages } from "../batch/recommenders/user-candidates.ts";
import { postgresError } from "../batch/retry.ts";
import { USER_PREFIX } from "../publish/keys.ts";
import { type Database, transaction } from "../stores/db.ts";
import { erasedUsers, events, identities, interactions, publishedKeys, userCandidates } from "../stores/schema.ts";

/** The advisory lock id of the warehouse's per-user writers ("lastmile erasure", an arbitrary 63-bit constant). */
export const ERASURE_LOCK = 0x4c4d_4552_4153_45n;

/** How long an erasure waits for writers in flight (a loader batch, the user_candidates swap) before giving up. */
export const ERASURE_LOCK_TIMEOUT_MS = 30_000;

/** A text[] parameter, passed as one JSON string (no reliance on a driver's array encoding). */
const textArray = (values: readonly string[]) =>
  sql`array(select jsonb_array_elements_text(${JSON.stringify(values)}::jsonb))`;

/**
 * Taken (shared) first in every transaction that writes per-user data: loader batches and the loader's moves to the
 * quarantine stream, the user_candidates swap.
 */
export async function holdErasureLockShared(tx: Executor): Promise<void> {
  await tx.execute(sql`select pg_advisory_xact_lock_shared(${ERASURE_LOCK.toString()}::bigint)`);
}

/**
 * Which of `userKeys` were erased, and when (epoch ms). Call it after `holdErasureLockShared` in the same
 * transaction: a row it does not see then cannot be committed before this transaction ends.
 */
export async function erasedAmong(tx: Executor, userKeys: readonly string[]): Promise<Map<string, number>> {
  const erased = new Map<string, number>();
  if (userKeys.length === 0) return erased;
  const found = await rows<{ user_key: string; erased_at: string | Date }>(
    tx,
    sql`select user_key, erased_at from ${erasedUsers} where user_key = any(${textArray(userKeys)})`,
  );
  for (const r of found) erased.set(r.user_key, new Date(r.erased_at).getTime());
  return erased;
}

/** What one subject's data looks like in Postgres: the rows an erasure deletes and the verifier counts. */
export interface WarehouseCounts {
  events: number;
  interactions: number;
  identities: number;
  userCandidates: number;
  publishedKeys: number;
}

/** The keys of a subject: the session keys and the raw ids (user ids, anonymous ids) they name. */
export interface SubjectKeys {
  userKeys: string[];
  userIds: string[];
  anonymousIds: string[];
}

export function subjectKeys(userKeys: Iterable<string>): SubjectKeys {
  const keys = [...new Set(userKeys)].sort();
  return {
    userKeys: keys,
    userIds: keys.filter((k) => k.startsWith("u:")).map((k) => k.slice(2)),
    anonymousIds: keys.filter((k) => k.startsWith("a:")).map((k) => k.slice(2)),
  };
}

/**
 * The anonymous ids the warehouse links to these user ids (identify, alias, events carrying both), as `a:` keys —
 * pre-login visitors whose session objects may never have been merged (another device, an expired object).
 */
export async function linkedAnonymousKeys(db: Executor, userIds: readonly string[]): Promise<string[]> {
  if (userIds.length === 0) return [];
  const found = await rows<{ anonymous_id: string }>(
    db,
    sql`select distinct anonymous_id from ${identities} where user_id = any(${textArray(userIds)})`,
  );
  return found.map((r) => `a:${r.anonymous_id}`);
}

/** Every key erased under `subject` before (the verifier's view once the identity links are gone). */
export async function erasedKeysOf(db: Executor, subject: string): Promise<string[]> {
  const found = await rows<{ user_key: string }>(
    db,
    sql`select user_key from ${erasedUsers} where subject = ${subject} order by user_key`,
  );
  return found.map((r) => r.user_key);
}

function whereEvents(k: SubjectKeys) {
  return sql`${events.userKey} = any(${textArray(k.userKeys)}) or ${events.userId} = any(${textArray(k.userIds)})
    or ${events.anonymousId} = any(${textArray(k.anonymousIds)})`;
}

function whereIdentities(k: SubjectKeys) {
  return sql`${identities.userId} = any(${textArray(k.userIds)}) or ${identities.anonymousId} = any(${textArray(k.anonymousIds)})`;
}

const publishedUserKeys = (k: SubjectKeys) => k.userKeys.map((key) => `${USER_PREFIX}${key}`);

function countsOf(row: Partial<Record<keyof WarehouseCounts, number>> | undefined): WarehouseCounts {
  return {
    events: row?.events ?? 0,
    interactions: row?.interactions ?? 0,
    identities: row?.identities ?? 0,
    userCandidates: row?.userCandidates ?? 0,
    publishedKeys: row?.publishedKeys ?? 0,
  };
}

/** Counts what Postgres still holds of a subject (the verifier). */
export async function countWarehouse(db: Executor, k: SubjectKeys): Promise<WarehouseCounts> {
  const [row] = await rows<Record<keyof WarehouseCounts, number>>(
    db,
    sql`select
      (select count(*) from ${events} where ${whereEvents(k)})::int as "events",
      (select count(*) from ${interactions} where ${interactions.userKey} = any(${textArray(k.userKeys)}))::int as "interactions",
      (select count(*) from ${identities} where ${whereIdentities(k)})::int as "identities",
      (select count(*) from ${userCandidates} where ${userCandidates.userKey} = any(${textArray(k.userKeys)}))::int as "userCandidates",
      (select count(*) from ${publishedKeys} where ${publishedKeys.key} = any(${textArray(publishedUserKeys(k))}))::int as "publishedKeys"`,
  );
  return countsOf(row);
}

/**
 * In one transaction under the exclusive erasure lock (waited for at most `lockTimeoutMs`, else 55P03): deletes the
 * subject's events, their interactions (by key and by the deleted events' ids), identity links, candidate lists and
 * published-key records (so the publisher neither skips nor tombstones a key it never had), then records every key
 * in `erased_users` (under `subject`, with the suppression flag, `erased_at` = the clock after the deletes; a
 * repeated erasure moves `erased_at` forward).
 * Returns the rows deleted.
 */
export async function eraseWarehouse(
  db: Pick<Database, "$client">,
  subject: string,
  k: SubjectKeys,
  suppressed: boolean,
  lockTimeoutMs = ERASURE_LOCK_TIMEOUT_MS,
): Promise<WarehouseCounts> {
  return transaction(db, async (tx) => {
    await tx.execute(sql.raw(`set local lock_timeout = ${Math.max(1, Math.floor(lockTimeoutMs))}`));
    await tx.execute(sql`select pg_advisory_xact_lock(${ERASURE_LOCK.toString()}::bigint)`);
    const [row] = await rows<Record<keyof WarehouseCounts, number>>(
      tx,
      sql`with
        gone_events as (delete from ${events} where ${whereEvents(k)} returning message_id),
        gone_interactions as (
          delete from ${interactions}
          where ${interactions.userKey} = any(${textArray(k.userKeys)})
             or ${interactions.messageId} in (select message_id from gone_events)
          returning 1),
        gone_identities as (delete from ${identities} where ${whereIdentities(k)} returning 1),
        gone_candidates as (
          delete from ${userCandidates} where ${userCandidates.userKey} = any(${textArray(k.userKeys)}) returning 1),
        gone_published as (
          delete from ${publishedKeys} where ${publishedKeys.key} = any(${textArray(publishedUserKeys(k))}) returning 1)
      select (select count(*) from gone_events)::int as "events",
             (select count(*) from gone_interactions)::int as "interactions",
             (select count(*) from gone_identities)::int as "identities",
             (select count(*) from gone_candidates)::int as "userCandidates",
             (select count(*) from gone_published)::int as "publishedKeys"`,
    );
    // A compute's staging tables hold lists not swapped in yet, and one a compute left when it died keeps them until
    // the next compute drops it: the subject's rows there go too.
    const staged = await eraseStaged(tx, k);
    // Recorded last, at the clock's time (not now(), the transaction's start, which precedes the wait for the lock
    // and the deletes): a reader whose snapshot still held the rows deleted above read them before `erased_at`, so a
    // list built from them (its model version's created_at) counts as built before the erasure and is withheld.
    await tx.execute(sql`
      insert into ${erasedUsers} (user_key, subject, erased_at, suppressed)
      select key, ${subject}, clock_timestamp(), ${suppressed} from unnest(${textArray(k.userKeys)}) as key
      on conflict (user_key) do update set subject = excluded.subject, erased_at = excluded.erased_at,
        erased_xid = excluded.erased_xid, suppressed = excluded.suppressed`);
    const counts = countsOf(row);
    return { ...counts, userCandidates: counts.userCandidates + staged };
  });
}

/**
 * Deletes a subject's rows from every staging table of user_candidates (src/batch/recommenders/user-candidates.ts);
 * returns how many. A table its compute drops meanwhile is skipped (under a savepoint, so the erasure goes on).
 */
async function eraseStaged(tx: Executor, k: SubjectKeys): Promise<number> {
  let deleted = 0;
  for (const table of await candidateStages(tx)) {
    await tx.execute(sql`savepoint erase_stage`);
    try {
      const [gone] = await rows<{ n: number }>(
        tx,
        sql`with gone as (delete from ${sql.identifier(table)} where user_key = any(${textArray(k.userKeys)}) returning 1)
            select count(*)::int as n from gone`,
      );
      deleted += gone?.n ?? 0;
      await tx.execute(sql`release savepoint erase_stage`);
    } catch (error) {
      if (postgresError(error)?.code !== "42P01") throw error; // undefined_table: dropped since it was listed
      await tx.execute(sql`rollback to savepoint erase_stage`);
    }
  }
  return deleted;
}

/** Lifts the suppression flag of a subject's keys in `erased_users` (the rows stay: they still filter old events). */
export async function unsuppressWarehouse(db: Executor, subject: string): Promise<void> {
  await db.execute(sql`update ${erasedUsers} set suppressed = false where subject = ${subject}`);
}
