// The batch recommenders of src/batch/recommenders/*.ts, computed in TypeScript over the training sessions exactly
// as docs/recommenders.md specifies them (same parameters and defaults, imported from the SQL modules), so the
// evaluation needs no database: co-visitation "similar", association-rule "bought together", sequential-rule
// "next items", popular and trending (global and per category), and per-user candidates with their buy-again
// entries. Where the evaluation's data differs from the warehouse, the mapping is stated at each step (and in
// docs/relevance.md#our-methods).
import { BOUGHT_TOGETHER_DEFAULTS, type BoughtTogetherParams } from "../../src/batch/recommenders/bought-together.ts";
import {
  checkNextItemsParams,
  NEXT_ITEMS_DEFAULTS,
  type NextItemsParams,
  stepUnit,
} from "../../src/batch/recommenders/next-items.ts";
import { POPULAR_DEFAULTS, type PopularParams } from "../../src/batch/recommenders/popular.ts";
import { SIMILAR_DEFAULTS, type SimilarParams } from "../../src/batch/recommenders/similar.ts";
import { USER_CANDIDATES_DEFAULTS, type UserCandidatesParams } from "../../src/batch/recommenders/user-candidates.ts";
import type { Scored } from "../../src/rank/core.ts";
import { AFFINITY_WEIGHTS, type InteractionKind, TREND_WEIGHTS } from "../../src/session/weights.ts";
import type { EventType, Session, SessionEvent } from "../data.ts";
import type { TrainData } from "../method.ts";
import { compareIds } from "../metrics.ts";

const DAY = 86_400;

/** The interaction kind the warehouse stores for an evaluation event (view → view, cart → add_to_cart, …). */
export const KIND_OF: Readonly<Record<EventType, InteractionKind>> = {
  view: "view",
  cart: "add_to_cart",
  purchase: "purchase",
};
export const weightOf = (e: SessionEvent): number => AFFINITY_WEIGHTS[KIND_OF[e.type]];

export interface BatchParams {
  similar: SimilarParams;
  boughtTogether: BoughtTogetherParams;
  nextItems: NextItemsParams;
  popular: PopularParams;
  userCandidates: UserCandidatesParams;
}

export const BATCH_DEFAULTS: BatchParams = {
  similar: SIMILAR_DEFAULTS,
  boughtTogether: BOUGHT_TOGETHER_DEFAULTS,
  nextItems: NEXT_ITEMS_DEFAULTS,
  popular: POPULAR_DEFAULTS,
  userCandidates: USER_CANDIDATES_DEFAULTS,
};

export interface BatchModels {
  similar: Map<string, Scored[]>;
  boughtTogether: Map<string, Scored[]>;
  /** Sequential rules: product → what came after it (item_neighbors kind 'next'). */
  next: Map<string, Scored[]>;
  popular: Scored[];
  /** Normalised category → popular list. */
  popularByCategory: Map<string, Scored[]>;
  trending: Scored[];
}

type Pairs = Map<string, Map<string, number>>;
const bump = (m: Pairs, a: string, b: string, v: number) => {
  let row = m.get(a);
  if (!row) {
    row = new Map();
    m.set(a, row);
  }
  row.set(b, (row.get(b) ?? 0) + v);
};

/** Each product's `topK` neighbours by score, ties by neighbour id. */
function topNeighbours(scores: Pairs, topK: number, tie?: (a: string, b: string, x: string) => number) {
  const out = new Map<string, Scored[]>();
  for (const [a, row] of scores) {
    const list = [...row].sort((x, y) => y[1] - x[1] || (tie ? tie(a, x[0], y[0]) : 0) || compareIds(x[0], y[0]));
    out.set(
      a,
      list.slice(0, topK).map(([b, s]) => [b, s] as const),
    );
  }
  return out;
}

