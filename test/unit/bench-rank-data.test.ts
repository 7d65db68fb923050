// The rank suite's data (bench/lib/rank-data.ts). Cold measurements: docs/benchmarks.md#rank promises that each
// cold request asks a different user outside the warm pool, whose object nothing has asked since its session was
// recorded; the suite's nine cold measurements (3 endpoints × 1, 10, 50 connections) of 150 requests used to index
// `(offset + i) % pool` over 700 users, which wrapped into the warm pool (users 0–99 in cold.rank100.c10) and asked
// users of earlier cold measurements again.
import { describe, expect, it } from "vitest";
import { coldSeries } from "../../bench/lib/rank-data.ts";

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
