// The experiments simulation (eval/simulate.ts, docs/experiments.md#simulation) on hand-built lists: the click
// model, the known effect, the interleaving expectation, determinism under a seed, the prefix statistics and the
// events a visit writes. No database and no UCI file: every expected value is worked out in the comments.
import { describe, expect, it } from "vitest";
import { warehouseRows } from "../../src/batch/warehouse.ts";
import type { CollectedEvent } from "../../src/collect/event.ts";
import { assign, interleaveSeed } from "../../src/experiments/assign.ts";
import type { Experiment } from "../../src/experiments/config.ts";
import { type Credit, type Interleaved, type Team, teamDraft } from "../../src/experiments/interleave.ts";
import { binomialTwoSidedP, normalTwoSidedP } from "../../src/experiments/stats.ts";

// eval/simulate.ts reaches the local stack's launcher (Node's types); test/unit is type-checked with the Worker's
// types, so the module is loaded by a specifier tsc does not follow and typed by the little this test uses.
interface SimStep {
  p: number;
  context: string;
  target: string;
  a: readonly string[];
  b: readonly string[];
  price: number;
  quantity: number;
}
interface SimVisit {
  id: string;
  userKey: string;
  time: number;
  steps: SimStep[];
}
interface VisitOutcome {
  arm: string;
  ab: Array<{ shown: readonly string[]; click: number | null }>;
  il: Array<{ recId: string; items: readonly string[]; team: readonly Team[]; click: number | null; credit: Credit }>;
}
interface PrefixStats {
  visits: number;
  abDifference: number | null;
  abP: number | null;
  wins: number;
  losses: number;
  ilP: number;
}
type DetectionRow = { visits: number; p: number | null; right: boolean };
interface SimulateModule {
  AB_EXPERIMENT: Experiment;
  IL_EXPERIMENT: Experiment;
  clickProbability(position: number | null): number;
  positionOf(list: readonly string[], item: string): number | null;
  clickDraw(seed: number, visitId: string, p: number): number;
  clickOf(list: readonly string[], target: string, u: number): number | null;
  trueEffect(steps: ReadonlyArray<{ a: readonly string[]; b: readonly string[]; target: string }>): {
    steps: number;
    ctrA: number;
    ctrB: number;
    difference: number;
  };
  interleaved(a: readonly string[], b: readonly string[], recId: string): Interleaved;
  interleavingExpectation(steps: ReadonlyArray<{ items: readonly string[]; team: readonly Team[]; target: string }>): {
    impressions: number;
    clicksA: number;
    clicksB: number;
    shareB: number;
  };
  recIdOf(experimentId: string, visitId: string, p: number): string;
  simulate(visits: readonly SimVisit[], seed: number): VisitOutcome[];
  armTotals(
    visits: readonly SimVisit[],
    outcomes: readonly VisitOutcome[],
  ): Map<string, { visitors: number; converters: number; exposures: number; clicked: number; revenue: number }>;
  prefixStats(
    outcomes: readonly VisitOutcome[],
    prefixes: readonly number[],
    control: string,
    visitorOf?: (i: number) => string,
  ): PrefixStats[];
  detectionVisits(rows: readonly DetectionRow[]): number | null;
  abRows(rows: readonly PrefixStats[]): DetectionRow[];
  prefixesFor(total: number): number[];
  visitEvents(
    v: SimVisit,
    experiment: Experiment,
    arm: string,
    steps: ReadonlyArray<{ items: readonly string[]; team?: readonly Team[]; click: number | null }>,
    orders: boolean,
  ): CollectedEvent[];
}
const simulatePath = "../../eval/simulate.ts";
const {
  AB_EXPERIMENT,
  abRows,
  armTotals,
  clickDraw,
  clickOf,
  clickProbability,
  detectionVisits,
  IL_EXPERIMENT,
  interleaved,
  interleavingExpectation,
  positionOf,
  prefixesFor,
  prefixStats,
  recIdOf,
  simulate,
  trueEffect,
  visitEvents,
} = (await import(simulatePath)) as SimulateModule;

const filler = (n: number, prefix = "f") => Array.from({ length: n }, (_, i) => `${prefix}${i}`);

