// The evaluation computes the batch lists in TypeScript (eval/methods/batch.ts). This runs that computation on
// the hand-made warehouse of the SQL recommenders' own integration test (test/fixtures/recommenders/fixture.ts)
// and expects the numbers test/integration/recommenders.test.ts expects of the SQL: the two agree.
import { describe, expect, it } from "vitest";
import type { EventType, Session } from "../../eval/data.ts";
import {
  BATCH_DEFAULTS,
  computeBoughtTogether,
  computeModels,
  computeNextItems,
  computePopular,
  computeSimilar,
  nextNeighbours,
  userCandidates,
} from "../../eval/methods/batch.ts";
import { NEXT_ITEMS_DEFAULTS, stepUnit } from "../../src/batch/recommenders/next-items.ts";
import { checkUserCandidatesParams, USER_CANDIDATES_DEFAULTS } from "../../src/batch/recommenders/user-candidates.ts";
import { USER_LIST_MAX } from "../../src/publish/sources.ts";
import { product } from "../../src/rank/catalog.ts";
import { INTERACTIONS, KITCHEN, PRODUCTS, T } from "../fixtures/recommenders/fixture.ts";

const TYPE: Record<string, EventType> = { view: "view", add_to_cart: "cart", purchase: "purchase" };
// One session per user key (visits are split at 30-minute gaps inside, as the SQL does per user), its events in
// time order and an order's lines in position order (the SQL's event_time, message_id, position). Every user but
// r1 has at most one order, so a session's purchases are that order's basket; r1's orders are older than the
// bought-together window.
const byUser = new Map<string, Session>();
for (const r of INTERACTIONS) {
  let s = byUser.get(r.userKey);
  if (!s) {
    s = { id: r.userKey, user: r.userKey, events: [] };
    byUser.set(r.userKey, s);
  }
  const type = TYPE[r.kind];
  if (!type) throw new Error(`fixture kind ${r.kind}`);
  s.events.push({ item: r.productId, time: r.at.getTime() / 1000, type });
}
const sessions = [...byUser.values()];
for (const s of sessions) s.events.sort((a, b) => a.time - b.time);
const asOf = T.getTime() / 1000;
const categories = new Map(
  PRODUCTS.map((p) => [
    p.id,
    product(p.id, { category: p.category, price: null, inStock: true, visible: true }).category,
  ]),
);
const categoryOf = (id: string) => categories.get(id) ?? null;
const decay = (ageHours: number) => 0.5 ** (ageHours / (14 * 24));
const bought = (ageDays: number) => 0.5 ** (ageDays / 180);
const listOf = (m: Map<string, ReadonlyArray<readonly [string, number]>>) =>
  [...m]
    .sort(([a], [b]) => (a < b ? -1 : 1))
    .flatMap(([a, list]) => list.map(([b, s], i) => `${a}→${b}#${i + 1} ${s}`));

