// The baselines (eval/methods/baselines.ts) and our batch lists' TypeScript computation (eval/methods/batch.ts) on
// tiny hand-built training sets; every expected score is worked out in the comments.
import { describe, expect, it } from "vitest";
import type { Session, SessionEvent } from "../../eval/data.ts";
import type { Query, TrainData } from "../../eval/method.ts";
import {
  AssociationRules,
  Popularity,
  RepeatPurchases,
  SequentialRules,
  SessionKnnCosine,
  SessionKnnVector,
} from "../../eval/methods/baselines.ts";
import { computeBoughtTogether, computeSimilar } from "../../eval/methods/batch.ts";
import { nextItem, overlap, trainData } from "../../eval/protocols.ts";

const session = (id: string, items: string[], start: number, type: SessionEvent["type"] = "view"): Session => ({
  id,
  user: null,
  events: items.map((item, i) => ({ item, time: start + i, type })),
});
// s1: A B C (t 1–3), s2: A C (t 4–5), s3: B D (t 6–7).
const sessions = [session("s1", ["A", "B", "C"], 1), session("s2", ["A", "C"], 4), session("s3", ["B", "D"], 6)];
const train: TrainData = trainData(sessions);
const query = (items: string[]): Query => ({
  events: items.map((item, i) => ({ item, time: 100 + i, type: "view" })),
  history: [],
  user: null,
  now: 200,
});
const sorted = (m: Map<string, number>) => Object.fromEntries([...m].sort(([a], [b]) => (a < b ? -1 : 1)));

describe("popularity", () => {
  it("scores every item by its training events", () => {
    const m = new Popularity();
    m.fit(train);
    expect(sorted(m.score())).toEqual({ A: 2, B: 2, C: 2, D: 1 });
  });
});

describe("repeat purchases", () => {
  it("ranks the customer's items by count, then recency", () => {
    const m = new RepeatPurchases();
    const history = ["X", "Y", "X", "Z"].map((item, i) => ({ item, time: i, type: "purchase" as const }));
    // X: 2 + 3/5 (last at position 3 of 4); Y: 1 + 2/5; Z: 1 + 4/5.
    expect(sorted(m.score({ events: [], history, user: "u", now: 10 }))).toEqual({ X: 2.6, Y: 1.4, Z: 1.8 });
  });
});

describe("association rules (AR)", () => {
  it("counts co-occurring pairs in both directions and scores from the last item", () => {
    const m = new AssociationRules();
    m.fit(train);
    // A→B (s1), A→C (s1, s2).
    expect(sorted(m.score(query(["D", "A"])))).toEqual({ B: 1, C: 2 });
    // B→A, B→C (s1), B→D (s3).
    expect(sorted(m.score(query(["B"])))).toEqual({ A: 1, C: 1, D: 1 });
  });
});

describe("sequential rules (SR)", () => {
  it("weights a later item by 1/steps, forward only", () => {
    const m = new SequentialRules();
    m.fit(train);
    // A→B 1 (s1, one step), A→C 1/2 (s1, two steps) + 1 (s2).
    expect(sorted(m.score(query(["A"])))).toEqual({ B: 1, C: 1.5 });
    expect(sorted(m.score(query(["C"])))).toEqual({});
    const short = new SequentialRules({ maxSteps: 1 });
    short.fit(train);
    expect(sorted(short.score(query(["A"])))).toEqual({ B: 1, C: 1 });
  });
});

describe("session kNN (SKNN)", () => {
  it("sums the cosine similarity of the neighbours holding each item", () => {
    const m = new SessionKnnCosine();
    m.fit(train);
    // Current {A}: s1 sim 1/√3 = 0.57735, s2 sim 1/√2 = 0.70711; s3 shares nothing.
    const s = m.score(query(["A"]));
    expect(s.get("A")).toBeCloseTo(1 / Math.sqrt(3) + Math.SQRT1_2, 4);
    expect(s.get("B")).toBeCloseTo(0.57735, 4);
    expect(s.get("C")).toBeCloseTo(1 / Math.sqrt(3) + Math.SQRT1_2, 4);
    expect(s.has("D")).toBe(false);
  });
  it("keeps the k most similar neighbours among the most recent candidate sessions", () => {
    const one = new SessionKnnCosine({ k: 1 });
    one.fit(train);
    expect(sorted(one.score(query(["A"])))).toEqual({ A: 1 / Math.SQRT2, C: 1 / Math.SQRT2 });
    // Sample of 1: the most recent session with A is s2, with B s3; of those the most recent is s3:
    // sim({A, B}, {B, D}) = 1/√(2·2) = 0.5.
    const sampled = new SessionKnnCosine({ sampleSize: 1 });
    sampled.fit(train);
    expect(sorted(sampled.score(query(["A", "B"])))).toEqual({ B: 0.5, D: 0.5 });
  });
});

