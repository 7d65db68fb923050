// The loader: drains the Redis event stream into Postgres (events, interactions, identities), in bounded batches,
// from the cron (src/batch/cron.ts) and later from the admin refresh. docs/data-model.md#the-loader.
//
// Guarantees, and what gives them:
//   no loss        an entry is acknowledged (XACK) only after the transaction holding its rows COMMITTED; until
//                  then it stays in its consumer's pending list, which every run reads first (ID 0); entries pending
//                  for a consumer that is not one of the run's slots are claimed into a slot and loaded too.
//   no duplicate   a message is one `events` row (primary key message_id) and its interactions are keyed
//                  (message_id, position); every insert is ON CONFLICT DO NOTHING, so re-loading a batch whose
//                  XACK was lost (a crash between COMMIT and XACK) adds nothing.
//   no overlap     a run holds the `loader` lease (src/batch/lease.ts); each batch re-checks and extends it inside
//                  its own transaction, and so does each move to the quarantine stream, so a run that lost its
//                  lease can neither commit nor quarantine.
//   bounded        at most `maxBatches` batches of `batchSize` entries and no new batch after `budgetMs`; a
//                  backlog is worked off over several runs. No statement of a batch's transaction runs longer than
//                  `statementTimeoutMs` (a quarter of the lease's lifetime), lock waits included. Up to `writers` batch transactions are in flight while
//                  one more batch is read ahead, each batch under its own consumer (Upstash caps a consumer's
//                  pending list at 1,000 entries).
//   transient      connection drops, a restarting or waking Neon compute, "too many connections": the batch's
//                  transaction is re-run with jittered exponential backoff (src/batch/retry.ts); other errors
//                  stop the run, which is recorded as failed.
import { sql } from "drizzle-orm";
import type { CollectedEvent } from "../collect/event.ts";
import { EVENT_TYPES } from "../collect/event.ts";
import { describeError, log } from "../log.ts";
import { erasedAmong, holdErasureLockShared } from "../privacy/warehouse.ts";
import { EVENT_STREAM, STREAM_FIELDS } from "../session/stream.ts";
import { type Database, transaction } from "../stores/db.ts";
import { callsWithDeadline, type Redis, redisDeadline } from "../stores/redis.ts";
import type { BatchRunTrigger } from "../stores/schema.ts";
import { cleanString, type Executor, needsCleaning, type WarehouseBatch, writeBatch } from "./bulk.ts";
import {
  ack,
  addToQuarantine,
  backlog,
  claimPending,
  deleteEntries,
  ensureGroup,
  pendingConsumers,
  QUARANTINE_SUFFIX,
  type QuarantineWrite,
  readGroup,
  type StreamEntry,
  streamIdTime,
} from "./consumer.ts";
import { acquireLease, extendLease, LeaseLostError, releaseLease } from "./lease.ts";
import { DEFAULT_RETRY, describeFailure, postgresError, type RetryPolicy, withRetry } from "./retry.ts";
import { closeAbandonedRuns, finishRun, recordSkippedRun, startRun } from "./runs.ts";
import {
  type EventRow,
  type IdentityLink,
  type InteractionRow,
  mergeIdentities,
  type WarehouseRows,
  warehouseRows,
} from "./warehouse.ts";

/**
 * How long a Redis call of the loader waits for its answer: far longer than a call takes (milliseconds; a read of a
 * 1,000-entry batch well under a second), short enough that a connection accepted and never served costs a retry,
 * not the whole invocation. Every call is safe to repeat and harmless when it lands late: a `>` read landing late
 * leaves its entries pending in its slot for the next run's recovery.
 */
export const DEFAULT_REDIS_TIMEOUT_MS = 10_000;

/**
 * The least default statement bound (statementTimeoutMs) whatever the lease: a short lease (tests use 1–2 s) must
 * not cancel ordinary batch statements on a busy machine. Fencing, not this bound, keeps a late batch from
 * committing.
 */
export const MIN_STATEMENT_TIMEOUT_MS = 1_000;

/** The consumer group of the warehouse loader on the event stream. */
export const LOADER_GROUP = "lastmile-warehouse";
/**
 * Consumer names are `loader-<slot>`. Each slot holds at most one unacknowledged batch: Upstash refuses an
 * XREADGROUP once a consumer's pending entries list would pass 1,000 entries ("ERR XReadGroup is cancelled"),
 * so batches in flight at once each need their own consumer. Runs never overlap (lease), so what a slot has
 * pending at the start of a run is exactly what a crashed run left there.
 */
