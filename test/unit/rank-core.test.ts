// The pure ranking core (src/rank/core.ts). Every expected score is worked out by hand from the inputs and the
// documented formulas: a list's scores are divided by its best one, context/session neighbours are blended by seed
// weight (recency 0.5^(i / halfLife) for session seeds), and the score is Σ weight × feature (+ rule amounts).
import { describe, expect, it } from "vitest";
import {
  ADJACENT_SPAN,
  CatalogueOrder,
  orderLift,
  orderPredictive,
  type Product,
  product,
} from "../../src/rank/catalog.ts";
import {
  DEFAULT_RANKING_CONFIG,
  MAX_RULE_AMOUNT,
  type MerchandisingRule,
  type RankingConfig,
} from "../../src/rank/config.ts";
import { type RankInput, type RankOutput, rank, type Scored, type SessionSignals } from "../../src/rank/core.ts";

const NOW = Date.parse("2026-06-01T12:00:00Z");

type Row = { category?: string | null; price?: number | null; inStock?: boolean; visible?: boolean; title?: string };

function catalogOf(rows: Record<string, Row>): (id: string) => Product | undefined {
  const map = new Map<string, Product>();
  for (const [id, r] of Object.entries(rows)) {
    map.set(
      id,
      product(id, {
        category: r.category ?? null,
        price: r.price === undefined ? 10 : r.price,
        inStock: r.inStock ?? true,
        visible: r.visible ?? true,
        title: r.title ?? "",
        tags: (r as { tags?: string[] }).tags ?? [],
      }),
    );
  }
  return (id) => map.get(id);
}

/** Products with no category (no diversity cap) and default flags. */
const plain = (...ids: string[]): Record<string, Row> => Object.fromEntries(ids.map((id) => [id, {}]));

function input(overrides: Partial<RankInput> & { rows?: Record<string, Row> }): RankInput {
  const { rows, ...rest } = overrides;
  return {
    placement: "home",
    mode: "recommend",
    limit: 10,
    now: NOW,
    context: [],
    query: null,
    filters: {},
    session: null,
    batch: null,
    similar: new Map(),
    boughtTogether: new Map(),
    trending: null,
    popular: null,
    popularByCategory: () => undefined,
    catalog: catalogOf(rows ?? {}),
    ...rest,
  };
}

function session(s: Partial<SessionSignals>): SessionSignals {
  return {
    viewed: [],
    carted: [],
    purchased: [],
    searches: [],
    sessionCategories: new Map(),
    longTermCategories: new Map(),
    priceBands: new Map(),
    active: true,
    ...s,
  };
}

const batch = (...pairs: Scored[]) => pairs.map(([productId, score]) => ({ productId, score }));
const ids = (out: RankOutput) => out.items.map((i) => i.productId);
const item = (out: RankOutput, id: string) => {
  const found = out.items.find((i) => i.productId === id);
  if (!found) throw new Error(`${id} is not in the answer: ${ids(out).join(", ")}`);
  return found;
};
const withConfig = (patch: Partial<RankingConfig>): RankingConfig => ({ ...DEFAULT_RANKING_CONFIG, ...patch });
const withRules = (...rules: MerchandisingRule[]) => withConfig({ rules });

describe("next items, buy again and content", () => {
  // Weights given here, not read from the default: the expectations are worked out with them.
  const W = { ...DEFAULT_RANKING_CONFIG.weights, sequence: 10, buyAgain: 4, content: 2, covisit: 1, context: 1 };
  const config = withConfig({ weights: W });

  it("scores what followed the product in view, and less what followed the session's recent items", () => {
    const out = rank(
      input({
        placement: "pdp",
        rows: plain("x", "v1", "a", "b", "c"),
        context: ["x"],
        session: session({ viewed: ["v1"] }),
        next: new Map<string, Scored[]>([
          [
            "x",
            [
              ["a", 4],
              ["b", 2],
            ],
          ],
          [
            "v1",
            [
              ["c", 6],
              ["a", 3],
            ],
          ],
        ]),
        explain: true,
      }),
      config,
    );
    // Seeds: x weight 1, v1 weight SESSION_SEQUENCE_SHARE (0.15) × recency(0) = 0.15; total 1.15.
    // Values ½ · score/max + ½ / (1 + rank/5): a head of a list 1, a second one ½ · ½ + ½ / 1.2 = 2/3 (b, a in v1's).
    // a = (1 + 0.15 · 2/3) / 1.15 = 1.1 / 1.15; b = (2/3) / 1.15; c = 0.15 / 1.15.
    expect(ids(out)).toEqual(["a", "b", "c"]);
    expect(item(out, "a").score).toBeCloseTo((10 * 1.1) / 1.15, 5);
    expect(item(out, "b").score).toBeCloseTo((10 * (2 / 3)) / 1.15, 5);
    expect(item(out, "c").score).toBeCloseTo((10 * 0.15) / 1.15, 5);
    expect(item(out, "a").reasons).toEqual(["next_after:x"]);
    expect(item(out, "c").reasons).toEqual(["next_after:v1"]);
    // What follows the product in view is a context candidate; what follows only a session item a session one.
    expect(item(out, "a").sources).toEqual(["context"]);
    expect(item(out, "c").sources).toEqual(["session"]);
  });

  it("never proposes the seed itself, and without next lists the feature is zero", () => {
    const out = rank(
      input({
        placement: "pdp",
        rows: plain("x", "a"),
        context: ["x"],
        next: new Map<string, Scored[]>([
          [
            "x",
            [
              ["x", 9],
              ["a", 3],
            ],
          ],
        ]),
        popular: [["a", 1]],
        explain: true,
      }),
      config,
    );
    // The list is scaled by its best entry (9), and ranked after it, even though that entry, the seed itself, is
    // never proposed: ½ · 3/9 + ½ / (1 + 1/5).
    expect(ids(out)).toEqual(["a"]);
    expect(item(out, "a").contributions?.sequence).toBeCloseTo(10 * (0.5 / 3 + 0.5 / 1.2), 5);
    const none = rank(
      input({ placement: "pdp", rows: plain("x", "a"), context: ["x"], popular: [["a", 1]], explain: true }),
      config,
    );
    expect(none.items[0]?.contributions?.sequence).toBeUndefined();
  });

  it("buy again: the user's earlier purchases, scaled to the best, on placements that name the source", () => {
    const buyAgain: Scored[] = [
      ["r1", 2],
      ["r2", 0.5],
    ];
    const out = rank(
      input({ rows: plain("r1", "r2", "b1"), batch: batch(["b1", 1]), buyAgain, explain: true }),
      config,
    );
    // home has the buy_again source: r1 = 4 × 1, r2 = 4 × 0.25, b1 = batch weight × 1.
    expect(item(out, "r1").score).toBe(4);
    expect(item(out, "r2").score).toBe(1);
    expect(item(out, "r1").reasons).toEqual(["bought_before"]);
    expect(item(out, "r1").sources).toEqual(["buy_again"]);
    expect(ids(out)).toEqual(["r1", "b1", "r2"].sort((a, b) => item(out, b).score - item(out, a).score));
    // pdp does not list the source: the purchases are no candidates there.
    const pdp = rank(
      input({ placement: "pdp", rows: plain("r1", "r2", "b1"), batch: batch(["b1", 1]), buyAgain }),
      config,
    );
    expect(ids(pdp)).toEqual(["b1"]);
    // A purchase of this session is still excluded on home ("purchased"), whatever the batch says.
    const excluded = rank(
      input({ rows: plain("r1", "r2"), buyAgain, session: session({ purchased: ["r1"] }), whyNot: "r1" }),
      config,
    );
    expect(ids(excluded)).toEqual(["r2"]);
    expect(excluded.whyNot).toEqual({ productId: "r1", status: "removed", rule: "purchased" });
  });

  it("content: the share of the viewed product's title words that start a word of the candidate", () => {
    const out = rank(
      input({
        placement: "pdp",
        rows: {
          x: { title: "Jumbo Bag Red Retrospot" },
          a: { title: "Jumbo bag pink polkadot" },
          b: { title: "Lunch bag red retrospot" },
          c: { title: "Paper chain kit" },
        },
        context: ["x"],
        popular: [
          ["a", 1],
          ["b", 1],
          ["c", 1],
        ],
        explain: true,
      }),
      config,
    );
    // x's words: jumbo, bag, red, retrospot. a matches jumbo, bag (2/4); b bag, red, retrospot (3/4); c none.
    expect(item(out, "a").contributions?.content).toBe(2 * 0.5);
    expect(item(out, "b").contributions?.content).toBe(2 * 0.75);
    expect(item(out, "c").contributions?.content).toBeUndefined();
    expect(ids(out)).toEqual(["b", "a", "c"]);
    expect(item(out, "b").reasons[0]).toBe("similar_content");
  });
});

