// The refresh: load (stream → Postgres, src/batch/loader.ts) → compute (SQL recommenders, src/batch/compute.ts) →
// publish (start the PublishCoordinator, src/publish/coordinator.ts). The cron runs it every interval, the admin
// API on demand. Each step is a batch_runs row whose parent is the refresh's own row.
//
// Budget of the invocation that runs it: the load is bounded by its own budget (LOADER_BUDGET_MS), the compute is
// SQL inside Postgres (the Worker only waits), and the publish is only *started* here — its KV writes happen in the
// coordinator's alarms, each within the per-invocation limit of KV operations. So the invocation uses no KV
// operation at all and one Durable Object call.
//
// A refresh never overlaps another (the `refresh` lease), and never recomputes while a publish is still running:
// the compute swaps output rows, and a publish that spans several alarms must read one set of rows. It then skips
// compute and publish (the load still runs) and the next interval catches up. The load never waits for the refresh
// lease: the loader has a lease of its own, so a refresh that finds the refresh lease held — a run in progress, or
// one that crashed or lost its database before it could release the lease (which then holds for
// REFRESH_LEASE_TTL_MS) — still loads the stream, and only compute and publish wait.
import { log } from "../log.ts";
import type { PublishCoordinator, PushResult, StartResult } from "../publish/coordinator.ts";
import type { Database } from "../stores/db.ts";
import type { Redis } from "../stores/redis.ts";
import type { BatchRunTrigger } from "../stores/schema.ts";
import { type ComputeOptions, type ComputeReport, computeRecommendations } from "./compute.ts";
import { acquireLease, releaseLease } from "./lease.ts";
import { type LoaderOptions, type LoadReport, runLoader } from "./loader.ts";
import { describeFailure, withRetry } from "./retry.ts";
import { closeAbandonedRuns, finishRun, recordSkippedRun, startRun } from "./runs.ts";

export const REFRESH_LEASE = "refresh";
/**
 * Longer than a refresh can take (load budget + compute; a cron invocation has 15 minutes of wall time), so a live
 * refresh never loses it; a crashed one blocks the next only until it expires.
 */
export const REFRESH_LEASE_TTL_MS = 15 * 60_000;

export interface RefreshDeps {
  db: Database;
  /** Absent when Redis is not configured: the load is skipped. */
  redis?: Redis | undefined;
  coordinator: DurableObjectStub<PublishCoordinator>;
}

export interface RefreshOptions {
  trigger: BatchRunTrigger;
  /** Postgres schema the steps work in (tests); undefined = public. */
  schema?: string | undefined;
  loader?: Omit<LoaderOptions, "trigger" | "parentRunId">;
  compute?: ComputeOptions;
  /** Passed to the coordinator (tests lower the settle time and per-alarm budget). */
  publish?: { settleMs?: number; opsPerAlarm?: number };
}

type StepSkip = { status: "skipped" | "not_configured"; reason: string };

export interface RefreshReport {
  runId: number | null;
  status: "ok" | "failed" | "skipped";
  load: Pick<LoadReport, "runId" | "status" | "events" | "entries" | "backlog" | "lagMs" | "durationMs"> | StepSkip;
  compute:
    | { runId: number; status: "ok"; version: string; rows: number; durationMs: number }
    | { runId: number | null; status: "failed"; error: string }
    | StepSkip;
  /** The publish started; after a failed compute, the catalogue push instead. */
  publish: StartResult | PushResult | StepSkip;
  durationMs: number;
  error?: string;
}

function loadSummary(r: LoadReport): RefreshReport["load"] {
  return {
    runId: r.runId,
    status: r.status,
    events: r.events,
    entries: r.entries,
    backlog: r.backlog,
    lagMs: r.lagMs,
    durationMs: r.durationMs,
  };
}

function computeRows(report: ComputeReport): number {
  return Object.values(report.outputs).reduce((sum, o) => sum + (o?.rows ?? 0), 0);
}

