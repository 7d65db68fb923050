// The SQL recommenders against a real Postgres, through the Neon driver (the Worker's path), in a database of
// their own (lastmile_test_recommenders, created and migrated here): the hand-made fixture of
// test/fixtures/recommenders/fixture.ts, with every expected number worked out by hand below.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { computeRecommendations, currentModelVersions } from "../../src/batch/compute.ts";
import {
  createCandidateStage,
  dropCandidateStage,
  stageUserCandidates,
  swapUserCandidates,
  USER_CANDIDATES_DEFAULTS,
} from "../../src/batch/recommenders/user-candidates.ts";
import { ERASURE_LOCK, eraseWarehouse } from "../../src/privacy/warehouse.ts";
import { tokenValue } from "../../src/session/ecommerce.ts";
import { type Database, transaction } from "../../src/stores/db.ts";
import { fixtureStatements, INTERACTIONS, KITCHEN, RESET_STATEMENT, T } from "../fixtures/recommenders/fixture.ts";
import { type OwnDatabase, ownDatabase } from "../support/own-database.ts";

const own = ownDatabase("lastmile_test_recommenders");
let pool: OwnDatabase["pool"];
let db: Database;

async function query<R>(text: string, params: unknown[] = []): Promise<R[]> {
  return (await pool.query(text, params)).rows as R[];
}

beforeAll(() => {
  ({ pool, db } = own);
});

beforeEach(async () => {
  await pool.query(RESET_STATEMENT);
  for (const statement of fixtureStatements()) await pool.query(statement);
});

interface Neighbor {
  kind: string;
  product_id: string;
  neighbor_id: string;
  score: number;
  rank: number;
  support: number | null;
  confidence: number | null;
  lift: number | null;
}

const neighbors = (kind: string) =>
  query<Neighbor>(
    "select kind, product_id, neighbor_id, score, rank, support, confidence, lift from item_neighbors where kind = $1 order by product_id, rank",
    [kind],
  );
const list = (name: string, segment: string) =>
  query<{ product_id: string; score: number; rank: number }>(
    "select product_id, score, rank from popular_items where list = $1 and segment = $2 order by rank",
    [name, segment],
  );
const candidates = (user: string) =>
  query<{ product_id: string; score: number; rank: number; reason: string; model_version: number }>(
    `select x.product_id, x.score, x.rank::int, x.reason, c.model_version::int
     from user_candidates c, unnest(c.product_ids, c.scores, c.reasons) with ordinality as x(product_id, score, reason, rank)
     where c.user_key = $1 order by x.rank`,
    [user],
  );

const DAY = 86_400_000;

/** 0.5^(age / 14 days): the history weight's recency decay. */
const decay = (ageHours: number) => 0.5 ** (ageHours / (14 * 24));
/** 0.5^(age / 180 days): one purchase's buy-again score. */
const bought = (ageDays: number) => 0.5 ** (ageDays / 180);

