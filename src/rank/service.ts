// One ranking answer: fetch every source in parallel, each under its own deadline, hand what arrived to the pure
// core, and describe the answer (freshness of each source, degraded flags, timings). A source that fails or is
// late is left out and flagged; the answer is never an error because of a dependency.

import type { CollectedEvent } from "../collect/event.ts";
import { activeExperiment } from "../experiments/config.ts";
import { exposureEvent } from "../experiments/exposure.ts";
import type { ListTeam } from "../experiments/interleave.ts";
import {
  assignmentUnit,
  experimentPlacement,
  interleaveAnswers,
  interleavedWhyNot,
  planExperiment,
  UNIT_UNKNOWN,
} from "../experiments/serve.ts";
import type { Pointer, PopularValue } from "../publish/codec.ts";
import { NEIGHBOR_KEY_KINDS } from "../publish/keys.ts";
import type { SessionSnapshot } from "../session/snapshot.ts";
import { type CatalogLookup, orderPredictive } from "./catalog.ts";
import { DEFAULT_RANKING_CONFIG, type RankingConfig } from "./config.ts";
import { type RankInput, type RankOutput, rank, type Scored, type SessionSignals } from "./core.ts";
import { type Head, type Lists, lastHead, readHead, readLists, readShared, type Shared } from "./online-store.ts";
import type { RankRequest } from "./request.ts";
import { sessionSignals } from "./signals.ts";

/** What the service reads from; `depsFromEnv` (deps.ts) builds the real ones, tests wrap them to inject faults. */
export interface RankDeps {
  kv: KVNamespace;
  snapshot(userKey: string): Promise<SessionSnapshot>;
  /** The live trending list from the isolate cache (never waits for Redis). */
  trending(now: number): { list: Scored[] | null; ageMs: number | null; status: "ok" | "warming" | "unavailable" };
  now(): number;
  /** Queues an answer's exposure event for the event stream, after the answer (never awaited). */
  expose?(userKey: string, event: CollectedEvent): void;
  /** Keeps work the request started for the isolate (a load of the shared keys) alive past its answer. */
  waitUntil?(promise: Promise<unknown>): void;
}

export type SourceStatus = "ok" | "absent" | "timeout" | "error" | "skipped";

export interface SourceReport {
  status: SourceStatus;
  /** Wall time spent waiting for it (ms). */
  ms?: number;
  /** Age of its data at answer time (ms). */
  ageMs?: number | null;
  version?: number | null;
  generatedAt?: number | null;
}

export interface RankAnswer {
  recId: string;
  placement: string;
  mode: RankRequest["mode"];
  userKey: string | null;
  items: RankOutput["items"];
  sources: {
    session: SourceReport;
    batch: SourceReport;
    catalog: SourceReport & { items?: number };
    popular: SourceReport;
    trending: SourceReport & { from?: "redis" | "kv" | null };
  };
  degraded: string[];
  config: { version: string };
  snapshot: { version: number | null; generatedAt: number | null };
  /**
   * The experiment this answer belongs to (docs/experiments.md#serving): its id, the visitor's arm, the document's
   * version; `teams`: an interleaved list's team per position ("a" = the first variant). Null: none.
   */
  experiment: { id: string; arm: string; mode: "split" | "interleave"; version: string; teams?: ListTeam[] } | null;
  explain?: {
    candidates: number;
    removed: Record<string, number>;
    bySource: RankOutput["stats"]["bySource"];
    whyNot?: RankOutput["whyNot"];
  };
  /** Server-Timing entries (name → ms). */
  timing: Record<string, number>;
}

type Settled<T> =
  | { status: "ok"; value: T; ms: number; stale?: "timeout" | "error" }
  | { status: "timeout" | "error"; ms: number; error?: unknown };

function isThenable<T>(value: T | PromiseLike<T>): value is PromiseLike<T> {
  return typeof (value as { then?: unknown } | null)?.then === "function";
}

/**
 * `work` under a deadline: resolves (never rejects) with its value, or why there is none. A value `work` returns
 * synchronously (an isolate cache hit) needs no timer.
 */
export function withDeadline<T>(work: () => T | Promise<T>, ms: number, clock: () => number): Promise<Settled<T>> {
  let immediate: T | Promise<T>;
  try {
    immediate = work();
  } catch (error) {
    return Promise.resolve({ status: "error", ms: 0, error });
  }
  if (!isThenable(immediate)) return Promise.resolve({ status: "ok", value: immediate, ms: 0 });
  const pending: PromiseLike<T> = immediate;
  const start = clock();
  return new Promise((resolve) => {
    let done = false;
    const timer = setTimeout(() => {
      if (done) return;
      done = true;
      resolve({ status: "timeout", ms: clock() - start });
    }, ms);
    pending.then(
      (value) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        resolve({ status: "ok", value, ms: clock() - start });
      },
      (error: unknown) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        resolve({ status: "error", ms: clock() - start, error });
      },
    );
  });
}

