// Assignment (src/experiments/assign.ts): the hash against the published FNV-1a vectors and an independent BigInt
// implementation of FNV-1a 64 and MurmurHash3's fmix64 written from their specifications; then the properties the
// experiments rely on: deterministic, sticky across config versions, the documented layout of [0, 1), uniform over
// the configured shares and independent across experiments. The statistical checks compare Pearson's chi-square
// statistic with the critical values of the published chi-square table at α = 0.001 (df 1: 10.828, df 3: 16.266,
// df 9: 27.877); a correct hash fails each of them once in a thousand runs of a *random* sample, and these samples
// are fixed (`u-0` … `u-99999`), so the outcome never changes from run to run.
import { describe, expect, it } from "vitest";
import { armShares, assign, bucket, fmix64, fnv1a64, interleaveSeed } from "../../src/experiments/assign.ts";
import { type Experiment, parseExperiments } from "../../src/experiments/config.ts";
import { chiSquareGoodnessOfFit, chiSquareIndependence, chiSquareUniform } from "../../src/experiments/stats.ts";

const M64 = (1n << 64n) - 1n;
/** FNV-1a 64 as its specification states it, on BigInts, over TextEncoder's UTF-8. */
function fnvReference(text: string): bigint {
  let h = 0xcbf29ce484222325n;
  for (const byte of new TextEncoder().encode(text)) {
    h ^= BigInt(byte);
    h = (h * 0x100000001b3n) & M64;
  }
  return h;
}
/** MurmurHash3's fmix64 on BigInts. */
function fmixReference(k: bigint): bigint {
  k ^= k >> 33n;
  k = (k * 0xff51afd7ed558ccdn) & M64;
  k ^= k >> 33n;
  k = (k * 0xc4ceb9fe1a85ec53n) & M64;
  k ^= k >> 33n;
  return k;
}
const big = ([hi, lo]: [number, number]) => (BigInt(hi) << 32n) | BigInt(lo);

function experimentOf(doc: unknown, version = "v1"): Experiment {
  const parsed = parseExperiments({ experiments: [doc] }, version);
  if (!parsed.ok) throw new Error(JSON.stringify(parsed.issues));
  return parsed.config.experiments[0] as Experiment;
}
const ranker = { kind: "ranker" } as const;
const fiftyFifty = (id: string) =>
  experimentOf({
    id,
    placement: "home",
    variants: [
      { id: "control", ranker: { kind: "popular" } },
      { id: "treatment", ranker },
    ],
  });
const weighted = experimentOf({
  id: "weighted",
  placement: "pdp",
  holdout: 0.05,
  variants: [
    { id: "a", weight: 10, ranker: { kind: "popular" } },
    { id: "b", weight: 30, ranker },
    { id: "c", weight: 60, ranker: { kind: "ranker", weights: { covisit: 4 } } },
  ],
});

const N = 100_000;
const units = Array.from({ length: N }, (_, i) => `u-${i}`);
function countArms(experiment: Experiment, arms: string[]): number[] {
  const counts = arms.map(() => 0);
  for (const u of units) {
    const i = arms.indexOf(assign(experiment, u).arm);
    if (i < 0) throw new Error(`unexpected arm for ${u}`);
    counts[i] = (counts[i] as number) + 1;
  }
  return counts;
}

describe("the hash", () => {
  it("is FNV-1a 64: the reference implementation's published test vectors", () => {
    // From the FNV reference code's test suite (Fowler/Noll/Vo, isthe.com/chongo/tech/comp/fnv): fnv1a_64.
    expect(big(fnv1a64(""))).toBe(0xcbf29ce484222325n);
    expect(big(fnv1a64("a"))).toBe(0xaf63dc4c8601ec8cn);
    expect(big(fnv1a64("foobar"))).toBe(0x85944171f73967e8n);
  });

  it("hashes UTF-8 bytes as TextEncoder writes them, lone surrogates as U+FFFD", () => {
    for (const s of ["é", "naïve-€", "😀 u-1", "\u{10ffff}", "a\ud800b", "\udc00", "x\ud83d", "\u0000", "u-12345"])
      expect(big(fnv1a64(s)), JSON.stringify(s)).toBe(fnvReference(s));
  });

  it("finalises with fmix64, as the BigInt reference does", () => {
    expect(big(fmix64(0, 0))).toBe(0n); // fmix64 maps 0 to 0
    for (const k of [1n, 0xffffffffffffffffn, 0x8000000000000000n, 0x0123456789abcdefn, fnvReference("u-7")]) {
      const hi = Number(k >> 32n);
      const lo = Number(k & 0xffffffffn);
      expect(big(fmix64(hi, lo)), k.toString(16)).toBe(fmixReference(k));
    }
  });

  it("bucket() is the top 53 bits of fmix64(fnv1a64(id + NUL + unit)) / 2^53", () => {
    for (const [id, unit] of [
      ["home-1", "u-1"],
      ["home-1", "u-2"],
      ["pdp_seq-2026", "0b3c2f1e-9d8a-4b7c-8e21-5f0d2a9c7b61"],
      ["x", "é"],
    ] as const) {
      const expected = Number(fmixReference(fnvReference(`${id}\u0000${unit}`)) >> 11n) / 2 ** 53;
      expect(bucket(id, unit)).toBe(expected);
      expect(expected).toBeGreaterThanOrEqual(0);
      expect(expected).toBeLessThan(1);
    }
  });
});