export const LOADER_CONSUMER = "loader";
export const LOADER_LEASE = "loader";

/**
 * Batch transactions in flight at once (each on its own pooled connection; src/stores/db.ts allows 4): while one
 * batch's rows are parsed by Postgres the next is sent, and one more batch is read ahead. Two gave ~1.3× one on
 * this 2-core machine.
 */
export const DEFAULT_WRITERS = 2;
export const MAX_WRITERS = 3;
/**
 * Consumer slots every run checks for pending entries: enough for MAX_WRITERS batches being written plus one read
 * ahead, whatever `writers` a previous run used.
 */
export const CONSUMER_SLOTS = MAX_WRITERS + 1;
/**
 * Entries per transaction. 500 events (~0.5 MB of JSON) keep a transaction short and a Worker's memory small while
 * amortising the round trips (one XREADGROUP, one transaction, one XACK per batch); 500 and 1,000 loaded at the
 * same rate here (docs/data-model.md). `npm run bench` tunes it; LOADER_BATCH_SIZE overrides it.
 */
export const DEFAULT_BATCH_SIZE = 500;
/** Upstash's pending-entries limit per consumer (see LOADER_CONSUMER): one batch may not exceed it. */
export const MAX_BATCH_SIZE = 1_000;
/**
 * Wall time after which a run starts no new batch. The cron has 15 minutes, but a short run keeps the Worker
 * invocation cheap and leaves room for compute and publish; a backlog catches up over several runs.
 */
export const DEFAULT_BUDGET_MS = 20_000;
/**
 * Batches per run at most, so the time budget is what normally ends a run: bounds its subrequests (~3 Redis calls
 * per batch, 9,000 at most, under the 10,000 a Worker invocation may make) whatever the clock says. LOADER_MAX_BATCHES
 * lowers it.
 */
export const DEFAULT_MAX_BATCHES = 3_000;
/**
 * Lease lifetime beyond "now", renewed by every batch: longer than one batch can take including its retries
 * (seconds), so a live run never loses it; short enough that a crashed run blocks the next cron run only once.
 */
export const DEFAULT_LEASE_TTL_MS = 120_000;

export interface BatchInfo {
  /** 1-based batch number in this run. */
  batch: number;
  /** Attempt of this batch's transaction (1 = first). */
  attempt: number;
  /** The consumer (slot) the batch was read with. */
  consumer: string;
  entryIds: readonly string[];
  messageIds: readonly string[];
}

/** Fault-injection points for tests; production passes none. */
export interface LoaderHooks {
  /** Inside the batch's transaction after its inserts, before COMMIT: a throw rolls the batch back. */
  beforeCommit?(batch: BatchInfo): void | Promise<void>;
  /** After COMMIT, before XACK: a throw is a crash between the two. */
  afterCommit?(batch: BatchInfo): void | Promise<void>;
}

export interface LoaderOptions {
  trigger?: BatchRunTrigger;
  /** The refresh run this load belongs to. */
  parentRunId?: number | null;
  stream?: string;
  group?: string;
  /** Prefix of the consumer names (`<consumer>-<slot>`). */
  consumer?: string;
  leaseName?: string;
  leaseTtlMs?: number;
  /**
   * How long one statement of a batch's (or a quarantine move's) transaction may take, lock waits included, before
   * Postgres cancels it (`statement_timeout`, SQLSTATE 57014: the run fails, its entries stay pending). Default: a
   * quarter of the lease's lifetime (30 s), at least MIN_STATEMENT_TIMEOUT_MS.
   */
  statementTimeoutMs?: number;
  batchSize?: number;
  /** Batch transactions in flight at once (1 = strictly one after the other). */
  writers?: number;
  maxBatches?: number;
  budgetMs?: number;
  /** XDEL entries once acknowledged (keeps Redis memory to the backlog); off where others read the stream. */
  deleteAcked?: boolean;
  /**
   * How long any other Redis call waits for its answer (DEFAULT_REDIS_TIMEOUT_MS); then it fails as a transient
   * error and is retried.
   */
  redisTimeoutMs?: number;
  /** How long a move to the quarantine stream waits for Redis (QUARANTINE_TIMEOUT_MS). */
  quarantineTimeoutMs?: number;
  retry?: RetryPolicy;
  hooks?: LoaderHooks;
  now?: () => number;
  sleep?: (ms: number) => Promise<void>;
}

export type StopReason = "drained" | "budget" | "max_batches" | "lease_held" | "lease_lost" | "error";