describe("the TypeScript batch lists agree with the SQL recommenders' hand-worked fixture", () => {
  it("similar", () => {
    const similar = computeSimilar(sessions, asOf, BATCH_DEFAULTS.similar);
    const rows = [...similar].flatMap(([a, list]) => list.map(([b], i) => `${a}→${b}#${i + 1}`)).sort();
    expect(rows).toEqual(["A→B#1", "B→A#1", "D→E#1", "E→D#1", "P→Q#1", "P→R#2", "Q→P#1", "R→P#1"]);
    expect(similar.get("A")?.[0]?.[1]).toBeCloseTo(8 / Math.sqrt(105), 9);
    expect(similar.get("D")?.[0]?.[1]).toBeCloseTo(4 / Math.sqrt(20), 9);
    expect(similar.get("P")?.[1]?.[1]).toBeCloseTo(50 / Math.sqrt(3750), 9);
  });

  it("bought together", () => {
    const bt = computeBoughtTogether(sessions, asOf, BATCH_DEFAULTS.boughtTogether);
    expect([...bt].map(([a, list]) => [a, list.map(([b, s]) => [b, Number(s.toFixed(9))])]).sort()).toEqual([
      [
        "P",
        [
          ["Q", Number((2 / 3).toFixed(9))],
          ["R", Number((2 / 3).toFixed(9))],
        ],
      ],
      ["Q", [["P", 1]]],
      ["R", [["P", 1]]],
    ]);
  });

  it("next items", () => {
    // A 90-day window (the default is a year), as the SQL test: the fixture's window edge sits at 90 days.
    const ninety = { ...BATCH_DEFAULTS.nextItems, windowDays: 90 };
    const next = computeNextItems(sessions, asOf, ninety);
    expect(listOf(next)).toEqual([
      "A→B#1 2.5",
      "A→C#2 1",
      "B→C#1 1",
      "C→F#1 1",
      "C→G#2 1",
      "C→S#3 0.5",
      "D→E#1 2.5",
      `F→S#1 ${4 / 3}`,
      "F→C#2 1",
      "P→Q#1 2",
      "P→R#2 1.5",
      "Q→R#1 1",
      "W2→W3#1 1",
    ]);
    // The evaluation's entry point and computeModels give the same lists as computeNextItems.
    expect(nextNeighbours({ sessions, asOf })).toEqual(computeNextItems(sessions, asOf, BATCH_DEFAULTS.nextItems));
    expect(computeModels(sessions, asOf, { ...BATCH_DEFAULTS, nextItems: ninety }, categoryOf).next).toEqual(next);
    // The last 3 events of a visit, at most 2 steps apart, score ≥ 1: F loses F→C and the first F's 1/3 to S,
    // C→S (0.5) is dropped.
    const cut = computeNextItems(sessions, asOf, {
      ...NEXT_ITEMS_DEFAULTS,
      windowDays: 90,
      maxEventsPerSession: 3,
      maxSteps: 2,
      minScore: 1,
    });
    expect(cut.get("F")).toEqual([["S", 1]]);
    expect(cut.get("C")).toEqual([
      ["F", 1],
      ["G", 1],
    ]);
    expect([...cut.values()].flat()).toHaveLength(11);
    expect(nextNeighbours({ sessions, asOf }, 1, 1).get("A")).toEqual([["B", 2]]);
    expect(() => nextNeighbours({ sessions, asOf }, 21)).toThrow(/maxSteps/);
    // LCM(1…10) and LCM(1…20): the whole-number units 1/x is summed in.
    expect(stepUnit(10)).toBe(2520);
    expect(stepUnit(20)).toBe(232_792_560);
  });

  it("popular and trending", () => {
    const p = computePopular(sessions, asOf, BATCH_DEFAULTS.popular, categoryOf);
    expect(p.popular.map(([id, s]) => `${id}:${s}`)).toEqual([
      "P:15",
      "B:10",
      "Q:10",
      "R:10",
      "E:5",
      "S:5",
      "C:4",
      "A:3",
      "D:2",
      "F:2",
    ]);
    expect(p.popularByCategory.get("mugs")?.map(([id, s]) => `${id}:${s}`)).toEqual(["B:10", "C:4", "A:3"]);
    expect(p.popularByCategory.get("cards & wrap")?.map(([id]) => id)).toEqual(["P", "Q", "R", "S"]);
    expect(p.trending.map(([id]) => id)).toEqual(["E", "C"]);
    expect(p.trending[0]?.[1]).toBeCloseTo(2, 9);
    expect(p.trending[1]?.[1]).toBeCloseTo(56 / 36, 9);
  });

  it("user candidates", () => {
    const models = computeModels(sessions, asOf, BATCH_DEFAULTS, categoryOf);
    const of = (user: string) =>
      userCandidates(byUser.get(user)?.events ?? [], asOf, models, BATCH_DEFAULTS.userCandidates, categoryOf);
    // b4: too thin a history for candidates, but its purchase 7 days ago is a buy-again entry.
    expect(of("b4")).toEqual([{ productId: "S", score: bought(7), reason: "bought_before" }]);
    const u2 = of("u2");
    expect(u2.map((c) => `${c.productId} ${c.reason}`)).toEqual([
      "A similar_to:B",
      "C category:mugs",
      "P popular",
      "Q popular",
      "R popular",
      "E popular",
      "S popular",
      "D popular",
      "F popular",
      "B bought_before",
    ]);
    expect(u2[0]?.score).toBeCloseTo(5 * decay(29 + 50 / 60) * (8 / Math.sqrt(105)) + 0.15 + 0.002, 9);
    expect(u2[1]?.score).toBeCloseTo(0.2 + (0.01 * 4) / 15, 9);
    expect(u2[9]?.score).toBeCloseTo(0.995225, 6);
    const b2 = of("b2");
    const b2Candidates = b2.filter((c) => c.reason !== "bought_before").map((c) => c.productId);
    expect(b2Candidates).not.toContain("P");
    expect(b2[0]).toMatchObject({ productId: "S", reason: "category:cards & wrap" });
    expect(b2[0]?.score).toBeCloseTo(0.5 * (5 / 15) + 0.01 * (5 / 15), 9);
    expect(b2.slice(-3).map((c) => c.productId)).toEqual(["P", "Q", "R"]);
    for (const c of b2.slice(-3)) expect(c.score).toBeCloseTo(bought(9), 9);
    // r1 (no history): 20 buy-again entries, K05 and K22 (bought twice) first, then 18 of the 20 tied products in
    // id order; K20, K21 cut, K23 (400 days old) out of the window.
    const r1 = of("r1");
    expect(r1.map((c) => c.productId)).toEqual(["K05", "K22", ...KITCHEN.slice(0, 19).filter((k) => k !== "K05")]);
    expect(r1.every((c) => c.reason === "bought_before")).toBe(true);
    expect(r1[0]?.score).toBeCloseTo(0.777918, 6);
    expect(r1[1]?.score).toBe(r1[0]?.score);
    expect(r1[2]?.score).toBeCloseTo(0.31498, 5);
    expect(
      of("u4")
        .map((c) => c.productId)
        .slice(0, 2),
    ).toEqual(["D", "E"]);
  });

  it("keeps a user's row within what the publisher ships", () => {
    const d = USER_CANDIDATES_DEFAULTS;
    expect(d.topN + d.buyAgainItems).toBeLessThanOrEqual(USER_LIST_MAX);
    expect(() => checkUserCandidatesParams(d)).not.toThrow();
    expect(() => checkUserCandidatesParams({ ...d, buyAgainItems: USER_LIST_MAX - d.topN + 1 })).toThrow(/exceeds/);
  });
});