describe("the click model", () => {
  it("θ_k = 1/√k inside the top 10, 0 outside", () => {
    expect(clickProbability(1)).toBe(1);
    expect(clickProbability(4)).toBe(0.5);
    expect(clickProbability(9)).toBeCloseTo(1 / 3, 15);
    expect(clickProbability(10)).toBeCloseTo(0.316227766, 9);
    for (const k of [null, 0, 11, -1, 2.5]) expect(clickProbability(k)).toBe(0);
  });

  it("positions are 1-based and only the first 10 count", () => {
    expect(positionOf(["x", "y", "z"], "z")).toBe(3);
    expect(positionOf(["x"], "q")).toBeNull();
    const eleven = [...filler(10), "t"];
    expect(positionOf(eleven, "t")).toBeNull();
  });

  it("clicks the target when the draw is below its θ, nothing otherwise", () => {
    const list = ["a", "b", "c", "t"]; // t at 4: θ = 0.5
    expect(clickOf(list, "t", 0.49)).toBe(4);
    expect(clickOf(list, "t", 0.5)).toBeNull();
    expect(clickOf(list, "t", 0.9)).toBeNull();
    expect(clickOf(list, "a", 0.999)).toBe(1); // θ_1 = 1: always
    expect(clickOf(list, "absent", 0)).toBeNull();
  });

  it("the draws are uniform: the click rate at position 4 over 20,000 steps is θ_4 = 0.5", () => {
    let clicks = 0;
    for (let i = 0; i < 20_000; i++)
      if (clickOf(["a", "b", "c", "t"], "t", clickDraw(42, `v${i}`, 1)) !== null) clicks++;
    // SE = √(0.25 / 20000) ≈ 0.0035; the draws are fixed by the seed, so this is not flaky.
    expect(Math.abs(clicks / 20_000 - 0.5)).toBeLessThan(0.012);
    expect(clickDraw(42, "v1", 3)).toBe(clickDraw(42, "v1", 3));
    expect(clickDraw(42, "v1", 3)).not.toBe(clickDraw(43, "v1", 3));
  });
});

describe("the known effect", () => {
  it("is the mean over steps of θ at the target's position in B minus in A", () => {
    const steps = [
      // A has t1 at 1 (θ 1), B at 4 (θ 0.5).
      { target: "t1", a: ["t1", "x"], b: ["p", "q", "r", "t1"] },
      // A lacks t2 (0), B has it at 1 (1).
      { target: "t2", a: ["x", "y"], b: ["t2"] },
      // A has t3 at 9 (1/3); B at 11, outside the shown 10 (0).
      { target: "t3", a: [...filler(8), "t3"], b: [...filler(10), "t3"] },
    ];
    const e = trueEffect(steps);
    // E[CTR_A] = (1 + 0 + 1/3) / 3 = 4/9; E[CTR_B] = (0.5 + 1 + 0) / 3 = 1/2; difference 1/18.
    expect(e.steps).toBe(3);
    expect(e.ctrA).toBeCloseTo(4 / 9, 12);
    expect(e.ctrB).toBeCloseTo(1 / 2, 12);
    expect(e.difference).toBeCloseTo(1 / 18, 12);
    expect(trueEffect([])).toEqual({ steps: 0, ctrA: 0, ctrB: 0, difference: 0 });
  });

  it("interleaving: each team's expected credited clicks per impression", () => {
    const e = interleavingExpectation([
      { items: ["t", "x"], team: ["b", "a"], target: "t" }, // b placed t at 1: θ 1 for b
      { items: ["x", "t"], team: ["b", "a"], target: "t" }, // a placed t at 2: θ 1/√2 for a
      { items: ["x", "y"], team: ["a", "b"], target: "t" }, // not shown: nothing
    ]);
    expect(e.impressions).toBe(3);
    expect(e.clicksA).toBeCloseTo(Math.SQRT1_2 / 3, 12);
    expect(e.clicksB).toBeCloseTo(1 / 3, 12);
    expect(e.shareB).toBeCloseTo(1 / (1 + Math.SQRT1_2), 12);
  });

  it("interleaved lists are the Worker's: teamDraft seeded by the recId", () => {
    const a = ["1", "2", "3"];
    const b = ["3", "4", "5"];
    expect(interleaved(a, b, "rec-1")).toEqual(teamDraft(a, b, 10, interleaveSeed("rec-1")));
  });
});

/** Visits with fixed lists: A shows the target at 5, B at 1 (θ 0.447 vs 1). */
function visits(n: number, steps = 4): SimVisit[] {
  return Array.from({ length: n }, (_, i) => ({
    id: `inv${i}`,
    userKey: i % 3 === 0 ? `a:inv-inv${i}` : `u:${1000 + i}`,
    time: 1_320_000_000 + i * 3600,
    steps: Array.from({ length: steps }, (_, j) => ({
      p: j + 1,
      context: `c${j}`,
      target: `t${i}-${j}`,
      a: ["p1", "p2", "p3", "p4", `t${i}-${j}`],
      b: [`t${i}-${j}`, "p1", "p2"],
      price: 2.5,
      quantity: 3,
    })),
  }));
}

