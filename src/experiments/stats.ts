// The statistics an experiment report needs, each small enough to check by hand (docs/experiments.md#statistics):
// proportions (Wilson interval), differences of proportions and of means (normal approximation, unpooled / Welch
// standard errors), chi-square tests (sample-ratio mismatch, uniformity, independence) and the sign test. The
// distribution functions are written here (log-gamma, the regularized incomplete gamma function): no dependency,
// runs in workerd and in Node.

/** The two-sided 95 % quantile of the standard normal distribution, Φ⁻¹(0.975). */
export const Z95 = 1.959963984540054;

// Lanczos approximation, g = 7, n = 9 (relative error below 1e-15 for x > 0).
const LANCZOS = [
  0.9999999999998099, 676.5203681218851, -1259.1392167224028, 771.3234287776531, -176.6150291621406, 12.507343278686905,
  -0.13857109526572012, 9.984369578019572e-6, 1.5056327351493116e-7,
];

/** ln Γ(x) for x > 0. */
export function logGamma(x: number): number {
  if (x < 0.5) return Math.log(Math.PI / Math.abs(Math.sin(Math.PI * x))) - logGamma(1 - x);
  const y = x - 1;
  let s = LANCZOS[0] as number;
  for (let i = 1; i < LANCZOS.length; i++) s += (LANCZOS[i] as number) / (y + i);
  const t = y + 7.5;
  return 0.5 * Math.log(2 * Math.PI) + (y + 0.5) * Math.log(t) - t + Math.log(s);
}

const EPS = 1e-16;
const TINY = 1e-300;
const MAX_ITERATIONS = 100_000;

/** Γ(a, x)/Γ(a)'s common factor e^(−x) x^a / Γ(a). */
const gammaPrefix = (a: number, x: number) => Math.exp(-x + a * Math.log(x) - logGamma(a));

/** P(a, x) by its power series (converges fast for x < a + 1). */
function gammaSeries(a: number, x: number): number {
  let ap = a;
  let term = 1 / a;
  let sum = term;
  for (let n = 0; n < MAX_ITERATIONS; n++) {
    ap += 1;
    term *= x / ap;
    sum += term;
    if (Math.abs(term) < Math.abs(sum) * EPS) break;
  }
  return sum * gammaPrefix(a, x);
}

/** Q(a, x) by its continued fraction, modified Lentz's method (converges fast for x ≥ a + 1). */
function gammaContinuedFraction(a: number, x: number): number {
  let b = x + 1 - a;
  let c = 1 / TINY;
  let d = 1 / b;
  let h = d;
  for (let i = 1; i < MAX_ITERATIONS; i++) {
    const an = -i * (i - a);
    b += 2;
    d = an * d + b;
    if (Math.abs(d) < TINY) d = TINY;
    c = b + an / c;
    if (Math.abs(c) < TINY) c = TINY;
    d = 1 / d;
    const step = d * c;
    h *= step;
    if (Math.abs(step - 1) < EPS) break;
  }
  return gammaPrefix(a, x) * h;
}

/** The regularized upper incomplete gamma function Q(a, x) = Γ(a, x) / Γ(a), a > 0, x ≥ 0. */
export function regularizedGammaQ(a: number, x: number): number {
  if (!(a > 0) || !(x >= 0)) throw new RangeError(`regularizedGammaQ(${a}, ${x}): needs a > 0 and x ≥ 0`);
  if (x === 0) return 1;
  if (x === Number.POSITIVE_INFINITY) return 0;
  return x < a + 1 ? 1 - gammaSeries(a, x) : gammaContinuedFraction(a, x);
}

/** P(χ²_df ≥ x): the chi-square survival function, Q(df/2, x/2). */
export function chiSquareSurvival(x: number, df: number): number {
  if (!(df > 0)) throw new RangeError(`chiSquareSurvival: df must be > 0, got ${df}`);
  if (x <= 0) return 1;
  return Math.min(1, Math.max(0, regularizedGammaQ(df / 2, x / 2)));
}

/** P(|Z| ≥ |z|) for a standard normal Z: erfc(|z|/√2) = Q(1/2, z²/2). */
export function normalTwoSidedP(z: number): number {
  if (Number.isNaN(z)) return Number.NaN;
  return chiSquareSurvival(z * z, 1);
}

/**
 * The two-sided sign test: P(a Binomial(n, 1/2) count is at least as far from n/2 as k) = min(1, 2 · P(X ≤ min(k,
 * n − k))). Summed exactly, from the largest term down, until the terms no longer change the sum. n = 0 → 1.
 */