describe("catalogue neighbours (adjacency)", () => {
  it("orders ids by code units and gives the neighbours within the span, nearest first", () => {
    const order = new CatalogueOrder(["22699", "22697", "85123A", "22698", "22697", "22700", "85123B"]);
    expect(order.size).toBe(6);
    // Sorted: 22697 22698 22699 22700 85123A 85123B.
    expect(order.near("22699", 2)).toEqual([
      ["22698", 1],
      ["22700", 1],
      ["22697", 2],
      ["85123A", 2],
    ]);
    expect(order.near("22697", 2)).toEqual([
      ["22698", 1],
      ["22699", 2],
    ]);
    expect(order.near("85123B", 1)).toEqual([["85123A", 1]]);
    expect(order.near("22696", 3)).toEqual([]);
    expect(new CatalogueOrder([]).near("x", 3)).toEqual([]);
  });

  it("measures how far above chance the order puts each product's neighbours, and is predictive from 5× on", () => {
    // 100 ids 000 … 099; span 2: a random order puts 4 of 99 others near a product (chance 4/99).
    const order = new CatalogueOrder(Array.from({ length: 100 }, (_, i) => String(i).padStart(3, "0")));
    // The first 3 neighbours of each product count (as the rank ≤ top of the SQL): 010's are 011 (1 place: near),
    // 200 (not in the catalogue: no pair) and 013 (3 places: outside span 2); 009 is its 4th. 050's: 090, 052 (near),
    // 051 (near). 999 is not in the catalogue. Pairs 2 + 3, near 1 + 2.
    const lists = new Map<string, Scored[]>([
      [
        "010",
        [
          ["011", 5],
          ["200", 4],
          ["013", 3],
          ["009", 2],
        ],
      ],
      [
        "050",
        [
          ["090", 4],
          ["052", 3],
          ["051", 2],
          ["049", 1],
        ],
      ],
      ["999", [["000", 1]]],
    ]);
    const s = order.measure(lists, 3, 2);
    expect(s).toEqual({ pairs: 5, near: 3, products: 100, span: 2 });
    expect(orderLift(s)).toBeCloseTo(3 / 5 / (4 / 99), 9);
    // Predictive needs ≥ 5× chance on ≥ 100 pairs; unknown (null) or too few pairs → no.
    expect(orderPredictive({ ...s, pairs: 100, near: 60 })).toBe(true);
    // 5 × 4/99 = 0.202: 21 of 100 pairs near is enough, 20 is not.
    expect(orderPredictive({ ...s, pairs: 100, near: 21 })).toBe(true);
    expect(orderPredictive({ ...s, pairs: 100, near: 20 })).toBe(false);
    expect(orderPredictive(s)).toBe(false);
    expect(orderPredictive(null)).toBe(false);
    expect(orderPredictive(undefined)).toBe(false);
    // Every product near every other (a catalogue within the span): the order says nothing.
    expect(orderLift({ pairs: 500, near: 500, products: 20, span: 12 })).toBe(1);
  });

  const W = { ...DEFAULT_RANKING_CONFIG.weights, adjacent: 2, context: 1 };
  const ids5 = ["p1", "p2", "p3", "p4", "p5"];
  const pdp = (over: Partial<RankInput> & { rows?: Record<string, Row> } = {}) =>
    input({
      placement: "pdp",
      rows: plain(...ids5, "far"),
      context: ["p3"],
      catalogueOrder: new CatalogueOrder([...ids5, "far"]),
      explain: true,
      ...over,
    });

  it("proposes the product in view's catalogue neighbours, valued 1 / √distance, with the seed as reason", () => {
    expect(ADJACENT_SPAN).toBeGreaterThanOrEqual(2);
    const out = rank(pdp(), withConfig({ weights: W }));
    // p3 is in view (excluded); p2, p4 at distance 1 (value 1), p1, p5 at 2 (1/√2); "far" at 3 (1/√3).
    expect(item(out, "p2").contributions?.adjacent).toBe(2);
    expect(item(out, "p4").contributions?.adjacent).toBe(2);
    expect(item(out, "p1").contributions?.adjacent).toBeCloseTo(2 / Math.SQRT2, 6);
    expect(item(out, "far").contributions?.adjacent).toBeCloseTo(2 / Math.sqrt(3), 6);
    expect(ids(out)).toEqual(["p2", "p4", "p1", "p5", "far"]);
    expect(item(out, "p2").reasons).toEqual(["catalogue_neighbour:p3"]);
    expect(item(out, "p2").sources).toEqual(["context"]);
    expect(out.stats.removed.viewing).toBeUndefined();
  });

  it("keeps the best context product's value, and the feature adds to the others", () => {
    const out = rank(
      pdp({
        placement: "cart",
        context: ["p1", "p5"],
        similar: new Map<string, Scored[]>([["p1", [["p4", 1]]]]),
      }),
      withConfig({ weights: W }),
    );
    // p4: distance 1 from p5 (1) beats distance 3 from p1; plus context 1 × (½ · 1 + ½) / 2 seeds = 0.5.
    expect(item(out, "p4").contributions).toEqual({ adjacent: 2, context: 0.5 });
    expect(item(out, "p4").reasons).toEqual(["catalogue_neighbour:p5", "similar_to:p1"]);
    expect(item(out, "p2").reasons).toEqual(["catalogue_neighbour:p1"]);
  });

  it("removes ineligible neighbours, and weight 0 or no order turns the source off", () => {
    const rows = { ...plain(...ids5, "far"), p2: { inStock: false }, p4: { visible: false } };
    const out = rank(pdp({ rows }), withConfig({ weights: W }));
    expect(ids(out)).toEqual(["p1", "p5", "far"]);
    expect(out.stats.removed).toMatchObject({ out_of_stock: 1, hidden: 1 });
    const off = rank(pdp(), withConfig({ weights: { ...W, adjacent: 0 } }));
    expect(off.items).toEqual([]);
    expect(rank(pdp({ catalogueOrder: null }), withConfig({ weights: W })).items).toEqual([]);
    // Home has no context product: nothing is adjacent.
    expect(rank(pdp({ placement: "home", context: [] }), withConfig({ weights: W })).items).toEqual([]);
  });
});

