// The batch recommenders: SQL that runs inside Postgres over the warehouse (interactions, catalogue, events) and
// writes the output tables the publisher ships to Workers KV. Called by the refresh (load → compute → publish),
// from a Worker through the Neon driver, so every statement is in the recommender modules as text — no files.
//
// Outputs (each a model with its own model_versions row, params and stats):
//   similar          item_neighbors kind 'similar'          recommenders/similar.ts (co-visitation)
//   bought_together  item_neighbors kind 'bought_together'  recommenders/bought-together.ts (association rules)
//   next_items       item_neighbors kind 'next'             recommenders/next-items.ts (sequential rules)
//   popular          popular_items list 'popular'          recommenders/popular.ts
//   trending         popular_items list 'trending'         recommenders/popular.ts
//   user_candidates  user_candidates                       recommenders/user-candidates.ts (incremental; with
//                                                          the user's buy-again entries)
// Order: the item lists and popular lists first (each reads only the warehouse; COMPUTE_LANES of them at once, on
// their own connections), user_candidates last (it reads item_neighbors' similar / bought_together rows and
// popular_items).
//
// Versioning and the swap: each output gets a `building` version row first (committed, so a failure stays visible
// as `failed`); then ONE transaction per output computes into temporary tables, deletes the output's previous rows,
// inserts the new rows under the new version and flips the version to `ready`. user_candidates stages its lists
// first, in COMPUTE_LANES parts at once (each a transaction of its own, into an unlogged table), and only its swap
// is that one transaction. Readers (the publisher, an admin) see the previous rows or the new ones, never a mix or
// an empty table. docs/recommenders.md has the details and the contract for external models writing the same tables.
import { sql } from "drizzle-orm";
import { settleAll } from "../concurrency.ts";
import { type Database, type TransactionConfig, transaction } from "../stores/db.ts";
import { modelVersions } from "../stores/schema.ts";
import type { Executor } from "./bulk.ts";
import {
  BOUGHT_TOGETHER_DEFAULTS,
  type BoughtTogetherParams,
  computeBoughtTogether,
} from "./recommenders/bought-together.ts";
import { computeNextItems, NEXT_ITEMS_DEFAULTS, type NextItemsParams } from "./recommenders/next-items.ts";
import { computePopular, POPULAR_DEFAULTS, type PopularParams } from "./recommenders/popular.ts";
import { computeSimilar, SIMILAR_DEFAULTS, type SimilarParams } from "./recommenders/similar.ts";
import { type RecommenderResult, rows } from "./recommenders/sql.ts";
import {
  type CandidateScope,
  createCandidateStage,
  dropCandidateStage,
  dropStaleCandidateStages,
  type StagedPart,
  stageUserCandidates,
  swapUserCandidates,
  USER_CANDIDATES_DEFAULTS,
  type UserCandidatesParams,
} from "./recommenders/user-candidates.ts";
import { withRetry } from "./retry.ts";

export const OUTPUT_MODELS = [
  "similar",
  "bought_together",
  "next_items",
  "popular",
  "trending",
  "user_candidates",
] as const;
export type OutputModel = (typeof OUTPUT_MODELS)[number];

/**
 * What a refresh computes when `external` outputs belong to an external model: every other one (`only`), or all of
 * them (undefined) when none does.
 */
export function refreshOutputs(external: readonly OutputModel[]): OutputModel[] | undefined {
  return external.length === 0 ? undefined : OUTPUT_MODELS.filter((m) => !external.includes(m));
}

/**
 * Memory for the sorts and hash aggregates of one compute transaction (SET LOCAL: this transaction only). The
 * pair aggregates of a few million events fit; Postgres spills to disk past it rather than failing.
 */
export const COMPUTE_WORK_MEM = "256MB";

/**
 * Outputs computed at once, each on its own connection (the pool holds 4): two keep both cores of a small
 * Postgres busy (docs/benchmarks.md#compute) and leave the pool room for the refresh's own bookkeeping.
 */
export const COMPUTE_LANES = 2;

export interface ComputeParams {
  similar: SimilarParams;
  boughtTogether: BoughtTogetherParams;
  nextItems: NextItemsParams;
  popular: PopularParams;
  userCandidates: UserCandidatesParams;
}