export function binomialTwoSidedP(k: number, n: number): number {
  if (!Number.isInteger(k) || !Number.isInteger(n) || k < 0 || k > n)
    throw new RangeError(`binomialTwoSidedP(${k}, ${n}): needs integers 0 ≤ k ≤ n`);
  const m = Math.min(k, n - k);
  if (2 * m >= n) return 1;
  // term_i = C(n, i) / 2^n; term_{i−1} = term_i · i / (n − i + 1).
  let term = Math.exp(logGamma(n + 1) - logGamma(m + 1) - logGamma(n - m + 1) - n * Math.LN2);
  let sum = term;
  for (let i = m; i > 0 && term > sum * EPS; i--) {
    term *= i / (n - i + 1);
    sum += term;
  }
  return Math.min(1, 2 * sum);
}

export interface Interval {
  low: number;
  high: number;
}

export interface ProportionEstimate extends Interval {
  successes: number;
  trials: number;
  /** successes / trials (0 when trials = 0). */
  rate: number;
}

function checkCount(successes: number, trials: number) {
  if (!Number.isInteger(successes) || !Number.isInteger(trials) || successes < 0 || successes > trials)
    throw new RangeError(`needs integers 0 ≤ successes ≤ trials, got ${successes} / ${trials}`);
}

/**
 * A proportion with its Wilson score 95 % interval (Wilson 1927): centre (p + z²/2n) / (1 + z²/n), half-width
 * z / (1 + z²/n) · √(p(1 − p)/n + z²/4n²). Unlike p ± z·SE it stays inside [0, 1] and is sound for small counts.
 * trials = 0 → rate 0, interval [0, 1] (nothing known).
 */
export function proportion(successes: number, trials: number, z = Z95): ProportionEstimate {
  checkCount(successes, trials);
  if (trials === 0) return { successes, trials, rate: 0, low: 0, high: 1 };
  const p = successes / trials;
  const z2n = (z * z) / trials;
  const centre = (p + z2n / 2) / (1 + z2n);
  const half = (z / (1 + z2n)) * Math.sqrt((p * (1 - p)) / trials + (z * z) / (4 * trials * trials));
  // At 0 and at all successes the bounds are exactly 0 and 1; rounding would leave them a hair inside.
  const low = successes === 0 ? 0 : Math.max(0, centre - half);
  const high = successes === trials ? 1 : Math.min(1, centre + half);
  return { successes, trials, rate: p, low, high };
}

export interface Difference {
  /** treatment − control. */
  difference: number;
  /** Its standard error. */
  se: number;
  /** The 95 % interval difference ± z · se; null when there is no error to go by (below). */
  low: number | null;
  high: number | null;
  /** difference / control, or null when the control's value is 0. */
  relativeLift: number | null;
  /**
   * Two-sided p-value of difference / se against the standard normal. Null, like the interval, when either arm has
   * fewer than two visitors or se = 0: there is no variance to test against (3/3 against 0/3 is not p = 0).
   */
  pValue: number | null;
}

function difference(diff: number, se: number, control: number, z: number, enough: boolean): Difference {
  const testable = enough && se > 0;
  return {
    difference: diff,
    se,
    low: testable ? diff - z * se : null,
    high: testable ? diff + z * se : null,
    relativeLift: control === 0 ? null : diff / control,
    pValue: testable ? normalTwoSidedP(diff / se) : null,
  };
}

export interface Count {
  successes: number;
  trials: number;
}

/**
 * Treatment rate − control rate with its 95 % interval by the normal approximation with the unpooled standard
 * error √(p₁(1 − p₁)/n₁ + p₀(1 − p₀)/n₀), and the relative lift (p₁ − p₀)/p₀. Both arms need trials ≥ 1; the
 * interval and p-value need trials ≥ 2 in each and se > 0 (else null).
 */
export function proportionDifference(treatment: Count, control: Count, z = Z95): Difference {
  checkCount(treatment.successes, treatment.trials);
  checkCount(control.successes, control.trials);
  if (treatment.trials === 0 || control.trials === 0)
    throw new RangeError("proportionDifference: both arms need at least one trial");
  const p1 = treatment.successes / treatment.trials;
  const p0 = control.successes / control.trials;
  const se = Math.sqrt((p1 * (1 - p1)) / treatment.trials + (p0 * (1 - p0)) / control.trials);
  return difference(p1 - p0, se, p0, z, treatment.trials >= 2 && control.trials >= 2);
}

/** A per-visitor metric's sample: size, mean and sample variance (n − 1 denominator) — Postgres' count, avg, var_samp. */
export interface SampleSummary {
  n: number;
  mean: number;
  variance: number;
}

/** The summary of a list of values (Welford's one-pass algorithm); variance 0 for fewer than two values. */
export function summarize(values: readonly number[]): SampleSummary {
  let n = 0;
  let mean = 0;
  let m2 = 0;
  for (const x of values) {
    n++;
    const d = x - mean;
    mean += d / n;
    m2 += d * (x - mean);
  }
  return { n, mean, variance: n > 1 ? m2 / (n - 1) : 0 };
}

