// PublishCoordinator: the one Durable Object (named "global") that publishes snapshots to Workers KV and the only
// writer of the pointer key. A publish larger than one invocation's KV budget continues across alarms: each alarm
// runs publisher.advance() with at most `opsPerAlarm` KV operations (≤ 1,000 per invocation), persists the cursor in
// this object's storage and re-arms itself. Alarms are at-least-once: a re-run repeats idempotent steps.
// It also serves rollbacks (a pointer flip), the admin catalogue push, the status the admin API shows and the
// version numbers of the versioned admin documents (nextDocVersion).
// docs/publishing.md.
import { DurableObject } from "cloudflare:workers";
import { describeFailure, withRetry } from "../batch/retry.ts";
import { closeAbandonedRuns, finishRun, PUBLISH_RUN_LEASE, type RunStart, startRun } from "../batch/runs.ts";
import { eachLimit } from "../concurrency.ts";
import { loadConfig } from "../config.ts";
import { describeError, log } from "../log.ts";
import { CODEC_FORMAT, encodePointer, HISTORY_DEPTH, listsVersion, type Pointer } from "./codec.ts";
import { openDb, validSchema } from "./db.ts";
import { POINTER_KEY, userListKey } from "./keys.ts";
import { KV_MIN_WRITE_INTERVAL_MS, KV_OPS_PER_INVOCATION, KV_PUT_CONCURRENCY, KvBudget } from "./kv-budget.ts";
import {
  advance,
  buildCatalog,
  CATALOG_RECORD,
  catalogPairs,
  newStats,
  type PublishJob,
  saveCatalogWatermark,
  stableWrites,
} from "./publisher.ts";
import { collectGarbage, earliestDue, type GarbageKey, SHARED_GC_GRACE_MS, sweepGarbage } from "./shared-gc.ts";
import { catalogRows, catalogWatermark, markModelsPublished, publishedHashes, recordPublished } from "./sources.ts";

type Db = ReturnType<typeof openDb>["db"];

/** The coordinator's name: one per deployment (one KV namespace, one pointer). */
export const COORDINATOR_NAME = "global";
/** Storage keys of the version counters of the versioned admin documents (nextDocVersion), one per document key. */
export const DOC_VERSION_PREFIX = "docVersion:";
/**
 * KV operations one alarm may use: 900 leaves 100 of the platform's 1,000 for the shared keys and pointer of the
 * final step and for anything a future step adds; tests lower it to exercise many alarms.
 */
export const DEFAULT_OPS_PER_ALARM = 900;
/** Upper bound of `opsPerAlarm`: never the platform's full 1,000. */
export const MAX_OPS_PER_ALARM = KV_OPS_PER_INVOCATION - 10;
/**
 * Before the pointer names a version whose per-user keys were overwritten in place, wait this long: KV propagates
 * a write within ~60 s and edge caches keep a read value for its cacheTtl (60 s minimum), so after it a reader
 * that sees the new pointer almost surely sees the new entries too. Local KV (miniflare) is consistent: 0 there.
 */
export const PRODUCTION_SETTLE_MS = 60_000;
/**
 * Failed alarm invocations in a row, without progress between them, before a job is given up (and recorded as
 * failed). An alarm that completed a step, or recorded the keys a step's partly refused puts wrote, first starts the
 * count again: refusals of some keys (KV's 429s) on a long publish cost retries, never the publish.
 */
export const MAX_JOB_FAILURES = 5;
/** KV deletes one deleteUserLists call makes at most (within its invocation's budget). */
export const ERASURE_DELETES_PER_CALL = DEFAULT_OPS_PER_ALARM;
/** Versions remembered for the admin API and rollback. */
export const PUBLISHED_HISTORY = 50;
/** Run records kept for a later write when Postgres refused them as their run ended (oldest dropped past this). */
export const MAX_OWED_RUN_RECORDS = 100;
/** Storage key of the owed run records: apart from `state`, which callers hold and write back as a whole. */
const OWED_RUNS_KEY = "owedRuns";