describe("candidates and features", () => {
  it("takes batch, trending and popular candidates and scores them weight × (score / best of its list)", () => {
    const out = rank(
      input({
        rows: plain("b1", "b2", "t1", "t2", "p1", "p2"),
        batch: batch(["b1", 4], ["b2", 2]),
        trending: [
          ["t1", 10],
          ["t2", 5],
        ],
        popular: [
          ["p1", 8],
          ["p2", 2],
        ],
      }),
      DEFAULT_RANKING_CONFIG,
    );
    // batch 1.0 × {1, 0.5}; trending 0.3 × {1, 0.5}; popularity 0.2 × {1, 0.25}
    expect(out.items.map((i) => [i.productId, i.score])).toEqual([
      ["b1", 1],
      ["b2", 0.5],
      ["t1", 0.3],
      ["p1", 0.2],
      ["t2", 0.15],
      ["p2", 0.05],
    ]);
    expect(item(out, "b1").reasons).toEqual(["batch"]);
    expect(item(out, "t1").reasons).toEqual(["trending"]);
    expect(item(out, "p1").reasons).toEqual(["popular_fallback"]);
    expect(out.stats.bySource).toEqual({ batch: 2, trending: 2, popular: 2 });
    expect(out.stats.candidates).toBe(6);
  });

  it("similar items leave out the product itself and what the visitor carted or bought; a rerank keeps them", () => {
    const rows = plain("x", "s1", "s2", "s3");
    const similar = new Map<string, Scored[]>([
      [
        "x",
        [
          ["s1", 0.9],
          ["s2", 0.8],
          ["s3", 0.7],
        ],
      ],
    ]);
    const visitor = session({ carted: ["s1"], purchased: ["s2"] });
    const out = rank(
      input({ mode: "similar", context: ["x"], rows, similar, session: visitor }),
      DEFAULT_RANKING_CONFIG,
    );
    expect(ids(out)).toEqual(["s3"]);
    const rerank = rank(
      input({
        mode: "rerank",
        rows,
        session: visitor,
        candidates: ["s1", "s2", "x"].map((productId) => ({ productId })),
      }),
      DEFAULT_RANKING_CONFIG,
    );
    expect(ids(rerank).sort()).toEqual(["s1", "s2", "x"]);
  });

  it("takes context neighbours (similar and bought together) of the viewed product on pdp", () => {
    const out = rank(
      input({
        placement: "pdp",
        context: ["x"],
        rows: plain("x", "s1", "s2", "s3"),
        similar: new Map([
          [
            "x",
            [
              ["s1", 0.8],
              ["s2", 0.4],
            ],
          ],
        ]),
        boughtTogether: new Map([
          [
            "x",
            [
              ["s2", 1],
              ["s3", 0.5],
            ],
          ],
        ]),
        explain: true,
      }),
      DEFAULT_RANKING_CONFIG,
    );
    // Values ½ · score/max + ½ / (1 + rank/5): s1: similar 1; s2: similar ½ · ½ + ½ / 1.2 = 2/3 + bought together 1,
    // capped at 1; s3: 2/3. Context weight 2. s1 and s2 tie at 2: productId decides.
    expect(out.items.map((i) => [i.productId, i.score])).toEqual([
      ["s1", 2],
      ["s2", 2],
      ["s3", 1.333333],
    ]);
    expect(item(out, "s1").reasons).toEqual(["similar_to:x"]);
    // s2's strongest part is the bought-together one (1 > 2/3).
    expect(item(out, "s2").reasons).toEqual(["bought_together:x"]);
    expect(item(out, "s3").reasons).toEqual(["bought_together:x"]);
    expect(item(out, "s1").contributions).toEqual({ context: 2 });
    expect(item(out, "s1").sources).toEqual(["context"]);
  });

  it("computes a list's values once per list object, and one call's use of them never changes another's", () => {
    // The same list objects reach many calls (the Worker keeps lists in the isolate): here one neighbour list serves
    // as the context's list in one call and as a session seed's in the next, and one batch list serves both.
    const shared: Scored[] = [
      ["a", 4],
      ["b", 2],
    ];
    const batchList = batch(["b", 6], ["c", 3]);
    const rows = plain("x", "v1", "a", "b", "c");
    const config = withConfig({ weights: { ...DEFAULT_RANKING_CONFIG.weights, context: 1, covisit: 1, batch: 1 } });
    const asContext = () =>
      rank(
        input({ placement: "pdp", rows, context: ["x"], similar: new Map([["x", shared]]), batch: batchList }),
        config,
      );
    const asSession = () =>
      rank(
        input({
          rows,
          session: session({ viewed: ["v1"] }),
          similar: new Map([["v1", shared]]),
          batch: batchList,
        }),
        config,
      );
    const scores = (out: RankOutput) => Object.fromEntries(out.items.map((i) => [i.productId, i.score]));
    const first = asContext();
    const second = asSession();
    // Values: a 1; b ½ · ½ + ½ / (1 + 1/5) = 2/3. Batch: b 1, c ½. One seed of weight 1 either way.
    expect(scores(first)).toEqual({ a: 1, b: 1.666667, c: 0.5 });
    expect(item(first, "a").reasons).toEqual(["similar_to:x"]);
    expect(scores(second)).toEqual({ a: 1, b: 1.666667, c: 0.5 });
    expect(item(second, "a").reasons).toEqual(["similar_to:v1"]);
    // Again, after both: the same answers; and fresh copies of the lists give the same answers too.
    expect(asContext()).toEqual(first);
    expect(asSession()).toEqual(second);
    const copy = rank(
      input({
        rows,
        session: session({ viewed: ["v1"] }),
        similar: new Map([["v1", shared.map(([id, s]) => [id, s] as const)]]),
        batch: batchList.map((b) => ({ ...b })),
      }),
      config,
    );
    expect(copy).toEqual(second);
  });

  it("blends session seeds by recency and brings the popular products of the strongest session categories", () => {
    const out = rank(
      input({
        rows: { v1: {}, v2: {}, n1: {}, n2: {}, c1: { category: "shoes" }, c2: { category: "hats" } },
        session: session({ viewed: ["v1", "v2"], sessionCategories: new Map([["shoes", 1]]) }),
        similar: new Map<string, Scored[]>([
          ["v1", [["n1", 3]]],
          ["v2", [["n2", 7]]],
        ]),
        popularByCategory: (c) => (c === "shoes" ? [["c1", 5]] : c === "hats" ? [["c2", 5]] : undefined),
        explain: true,
      }),
      withConfig({ weights: { ...DEFAULT_RANKING_CONFIG.weights, covisit: 1.5 } }),
    );
    // Seed weights 1 and 0.5^(1/2); n1 = 1 / (1 + √½), n2 = √½ / (1 + √½); covisit weight 1.5 (given).
    const w2 = Math.SQRT1_2;
    const n1 = 1.5 * (1 / (1 + w2));
    const n2 = 1.5 * (w2 / (1 + w2));
    expect(ids(out)).toEqual(["n1", "c1", "n2"]);
    expect(item(out, "n1").score).toBeCloseTo(n1, 5);
    expect(item(out, "n2").score).toBeCloseTo(n2, 5);
    expect(item(out, "n1").reasons).toEqual(["similar_to:v1"]);
    expect(item(out, "n2").reasons).toEqual(["similar_to:v2"]);
    // c1: sessionAffinity 1 × 0.8; hats is not a session category, so c2 is never a candidate.
    expect(item(out, "c1").score).toBe(0.8);
    expect(item(out, "c1").reasons).toEqual(["session_affinity:shoes"]);
    expect(item(out, "c1").sources).toEqual(["session"]);
    expect(out.stats.bySource).toEqual({ session: 3 });
  });

  it("adds long-term affinity and price band features from the session", () => {
    const out = rank(
      input({
        rows: { a: { category: "lamps", price: 30 }, b: { price: 5 } },
        popular: [
          ["a", 1],
          ["b", 1],
        ],
        session: session({
          longTermCategories: new Map([["lamps", 0.5]]),
          priceBands: new Map([["25-50", 1]]),
        }),
        explain: true,
      }),
      DEFAULT_RANKING_CONFIG,
    );
    // a: popularity 0.2 + longTermAffinity 0.4 × 0.5 + priceBand 0.2 × 1 = 0.6; b: popularity 0.2.
    expect(item(out, "a").score).toBeCloseTo(0.6, 6);
    expect(item(out, "a").contributions).toEqual({ popularity: 0.2, longTermAffinity: 0.2, priceBand: 0.2 });
    expect(item(out, "a").reasons).toContain("long_term_affinity:lamps");
    expect(item(out, "b").score).toBe(0.2);
  });

  it("orders ties by productId, whatever order the candidates arrived in", () => {
    const rows = plain("d", "a", "c", "b");
    const one = rank(
      input({ rows, popular: ["d", "a", "c", "b"].map((id) => [id, 1] as const) }),
      DEFAULT_RANKING_CONFIG,
    );
    const two = rank(
      input({ rows, popular: ["b", "c", "a", "d"].map((id) => [id, 1] as const) }),
      DEFAULT_RANKING_CONFIG,
    );
    expect(ids(one)).toEqual(["a", "b", "c", "d"]);
    expect(ids(two)).toEqual(["a", "b", "c", "d"]);
  });
});

