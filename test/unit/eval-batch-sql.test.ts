// The evaluation computes the batch lists in TypeScript (eval/methods/batch.ts). This runs that computation on
// the hand-made warehouse of the SQL recommenders' own integration test (test/fixtures/recommenders/fixture.ts)
// and expects the numbers test/integration/recommenders.test.ts expects of the SQL: the two agree.
import { describe, expect, it } from "vitest";
import type { EventType, Session } from "../../eval/data.ts";
import {
  BATCH_DEFAULTS,
  computeBoughtTogether,
  computeModels,
  computePopular,
  computeSimilar,
  userCandidates,
} from "../../eval/methods/batch.ts";
import { product } from "../../src/rank/catalog.ts";
import { INTERACTIONS, PRODUCTS, T } from "../fixtures/recommenders/fixture.ts";

const TYPE: Record<string, EventType> = { view: "view", add_to_cart: "cart", purchase: "purchase" };
// One session per user key (visits are split at 30-minute gaps inside, as the SQL does per user); every user has
// at most one order, so a session's purchases are that order's basket.
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
    expect(of("b4")).toEqual([]);
    const u2 = of("u2");
    expect(u2.map((c) => c.productId)).toEqual(["A", "C", "P", "Q", "R", "E", "S", "D", "F"]);
    expect(u2[0]?.score).toBeCloseTo(5 * decay(29 + 50 / 60) * (8 / Math.sqrt(105)) + 0.15 + 0.002, 9);
    expect(u2[1]?.score).toBeCloseTo(0.2 + (0.01 * 4) / 15, 9);
    const b2 = of("b2").map((c) => c.productId);
    expect(b2).not.toContain("P");
    expect(b2[0]).toBe("S");
    expect(of("b2")[0]?.score).toBeCloseTo(0.5 * (5 / 15) + 0.01 * (5 / 15), 9);
    expect(
      of("u4")
        .map((c) => c.productId)
        .slice(0, 2),
    ).toEqual(["D", "E"]);
  });
});
