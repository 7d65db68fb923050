// The report's statistics (src/experiments/stats.ts) on small examples worked out by hand in the comments, and the
// distribution functions against published tables: the chi-square table's critical values (e.g. NIST/SEMATECH
// e-Handbook of Statistical Methods, §1.3.6.7.4), the standard normal table, exact factorials, and closed forms
// (χ² with 2 degrees of freedom: P(χ² ≥ x) = e^(−x/2); with 4: e^(−x/2)(1 + x/2)).
import { describe, expect, it } from "vitest";
import { parseExperiments } from "../../src/experiments/config.ts";
import { type ArmCounts, buildReport, REPORT_DEFAULTS } from "../../src/experiments/report.ts";
import {
  binomialTwoSidedP,
  chiSquareGoodnessOfFit,
  chiSquareIndependence,
  chiSquareSurvival,
  chiSquareUniform,
  logGamma,
  meanDifference,
  meanEstimate,
  normalTwoSidedP,
  proportion,
  proportionDifference,
  ratioDifference,
  ratioEstimate,
  regularizedGammaQ,
  sampleRatioMismatch,
  summarize,
  Z95,
} from "../../src/experiments/stats.ts";

/** |actual − expected| ≤ tolerance. */
const near = (actual: number, expected: number, tolerance: number) =>
  expect(Math.abs(actual - expected), `${actual} vs ${expected}`).toBeLessThanOrEqual(tolerance);

describe("distribution functions", () => {
  it("logGamma: ln of factorials and of Γ(1/2) = √π", () => {
    near(logGamma(1), 0, 1e-14);
    near(logGamma(10), Math.log(362_880), 1e-12); // 9!
    near(logGamma(21), Math.log(2_432_902_008_176_640_000), 1e-12); // 20!
    near(logGamma(0.5), Math.log(Math.sqrt(Math.PI)), 1e-13);
    near(logGamma(101), 363.73937555556347, 1e-9); // ln 100! (Stirling series: 363.739375555563…)
  });

  it("chi-square survival: the table's critical values", () => {
    // χ² table, upper-tail probabilities 0.05 / 0.01 / 0.001. The table rounds χ² to three decimals, which moves
    // p by at most density × 0.0005 ≈ 1.5e-5 (df 1 at 3.841): tolerances of 5e-5 and, for p = 0.001, 5e-6.
    near(chiSquareSurvival(3.841, 1), 0.05, 5e-5);
    near(chiSquareSurvival(6.635, 1), 0.01, 5e-5);
    near(chiSquareSurvival(10.828, 1), 0.001, 5e-6);
    near(chiSquareSurvival(5.991, 2), 0.05, 5e-5);
    near(chiSquareSurvival(9.21, 2), 0.01, 5e-5);
    near(chiSquareSurvival(13.816, 2), 0.001, 5e-6);
    near(chiSquareSurvival(7.815, 3), 0.05, 5e-5);
    near(chiSquareSurvival(16.266, 3), 0.001, 5e-6);
    near(chiSquareSurvival(27.877, 9), 0.001, 5e-6);
    near(chiSquareSurvival(18.307, 10), 0.05, 5e-5);
    near(chiSquareSurvival(124.342, 100), 0.05, 5e-5);
  });

  it("chi-square survival: closed forms for df 2 and 4, and the edges", () => {
    for (const x of [0.1, 1, 5.991, 20, 80]) {
      near(chiSquareSurvival(x, 2), Math.exp(-x / 2), 1e-14);
      near(chiSquareSurvival(x, 4), Math.exp(-x / 2) * (1 + x / 2), 1e-14);
    }
    expect(chiSquareSurvival(0, 3)).toBe(1);
    expect(chiSquareSurvival(Number.POSITIVE_INFINITY, 3)).toBe(0);
    near(regularizedGammaQ(1, 2), Math.exp(-2), 1e-15); // Q(1, x) = e^(−x)
    expect(() => chiSquareSurvival(1, 0)).toThrow(RangeError);
  });

  it("normal two-sided p-values: 1.96 → 0.05, 2.576 → 0.01, 3.291 → 0.001", () => {
    near(normalTwoSidedP(Z95), 0.05, 1e-12); // Z95 = Φ⁻¹(0.975) to 16 digits
    near(normalTwoSidedP(1.96), 0.05, 5e-5);
    near(normalTwoSidedP(-2.576), 0.01, 5e-5);
    near(normalTwoSidedP(3.291), 0.001, 5e-6);
    expect(normalTwoSidedP(0)).toBe(1);
  });

  it("the sign test: exact binomial tails", () => {
    near(binomialTwoSidedP(0, 5), 2 / 32, 1e-15); // 2 · C(5,0)/2^5
    near(binomialTwoSidedP(1, 10), 22 / 1024, 1e-15); // 2 · (1 + 10)/2^10
    near(binomialTwoSidedP(9, 10), 22 / 1024, 1e-15); // the same split seen from the other side
    near(binomialTwoSidedP(2, 10), 112 / 1024, 1e-15); // 2 · (1 + 10 + 45)/2^10
    expect(binomialTwoSidedP(5, 10)).toBe(1);
    expect(binomialTwoSidedP(4, 9)).toBe(1); // 2 · P(X ≤ 4) = 2 · 256/512
    expect(binomialTwoSidedP(0, 0)).toBe(1);
    // Large n against the normal approximation with continuity correction: 4,900 of 10,000 →
    // z = (4,900.5 − 5,000)/50 = −1.99, two-sided 2 · (1 − Φ(1.99)) = 2 · 0.02330 = 0.0466 (normal table).
    near(binomialTwoSidedP(4900, 10_000), 0.0466, 5e-4);
    expect(() => binomialTwoSidedP(11, 10)).toThrow(RangeError);
  });
});