describe("vector session kNN (V-SKNN)", () => {
  it("weights the current session's items linearly by position and uses the dot product", () => {
    const m = new SessionKnnVector();
    m.fit(train);
    // Current A, B: weights A 1/2, B 1. s1 ∋ A, B: 1.5; s2 ∋ A: 0.5; s3 ∋ B: 1.
    expect(sorted(m.score(query(["A", "B"])))).toEqual({ A: 2, B: 2.5, C: 2, D: 1 });
  });
});

describe("protocol (i) over a tiny test set", () => {
  it("predicts every next event of every test session", () => {
    const sr = new SequentialRules();
    // Test A → C → B: p=1 from A: C 1.5, B 1 → C rank 1; p=2 from C: no rules → B unscored, rank 2 in id order
    // among A, B, C, D. HR = 1, MRR = (1 + 1/2)/2.
    const [r] = nextItem([sr], train, [session("t", ["A", "C", "B"], 50)]);
    expect(r?.predictions).toBe(2);
    expect(r?.hr).toBe(1);
    expect(r?.mrr).toBeCloseTo(0.75, 12);
  });
});

describe("our batch lists, computed as docs/recommenders.md specifies", () => {
  const asOf = 10;
  const params = { windowDays: 1000, sessionGapMinutes: 30, maxItemsPerSession: 30, minSessions: 2, topK: 30 };
  it("similar: cosine over visit vectors for pairs met in ≥ minSessions visits", () => {
    // Visits A B C / A C / B C, all weight 1 (views). Norms² A 2, B 2, C 3. A–B met once: dropped.
    // A–C: 2/√(2·3) = 0.8165; B–C the same. C's neighbours tie: by id.
    const similar = computeSimilar(
      [session("1", ["A", "B", "C"], 1), session("2", ["A", "C"], 4), session("3", ["B", "C"], 6)],
      asOf,
      params,
    );
    expect(similar.get("A")?.map(([id, s]) => [id, Number(s.toFixed(4))])).toEqual([["C", 0.8165]]);
    expect(similar.get("C")?.map(([id]) => id)).toEqual(["A", "B"]);
    expect(similar.has("D")).toBe(false);
  });
  it("bought together: confidence for pairs in ≥ minOrders baskets with lift ≥ 1", () => {
    // Baskets A B / A B / A C / D: N 4, n(A) 3, n(B) 2, n(A,B) 2: lift 2·4/(3·2) = 1.33;
    // confidence A→B 2/3, B→A 1. A–C met once: dropped.
    const bt = computeBoughtTogether(
      [
        session("1", ["A", "B"], 1, "purchase"),
        session("2", ["A", "B"], 3, "purchase"),
        session("3", ["A", "C"], 5, "purchase"),
        session("4", ["D"], 7, "purchase"),
      ],
      asOf,
      { windowDays: 1000, maxItemsPerBasket: 50, minOrders: 2, minConfidence: 0.01, minLift: 1, topK: 20 },
    );
    expect(bt.get("A")?.map(([id, s]) => [id, Number(s.toFixed(4))])).toEqual([["B", 0.6667]]);
    expect(bt.get("B")).toEqual([["A", 1]]);
    expect(bt.has("C")).toBe(false);
  });
});

describe("overlap (two methods, prediction by prediction)", () => {
  it("counts who finds each target in the top k, the union, and the second method's reach", () => {
    // Popularity ranks A, B, C (2 events each, ties by id), then D. SR's rules: A → C 1.5, A → B 1; B → C 1, B → D 1;
    // none from C or D (their items then rank unscored, in id order A, B, C, D).
    const test = [
      session("T", ["A", "C", "D"], 100), // after A → C: SR 1st, POP 3rd: SR only; after C → D: 4th for both: neither
      session("U", ["B", "D"], 200), // after B → D: SR 2nd (tie with C, id order), POP 4th: SR only
      session("X", ["A", "A"], 300), // after A → A: POP 1st, SR 3rd (unscored, after B and C): POP only
      session("V", ["D", "A"], 400), // after D → A: POP 1st, SR 1st (nothing scored, id order): both
    ];
    const r = overlap(new Popularity(), new SequentialRules(), train, test, { k: 2, deep: 3 });
    expect(r).toMatchObject({
      methods: ["popularity", "sr"],
      predictions: 5,
      both: 1,
      onlyFirst: 1,
      onlySecond: 2,
      neither: 1,
      unionHr: 4 / 5,
      deep: 3,
      secondDeepShare: 4 / 5, // all but T's D (4th)
    });
    expect(r.hr[0]).toBeCloseTo(2 / 5);
    expect(r.hr[1]).toBeCloseTo(3 / 5);
    // The same HR@k as protocol (i) reports for each method.
    const [pop, sr] = nextItem([new Popularity(), new SequentialRules()], train, test, { k: 2 });
    expect([pop?.hr, sr?.hr]).toEqual(r.hr);
  });
});