export const COMPUTE_DEFAULTS: ComputeParams = {
  similar: SIMILAR_DEFAULTS,
  boughtTogether: BOUGHT_TOGETHER_DEFAULTS,
  nextItems: NEXT_ITEMS_DEFAULTS,
  popular: POPULAR_DEFAULTS,
  userCandidates: USER_CANDIDATES_DEFAULTS,
};

export interface ComputeOptions {
  /**
   * The "now" every window ends at: a time, or "data" for the newest interaction's event_time (historic data sets
   * such as the UCI demo, 2010–2011). Default: the wall clock.
   */
  asOf?: Date | "data";
  /** The outputs to compute (default: all). An output an external model owns is left out here. */
  only?: readonly OutputModel[];
  /**
   * How many outputs compute at once, and in how many parts user_candidates stages its lists (default
   * COMPUTE_LANES; anything but a whole number ≥ 1 means the default); 1 runs them one after the other.
   */
  lanes?: number;
  /** user_candidates: recompute every active user even when an incremental run would do. */
  full?: boolean;
  /**
   * user_candidates: how long after the last full run incremental runs may follow it (default
   * FULL_REBUILD_AFTER_MS, by the runs' `asOf`); past it, the run is full.
   */
  fullRebuildAfterMs?: number;
  /** The version label (unique per model); default: the start time, ISO, plus a short random suffix. */
  version?: string;
  params?: { [K in keyof ComputeParams]?: Partial<ComputeParams[K]> };
  log?: (line: string) => void;
}

export interface OutputReport {
  /** model_versions.id the rows carry. */
  modelVersion: number;
  rows: number;
  durationMs: number;
  /** Time per SQL step (ms). */
  steps: Record<string, number>;
  counts: Record<string, number>;
  /** user_candidates only. */
  mode?: "full" | "incremental";
}

export interface ComputeReport {
  version: string;
  /** ISO time the windows end at. */
  asOf: string;
  outputs: Partial<Record<OutputModel, OutputReport>>;
  durationMs: number;
}

export interface ModelVersionRow {
  id: number;
  model: string;
  version: string;
  source: "internal" | "external";
  status: string;
  createdAt: string;
}

/**
 * The newest `ready` (or already `published`) version of each model: what the publisher ships (its own
 * `currentModelVersions`, src/publish/sources.ts, takes the same one). Newest by id, the order versions were
 * registered in, not by created_at: an external writer sets created_at to when it read its input, which may be
 * before an internal version that it then replaces (docs/recommenders.md, the external contract). Internal and
 * external versions compete on equal terms.
 */
export async function currentModelVersions(db: Executor): Promise<Map<string, ModelVersionRow>> {
  const found = await rows<{
    id: string | number;
    model: string;
    version: string;
    source: string;
    status: string;
    created_at: string | Date;
  }>(
    db,
    sql`
    select distinct on (model) id, model, version, source, status, created_at
    from ${modelVersions}
    where status in ('ready', 'published')
    order by model, id desc`,
  );
  return new Map(
    found.map((r) => [
      r.model,
      {
        id: Number(r.id),
        model: r.model,
        version: r.version,
        source: r.source === "external" ? "external" : "internal",
        status: r.status,
        createdAt: new Date(r.created_at).toISOString(),
      },
    ]),
  );
}

function resolveParams(options: ComputeOptions): ComputeParams {
  const o = options.params ?? {};
  return {
    similar: { ...SIMILAR_DEFAULTS, ...o.similar },
    boughtTogether: { ...BOUGHT_TOGETHER_DEFAULTS, ...o.boughtTogether },
    nextItems: { ...NEXT_ITEMS_DEFAULTS, ...o.nextItems },
    popular: { ...POPULAR_DEFAULTS, ...o.popular },
    userCandidates: { ...USER_CANDIDATES_DEFAULTS, ...o.userCandidates },
  };
}

async function resolveAsOf(db: Executor, asOf: ComputeOptions["asOf"]): Promise<Date> {
  if (asOf instanceof Date) return asOf;
  if (asOf !== "data") return new Date();
  // The newest event time rounded up to the millisecond (a Date holds no more): every window ends at `<= asOf`, and
  // an event stamped 12:30:00.000500 must stay inside them.
  const [row] = await rows<{ max: string | Date | null }>(
    db,
    sql`select date_trunc('milliseconds', max(event_time))
               + case when max(event_time) > date_trunc('milliseconds', max(event_time))
                      then interval '1 millisecond' else interval '0' end as max
        from interactions`,
  );
  return row?.max ? new Date(row.max) : new Date();
}