describe("proportions", () => {
  it("30/100 with its Wilson 95 % interval [0.2189, 0.3958]", () => {
    // p = 0.3, z² = 3.8415, z²/n = 0.038415. Centre (0.3 + 0.019207)/1.038415 = 0.307398; half-width
    // 1.959964/1.038415 · √(0.3 · 0.7/100 + 3.8415/40,000) = 1.887456 · √0.00219604 = 1.887456 · 0.046862 = 0.088450.
    const p = proportion(30, 100);
    expect(p.rate).toBe(0.3);
    near(p.low, 0.307398 - 0.08845, 2e-5);
    near(p.high, 0.307398 + 0.08845, 2e-5);
    near(p.low, 0.2189, 5e-5);
    near(p.high, 0.3958, 5e-5);
  });

  it("0 and all successes: the Wilson bounds z²/(n + z²) and n/(n + z²)", () => {
    // 0/10: [0, 3.8415/13.8415] = [0, 0.27753]; 10/10: [10/13.8415, 1] = [0.72247, 1].
    const zero = proportion(0, 10);
    expect(zero.low).toBe(0);
    near(zero.high, (Z95 * Z95) / (10 + Z95 * Z95), 1e-12);
    near(zero.high, 0.27753, 1e-5);
    const all = proportion(10, 10);
    near(all.low, 10 / (10 + Z95 * Z95), 1e-12);
    expect(all.high).toBe(1);
    expect(proportion(0, 0)).toEqual({ successes: 0, trials: 0, rate: 0, low: 0, high: 1 });
    expect(() => proportion(3, 2)).toThrow(RangeError);
    expect(() => proportion(1.5, 2)).toThrow(RangeError);
  });

  it("45/100 − 30/100: difference 0.15, unpooled 95 % interval [0.0174, 0.2826], lift +50 %", () => {
    // SE = √(0.45 · 0.55/100 + 0.3 · 0.7/100) = √(0.002475 + 0.0021) = √0.004575 = 0.067639;
    // half-width 1.959964 · 0.067639 = 0.132569; lift 0.15/0.3 = 0.5.
    // z = 0.15/0.067639 = 2.2177 → two-sided p = 2 · (1 − Φ(2.2177)) ≈ 2 · 0.01329 = 0.0266 (normal table).
    const d = proportionDifference({ successes: 45, trials: 100 }, { successes: 30, trials: 100 });
    near(d.difference, 0.15, 1e-12);
    near(d.se, 0.067639, 1e-6);
    near(d.low as number, 0.15 - 0.132569, 1e-6);
    near(d.high as number, 0.15 + 0.132569, 1e-6);
    near(d.relativeLift as number, 0.5, 1e-12);
    near(d.pValue as number, 0.0266, 2e-4);
  });

  it("no lift against a zero control, no p-value for two identical degenerate arms, refuses empty arms", () => {
    const d = proportionDifference({ successes: 5, trials: 50 }, { successes: 0, trials: 50 });
    expect(d.relativeLift).toBeNull();
    // SE = √(0.1 · 0.9/50) = √0.0018 = 0.042426.
    near(d.se, 0.042426, 1e-6);
    const same = proportionDifference({ successes: 0, trials: 10 }, { successes: 0, trials: 20 });
    expect(same).toMatchObject({ difference: 0, se: 0, pValue: null, low: null, high: null });
    expect(() => proportionDifference({ successes: 0, trials: 0 }, { successes: 1, trials: 2 })).toThrow(RangeError);
  });

  it("3/3 against 0/3: se 0, so no interval and no p-value (not p = 0); one trial per arm likewise", () => {
    // p₁ = 1, p₀ = 0: both variances p(1 − p)/n are 0, so the normal approximation has nothing to go by.
    const d = proportionDifference({ successes: 3, trials: 3 }, { successes: 0, trials: 3 });
    expect(d).toMatchObject({ difference: 1, se: 0, low: null, high: null, pValue: null, relativeLift: null });
    // 1/1 against 0/2 would have se 0 too; 1/2 against 0/1: se √(0.25/2) > 0, yet the control has one trial.
    const single = proportionDifference({ successes: 1, trials: 2 }, { successes: 0, trials: 1 });
    expect(single.se).toBeCloseTo(Math.sqrt(0.125), 12);
    expect(single).toMatchObject({ difference: 0.5, low: null, high: null, pValue: null });
  });
});

