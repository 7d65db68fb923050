// How many lanes a compute runs, and so in how many parts user_candidates stages its lists: a part count of zero
// would stage nothing and let the swap replace every list with none.
import { describe, expect, it } from "vitest";
import { COMPUTE_LANES, laneCount } from "../../src/batch/compute.ts";

describe("laneCount", () => {
  it("takes a whole number of at least one", () => {
    expect(laneCount(1)).toBe(1);
    expect(laneCount(3)).toBe(3);
  });

  it("falls back to COMPUTE_LANES for anything else", () => {
    expect(COMPUTE_LANES).toBeGreaterThanOrEqual(1);
    for (const lanes of [undefined, 0, -2, 1.5, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 60]) {
      expect(laneCount(lanes)).toBe(COMPUTE_LANES);
    }
  });
});