export interface MeanEstimate extends Interval {
  n: number;
  mean: number;
  /** √(variance / n). */
  se: number;
}

function checkSummary(s: SampleSummary) {
  if (!Number.isInteger(s.n) || s.n < 2 || !Number.isFinite(s.mean) || !(s.variance >= 0))
    throw new RangeError(`needs n ≥ 2, a finite mean and a variance ≥ 0, got ${JSON.stringify(s)}`);
}

/** The mean of a per-visitor metric (e.g. revenue per visitor) with its 95 % interval mean ± z·√(s²/n). n ≥ 2. */
export function meanEstimate(s: SampleSummary, z = Z95): MeanEstimate {
  checkSummary(s);
  const se = Math.sqrt(s.variance / s.n);
  return { n: s.n, mean: s.mean, se, low: s.mean - z * se, high: s.mean + z * se };
}

/**
 * Treatment mean − control mean with its 95 % interval from Welch's standard error √(s₁²/n₁ + s₀²/n₀) (no equal
 * variances assumed) and the normal quantile — per-arm samples of hundreds of visitors and more, where Student's
 * t and the normal agree to the digits a report shows — and the relative lift (m₁ − m₀)/m₀.
 */
export function meanDifference(treatment: SampleSummary, control: SampleSummary, z = Z95): Difference {
  checkSummary(treatment);
  checkSummary(control);
  const se = Math.sqrt(treatment.variance / treatment.n + control.variance / control.n);
  return difference(treatment.mean - control.mean, se, control.mean, z, true);
}

export interface ChiSquareTest {
  statistic: number;
  df: number;
  pValue: number;
}

/**
 * Pearson's chi-square goodness of fit of observed counts to expected shares (normalised to sum 1): Σ (O − E)²/E
 * with E = N · share, df = cells with a share > 0, minus 1. A count in a cell of share 0 is an infinite statistic
 * (p = 0). N = 0 → statistic 0, p = 1.
 */
export function chiSquareGoodnessOfFit(observed: readonly number[], shares: readonly number[]): ChiSquareTest {
  if (observed.length !== shares.length || observed.length < 2)
    throw new RangeError("chiSquareGoodnessOfFit: needs as many shares as counts, at least two");
  if (!observed.every((o) => Number.isInteger(o) && o >= 0)) throw new RangeError("counts must be integers ≥ 0");
  if (!shares.every((s) => Number.isFinite(s) && s >= 0)) throw new RangeError("shares must be ≥ 0");
  const total = observed.reduce((s, o) => s + o, 0);
  const shareSum = shares.reduce((s, x) => s + x, 0);
  if (!(shareSum > 0)) throw new RangeError("shares must not all be 0");
  let statistic = 0;
  let cells = 0;
  for (let i = 0; i < observed.length; i++) {
    const o = observed[i] as number;
    const share = (shares[i] as number) / shareSum;
    if (share === 0) {
      if (o > 0) statistic = Number.POSITIVE_INFINITY;
      continue;
    }
    cells++;
    const e = total * share;
    if (e > 0) statistic += ((o - e) * (o - e)) / e;
  }
  const df = Math.max(1, cells - 1);
  if (total === 0) return { statistic: 0, df, pValue: 1 };
  return { statistic, df, pValue: statistic === Number.POSITIVE_INFINITY ? 0 : chiSquareSurvival(statistic, df) };
}

/** Goodness of fit to equal shares (e.g. hash buckets). */
export function chiSquareUniform(counts: readonly number[]): ChiSquareTest {
  return chiSquareGoodnessOfFit(
    counts,
    counts.map(() => 1),
  );
}

/**
 * Pearson's chi-square test of independence of an r × c contingency table: E_ij = row_i · col_j / N,
 * df = (r − 1)(c − 1); no continuity correction. Rows or columns that are all zero are dropped.
 */
export function chiSquareIndependence(table: readonly (readonly number[])[]): ChiSquareTest {
  const rows = table.filter((r) => r.some((x) => x > 0));
  const width = table[0]?.length ?? 0;
  if (!table.every((r) => r.length === width && r.every((x) => Number.isInteger(x) && x >= 0)))
    throw new RangeError("chiSquareIndependence: a rectangular table of integer counts ≥ 0");
  const colSums = Array.from({ length: width }, (_, j) => rows.reduce((s, r) => s + (r[j] as number), 0));
  const cols = colSums.map((s, j) => [s, j] as const).filter(([s]) => s > 0);
  const total = colSums.reduce((s, x) => s + x, 0);
  if (rows.length < 2 || cols.length < 2) return { statistic: 0, df: 1, pValue: 1 };
  let statistic = 0;
  for (const r of rows) {
    const rowSum = r.reduce((s, x) => s + x, 0);
    for (const [colSum, j] of cols) {
      const e = (rowSum * colSum) / total;
      const o = r[j] as number;
      statistic += ((o - e) * (o - e)) / e;
    }
  }
  const df = (rows.length - 1) * (cols.length - 1);
  return { statistic, df, pValue: chiSquareSurvival(statistic, df) };
}