describe("exclusions, stock, visibility and filters", () => {
  it("removes the session's purchased, carted and recently viewed products on home", () => {
    const out = rank(
      input({
        rows: plain("e1", "e2", "e3", "ok", "old"),
        session: session({ purchased: ["e1"], carted: ["e2"], viewed: ["e3", "v2", "v3", "v4", "v5", "old"] }),
        batch: batch(["e1", 5], ["e2", 4], ["e3", 3], ["ok", 2], ["old", 1]),
      }),
      DEFAULT_RANKING_CONFIG,
    );
    // "old" is the 6th viewed product: only the seeds.viewed (5) newest are excluded.
    expect(ids(out)).toEqual(["ok", "old"]);
    expect(out.stats.removed).toEqual({ purchased: 1, carted: 1, viewed: 1 });
  });

  it("removes the product being viewed on pdp, but keeps viewed ones there", () => {
    const out = rank(
      input({
        placement: "pdp",
        context: ["e4"],
        rows: plain("e4", "seen", "x"),
        session: session({ viewed: ["seen"] }),
        popular: [
          ["e4", 3],
          ["seen", 2],
          ["x", 1],
        ],
      }),
      DEFAULT_RANKING_CONFIG,
    );
    expect(ids(out)).toEqual(["seen", "x"]);
    expect(out.stats.removed).toEqual({ viewing: 1 });
  });

  it("removes out-of-stock, hidden and unknown products (kept only when the catalogue is unreadable)", () => {
    const rows = { oos: { inStock: false }, hid: { visible: false }, fine: {} };
    const list = batch(["oos", 4], ["hid", 3], ["ghost", 2], ["fine", 1]);
    const out = rank(input({ rows, batch: list }), DEFAULT_RANKING_CONFIG);
    expect(ids(out)).toEqual(["fine"]);
    expect(out.stats.removed).toEqual({ out_of_stock: 1, hidden: 1, unknown_product: 1 });
    const trusting = rank(input({ rows, batch: list, trustUnknown: true }), DEFAULT_RANKING_CONFIG);
    expect(ids(trusting)).toEqual(["ghost", "fine"]);
  });

  it("filters by category, price range and tags", () => {
    const rows: Record<string, Row & { tags?: string[] }> = {
      shoe10: { category: "shoes", price: 10, tags: ["Sale"] },
      shoe30: { category: "shoes", price: 30, tags: ["new"] },
      shoeNoPrice: { category: "shoes", price: null, tags: ["sale"] },
      hat10: { category: "hats", price: 10, tags: ["sale"] },
    };
    const list = batch(["shoe10", 4], ["shoe30", 3], ["shoeNoPrice", 2], ["hat10", 1]);
    const by = (filters: RankInput["filters"]) =>
      ids(rank(input({ rows, batch: list, filters }), DEFAULT_RANKING_CONFIG));
    expect(by({ categories: ["shoes"] })).toEqual(["shoe10", "shoe30", "shoeNoPrice"]);
    expect(by({ minPrice: 20 })).toEqual(["shoe30"]);
    expect(by({ maxPrice: 10 })).toEqual(["shoe10", "hat10"]);
    expect(by({ minPrice: 10, maxPrice: 10 })).toEqual(["shoe10", "hat10"]);
    expect(by({ tags: ["sale"] })).toEqual(["shoe10", "shoeNoPrice", "hat10"]);
    expect(by({ categories: ["shoes"], tags: ["sale"], maxPrice: 20 })).toEqual(["shoe10"]);
    const out = rank(
      input({ rows, batch: list, filters: { categories: ["hats"], minPrice: 15 } }),
      DEFAULT_RANKING_CONFIG,
    );
    // The category filter is checked first: the three shoes are removed by it, the hat by its price.
    expect(out.stats.removed).toEqual({ "filter:category": 3, "filter:price": 1 });
  });

  it("brings a filtered category's popular products when the placement uses popular", () => {
    const out = rank(
      input({
        rows: { h1: { category: "hats" }, s1: { category: "shoes" } },
        popular: [["s1", 1]],
        popularByCategory: (c) => (c === "hats" ? [["h1", 1]] : undefined),
        filters: { categories: ["hats"] },
      }),
      DEFAULT_RANKING_CONFIG,
    );
    expect(ids(out)).toEqual(["h1"]);
  });
});