describe("means", () => {
  it("summarize: mean and sample variance (n − 1)", () => {
    // 2 4 4 4 5 5 7 9: mean 40/8 = 5; squared deviations 9 1 1 1 0 0 4 16 = 32; s² = 32/7.
    const s = summarize([2, 4, 4, 4, 5, 5, 7, 9]);
    expect(s.n).toBe(8);
    near(s.mean, 5, 1e-15);
    near(s.variance, 32 / 7, 1e-14);
    expect(summarize([3])).toEqual({ n: 1, mean: 3, variance: 0 });
    expect(summarize([])).toEqual({ n: 0, mean: 0, variance: 0 });
  });

  it("revenue per visitor 10 (s² 25, n 100): SE 0.5, interval 10 ± 0.98", () => {
    // SE = √(25/100) = 0.5; half-width 1.96 · 0.5 = 0.98.
    const m = meanEstimate({ n: 100, mean: 10, variance: 25 });
    expect(m.se).toBe(0.5);
    near(m.low, 9.02, 1e-4);
    near(m.high, 10.98, 1e-4);
    expect(() => meanEstimate({ n: 1, mean: 10, variance: 0 })).toThrow(RangeError);
  });

  it("12 (s² 100, n 400) − 10 (s² 25, n 100): Welch SE 0.7071, interval [0.614, 3.386], lift +20 %", () => {
    // SE = √(100/400 + 25/100) = √0.5 = 0.707107; half-width 1.959964 · 0.707107 = 1.385904.
    // z = 2/0.707107 = 2.8284 → p = 2 · (1 − Φ(2.83)) ≈ 2 · 0.00233 = 0.0047 (normal table).
    const d = meanDifference({ n: 400, mean: 12, variance: 100 }, { n: 100, mean: 10, variance: 25 });
    expect(d.difference).toBe(2);
    near(d.se, Math.SQRT1_2, 1e-15);
    near(d.low as number, 2 - 1.385904, 1e-6);
    near(d.high as number, 2 + 1.385904, 1e-6);
    near(d.relativeLift as number, 0.2, 1e-15);
    near(d.pValue as number, 0.0047, 1e-4);
  });
});

