// The order of a ranked list: score descending at the answer's precision (six decimals), ties by product id — the
// contract docs/ranking.md states, checked on a hand-built case and on large random re-ranks against a plain
// comparator written here from that contract.
import { describe, expect, it } from "vitest";
import { mulberry32 } from "../../scripts/lib/prng.ts";
import { DEFAULT_RANKING_CONFIG } from "../../src/rank/config.ts";
import { type RankInput, rank } from "../../src/rank/core.ts";

function rerank(candidates: Array<{ productId: string; score?: number }>): RankInput {
  return {
    placement: "rerank",
    mode: "rerank",
    limit: candidates.length,
    now: 0,
    context: [],
    query: null,
    filters: {},
    session: null,
    batch: null,
    similar: new Map(),
    boughtTogether: new Map(),
    trending: null,
    popular: null,
    popularByCategory: () => undefined,
    candidates,
    catalog: () => undefined,
  };
}

describe("the order of a list", () => {
  it("treats scores equal at six decimals as a tie, broken by id", () => {
    // base = (score − min) / (max − min): b 1, a 1 − 1e-9 (shown as 1 as well), c 0.
    const out = rank(
      rerank([
        { productId: "b", score: 1 },
        { productId: "a", score: 1 - 1e-9 },
        { productId: "c", score: 0 },
      ]),
      DEFAULT_RANKING_CONFIG,
    );
    expect(out.items.map((i) => i.productId)).toEqual(["a", "b", "c"]);
    expect(out.items.map((i) => i.score)).toEqual([1, 1, 0]);
  });

  it("orders 1,000 random candidates (many ties) exactly as the contract says", () => {
    for (const seed of [1, 2, 3]) {
      const next = mulberry32(seed);
      const candidates = Array.from({ length: 1000 }, (_, i) => ({
        productId: `p${Math.floor(next() * 1e6)}-${i}`,
        // Few distinct values: many exact ties.
        score: Math.floor(next() * 50),
      }));
      const out = rank(rerank(candidates), DEFAULT_RANKING_CONFIG).items;
      expect(out).toHaveLength(1000);
      const expected = [...out].sort(
        (x, y) => Math.round(y.score * 1e6) - Math.round(x.score * 1e6) || (x.productId < y.productId ? -1 : 1),
      );
      expect(out.map((i) => i.productId)).toEqual(expected.map((i) => i.productId));
      // And the scores are the caller's order: base score min-max scaled (max 49 → 1).
      const byId = new Map(candidates.map((c) => [c.productId, c.score]));
      for (const item of out) expect(item.score).toBeCloseTo((byId.get(item.productId) ?? 0) / 49, 6);
    }
  });
});