/**
 * similar — docs/recommenders.md#similar: interactions of the last windowDays with a positive weight; visits
 * split at a sessionGapMinutes gap (the evaluation's sessions stand for visitors: a session-rec session or an
 * invoice is one visitor's data); per (visit, product) the strongest weight; a visit's products most recent first
 * (then by id), cut at maxItemsPerSession, visits of one product dropped; cosine of the products' visit vectors
 * for pairs met in ≥ minSessions visits; topK per product.
 */
export function computeSimilar(sessions: readonly Session[], asOf: number, p: SimilarParams): Map<string, Scored[]> {
  const from = asOf - p.windowDays * DAY;
  const visits: Array<Array<[string, number]>> = [];
  for (const s of sessions) {
    let visit = new Map<string, { w: number; last: number }>();
    let prev: number | null = null;
    const flush = () => {
      const items = [...visit].sort((a, b) => b[1].last - a[1].last || compareIds(a[0], b[0]));
      if (items.length >= 2) visits.push(items.slice(0, p.maxItemsPerSession).map(([id, v]) => [id, v.w]));
      visit = new Map();
    };
    for (const e of s.events) {
      const w = weightOf(e);
      if (e.time <= from || e.time > asOf || w <= 0) continue;
      if (prev !== null && e.time - prev > p.sessionGapMinutes * 60) flush();
      prev = e.time;
      const cur = visit.get(e.item);
      if (!cur) visit.set(e.item, { w, last: e.time });
      else {
        cur.w = Math.max(cur.w, w);
        cur.last = Math.max(cur.last, e.time);
      }
    }
    flush();
  }
  const norm2 = new Map<string, number>();
  const dot: Pairs = new Map();
  const met: Pairs = new Map();
  for (const v of visits) {
    for (const [id, w] of v) norm2.set(id, (norm2.get(id) ?? 0) + w * w);
    for (let i = 0; i < v.length; i++)
      for (let j = i + 1; j < v.length; j++) {
        const [a, wa] = v[i] as [string, number];
        const [b, wb] = v[j] as [string, number];
        const [x, y] = a < b ? [a, b] : [b, a];
        bump(dot, x, y, wa * wb);
        bump(met, x, y, 1);
      }
  }
  const scores: Pairs = new Map();
  for (const [a, row] of dot)
    for (const [b, d] of row) {
      if ((met.get(a)?.get(b) ?? 0) < p.minSessions) continue;
      const s = d / Math.sqrt((norm2.get(a) ?? 0) * (norm2.get(b) ?? 0));
      bump(scores, a, b, s);
      bump(scores, b, a, s);
    }
  return topNeighbours(scores, p.topK);
}

/**
 * bought_together — docs/recommenders.md#bought_together: purchases of the last windowDays; one basket per
 * (user, order): here per session (an invoice is one order); its first maxItemsPerBasket distinct products; for
 * pairs in ≥ minOrders baskets, confidence(a→b) = n(a,b)/n(a) and lift = n(a,b)·N/(n(a)·n(b)); kept when
 * lift ≥ minLift and confidence ≥ minConfidence; score = confidence; topK per product (ties: lift, then id).
 */
export function computeBoughtTogether(
  sessions: readonly Session[],
  asOf: number,
  p: BoughtTogetherParams,
): Map<string, Scored[]> {
  const from = asOf - p.windowDays * DAY;
  const baskets: string[][] = [];
  for (const s of sessions) {
    const items: string[] = [];
    const seen = new Set<string>();
    for (const e of s.events) {
      if (e.type !== "purchase" || e.time <= from || e.time > asOf || seen.has(e.item)) continue;
      seen.add(e.item);
      if (items.length < p.maxItemsPerBasket) items.push(e.item);
    }
    if (items.length > 0) baskets.push(items);
  }
  const n = baskets.length;
  const single = new Map<string, number>();
  const pairs: Pairs = new Map();
  for (const b of baskets) {
    for (const id of b) single.set(id, (single.get(id) ?? 0) + 1);
    for (let i = 0; i < b.length; i++)
      for (let j = i + 1; j < b.length; j++) {
        const [x, y] = (b[i] as string) < (b[j] as string) ? [b[i], b[j]] : [b[j], b[i]];
        bump(pairs, x as string, y as string, 1);
      }
  }
  const scores: Pairs = new Map();
  const lifts: Pairs = new Map();
  for (const [a, row] of pairs)
    for (const [b, nab] of row) {
      if (nab < p.minOrders) continue;
      const na = single.get(a) ?? 0;
      const nb = single.get(b) ?? 0;
      const lift = (nab * n) / (na * nb);
      if (lift < p.minLift) continue;
      for (const [x, y, nx] of [
        [a, b, na],
        [b, a, nb],
      ] as const) {
        const confidence = nab / nx;
        if (confidence < p.minConfidence) continue;
        bump(scores, x, y, confidence);
        bump(lifts, x, y, lift);
      }
    }
  return topNeighbours(scores, p.topK, (a, x, y) => (lifts.get(a)?.get(y) ?? 0) - (lifts.get(a)?.get(x) ?? 0));
}