export interface SampleRatioCheck extends ChiSquareTest {
  /** Each arm's expected count: total × its configured share. */
  expected: Record<string, number>;
  /** pValue < alpha: the observed split is not the configured one — the arms' results are not comparable. */
  mismatch: boolean;
}

/**
 * The sample-ratio-mismatch check: the chi-square goodness of fit of the arms' observed visitor counts to their
 * configured shares (assign.ts armShares). Arms missing from `counts` count 0; counts of arms without a share are
 * an error. The usual threshold is p < 0.001 (a real mismatch, e.g. a redirect losing one arm's visitors, gives
 * p-values far below it on any sizeable experiment; random splits fall under it once in a thousand checks).
 */
export function sampleRatioMismatch(
  counts: Readonly<Record<string, number>>,
  shares: Readonly<Record<string, number>>,
  alpha = 0.001,
): SampleRatioCheck {
  for (const arm of Object.keys(counts))
    if (!(arm in shares)) throw new RangeError(`sampleRatioMismatch: arm ${arm} has no configured share`);
  const arms = Object.keys(shares);
  const observed = arms.map((a) => counts[a] ?? 0);
  const test = chiSquareGoodnessOfFit(
    observed,
    arms.map((a) => shares[a] as number),
  );
  const total = observed.reduce((s, o) => s + o, 0);
  const shareSum = arms.reduce((s, a) => s + (shares[a] as number), 0);
  const expected = Object.fromEntries(arms.map((a) => [a, (total * (shares[a] as number)) / shareSum]));
  return { ...test, expected, mismatch: test.pValue < alpha };
}

/**
 * Per-visitor sums of a ratio metric whose unit of analysis is finer than the unit of assignment (click-through
 * rate: clicked exposures / exposures, while visitors are what is randomised): x_i and y_i are visitor i's
 * numerator and denominator.
 */
export interface RatioSums {
  /** Visitors. */
  n: number;
  sumX: number;
  sumY: number;
  sumXX: number;
  sumYY: number;
  sumXY: number;
}

export interface RatioEstimate extends Interval {
  /** ΣX / ΣY (0 when ΣY = 0). */
  rate: number;
  /** Its standard error by the delta method over visitors. */
  se: number;
  successes: number;
  trials: number;
}

/**
 * R = ΣX/ΣY with the delta-method standard error over visitors (Deng, Lu & Litz 2017, "Trustworthy analysis of
 * online A/B tests: pitfalls, challenges and solutions"): Var(R) ≈ (s²_X − 2R·s_XY + R²·s²_Y) / (n·Ȳ²), sample
 * (co)variances with n − 1. Treating a visitor's many exposures as independent trials understates the error; this
 * does not. Interval R ± z·se, clipped to [0, 1] for rates. n < 2: se 0 and the interval [0, 1].
 */
export function ratioEstimate(s: RatioSums, z = Z95): RatioEstimate {
  const rate = s.sumY > 0 ? s.sumX / s.sumY : 0;
  const base = { rate, successes: s.sumX, trials: s.sumY };
  if (s.n < 2 || s.sumY <= 0) return { ...base, se: 0, low: 0, high: 1 };
  const mx = s.sumX / s.n;
  const my = s.sumY / s.n;
  const vx = (s.sumXX - s.n * mx * mx) / (s.n - 1);
  const vy = (s.sumYY - s.n * my * my) / (s.n - 1);
  const cxy = (s.sumXY - s.n * mx * my) / (s.n - 1);
  const variance = Math.max(0, (vx - 2 * rate * cxy + rate * rate * vy) / (s.n * my * my));
  const se = Math.sqrt(variance);
  return { ...base, se, low: Math.max(0, rate - z * se), high: Math.min(1, rate + z * se) };
}

/**
 * Treatment ratio − control ratio, each with its delta-method standard error (independent arms). With fewer than two
 * visitors in an arm there is no error (ratioEstimate's se 0 means unknown there): no interval, no p-value.
 */
export function ratioDifference(treatment: RatioSums, control: RatioSums, z = Z95): Difference {
  const t = ratioEstimate(treatment, z);
  const c = ratioEstimate(control, z);
  return difference(
    t.rate - c.rate,
    Math.sqrt(t.se * t.se + c.se * c.se),
    c.rate,
    z,
    treatment.n >= 2 && control.n >= 2,
  );
}