function segmentLists(value: PopularValue | null) {
  return value?.segments ?? {};
}

/**
 * A country's list and the global one, each scaled by its own best score (a country's sums are smaller than the
 * global ones): a product in both keeps the better of its two values. Best first.
 */
function scaledUnion(country: readonly Scored[] | undefined, global: readonly Scored[] | undefined): readonly Scored[] {
  if (!country || country.length === 0) return global ?? [];
  const best = new Map<string, number>();
  for (const list of [country, global ?? []]) {
    let max = 0;
    for (const [, s] of list) if (s > max) max = s;
    if (max <= 0) continue;
    for (const [id, s] of list) {
      const v = Math.max(0, s) / max;
      if (v > (best.get(id) ?? -1)) best.set(id, v);
    }
  }
  return [...best].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
}

export type HeadResult = Settled<Head>;

/**
 * The pointer and the config (cached per isolate; on a miss the first KV read), under the default KV deadline: the
 * config that would say otherwise is what is being read. Never rejects.
 */
export async function loadHead(deps: RankDeps): Promise<HeadResult> {
  const result = await withDeadline(() => readHead(deps.kv, deps.now()), DEFAULT_RANKING_CONFIG.deadlines.kv, deps.now);
  if (result.status === "ok") return result;
  // KV is failing: the isolate's last pointer keeps its cached catalogue and lists in use (flagged by the caller).
  const stale = lastHead(deps.kv);
  return stale ? { status: "ok", value: stale, ms: result.ms, stale: result.status } : result;
}

/**
 * `headResult`: the caller's loadHead() when it already needed the config (to validate the request), just before:
 * its time counts against the answer's total deadline.
 */