/**
 * popular and trending — docs/recommenders.md#popular-and-trending, segments global and category:<c> (countries
 * are not used by the ranking core): popular = Σ trend weight over popularDays; trending = (recent + prior) /
 * (baseline scaled to the recent window + prior), recent ≥ minRecent and trend > 1; topK each.
 */
export function computePopular(
  sessions: readonly Session[],
  asOf: number,
  p: PopularParams,
  categoryOf: (id: string) => string | null,
): Pick<BatchModels, "popular" | "popularByCategory" | "trending"> {
  const popular = new Map<string, number>();
  const recent = new Map<string, number>();
  const baseline = new Map<string, number>();
  const recentFrom = asOf - p.recentHours * 3600;
  const baselineFrom = recentFrom - p.baselineDays * DAY;
  const popularFrom = asOf - p.popularDays * DAY;
  for (const s of sessions)
    for (const e of s.events) {
      if (e.time > asOf) continue;
      const w = TREND_WEIGHTS[KIND_OF[e.type]];
      if (w <= 0) continue;
      if (e.time > popularFrom) popular.set(e.item, (popular.get(e.item) ?? 0) + w);
      if (e.time > recentFrom) recent.set(e.item, (recent.get(e.item) ?? 0) + w);
      else if (e.time > baselineFrom) baseline.set(e.item, (baseline.get(e.item) ?? 0) + w);
    }
  const best = (m: Map<string, number>, k: number): Scored[] =>
    [...m]
      .sort((a, b) => b[1] - a[1] || compareIds(a[0], b[0]))
      .slice(0, k)
      .map(([id, s]) => [id, s] as const);
  const byCategory = new Map<string, Map<string, number>>();
  for (const [id, s] of popular) {
    const c = categoryOf(id);
    if (!c) continue;
    let m = byCategory.get(c);
    if (!m) {
      m = new Map();
      byCategory.set(c, m);
    }
    m.set(id, s);
  }
  const scale = p.recentHours / (p.baselineDays * 24);
  const trend = new Map<string, number>();
  for (const [id, r] of recent) {
    if (r < p.minRecent) continue;
    const t = (r + p.prior) / ((baseline.get(id) ?? 0) * scale + p.prior);
    if (t > 1) trend.set(id, t);
  }
  return {
    popular: best(popular, p.topK),
    popularByCategory: new Map([...byCategory].map(([c, m]) => [c, best(m, p.topK)])),
    trending: best(trend, p.topK),
  };
}

export function computeModels(
  sessions: readonly Session[],
  asOf: number,
  params: BatchParams,
  categoryOf: (id: string) => string | null,
): BatchModels {
  return {
    similar: computeSimilar(sessions, asOf, params.similar),
    boughtTogether: computeBoughtTogether(sessions, asOf, params.boughtTogether),
    next: computeNextItems(sessions, asOf, params.nextItems),
    ...computePopular(sessions, asOf, params.popular, categoryOf),
  };
}

/** One entry of a user's list: reason as the SQL writes it (`similar_to:<id>`, …, `popular`, `bought_before`). */
export interface Candidate {
  productId: string;
  score: number;
  reason?: string | null;
}