describe("merchandising rules", () => {
  const rows = { a: {}, b: {}, c: { category: "shoes" }, z: {}, oos: { inStock: false }, d: {} };
  // a 1, b 0.5, c 0.25 (batch), nothing else.
  const base = () => input({ rows, batch: batch(["a", 4], ["b", 2], ["c", 1]), explain: true });

  it("boosts and buries by their amounts and names the rule, a boost among the reasons by its amount", () => {
    const out = rank(
      base(),
      withRules(
        { id: "up", action: "boost", productIds: ["c"], amount: 1 },
        { id: "down", action: "bury", productIds: ["a"], amount: 0.8 },
        { id: "nudge", action: "boost", productIds: ["b"], amount: 0.1 },
      ),
    );
    // c 0.25 + 1 = 1.25; b 0.5 + 0.1 = 0.6; a 1 − 0.8 = 0.2
    expect(out.items.map((i) => [i.productId, i.score])).toEqual([
      ["c", 1.25],
      ["b", 0.6],
      ["a", 0.2],
    ]);
    // Strongest contribution first: c's boost (1) outweighs its batch value (0.25), b's (0.1) does not (0.5).
    expect(item(out, "c").reasons).toEqual(["boosted:up", "batch"]);
    expect(item(out, "b").reasons).toEqual(["batch", "boosted:nudge"]);
    // A bury takes away: it comes last.
    expect(item(out, "a").reasons).toEqual(["batch", "buried:down"]);
    expect(item(out, "c").contributions).toEqual({ batch: 0.25, rules: 1 });
  });

  it("puts a pin's reason first, then the others by contribution, buries last", () => {
    const pin = { id: "top", action: "pin", productIds: ["c"], slot: 1 } as const;
    const bury = { id: "down", action: "bury", productIds: ["c"], amount: 0.1 } as const;
    const boost = { id: "up", action: "boost", productIds: ["c"], amount: 2 } as const;
    // c: boost 2, batch 0.25, bury −0.1
    expect(item(rank(base(), withRules(pin, bury, boost)), "c").reasons).toEqual([
      "pinned:top",
      "boosted:up",
      "batch",
      "buried:down",
    ]);
  });

  it("matches categories normalised", () => {
    const out = rank(base(), withRules({ id: "cat", action: "boost", categories: [" Shoes "], amount: 2 }));
    expect(ids(out)[0]).toBe("c");
    expect(item(out, "c").score).toBe(2.25);
  });

  it("matches categories normalised as the catalogue's (inner whitespace collapsed)", () => {
    const out = rank(
      input({ rows: { a: {}, hd: { category: "Home   Decor" } }, batch: batch(["a", 4], ["hd", 1]) }),
      withRules({ id: "cat", action: "boost", categories: ["HOME \t DECOR"], amount: 2 }),
    );
    // hd 0.25 + 2
    expect(ids(out)).toEqual(["hd", "a"]);
    expect(item(out, "hd").score).toBe(2.25);
  });

  it("applies a rule only inside its time window and on its placements", () => {
    const boost = { id: "w", action: "boost", productIds: ["c"], amount: 1 } as const;
    const first = (rule: MerchandisingRule) => ids(rank(base(), withRules(rule)))[0];
    const iso = (ms: number) => new Date(ms).toISOString();
    expect(first({ ...boost, from: iso(NOW + 60_000) })).toBe("a");
    expect(first({ ...boost, until: iso(NOW - 60_000) })).toBe("a");
    // until is exclusive, from inclusive
    expect(first({ ...boost, until: iso(NOW) })).toBe("a");
    expect(first({ ...boost, from: iso(NOW), until: iso(NOW + 1) })).toBe("c");
    expect(first({ ...boost, placements: ["pdp"] })).toBe("a");
    expect(first({ ...boost, placements: ["pdp", "home"] })).toBe("c");
    // A window the config would refuse (it can reach the core only unvalidated) keeps the rule off: no host-zone
    // reading of a zone-less time, no rollover of 2026-02-30, no locale text.
    for (const from of ["2026-06-01T00:00:00", "2026-02-30T00:00:00Z", "Jun 1 2026", "1"])
      expect(first({ ...boost, from }), from).toBe("a");
    expect(first({ ...boost, until: "2027-02-29T00:00:00Z" })).toBe("a");
  });

  it("keeps every score a finite number with boosts at the largest amount the config accepts", () => {
    const rules = Array.from({ length: 50 }, (_, i) => ({
      id: `max${i}`,
      action: "boost" as const,
      productIds: ["c"],
      amount: MAX_RULE_AMOUNT,
    }));
    const out = rank(base(), withRules(...rules, { id: "down", action: "bury", productIds: ["a"], amount: 1000 }));
    const wire = JSON.parse(JSON.stringify(out.items)) as { productId: string; score: unknown }[];
    expect(wire.map((i) => [i.productId, i.score])).toEqual([
      ["c", 50_000.25],
      ["b", 0.5],
      ["a", -999],
    ]);
  });

  it("scopes rules of rerank and similar by their mode, not by the caller's placement label", () => {
    const rules = withRules(
      { id: "home", action: "boost", productIds: ["c"], amount: 5, placements: ["home"] },
      { id: "rr", action: "boost", productIds: ["b"], amount: 5, placements: ["rerank"] },
    );
    const out = rank(
      input({
        mode: "rerank",
        placement: "home",
        rows,
        candidates: ["a", "b", "c"].map((productId) => ({ productId })),
      }),
      rules,
    );
    // base 1, 2/3, 1/3; b + 5 (rerank rule); c unchanged (the home rule does not apply to a rerank labelled home)
    expect(ids(out)).toEqual(["b", "a", "c"]);
    expect(item(out, "c").reasons).toEqual(["base_score"]);
  });

  it("pins a product to its slot, even one that was not a candidate", () => {
    const out = rank(
      base(),
      withRules(
        { id: "top", action: "pin", productIds: ["z"], slot: 1 },
        { id: "third", action: "pin", productIds: ["a"], slot: 3 },
      ),
    );
    expect(ids(out)).toEqual(["z", "b", "a", "c"]);
    expect(item(out, "z").reasons).toEqual(["pinned:top"]);
    expect(item(out, "a").reasons[0]).toBe("pinned:third");
  });

  it("in a rerank, pins only move the caller's own candidates", () => {
    const rules = withRules(
      { id: "outsider", action: "pin", productIds: ["z"], slot: 1 },
      { id: "own", action: "pin", productIds: ["c"], slot: 1 },
    );
    const out = rank(
      input({
        mode: "rerank",
        rows: { ...rows, ...plain("z") },
        candidates: ["a", "b", "c"].map((productId) => ({ productId })),
      }),
      rules,
    );
    expect(ids(out)).toEqual(["c", "a", "b"]);
    expect(item(out, "c").reasons[0]).toBe("pinned:own");
  });

  it("scales base scores of any finite size without losing the caller's order", () => {
    const scores: Array<[string, number]> = [
      ["a", 1e308],
      ["b", 7],
      ["c", 5],
      ["d", -1e308],
    ];
    const out = rank(
      input({
        mode: "rerank",
        rows: plain("a", "b", "c", "d"),
        candidates: scores.map(([productId, score]) => ({ productId, score })),
      }),
      DEFAULT_RANKING_CONFIG,
    );
    expect(ids(out)).toEqual(["a", "b", "c", "d"]);
    for (const i of out.items) expect(Number.isFinite(i.score)).toBe(true);
  });

  it("pins the first eligible product of the rule, never an ineligible one, and keeps the limit", () => {
    const out = rank(
      { ...base(), limit: 2 },
      withRules(
        { id: "alt", action: "pin", productIds: ["oos", "ghost", "d"], slot: 2 },
        { id: "far", action: "pin", productIds: ["z"], slot: 9 },
      ),
    );
    // d takes slot 2 (oos is out of stock, ghost unknown); z's slot is past the end: z is appended, then cut.
    expect(ids(out)).toEqual(["a", "d"]);
    const wide = rank({ ...base(), limit: 10 }, withRules({ id: "far", action: "pin", productIds: ["z"], slot: 9 }));
    expect(ids(wide)).toEqual(["a", "b", "c", "z"]);
  });

  it("gives a slot two rules pin to the earlier rule; the later one places nothing and takes no organic room", () => {
    // a 1, b 0.5, c 0.25 (batch); z and d are no candidates.
    const rules = withRules(
      { id: "first", action: "pin", productIds: ["z"], slot: 2 },
      { id: "second", action: "pin", productIds: ["d"], slot: 2 },
    );
    const out = rank({ ...base(), limit: 2, whyNot: "d" }, rules);
    expect(ids(out)).toEqual(["a", "z"]);
    expect(item(out, "z").reasons).toEqual(["pinned:first"]);
    expect(out.whyNot).toEqual({ productId: "d", status: "removed", rule: "pin_slot_taken" });
    expect(out.stats.removed).toEqual({ pin_slot_taken: 1 });

    const one = rank(
      { ...base(), limit: 1 },
      withRules(
        { id: "first", action: "pin", productIds: ["z"], slot: 1 },
        { id: "second", action: "pin", productIds: ["d"], slot: 1 },
      ),
    );
    expect(ids(one)).toEqual(["z"]);

    // A candidate whose pin lost keeps its place by score, and a product another rule does pin is not removed.
    const kept = rank(
      { ...base(), limit: 3, whyNot: "z" },
      withRules(
        { id: "first", action: "pin", productIds: ["d"], slot: 1 },
        { id: "second", action: "pin", productIds: ["b"], slot: 1 },
        { id: "third", action: "pin", productIds: ["z"], slot: 1 },
        { id: "fourth", action: "pin", productIds: ["z"], slot: 3 },
      ),
    );
    expect(ids(kept)).toEqual(["d", "a", "z"]);
    expect(kept.whyNot).toEqual({ productId: "z", status: "shown", position: 3, score: 0 });
    expect(kept.stats.removed).toEqual({});
  });

  it("does not pin an excluded product", () => {
    const out = rank(
      { ...base(), session: session({ carted: ["z"] }) },
      withRules({ id: "top", action: "pin", productIds: ["z"], slot: 1 }),
    );
    expect(ids(out)).toEqual(["a", "b", "c"]);
  });

  it("traces and counts a pinned product that no source proposed by the rule that removes it", () => {
    const outOfStock = rank(
      { ...base(), whyNot: "oos" },
      withRules({ id: "promo", action: "pin", productIds: ["oos"], slot: 1 }),
    );
    expect(ids(outOfStock)).toEqual(["a", "b", "c"]);
    expect(outOfStock.whyNot).toEqual({ productId: "oos", status: "removed", rule: "out_of_stock" });
    expect(outOfStock.stats.removed).toEqual({ out_of_stock: 1 });

    const pricey = rank(
      input({
        rows: { ...rows, z: { price: 99 } },
        batch: batch(["a", 4], ["b", 2], ["c", 1]),
        filters: { maxPrice: 50 },
        whyNot: "z",
      }),
      withRules({ id: "promo", action: "pin", productIds: ["z"], slot: 1 }),
    );
    expect(ids(pricey)).toEqual(["a", "b", "c"]);
    expect(pricey.whyNot).toEqual({ productId: "z", status: "removed", rule: "filter:price" });

    // A candidate the rule also names is counted once, by the candidates' own check.
    const both = rank(
      input({ rows, batch: batch(["a", 4], ["oos", 2]), whyNot: "oos" }),
      withRules(
        { id: "promo", action: "pin", productIds: ["oos"], slot: 1 },
        { id: "again", action: "pin", productIds: ["oos"], slot: 2 },
      ),
    );
    expect(both.whyNot).toEqual({ productId: "oos", status: "removed", rule: "out_of_stock" });
    expect(both.stats.removed).toEqual({ out_of_stock: 1 });
  });
});