function defaultVersion(): string {
  return `${new Date().toISOString()}~${crypto.randomUUID().slice(0, 8)}`;
}

async function registerVersion(db: Executor, model: OutputModel, version: string, params: object): Promise<number> {
  const [row] = await rows<{ id: string | number }>(
    db,
    sql`insert into ${modelVersions} (model, version, source, status, params)
        values (${model}, ${version}, 'internal', 'building', ${JSON.stringify(params)}::jsonb) returning id`,
  );
  if (!row) throw new Error("model_versions: insert returned no row");
  return Number(row.id);
}

function stats(result: RecommenderResult, durationMs: number, mode?: string): Record<string, unknown> {
  return { rows: result.rows, durationMs, steps: result.steps, counts: result.counts, ...(mode ? { mode } : {}) };
}

async function markReady(tx: Executor, id: number, s: Record<string, unknown>): Promise<void> {
  await tx.execute(
    sql`update ${modelVersions} set status = 'ready', stats = ${JSON.stringify(s)}::jsonb, finished_at = now()
        where id = ${id}`,
  );
}

/**
 * Marks `building` versions failed, with the error. Retried like any statement (it follows a failure, often a
 * database that just went away); given up silently after that: the failure being reported is the caller's.
 */
async function markFailed(db: Executor, ids: number[], error: unknown): Promise<void> {
  if (ids.length === 0) return;
  const message = error instanceof Error ? error.message : String(error);
  await withRetry(() =>
    db.execute(
      sql`update ${modelVersions} set status = 'failed', finished_at = now(),
            stats = stats || jsonb_build_object('error', ${message.slice(0, 2000)}::text)
          where id = any(${`{${ids.join(",")}}`}::bigint[]) and status = 'building'`,
    ),
  ).catch(() => {});
}

/**
 * Registers the versions, runs `work` in one transaction (retried as a whole after a transient failure: it has
 * no effect until it commits) and marks the versions failed when it gives up.
 */
async function inTransaction<T>(
  db: Database,
  ids: number[],
  work: (tx: Executor) => Promise<T>,
  config?: TransactionConfig,
): Promise<T> {
  try {
    return await withRetry(() =>
      transaction(
        db,
        async (tx) => {
          await tx.execute(sql.raw(`set local work_mem = '${COMPUTE_WORK_MEM}'`));
          // JIT compiles each big statement for ~0.2 s and gains little on these hash aggregates and sorts.
          await tx.execute(sql`set local jit = off`);
          // Windows are N × 24 h whatever the database's time zone: timestamptz − interval '90 days' is computed in
          // the session's zone, where a daylight-saving change in between would move the edge by an hour.
          await tx.execute(sql`set local timezone = 'UTC'`);
          return work(tx);
        },
        config,
      ),
    );
  } catch (error) {
    await markFailed(db, ids, error);
    throw error;
  }
}

/** `lanes` as a whole number ≥ 1 (COMPUTE_LANES when absent or not a count). */
export function laneCount(lanes: number | undefined): number {
  return lanes !== undefined && Number.isSafeInteger(lanes) && lanes >= 1 ? lanes : COMPUTE_LANES;
}

/**
 * One report for user_candidates' parts and swap: per step the slowest part's time (the parts run at once), `stage`
 * the whole staging phase, counts summed over the parts; then the swap's steps and counts; rows as swapped in.
 */
function mergeParts(staged: readonly StagedPart[], stageMs: number, swapped: RecommenderResult): RecommenderResult {
  const steps: Record<string, number> = {};
  const counts: Record<string, number> = { parts: staged.length };
  for (const part of staged) {
    for (const [name, ms] of Object.entries(part.steps)) steps[name] = Math.max(steps[name] ?? 0, ms);
    for (const [name, n] of Object.entries(part.counts)) counts[name] = (counts[name] ?? 0) + n;
  }
  steps.stage = stageMs;
  Object.assign(steps, swapped.steps);
  Object.assign(counts, swapped.counts);
  return { rows: swapped.rows, steps, counts };
}