/** One refresh. Never throws for a failed step: the report and the batch_runs rows say what happened. */
export async function runRefresh(deps: RefreshDeps, options: RefreshOptions): Promise<RefreshReport> {
  const { db, redis, coordinator } = deps;
  const started = Date.now();
  const report: RefreshReport = {
    runId: null,
    status: "ok",
    load: { status: "skipped", reason: "not run" },
    compute: { status: "skipped", reason: "not run" },
    publish: { status: "skipped", reason: "not run" },
    durationMs: 0,
  };
  const run = { kind: "refresh" as const, trigger: options.trigger };
  const holder = crypto.randomUUID();
  // The first statements of a run meet a waking or restarting database first: retried as the loader's are.
  const retrying = <T>(what: string, fn: () => Promise<T>) =>
    withRetry(fn, {
      onRetry: (error, retry, delayMs) =>
        log("warn", `refresh: ${what} failed transiently; retrying`, { retry, delayMs, error: describeFailure(error) }),
    });
  let acquired: boolean;
  try {
    acquired = await retrying("lease", () => acquireLease(db, REFRESH_LEASE, holder, REFRESH_LEASE_TTL_MS));
  } catch (error) {
    report.status = "failed";
    report.error = `could not take the refresh lease: ${describeFailure(error)}`;
    report.durationMs = Date.now() - started;
    log("error", "refresh: failed", { error: report.error });
    return report;
  }
  if (!acquired) {
    report.status = "skipped";
    report.runId = await retrying("run record", () =>
      recordSkippedRun(db, run, { reason: "lease_held", lease: REFRESH_LEASE }),
    ).catch(() => null);
    const reason = "another refresh holds the lease";
    report.compute = { status: "skipped", reason };
    report.publish = { status: "skipped", reason };
    if (redis) {
      const parentRunId = report.runId;
      const load = await runLoader({ db, redis }, { ...options.loader, trigger: options.trigger, parentRunId });
      report.load = loadSummary(load);
      // The load is this invocation's own step: its failure fails the invocation (cron history, the admin answer).
      if (load.status === "failed") {
        report.status = "failed";
        report.error = `load: ${load.error ?? "failed"}`;
      }
    }
    report.durationMs = Date.now() - started;
    log(report.status === "failed" ? "error" : "info", "refresh: another refresh holds the lease; loaded only", {
      load: report.load.status,
      ...(report.error ? { error: report.error } : {}),
    });
    return report;
  }
  const lease = { name: REFRESH_LEASE, holder };
  try {
    await closeAbandonedRuns(db, lease);
    const runId = await retrying("run record", () => startRun(db, run, lease));
    report.runId = runId;
    const failures: string[] = [];

    // 1. load
    if (redis) {
      const load = await runLoader({ db, redis }, { ...options.loader, trigger: options.trigger, parentRunId: runId });
      report.load = loadSummary(load);
      if (load.status === "failed") failures.push(`load: ${load.error ?? "failed"}`);
    } else {
      report.load = { status: "not_configured", reason: "UPSTASH_REDIS_REST_URL is not set" };
    }

    // 2. compute, unless a publish is still reading the current outputs
    const status = await coordinator.status();
    if (status.job) {
      const reason = `publish of version ${status.job.version} still running`;
      report.compute = { status: "skipped", reason };
      report.publish = { status: "skipped", reason };
    } else {
      const computeRunId = await startRun(db, { kind: "compute", trigger: options.trigger, parentId: runId }, lease);
      let computed = false;
      try {
        const result = await computeRecommendations(db, options.compute ?? {});
        await finishRun(db, computeRunId, "ok", { ...result, rows: computeRows(result) });
        report.compute = {
          runId: computeRunId,
          status: "ok",
          version: result.version,
          rows: computeRows(result),
          durationMs: result.durationMs,
        };
        computed = true;
      } catch (error) {
        const message = describeFailure(error);
        await finishRun(db, computeRunId, "failed", {}, error).catch(() => {});
        report.compute = { runId: computeRunId, status: "failed", error: message };
        failures.push(`compute: ${message}`);
      }

      // 3. publish: started here, carried out by the coordinator's alarms
      if (computed) {
        report.publish = await coordinator.start({
          trigger: options.trigger,
          parentRunId: runId,
          generatedAt: Date.now(),
          ...(options.schema ? { schema: options.schema } : {}),
          ...options.publish,
        });
      } else {
        // The previous snapshot stays published, but stock and visibility still reach the edge this interval.
        report.publish = await coordinator.pushCatalog({
          trigger: options.trigger,
          ...(options.schema ? { schema: options.schema } : {}),
        });
      }
    }

    report.status = failures.length ? "failed" : "ok";
    if (failures.length) report.error = failures.join("; ");
    report.durationMs = Date.now() - started;
    const { runId: _r, status: _s, error: _e, ...stats } = report;
    await finishRun(db, runId, report.status, stats, report.error);
  } catch (error) {
    report.status = "failed";
    report.error = describeFailure(error);
    report.durationMs = Date.now() - started;
    if (report.runId !== null) {
      const runId = report.runId;
      await finishRun(db, runId, "failed", { durationMs: report.durationMs }, error).catch(() => {});
    }
  } finally {
    await releaseLease(db, REFRESH_LEASE, holder).catch(() => {});
  }
  if (report.status === "failed") log("error", "refresh: failed", { runId: report.runId, error: report.error });
  else log("info", "refresh: finished", { runId: report.runId, durationMs: report.durationMs });
  return report;
}