export async function answer(deps: RankDeps, request: RankRequest, headResult?: HeadResult): Promise<RankAnswer> {
  const started = deps.now() - (headResult?.ms ?? 0);
  const degraded: string[] = [];
  const timing: Record<string, number> = {};

  const headSettled = headResult ?? (await loadHead(deps));
  const head: Head | null = headSettled.status === "ok" ? headSettled.value : null;
  if (!head) degraded.push(`kv_${headSettled.status}`);
  else if (headSettled.status === "ok" && headSettled.stale) degraded.push(`kv_${headSettled.stale}`, "stale_head");
  timing.head = headSettled.ms;
  const config: RankingConfig = head?.config ?? DEFAULT_RANKING_CONFIG;
  if (head?.configInvalid) degraded.push("config_invalid");
  const pointer: Pointer | null = head?.pointer ?? null;
  if (head && !pointer) degraded.push("no_snapshot");
  const { total } = config.deadlines;
  // Every wait ends by the answer's total deadline (the head's time included), whatever a source's own allows.
  const left = () => Math.max(1, total - (deps.now() - started));
  const sessionDeadline = Math.min(config.deadlines.session, left());
  const kvDeadline = Math.min(config.deadlines.kv, left());

  // In parallel: the session, the shared keys, and the lists the request alone determines.
  const userKey = request.userKey;
  const sessionP = userKey
    ? withDeadline(() => deps.snapshot(userKey), sessionDeadline, deps.now)
    : Promise.resolve(null);
  const sharedP = withDeadline(
    () => readShared(deps.kv, pointer, deps.now(), (p) => deps.waitUntil?.(p)),
    kvDeadline,
    deps.now,
  );
  const firstListsP = pointer
    ? withDeadline(
        () => readLists(deps.kv, pointer, userKey ? [userKey] : [], request.context, started),
        kvDeadline,
        deps.now,
      )
    : Promise.resolve(null);
  const [sessionResult, sharedResult, firstLists] = await Promise.all([sessionP, sharedP, firstListsP]);

  let snapshot: SessionSnapshot | null = null;
  if (sessionResult) {
    timing.session = sessionResult.ms;
    if (sessionResult.status === "ok") snapshot = sessionResult.value;
    else degraded.push(`session_${sessionResult.status}`);
  }
  const signals: SessionSignals | null = snapshot ? sessionSignals(snapshot) : null;
  const shared: Shared | null = sharedResult.status === "ok" ? sharedResult.value : null;
  timing.shared = sharedResult.ms;
  if (!shared && pointer) degraded.push(`catalog_${sharedResult.status}`);
  let lists: Lists | null = firstLists?.status === "ok" ? firstLists.value : null;
  // The read failed or timed out, or failed past the isolate cache's hits (which still serve).
  const listsStatus = !firstLists
    ? null
    : firstLists.status === "ok" && firstLists.value.failed
      ? "error"
      : firstLists.status;
  if (firstLists) {
    timing.lists = firstLists.ms;
    if (listsStatus !== "ok") degraded.push(`batch_${listsStatus}`);
  }

  // The placement's own behaviour (post-purchase seeds, a cart's context) is a recommendation's only: on rerank and
  // similar the placement is the caller's label for attribution (docs/ranking.md#apis).
  const placement = request.mode === "recommend" ? request.placement : null;

  // Second phase: neighbours of the session's items, within what is left.
  const seeds: string[] = [];
  if (signals && pointer) {
    const seen = new Set(request.context);
    const take = (ids: string[], n: number) => {
      for (const id of ids.slice(0, n)) {
        if (seen.has(id)) continue;
        seen.add(id);
        seeds.push(id);
      }
    };
    take(signals.viewed, config.seeds.viewed);
    take(signals.carted, config.seeds.carted);
    if (placement === "post_purchase") take(signals.purchased, config.seeds.purchased);
  }
  if (pointer && seeds.length > 0) {
    const second = await withDeadline(
      () => readLists(deps.kv, pointer, [], seeds, started),
      Math.min(config.deadlines.kv, left()),
      deps.now,
    );
    timing.seeds = second.ms;
    if (second.status === "ok" && second.value.failed) degraded.push("session_neighbors_error");
    if (second.status === "ok") {
      if (!lists) lists = second.value;
      else {
        for (const kind of NEIGHBOR_KEY_KINDS)
          for (const [k, v] of second.value.neighbors[kind]) lists.neighbors[kind].set(k, v);
      }
    } else degraded.push(`session_neighbors_${second.status}`);
  }

  // Context of the cart / post-purchase placements when the caller named no product: the session's items.
  const context = [...request.context];
  if (context.length === 0 && signals) {
    if (placement === "cart") context.push(...signals.carted.slice(0, config.seeds.carted));
    if (placement === "post_purchase") context.push(...signals.purchased.slice(0, config.seeds.purchased));
  }

  const batch = (userKey ? lists?.users.get(userKey) : null) ?? null;
  const live = deps.trending(deps.now());
  if (live.status !== "ok") degraded.push(`trending_${live.status}`);
  const popularSegments = segmentLists(shared?.popular ?? null);
  const trendingSegments = segmentLists(shared?.trending ?? null);
  const country = request.country;
  const popular = scaledUnion(country ? popularSegments[`country:${country}`] : undefined, popularSegments.global);
  // Live trending when there is some; otherwise the batch trending list of the visitor's segment.
  const trendingKv = (country ? trendingSegments[`country:${country}`] : undefined) ?? trendingSegments.global ?? null;
  const trending = live.list && live.list.length > 0 ? live.list : trendingKv;
  const catalog: CatalogLookup = shared?.catalog ?? (() => undefined);

  // Experiments: the visitor's arm decides the config and whether their own data is used (no read of its own: the
  // document came with the head, the unit with the snapshot). A user named alone whose session could not be read has
  // no known unit: no experiment for this answer, flagged when one was running (docs/experiments.md#serving).
  const recId = crypto.randomUUID();
  const assignment = assignmentUnit(
    request.anonymousId,
    userKey,
    snapshot ? (snapshot.exists ? snapshot.anonymousIds : []) : null,
  );
  const experimentKey = experimentPlacement(request.mode, request.placement);
  const unit = assignment.status === "known" ? assignment.unit : null;
  const plan = head ? planExperiment(head.experiments, experimentKey, started, unit, config) : null;
  if (head && assignment.status === "unknown" && activeExperiment(head.experiments, experimentKey, started))
    degraded.push(UNIT_UNKNOWN);
  if (head?.experimentsInvalid) degraded.push("experiments_invalid");
  const inputFor = (personal: boolean, contextIds = personal ? context : request.context): RankInput => ({
    placement: request.placement,
    mode: request.mode,
    limit: request.limit,
    now: started,
    context: contextIds,
    query: request.query,
    filters: request.filters,
    session: personal ? signals : null,
    batch: personal ? (batch?.items ?? null) : null,
    similar: lists?.neighbors.similar ?? new Map(),
    boughtTogether: lists?.neighbors.bought_together ?? new Map(),
    next: lists?.neighbors.next ?? new Map(),
    buyAgain: personal ? (batch?.buyAgain ?? null) : null,
    trending,
    popular,
    popularByCategory: (c) => popularSegments[`category:${c}`],
    ...(request.candidates ? { candidates: request.candidates } : {}),
    catalog,
    ...(shared?.catalog ? { catalogScan: () => shared.products } : {}),
    // Used where the publish found it predictive; sorted on the first request that has a context product, then
    // kept with the catalogue.
    catalogueOrder:
      contextIds.length > 0 && orderPredictive(pointer?.catalogOrder) ? (shared?.order?.() ?? null) : null,
    trustUnknown: shared?.catalog == null,
    explain: request.explain,
    whyNot: request.whyNot,
  });
  const plans = plan?.plans ?? [{ config, personal: true }];
  const outputs = plans.map((p) => rank(inputFor(p.personal), p.config));
  const output = outputs[0] as RankOutput;
  let items = output.items;
  let teams: ListTeam[] | undefined;
  if (outputs.length === 2) {
    // The shown list keeps the per-category cap each variant kept (a rerank has none, as in rank()).
    const diversity =
      request.mode === "rerank"
        ? undefined
        : {
            maxPerCategory: config.diversity.maxPerCategory,
            categoryOf: (id: string) => catalog(id)?.category ?? undefined,
          };
    ({ items, teams } = interleaveAnswers(
      output.items,
      (outputs[1] as RankOutput).items,
      request.limit,
      recId,
      diversity,
    ));
  }
  // Nothing was checked against the catalogue (stock, visibility, filters), whatever the mode.
  if (!shared?.catalog) degraded.push("catalog_unavailable");

  const now = deps.now();
  timing.total = now - started;
  const age = (at: number | null | undefined) => (at === null || at === undefined ? null : Math.max(0, now - at));
  const result: RankAnswer = {
    recId,
    placement: request.placement,
    mode: request.mode,
    userKey,
    items,
    sources: {
      session: !userKey
        ? { status: "skipped" }
        : snapshot
          ? {
              status: snapshot.exists ? "ok" : "absent",
              ms: sessionResult?.ms ?? 0,
              ageMs: age(snapshot.lastEventAt),
            }
          : { status: sessionResult?.status === "timeout" ? "timeout" : "error", ms: sessionResult?.ms ?? 0 },
      batch: batch
        ? { status: "ok", version: batch.version, generatedAt: batch.generatedAt, ageMs: age(batch.generatedAt) }
        : {
            // From the batch read itself: the seeds read may have filled `lists` when this one failed.
            status: !userKey
              ? "skipped"
              : listsStatus === "timeout" || listsStatus === "error"
                ? listsStatus
                : "absent",
          },
      catalog: shared?.catalog
        ? {
            status: "ok",
            items: shared.catalogItems,
            version: pointer?.catalog?.version ?? null,
            generatedAt: pointer?.generatedAt ?? null,
          }
        : { status: pointer ? (sharedResult.status === "ok" ? "absent" : sharedResult.status) : "absent" },
      popular: shared?.popular
        ? {
            status: "ok",
            version: shared.popular.version,
            generatedAt: shared.popular.generatedAt,
            ageMs: age(shared.popular.generatedAt),
          }
        : { status: "absent" },
      trending:
        live.list && live.list.length > 0
          ? { status: "ok", from: "redis", ageMs: live.ageMs }
          : trendingKv
            ? { status: "ok", from: "kv", ageMs: age(shared?.trending?.generatedAt) }
            : { status: live.status === "unavailable" ? "error" : "absent", from: null },
    },
    degraded,
    config: { version: config.version },
    snapshot: { version: pointer?.version ?? null, generatedAt: pointer?.generatedAt ?? null },
    experiment:
      plan && head
        ? {
            id: plan.experiment.id,
            arm: plan.arm,
            mode: plan.experiment.mode,
            version: head.experiments.version,
            ...(teams ? { teams } : {}),
          }
        : null,
    timing,
  };
  // The exposure goes under the key the request named (ranking follows no identity merge: an anonymous id merged
  // into a user still names its own key; the report maps every key to its person through the warehouse's
  // `identities`), and only when the session was read: a suppressed visitor's answer records nothing, and without
  // the snapshot there is no telling (docs/experiments.md#exposures).
  const exposedKey = snapshot && snapshot.suppressed !== true ? userKey : null;
  if (exposedKey && items.length > 0 && deps.expose) {
    deps.expose(
      exposedKey,
      exposureEvent({
        recId,
        userKey: exposedKey,
        placement: request.placement,
        mode: request.mode,
        productIds: items.map((i) => i.productId),
        context: request.context,
        experiment:
          result.experiment && plan
            ? {
                ...result.experiment,
                unit: plan.unit,
                ...(teams ? { variants: plan.experiment.variants.map((v) => v.id) as [string, string] } : {}),
              }
            : null,
        configVersion: config.version,
        snapshotVersion: pointer?.version ?? null,
        now,
      }),
    );
  }
  if (request.explain) {
    const whyNot = teams ? interleavedWhyNot(output.whyNot, items) : output.whyNot;
    result.explain = {
      candidates: output.stats.candidates,
      removed: output.stats.removed,
      bySource: output.stats.bySource,
      ...(whyNot ? { whyNot } : {}),
    };
  }
  return result;
}
