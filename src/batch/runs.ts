// The batch_runs journal: every load / compute / publish / refresh run leaves one row with its trigger, outcome,
// timings and measurements, for the admin status API and for operators reading Postgres directly.
import { and, eq, ne, notInArray, sql } from "drizzle-orm";
import { log } from "../log.ts";
import type { Database } from "../stores/db.ts";
import { type BatchRunKind, type BatchRunStatus, type BatchRunTrigger, batchRuns } from "../stores/schema.ts";
import { describeFailure } from "./retry.ts";

type RunsDb = Pick<Database, "insert" | "update">;

export interface RunStart {
  kind: BatchRunKind;
  trigger: BatchRunTrigger;
  parentId?: number | null;
}

/** The lease a run holds: `name` (`refresh`, `loader`) and the run's own holder id. */
export interface RunLease {
  name: string;
  holder: string;
}

/**
 * Opens a `running` row; returns its id. A run that holds a lease names it: its row is then one per holder and kind,
 * so a start retried after a lost answer gets the row the first attempt inserted instead of leaving that one
 * `running` for good, and a later holder of the lease can close the row if the run never does (closeAbandonedRuns).
 */
export async function startRun(db: RunsDb, run: RunStart, lease?: RunLease): Promise<number> {
  const [row] = await db
    .insert(batchRuns)
    .values({
      kind: run.kind,
      trigger: run.trigger,
      parentId: run.parentId ?? null,
      status: "running",
      lease: lease?.name ?? null,
      holder: lease?.holder ?? null,
    })
    .onConflictDoUpdate({
      target: [batchRuns.holder, batchRuns.kind],
      targetWhere: sql`${batchRuns.holder} is not null`,
      set: { holder: sql`excluded.holder` },
    })
    .returning({ id: batchRuns.id });
  if (!row) throw new Error("batch_runs: insert returned no row");
  return row.id;
}

/**
 * The lease a publish's and a catalogue push's batch_runs rows carry. The publish coordinator
 * (src/publish/coordinator.ts) runs one job at a time, so when it opens a row no earlier row of this lease belongs to
 * a live run: one still `running` was left by a start whose answer was lost, or by a version before this lease
 * (migration 0011), and is closed as `abandoned`.
 */
export const PUBLISH_RUN_LEASE = "publish";

/** What a closed abandoned row says. */
export const ABANDONED_ERROR =
  "the run stopped without finishing (its Worker was stopped or crashed, or it ran past its lease); the next holder of the lease closed it";

/**
 * Closes the `running` rows of earlier holders of `lease`, called by a run that has just taken it: whoever held it
 * before has released it or let it expire, so a row of theirs still `running` belongs to a run that stopped without
 * closing it. A run that is in fact still going (past its lease) overwrites `abandoned` when it finishes. `keep`: ids
 * whose outcome the caller knows and will still write (the publish coordinator's owed records). Best-effort:
 * a failure is logged and the next holder tries again. Returns the ids closed.
 */
export async function closeAbandonedRuns(
  db: Pick<Database, "update">,
  lease: RunLease,
  keep: readonly number[] = [],
): Promise<number[]> {
  try {
    const rows = await db
      .update(batchRuns)
      .set({ status: "abandoned", finishedAt: sql`now()`, error: ABANDONED_ERROR })
      .where(
        and(
          eq(batchRuns.status, "running"),
          eq(batchRuns.lease, lease.name),
          ne(batchRuns.holder, lease.holder),
          keep.length > 0 ? notInArray(batchRuns.id, [...keep]) : undefined,
        ),
      )
      .returning({ id: batchRuns.id });
    const ids = rows.map((r) => r.id);
    if (ids.length > 0)
      log("warn", "batch: closed runs that stopped without finishing", { lease: lease.name, runIds: ids });
    return ids;
  } catch (error) {
    log("warn", "batch: could not close runs that stopped without finishing", {
      lease: lease.name,
      error: describeFailure(error),
    });
    return [];
  }
}

/** Closes a run with its outcome and measurements (`error` is reduced to a loggable message). */
export async function finishRun(
  db: RunsDb,
  id: number,
  status: Exclude<BatchRunStatus, "running">,
  stats: Record<string, unknown>,
  error?: unknown,
): Promise<void> {
  await db
    .update(batchRuns)
    .set({
      status,
      stats,
      finishedAt: sql`now()`,
      error: error === undefined ? null : describeFailure(error),
    })
    .where(eq(batchRuns.id, id));
}

/** A run that did nothing because another held the lease: one closed row, so skips are visible too. */
export async function recordSkippedRun(db: RunsDb, run: RunStart, stats: Record<string, unknown>): Promise<number> {
  const [row] = await db
    .insert(batchRuns)
    .values({
      kind: run.kind,
      trigger: run.trigger,
      parentId: run.parentId ?? null,
      status: "skipped",
      stats,
      finishedAt: sql`now()`,
    })
    .returning({ id: batchRuns.id });
  if (!row) throw new Error("batch_runs: insert returned no row");
  return row.id;
}