export interface LoadReport {
  /** The batch_runs row (null if even that could not be written). */
  runId: number | null;
  status: "ok" | "skipped" | "failed";
  stoppedBy: StopReason;
  batches: number;
  /** Stream entries read (pending and new). */
  entries: number;
  /** Rows newly inserted. */
  events: number;
  interactions: number;
  identities: number;
  /** Entries whose message was already loaded (re-delivery after a lost XACK, or twice in the stream). */
  duplicates: number;
  /**
   * Entries that are not a CollectedEvent, or whose rows cannot be derived (acknowledged and logged: they cannot be
   * loaded, now or later).
   */
  malformed: number;
  /**
   * Events received before the erasure of one of their keys (their user's, or a device or user id they carry):
   * acknowledged, not loaded (docs/privacy.md).
   */
  erased: number;
  /** Pending entries already deleted from the stream (nothing left to load). */
  missing: number;
  /** Entries Postgres refused on their own, moved to the quarantine stream (`<stream>:quarantine`) and acknowledged. */
  quarantined: number;
  acked: number;
  deleted: number;
  /** Transient failures retried. */
  retries: number;
  durationMs: number;
  /**
   * Where the time went (ms, summed over batches; batches overlap, so the sum can exceed durationMs): the loop
   * waiting for a free consumer slot and a stream read, turning entries into rows, the batch transactions,
   * acknowledgements.
   */
  timings: { readWaitMs: number; parseMs: number; writeMs: number; ackMs: number };
  eventsPerSecond: number;
  /** After the run: pending + undelivered entries (null when unknown). */
  backlog: number | null;
  /**
   * After the run: now − append time of the oldest entry not yet loaded, both on Redis's clock (TIME, and the stream
   * id); 0 when none is left.
   */
  lagMs: number | null;
  error?: string;
}

interface ParsedBatch {
  events: EventRow[];
  interactions: InteractionRow[];
  identities: IdentityLink[];
  malformed: number;
  missing: number;
  /** Events received before the erasure of one of their keys (erasureKeys): acknowledged, not loaded. */
  erased: number;
}

/**
 * SQLSTATE classes of errors about the data itself (cardinality, data exception, integrity constraint, program
 * limit such as an index row too large): the same rows fail again in every run, whatever the connection.
 */
const DATA_ERROR_CLASSES = new Set(["21", "22", "23", "54"]);

/**
 * Entries one run quarantines at most. A few refused entries are poison; more point at something systematic (a
 * column changed under the loader): the run then fails, as for any other error, and the rest stays pending.
 */
export const MAX_QUARANTINED_PER_RUN = 10;

/**
 * How long a move to the quarantine stream waits for Redis's answer while it holds the shared erasure lock (an
 * erasure waits that long at most; a Redis call normally takes milliseconds). Then the move is retried.
 */
export const QUARANTINE_TIMEOUT_MS = 5_000;

function refusesData(error: unknown): boolean {
  if (error instanceof LeaseLostError) return false;
  const refused = postgresError(error);
  return refused !== null && DATA_ERROR_CLASSES.has(refused.code.slice(0, 2));
}

const EVENT_TYPE_SET: ReadonlySet<string> = new Set(EVENT_TYPES);

function isCollectedEvent(value: unknown): value is CollectedEvent {
  if (value === null || typeof value !== "object") return false;
  const e = value as Record<string, unknown>;
  return (
    typeof e.messageId === "string" &&
    e.messageId !== "" &&
    typeof e.type === "string" &&
    EVENT_TYPE_SET.has(e.type) &&
    typeof e.sourceId === "string" &&
    typeof e.timestamp === "string" &&
    typeof e.receivedAt === "string" &&
    (typeof e.userId === "string" || typeof e.anonymousId === "string")
  );
}

/**
 * Stream entries → rows (deduplicated by messageId within the batch; the first occurrence wins). `erased` (user key
 * → erasure time, epoch ms) leaves out the events received before the erasure of one of their keys (erasureKeys;
 * docs/privacy.md), their identity links with them.
 */