describe("computeRecommendations", () => {
  it("co-visitation: cosine of session vectors, sessions split at 30 minutes, pairs seen in ≥ 2 sessions", async () => {
    const report = await computeRecommendations(db, { asOf: T, only: ["similar"] });
    // Sessions and the strongest weight per product (view 1, cart 3, purchase 5):
    //   u1: {A 1, B 3}, {A 1, C 1}   u2: {A 1, B 5}   u3: {B 1, C 1}, {D 1, E 1}   u4: {D 1, E 3}
    //   u5, u6: {C 1}, {F 1} each (40 min apart: two sessions)   b1: {P 5, Q 5}  b2: {P 5, Q 5, R 5}  b3: {P 5, R 5}
    //   s1 (40 days ago): {F 1, C 1, S 1}, {C 1, G 1}   w1: {W2 1, W3 1} (W1 is exactly 90 days old: outside)
    // Norms Σw²: A 3, B 9+25+1 = 35, D 2, E 10, P 75, Q 50, R 50.
    //   A–B: sessions u1/1 (1·3) and u2 (1·5): 8 / √(3·35) = 0.780720
    //   D–E: u3/2 (1·1) and u4 (1·3): 4 / √(2·10) = 0.894427
    //   P–Q: b1, b2 (25 + 25): 50 / √(75·50) = 0.816497; P–R the same
    //   A–C, B–C, Q–R, and s1's and w1's pairs (C–F, C–S, F–S, C–G, W2–W3): one session only (dropped).
    // Sessions with two products or more: u1 2, u2 1, u3 2, u4 1, b1–b3 3, s1 2, w1 1 = 12.
    const rows = await neighbors("similar");
    expect(rows.map((r) => `${r.product_id}→${r.neighbor_id}#${r.rank}`)).toEqual([
      "A→B#1",
      "B→A#1",
      "D→E#1",
      "E→D#1",
      "P→Q#1", // tie with R: by neighbour id
      "P→R#2",
      "Q→P#1",
      "R→P#1",
    ]);
    const score = (a: string, b: string) => rows.find((r) => r.product_id === a && r.neighbor_id === b)?.score;
    expect(score("A", "B")).toBeCloseTo(8 / Math.sqrt(105), 9);
    expect(score("B", "A")).toBeCloseTo(0.78072, 5);
    expect(score("D", "E")).toBeCloseTo(4 / Math.sqrt(20), 9);
    expect(score("P", "R")).toBeCloseTo(50 / Math.sqrt(3750), 9);
    expect(report.outputs.similar).toMatchObject({ rows: 8, counts: { sessions: 12 } });

    const [version] = await query<{ model: string; status: string; source: string; stats: { rows: number } }>(
      "select model, status, source, stats from model_versions where id = $1",
      [report.outputs.similar?.modelVersion],
    );
    expect(version).toMatchObject({ model: "similar", status: "ready", source: "internal", stats: { rows: 8 } });
  });

  it("bought together: support, confidence and lift over orders", async () => {
    await computeRecommendations(db, { asOf: T, only: ["bought_together"] });
    // Baskets (N = 5): o1 {P,Q}, o2 {P,Q,R}, o3 {P,R}, o4 {S}, o-u2 {B}. n(P) = 3, n(Q) = 2, n(R) = 2.
    //   P,Q in 2 baskets: support 2/5 = 0.4; confidence P→Q 2/3, Q→P 2/2 = 1; lift 2·5 / (3·2) = 5/3.
    //   P,R the same; Q,R in one basket only (< 2 orders: dropped).
    const rows = await neighbors("bought_together");
    expect(rows.map((r) => [r.product_id, r.neighbor_id, r.rank])).toEqual([
      ["P", "Q", 1],
      ["P", "R", 2],
      ["Q", "P", 1],
      ["R", "P", 1],
    ]);
    for (const r of rows) {
      expect(r.support).toBeCloseTo(0.4, 9);
      expect(r.lift).toBeCloseTo(5 / 3, 9);
      expect(r.confidence).toBeCloseTo(r.product_id === "P" ? 2 / 3 : 1, 9);
      expect(r.score).toBe(r.confidence);
    }
  });

  it("next items: what came after a product in the same visit, 1/steps, repeats kept, the product itself skipped", async () => {
    // A 90-day window (the default is a year): the fixture's window edge sits at 90 days.
    const report = await computeRecommendations(db, {
      asOf: T,
      only: ["next_items"],
      params: { nextItems: { windowDays: 90 } },
    });
    // Visits, events in order (an order's lines by position), split at a gap of more than 30 minutes:
    //   u1: A B B | A C   u2: A B(purchase)   u3: B C | D E   u4: D E E   u5, u6: C | F (40 minutes: no C→F)
    //   b1: P Q   b2: P Q R   b3: P R   b4: S (alone: no pair)
    //   s1 (40 days ago): F C F S | C G (two hours later: no S→C)   w1: W2 W3 (W1, exactly 90 days old, is out)
    // Each pair of events x steps apart (x ≤ 10) adds 1/x to earlier → later, unless both are the same product:
    //   A→B: u1 1 (A, B) + 0.5 (A, second B: x = 2) + u2 1 = 2.5, support 3; B→B (u1) skipped. A→C: u1 1.
    //   B→C: u3 1.   D→E: u3 1 + u4 1 + 0.5 = 2.5, support 3; E→E skipped.
    //   P→Q: b1 1 + b2 1 = 2;  P→R: b2 0.5 + b3 1 = 1.5;  Q→R: b2 1.
    //   s1: F→C 1; F→F skipped; F→S 1/3 (x = 3) + 1 = 4/3, support 2; C→F 1; C→S 0.5; C→G 1 (visit 2).
    //   So C's list is F 1, G 1 (a tie: by neighbour id), S 0.5.   W2→W3 1.
    const rows = await neighbors("next");
    expect(rows.map((r) => `${r.product_id}→${r.neighbor_id}#${r.rank} ${r.score} (${r.support})`)).toEqual([
      "A→B#1 2.5 (3)",
      "A→C#2 1 (1)",
      "B→C#1 1 (1)",
      "C→F#1 1 (1)",
      "C→G#2 1 (1)",
      "C→S#3 0.5 (1)",
      "D→E#1 2.5 (3)",
      `F→S#1 ${4 / 3} (2)`,
      "F→C#2 1 (1)",
      "P→Q#1 2 (2)",
      "P→R#2 1.5 (2)",
      "Q→R#1 1 (1)",
      "W2→W3#1 1 (1)",
    ]);
    expect(rows.every((r) => r.confidence === null && r.lift === null)).toBe(true);
    // Visits with two events or more: u1 2, u2, u3 2, u4, b1–b3, s1 2, w1 = 12; 13 products in the window.
    expect(report.outputs.next_items).toMatchObject({ rows: 13, counts: { sessions: 12, products: 13, rules: 13 } });
    const [version] = await query<{ model: string; status: string; params: { params: { maxSteps: number } } }>(
      "select model, status, params from model_versions where id = $1",
      [report.outputs.next_items?.modelVersion],
    );
    expect(version).toMatchObject({ model: "next_items", status: "ready", params: { params: { maxSteps: 10 } } });
  });

  it("next items: a visit's last events only, at most maxSteps apart, rules below minScore dropped", async () => {
    await computeRecommendations(db, {
      asOf: T,
      only: ["next_items"],
      params: { nextItems: { windowDays: 90, maxEventsPerSession: 3, maxSteps: 2, minScore: 1 } },
    });
    // s1's first visit keeps its last 3 events, C F S: C→F 1, C→S 0.5 (below minScore 1: dropped), F→S 1 — no
    // F→C, and F→S loses the first F's 1/3. Every other visit has ≤ 3 events and no pair 3 steps apart.
    const rows = await neighbors("next");
    const of = (p: string) => rows.filter((r) => r.product_id === p).map((r) => `${r.neighbor_id} ${r.score}`);
    expect(of("F")).toEqual(["S 1"]);
    expect(of("C")).toEqual(["F 1", "G 1"]);
    expect(of("A")).toEqual(["B 2.5", "C 1"]);
    expect(rows).toHaveLength(11);
    // The weights are summed as whole numbers of 1/LCM(1…maxSteps): maxSteps past 20 would overflow them.
    await expect(
      computeRecommendations(db, { asOf: T, only: ["next_items"], params: { nextItems: { maxSteps: 21 } } }),
    ).rejects.toThrow(/maxSteps/);
    expect(await neighbors("next")).toHaveLength(11);
  });

  it("popular and trending per segment: global, category, country", async () => {
    await computeRecommendations(db, { asOf: T, only: ["popular", "trending"] });
    // Trend weights: view 1, cart 3, purchase 5. Last 30 days: A 3, B 1+3+5+1 = 10, C 4, D 2, E 1+1+3 = 5, F 2,
    // P 15, Q 10, R 10, S 5.
    const global = await list("popular", "global");
    expect(global.map((r) => `${r.product_id}:${r.score}`)).toEqual([
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
    expect((await list("popular", "category:mugs")).map((r) => `${r.product_id}:${r.score}`)).toEqual([
      "B:10",
      "C:4",
      "A:3",
    ]);
    // "Cards  &  Wrap " is segmented as the session's token would be: lower case, whitespace collapsed.
    expect((await list("popular", "category:cards & wrap")).map((r) => r.product_id)).toEqual(["P", "Q", "R", "S"]);
    // GB: u1 (A 2, B 4, C 1) + u2 (A 1, B 5). FR: u3 (B, C, D, E 1 each) + u4 (D 1, E 4).
    expect((await list("popular", "country:GB")).map((r) => `${r.product_id}:${r.score}`)).toEqual([
      "B:9",
      "A:3",
      "C:1",
    ]);
    expect((await list("popular", "country:FR")).map((r) => `${r.product_id}:${r.score}`)).toEqual([
      "E:5",
      "D:2",
      "B:1",
      "C:1",
    ]);
    // Trending: recent = last 24 h, baseline = the 7 days before, scaled to 24 h (× 24/168), prior 5,
    // recent ≥ 3 needed. C: recent 3 (u3, u5, u6), baseline 1 (u1) → (3 + 5) / (1/7 + 5) = 56/36 = 1.5556.
    // E: recent 5, baseline 0 → 10/5 = 2. B (recent 1), D and F (2) have too little recent weight.
    const trending = await list("trending", "global");
    expect(trending.map((r) => r.product_id)).toEqual(["E", "C"]);
    expect(trending[0]?.score).toBeCloseTo(2, 9);
    expect(trending[1]?.score).toBeCloseTo(56 / 36, 9);
    expect((await list("trending", "category:mugs")).map((r) => r.product_id)).toEqual(["C"]);
    // FR: E recent 5 (u3 1, u4 4); C only 1 there. u5, u6 have no country: no segment.
    expect((await list("trending", "country:FR")).map((r) => r.product_id)).toEqual(["E"]);
    const segments = await query<{ segment: string }>("select distinct segment from popular_items order by 1");
    expect(segments.map((s) => s.segment)).toEqual([
      "category:bags",
      "category:candles & lights",
      "category:cards & wrap",
      "category:mugs",
      "country:DE",
      "country:FR",
      "country:GB",
      "global",
    ]);
  });

  it("user candidates: neighbours of the history, category affinity, popular fallback; purchases excluded; then buy again", async () => {
    const report = await computeRecommendations(db, { asOf: T });
    // 10 users active in the last 30 days, and r1, whose purchases (200 and 300 days ago) are in the 365-day
    // buy-again window. b4 bought a single product (fewer than 2 in its history) and r1 has no history: no
    // candidates for them, but a row of buy-again entries. Buyers: u2, b1–b4, r1; buy-again entries:
    // u2 1 + b1 2 + b2 3 + b3 2 + b4 1 + r1 20 = 29.
    expect(report.outputs.user_candidates).toMatchObject({
      mode: "full",
      rows: 11,
      counts: { users: 11, listedUsers: 9, buyAgainUsers: 6, write: 11, buyAgain: 29 },
    });
    // b4's row: its one purchase, 7 days old: 0.5^(7/180).
    const b4 = await candidates("b4");
    expect(b4.map((c) => `${c.product_id} ${c.reason}`)).toEqual(["S bought_before"]);
    expect(b4[0]?.score).toBeCloseTo(bought(7), 9);

    // u2 viewed A (30 h ago) and bought B (29 h 50 min ago): B is never a candidate.
    //   A: B's similar neighbour:  5 · 0.5^(29.833/336) · 0.780720 = 3.670600   (reason similar_to:B)
    //      + category mugs (share 1): 0.5 · 3/10 = 0.15  + popular: 0.01 · 3/15 = 0.002
    //   C: category mugs 0.5 · 4/10 = 0.2 + popular 0.01 · 4/15                 (reason category:mugs)
    //   then the popular fallback 0.01 · score/15: P (0.01), Q, R (0.00667), E, S (0.00333), D, F (0.00133)
    //   and, appended, what u2 bought: B, 29 h 50 min ago: 0.5^(1.243 days / 180) = 0.995225 (reason bought_before)
    const u2 = await candidates("u2");
    expect(u2.map((c) => `${c.product_id} ${c.reason}`)).toEqual([
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
    expect(u2[9]?.score).toBeCloseTo(bought((29 + 50 / 60) / 24), 9);
    expect(u2[9]?.score).toBeCloseTo(0.995225, 6);
    expect(u2.map((c) => c.rank)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);

    // b2 bought P, Q and R: none of them comes back as a candidate, although each is the others' neighbour; S
    // (same category, not bought) does, through the category affinity: 0.5 · 5/15 + 0.01 · 5/15. The three come
    // last, as buy-again entries: one purchase 9 days ago each, 0.5^(9/180) — a tie, in id order.
    const b2 = await candidates("b2");
    const b2Candidates = b2.filter((c) => c.reason !== "bought_before").map((c) => c.product_id);
    expect(b2Candidates).not.toContain("P");
    expect(b2Candidates).not.toContain("Q");
    expect(b2Candidates).not.toContain("R");
    expect(b2[0]).toMatchObject({ product_id: "S", reason: "category:cards & wrap" });
    expect(b2[0]?.score).toBeCloseTo(0.5 * (5 / 15) + 0.01 * (5 / 15), 9);
    expect(b2.slice(-3).map((c) => `${c.product_id} ${c.reason}`)).toEqual([
      "P bought_before",
      "Q bought_before",
      "R bought_before",
    ]);
    expect(b2.length).toBe(b2Candidates.length + 3);
    for (const c of b2.slice(-3)) expect(c.score).toBeCloseTo(bought(9), 9);

    // r1, nothing in the last 200 days: K01 … K22 bought 300 days ago, K05 and K22 again 200 days ago, K23 400
    // days ago (outside the window). K05, K22: 0.5^(300/180) + 0.5^(200/180) = 0.314980 + 0.462937 = 0.777918;
    // the 20 others 0.314980 each, a tie: in id order, the first 18 (K01–K04, K06–K19) fill the 20 places and
    // K20, K21 are cut.
    const r1 = await candidates("r1");
    expect(r1.map((c) => c.product_id)).toEqual(["K05", "K22", ...KITCHEN.slice(0, 19).filter((k) => k !== "K05")]);
    expect(r1.every((c) => c.reason === "bought_before")).toBe(true);
    expect(r1[0]?.score).toBeCloseTo(bought(300) + bought(200), 9);
    expect(r1[0]?.score).toBeCloseTo(0.777918, 6);
    expect(r1[1]?.score).toBe(r1[0]?.score);
    expect(r1[19]?.score).toBeCloseTo(0.31498, 5);

    // u4 viewed D, viewed and carted E two hours ago: D's neighbour E and E's neighbour D.
    //   D: 3 · 0.5^(1.833/336) · 0.894427 (history E, cart weight 3) + category candles 0.5 · share · 2/5 …
    const u4 = await candidates("u4");
    expect(u4[0]).toMatchObject({ product_id: "D", reason: "similar_to:E" });
    expect(u4[1]).toMatchObject({ product_id: "E", reason: "similar_to:D" });
  });

  it("recomputes idempotently, and only the users who changed since the previous version", async () => {
    const snapshot = async () => ({
      neighbors: await query("select kind, product_id, neighbor_id, score, rank from item_neighbors order by 1, 2, 3"),
      popular: await query("select list, segment, product_id, score, rank from popular_items order by 1, 2, 3"),
      candidates: await query("select user_key, product_ids, scores, reasons from user_candidates order by 1"),
    });
    const first = await computeRecommendations(db, { asOf: T });
    const before = await snapshot();
    const second = await computeRecommendations(db, { asOf: T });
    expect(await snapshot()).toEqual(before);
    // Nothing happened after T: the incremental run rewrites no user (their rows keep the first version).
    expect(second.outputs.user_candidates).toMatchObject({ mode: "incremental", rows: 0, counts: { users: 0 } });
    const versions = await query<{ v: number }>("select distinct model_version::int as v from user_candidates");
    expect(versions).toEqual([{ v: first.outputs.user_candidates?.modelVersion }]);
    // A forced full run writes the same lists again under its own version.
    const full = await computeRecommendations(db, { asOf: T, full: true });
    expect(full.outputs.user_candidates?.mode).toBe("full");
    expect(await snapshot()).toEqual(before);

    // u5 comes back an hour later and views B: only u5 is recomputed; everyone else keeps the full run's rows.
    for (const statement of fixtureStatements([
      {
        messageId: "later-1",
        position: 0,
        userKey: "u5",
        productId: "B",
        kind: "view",
        orderId: null,
        at: new Date(T.getTime() + 3_600_000),
        country: null,
      },
    ])) {
      await pool.query(statement);
    }
    const later = await computeRecommendations(db, {
      asOf: new Date(T.getTime() + 2 * 3_600_000),
      only: ["user_candidates"],
    });
    expect(later.outputs.user_candidates).toMatchObject({ mode: "incremental", counts: { users: 1 } });
    const byVersion = await query<{ user_key: string; v: number }>(
      "select user_key, model_version::int as v from user_candidates order by 1",
    );
    const laterVersion = later.outputs.user_candidates?.modelVersion;
    expect(byVersion.filter((r) => r.v === laterVersion).map((r) => r.user_key)).toEqual(["u5"]);
    // The 10 other users with a row (b4 and r1: buy-again entries only) keep the full run's rows.
    expect(byVersion.filter((r) => r.v === full.outputs.user_candidates?.modelVersion)).toHaveLength(10);
    // u5's new list starts from B's neighbour A.
    expect((await candidates("u5"))[0]).toMatchObject({ product_id: "A", reason: "similar_to:B" });
    // A day after the last full run, the next one is full again (by the runs' reference times).
    const daily = await computeRecommendations(db, {
      asOf: new Date(T.getTime() + 24 * 3_600_000),
      only: ["user_candidates"],
    });
    expect(daily.outputs.user_candidates?.mode).toBe("full");
    const after = await computeRecommendations(db, {
      asOf: new Date(T.getTime() + 25 * 3_600_000),
      only: ["user_candidates"],
    });
    expect(after.outputs.user_candidates?.mode).toBe("incremental");
  });

  it("buy again in incremental runs: a user whose data left one window is recomputed, both windows: no row", async () => {
    const full = await computeRecommendations(db, { asOf: T });
    const fullVersion = full.outputs.user_candidates?.modelVersion;
    const r1Before = await candidates("r1");

    // 66 days later, with no new event: the 10 users active in the 30 days before T have all left that window.
    // They are recomputed: u1, u3, u4, u5, u6 bought nothing and lose their rows; u2 and b1–b4 keep a row of
    // buy-again entries only. r1's order of 300 days ago is now 366 days old, but r1 still has the order of 200
    // days ago in the window, so r1 is not recomputed: its row stays as it was (K01 … included).
    const later = new Date(T.getTime() + 66 * DAY);
    // Months apart: the daily full rebuild is lifted to see what an incremental run does with the windows.
    const incremental = await computeRecommendations(db, {
      asOf: later,
      only: ["user_candidates"],
      fullRebuildAfterMs: Number.POSITIVE_INFINITY,
    });
    expect(incremental.outputs.user_candidates).toMatchObject({
      mode: "incremental",
      rows: 5,
      counts: { users: 10, leftWindowUsers: 10, listedUsers: 0, buyAgainUsers: 5 },
    });
    const rowsNow = await query<{ user_key: string; v: number }>(
      "select user_key, model_version::int as v from user_candidates order by 1",
    );
    const laterVersion = incremental.outputs.user_candidates?.modelVersion;
    expect(rowsNow).toEqual([
      { user_key: "b1", v: laterVersion },
      { user_key: "b2", v: laterVersion },
      { user_key: "b3", v: laterVersion },
      { user_key: "b4", v: laterVersion },
      { user_key: "r1", v: fullVersion },
      { user_key: "u2", v: laterVersion },
    ]);
    // u2's B is now 66 days + 29 h 50 min old.
    const u2 = await candidates("u2");
    expect(u2.map((c) => `${c.product_id} ${c.reason}`)).toEqual(["B bought_before"]);
    expect(u2[0]?.score).toBeCloseTo(bought(66 + (29 + 50 / 60) / 24), 9);
    expect((await candidates("b3")).map((c) => `${c.product_id} ${c.reason}`)).toEqual([
      "P bought_before",
      "R bought_before",
    ]);
    expect(await candidates("r1")).toEqual(r1Before);

    // A full rebuild recomputes r1: only the order of 200 days ago (now 266) is left, K05 and K22, 0.5^(266/180)
    // each (a tie: by id).
    await computeRecommendations(db, { asOf: later, only: ["user_candidates"], full: true });
    const r1 = await candidates("r1");
    expect(r1.map((c) => `${c.product_id} ${c.reason}`)).toEqual(["K05 bought_before", "K22 bought_before"]);
    for (const c of r1) expect(c.score).toBeCloseTo(bought(266), 9);

    // 400 days after T every purchase (the newest: u2's, 30 hours before T) has left the buy-again window too: the
    // six buyers are recomputed and, with nothing left in either window, lose their rows.
    const last = await computeRecommendations(db, {
      asOf: new Date(T.getTime() + 400 * DAY),
      only: ["user_candidates"],
      fullRebuildAfterMs: Number.POSITIVE_INFINITY,
    });
    expect(last.outputs.user_candidates).toMatchObject({
      mode: "incremental",
      rows: 0,
      counts: { users: 6, leftWindowUsers: 6 },
    });
    expect(await query("select user_key from user_candidates")).toEqual([]);
  });

  it("user candidates: a product's reason is its largest contribution's, equal largest ones by reason order", async () => {
    // A new user viewed X1 and X2 at the same moment (equal history weights, 0.5^(2/336)). Z is X1's similar
    // neighbour and X2's bought-together neighbour with the same score, and Y X1's similar neighbour with a lower
    // one: Z's two contributions are equal, so its reason is the smaller text ("bought_together:X2" <
    // "similar_to:X1"); its score is their sum.
    const at = new Date(T.getTime() - 2 * 3_600_000).toISOString();
    await query(
      `insert into interactions (message_id, position, user_key, product_id, kind, weight, order_id, event_time)
       values ('tie-1', 0, 'tie', 'X1', 'view', 1, null, $1), ('tie-2', 1, 'tie', 'X2', 'view', 1, null, $1)`,
      [at],
    );
    await query(
      `insert into item_neighbors (kind, product_id, neighbor_id, score, rank, model_version)
       values ('similar', 'X1', 'Z', 0.5, 1, 0), ('similar', 'X1', 'Y', 0.25, 2, 0),
              ('bought_together', 'X2', 'Z', 0.5, 1, 0)`,
    );
    await computeRecommendations(db, { asOf: T, only: ["user_candidates"] });
    const tie = await candidates("tie");
    const w = decay(2);
    expect(tie.slice(0, 2).map((c) => `${c.product_id} ${c.reason}`)).toEqual([
      "Z bought_together:X2",
      "Y similar_to:X1",
    ]);
    expect(tie[0]?.score).toBeCloseTo(2 * w * 0.5, 9);
    expect(tie[1]?.score).toBeCloseTo(w * 0.25, 9);
  });

  it("windows end at the data's own newest event with asOf: 'data'", async () => {
    const report = await computeRecommendations(db, { asOf: "data", only: ["popular"] });
    const newest = Math.max(...INTERACTIONS.map((i) => i.at.getTime()));
    expect(report.asOf).toBe(new Date(newest).toISOString());
    expect((await list("popular", "global"))[0]?.product_id).toBe("P");
  });

  it("honours the external-model contract: an external version is the newest ready one until an internal one replaces it", async () => {
    const internal = await computeRecommendations(db, { asOf: T, only: ["similar"] });
    // What docs/recommenders.md tells a dbt model / notebook to do, verbatim.
    const client = await pool.connect();
    try {
      await client.query("begin");
      const { rows } = await client.query(
        `insert into model_versions (model, version, source, status, params, finished_at)
         values ('similar', 'dbt-2024-06-01', 'external', 'ready', '{"method": "embeddings"}', now())
         returning id`,
      );
      const id = (rows[0] as { id: string }).id;
      await client.query("delete from item_neighbors where kind = 'similar'");
      await client.query(
        `insert into item_neighbors (kind, product_id, neighbor_id, score, rank, model_version)
         values ('similar', 'A', 'C', 0.9, 1, $1), ('similar', 'C', 'A', 0.9, 1, $1)`,
        [id],
      );
      await client.query("commit");
    } finally {
      client.release();
    }
    const current = await currentModelVersions(db);
    expect(current.get("similar")).toMatchObject({ version: "dbt-2024-06-01", source: "external", status: "ready" });
    const rows = await neighbors("similar");
    expect(rows.map((r) => `${r.product_id}→${r.neighbor_id}`)).toEqual(["A→C", "C→A"]);
    // User candidates built now use the external neighbours like their own.
    await computeRecommendations(db, { asOf: T, only: ["popular", "user_candidates"] });
    expect((await candidates("u5")).some((c) => c.reason === "similar_to:C" && c.product_id === "A")).toBe(true);

    // The next internal compute of `similar` is newer and takes the output back.
    const again = await computeRecommendations(db, { asOf: T, only: ["similar"] });
    expect(current.get("similar")?.id).not.toBe(again.outputs.similar?.modelVersion);
    expect((await currentModelVersions(db)).get("similar")).toMatchObject({
      id: again.outputs.similar?.modelVersion,
      source: "internal",
    });
    expect(again.outputs.similar?.modelVersion).toBeGreaterThan(internal.outputs.similar?.modelVersion ?? 0);
  });

  it("marks a version failed when its transaction fails, and leaves the previous rows in place", async () => {
    await computeRecommendations(db, { asOf: T, only: ["similar"] });
    const before = await neighbors("similar");
    await expect(
      computeRecommendations(db, { asOf: T, only: ["similar"], params: { similar: { topK: -1 } } }),
    ).rejects.toThrow(/not a count/);
    // A bad parameter fails before the transaction: the version row says so.
    const [failed] = await query<{ status: string }>(
      "select status from model_versions where model = 'similar' order by id desc limit 1",
    );
    expect(failed?.status).toBe("failed");
    expect(await neighbors("similar")).toEqual(before);
  });

  it("computes the warehouse-only outputs in lanes: one failing output does not stop the others, user_candidates waits", async () => {
    const version = "lanes-failure";
    await expect(
      computeRecommendations(db, { asOf: T, version, lanes: 2, params: { similar: { topK: -1 } } }),
    ).rejects.toThrow(/not a count/);
    const statuses = await query<{ model: string; status: string }>(
      "select model, status from model_versions where version = $1 order by model",
      [version],
    );
    expect(Object.fromEntries(statuses.map((r) => [r.model, r.status]))).toEqual({
      bought_together: "ready",
      next_items: "ready",
      popular: "ready",
      similar: "failed",
      trending: "ready",
    });
  });

  it("gives the same outputs with one lane and with two", async () => {
    const lists = async () => ({
      neighbors: await query("select kind, product_id, neighbor_id, rank, score from item_neighbors order by 1, 2, 4"),
      popular: await query("select list, segment, product_id, rank, score from popular_items order by 1, 2, 4"),
      candidates: await query("select user_key, product_ids, scores, reasons from user_candidates order by 1"),
    });
    await computeRecommendations(db, { asOf: T, lanes: 1, full: true });
    const one = await lists();
    await computeRecommendations(db, { asOf: T, lanes: 2, full: true });
    const two = await lists();
    expect(one.neighbors.length).toBeGreaterThan(0);
    expect(one.candidates.length).toBeGreaterThan(0);
    expect(two).toEqual(one);
  });
});

describe("user candidates: staged without the erasure lock, swapped in under it", () => {
  const V = 900_001;
  const FULL = { mode: "full" } as const;
  const staged = (user: string) =>
    query<{ n: number }>(
      `select count(*)::int as n from uc_stage_${V} where user_key = $1 and product_ids is not null`,
      [user],
    );

  afterAll(async () => {
    await dropCandidateStage(db, V);
  });

  it("an erasure during staging neither waits for it nor loses to it; one the snapshot saw is no obstacle", async () => {
    // Item lists and popular lists first; every user then has a list (u2 and b2 among them).
    await computeRecommendations(db, { asOf: T });
    expect((await candidates("u2")).length).toBeGreaterThan(0);
    // b2 was erased (and not suppressed) before this compute, and came back: its rows are here again. The staging
    // snapshot sees that erasure, so b2's new list stands.
    await query("insert into erased_users (user_key, subject) values ('b2', 'b2')");
    await dropCandidateStage(db, V);
    await createCandidateStage(db, V);

    let erasedDuringStaging = false;
    const part = await transaction(
      db,
      async (tx) => {
        const result = await stageUserCandidates(tx, T, V, USER_CANDIDATES_DEFAULTS, FULL, { index: 0, of: 1 });
        // The staging transaction is still open. The erasure takes the exclusive erasure lock: with the lock held
        // for the staging, it would wait here until its 30 s lock timeout and fail.
        const erased = await eraseWarehouse(db, "u2", { userKeys: ["u2"], userIds: [], anonymousIds: [] }, false);
        expect(erased.interactions).toBeGreaterThan(0);
        expect(erased.userCandidates).toBe(1);
        erasedDuringStaging = true;
        return result;
      },
      { isolationLevel: "repeatable read" },
    );
    expect(erasedDuringStaging).toBe(true);
    // The part read u2's history before the erasure deleted it, so it staged a list for u2.
    expect(await staged("u2")).toEqual([{ n: 1 }]);
    expect(part.counts.write).toBe(11);

    const swapped = await transaction(db, (tx) => swapUserCandidates(tx, V, FULL, [part.snapshot]));
    expect(swapped.rows).toBe(10);
    expect(swapped.counts.erasedWhileStaging).toBe(1);
    expect(await candidates("u2")).toEqual([]);
    expect((await candidates("b2")).map((c) => c.model_version)).toContain(V);
    const users = await query<{ user_key: string }>("select user_key from user_candidates order by 1");
    expect(users.map((u) => u.user_key)).not.toContain("u2");
    expect(users).toHaveLength(10);
  });

  it("an incremental swap replaces only the staged users' rows, and drops those left with no list", async () => {
    await computeRecommendations(db, { asOf: T });
    const before = await query<{ user_key: string; model_version: number }>(
      "select user_key, model_version::int from user_candidates order by 1",
    );
    await dropCandidateStage(db, V);
    await createCandidateStage(db, V);
    // Two users staged by hand: u2 with a new list, b4 with none (its data left both windows).
    await query(
      `insert into uc_stage_${V} (part, user_key, product_ids, scores, reasons) values
         (0, 'u2', '{C}', '{0.5}', '{category:mugs}'), (0, 'b4', null, null, null)`,
    );
    const scope = { mode: "incremental", previousAsOf: T, previousBuiltAt: new Date() } as const;
    const [{ snapshot } = { snapshot: "" }] = await query<{ snapshot: string }>(
      "select pg_current_snapshot()::text as snapshot",
    );
    const swapped = await transaction(db, (tx) => swapUserCandidates(tx, V, scope, [snapshot]));
    expect(swapped.rows).toBe(1);
    expect(await candidates("u2")).toEqual([
      { product_id: "C", score: 0.5, rank: 1, reason: "category:mugs", model_version: V },
    ]);
    expect(await candidates("b4")).toEqual([]);
    const after = await query<{ user_key: string; model_version: number }>(
      "select user_key, model_version::int from user_candidates where user_key not in ('u2', 'b4') order by 1",
    );
    expect(after).toEqual(before.filter((r) => r.user_key !== "u2" && r.user_key !== "b4"));
  });

  it("an erasure deletes the subject's rows from staging tables, a dead compute's included", async () => {
    // What a compute that died after staging leaves: its table, with committed lists, until the next compute drops it.
    await createCandidateStage(db, 800005);
    await query(
      `insert into uc_stage_800005 (part, user_key, product_ids, scores, reasons) values
         (0, 'u2', '{C}', '{0.5}', '{category:mugs}'), (1, 'b4', '{C}', '{0.4}', '{category:mugs}')`,
    );
    const erased = await eraseWarehouse(db, "u2", { userKeys: ["u2"], userIds: [], anonymousIds: [] }, false);
    expect(erased.userCandidates).toBeGreaterThanOrEqual(1);
    expect(await query("select part, user_key from uc_stage_800005 order by 1")).toEqual([{ part: 1, user_key: "b4" }]);
    await dropCandidateStage(db, 800005);
  });

  it("a compute drops the staging tables runs died with, and none of a run still building", async () => {
    await query(
      `insert into model_versions (id, model, version, status, created_at) values
         (800001, 'user_candidates', 'died', 'failed', now() - interval '1 hour'),
         (800002, 'user_candidates', 'stuck', 'building', now() - interval '2 days'),
         (800003, 'user_candidates', 'running', 'building', now() - interval '1 minute')`,
    );
    for (const id of [800001, 800002, 800003, 800004]) await createCandidateStage(db, id);
    const tables = () =>
      query<{ relname: string }>("select relname from pg_class where relname like 'uc\\_stage\\_8%' order by 1");
    expect((await tables()).map((t) => t.relname)).toEqual([
      "uc_stage_800001",
      "uc_stage_800002",
      "uc_stage_800003",
      "uc_stage_800004",
    ]);
    const report = await computeRecommendations(db, { asOf: T });
    expect(report.outputs.user_candidates?.rows).toBe(11);
    // 800004 has no version row at all; the compute's own stage is gone too.
    expect((await tables()).map((t) => t.relname)).toEqual(["uc_stage_800003"]);
    await dropCandidateStage(db, 800003);
  });

  it("a part that fails fails the version, keeps the previous lists and leaves no staging table", async () => {
    await computeRecommendations(db, { asOf: T });
    const before = await query(
      "select user_key, product_ids, scores, reasons, model_version from user_candidates order by 1",
    );
    expect(before.length).toBe(11);
    // 90 candidates + 20 buy-again entries exceed the 100 the publisher ships per user: every part refuses.
    await expect(
      computeRecommendations(db, { asOf: T, only: ["user_candidates"], params: { userCandidates: { topN: 90 } } }),
    ).rejects.toThrow(/exceeds the 100 entries/);
    const versions = await query<{ status: string; error: string }>(
      "select status, stats->>'error' as error from model_versions where model = 'user_candidates' order by id desc limit 1",
    );
    expect(versions).toEqual([{ status: "failed", error: expect.stringMatching(/exceeds the 100 entries/) }]);
    expect(
      await query("select user_key, product_ids, scores, reasons, model_version from user_candidates order by 1"),
    ).toEqual(before);
    expect(await query("select relname from pg_class where relname like 'uc\\_stage\\_%'")).toEqual([]);
  });

  it("refuses to stage a part outside a repeatable-read transaction", async () => {
    await dropCandidateStage(db, V);
    await createCandidateStage(db, V);
    await expect(
      transaction(db, (tx) => stageUserCandidates(tx, T, V, USER_CANDIDATES_DEFAULTS, FULL, { index: 0, of: 1 })),
    ).rejects.toThrow(/repeatable-read transaction, not read committed/);
    expect(await query(`select count(*)::int as n from uc_stage_${V}`)).toEqual([{ n: 0 }]);
  });
});

describe("versions, segments, shares and retries", () => {
  const MINUTE = 60_000;

  it("a run after an external user_candidates version is a full one, even when the external created_at is older", async () => {
    const first = await computeRecommendations(db, { asOf: T });
    expect(first.outputs.user_candidates?.mode).toBe("full");
    expect(await query("select user_key from user_candidates where user_key = 'u1'")).toEqual([{ user_key: "u1" }]);
    // The external contract (docs/recommenders.md): created_at = when the job read the warehouse (an hour ago, before
    // the internal version above was created), under the shared erasure lock, all rows replaced by the job's lists.
    const client = await pool.connect();
    try {
      await client.query("begin");
      await client.query("select pg_advisory_xact_lock_shared($1::bigint)", [ERASURE_LOCK.toString()]);
      await client.query(
        `insert into model_versions (model, version, source, status, created_at, finished_at)
         values ('user_candidates', 'dbt-1', 'external', 'ready', now() - interval '1 hour', now())`,
      );
      await client.query("delete from user_candidates");
      await client.query(
        `insert into user_candidates (user_key, product_ids, scores, reasons, model_version)
         values ('x-ext', '{A}', '{1}', '{external}', currval('model_versions_id_seq'))`,
      );
      await client.query("commit");
    } finally {
      client.release();
    }
    // The external version is the current one, for the publisher and for the compute alike.
    const [external] = await query<{ id: number }>("select id from model_versions where version = 'dbt-1'");
    expect((await currentModelVersions(db)).get("user_candidates")?.id).toBe(Number(external?.id));
    // So the next internal run is a full one: u1, with no new event, gets its list again; the external rows go.
    const next = await computeRecommendations(db, {
      asOf: new Date(T.getTime() + 15 * MINUTE),
      only: ["user_candidates"],
    });
    expect(next.outputs.user_candidates?.mode).toBe("full");
    expect(await query("select user_key from user_candidates where user_key in ('u1', 'x-ext')")).toEqual([
      { user_key: "u1" },
    ]);
  });

  it("names popular category segments as the ranking path does (tokenValue of the catalogue's category)", async () => {
    const categories = { X1: "\u00a0Épicerie\u00a0 Fine ", X2: "ÉTÉ", X3: "ΟΔΟΣ" };
    for (const [id, category] of Object.entries(categories)) {
      await query("insert into catalog (id, title, category) values ($1, $1, $2)", [id, category]);
      for (let k = 0; k < 2; k++) {
        const at = new Date(T.getTime() - (k + 1) * 60 * MINUTE).toISOString();
        await query(
          `insert into events (message_id, user_key, type, event, source_id, event_time, received_at)
           values ($1, 'cat-user', 'track', 'Product Viewed', 'fixture', $2, $2)`,
          [`cat-${id}-${k}`, at],
        );
        await query(
          `insert into interactions (message_id, position, user_key, product_id, kind, weight, event_time)
           values ($1, 0, 'cat-user', $2, 'view', 1, $3)`,
          [`cat-${id}-${k}`, id, at],
        );
      }
    }
    await computeRecommendations(db, { asOf: T, only: ["popular"] });
    const segments = await query<{ segment: string }>(
      `select distinct segment from popular_items
       where list = 'popular' and product_id in ('X1', 'X2', 'X3') and segment like 'category:%' order by 1`,
    );
    // Written out rather than computed, so that a change to tokenValue alone shows here too.
    expect(segments.map((r) => r.segment)).toEqual(["category:épicerie fine", "category:été", "category:οδος"].sort());
    expect(
      Object.values(categories)
        .map((c) => `category:${tokenValue(c)}`)
        .sort(),
    ).toEqual(segments.map((r) => r.segment));
  });

  it("weighs a category by its share of the user's whole history, uncategorised products included", async () => {
    const at = new Date(T.getTime() - 60 * MINUTE).toISOString();
    for (const [k, product] of ["A", "NOPE"].entries()) {
      await query(
        `insert into events (message_id, user_key, type, event, source_id, event_time, received_at)
         values ($1, 'share-user', 'track', 'Product Viewed', 'fixture', $2, $2)`,
        [`share-${k}`, at],
      );
      await query(
        `insert into interactions (message_id, position, user_key, product_id, kind, weight, event_time)
         values ($1, 0, 'share-user', $2, 'view', 1, $3)`,
        [`share-${k}`, product, at],
      );
    }
    await computeRecommendations(db, { asOf: T });
    // C reaches the user only through the category of A (mugs) and the popular fallback: no neighbour of A or NOPE.
    expect(
      await query(
        "select 1 from item_neighbors where product_id in ('A', 'NOPE') and neighbor_id = 'C' and kind in ('similar', 'bought_together')",
      ),
    ).toEqual([]);
    const score = async (segment: string, product: string) =>
      Number(
        (
          await query<{ score: number }>(
            "select score from popular_items where list = 'popular' and segment = $1 and product_id = $2",
            [segment, product],
          )
        )[0]?.score ?? 0,
      );
    const best = async (segment: string) =>
      Number(
        (
          await query<{ best: number }>(
            "select max(score) as best from popular_items where list = 'popular' and segment = $1",
            [segment],
          )
        )[0]?.best,
      );
    const [row] = await query<{ score: number }>(
      `select x.score from user_candidates c, unnest(c.product_ids, c.scores) as x(product_id, score)
       where c.user_key = 'share-user' and x.product_id = 'C'`,
    );
    // Mugs holds half the history weight (A and NOPE, one view each at the same time): categoryWeight 0.5 × share 0.5
    // × C's scaled popularity in mugs, plus the popular fallback (popularWeight 0.01 × C's scaled global popularity).
    const expected =
      0.5 * 0.5 * ((await score("category:mugs", "C")) / (await best("category:mugs"))) +
      (0.01 * (await score("global", "C"))) / (await best("global"));
    expect(Number(row?.score)).toBeCloseTo(expected, 9);
  });

  it("a part run again after its COMMIT's answer was lost replaces what it staged, and the swap succeeds", async () => {
    await computeRecommendations(db, { asOf: T });
    const V = 900_001;
    const FULL = { mode: "full" } as const;
    await dropCandidateStage(db, V);
    await createCandidateStage(db, V);
    try {
      let snapshot = "";
      for (let attempt = 0; attempt < 2; attempt++) {
        const part = await transaction(
          db,
          (tx) => stageUserCandidates(tx, T, V, USER_CANDIDATES_DEFAULTS, FULL, { index: 0, of: 1 }),
          { isolationLevel: "repeatable read" },
        );
        snapshot = part.snapshot;
      }
      const [staged] = await query<{ rows: number; users: number }>(
        `select count(*)::int as rows, count(distinct user_key)::int as users from uc_stage_${V}`,
      );
      expect(staged?.rows).toBe(staged?.users);
      await query(
        `insert into model_versions (id, model, version, status) values (${V}, 'user_candidates', 'retry', 'building')`,
      );
      await transaction(db, (tx) => swapUserCandidates(tx, V, FULL, [snapshot]));
      const [swapped] = await query<{ n: number }>(
        `select count(*)::int as n from user_candidates where model_version = ${V}`,
      );
      expect(swapped?.n).toBe(staged?.users);
    } finally {
      await dropCandidateStage(db, V);
    }
  });

  it('asOf "data" keeps the newest interaction inside the windows when event times have microseconds', async () => {
    const at = "2024-06-01T12:30:00.000500Z";
    await query(
      `insert into events (message_id, user_key, type, event, source_id, event_time, received_at)
       values ('newest', 'n1', 'track', 'Product Viewed', 'fixture', $1, $1)`,
      [at],
    );
    await query(
      `insert into interactions (message_id, position, user_key, product_id, kind, weight, event_time)
       values ('newest', 0, 'n1', 'W1', 'view', 1, $1)`,
      [at],
    );
    await computeRecommendations(db, { asOf: "data", only: ["popular"] });
    expect(
      await query(
        "select product_id from popular_items where list = 'popular' and segment = 'global' and product_id = 'W1'",
      ),
    ).toEqual([{ product_id: "W1" }]);
  });
});