describe("diversity", () => {
  const rows: Record<string, Row> = {
    s1: { category: "shoes" },
    s2: { category: "shoes" },
    s3: { category: "shoes" },
    s4: { category: "shoes" },
    s5: { category: "shoes" },
    h1: { category: "hats" },
    h2: { category: "hats" },
  };
  const list = batch(["s1", 10], ["s2", 9], ["s3", 8], ["s4", 7], ["s5", 6], ["h1", 5], ["h2", 4]);
  const config = withConfig({ diversity: { maxPerCategory: 2 } });

  it("keeps at most maxPerCategory of a category while others can fill the list", () => {
    const out = rank(input({ rows, batch: list, limit: 4, whyNot: "s3" }), config);
    expect(ids(out)).toEqual(["s1", "s2", "h1", "h2"]);
    expect(out.whyNot).toEqual({ productId: "s3", status: "removed", rule: "diversity" });
  });

  it("fills from the deferred ones when too few others remain, in score order", () => {
    const out = rank(input({ rows, batch: list, limit: 6 }), config);
    expect(ids(out)).toEqual(["s1", "s2", "s3", "s4", "h1", "h2"]);
  });

  it("does not cap a rerank", () => {
    const out = rank(
      input({
        mode: "rerank",
        placement: "rerank",
        rows,
        limit: 4,
        candidates: ["s1", "s2", "s3", "s4", "h1"].map((productId) => ({ productId })),
      }),
      config,
    );
    expect(ids(out)).toEqual(["s1", "s2", "s3", "s4"]);
  });
});

