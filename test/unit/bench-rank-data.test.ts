// The rank suite's data (bench/lib/rank-data.ts). Re-rank bodies: the mix of candidates docs/benchmarks.md#rank gives
// per size, on the suite's proportions (a user with 50 published candidates, the runs' mean being 49.6; the global
// popular list of POPULAR_DEFAULTS.topK = 50 products; the UCI catalogue's 3,908 products). Cold measurements: docs/benchmarks.md#rank promises that each
// cold request asks a different user outside the warm pool, whose object nothing has asked since its session was
// recorded; the suite's nine cold measurements (3 endpoints × 1, 10, 50 connections) of 150 requests used to index
// `(offset + i) % pool` over 700 users, which wrapped into the warm pool (users 0–99 in cold.rank100.c10) and asked
// users of earlier cold measurements again.
import { describe, expect, it } from "vitest";
import { type BenchUser, candidatesFor, coldSeries, type StoreData } from "../../bench/lib/rank-data.ts";
import { POPULAR_DEFAULTS } from "../../src/batch/recommenders/popular.ts";
import type { Product } from "../../src/rank/catalog.ts";
import type { Scored } from "../../src/rank/core.ts";

const WARM = 200;
const SERIES = 9;

/** Every user the cold measurements ask, in order, with the measurement asking it. */
function asked(series: ReturnType<typeof coldSeries>): Array<[number, number]> {
  return series.flatMap((s, k) => Array.from({ length: s.requests }, (_, i) => [k, s.user(i)] as [number, number]));
}

describe("coldSeries: the users of the rank suite's cold measurements", () => {
  it("with users for all of them: 150 requests each, every one a user of its own outside the warm pool", () => {
    const users = WARM + SERIES * 150;
    const series = coldSeries(users, WARM, SERIES, 150);
    expect(series).toHaveLength(SERIES);
    expect(series.every((s) => s.requests === 150)).toBe(true);
    const all = asked(series).map(([, u]) => u);
    expect(all).toHaveLength(SERIES * 150);
    expect(new Set(all).size).toBe(all.length);
    expect(Math.min(...all)).toBe(WARM);
    expect(Math.max(...all)).toBe(users - 1);
  });

  for (const users of [700, 1_373]) {
    it(`with ${users} users: fewer requests each, still no user shared with the warm pool or another measurement`, () => {
      const series = coldSeries(users, WARM, SERIES, 150);
      const per = Math.floor((users - WARM) / SERIES);
      expect(series.every((s) => s.requests === per)).toBe(true);
      const all = asked(series).map(([, u]) => u);
      expect(new Set(all).size).toBe(SERIES * per);
      expect(all.every((u) => u >= WARM && u < users)).toBe(true);
    });
  }

  it("a measurement taken again (its count going on) asks its own users again, never another's", () => {
    const series = coldSeries(WARM + SERIES * 150, WARM, SERIES, 150);
    for (const [k, s] of series.entries()) {
      const own = new Set(Array.from({ length: s.requests }, (_, i) => s.user(i)));
      for (let i = s.requests; i < 3 * s.requests; i++)
        expect(own.has(s.user(i)), `series ${k}, request ${i}`).toBe(true);
    }
  });

  it("refuses a pool with no user left for a cold measurement", () => {
    expect(() => coldSeries(WARM + SERIES - 1, WARM, SERIES, 150)).toThrow(/cold measurements/);
    expect(coldSeries(WARM + SERIES, WARM, SERIES, 150).map((s) => s.user(0))).toEqual(
      Array.from({ length: SERIES }, (_, k) => WARM + k),
    );
  });
});

describe("candidatesFor: the documented mix of a re-rank body", () => {
  const PRODUCTS = 3_908;
  const store = (batchLength: number): { data: StoreData; user: BenchUser } => {
    const products = new Map<string, Product>();
    for (let i = 0; i < PRODUCTS; i++) products.set(`p${i}`, {} as Product);
    const user = {
      userKey: "u:1",
      userId: "1",
      viewed: [],
      carted: "p0",
      query: "gift",
      batch: Array.from({ length: batchLength }, (_, i) => ({ productId: `p${1000 + i}`, score: 1 - i / 100 })),
      purchasedCategories: [],
    } as BenchUser;
    const popular = Array.from({ length: POPULAR_DEFAULTS.topK }, (_, i): Scored => [`p${100 + i}`, 1 - i / 100]);
    return {
      data: {
        products,
        popular,
        trending: [],
        popularByCategory: new Map(),
        users: [user],
      },
      user,
    };
  };
  /** How many of a body's candidates come from the user's batch list, the popular list (not also in the batch list), the rest. */
  const mix = (batchLength: number, n: number) => {
    const { data, user } = store(batchLength);
    const list = candidatesFor(data, user, n, 1);
    expect(list).toHaveLength(n);
    expect(new Set(list.map((c) => c.productId)).size).toBe(n);
    const batch = new Set(user.batch.map((b) => b.productId));
    const popular = new Set(data.popular.map(([id]) => id));
    const fromBatch = list.filter((c) => batch.has(c.productId)).length;
    const fromPopular = list.filter((c) => popular.has(c.productId) && !batch.has(c.productId)).length;
    return { fromBatch, fromPopular, catalogue: n - fromBatch - fromPopular };
  };

  it("100 candidates: a quarter from the batch list, a quarter popular, half from the catalogue", () => {
    const m = mix(50, 100);
    // The catalogue draws may hit the lists' other products: a few more than a quarter, never fewer.
    expect(m.fromBatch).toBeGreaterThanOrEqual(25);
    expect(m.fromBatch).toBeLessThanOrEqual(28);
    expect(m.fromPopular).toBeGreaterThanOrEqual(25);
    expect(m.fromPopular).toBeLessThanOrEqual(28);
    expect(m.catalogue).toBeGreaterThanOrEqual(44);
  });

  it("100 candidates for a user with a short batch list: all of it, and popular products up to half", () => {
    expect(mix(10, 100)).toEqual({ fromBatch: 10, fromPopular: 40, catalogue: 50 });
  });

  it("1,000 candidates: the whole batch list and the whole popular list (~5 % each), ~90 % from the catalogue", () => {
    expect(mix(50, 1000)).toEqual({ fromBatch: 50, fromPopular: 50, catalogue: 900 });
  });
});