describe("a run", () => {
  it("is a pure function of the visits and the seed", () => {
    const v = visits(30);
    expect(simulate(v, 7)).toEqual(simulate(v, 7));
    expect(simulate(v, 7)).not.toEqual(simulate(v, 8));
  });

  it("shows each visitor its arm's list (assign on the visitor's key) and the interleaved list of its recId", () => {
    const v = visits(30);
    const out = simulate(v, 7);
    out.forEach((o, i) => {
      const visit = v[i] as SimVisit;
      expect(o.arm).toBe(assign(AB_EXPERIMENT, visit.userKey).arm);
      o.ab.forEach((s, j) => {
        const step = visit.steps[j] as SimVisit["steps"][number];
        expect(s.shown).toBe(o.arm === "popular" ? step.a : step.b);
        // B puts the target first (θ 1): always clicked.
        if (o.arm === "merged") expect(s.click).toBe(1);
        const il = o.il[j];
        expect(il?.recId).toBe(recIdOf(IL_EXPERIMENT.id, visit.id, step.p));
        expect(il?.items).toEqual(interleaved(step.a, step.b, il?.recId ?? "").items);
        // The target is B's first item: b always places it, in position 1 or 2.
        if (il?.click !== null) expect(il?.credit).toEqual({ a: 0, b: 1, winner: "b" });
      });
    });
    expect(new Set(out.map((o) => o.arm))).toEqual(new Set(["popular", "merged"]));
  });

  it("the arms' totals count visitors once and revenue as price × quantity of the clicked lines", () => {
    const v = visits(2, 2);
    const outcomes: VisitOutcome[] = [
      {
        arm: "popular",
        ab: [
          { shown: [], click: null },
          { shown: [], click: 5 },
        ],
        il: [],
      },
      {
        arm: "popular",
        ab: [
          { shown: [], click: null },
          { shown: [], click: null },
        ],
        il: [],
      },
    ];
    const totals = armTotals(v, outcomes).get("popular");
    expect(totals).toEqual({ visitors: 2, converters: 1, exposures: 4, clicked: 1, revenue: 7.5 });
  });
});

describe("prefixes", () => {
  it("add up each visit's exposures, clicks and interleaving wins", () => {
    const win = (w: "a" | "b" | "tie") => ({
      recId: "r",
      items: [],
      team: [],
      click: w === "tie" ? null : 1,
      credit: w === "a" ? { a: 1, b: 0, winner: w } : w === "b" ? { a: 0, b: 1, winner: w } : { a: 0, b: 0, winner: w },
    });
    const click = (c: boolean) => ({ shown: [], click: c ? 1 : null });
    const outcomes: VisitOutcome[] = [
      { arm: "popular", ab: [click(true), click(false)], il: [win("a"), win("tie")] },
      { arm: "merged", ab: [click(true), click(true), click(false)], il: [win("b"), win("b")] },
      { arm: "merged", ab: [click(true)], il: [win("b")] },
      { arm: "popular", ab: [click(false), click(false)], il: [win("tie")] },
    ];
    const rows = prefixStats(outcomes, [1, 2, 3, 4], "popular");
    expect(rows[0]).toMatchObject({ visits: 1, abDifference: null, abP: null, wins: 1, losses: 0 });
    // Errors are over visits: no difference until each arm has two visits.
    expect(rows[1]).toMatchObject({ visits: 2, abDifference: null, wins: 1, losses: 2 });
    expect(rows[1]?.ilP).toBe(binomialTwoSidedP(1, 3));
    expect(rows[2]).toMatchObject({ visits: 3, abDifference: null, wins: 1, losses: 3 });
    // After 4: A visits (x clicked, y exposures) (1, 2), (0, 2): R = 1/4, s²x = 1/2, s²y = 0 → Var = (1/2)/(2·4) = 1/16.
    // B (2, 3), (1, 1): R = 3/4, s²x = 1/2, s²y = 2, sxy = 1 → Var = (1/2 − 3/2 + 9/16·2)/(2·4) = 1/64.
    expect(rows[3]?.abDifference).toBeCloseTo(0.5, 12);
    expect(rows[3]?.abP).toBeCloseTo(normalTwoSidedP(0.5 / Math.sqrt(1 / 16 + 1 / 64)), 12);
    expect(rows[3]?.ilP).toBe(binomialTwoSidedP(1, 4));
    // Prefixes beyond the data stop at its size.
    expect(prefixStats(outcomes, [10], "popular")[0]?.visits).toBe(4);
  });

  it("errors are over visitors: a visitor's visits are one cluster", () => {
    const click = (c: boolean) => ({ shown: [], click: c ? 1 : null });
    const visit = (arm: string, clicks: boolean[]): VisitOutcome => ({ arm, ab: clicks.map(click), il: [] });
    const outcomes = [
      visit("popular", [true, false]),
      visit("popular", [false, false]),
      visit("popular", [true]),
      visit("merged", [true, true, false]),
      visit("merged", [true]),
    ];
    const visitor = ["P1", "P1", "P2", "M1", "M2"];
    const [row] = prefixStats(outcomes, [5], "popular", (i) => visitor[i] as string);
    // A: P1 (x 1, y 4), P2 (1, 1): R = 2/5, s²x = 0, s²y = 4.5, sxy = 0 → Var = 0.16 · 4.5 / (2 · 2.5²) = 0.0576.
    // B: M1 (2, 3), M2 (1, 1): R = 3/4, s²x = 1/2, s²y = 2, sxy = 1 → Var = (1/2 − 3/2 + 9/8) / (2 · 4) = 1/64.
    expect(row?.abDifference).toBeCloseTo(0.35, 12);
    expect(row?.abP).toBeCloseTo(normalTwoSidedP(0.35 / Math.sqrt(0.0576 + 1 / 64)), 12);
  });

  it("detection is the first prefix from which every p-value is below 0.05 with the right sign", () => {
    const rows = (ps: Array<number | null>, right = ps.map(() => true)) =>
      ps.map((p, i) => ({ visits: (i + 1) * 10, p, right: right[i] as boolean }));
    expect(detectionVisits(rows([0.2, 0.01, 0.3, 0.01, 0.001]))).toBe(40);
    expect(detectionVisits(rows([0.01, 0.01, 0.01]))).toBe(10);
    expect(detectionVisits(rows([0.01, 0.2]))).toBeNull();
    expect(detectionVisits(rows([null, 0.01]))).toBe(20);
    expect(detectionVisits(rows([0.01, 0.01], [true, false]))).toBeNull();
    // abRows: the right sign is B − A > 0.
    expect(
      abRows([{ visits: 5, abDifference: -0.1, abP: 0.01, wins: 0, losses: 0, ilP: 1 }]).map((r) => r.right),
    ).toEqual([false]);
    expect(prefixesFor(30)).toEqual([2, 4, 6, 8, 10, 12, 15, 20, 25, 30]);
    expect(prefixesFor(31).at(-1)).toBe(31);
  });
});