/** A publish's batch_runs outcome Postgres refused when the run ended: written at the next alarm, start or push. */
export interface OwedRunRecord {
  schema?: string | undefined;
  runId: number;
  status: "ok" | "failed";
  stats: Record<string, unknown>;
  error?: string | undefined;
}

export interface PublishedVersion {
  version: number;
  generatedAt: number;
  publishedAt: number;
  modelVersion: number | null;
  /** Stable keys written by this version (they push older entries out of the keys' history). */
  stableWrites: number;
  sharedWrites: number;
  runId: number | null;
  /** "catalog_push": a version that only changed the catalogue; "failed": keys written, never served. */
  kind: "publish" | "catalog_push" | "failed";
  pointer: Pointer | null;
}

export interface CoordinatorState {
  lastVersion: number;
  pointer: Pointer | null;
  lastPointerWriteAt: number;
  /** Newest first. */
  versions: PublishedVersion[];
  /** Shared keys no pointer that may still be served names, with the time they may be deleted (sharedGc.ts). */
  garbage?: GarbageKey[];
  /**
   * A publish was given up after it wrote (and recorded) keys but before its pointer: the next publish writes a
   * pointer even if nothing else changed, or readers would never be served those keys. Cleared by a publish's
   * pointer and by a rollback (which is meant to hold); a catalogue push keeps it (it serves the old lists).
   */
  pointerOwed?: boolean;
}

export interface StartRequest {
  trigger: "cron" | "admin";
  parentRunId?: number | null;
  /** When the snapshot's data was computed (epoch ms; default now). */
  generatedAt?: number;
  schema?: string;
  settleMs?: number;
  opsPerAlarm?: number;
}

export type StartResult =
  | { status: "started"; version: number; runId: number | null }
  | { status: "busy"; version: number; runId: number | null }
  | { status: "not_configured" };

export type RollbackResult =
  | { ok: true; pointer: Pointer; previous: number | null }
  | {
      ok: false;
      code: "version_not_found" | "version_not_rollbackable" | "publish_in_progress";
      message: string;
    };

export type PushResult =
  | { status: "published"; version: number; pointer: Pointer; runId: number | null; keysWritten: number }
  | { status: "unchanged"; version: number | null; runId: number | null }
  | { status: "queued"; version: number }
  | { status: "not_configured" };

export interface CoordinatorStatus {
  pointer: Pointer | null;
  lastVersion: number;
  versions: PublishedVersion[];
  job: PublishJob | null;
  /** Versions a rollback may go to now. */
  rollbackTargets: number[];
  /** Shared keys waiting to be deleted (shared-gc.ts). */
  garbage: GarbageKey[];
}

const EMPTY_STATE: CoordinatorState = { lastVersion: 0, pointer: null, lastPointerWriteAt: 0, versions: [] };

/**
 * Rollback targets at most: catalogue pushes write no per-user key, so without a cap every push of the last
 * PUBLISHED_HISTORY would stay a target and keep its catalogue keys alive (shared-gc.ts deletes the rest).
 */
export const MAX_ROLLBACK_TARGETS = 10;

/**
 * Whether stable keys still hold an entry valid for a version's pointer: a reader takes the newest entry ≤ the
 * version its pointer reads lists at (`listsVersion`: older than the version itself for a catalogue push), and each
 * key keeps HISTORY_DEPTH entries, so fewer than HISTORY_DEPTH versions that wrote stable keys (failed ones
 * included) may be newer than that. Only the newest MAX_ROLLBACK_TARGETS servable versions are candidates: a version
 * that has left the targets never comes back (its shared keys may have been deleted since).
 */
export function rollbackTargets(state: CoordinatorState): number[] {
  const candidates = state.versions.filter((v) => v.kind !== "failed" && v.pointer).slice(0, MAX_ROLLBACK_TARGETS);
  return candidates
    .filter((v) => {
      const lists = listsVersion(v.pointer as Pointer);
      return state.versions.filter((w) => w.version > lists && w.stableWrites > 0).length < HISTORY_DEPTH;
    })
    .map((v) => v.version);
}

