// Team-draft interleaving, click credit and the interleaving outcome (src/experiments/interleave.ts). The seeds are
// written in binary: the coin of round r is bit r of the seed (1 → b picks first), so every expected list below is
// worked out by hand in the comment next to it, round by round.
import { describe, expect, it } from "vitest";
import { interleaveSeed } from "../../src/experiments/assign.ts";
import { coinFlips, credit, interleavingOutcome, type Team, teamDraft } from "../../src/experiments/interleave.ts";
import { chiSquareUniform } from "../../src/experiments/stats.ts";

const A_FIRST = 0; // every coin 0: a picks first in every round
const B_FIRST = 0xffffffff; // every coin 1: b picks first in rounds 0–31

describe("coinFlips", () => {
  it("reads the seed's bits, least significant first", () => {
    expect(coinFlips(0b0110, 4)).toEqual([false, true, true, false]);
    expect(coinFlips(A_FIRST, 32).every((c) => !c)).toBe(true);
    expect(coinFlips(B_FIRST, 32).every((c) => c)).toBe(true);
    expect(coinFlips(2 ** 31, 32)[31]).toBe(true);
  });

  it("keeps going past 32 rounds with fair coins: rounds 32–63 over 20,000 seeds, df 1 below 10.828", () => {
    let ones = 0;
    let total = 0;
    for (let i = 0; i < 20_000; i++) {
      const coins = coinFlips(interleaveSeed(`rec-${i}`), 64).slice(32);
      ones += coins.filter((c) => c).length;
      total += coins.length;
    }
    expect(chiSquareUniform([ones, total - ones]).statistic).toBeLessThan(10.828);
  });
});

describe("teamDraft", () => {
  it("identical lists: each round's first picker takes the top item, the other the next one", () => {
    const list = ["1", "2", "3", "4", "5", "6"];
    // a first every round: a 1, b 2 | a 3, b 4 | a 5, b 6.
    expect(teamDraft(list, list, 10, A_FIRST)).toEqual({
      items: ["1", "2", "3", "4", "5", "6"],
      team: ["a", "b", "a", "b", "a", "b"],
    });
    // 0b001: b first in round 0 only: b 1, a 2 | a 3, b 4 | a 5, b 6. The list is the same; only the credit moves.
    expect(teamDraft(list, list, 10, 0b001)).toEqual({
      items: ["1", "2", "3", "4", "5", "6"],
      team: ["b", "a", "a", "b", "a", "b"],
    });
  });

  it("disjoint lists: both rankers' items alternate in pairs, each pair ordered by its coin", () => {
    const a = ["a1", "a2", "a3"];
    const b = ["b1", "b2", "b3"];
    // 0b010: round 0 a first (a1, b1), round 1 b first (b2, a2), round 2 a first (a3, b3).
    expect(teamDraft(a, b, 10, 0b010)).toEqual({
      items: ["a1", "b1", "b2", "a2", "a3", "b3"],
      team: ["a", "b", "b", "a", "a", "b"],
    });
  });

  it("overlapping lists: an item goes to whichever team picks it first, the other takes its next one", () => {
    const a = ["x", "y", "z", "w"];
    const b = ["y", "x", "v", "z"];
    // a first always. Round 0: a x; b's best not taken is y. Round 1: a z (x, y taken); b v (y, x taken).
    // Round 2: a w; b has nothing left (y x v z all taken). Then both are exhausted.
    expect(teamDraft(a, b, 10, A_FIRST)).toEqual({
      items: ["x", "y", "z", "v", "w"],
      team: ["a", "b", "a", "b", "a"],
    });
    // 0b001: round 0 b first: b y, a x. Round 1 a first: a z, b v. Round 2 a first: a w, b nothing.
    expect(teamDraft(a, b, 10, 0b001)).toEqual({
      items: ["y", "x", "z", "v", "w"],
      team: ["b", "a", "a", "b", "a"],
    });
  });

  it("one list shorter: when a team has nothing left, the other keeps picking alone", () => {
    // Round 0 (a first): a a1, b b1. Then a is exhausted: b adds b2, b3, b4 alone.
    expect(teamDraft(["a1"], ["b1", "b2", "b3", "b4"], 10, A_FIRST)).toEqual({
      items: ["a1", "b1", "b2", "b3", "b4"],
      team: ["a", "b", "b", "b", "b"],
    });
    // The same from the other side, b first in round 0: b b1, a a1; then a alone: a2, a3.
    expect(teamDraft(["a1", "a2", "a3"], ["b1"], 10, B_FIRST)).toEqual({
      items: ["b1", "a1", "a2", "a3"],
      team: ["b", "a", "a", "a"],
    });
    // An empty list: the other ranker's list as it is, all credited to it.
    expect(teamDraft([], ["b1", "b2"], 10, A_FIRST)).toEqual({ items: ["b1", "b2"], team: ["b", "b"] });
    // b's only item is taken by a: b has nothing left after round 0's first pick.
    expect(teamDraft(["s", "a2"], ["s"], 10, A_FIRST)).toEqual({ items: ["s", "a2"], team: ["a", "a"] });
  });

  it("stops at the limit, even in the middle of a round", () => {
    // 0b10: round 0 a first (a1, b1); round 1 b first: b2, and the limit of 3 is reached before a picks.
    expect(teamDraft(["a1", "a2"], ["b1", "b2"], 3, 0b10)).toEqual({
      items: ["a1", "b1", "b2"],
      team: ["a", "b", "b"],
    });
    expect(teamDraft(["a1"], ["b1"], 0, A_FIRST)).toEqual({ items: [], team: [] });
    expect(teamDraft([], [], 5, A_FIRST)).toEqual({ items: [], team: [] });
  });

  it("skips duplicates inside one list", () => {
    // a first: a x, b y | a: x taken → z; b: y, y taken, nothing left. Then a alone: nothing more.
    expect(teamDraft(["x", "x", "z"], ["y", "y"], 10, A_FIRST)).toEqual({
      items: ["x", "y", "z"],
      team: ["a", "b", "a"],
    });
  });

  it("is deterministic, and balanced: in every prefix the teams' counts differ by at most one while both have items", () => {
    const a = Array.from({ length: 40 }, (_, i) => `p${(i * 7) % 50}`);
    const b = Array.from({ length: 40 }, (_, i) => `p${(i * 11 + 3) % 50}`);
    for (let s = 0; s < 200; s++) {
      const seed = interleaveSeed(`rec-${s}`);
      const out = teamDraft(a, b, 30, seed);
      expect(teamDraft(a, b, 30, seed)).toEqual(out);
      expect(new Set(out.items).size).toBe(out.items.length);
      expect(out.items).toHaveLength(30);
      let d = 0;
      for (const t of out.team) {
        d += t === "a" ? 1 : -1;
        expect(Math.abs(d)).toBeLessThanOrEqual(1);
      }
    }
  });
});