describe("assign", () => {
  it("is deterministic: the same unit gets the same bucket and arm on every call", () => {
    for (const u of units.slice(0, 1000)) {
      const first = assign(weighted, u);
      expect(assign(weighted, u)).toEqual(first);
      expect(first.bucket).toBe(bucket("weighted", u));
    }
  });

  it("is sticky across config versions that keep the experiment's id, holdout and weights", () => {
    const v1 = parseExperiments({ experiments: [{ ...weighted, holdout: 0.05 }] }, "v1");
    // v2 adds another experiment before it, a description and an end, and changes a ranker: no arm moves.
    const v2 = parseExperiments(
      {
        experiments: [
          { id: "other", placement: "home", variants: weighted.variants },
          {
            ...weighted,
            description: "longer",
            end: "2027-01-01T00:00:00Z",
            variants: weighted.variants.map((v) => (v.id === "c" ? { ...v, ranker } : v)),
          },
        ],
      },
      "v2",
    );
    if (!v1.ok || !v2.ok) throw new Error("refused");
    const [e1, e2] = [v1.config.experiments[0], v2.config.experiments[1]] as [Experiment, Experiment];
    for (const u of units.slice(0, 10_000)) expect(assign(e2, u)).toEqual(assign(e1, u));
  });

  it("lays out [0, 1) as documented: holdout first, then the variants in order by weight", () => {
    // 5 % holdout, then 95 % split 10 : 30 : 60 → a 9.5 %, b 28.5 %, c 57 %:
    // holdout [0, 0.05), a [0.05, 0.145), b [0.145, 0.43), c [0.43, 1).
    const shares = armShares(weighted);
    expect(shares.map((s) => s.arm)).toEqual(["holdout", "a", "b", "c"]);
    const expected = [0.05, 0.095, 0.285, 0.57];
    for (const [i, s] of shares.entries()) expect(s.share).toBeCloseTo(expected[i] as number, 12);
    const byHand = (b: number) => (b < 0.05 ? "holdout" : b < 0.145 ? "a" : b < 0.43 ? "b" : "c");
    for (const u of units.slice(0, 20_000)) {
      const { arm, bucket: b } = assign(weighted, u);
      expect(arm).toBe(byHand(b));
    }
  });

  it("puts a holdout's rest in one interleaved arm in interleave mode", () => {
    const interleave = experimentOf({
      id: "il",
      placement: "home",
      mode: "interleave",
      holdout: 0.2,
      variants: [
        { id: "x", ranker },
        { id: "y", ranker },
      ],
    });
    expect(armShares(interleave)).toEqual([
      { arm: "holdout", share: 0.2 },
      { arm: "interleaved", share: 0.8 },
    ]);
    for (const u of units.slice(0, 5000)) {
      const { arm, bucket: b } = assign(interleave, u);
      expect(arm).toBe(b < 0.2 ? "holdout" : "interleaved");
    }
  });

  it("never holds out with holdout 0", () => {
    expect(armShares(fiftyFifty("e")).map((s) => s.arm)).toEqual(["control", "treatment"]);
    expect(countArms(fiftyFifty("e"), ["control", "treatment"]).reduce((a, b) => a + b)).toBe(N);
  });
});