describe("fallback chain", () => {
  it("answers as many items as asked while enough eligible exist, in chain order", () => {
    const rows = plain(
      "x",
      "c1",
      "c2",
      "gone",
      "b1",
      "b2",
      "t1",
      "t2",
      ...Array.from({ length: 6 }, (_, i) => `p${i}`),
    );
    rows.gone = { inStock: false };
    const out = rank(
      input({
        placement: "pdp",
        context: ["x"],
        limit: 8,
        rows,
        similar: new Map<string, Scored[]>([
          [
            "x",
            [
              ["c1", 2],
              ["c2", 1],
              ["gone", 2],
            ],
          ],
        ]),
        batch: batch(["b1", 1], ["b2", 1]),
        trending: [
          ["t1", 1],
          ["t2", 1],
        ],
        popular: Array.from({ length: 6 }, (_, i) => [`p${i}`, 6 - i] as const),
      }),
      DEFAULT_RANKING_CONFIG,
    );
    // context 2 × {1, ½ · ½ + ½ / (1 + 2/5)} (c2 ranks third, after c1 and gone); batch 1; trending 0.3; popularity
    // 0.2 × (6 − i) / 6
    expect(ids(out)).toEqual(["c1", "c2", "b1", "b2", "t1", "t2", "p0", "p1"]);
    expect(out.items).toHaveLength(8);
    expect(item(out, "p0").reasons).toEqual(["popular_fallback"]);
  });

  it("falls all the way to popular when the visitor has nothing", () => {
    const out = rank(
      input({
        limit: 3,
        rows: plain("p1", "p2", "p3", "p4"),
        popular: [
          ["p4", 1],
          ["p3", 2],
          ["p2", 3],
          ["p1", 4],
        ],
      }),
      DEFAULT_RANKING_CONFIG,
    );
    expect(ids(out)).toEqual(["p1", "p2", "p3"]);
    expect(out.items.every((i) => i.reasons[0] === "popular_fallback")).toBe(true);
  });

  it("returns every eligible item when there are fewer than asked", () => {
    const out = rank(
      input({
        limit: 10,
        rows: plain("p1", "p2"),
        popular: [
          ["p1", 2],
          ["p2", 1],
          ["ghost", 3],
        ],
      }),
      DEFAULT_RANKING_CONFIG,
    );
    expect(ids(out)).toEqual(["p1", "p2"]);
  });

  it("fills a short list from the catalogue, below every scored candidate, but never a rerank", () => {
    const rows: Record<string, Row> = { p1: {}, p2: {}, z: {}, y: {}, gone: { inStock: false }, x: {} };
    const scan = () => ["z", "gone", "p1", "y", "x"].map((pid) => catalogOf(rows)(pid) as Product);
    const out = rank(
      input({
        limit: 4,
        rows,
        popular: [
          ["p1", 2],
          ["p2", 1],
        ],
        catalogScan: scan,
        explain: true,
      }),
      withRules({ id: "down", action: "bury", productIds: ["p2"], amount: 3 }),
    );
    // p1 0.2, p2 0.1 − 3; then the first two eligible in the catalogue's order, z and y (gone is out of stock, p1
    // already a candidate; x comes too late), at one score: shown in id order, as every tie.
    expect(ids(out)).toEqual(["p1", "p2", "y", "z"]);
    expect(item(out, "z").reasons).toEqual(["catalog_fill"]);
    // p2's −2.9, less 1
    expect(item(out, "z").score).toBe(-3.9);
    expect(item(out, "y").score).toBe(-3.9);
    // explain: the fill's place is its whole score.
    expect(item(out, "z").contributions).toEqual({ fill: -3.9 });
    expect(item(out, "p2").contributions).toEqual({ popularity: 0.1, rules: -3 });
    expect(out.stats.bySource).toEqual({ popular: 2, catalog: 2 });
    const full = rank(
      input({
        limit: 2,
        rows,
        popular: [
          ["p1", 2],
          ["p2", 1],
        ],
        catalogScan: scan,
      }),
      DEFAULT_RANKING_CONFIG,
    );
    expect(ids(full)).toEqual(["p1", "p2"]);
    const rerank = rank(
      input({
        mode: "rerank",
        placement: "rerank",
        limit: 4,
        rows,
        candidates: [{ productId: "p1" }],
        catalogScan: scan,
      }),
      DEFAULT_RANKING_CONFIG,
    );
    expect(ids(rerank)).toEqual(["p1"]);
  });

  it("names popular (not popular_fallback) when the product came from another source too", () => {
    const out = rank(input({ rows: plain("a"), batch: batch(["a", 1]), popular: [["a", 1]] }), DEFAULT_RANKING_CONFIG);
    expect(item(out, "a").reasons).toEqual(["batch", "popular"]);
  });
});

describe("query match", () => {
  const rows: Record<string, Row> = {
    shoes: { title: "Red Shoes" },
    hat: { title: "Red Hat" },
    lamp: { title: "Desk Lamp" },
  };
  const popular: Scored[] = [
    ["lamp", 1],
    ["hat", 1],
    ["shoes", 1],
  ];

  it("scores the share of query terms a product's words start with", () => {
    const out = rank(input({ rows, popular, query: "red shoe", explain: true }), DEFAULT_RANKING_CONFIG);
    // shoes: red ✓ shoe→shoes ✓ = 1; hat: red ✓ = 0.5; lamp: 0. Query weight 1, plus popularity 0.2 each.
    expect(out.items.map((i) => [i.productId, i.score])).toEqual([
      ["shoes", 1.2],
      ["hat", 0.7],
      ["lamp", 0.2],
    ]);
    expect(item(out, "shoes").reasons).toEqual(["query_match", "popular_fallback"]);
    expect(item(out, "hat").contributions).toEqual({ query: 0.5, popularity: 0.2 });
  });

  it("uses the active session's newest search at half strength, and no search of an inactive one", () => {
    const active = rank(
      input({ rows, popular, session: session({ searches: ["desk", "red"], active: true }) }),
      DEFAULT_RANKING_CONFIG,
    );
    expect(item(active, "lamp").score).toBe(0.7);
    expect(ids(active)[0]).toBe("lamp");
    const idle = rank(
      input({ rows, popular, session: session({ searches: ["desk"], active: false }) }),
      DEFAULT_RANKING_CONFIG,
    );
    expect(item(idle, "lamp").score).toBe(0.2);
  });
});

