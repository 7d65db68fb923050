// The evaluation's metrics (eval/metrics.ts) on cases worked out by hand in the comments.
import { describe, expect, it } from "vitest";
import {
  NextItemMetrics,
  NextPurchaseMetrics,
  ndcgAt,
  OttoMetric,
  rankOf,
  recallAt,
  topK,
} from "../../eval/metrics.ts";

const universe = ["a", "b", "c", "d", "e"];
const index = new Map(universe.map((id, i) => [id, i]));

describe("ranking with the fixed tie order", () => {
  const scores = new Map([
    ["a", 1],
    ["c", 3],
    ["b", 3],
    ["e", 0],
  ]);
  it("orders by score, then id, then fills with unscored items in id order", () => {
    // b and c tie at 3 (b first by id), then a; d and e are unscored (e's 0 does not count) and fill in id order.
    expect(topK(scores, 4, universe)).toEqual(["b", "c", "a", "d"]);
    expect(topK(scores, 2, universe)).toEqual(["b", "c"]);
  });
  it("gives the same rank as the list, over the whole universe", () => {
    expect(rankOf("b", scores, index)).toBe(1);
    expect(rankOf("c", scores, index)).toBe(2);
    expect(rankOf("a", scores, index)).toBe(3);
    // Unscored: after the 3 scored items, d is the first unscored, e the second.
    expect(rankOf("d", scores, index)).toBe(4);
    expect(rankOf("e", scores, index)).toBe(5);
    expect(rankOf("z", scores, index)).toBeNull();
    const full = topK(scores, universe.length, universe);
    for (const id of universe) expect(rankOf(id, scores, index)).toBe(full.indexOf(id) + 1);
  });
});

describe("HR@20 and MRR@20", () => {
  it("counts a hit inside the top 20 and 1/rank, 0 outside, a miss for an unknown target", () => {
    const m = new NextItemMetrics(20);
    for (const r of [1, 4, 25, null]) m.add(r);
    // hits: ranks 1 and 4 → 2/4; MRR = (1 + 1/4 + 0 + 0) / 4 = 0.3125.
    expect(m.result()).toEqual({ predictions: 4, hr: 0.5, mrr: 0.3125 });
    m.add(20);
    expect(m.result().hr).toBeCloseTo(3 / 5, 12);
    expect(m.result().mrr).toBeCloseTo((1.25 + 0.05) / 5, 12);
  });
});

describe("Recall@20 and NDCG@20", () => {
  const relevant = new Set(["a", "b", "c"]);
  const list = ["x", "a", "y", "b"];
  it("recall is the share of the relevant items in the top k", () => {
    expect(recallAt(list, relevant, 20)).toBeCloseTo(2 / 3, 12);
    expect(recallAt(list, relevant, 2)).toBeCloseTo(1 / 3, 12);
  });
  it("NDCG has binary gains and the ideal of min(k, |relevant|) hits", () => {
    // DCG = 1/log2(3) + 1/log2(5) = 0.630930 + 0.430677 = 1.061606; IDCG = 1 + 0.630930 + 0.5 = 2.130930.
    expect(ndcgAt(list, relevant, 20)).toBeCloseTo(1.061606 / 2.13093, 5);
    expect(ndcgAt(["a", "b", "c"], relevant, 20)).toBeCloseTo(1, 12);
    // k = 2: DCG = 1/log2(3); IDCG = 1 + 1/log2(3).
    expect(ndcgAt(list, relevant, 2)).toBeCloseTo(0.63093 / 1.63093, 5);
  });
  it("averages per customer", () => {
    const m = new NextPurchaseMetrics(20);
    m.add(["a"], new Set(["a", "b"]));
    m.add(["z"], new Set(["a"]));
    // recall (1/2 + 0)/2; NDCG (1/(1 + 1/log2 3) + 0)/2.
    expect(m.result().recall).toBeCloseTo(0.25, 12);
    expect(m.result().ndcg).toBeCloseTo(1 / 1.63093 / 2, 5);
    expect(m.result().users).toBe(2);
  });
});

describe("the OTTO metric", () => {
  it("sums hits over sessions per type, divides by Σ min(20, |truth|), weights 0.1 / 0.3 / 0.6", () => {
    const m = new OttoMetric();
    const list = ["a", "c"];
    m.add(
      { clicks: list, carts: list, orders: list },
      { clicks: "a", carts: new Set(["b", "c"]), orders: new Set(["c"]) },
    );
    // No click truth: the session does not count for clicks; orders 0 of 2.
    m.add(
      { clicks: ["x"], carts: ["x"], orders: ["x"] },
      { clicks: null, carts: new Set(), orders: new Set(["d", "e"]) },
    );
    const r = m.result();
    // clicks 1/1, carts 1/2, orders 1/3 → 0.1 + 0.15 + 0.2 = 0.45.
    expect(r.clicks).toBe(1);
    expect(r.carts).toBe(0.5);
    expect(r.orders).toBeCloseTo(1 / 3, 12);
    expect(r.score).toBeCloseTo(0.45, 12);
  });
  it("caps a session's truth at 20 items", () => {
    const m = new OttoMetric();
    const many = Array.from({ length: 25 }, (_, i) => `i${i}`);
    m.add({ clicks: [], carts: many, orders: [] }, { clicks: null, carts: new Set(many), orders: new Set() });
    // Only the top 20 are read: 20 hits of min(20, 25) = 20.
    expect(m.result().carts).toBe(1);
    expect(m.result().score).toBeCloseTo(0.3, 12);
  });
});