describe("chi-square tests", () => {
  it("goodness of fit: 50/30/20 against thirds → χ² 14, df 2, p = e^−7", () => {
    // E = 100/3 each; Σ(O − E)²/E = (16.67² + 3.33² + 13.33²)/33.33 = (277.78 + 11.11 + 177.78)/33.33 = 14.
    const t = chiSquareGoodnessOfFit([50, 30, 20], [1, 1, 1]);
    near(t.statistic, 14, 1e-12);
    expect(t.df).toBe(2);
    near(t.pValue, Math.exp(-7), 1e-15);
    // The same counts against 50/30/20 shares fit exactly.
    expect(chiSquareGoodnessOfFit([50, 30, 20], [0.5, 0.3, 0.2])).toMatchObject({ statistic: 0, pValue: 1 });
  });

  it("uniform: [10, 20] → χ² (25 + 25)/15 = 3.333, p ≈ 0.0679 (2 · (1 − Φ(1.8257)), normal table)", () => {
    const t = chiSquareUniform([10, 20]);
    near(t.statistic, 10 / 3, 1e-12);
    near(t.pValue, 0.0679, 2e-4);
    expect(chiSquareUniform([25, 25, 25, 25])).toMatchObject({ statistic: 0, df: 3, pValue: 1 });
    expect(chiSquareUniform([0, 0])).toMatchObject({ statistic: 0, pValue: 1 });
  });

  it("a count in a cell of share 0 is an infinite mismatch", () => {
    expect(chiSquareGoodnessOfFit([5, 1], [1, 0])).toMatchObject({ statistic: Number.POSITIVE_INFINITY, pValue: 0 });
    expect(chiSquareGoodnessOfFit([5, 0, 5], [1, 0, 1])).toMatchObject({ statistic: 0, df: 1, pValue: 1 });
  });

  it("independence of a 2 × 2 table: [[10, 20], [30, 40]] → χ² 0.7937", () => {
    // N (ad − bc)² / (r₁ r₂ c₁ c₂) = 100 · (400 − 600)² / (30 · 70 · 40 · 60) = 4,000,000 / 5,040,000 = 0.793651;
    // the same as Σ(O − E)²/E with E = [[12, 18], [28, 42]]: 4/12 + 4/18 + 4/28 + 4/42.
    const t = chiSquareIndependence([
      [10, 20],
      [30, 40],
    ]);
    near(t.statistic, 4_000_000 / 5_040_000, 1e-12);
    expect(t.df).toBe(1);
    // p = 2 · (1 − Φ(√0.793651 = 0.8909)) ≈ 2 · 0.1865 = 0.373 (normal table).
    near(t.pValue, 0.373, 1e-3);
    // A 3 × 2 table with proportional rows: no association at all.
    expect(
      chiSquareIndependence([
        [10, 20],
        [20, 40],
        [5, 10],
      ]),
    ).toMatchObject({ statistic: 0, df: 2, pValue: 1 });
  });

  it("sample-ratio mismatch: 5,050 / 4,950 of a 50/50 split is fine, 5,200 / 4,800 is not", () => {
    // (50² + 50²)/5,000 = 1 → p = P(χ²₁ ≥ 1) = 2 · (1 − Φ(1)) = 0.3173.
    const fine = sampleRatioMismatch({ control: 5050, treatment: 4950 }, { control: 0.5, treatment: 0.5 });
    near(fine.statistic, 1, 1e-12);
    near(fine.pValue, 0.3173, 1e-4);
    expect(fine.mismatch).toBe(false);
    expect(fine.expected).toEqual({ control: 5000, treatment: 5000 });
    // (200² + 200²)/5,000 = 16 → p = 2 · (1 − Φ(4)) = 6.334e-5 < 0.001.
    const bad = sampleRatioMismatch({ control: 5200, treatment: 4800 }, { control: 0.5, treatment: 0.5 });
    near(bad.statistic, 16, 1e-12);
    near(bad.pValue, 6.334e-5, 1e-8);
    expect(bad.mismatch).toBe(true);
  });

  it("sample-ratio mismatch with a holdout and weights; missing arms count 0; unknown arms are refused", () => {
    // Shares 5 % / 47.5 % / 47.5 % of 10,000: expected 500 / 4,750 / 4,750, observed exactly that.
    const shares = { holdout: 0.05, a: 0.475, b: 0.475 };
    const exact = sampleRatioMismatch({ holdout: 500, a: 4750, b: 4750 }, shares);
    expect(exact).toMatchObject({ df: 2, mismatch: false });
    near(exact.statistic, 0, 1e-9);
    // The holdout lost entirely (e.g. its list failing to render): 0 of an expected 500 → p ≈ 0.
    const lost = sampleRatioMismatch({ a: 4750, b: 4750 }, shares);
    expect(lost.mismatch).toBe(true);
    expect(() => sampleRatioMismatch({ c: 1 }, shares)).toThrow(RangeError);
  });
});