export function parseEntries(
  entries: readonly StreamEntry[],
  erased: ReadonlyMap<string, number> = new Map(),
): ParsedBatch {
  const out: ParsedBatch = { events: [], interactions: [], identities: [], malformed: 0, missing: 0, erased: 0 };
  const seen = new Set<string>();
  for (const entry of entries) {
    if (!entry.fields) {
      out.missing++;
      continue;
    }
    const rows = rowsOf(entry.id, entry.fields);
    if (!rows) {
      out.malformed++;
      continue;
    }
    if (seen.has(rows.event.messageId)) continue;
    seen.add(rows.event.messageId);
    if (erasedBeforeReceipt(rows.event, erased)) {
      out.erased++;
      continue;
    }
    out.events.push(rows.event);
    out.interactions.push(...rows.interactions);
    out.identities.push(...rows.identities);
  }
  return out;
}

/**
 * The keys an erasure finds an event by: the session key it was recorded under, `u:<userId>` and `a:<anonymousId>`
 * (the erasure deletes events by all three), and `a:<previousId>` (an alias's link, which it deletes by anonymous
 * id). Another user's event on an erased device carries that device's key.
 */
export function erasureKeys(event: EventRow): string[] {
  const keys = [event.userKey];
  if (event.userId) keys.push(`u:${event.userId}`);
  if (event.anonymousId) keys.push(`a:${event.anonymousId}`);
  if (event.previousId) keys.push(`a:${event.previousId}`);
  return keys;
}

/** Whether one of the event's keys was erased when or after the event was received (`erased`: key → epoch ms). */
function erasedBeforeReceipt(event: EventRow, erased: ReadonlyMap<string, number>): boolean {
  if (erased.size === 0) return false;
  const received = Date.parse(event.receivedAt);
  return erasureKeys(event).some((key) => received <= (erased.get(key) ?? Number.NEGATIVE_INFINITY));
}

/**
 * The keys an erasure finds a stream entry (of the event stream or its quarantine) by: those of its event
 * (erasureKeys), derived as the loader derives its rows; the `user` field alone for an entry that has no rows.
 */
export function entryErasureKeys(fields: Record<string, string>): string[] {
  const rows = deriveRows(null, fields);
  return typeof rows === "string" ? [fields[STREAM_FIELDS.userKey] ?? ""] : erasureKeys(rows.event);
}

/**
 * The rows of one stream entry; null (logged) when it has none: not JSON, not a CollectedEvent, or rows that cannot
 * be derived from it (no user key at all, say). Such an entry can never load; it must not fail its batch either.
 */
function rowsOf(streamId: string, fields: Record<string, string>): WarehouseRows | null {
  const rows = deriveRows(streamId, fields);
  if (typeof rows !== "string") return rows;
  log("error", "load: a stream entry cannot be loaded; acknowledged without loading", {
    streamId,
    problem: rows,
    sample: String(fields[STREAM_FIELDS.event] ?? "").slice(0, 300),
  });
  return null;
}

/** The rows of one stream entry, or why it has none. */
function deriveRows(streamId: string | null, fields: Record<string, string>): WarehouseRows | string {
  try {
    const event: unknown = JSON.parse(String(fields[STREAM_FIELDS.event] ?? ""));
    if (!isCollectedEvent(event)) return "not a CollectedEvent";
    const user = fields[STREAM_FIELDS.userKey] || undefined;
    return warehouseRows(withPostgresIds(event), user === undefined ? undefined : cleanString(user), streamId);
  } catch (error) {
    return describeError(error);
  }
}

/**
 * The event with its ids as Postgres stores them (no NUL, no lone surrogate; collection refuses both, but an entry
 * streamed before it did must not fail its batch): user keys, identity links, the erasure probe and the dedupe of
 * this batch then all see the values the rows get. Only strings are cleaned: an id another writer left out (or
 * wrote as a number) stays as it is.
 */
function withPostgresIds(event: CollectedEvent): CollectedEvent {
  const { messageId, userId, anonymousId, previousId, groupId } = event;
  // The common case, every id clean: one scan each and no copy (the loader parses every event of the stream).
  if (
    ![messageId, userId, anonymousId, previousId, groupId].some((id) => typeof id === "string" && needsCleaning(id))
  ) {
    return event;
  }
  const clean = (id: string | null) => (typeof id === "string" ? cleanString(id) : id);
  return {
    ...event,
    messageId: cleanString(event.messageId),
    userId: clean(event.userId),
    anonymousId: clean(event.anonymousId),
    previousId: clean(event.previousId),
    groupId: clean(event.groupId),
  };
}

/**
 * Taken first in a transaction that writes events (their rows, or a quarantine entry): the shared erasure lock, so an
 * erasure in flight waits for the transaction or the transaction sees the erasure (src/privacy/warehouse.ts); then
 * which of the events' keys (erasureKeys) were erased, and when.
 */
