// The batch_runs journal: every load / compute / publish / refresh run leaves one row with its trigger, outcome,
// timings and measurements, for the admin status API and for operators reading Postgres directly.
import { eq, sql } from "drizzle-orm";
import type { Database } from "../stores/db.ts";
import { type BatchRunKind, type BatchRunStatus, type BatchRunTrigger, batchRuns } from "../stores/schema.ts";
import { describeFailure } from "./retry.ts";

type RunsDb = Pick<Database, "insert" | "update">;

export interface RunStart {
  kind: BatchRunKind;
  trigger: BatchRunTrigger;
  parentId?: number | null;
}

/** Opens a `running` row; returns its id. */
export async function startRun(db: RunsDb, run: RunStart): Promise<number> {
  const [row] = await db
    .insert(batchRuns)
    .values({ kind: run.kind, trigger: run.trigger, parentId: run.parentId ?? null, status: "running" })
    .returning({ id: batchRuns.id });
  if (!row) throw new Error("batch_runs: insert returned no row");
  return row.id;
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