describe("why-not trace", () => {
  const rows = { a: {}, b: {}, c: {}, oos: { inStock: false }, other: {} };
  const trace = (whyNot: string, limit = 2) =>
    rank(
      input({ rows, limit, whyNot, batch: batch(["a", 4], ["b", 2], ["c", 1], ["oos", 3]), explain: true }),
      DEFAULT_RANKING_CONFIG,
    ).whyNot;

  it("says where a shown product is", () => {
    expect(trace("b")).toEqual({ productId: "b", status: "shown", position: 2, score: 0.5 });
  });

  it("names the rule that removed a product", () => {
    expect(trace("oos")).toEqual({ productId: "oos", status: "removed", rule: "out_of_stock" });
  });

  it("gives the position, score and gap of a product below the cut", () => {
    // c = 1/4 = 0.25, the cut is b at 0.5
    expect(trace("c")).toEqual({
      productId: "c",
      status: "below_cut",
      position: 3,
      score: 0.25,
      cutScore: 0.5,
      gap: 0.25,
    });
  });

  it("measures the gap to the last organic item, not to a pin holding the last slot", () => {
    // a 1, b 0.5, c 0.25 (batch, scaled to the best); "other" (no score) pinned to slot 2 of 2.
    const out = rank(
      input({ rows, limit: 2, whyNot: "b", batch: batch(["a", 4], ["b", 2], ["c", 1]), explain: true }),
      withRules({ id: "p", action: "pin", productIds: ["other"], slot: 2 }),
    );
    expect(ids(out)).toEqual(["a", "other"]);
    expect(out.whyNot).toEqual({ productId: "b", status: "below_cut", position: 2, score: 0.5, cutScore: 1, gap: 0.5 });
  });

  it("tells a product that was never a candidate, in the catalogue or not", () => {
    expect(trace("other")).toEqual({ productId: "other", status: "not_candidate", inCatalog: true });
    expect(trace("nowhere")).toEqual({ productId: "nowhere", status: "not_candidate", inCatalog: false });
  });

  it("counts removals by rule and candidates by source", () => {
    const out = rank(
      input({
        rows,
        batch: batch(["a", 4], ["oos", 3]),
        popular: [
          ["a", 1],
          ["ghost", 1],
        ],
      }),
      DEFAULT_RANKING_CONFIG,
    );
    expect(out.stats).toEqual({
      candidates: 3,
      removed: { out_of_stock: 1, unknown_product: 1 },
      bySource: { batch: 2, popular: 2 },
    });
  });
});

describe("rerank", () => {
  const rows: Record<string, Row> = {
    x: {},
    y: {},
    z: {},
    chair: { title: "Desk Chair" },
    lamp: { title: "Desk Lamp" },
    gone: { inStock: false },
  };

  it("ranks only the caller's candidates, by their scores scaled to [0, 1]", () => {
    const out = rank(
      input({
        mode: "rerank",
        placement: "rerank",
        rows,
        limit: 10,
        candidates: [
          { productId: "x", score: 10 },
          { productId: "y", score: 30 },
          { productId: "z", score: 20 },
        ],
        // Sources the other modes would use are ignored.
        batch: batch(["lamp", 1]),
        popular: [["chair", 1]],
        explain: true,
      }),
      DEFAULT_RANKING_CONFIG,
    );
    expect(out.items.map((i) => [i.productId, i.score])).toEqual([
      ["y", 1],
      ["z", 0.5],
      ["x", 0],
    ]);
    expect(item(out, "y").reasons).toEqual(["base_score"]);
    expect(item(out, "y").contributions).toEqual({ base: 1 });
    expect(out.stats.candidates).toBe(3);
  });

  it("uses the caller's order when it gives no scores, keeps unknown products and removes out-of-stock ones", () => {
    const out = rank(
      input({
        mode: "rerank",
        placement: "rerank",
        rows,
        limit: 10,
        candidates: ["z", "unknown", "gone", "x"].map((productId) => ({ productId })),
      }),
      DEFAULT_RANKING_CONFIG,
    );
    // base 1 − i/4: z 1, unknown 0.75, gone 0.5 (removed), x 0.25
    expect(out.items.map((i) => [i.productId, i.score])).toEqual([
      ["z", 1],
      ["unknown", 0.75],
      ["x", 0.25],
    ]);
    expect(out.stats.removed).toEqual({ out_of_stock: 1 });
  });

  it("matches the query on titles", () => {
    const out = rank(
      input({
        mode: "rerank",
        placement: "rerank",
        rows,
        limit: 10,
        query: "lamp",
        candidates: [{ productId: "chair" }, { productId: "lamp" }],
      }),
      DEFAULT_RANKING_CONFIG,
    );
    // chair base 1; lamp base 0.5 + query 1
    expect(out.items.map((i) => [i.productId, i.score])).toEqual([
      ["lamp", 1.5],
      ["chair", 1],
    ]);
    expect(item(out, "lamp").reasons).toEqual(["query_match", "base_score"]);
  });

  it("returns all 1,000 candidates in one deterministic order", () => {
    const n = 1000;
    const catalog: Record<string, Row> = {};
    const all = Array.from({ length: n }, (_, i) => `c${String(i).padStart(4, "0")}`);
    for (const id of all) catalog[id] = { category: "same" };
    // Ten distinct scores, a hundred products each: ties broken by productId.
    const scoreOf = (id: string) => Number(id.slice(1)) % 10;
    const shuffled = [...all].sort((a, b) => ((Number(a.slice(1)) * 7919) % n) - ((Number(b.slice(1)) * 7919) % n));
    const run = (order: string[]) =>
      rank(
        input({
          mode: "rerank",
          placement: "rerank",
          rows: catalog,
          limit: n,
          candidates: order.map((productId) => ({ productId, score: scoreOf(productId) })),
        }),
        DEFAULT_RANKING_CONFIG,
      );
    const one = run(all);
    const two = run(shuffled);
    const expected = [...all].sort((a, b) => scoreOf(b) - scoreOf(a) || (a < b ? -1 : 1));
    expect(one.items).toHaveLength(n);
    expect(ids(one)).toEqual(expected);
    expect(ids(two)).toEqual(expected);
    expect(ids(one).slice(0, 3)).toEqual(["c0009", "c0019", "c0029"]);
  });
});
