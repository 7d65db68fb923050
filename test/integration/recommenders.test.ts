// The SQL recommenders against a real Postgres, through the Neon driver (the Worker's path), in a database of
// their own (lastmile_test_recommenders, created and migrated here): the hand-made fixture of
// test/fixtures/recommenders/fixture.ts, with every expected number worked out by hand below.
import { afterAll, beforeAll, beforeEach, describe, expect, inject, it } from "vitest";
import { ensureDatabase, migrateDatabase } from "../../scripts/lib/migrate.ts";
import { computeRecommendations, currentModelVersions } from "../../src/batch/compute.ts";
import { type Database, type DbSettings, drizzleOn, openPool } from "../../src/stores/db.ts";
import { fixtureStatements, INTERACTIONS, RESET_STATEMENT, T } from "../fixtures/recommenders/fixture.ts";

const stack = inject("stack");
const DATABASE = "lastmile_test_recommenders";
const server: DbSettings = { databaseUrl: stack.DATABASE_URL, localWsProxy: stack.NEON_LOCAL_WS_PROXY };
const settings: DbSettings = {
  ...server,
  databaseUrl: Object.assign(new URL(stack.DATABASE_URL), { pathname: `/${DATABASE}` }).toString(),
};

let pool: ReturnType<typeof openPool>;
let db: Database;

async function query<R>(text: string, params: unknown[] = []): Promise<R[]> {
  return (await pool.query(text, params)).rows as R[];
}

beforeAll(async () => {
  await ensureDatabase(server, DATABASE);
  await migrateDatabase(settings);
  pool = openPool(settings);
  db = drizzleOn(pool);
});

afterAll(async () => {
  await pool?.end();
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

/** 0.5^(age / 14 days): the history weight's recency decay. */
const decay = (ageHours: number) => 0.5 ** (ageHours / (14 * 24));

describe("computeRecommendations", () => {
  it("co-visitation: cosine of session vectors, sessions split at 30 minutes, pairs seen in ≥ 2 sessions", async () => {
    const report = await computeRecommendations(db, { asOf: T, only: ["similar"] });
    // Sessions and the strongest weight per product (view 1, cart 3, purchase 5):
    //   u1: {A 1, B 3}, {A 1, C 1}   u2: {A 1, B 5}   u3: {B 1, C 1}, {D 1, E 1}   u4: {D 1, E 3}
    //   u5, u6: {C 1}, {F 1} each (40 min apart: two sessions)   b1: {P 5, Q 5}  b2: {P 5, Q 5, R 5}  b3: {P 5, R 5}
    // Norms Σw²: A 3, B 9+25+1 = 35, D 2, E 10, P 75, Q 50, R 50.
    //   A–B: sessions u1/1 (1·3) and u2 (1·5): 8 / √(3·35) = 0.780720
    //   D–E: u3/2 (1·1) and u4 (1·3): 4 / √(2·10) = 0.894427
    //   P–Q: b1, b2 (25 + 25): 50 / √(75·50) = 0.816497; P–R the same
    //   A–C, B–C, Q–R: one session only (dropped); C–F: never in one session.
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
    expect(report.outputs.similar).toMatchObject({ rows: 8, counts: { sessions: 9 } });

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

  it("user candidates: neighbours of the history, category affinity, popular fallback; purchases excluded", async () => {
    const report = await computeRecommendations(db, { asOf: T });
    // 10 users active in the last 30 days; b4 bought a single product (fewer than 2 in its history): no list.
    expect(report.outputs.user_candidates).toMatchObject({ mode: "full", counts: { users: 10, listedUsers: 9 } });
    expect(await candidates("b4")).toEqual([]);

    // u2 viewed A (30 h ago) and bought B (29 h 50 min ago): B is never a candidate.
    //   A: B's similar neighbour:  5 · 0.5^(29.833/336) · 0.780720 = 3.670600   (reason similar_to:B)
    //      + category mugs (share 1): 0.5 · 3/10 = 0.15  + popular: 0.01 · 3/15 = 0.002
    //   C: category mugs 0.5 · 4/10 = 0.2 + popular 0.01 · 4/15                 (reason category:mugs)
    //   then the popular fallback 0.01 · score/15: P (0.01), Q, R (0.00667), E, S (0.00333), D, F (0.00133)
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
    ]);
    expect(u2[0]?.score).toBeCloseTo(5 * decay(29 + 50 / 60) * (8 / Math.sqrt(105)) + 0.15 + 0.002, 9);
    expect(u2[1]?.score).toBeCloseTo(0.2 + (0.01 * 4) / 15, 9);
    expect(u2.map((c) => c.rank)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9]);

    // b2 bought P, Q and R: none of them comes back, although each is the others' neighbour; S (same category,
    // not bought) does, through the category affinity: 0.5 · 5/15 + 0.01 · 5/15.
    const b2 = await candidates("b2");
    expect(b2.map((c) => c.product_id)).not.toContain("P");
    expect(b2.map((c) => c.product_id)).not.toContain("Q");
    expect(b2.map((c) => c.product_id)).not.toContain("R");
    expect(b2[0]).toMatchObject({ product_id: "S", reason: "category:cards & wrap" });
    expect(b2[0]?.score).toBeCloseTo(0.5 * (5 / 15) + 0.01 * (5 / 15), 9);

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
    // The 8 other users with a list (b4, with a single product, has none) keep the full run's rows.
    expect(byVersion.filter((r) => r.v === full.outputs.user_candidates?.modelVersion)).toHaveLength(8);
    // u5's new list starts from B's neighbour A.
    expect((await candidates("u5"))[0]).toMatchObject({ product_id: "A", reason: "similar_to:B" });
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
});