/**
 * user_candidates — docs/recommenders.md#user_candidates, for one user from their events up to asOf: history =
 * the historyItems most recent distinct products of the last windowDays (weight: strongest interaction ×
 * 0.5^(age of the latest / halfLifeDays)), no candidates below minHistoryItems; neighbours, category popular and
 * popular fallback contributions summed, the reason the biggest contribution's (ties: the smaller reason);
 * ever-purchased products left out; popular-only products kept in the first fillTo places; topN. Then the
 * buy-again entries appended (buyAgain below), whether there are candidates or not.
 */
export function userCandidates(
  events: readonly SessionEvent[],
  asOf: number,
  models: BatchModels,
  p: UserCandidatesParams,
  categoryOf: (id: string) => string | null,
): Candidate[] {
  return [...listCandidates(events, asOf, models, p, categoryOf), ...buyAgain(events, asOf, p)];
}

function listCandidates(
  events: readonly SessionEvent[],
  asOf: number,
  models: BatchModels,
  p: UserCandidatesParams,
  categoryOf: (id: string) => string | null,
): Candidate[] {
  const from = asOf - p.windowDays * DAY;
  const agg = new Map<string, { w: number; last: number }>();
  const purchased = new Set<string>();
  for (const e of events) {
    if (e.time > asOf) continue;
    if (e.type === "purchase") purchased.add(e.item);
    const w = weightOf(e);
    if (e.time <= from || w <= 0) continue;
    const cur = agg.get(e.item);
    if (!cur) agg.set(e.item, { w, last: e.time });
    else {
      cur.w = Math.max(cur.w, w);
      cur.last = Math.max(cur.last, e.time);
    }
  }
  const history = [...agg]
    .sort((a, b) => b[1].last - a[1].last || compareIds(a[0], b[0]))
    .slice(0, p.historyItems)
    .map(([id, v]) => ({ id, w: v.w * 0.5 ** ((asOf - v.last) / (p.halfLifeDays * DAY)) }));
  if (history.length < p.minHistoryItems) return [];
  const hits = new Map<string, { score: number; best: number; reason: string }>();
  const hit = (id: string, s: number, reason: string) => {
    const cur = hits.get(id);
    if (!cur) hits.set(id, { score: s, best: s, reason });
    else {
      cur.score += s;
      if (s > cur.best || (s === cur.best && reason < cur.reason)) {
        cur.best = s;
        cur.reason = reason;
      }
    }
  };
  for (const h of history) {
    for (const [id, s] of (models.similar.get(h.id) ?? []).slice(0, p.neighborsPerItem))
      hit(id, h.w * s * p.similarWeight, `similar_to:${h.id}`);
    for (const [id, s] of (models.boughtTogether.get(h.id) ?? []).slice(0, p.neighborsPerItem))
      hit(id, h.w * s * p.boughtTogetherWeight, `bought_together:${h.id}`);
  }
  const shares = new Map<string, number>();
  let total = 0;
  for (const h of history) {
    const c = categoryOf(h.id);
    total += h.w;
    if (c) shares.set(c, (shares.get(c) ?? 0) + h.w);
  }
  const top = [...shares].sort((a, b) => b[1] - a[1] || compareIds(a[0], b[0])).slice(0, p.topCategories);
  for (const [c, w] of top) {
    const list = (models.popularByCategory.get(c) ?? []).slice(0, p.categoryItems);
    const best = list[0]?.[1] ?? 0;
    if (best > 0) for (const [id, s] of list) hit(id, (p.categoryWeight * (w / total) * s) / best, `category:${c}`);
  }
  const pop = models.popular.slice(0, p.popularItems);
  const best = pop[0]?.[1] ?? 0;
  if (best > 0) for (const [id, s] of pop) hit(id, (p.popularWeight * s) / best, "popular");
  const ranked = [...hits]
    .filter(([id]) => !purchased.has(id))
    .sort((a, b) => b[1].score - a[1].score || compareIds(a[0], b[0]));
  const out: Candidate[] = [];
  ranked.forEach(([id, v], i) => {
    if (i < p.topN && (v.reason !== "popular" || i < p.fillTo))
      out.push({ productId: id, score: v.score, reason: v.reason });
  });
  return out;
}