describe("a visit's events", () => {
  it("are exposures, clicks naming the rec_id and one order of the clicked lines, as the loader reads them", () => {
    const v = visits(1, 3)[0] as SimVisit; // userKey a:inv-inv0 (i = 0)
    const steps = v.steps.map((s, j) => ({ items: s.a, click: j === 1 ? 5 : null }));
    const events = visitEvents(v, AB_EXPERIMENT, "popular", steps, true);
    expect(events.map((e) => e.event)).toEqual([
      "Recommendations Shown",
      "Recommendations Shown",
      "Product Clicked",
      "Recommendations Shown",
      "Order Completed",
    ]);
    const recId = recIdOf(AB_EXPERIMENT.id, v.id, 2);
    const [exposure] = events.filter((e) => e.messageId === `exposure-${recId}`);
    expect(exposure?.sourceId).toBe("lastmile");
    expect(exposure?.anonymousId).toBe("inv-inv0");
    expect(exposure?.properties).toMatchObject({
      rec_id: recId,
      placement: "pdp",
      context: ["c1"],
      experiment_id: "sim-ab",
      arm: "popular",
    });
    // Step p at time + 10 p s; its click 5 s later; the order after the last step.
    const t0 = v.time * 1000;
    expect(exposure?.timestamp).toBe(new Date(t0 + 20_000).toISOString());
    const clickEvent = events[2];
    expect(clickEvent?.timestamp).toBe(new Date(t0 + 25_000).toISOString());
    expect(clickEvent?.properties).toMatchObject({ rec_id: recId, product_id: "t0-1", position: 5 });
    expect(events[4]?.timestamp).toBe(new Date(t0 + 40_000).toISOString());
    // The warehouse's rows: a click interaction, and a purchase with the UCI line's price and quantity.
    const click = warehouseRows(clickEvent as (typeof events)[number]).interactions;
    expect(click).toMatchObject([{ kind: "click", productId: "t0-1", userKey: "a:inv-inv0" }]);
    const order = warehouseRows(events[4] as (typeof events)[number]).interactions;
    expect(order).toMatchObject([{ kind: "purchase", productId: "t0-1", price: 2.5, quantity: 3 }]);
    expect(warehouseRows(exposure as (typeof events)[number]).interactions).toEqual([]);
    // Interleaved exposures carry their teams; no orders when not asked.
    const il = visitEvents(
      v,
      IL_EXPERIMENT,
      "interleaved",
      [{ items: ["x", "y"], team: ["b", "a"], click: null }],
      false,
    );
    expect(il).toHaveLength(1);
    expect(il[0]?.properties.items).toEqual([
      { product_id: "x", position: 1, team: "b" },
      { product_id: "y", position: 2, team: "a" },
    ]);
  });
});