describe("ratio metrics over visitors (delta method)", () => {
  it("matches the hand computation and widens the naive binomial error when visitors cluster", () => {
    // Visitors (x clicked exposures, y exposures): (3, 3), (0, 3), (1, 2), (0, 2). R = 4/10; x̄ = 1, ȳ = 2.5;
    // s²x = (4 + 1 + 0 + 1)/3 = 2; s²y = (0.25·4)/3 = 1/3; sxy = (2·0.5 + (−1)(0.5) + 0 + (−1)(−0.5))/3 = 1/3.
    // Var(R) = (2 − 2·0.4·(1/3) + 0.16·(1/3)) / (4 · 6.25) = (2 − 0.26667 + 0.05333)/25 = 1.78667/25.
    const sums = { n: 4, sumX: 4, sumY: 10, sumXX: 9 + 0 + 1 + 0, sumYY: 9 + 9 + 4 + 4, sumXY: 9 + 0 + 2 + 0 };
    const r = ratioEstimate(sums);
    expect(r.rate).toBe(0.4);
    expect(r.se).toBeCloseTo(Math.sqrt(1.78667 / 25), 4);
    // The binomial error of 4/10 as if the 10 exposures were independent: √(0.24/10) — smaller.
    expect(r.se).toBeGreaterThan(Math.sqrt(0.24 / 10));
    const d = ratioDifference(sums, { n: 2, sumX: 1, sumY: 4, sumXX: 1, sumYY: 8, sumXY: 2 });
    // Control: x = (1, 0), y = (2, 2): R = 1/4, s²x = 1/2, s²y = 0, sxy = 0 → Var = (1/2)/(2·4) = 1/16.
    expect(d.difference).toBeCloseTo(0.15, 12);
    expect(d.se).toBeCloseTo(Math.sqrt(1.78667 / 25 + 1 / 16), 4);
    // Fewer than two visitors: no error estimate, the whole range.
    expect(ratioEstimate({ n: 1, sumX: 1, sumY: 2, sumXX: 1, sumYY: 4, sumXY: 2 })).toMatchObject({
      se: 0,
      low: 0,
      high: 1,
    });
  });

  it("a difference with one visitor in an arm has no interval and no p-value, whatever its size", () => {
    // One visitor per arm: 2 of 2 exposures clicked against 0 of 2. Each arm's se is unknown (n < 2).
    const one = (clicked: number) => ({
      n: 1,
      sumX: clicked,
      sumY: 2,
      sumXX: clicked ** 2,
      sumYY: 4,
      sumXY: 2 * clicked,
    });
    expect(ratioDifference(one(2), one(0))).toMatchObject({ difference: 1, low: null, high: null, pValue: null });
    // Two visitors against one: the control's error is unknown, so the difference's is too.
    const two = { n: 2, sumX: 1, sumY: 4, sumXX: 1, sumYY: 8, sumXY: 2 };
    expect(ratioDifference(two, one(0))).toMatchObject({ difference: 0.25, low: null, high: null, pValue: null });
    expect(ratioDifference(two, two).pValue).toBe(1);
    expect(ratioDifference({ ...two, sumX: 2, sumXX: 2, sumXY: 4 }, two).pValue).toBeGreaterThan(0);
  });
});

describe("the report's differences (buildReport)", () => {
  const doc = parseExperiments(
    {
      experiments: [
        {
          id: "ab",
          placement: "home",
          variants: [
            { id: "control", ranker: { kind: "popular" } },
            { id: "treat", ranker: { kind: "ranker" } },
          ],
        },
      ],
    },
    "v1",
  );
  if (!doc.ok) throw new Error("invalid");
  const experiment = doc.config.experiments[0] as (typeof doc.config.experiments)[number];
  /** One visitor with `exposures` exposures, `clicked` of them clicked, and `revenue`. */
  const oneVisitor = (arm: string, exposures: number, clicked: number, revenue: number): ArmCounts => ({
    arm,
    visitors: 1,
    exposures,
    clickedExposures: clicked,
    cartedExposures: 0,
    converters: revenue > 0 ? 1 : 0,
    clicks: clicked,
    carts: 0,
    orderLines: revenue > 0 ? 1 : 0,
    revenue,
    revenueSq: revenue * revenue,
    exposuresSq: exposures * exposures,
    clickedSq: clicked * clicked,
    clickedByExposures: clicked * exposures,
    cartedSq: 0,
    cartedByExposures: 0,
  });

  it("one visitor per arm: the differences, but no interval and no p-value (not p = 0)", () => {
    const report = buildReport(
      experiment,
      [oneVisitor("control", 3, 0, 0), oneVisitor("treat", 3, 3, 50)],
      REPORT_DEFAULTS,
      null,
    );
    const treat = report.arms.find((a) => a.arm === "treat");
    expect(treat?.vsControl?.ctr).toMatchObject({ difference: 1, low: null, high: null, pValue: null });
    expect(treat?.vsControl?.conversion).toMatchObject({ difference: 1, low: null, high: null, pValue: null });
    expect(treat?.vsControl?.revenuePerVisitor).toBeNull();
    expect(report.crossed).toEqual({ visitors: 0, exposures: 0 });
  });
});