/** Flat parameter objects compared key by key (jsonb does not keep key order). */
function sameParams(stored: unknown, current: object): boolean {
  if (stored === null || typeof stored !== "object") return false;
  const a = stored as Record<string, unknown>;
  const b = current as Record<string, unknown>;
  const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
  return [...keys].every((k) => a[k] === b[k]);
}

/**
 * An incremental user_candidates run follows a full one for at most this long; then the next run is full again.
 * Incremental runs recompute only who changed: a kept list keeps the neighbour and popular lists of its own version,
 * and a few users can be missed (docs/recommenders.md#what-is-incremental). A daily rebuild bounds both.
 */
export const FULL_REBUILD_AFTER_MS = 24 * 60 * 60 * 1000;

/**
 * Which user_candidates run this is: incremental after a compatible internal version, full otherwise — and full
 * when the last full run is FULL_REBUILD_AFTER_MS old (by the versions' reference times, `asOf`).
 */
async function candidateScope(
  db: Executor,
  asOf: Date,
  params: UserCandidatesParams,
  full: boolean,
  fullRebuildAfterMs: number,
): Promise<CandidateScope> {
  if (full) return { mode: "full" };
  const current = (await currentModelVersions(db)).get("user_candidates");
  if (current?.source !== "internal") return { mode: "full" };
  const [previous] = await rows<{ params: { asOf?: string; params?: unknown }; created_at: string | Date }>(
    db,
    sql`select params, created_at from ${modelVersions} where id = ${current.id}`,
  );
  const previousAsOf = previous?.params.asOf ? new Date(previous.params.asOf) : undefined;
  if (!previous || !previousAsOf || previousAsOf > asOf || !sameParams(previous.params.params, params)) {
    return { mode: "full" };
  }
  const [lastFull] = await rows<{ as_of: string | null }>(
    db,
    sql`select params->>'asOf' as as_of from ${modelVersions}
        where model = 'user_candidates' and source = 'internal' and stats->>'mode' = 'full'
          and status in ('ready', 'published', 'retired')
        order by id desc limit 1`,
  );
  const lastFullAsOf = lastFull?.as_of ? Date.parse(lastFull.as_of) : Number.NaN;
  if (!(asOf.getTime() - lastFullAsOf < fullRebuildAfterMs)) return { mode: "full" };
  return { mode: "incremental", previousAsOf, previousBuiltAt: new Date(previous.created_at) };
}