/**
 * The buy-again entries of user_candidates: the user's purchases of the last buyAgainWindowDays, per product
 * Σ 0.5^(age / buyAgainHalfLifeDays) added smallest term first (as the SQL's ordered sum), the buyAgainItems best
 * (ties: id), reason `bought_before`.
 */
export function buyAgain(events: readonly SessionEvent[], asOf: number, p: UserCandidatesParams): Candidate[] {
  const from = asOf - p.buyAgainWindowDays * DAY;
  const terms = new Map<string, number[]>();
  for (const e of events) {
    if (e.type !== "purchase" || e.time <= from || e.time > asOf) continue;
    const list = terms.get(e.item) ?? [];
    list.push(0.5 ** ((asOf - e.time) / (p.buyAgainHalfLifeDays * DAY)));
    terms.set(e.item, list);
  }
  return [...terms]
    .map(([id, ds]) => [id, ds.sort((a, b) => a - b).reduce((sum, d) => sum + d, 0)] as const)
    .sort((a, b) => b[1] - a[1] || compareIds(a[0], b[0]))
    .slice(0, p.buyAgainItems)
    .map(([productId, score]) => ({ productId, score, reason: "bought_before" }));
}

/**
 * next items — docs/recommenders.md#next-items--sequential-rules: interactions of the last windowDays with a
 * positive weight; visits split at a sessionGapMinutes gap (a session stands for a visitor, as in computeSimilar);
 * a visit's events in order (the session's order: time, then file order — the warehouse's event_time, message_id,
 * position), every event kept, the visit's last maxEventsPerSession only; each pair of events x ≤ maxSteps apart
 * with different products adds 1/x to the rule earlier → later, summed as whole numbers (stepUnit(maxSteps) / x)
 * and divided once, as the SQL does; rules with score ≥ minScore, the topK per product (ties: id).
 */
export function computeNextItems(
  sessions: readonly Session[],
  asOf: number,
  p: NextItemsParams,
): Map<string, Scored[]> {
  checkNextItemsParams(p);
  const unit = stepUnit(p.maxSteps);
  const from = asOf - p.windowDays * DAY;
  const sums: Pairs = new Map();
  const pairs = (visit: string[]) => {
    const items = visit.slice(-p.maxEventsPerSession);
    for (let j = 1; j < items.length; j++)
      for (let i = Math.max(0, j - p.maxSteps); i < j; i++) {
        const a = items[i] as string;
        const b = items[j] as string;
        if (a !== b) bump(sums, a, b, unit / (j - i));
      }
  };
  for (const s of sessions) {
    let visit: string[] = [];
    let prev: number | null = null;
    for (const e of s.events) {
      if (e.time <= from || e.time > asOf || weightOf(e) <= 0) continue;
      if (prev !== null && e.time - prev > p.sessionGapMinutes * 60) {
        pairs(visit);
        visit = [];
      }
      prev = e.time;
      visit.push(e.item);
    }
    pairs(visit);
  }
  const scores: Pairs = new Map();
  for (const [a, row] of sums)
    for (const [b, w] of row) {
      const score = w / unit;
      if (score >= p.minScore) bump(scores, a, b, score);
    }
  return topNeighbours(scores, p.topK);
}

/** The next-items lists of `train` with the default parameters (or other maxSteps / topK). */
export function nextNeighbours(
  train: Pick<TrainData, "sessions" | "asOf">,
  maxSteps = NEXT_ITEMS_DEFAULTS.maxSteps,
  topK = NEXT_ITEMS_DEFAULTS.topK,
): Map<string, Scored[]> {
  return computeNextItems(train.sessions, train.asOf, { ...NEXT_ITEMS_DEFAULTS, maxSteps, topK });
}