describe("credit", () => {
  const team: Team[] = ["a", "b", "a", "b", "a"];

  it("counts clicks (1-based positions) on the items each team contributed", () => {
    expect(credit(team, [1, 3])).toEqual({ a: 2, b: 0, winner: "a" }); // positions 1 and 3 are a's
    expect(credit(team, [2])).toEqual({ a: 0, b: 1, winner: "b" });
    expect(credit(team, [2, 4, 5])).toEqual({ a: 1, b: 2, winner: "b" });
    expect(credit(team, [1, 2])).toEqual({ a: 1, b: 1, winner: "tie" });
  });

  it("ties an impression without clicks, counts a position once, ignores positions outside the list", () => {
    expect(credit(team, [])).toEqual({ a: 0, b: 0, winner: "tie" });
    expect(credit(team, [3, 3, 3])).toEqual({ a: 1, b: 0, winner: "a" });
    expect(credit(team, [0, 6, 2.5, -1])).toEqual({ a: 0, b: 0, winner: "tie" });
  });
});

describe("interleavingOutcome", () => {
  const win = { a: 2, b: 1, winner: "a" } as const;
  const loss = { a: 0, b: 1, winner: "b" } as const;
  const tie = { a: 1, b: 1, winner: "tie" } as const;
  const none = { a: 0, b: 0, winner: "tie" } as const;

  it("counts wins, losses and ties over impressions with clicks; Δ and the sign test by hand", () => {
    const impressions = [...Array(6).fill(win), ...Array(2).fill(loss), ...Array(2).fill(tie), ...Array(3).fill(none)];
    const out = interleavingOutcome(impressions);
    // n = 6 + 2 + 2 = 10 (the 3 without clicks are left out).
    // Δ = (6 + 1)/10 − (2 + 1)/10 = 0.4; Chapelle's Δ_AB = (6 + 1)/10 − 0.5 = 0.2.
    // Sign test over the 8 non-tied: 2 of 8 for b → 2 · (C(8,0) + C(8,1) + C(8,2)) / 2^8 = 2 · 37/256 = 0.2890625.
    expect(out).toEqual({
      impressions: 13,
      noClicks: 3,
      n: 10,
      wins: 6,
      losses: 2,
      ties: 2,
      delta: expect.closeTo(0.4, 12),
      deltaAB: expect.closeTo(0.2, 12),
      pValue: expect.closeTo(0.2890625, 12),
    });
  });

  it("is symmetric: swapping the teams negates Δ and keeps the p-value", () => {
    const out = interleavingOutcome([...Array(2).fill(win), ...Array(9).fill(loss)]);
    // 2 of 11: 2 · (1 + 11 + 55)/2048 = 134/2048 = 0.0654296875; Δ = (2 − 9)/11.
    expect(out.delta).toBeCloseTo(-7 / 11, 12);
    expect(out.pValue).toBeCloseTo(0.0654296875, 12);
    const swapped = interleavingOutcome([...Array(9).fill(win), ...Array(2).fill(loss)]);
    expect(swapped.delta).toBeCloseTo(7 / 11, 12);
    expect(swapped.pValue).toBeCloseTo(out.pValue, 12);
  });

  it("says nothing without clicks", () => {
    expect(interleavingOutcome([none, none])).toMatchObject({ n: 0, delta: 0, deltaAB: 0, pValue: 1 });
    expect(interleavingOutcome([])).toMatchObject({ impressions: 0, n: 0, pValue: 1 });
    expect(interleavingOutcome([tie, tie])).toMatchObject({ n: 2, ties: 2, delta: 0, deltaAB: 0, pValue: 1 });
  });

  it("takes credit() results end to end", () => {
    const { team } = teamDraft(["a1", "a2"], ["b1", "b2"], 4, A_FIRST); // a, b, a, b
    // [1]: a's item → a wins; [3, 2]: one of a's, one of b's → tie; [4]: b's → b wins; []: no click.
    const out = interleavingOutcome([credit(team, [1]), credit(team, [3, 2]), credit(team, [4]), credit(team, [])]);
    expect(out).toMatchObject({ wins: 1, losses: 1, ties: 1, noClicks: 1, n: 3, delta: 0, pValue: 1 });
  });
});