export async function computeRecommendations(db: Database, options: ComputeOptions = {}): Promise<ComputeReport> {
  const started = performance.now();
  const log = options.log ?? (() => {});
  const wanted = new Set<OutputModel>(options.only ?? OUTPUT_MODELS);
  const params = resolveParams(options);
  const asOf = await resolveAsOf(db, options.asOf);
  const version = options.version ?? defaultVersion();
  const report: ComputeReport = { version, asOf: asOf.toISOString(), outputs: {}, durationMs: 0 };
  const paramsOf = (p: object, extra: object = {}) => ({ asOf: asOf.toISOString(), params: p, ...extra });

  type Result = RecommenderResult & { mode?: "full" | "incremental" };
  // One output: its version registered, `run` computing it (and marking the version ready or failed), its report.
  const output = async (model: OutputModel, p: object, run: (id: number, t0: number) => Promise<Result>) => {
    if (!wanted.has(model)) return;
    const id = await registerVersion(db, model, version, paramsOf(p));
    const t0 = performance.now();
    const result = await run(id, t0);
    const durationMs = Math.round(performance.now() - t0);
    report.outputs[model] = {
      modelVersion: id,
      rows: result.rows,
      durationMs,
      steps: result.steps,
      counts: result.counts,
      ...(result.mode ? { mode: result.mode } : {}),
    };
    log(`${model}: ${result.rows} rows in ${durationMs} ms${result.mode ? ` (${result.mode})` : ""}`);
  };
  // Most outputs: computed and swapped in one transaction.
  const single = (model: OutputModel, p: object, compute: (tx: Executor, id: number) => Promise<Result>) =>
    output(model, p, (id, t0) =>
      inTransaction(db, [id], async (tx) => {
        const r = await compute(tx, id);
        await markReady(tx, id, stats(r, Math.round(performance.now() - t0), r.mode));
        return r;
      }),
    );

  // The item lists and popular lists read only the warehouse, each in its own transaction: they run in
  // COMPUTE_LANES lanes at once (one pool connection each), so Postgres works on as many of them in parallel.
  // Every output still commits on its own; a failure fails its output, the others finish, then the first
  // failure is thrown (user_candidates, which reads their rows, does not run).
  const popularAndTrending = async () => {
    if (!wanted.has("popular") && !wanted.has("trending")) return;
    const ids: { popular?: number; trending?: number } = {};
    try {
      if (wanted.has("popular")) ids.popular = await registerVersion(db, "popular", version, paramsOf(params.popular));
      if (wanted.has("trending")) {
        ids.trending = await registerVersion(db, "trending", version, paramsOf(params.popular));
      }
    } catch (error) {
      // The first one registered would stay `building` for good: nothing else marks it.
      await markFailed(db, ids.popular === undefined ? [] : [ids.popular], error);
      throw error;
    }
    const t0 = performance.now();
    const result = await inTransaction(
      db,
      [ids.popular, ids.trending].filter((id): id is number => id !== undefined),
      async (tx) => {
        const r = await computePopular(tx, asOf, ids, params.popular);
        const ms = Math.round(performance.now() - t0);
        if (ids.popular !== undefined && r.popular) await markReady(tx, ids.popular, stats(r.popular, ms));
        if (ids.trending !== undefined && r.trending) await markReady(tx, ids.trending, stats(r.trending, ms));
        return r;
      },
    );
    const durationMs = Math.round(performance.now() - t0);
    for (const model of ["popular", "trending"] as const) {
      const r = result[model];
      const id = ids[model];
      if (!r || id === undefined) continue;
      report.outputs[model] = { modelVersion: id, rows: r.rows, durationMs, steps: r.steps, counts: r.counts };
      log(`${model}: ${r.rows} rows in ${durationMs} ms (popular and trending together)`);
    }
  };
  // Longest first, so the lanes end close together.
  const itemOutputs: Array<() => Promise<void>> = [
    () => single("similar", params.similar, (tx, id) => computeSimilar(tx, asOf, id, params.similar)),
    () => single("next_items", params.nextItems, (tx, id) => computeNextItems(tx, asOf, id, params.nextItems)),
    popularAndTrending,
    () =>
      single("bought_together", params.boughtTogether, (tx, id) =>
        computeBoughtTogether(tx, asOf, id, params.boughtTogether),
      ),
  ];
  await settleAll(itemOutputs, laneCount(options.lanes));

  if (wanted.has("user_candidates")) {
    const scope = await candidateScope(
      db,
      asOf,
      params.userCandidates,
      options.full ?? false,
      options.fullRebuildAfterMs ?? FULL_REBUILD_AFTER_MS,
    );
    const p = params.userCandidates;
    // The lists are staged in `lanes` parts at once, each part in a repeatable-read transaction on its own
    // connection; then one short transaction swaps them in under the erasure lock (recommenders/user-candidates.ts).
    const parts = laneCount(options.lanes);
    await output("user_candidates", p, async (id, t0) => {
      try {
        await withRetry(() => dropStaleCandidateStages(db));
        await withRetry(() => createCandidateStage(db, id));
        const stageStarted = performance.now();
        const staged: StagedPart[] = [];
        await settleAll(
          Array.from({ length: parts }, (_, index) => async () => {
            staged[index] = await inTransaction(
              db,
              [id],
              (tx) => stageUserCandidates(tx, asOf, id, p, scope, { index, of: parts }),
              { isolationLevel: "repeatable read" },
            );
          }),
          parts,
        );
        const stageMs = Math.round(performance.now() - stageStarted);
        return await inTransaction(db, [id], async (tx) => {
          const swapped = await swapUserCandidates(
            tx,
            id,
            scope,
            staged.map((s) => s.snapshot),
          );
          const merged = { ...mergeParts(staged, stageMs, swapped), mode: scope.mode };
          await markReady(tx, id, stats(merged, Math.round(performance.now() - t0), scope.mode));
          return merged;
        });
      } catch (error) {
        // A part or the swap has marked the version already; a failure around them (the staging table) has not.
        await markFailed(db, [id], error);
        throw error;
      } finally {
        await dropCandidateStage(db, id).catch(() => {});
      }
    });
  }

  report.durationMs = Math.round(performance.now() - started);
  return report;
}
