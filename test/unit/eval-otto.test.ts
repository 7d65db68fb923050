// The OTTO reader and metric on the 20-session OTTO fixture (../shared/data/otto-fixture): the fixture's published
// counts, the seeded cuts, and the metric recomputed here independently, type by type, for a simple predictor.
import { describe, expect, it } from "vitest";
import { parseOtto, type Session } from "../../eval/data.ts";
import { OttoMetric } from "../../eval/metrics.ts";
import { ottoCases } from "../../eval/protocols.ts";

// Vitest runs from the repository root. node:fs, typed by the little used here: test/unit is type-checked with the Worker's types, not Node's.
const nodeFs = "node:fs";
const { readFileSync } = (await import(nodeFs)) as { readFileSync(path: string, encoding: "utf8"): string };
const sessions: Session[] = parseOtto(readFileSync("../shared/data/otto-fixture/train.jsonl", "utf8"));

describe("the OTTO fixture", () => {
  it("reads 20 sessions, 862 events (800 clicks, 52 carts, 10 orders), 510 items", () => {
    expect(sessions).toHaveLength(20);
    const events = sessions.flatMap((s) => s.events);
    expect(events).toHaveLength(862);
    expect(events.filter((e) => e.type === "view")).toHaveLength(800);
    expect(events.filter((e) => e.type === "cart")).toHaveLength(52);
    expect(events.filter((e) => e.type === "purchase")).toHaveLength(10);
    expect(new Set(events.map((e) => e.item)).size).toBe(510);
    // ts is in ms; times are unix seconds, sorted.
    expect(sessions[0]?.events[0]).toEqual({ item: "1517085", time: 1659304800.025, type: "view" });
    for (const s of sessions)
      s.events.forEach((e, i) => {
        if (i > 0) expect(s.events[i - 1]?.time ?? 0).toBeLessThanOrEqual(e.time);
      });
  });

  it("cuts each session at a seeded position; the truth is what follows", () => {
    const cases = ottoCases(sessions, 42);
    expect(ottoCases(sessions, 42)).toEqual(cases);
    expect(cases).toHaveLength(sessions.filter((s) => s.events.length >= 2).length);
    for (const c of cases) {
      const s = sessions.find((x) => x.id === c.session) as Session;
      const after = s.events.slice(c.input.length);
      expect(c.input.length).toBeGreaterThanOrEqual(1);
      expect(after.length).toBeGreaterThanOrEqual(1);
      expect(c.truth.clicks).toBe(after.find((e) => e.type === "view")?.item ?? null);
      expect([...c.truth.orders].sort()).toEqual(
        [...new Set(after.filter((e) => e.type === "purchase").map((e) => e.item))].sort(),
      );
    }
  });

  it("scores an oracle 1 and an empty predictor 0", () => {
    const cases = ottoCases(sessions, 42);
    const oracle = new OttoMetric();
    const empty = new OttoMetric();
    for (const c of cases) {
      const clicks = c.truth.clicks === null ? [] : [c.truth.clicks];
      oracle.add({ clicks, carts: [...c.truth.carts], orders: [...c.truth.orders] }, c.truth);
      empty.add({ clicks: [], carts: [], orders: [] }, c.truth);
    }
    expect(oracle.result().score).toBeCloseTo(1, 12);
    expect(empty.result().score).toBe(0);
  });

  it("matches a direct computation for 'the session's own items, most recent first'", () => {
    const cases = ottoCases(sessions, 42);
    const metric = new OttoMetric();
    const hits = { clicks: 0, carts: 0, orders: 0 };
    const total = { clicks: 0, carts: 0, orders: 0 };
    for (const c of cases) {
      const list = [...new Set(c.input.map((e) => e.item).reverse())].slice(0, 20);
      metric.add({ clicks: list, carts: list, orders: list }, c.truth);
      if (c.truth.clicks !== null) {
        total.clicks += 1;
        if (list.includes(c.truth.clicks)) hits.clicks += 1;
      }
      for (const type of ["carts", "orders"] as const) {
        const truth = [...c.truth[type]];
        total[type] += Math.min(20, truth.length);
        hits[type] += truth.filter((id) => list.includes(id)).length;
      }
    }
    const r = (t: keyof typeof hits) => (total[t] > 0 ? hits[t] / total[t] : 0);
    const result = metric.result();
    expect(result.clicks).toBeCloseTo(r("clicks"), 12);
    expect(result.carts).toBeCloseTo(r("carts"), 12);
    expect(result.orders).toBeCloseTo(r("orders"), 12);
    expect(result.score).toBeCloseTo(0.1 * r("clicks") + 0.3 * r("carts") + 0.6 * r("orders"), 12);
    // Re-visits are frequent in OTTO: the session's own items find some of what comes next.
    expect(result.score).toBeGreaterThan(0);
  });
});
