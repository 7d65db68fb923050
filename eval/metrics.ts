// Ranking metrics (docs/relevance.md#protocols). Pure.

/** The fixed tie order: items compared by id in code-unit order (a method's equal scores never depend on it). */
export const compareIds = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

/**
 * The top `k` items: scored items by score (higher first, ties by id), then — when fewer than k have a positive
 * score — the unscored items of `universe` in id order (`universe` must be sorted by id). Non-positive scores
 * count as unscored.
 */
export function topK(scores: ReadonlyMap<string, number>, k: number, universe: readonly string[]): string[] {
  const scored: Array<[string, number]> = [];
  for (const [id, s] of scores) if (s > 0) scored.push([id, s]);
  scored.sort((a, b) => b[1] - a[1] || compareIds(a[0], b[0]));
  const out = scored.slice(0, k).map(([id]) => id);
  if (out.length < k) {
    const taken = new Set(out);
    for (const id of universe) {
      if (out.length >= k) break;
      if (!taken.has(id) && !((scores.get(id) ?? 0) > 0)) {
        out.push(id);
        taken.add(id);
      }
    }
  }
  return out;
}

/** 1-based rank of `target` in the order topK uses over the whole universe; null when it is not in `universe`. */
export function rankOf(
  target: string,
  scores: ReadonlyMap<string, number>,
  universeIndex: ReadonlyMap<string, number>,
): number | null {
  const at = universeIndex.get(target);
  if (at === undefined) return null;
  const t = scores.get(target) ?? 0;
  let before = 0;
  if (t > 0) {
    for (const [id, s] of scores) if (s > t || (s === t && compareIds(id, target) < 0)) before++;
    return before + 1;
  }
  // Unscored: after every positively scored item, then in id order among the unscored ones.
  let scoredBelow = 0;
  for (const [id, s] of scores) {
    if (!(s > 0)) continue;
    before++;
    const i = universeIndex.get(id);
    if (i !== undefined && i < at) scoredBelow++;
  }
  return before + (at - scoredBelow) + 1;
}

/** HR@k and MRR@k over next-item predictions (protocol i). */
export class NextItemMetrics {
  readonly k: number;
  predictions = 0;
  hits = 0;
  reciprocal = 0;
  constructor(k = 20) {
    this.k = k;
  }
  /** `rank`: 1-based, null when the target cannot be ranked (not in the universe): a miss. */
  add(rank: number | null): void {
    this.predictions++;
    if (rank !== null && rank <= this.k) {
      this.hits++;
      this.reciprocal += 1 / rank;
    }
  }
  result(): { predictions: number; hr: number; mrr: number } {
    const n = this.predictions;
    return { predictions: n, hr: n > 0 ? this.hits / n : 0, mrr: n > 0 ? this.reciprocal / n : 0 };
  }
}

/** Recall@k = |top-k ∩ relevant| / |relevant|. */
export function recallAt(list: readonly string[], relevant: ReadonlySet<string>, k: number): number {
  if (relevant.size === 0) return 0;
  let hit = 0;
  for (const id of list.slice(0, k)) if (relevant.has(id)) hit++;
  return hit / relevant.size;
}

/** NDCG@k with binary gains: Σ_{hits at rank r} 1/log2(r+1) ÷ the ideal Σ_{r=1..min(k,|relevant|)} 1/log2(r+1). */
export function ndcgAt(list: readonly string[], relevant: ReadonlySet<string>, k: number): number {
  if (relevant.size === 0) return 0;
  let dcg = 0;
  list.slice(0, k).forEach((id, i) => {
    if (relevant.has(id)) dcg += 1 / Math.log2(i + 2);
  });
  let ideal = 0;
  for (let i = 0; i < Math.min(k, relevant.size); i++) ideal += 1 / Math.log2(i + 2);
  return dcg / ideal;
}

/** Mean Recall@k and NDCG@k per customer (protocol ii). */
export class NextPurchaseMetrics {
  readonly k: number;
  users = 0;
  recall = 0;
  ndcg = 0;
  constructor(k = 20) {
    this.k = k;
  }
  add(list: readonly string[], relevant: ReadonlySet<string>): void {
    this.users++;
    this.recall += recallAt(list, relevant, this.k);
    this.ndcg += ndcgAt(list, relevant, this.k);
  }
  result(): { users: number; recall: number; ndcg: number } {
    const n = this.users;
    return { users: n, recall: n > 0 ? this.recall / n : 0, ndcg: n > 0 ? this.ndcg / n : 0 };
  }
}

/** The OTTO competition's weights per event type. */
export const OTTO_WEIGHTS = { clicks: 0.1, carts: 0.3, orders: 0.6 } as const;
export type OttoType = keyof typeof OTTO_WEIGHTS;

/** What a truncated OTTO session must predict: the next click, and the carts and orders after the cut. */
export interface OttoTruth {
  clicks: string | null;
  carts: ReadonlySet<string>;
  orders: ReadonlySet<string>;
}

/**
 * The OTTO metric: per type, recall = Σ_sessions |top-20 ∩ truth| / Σ_sessions min(20, |truth|) over the sessions
 * that have a truth of that type (clicks: the one next click); score = 0.10·R_clicks + 0.30·R_carts + 0.60·R_orders.
 * A type no session has counts 0.
 */
export class OttoMetric {
  readonly k = 20;
  readonly #hits: Record<OttoType, number> = { clicks: 0, carts: 0, orders: 0 };
  readonly #relevant: Record<OttoType, number> = { clicks: 0, carts: 0, orders: 0 };
  sessions = 0;

  /** `predictions`: the method's top-20 (each type may have its own list). */
  add(predictions: Readonly<Record<OttoType, readonly string[]>>, truth: OttoTruth): void {
    this.sessions++;
    const sets: Record<OttoType, ReadonlySet<string>> = {
      clicks: new Set(truth.clicks === null ? [] : [truth.clicks]),
      carts: truth.carts,
      orders: truth.orders,
    };
    for (const type of Object.keys(OTTO_WEIGHTS) as OttoType[]) {
      const gt = sets[type];
      if (gt.size === 0) continue;
      const top = new Set(predictions[type].slice(0, this.k));
      let hit = 0;
      for (const id of gt) if (top.has(id)) hit++;
      this.#hits[type] += hit;
      this.#relevant[type] += Math.min(this.k, gt.size);
    }
  }

  result(): { sessions: number; clicks: number; carts: number; orders: number; score: number } {
    const r = (t: OttoType) => (this.#relevant[t] > 0 ? this.#hits[t] / this.#relevant[t] : 0);
    const clicks = r("clicks");
    const carts = r("carts");
    const orders = r("orders");
    return {
      sessions: this.sessions,
      clicks,
      carts,
      orders,
      score: OTTO_WEIGHTS.clicks * clicks + OTTO_WEIGHTS.carts * carts + OTTO_WEIGHTS.orders * orders,
    };
  }
}
