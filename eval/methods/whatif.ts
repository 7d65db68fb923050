// What-if variants, reported apart from the deployed methods (docs/relevance.md#what-if): they show what a
// candidate source the Worker does not have yet would add to the same `rank()`. Not part of any bar.
import type { Scored } from "../../src/rank/core.ts";
import type { Method, Query, TrainData } from "../method.ts";
import { compareIds } from "../metrics.ts";
import { RepeatPurchases } from "./baselines.ts";
import { BATCH_DEFAULTS, type BatchParams } from "./batch.ts";
import { LastmileModels, type LastmileRanker } from "./lastmile.ts";

/**
 * A "next item" neighbour list per product: sequential rules (an item q after p within `maxSteps` events adds 1/steps
 * to p → q, as the SR baseline), the `topK` best per product, ties by id — what a sequential batch recommender
 * would publish next to "similar" and "bought together".
 */
export function nextNeighbours(train: TrainData, maxSteps = 10, topK = 30): Map<string, Scored[]> {
  const rules = new Map<string, Map<string, number>>();
  for (const s of train.sessions) {
    const items = s.events.map((e) => e.item);
    for (let i = 0; i < items.length; i++)
      for (let x = 1; x <= maxSteps && i + x < items.length; x++) {
        const p = items[i] as string;
        const q = items[i + x] as string;
        if (p === q) continue;
        let row = rules.get(p);
        if (!row) {
          row = new Map();
          rules.set(p, row);
        }
        row.set(q, (row.get(q) ?? 0) + 1 / x);
      }
  }
  const out = new Map<string, Scored[]>();
  for (const [p, row] of rules)
    out.set(
      p,
      [...row]
        .sort((a, b) => b[1] - a[1] || compareIds(a[0], b[0]))
        .slice(0, topK)
        .map(([id, s]) => [id, s] as const),
    );
  return out;
}

/** Our batch lists with a sequential "next" list in the bought-together slot (the ranker blends both slots). */
export class SequentialModels extends LastmileModels {
  #seen: TrainData | null = null;
  constructor(params: BatchParams = BATCH_DEFAULTS) {
    super(params);
  }
  override fit(train: TrainData): void {
    super.fit(train);
    if (this.#seen === train || !this.models) return;
    this.#seen = train;
    this.models = { ...this.models, boughtTogether: nextNeighbours(train) };
  }
}

/** The merged ranker's list followed by re-scoring with the customer's repeat purchases (a "buy again" source). */
export class RankerWithRepeat implements Method {
  readonly name = "what-if: lastmile + buy again";
  readonly #ranker: LastmileRanker;
  readonly #repeat = new RepeatPurchases();
  /** Repeat items' share of the list's scale: repeat scores are scaled to [0, share]. */
  readonly share: number;
  constructor(ranker: LastmileRanker, share = 1) {
    this.#ranker = ranker;
    this.share = share;
  }
  fit(train: TrainData): void {
    this.#ranker.fit(train);
  }
  score(q: Query, k: number): Map<string, number> {
    const ranked = this.#ranker.score(q, k);
    const repeat = this.#repeat.score(q);
    const out = new Map<string, number>();
    let maxR = 0;
    for (const v of ranked.values()) maxR = Math.max(maxR, v);
    let maxP = 0;
    for (const v of repeat.values()) maxP = Math.max(maxP, v);
    for (const [id, v] of ranked) out.set(id, maxR > 0 ? v / maxR : 0);
    for (const [id, v] of repeat) out.set(id, (out.get(id) ?? 0) + (maxP > 0 ? (this.share * v) / maxP : 0));
    return out;
  }
}
