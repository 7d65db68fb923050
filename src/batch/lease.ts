// Runs of the batch loop never overlap: each takes a named lease row in Postgres first. Cron runs may be late,
// duplicated or retried, and an admin refresh may start while the cron runs; Postgres is the one place all of
// them see. Expiry uses the database clock (one clock for every holder), so a crashed holder blocks others only
// until its lease expires. A holder extends its lease as it goes (`leaseExtension`, inside each batch's
// statement: a batch commits only while its run still holds the lease) and deletes it at the end.
import { and, eq, type SQL, sql } from "drizzle-orm";
import type { Database } from "../stores/db.ts";
import { leases } from "../stores/schema.ts";
import type { Executor } from "./bulk.ts";

/**
 * The database's clock when the statement runs: clock_timestamp(), not now(). now() is the time the *transaction*
 * began, and an extension runs last in a batch's transaction: a batch that took longer than the lease's lifetime
 * (waiting for a lock, say) would renew the lease to an instant already past, and commit with a lease any other run
 * could take at once. The same for a take-over that waited for the holder's batch to commit.
 */
const clock = sql`clock_timestamp()`;

/** The database's clock + ms (one clock for every holder). */
const expiry = (ttlMs: number) => sql`${clock} + ${Math.max(0, Math.round(ttlMs))}::integer * interval '1 millisecond'`;

/**
 * Takes `name` for `holder` for `ttlMs` unless someone else holds an unexpired lease. One statement: the upsert
 * only overwrites an expired row or one of the same holder, and RETURNING says whether it did. The same holder: a
 * retry after a lost answer (the insert committed) finds its own lease and takes it again, instead of skipping the
 * run and blocking the next one until the lease expires.
 */
export async function acquireLease(db: Executor, name: string, holder: string, ttlMs: number): Promise<boolean> {
  const result = await db.execute(sql`
    insert into ${leases} (name, holder, acquired_at, expires_at)
    values (${name}, ${holder}, ${clock}, ${expiry(ttlMs)})
    on conflict (name) do update
      set holder = excluded.holder, acquired_at = excluded.acquired_at, expires_at = excluded.expires_at
      where ${leases.expiresAt} < ${clock} or ${leases.holder} = excluded.holder
    returning holder`);
  return (result.rows as { holder: string }[]).some((r) => r.holder === holder);
}

/**
 * The UPDATE that pushes the expiry to the database's clock at this statement + ttl; it matches no row once `holder`
 * lost `name`.
 */
export function leaseExtension(name: string, holder: string, ttlMs: number): SQL {
  return sql`update ${leases} set expires_at = ${expiry(ttlMs)} where name = ${name} and holder = ${holder}`;
}

/** Pushes the expiry to now + ttl; false when `holder` no longer holds `name` (it expired and was taken). */
export async function extendLease(db: Executor, name: string, holder: string, ttlMs: number): Promise<boolean> {
  const result = await db.execute(leaseExtension(name, holder, ttlMs));
  return ((result as { rowCount?: number | null }).rowCount ?? 0) > 0;
}

/** Gives the lease up (only if `holder` still holds it). */
export async function releaseLease(db: Pick<Database, "delete">, name: string, holder: string): Promise<void> {
  await db.delete(leases).where(and(eq(leases.name, name), eq(leases.holder, holder)));
}

/** Thrown inside a batch whose run lost its lease: the batch rolls back and the run stops. */
export class LeaseLostError extends Error {
  override name = "LeaseLostError";
}