async function erasuresOf(tx: Executor, events: readonly EventRow[]): Promise<Map<string, number>> {
  await holdErasureLockShared(tx);
  return erasedAmong(tx, [...new Set(events.flatMap(erasureKeys))]);
}

/** The batch again without the events of `erased` users (rare: only when an erased key is in the batch). */
function withoutErased(
  entries: readonly StreamEntry[],
  erased: ReadonlyMap<string, number>,
): WarehouseBatch & {
  erased: number;
} {
  const parsed = parseEntries(entries, erased);
  return { ...parsed, identities: mergeIdentities(parsed.identities) };
}

function clamp(value: number | undefined, fallback: number, min: number, max: number): number {
  if (value === undefined || !Number.isFinite(value)) return fallback;
  return Math.min(max, Math.max(min, Math.floor(value)));
}

/** One loader run. Never throws for a failed load: the report (and its batch_runs row) says what happened. */
export async function runLoader(
  deps: { db: Database; redis: Redis },
  options: LoaderOptions = {},
): Promise<LoadReport> {
  const { db } = deps;
  const redis = callsWithDeadline(
    deps.redis,
    clamp(options.redisTimeoutMs, DEFAULT_REDIS_TIMEOUT_MS, 1, 2_147_483_647),
  );
  const now = options.now ?? Date.now;
  const stream = options.stream ?? EVENT_STREAM;
  const group = options.group ?? LOADER_GROUP;
  const consumer = options.consumer ?? LOADER_CONSUMER;
  const leaseName = options.leaseName ?? LOADER_LEASE;
  const leaseTtlMs = options.leaseTtlMs ?? DEFAULT_LEASE_TTL_MS;
  const statementTimeoutMs = clamp(
    options.statementTimeoutMs,
    Math.max(MIN_STATEMENT_TIMEOUT_MS, Math.floor(leaseTtlMs / 4)),
    1,
    2_147_483_647,
  );
  const batchSize = clamp(options.batchSize, DEFAULT_BATCH_SIZE, 1, MAX_BATCH_SIZE);
  const writers = clamp(options.writers, DEFAULT_WRITERS, 1, MAX_WRITERS);
  const maxBatches = clamp(options.maxBatches, DEFAULT_MAX_BATCHES, 1, Number.MAX_SAFE_INTEGER);
  const budgetMs = clamp(options.budgetMs, DEFAULT_BUDGET_MS, 0, Number.MAX_SAFE_INTEGER);
  const trigger = options.trigger ?? "cron";
  const run = { kind: "load" as const, trigger, parentId: options.parentRunId ?? null };
  const hooks = options.hooks ?? {};

  const started = now();
  const deadline = started + budgetMs;
  const report: LoadReport = {
    runId: null,
    status: "ok",
    stoppedBy: "drained",
    batches: 0,
    entries: 0,
    events: 0,
    interactions: 0,
    identities: 0,
    duplicates: 0,
    malformed: 0,
    quarantined: 0,
    erased: 0,
    missing: 0,
    acked: 0,
    deleted: 0,
    retries: 0,
    durationMs: 0,
    timings: { readWaitMs: 0, parseMs: 0, writeMs: 0, ackMs: 0 },
    eventsPerSecond: 0,
    backlog: null,
    lagMs: null,
  };
  const retryOptions = (what: string) => ({
    policy: options.retry ?? DEFAULT_RETRY,
    // A batch begun before the deadline may finish with its retries; none starts long after it.
    deadline: deadline + leaseTtlMs / 2,
    now,
    ...(options.sleep ? { sleep: options.sleep } : {}),
    onRetry: (error: unknown, retry: number, delayMs: number) => {
      report.retries++;
      log("warn", `load: ${what} failed transiently; retrying`, { retry, delayMs, error: describeFailure(error) });
    },
  });
  const stats = () => {
    const { runId: _runId, status: _status, error: _error, ...rest } = report;
    return { ...rest, batchSize, writers, budgetMs, maxBatches, stream, group };
  };

  const holder = crypto.randomUUID();
  let acquired: boolean;
  try {
    acquired = await withRetry(() => acquireLease(db, leaseName, holder, leaseTtlMs), retryOptions("lease"));
    if (!acquired) {
      report.status = "skipped";
      report.stoppedBy = "lease_held";
      report.runId = await recordSkippedRun(db, run, { reason: "lease_held", lease: leaseName });
      log("info", "load: another run holds the lease; skipped", { lease: leaseName });
      return report;
    }
  } catch (error) {
    report.status = "failed";
    report.stoppedBy = "error";
    report.error = describeFailure(error);
    log("error", "load: could not take the lease", { error: report.error });
    return report;
  }

  try {
    const lease = { name: leaseName, holder };
    await closeAbandonedRuns(db, lease);
    report.runId = await withRetry(() => startRun(db, run, lease), retryOptions("run start"));
    await withRetry(() => ensureGroup(redis, stream, group), retryOptions("XGROUP CREATE"));

    const consumerOf = (slot: number) => `${consumer}-${slot}`;
    // A `>` read whose reply was lost still delivered its entries (they are pending for that slot's consumer
    // now): the next read of the slot takes them from its pending list first.
    const lostReply = new Set<number>();
    const readNew = (slot: number) =>
      withRetry(async () => {
        if (lostReply.has(slot)) {
          const pending = await readGroup(redis, stream, group, consumerOf(slot), "0", batchSize);
          lostReply.delete(slot);
          if (pending.length > 0) return pending;
        }
        try {
          return await readGroup(redis, stream, group, consumerOf(slot), ">", batchSize);
        } catch (error) {
          lostReply.add(slot);
          throw error;
        }
      }, retryOptions("XREADGROUP"));

    /**
     * Fencing: only the lease holder writes, re-checked in the writing transaction itself. The UPDATE locks the lease
     * row until that transaction ends, so no other run can take the lease over while it writes.
     */
    /**
     * First in every writing transaction: no statement of it (the erasure lock, the write, the lease) waits without
     * bound, so a lock held by a stuck session or a statement gone slow cannot hold the run past its budget and lease.
     */
    const boundStatements = (tx: Executor) =>
      tx.execute(sql.raw(`set local statement_timeout = ${statementTimeoutMs}`));

    const holdLease = async (tx: Executor) => {
      if (!(await extendLease(tx, leaseName, holder, leaseTtlMs))) {
        throw new LeaseLostError(`the ${leaseName} lease was taken over; rolled back`);
      }
    };

    /** Quarantine slots taken in this run (at most MAX_QUARANTINED_PER_RUN), each before its entry is moved. */
    let quarantineSlots = 0;
    const loadBatch = async (slot: number, entries: StreamEntry[], batch: number): Promise<void> => {
      let t = now();
      const parsed = parseEntries(entries);
      const identities = mergeIdentities(parsed.identities);
      report.timings.parseMs += now() - t;
      const info = (attempt: number): BatchInfo => ({
        batch,
        attempt,
        consumer: consumerOf(slot),
        entryIds: entries.map((e) => e.id),
        messageIds: parsed.events.map((e) => e.messageId),
      });
      t = now();
      let committed = 0;
      let erasedInBatch = 0;
      let refused: unknown = null;
      const written = await withRetry(
        (attempt) =>
          transaction(db, async (tx) => {
            await boundStatements(tx);
            const erased = await erasuresOf(tx, parsed.events);
            const kept = erased.size === 0 ? { ...parsed, identities } : withoutErased(entries, erased);
            erasedInBatch = kept.erased;
            const w = await writeBatch(tx, kept);
            // Last (so concurrent batches of this run hold the lease row's lock only between this update and their
            // COMMIT).
            await holdLease(tx);
            await hooks.beforeCommit?.(info(attempt));
            committed = attempt;
            return w;
          }),
        retryOptions(`batch ${batch}`),
      ).catch((error: unknown) => {
        if (!refusesData(error) || quarantineSlots >= MAX_QUARANTINED_PER_RUN) throw error;
        // The refused entry alone takes its quarantine slot now, in the same synchronous step as the check: batches
        // in flight at once cannot all pass the check before one of them is counted.
        if (entries.length === 1) quarantineSlots++;
        refused = error;
        return null;
      });
      report.timings.writeMs += now() - t;
      if (written === null) {
        // Postgres refused something in the batch itself: halves until the entry it refuses is alone.
        if (entries.length > 1) {
          const half = Math.ceil(entries.length / 2);
          await loadBatch(slot, entries.slice(0, half), batch);
          await loadBatch(slot, entries.slice(half), batch);
        } else await quarantine(entries[0] as StreamEntry, parsed.events, refused);
        return;
      }
      report.batches++;
      report.entries += entries.length;
      report.events += written.events;
      report.interactions += written.interactions;
      report.identities += written.identities;
      report.malformed += parsed.malformed;
      report.erased += erasedInBatch;
      report.missing += parsed.missing;
      report.duplicates += entries.length - parsed.malformed - parsed.missing - erasedInBatch - written.events;

      await hooks.afterCommit?.(info(committed));
      await acknowledge(entries);
    };

    const quarantineStream = `${stream}${QUARANTINE_SUFFIX}`;
    const quarantineTimeoutMs = options.quarantineTimeoutMs ?? QUARANTINE_TIMEOUT_MS;
    /**
     * An entry Postgres refuses would fail its batch in every run, and no event behind it would load: it moves to
     * the quarantine stream, with the error, where an operator finds it (docs/data-model.md), and is acknowledged.
     * The write is made inside a transaction, as a batch's rows are: under the shared erasure lock, unless one of the
     * event's keys was erased after it was received (the entry is then dropped, as a batch drops it), and holding the
     * lease (a run that lost it leaves the entry to the run that took over, which recovers it from the pending list).
     * Redis gets `quarantineTimeoutMs` to answer (the lock holds erasures up meanwhile); then the transaction rolls
     * back and is retried, as after any transient failure. The write adds the entry once, whichever attempt lands
     * (or lands late), and nothing once an erasure fenced one of its keys (addToQuarantine).
     */
    const quarantine = async (entry: StreamEntry, events: readonly EventRow[], error: unknown) => {
      const reason = describeFailure(error);
      const event = {
        userKeys: [...new Set(events.flatMap(erasureKeys))],
        receivedAt: Math.min(...events.map((e) => Date.parse(e.receivedAt))),
      };
      const moved = await withRetry(
        () =>
          transaction(db, async (tx): Promise<QuarantineWrite> => {
            await boundStatements(tx);
            const erased = await erasuresOf(tx, events);
            if (events.some((e) => erasedBeforeReceipt(e, erased))) return "erased";
            await holdLease(tx);
            return await redisDeadline(
              quarantineTimeoutMs,
              addToQuarantine(redis, quarantineStream, entry, reason, event),
            );
          }),
        retryOptions("quarantine"),
      );
      report.entries++;
      if (moved !== "erased") {
        report.quarantined++;
        log("error", "load: Postgres refuses a stream entry; moved to the quarantine stream", {
          streamId: entry.id,
          error: reason,
        });
      } else report.erased++;
      await acknowledge([entry]);
    };

    const acknowledge = async (entries: StreamEntry[]) => {
      const t = now();
      const ids = entries.map((e) => e.id);
      // XDEL first: a run cut off between the two leaves pending entries without fields, which the next run
      // acknowledges as missing. The other order would leave acknowledged entries no run reads again, for good.
      if (options.deleteAcked) {
        report.deleted += await withRetry(() => deleteEntries(redis, stream, ids), retryOptions("XDEL"));
      }
      report.acked += await withRetry(() => ack(redis, stream, group, ids), retryOptions("XACK"));
      report.timings.ackMs += now() - t;
    };

    let dispatched = 0;
    const withinLimits = () => {
      if (dispatched >= maxBatches) report.stoppedBy = "max_batches";
      else if (now() >= deadline) report.stoppedBy = "budget";
      else return true;
      return false;
    };

    /** Loads a slot's pending entries page by page (after the last id seen); false when the run's limits stop it. */
    const recoverSlot = async (slot: number): Promise<boolean> => {
      let cursor = "0";
      for (;;) {
        if (!withinLimits()) return false;
        const t = now();
        const entries = await withRetry(
          () => readGroup(redis, stream, group, consumerOf(slot), cursor, batchSize),
          retryOptions("XREADGROUP pending"),
        );
        report.timings.readWaitMs += now() - t;
        if (entries.length === 0) return true;
        cursor = entries[entries.length - 1]?.id ?? cursor;
        await loadBatch(slot, entries, ++dispatched);
      }
    };

    // 1. Recovery: every slot's pending entries — what a previous run read but did not acknowledge — one batch at a
    //    time. Then the entries pending for any other consumer of the group (a slot of a version with more writers,
    //    a reader by hand): no live run reads with those (runs never overlap), and neither `>` nor a slot's own
    //    pending read would ever deliver them again. They are claimed into slot 0 a batch at a time (so no consumer
    //    holds more than a batch: Upstash's pending limit) and loaded from there. This is the rare path.
    let within = true;
    for (let slot = 0; within && slot < CONSUMER_SLOTS; slot++) within = await recoverSlot(slot);
    if (within) {
      const slots = new Set(Array.from({ length: CONSUMER_SLOTS }, (_, slot) => consumerOf(slot)));
      const others = await withRetry(() => pendingConsumers(redis, stream, group), retryOptions("XPENDING"));
      for (const { consumer: other } of others.filter((c) => !slots.has(c.consumer))) {
        while (within) {
          const claimed = await withRetry(
            () => claimPending(redis, stream, group, other, consumerOf(0), batchSize),
            retryOptions("XCLAIM"),
          );
          if (claimed === 0) break;
          within = await recoverSlot(0);
        }
        if (!within) break;
      }
    }

    // 2. New entries, pipelined: up to `writers` batch transactions in flight (each on its own pooled connection)
    //    while one more batch is read ahead, each batch under its own consumer slot. A batch is acknowledged after
    //    its own COMMIT, so commit order does not matter; the first failure stops the run once the batches in
    //    flight have settled. A batch read ahead is delivered already, so it is written whatever the clock says
    //    (it would otherwise wait, pending, for the next run).
    if (report.stoppedBy === "drained") {
      const free = Array.from({ length: writers + 1 }, (_, slot) => slot);
      const inFlight = new Set<Promise<void>>();
      let failure: { error: unknown } | undefined;
      try {
        while (!failure && withinLimits()) {
          const t = now();
          // A free slot to read into (slots are held from a batch's read to its XACK) …
          while (free.length === 0 && inFlight.size > 0) await Promise.race(inFlight);
          const slot = free.shift();
          if (failure || slot === undefined) break;
          const entries = await readNew(slot);
          report.timings.readWaitMs += now() - t;
          if (entries.length === 0) {
            free.push(slot);
            report.stoppedBy = "drained";
            break;
          }
          // … and a free writer for its transaction (meanwhile this batch is the one read ahead).
          while (inFlight.size >= writers) await Promise.race(inFlight);
          // After a failure elsewhere, this batch stays pending in its slot for the next run.
          if (failure) break;
          const task: Promise<void> = loadBatch(slot, entries, ++dispatched).then(
            () => {
              inFlight.delete(task);
              free.push(slot);
            },
            (error: unknown) => {
              // The slot keeps its unacknowledged entries: the next run recovers them.
              inFlight.delete(task);
              failure ??= { error };
            },
          );
          inFlight.add(task);
        }
      } finally {
        await Promise.all(inFlight);
      }
      if (failure) throw failure.error;
    }
  } catch (error) {
    report.status = "failed";
    report.stoppedBy = error instanceof LeaseLostError ? "lease_lost" : "error";
    report.error = describeFailure(error);
  }

  report.durationMs = Math.max(0, now() - started);
  report.eventsPerSecond = report.durationMs > 0 ? Math.round((report.events * 1000) / report.durationMs) : 0;
  try {
    const left = await backlog(redis, stream, group);
    report.backlog = left.undelivered === null ? null : left.pending + left.undelivered;
    // On Redis's clock: stream ids are made from it, and the Worker's may be off from it.
    report.lagMs = left.oldestId === null ? 0 : Math.max(0, left.redisNow - streamIdTime(left.oldestId));
  } catch (error) {
    log("warn", "load: could not measure the backlog", { error: describeError(error) });
  }
  if ((report.stoppedBy === "budget" || report.stoppedBy === "max_batches") && (report.backlog ?? 0) > 0) {
    // Not an error yet: a backlog is worked off over several runs. Run after run, it is a loader sized below the
    // event rate (docs/data-model.md#sizing-the-loader): the stream then grows until Redis refuses appends.
    log("warn", "load: stopped with entries left; the next run continues", {
      stoppedBy: report.stoppedBy,
      backlog: report.backlog,
      lagMs: report.lagMs,
      eventsPerSecond: report.eventsPerSecond,
    });
  }

  try {
    if (report.runId !== null) {
      const runId = report.runId;
      await withRetry(
        () => finishRun(db, runId, report.status === "failed" ? "failed" : "ok", stats(), report.error),
        retryOptions("run finish"),
      );
    }
  } catch (error) {
    log("error", "load: could not record the run", { runId: report.runId, error: describeFailure(error) });
  }
  try {
    if (report.stoppedBy !== "lease_lost") await releaseLease(db, leaseName, holder);
  } catch (error) {
    // It expires on its own.
    log("warn", "load: could not release the lease", { error: describeFailure(error) });
  }

  const { error: _error, ...summary } = report;
  if (report.status === "failed") log("error", "load: run failed", { ...summary, error: report.error });
  else log("info", "load: run finished", summary);
  return report;
}