describe("assignment is uniform over the configured shares (100,000 ids u-0 … u-99999)", () => {
  it("50/50: expected 50,000 each; chi-square (df 1) below 10.828", () => {
    const counts = countArms(fiftyFifty("home-ab"), ["control", "treatment"]);
    const test = chiSquareGoodnessOfFit(counts, [0.5, 0.5]);
    console.log(`50/50 counts ${counts}, chi-square ${test.statistic.toFixed(3)}, p ${test.pValue.toFixed(4)}`);
    expect(test.df).toBe(1);
    expect(test.statistic).toBeLessThan(10.828);
    expect(test.pValue).toBeGreaterThan(0.001);
  });

  it("5 % holdout + 10/30/60: expected 5,000 / 9,500 / 28,500 / 57,000; chi-square (df 3) below 16.266", () => {
    const counts = countArms(weighted, ["holdout", "a", "b", "c"]);
    const test = chiSquareGoodnessOfFit(counts, [0.05, 0.095, 0.285, 0.57]);
    console.log(
      `holdout+10/30/60 counts ${counts}, chi-square ${test.statistic.toFixed(3)}, p ${test.pValue.toFixed(4)}`,
    );
    expect(test.df).toBe(3);
    expect(test.statistic).toBeLessThan(16.266);
    expect(test.pValue).toBeGreaterThan(0.001);
  });

  it("the buckets themselves: ten deciles of 10,000 expected each; chi-square (df 9) below 27.877", () => {
    const deciles = Array.from({ length: 10 }, () => 0);
    for (const u of units) {
      const d = Math.floor(bucket("deciles", u) * 10);
      deciles[d] = (deciles[d] as number) + 1;
    }
    const test = chiSquareUniform(deciles);
    console.log(`deciles ${deciles}, chi-square ${test.statistic.toFixed(3)}, p ${test.pValue.toFixed(4)}`);
    expect(test.df).toBe(9);
    expect(test.statistic).toBeLessThan(27.877);
  });
});

describe("assignment is independent across experiments", () => {
  it("the arm in A does not predict the arm in B: 2 × 2 chi-square (df 1) below 10.828", () => {
    const a = fiftyFifty("exp-a");
    const b = fiftyFifty("exp-b");
    const table = [
      [0, 0],
      [0, 0],
    ];
    for (const u of units) {
      const row = table[assign(a, u).arm === "control" ? 0 : 1] as number[];
      const col = assign(b, u).arm === "control" ? 0 : 1;
      row[col] = (row[col] as number) + 1;
    }
    const test = chiSquareIndependence(table);
    console.log(`A × B ${JSON.stringify(table)}, chi-square ${test.statistic.toFixed(3)}, p ${test.pValue.toFixed(4)}`);
    expect(test.df).toBe(1);
    expect(test.statistic).toBeLessThan(10.828);
  });

  it("nor across layouts: 4 arms × 2 arms, chi-square (df 3) below 16.266", () => {
    const b = fiftyFifty("home-ab");
    const arms = ["holdout", "a", "b", "c"];
    const table = arms.map(() => [0, 0]);
    for (const u of units) {
      const row = table[arms.indexOf(assign(weighted, u).arm)] as number[];
      const col = assign(b, u).arm === "control" ? 0 : 1;
      row[col] = (row[col] as number) + 1;
    }
    const test = chiSquareIndependence(table);
    console.log(`weighted × 50/50 chi-square ${test.statistic.toFixed(3)}, p ${test.pValue.toFixed(4)}`);
    expect(test.df).toBe(3);
    expect(test.statistic).toBeLessThan(16.266);
  });
});

describe("interleaveSeed", () => {
  it("is a deterministic 32-bit unsigned integer", () => {
    for (const k of ["rec-1", "u-1:home", "", "é"]) {
      const s = interleaveSeed(k);
      expect(interleaveSeed(k)).toBe(s);
      expect(Number.isInteger(s) && s >= 0 && s < 2 ** 32).toBe(true);
    }
    // The high word of fmix64(fnv1a64("interleave" + NUL + key)).
    expect(interleaveSeed("rec-1")).toBe(Number(fmixReference(fnvReference("interleave\u0000rec-1")) >> 32n));
  });

  it("has fair first and last coin bits (df 1, below 10.828), independent of the unit's arm", () => {
    const bit0 = [0, 0];
    const bit31 = [0, 0];
    const byArm = [
      [0, 0],
      [0, 0],
    ];
    const e = fiftyFifty("home-ab");
    for (const u of units) {
      const s = interleaveSeed(u);
      bit0[s & 1] = (bit0[s & 1] as number) + 1;
      bit31[s >>> 31] = (bit31[s >>> 31] as number) + 1;
      const row = byArm[assign(e, u).arm === "control" ? 0 : 1] as number[];
      row[s & 1] = (row[s & 1] as number) + 1;
    }
    expect(chiSquareUniform(bit0).statistic).toBeLessThan(10.828);
    expect(chiSquareUniform(bit31).statistic).toBeLessThan(10.828);
    expect(chiSquareIndependence(byArm).statistic).toBeLessThan(10.828);
  });
});