/**
 * The state once a publish's pointer is written, as a new object (the failure path keeps the one the alarm read):
 * the version served and remembered, no pointer owed, and the shared keys no servable pointer names any more queued
 * for deletion at `garbageDueAt`.
 */
function afterPublish(state: CoordinatorState, job: PublishJob, pointer: Pointer, garbageDueAt: number) {
  const next: CoordinatorState = {
    ...state,
    lastVersion: job.version,
    pointer,
    lastPointerWriteAt: pointer.publishedAt,
    versions: [
      {
        version: job.version,
        generatedAt: job.generatedAt,
        publishedAt: pointer.publishedAt,
        modelVersion: pointer.modelVersion,
        stableWrites: stableWrites(job),
        sharedWrites: job.stats.sharedWritten,
        runId: job.runId,
        kind: "publish" as const,
        pointer,
      },
      ...state.versions,
    ].slice(0, PUBLISHED_HISTORY),
  };
  delete next.pointerOwed;
  collectGarbage(next, rollbackTargets(next), garbageDueAt);
  return next;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export class PublishCoordinator extends DurableObject<Env> {
  /** Test seam: wraps the KV binding for each invocation (tests count operations with it); identity otherwise. */
  wrapKv: (kv: KVNamespace) => KVNamespace = (kv) => kv;
  /** Test seam: how long an unreferenced shared key is kept before it is deleted. */
  gcGraceMs = SHARED_GC_GRACE_MS;
  #queue: Promise<unknown> = Promise.resolve();

  /** Runs `fn` after every earlier exclusive call: alarms, pushes and rollbacks never interleave across awaits. */
  #exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(fn, fn);
    this.#queue = run.catch(() => {});
    return run;
  }

  async #state(): Promise<CoordinatorState> {
    return (await this.ctx.storage.get<CoordinatorState>("state")) ?? structuredClone(EMPTY_STATE);
  }

  async #job(): Promise<PublishJob | null> {
    return (await this.ctx.storage.get<PublishJob>("job")) ?? null;
  }

  #database() {
    return loadConfig(this.env).database;
  }

  #defaultSettleMs(): number {
    const env = loadConfig(this.env).environment;
    return env === "development" || env === "test" ? 0 : PRODUCTION_SETTLE_MS;
  }

  async status(): Promise<CoordinatorStatus> {
    const state = await this.#state();
    return {
      pointer: state.pointer,
      lastVersion: state.lastVersion,
      versions: state.versions,
      job: await this.#job(),
      rollbackTargets: rollbackTargets(state),
      garbage: state.garbage ?? [],
    };
  }

  /**
   * The next version number of a versioned admin document (`key`: its KV key; src/admin/versioned-doc.ts). KV has no
   * compare-and-set, so two PUTs that read the same head would both take v<n+1> and one document would be lost; the
   * numbers come from here instead, one counter per document key in this object's storage. `atLeast`: the head's
   * version as the PUT read it, so a counter that is new (a deployment from before this counter) or behind continues
   * the document's numbering. Not queued behind #exclusive (a publish alarm would hold a config PUT up): the storage
   * read and write below have no other await between them, so the input gate keeps every other call out.
   */
  async nextDocVersion(key: string, atLeast: number): Promise<number> {
    const storageKey = `${DOC_VERSION_PREFIX}${key}`;
    const last = (await this.ctx.storage.get<number>(storageKey)) ?? 0;
    const next = Math.max(last, Number.isSafeInteger(atLeast) && atLeast > 0 ? atLeast : 0) + 1;
    await this.ctx.storage.put(storageKey, next);
    return next;
  }

  /**
   * Deletes the `u:<userKey>` list keys of erased users (src/privacy/erase.ts): at most ERASURE_DELETES_PER_CALL a call,
   * each call an invocation of its own, so an erasure of any number of keys stays within every invocation's KV
   * budget (one delete per key, the binding has no bulk delete). Not queued behind alarms: an erasure never waits for a
   * publish, whose steps leave erased users out on their own (docs/privacy.md).
   */
  async deleteUserLists(userKeys: string[]): Promise<number> {
    if (userKeys.length > ERASURE_DELETES_PER_CALL) {
      throw new Error(`deleteUserLists: at most ${ERASURE_DELETES_PER_CALL} keys a call`);
    }
    const kv = new KvBudget(this.wrapKv(this.env.ONLINE_STORE), ERASURE_DELETES_PER_CALL);
    await eachLimit(userKeys, KV_PUT_CONCURRENCY, (key) => kv.delete(userListKey(key)));
    return userKeys.length;
  }

  /** Starts a publish (returns at once; alarms do the work), or reports the one in progress. */
  async start(request: StartRequest): Promise<StartResult> {
    // Exclusive: a catalogue push in flight takes the next version number too, and must have saved it first.
    return this.#exclusive(() => this.#start(request));
  }

  async #start(request: StartRequest): Promise<StartResult> {
    const running = await this.#job();
    if (running) return { status: "busy", version: running.version, runId: running.runId };
    const database = this.#database();
    if (!database) return { status: "not_configured" };
    await this.#recordOwedRuns();
    const schema = validSchema(request.schema);
    const { db, end } = openDb(database, schema);
    let runId: number;
    try {
      runId = await this.#openRun(db, schema, {
        kind: "publish",
        trigger: request.trigger,
        parentId: request.parentRunId ?? null,
      });
    } finally {
      await end();
    }
    const state = await this.#state();
    const now = Date.now();
    const job: PublishJob = {
      version: state.lastVersion + 1,
      generatedAt: request.generatedAt ?? now,
      startedAt: now,
      trigger: request.trigger,
      runId,
      parentRunId: request.parentRunId ?? null,
      schema,
      phase: "users",
      cursor: "",
      settleMs: Math.max(0, request.settleMs ?? this.#defaultSettleMs()),
      opsPerAlarm: Math.min(MAX_OPS_PER_ALARM, Math.max(10, request.opsPerAlarm ?? DEFAULT_OPS_PER_ALARM)),
      settled: false,
      failures: 0,
      stats: newStats(),
    };
    await this.ctx.storage.put("job", job);
    await this.ctx.storage.setAlarm(now);
    return { status: "started", version: job.version, runId };
  }

  /** A publish step when a job is running; otherwise the garbage sweep (each alarm has one KV budget). */
  override async alarm(): Promise<void> {
    await this.#exclusive(async () => {
      await this.#recordOwedRuns();
      if (await this.#job()) await this.#runAlarm();
      else await this.#sweep();
    });
  }

  /**
   * Closes a run's batch_runs row. When Postgres refuses (the run itself is over: its pointer served, or the job given
   * up), the outcome is kept and written by the next alarm, start or push, so the row does not stay `running`. Never
   * throws: it runs after a pointer write, where nothing may fall into a job's failure path.
   */
  async #closeRun(db: Db, record: OwedRunRecord, error: unknown, failure: string): Promise<void> {
    try {
      await finishRun(db, record.runId, record.status, record.stats, error);
    } catch (refused) {
      log("error", failure, { runId: record.runId, error: describeError(refused) });
      const kept = { ...record, ...(error === undefined ? {} : { error: describeFailure(error) }) };
      try {
        const owed = (await this.ctx.storage.get<OwedRunRecord[]>(OWED_RUNS_KEY)) ?? [];
        await this.ctx.storage.put(OWED_RUNS_KEY, [...owed, kept].slice(-MAX_OWED_RUN_RECORDS));
      } catch (lost) {
        log("error", "publish: a run record could not be kept for later", {
          runId: record.runId,
          error: describeError(lost),
        });
      }
    }
  }

  /**
   * Opens the `running` row of a publish or push under the publish lease with a holder of its own, so a start retried
   * after a lost answer gets the row it inserted first. Called when no job is running (#start, pushCatalog): rows of
   * the lease still `running` then belong to no live run and are closed as `abandoned`, except those whose outcome
   * this object still owes (written by #recordOwedRuns once Postgres takes them).
   */
  async #openRun(db: Db, schema: string | undefined, run: RunStart): Promise<number> {
    const lease = { name: PUBLISH_RUN_LEASE, holder: `publish:${crypto.randomUUID()}` };
    const owed = (await this.ctx.storage.get<OwedRunRecord[]>(OWED_RUNS_KEY)) ?? [];
    await closeAbandonedRuns(
      db,
      lease,
      owed.filter((r) => r.schema === schema).map((r) => r.runId),
    );
    return withRetry(() => startRun(db, run, lease));
  }

  /** Writes the run records Postgres refused earlier (closeRun); those it refuses again wait for the next chance. */
  async #recordOwedRuns(): Promise<void> {
    const owed = (await this.ctx.storage.get<OwedRunRecord[]>(OWED_RUNS_KEY)) ?? [];
    const database = this.#database();
    if (owed.length === 0 || !database) return;
    let recorded = 0;
    for (const record of owed) {
      const { db, end } = openDb(database, record.schema);
      try {
        await finishRun(db, record.runId, record.status, record.stats, record.error);
        recorded++;
      } catch {
        break; // Postgres still refuses: the rest wait too, instead of each meeting the same failure.
      } finally {
        await end();
      }
    }
    const left = owed.slice(recorded);
    if (left.length > 0) await this.ctx.storage.put(OWED_RUNS_KEY, left);
    else await this.ctx.storage.delete(OWED_RUNS_KEY);
    if (recorded > 0) log("info", "publish: recorded the runs Postgres refused earlier", { recorded });
  }

  /**
   * After every pointer change: queue the shared keys no servable pointer names any more, and make sure an alarm
   * comes when the first of them may go.
   */
  async #queueGarbage(state: CoordinatorState): Promise<void> {
    const dueAt = collectGarbage(state, rollbackTargets(state), Date.now() + this.gcGraceMs);
    if (dueAt !== null) await this.#alarmNoLaterThan(dueAt);
  }

  /** When a job has ended (any outcome): its start replaced the sweep's alarm, so queued garbage gets one again. */
  async #rearmSweep(state: CoordinatorState): Promise<void> {
    const dueAt = earliestDue(state.garbage);
    if (dueAt !== null) await this.#alarmNoLaterThan(dueAt);
  }

  async #alarmNoLaterThan(at: number): Promise<void> {
    const current = await this.ctx.storage.getAlarm();
    if (current === null || current > at) await this.ctx.storage.setAlarm(at);
  }

  /** Deletes the due garbage keys within this invocation's KV budget (the rest in a later alarm). */
  async #sweep(): Promise<void> {
    const state = await this.#state();
    if (!state.garbage || state.garbage.length === 0) return;
    const kv = new KvBudget(this.wrapKv(this.env.ONLINE_STORE), DEFAULT_OPS_PER_ALARM);
    const { deleted, nextDueAt } = await sweepGarbage(state, rollbackTargets(state), kv, Date.now());
    await this.ctx.storage.put("state", state);
    if (deleted > 0) log("info", "publish: deleted unreferenced shared keys", { deleted, left: state.garbage.length });
    if (nextDueAt !== null) await this.#alarmNoLaterThan(nextDueAt);
  }

  async #runAlarm(): Promise<void> {
    const job = await this.#job();
    if (!job) return;
    const state = await this.#state();
    const database = this.#database();
    const kv = new KvBudget(this.wrapKv(this.env.ONLINE_STORE), job.opsPerAlarm);
    const opened = database ? openDb(database, job.schema) : undefined;
    const stepsBefore = job.stats.steps;
    const recordedBefore = job.stats.written + job.stats.tombstones;
    const account = () => {
      job.stats.invocations++;
      job.stats.opsTotal += kv.used;
      job.stats.maxOpsPerInvocation = Math.max(job.stats.maxOpsPerInvocation, kv.used);
    };
    try {
      if (!opened) throw new Error("DATABASE_URL is not set");
      const outcome = await advance({
        db: opened.db,
        kv,
        job,
        current: state.pointer,
        lastPointerWriteAt: state.lastPointerWriteAt,
        pointerOwed: state.pointerOwed === true,
        now: Date.now,
        onProgress: (j) => this.ctx.storage.put("job", j),
      });
      account();
      if (outcome.kind === "continue") {
        job.failures = 0;
        await this.ctx.storage.put("job", job);
        await this.ctx.storage.setAlarm(Date.now() + outcome.delayMs);
        return;
      }
      const finished = Date.now();
      const stats = {
        ...job.stats,
        version: outcome.pointer ? job.version : null,
        unchanged: outcome.pointer === null,
        keysWritten: job.stats.written + job.stats.tombstones + job.stats.sharedWritten + (outcome.pointer ? 1 : 0),
        durationMs: finished - job.startedAt,
        lagMs: outcome.pointer ? finished - job.generatedAt : null,
        keysPerSecond:
          finished > job.startedAt
            ? Math.round(((job.stats.written + job.stats.tombstones) * 1000) / (finished - job.startedAt))
            : 0,
      };
      // The pointer, when written, was the job's last write: it commits the job. Nothing from here on may fall into
      // the failure path below, whose retry would write the pointer again and record the version twice.
      const committed = outcome.pointer
        ? afterPublish(state, job, outcome.pointer, Date.now() + this.gcGraceMs)
        : state;
      await this.ctx.storage.put("state", committed);
      await this.ctx.storage.delete("job");
      await this.#rearmSweep(committed).catch((error) =>
        log("error", "publish: could not re-arm the garbage sweep", { error: describeError(error) }),
      );
      if (outcome.pointer) {
        // Bookkeeping only (readers take `ready` and `published` alike); the next pointer naming them marks them.
        await markModelsPublished(opened.db, Object.values(outcome.pointer.modelVersions)).catch((error) =>
          log("error", "publish: finished, but its model versions could not be marked published", {
            runId: job.runId,
            error: describeError(error),
          }),
        );
      }
      if (job.runId !== null) {
        const record = { schema: job.schema, runId: job.runId, status: "ok" as const, stats };
        await this.#closeRun(opened.db, record, undefined, "publish: finished, but its run could not be recorded yet");
      }
      log("info", "publish: finished", { runId: job.runId, ...stats });
    } catch (error) {
      account();
      // Steps completed in this alarm (each saved as it finished) are progress: the count starts again.
      // So are keys recorded by a step whose puts partly failed: its retry reads the next keys in their place, whose
      // first puts may be refused too.
      const progressed = job.stats.steps > stepsBefore || job.stats.written + job.stats.tombstones > recordedBefore;
      job.failures = progressed ? 1 : job.failures + 1;
      log("error", "publish: alarm step failed", {
        runId: job.runId,
        failures: job.failures,
        phase: job.phase,
        error: describeError(error),
      });
      if (job.failures < MAX_JOB_FAILURES) {
        await this.ctx.storage.put("job", job);
        // Exponential backoff; the alarm itself never throws (its retries would not see the job's counter).
        await this.ctx.storage.setAlarm(Date.now() + Math.min(60_000, 1000 * 2 ** job.failures));
        return;
      }
      // Given up. Keys it may have written carry its version (and a pointer it wrote names it): a job that made any
      // KV operation spends its number, so a later publish never reuses it, and a rollback counts it against the
      // keys' history whenever a stable put was attempted (stableWrites). An alarm that died saved no count of its
      // operations: the puts it attempted are known by the flags saved before them.
      const sharedAttempted = job.sharedWritesAttempted === true;
      if (job.stats.opsTotal > 0 || job.stats.pointerWritten || stableWrites(job) > 0 || sharedAttempted) {
        state.lastVersion = Math.max(state.lastVersion, job.version);
        // Recorded keys the diff will take for published, or a pointer that may name this version: the next publish
        // writes a pointer that serves them.
        if (stableWrites(job) + job.stats.sharedWritten > 0 || job.stats.pointerWritten || sharedAttempted) {
          state.pointerOwed = true;
        }
        state.versions = [
          {
            version: job.version,
            generatedAt: job.generatedAt,
            publishedAt: Date.now(),
            modelVersion: null,
            stableWrites: stableWrites(job),
            sharedWrites: job.stats.sharedWritten,
            runId: job.runId,
            kind: "failed" as const,
            pointer: null,
          },
          ...state.versions,
        ].slice(0, PUBLISHED_HISTORY);
        await this.ctx.storage.put("state", state);
      }
      await this.ctx.storage.delete("job");
      await this.#rearmSweep(state).catch(() => {});
      if (job.runId !== null && opened) {
        const record = { schema: job.schema, runId: job.runId, status: "failed" as const, stats: { ...job.stats } };
        await this.#closeRun(opened.db, record, error, "publish: given up, and its run could not be recorded yet");
      }
    } finally {
      await opened?.end();
    }
  }

  /** Points readers at an earlier (or later) published version: one pointer write. */
  async rollback(version: number): Promise<RollbackResult> {
    return this.#exclusive(async () => {
      const state = await this.#state();
      const job = await this.#job();
      if (job) {
        return {
          ok: false,
          code: "publish_in_progress",
          message: `version ${job.version} is being published; roll back when it has finished`,
        } as const;
      }
      const target = state.versions.find((v) => v.version === version && v.kind !== "failed" && v.pointer);
      if (!target?.pointer) {
        return { ok: false, code: "version_not_found", message: `no published version ${version}` } as const;
      }
      if (!rollbackTargets(state).includes(version)) {
        return {
          ok: false,
          code: "version_not_rollbackable",
          message:
            `version ${version} is too old: per-user and per-item keys keep ${HISTORY_DEPTH} versions; ` +
            `possible targets: ${rollbackTargets(state).join(", ")}`,
        } as const;
      }
      const previous = state.pointer?.version ?? null;
      const wait = state.lastPointerWriteAt + KV_MIN_WRITE_INTERVAL_MS - Date.now();
      if (wait > 0) await sleep(wait);
      const pointer: Pointer = { ...target.pointer, publishedAt: Date.now() };
      const kv = new KvBudget(this.wrapKv(this.env.ONLINE_STORE), KV_OPS_PER_INVOCATION);
      await kv.put(POINTER_KEY, encodePointer(pointer));
      state.pointer = pointer;
      state.lastPointerWriteAt = pointer.publishedAt;
      // A rollback holds until something changes: a pointer owed by a publish given up before is not written.
      delete state.pointerOwed;
      await this.#queueGarbage(state);
      await this.ctx.storage.put("state", state);
      log("warn", "publish: rolled back", { from: previous, to: version });
      return { ok: true, pointer, previous } as const;
    });
  }

  /**
   * Ships the catalogue now (stock, visibility, price) as a new version that changes nothing else. During a publish
   * the publish itself ships it (its shared step reads the catalogue last). Queued behind the alarm in progress, whose
   * shared step may have read the catalogue already: a publish still running once that alarm has ended reads it in a
   * later alarm.
   */
  async pushCatalog(request: { schema?: string; trigger?: "cron" | "admin" } = {}): Promise<PushResult> {
    const database = this.#database();
    if (!database) return { status: "not_configured" };
    return this.#exclusive(async () => {
      const job = await this.#job();
      if (job) return { status: "queued", version: job.version } as const;
      await this.#recordOwedRuns();
      const state = await this.#state();
      const schema = validSchema(request.schema);
      const { db, end } = openDb(database, schema);
      try {
        const runId = await this.#openRun(db, schema, { kind: "publish", trigger: request.trigger ?? "admin" });
        // A push that fails after this point is recorded as failed, not left `running`.
        return await this.#push(db, schema, runId, state).catch(async (error: unknown) => {
          const record = { schema, runId, status: "failed" as const, stats: { catalogPush: true } };
          await this.#closeRun(db, record, error, "catalogue push: failed, and its run could not be recorded yet");
          throw error;
        });
      } finally {
        await end();
      }
    });
  }

  /** The catalogue push of `runId`: shipped as a new version, or `unchanged` when the served pointer has that build. */
  async #push(db: Db, schema: string | undefined, runId: number, state: CoordinatorState): Promise<PushResult> {
    const watermark = await catalogWatermark(db);
    const built = await buildCatalog(await catalogRows(db));
    const previous = (await publishedHashes(db, [CATALOG_RECORD])).get(CATALOG_RECORD);
    // Unchanged only if the served pointer names that build (after a rollback it may name an older one).
    if (state.pointer?.catalog && previous?.hash === built.hash && previous.version === state.pointer.catalog.version) {
      await saveCatalogWatermark(db, watermark);
      await finishRun(db, runId, "ok", { catalogPush: true, unchanged: true, keysWritten: 0 });
      return { status: "unchanged", version: state.pointer.version, runId } as const;
    }
    const version = state.lastVersion + 1;
    // Spent before any key carries it: if the push fails after writing its shards, no later version reuses it.
    state.lastVersion = version;
    await this.ctx.storage.put("state", state);
    const now = Date.now();
    const kv = new KvBudget(this.wrapKv(this.env.ONLINE_STORE), KV_OPS_PER_INVOCATION);
    const pairs = catalogPairs(built, version, now);
    await kv.putAll(pairs);
    const wait = state.lastPointerWriteAt + KV_MIN_WRITE_INTERVAL_MS - Date.now();
    if (wait > 0) await sleep(wait);
    const base = state.pointer;
    const pointer: Pointer = {
      f: CODEC_FORMAT,
      version,
      generatedAt: base?.generatedAt ?? now,
      publishedAt: Date.now(),
      modelVersion: base?.modelVersion ?? null,
      modelVersions: base?.modelVersions ?? {},
      catalog: { version, shards: built.shards, items: built.manifestItems },
      popular: base?.popular ?? { popular: null, trending: null },
      catalogOrder: base?.catalogOrder ?? null,
      // Per-user and per-item keys stay as the served pointer reads them (after a rollback: the target's).
      lists: base ? listsVersion(base) : 0,
    };
    await kv.put(POINTER_KEY, encodePointer(pointer));
    // The pointer commits the push: the coordinator's state names it before anything else may fail, and nothing
    // after it throws (the caller would take a push that KV serves for failed).
    state.pointer = pointer;
    state.lastPointerWriteAt = pointer.publishedAt;
    state.versions = [
      {
        version,
        generatedAt: pointer.generatedAt,
        publishedAt: pointer.publishedAt,
        modelVersion: pointer.modelVersion,
        stableWrites: 0,
        sharedWrites: pairs.length,
        runId,
        kind: "catalog_push" as const,
        pointer,
      },
      ...state.versions,
    ].slice(0, PUBLISHED_HISTORY);
    await this.#queueGarbage(state);
    await this.ctx.storage.put("state", state);
    const keysWritten = pairs.length + 1;
    const bookkeeping = (what: string, call: () => Promise<unknown>) =>
      call().catch((error: unknown) =>
        log("error", `catalogue push: served, but ${what}`, { runId, version, error: describeError(error) }),
      );
    // Recorded once a pointer names the build: recorded before, a refused pointer write would leave the build
    // recorded as shipped, and every publish after it would find the catalogue unchanged. Unrecorded, it is shipped
    // again by the next publish or push; without the watermark, the next publish rebuilds the catalogue.
    await bookkeeping("its build could not be recorded", () =>
      recordPublished(db, [{ key: CATALOG_RECORD, hash: built.hash }], version),
    );
    await bookkeeping("its catalogue watermark could not be saved", () => saveCatalogWatermark(db, watermark));
    const stats = { catalogPush: true, version, keysWritten, items: built.manifestItems };
    await this.#closeRun(
      db,
      { schema, runId, status: "ok", stats },
      undefined,
      "catalogue push: served, but its run could not be recorded yet",
    );
    return { status: "published", version, pointer, runId, keysWritten } as const;
  }
}
