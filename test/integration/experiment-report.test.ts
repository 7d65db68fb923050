// The experiment report's attribution and counts (src/experiments/report.ts) on real Postgres: a hand-built set of
// exposures and actions whose every expected number is worked out below from the attribution rules
// (docs/experiments.md#report) — windows, rec_id first, last touch vs any touch, revenue once per order line.
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { ensureDatabase, migrateDatabase } from "../../scripts/lib/migrate.ts";
import { parseExperiments } from "../../src/experiments/config.ts";
import { EXPOSURE_EVENT, EXPOSURE_SOURCE } from "../../src/experiments/exposure.ts";
import { armCounts, experimentReport, REPORT_DEFAULTS, teamCredits } from "../../src/experiments/report.ts";
import { type Database, type DbSettings, drizzleOn, openPool } from "../../src/stores/db.ts";

const stack = inject("stack");
const DATABASE = "lastmile_test_experiments";
const server: DbSettings = { databaseUrl: stack.DATABASE_URL, localWsProxy: stack.NEON_LOCAL_WS_PROXY };
const settings: DbSettings = {
  ...server,
  databaseUrl: Object.assign(new URL(stack.DATABASE_URL), { pathname: `/${DATABASE}` }).toString(),
};

const T0 = Date.parse("2026-06-01T12:00:00Z");
const MIN = 60_000;
const HOUR = 60 * MIN;

let pool: ReturnType<typeof openPool>;
let db: Database;

type Item = { product_id: string; position: number; team?: "a" | "b" };

async function exposure(
  id: string,
  user: string,
  at: number,
  experiment: string,
  arm: string,
  items: Item[],
  source = EXPOSURE_SOURCE,
  extra: Record<string, unknown> = {},
) {
  await pool.query(
    `insert into events (message_id, user_key, type, event, properties, source_id, event_time, received_at)
     values ($1, $2, 'track', $3, $4, $5, $6, $6)`,
    [
      `exposure-${id}`,
      user,
      EXPOSURE_EVENT,
      JSON.stringify({ rec_id: id, experiment_id: experiment, arm, items, ...extra }),
      source,
      new Date(at).toISOString(),
    ],
  );
}

/** One action event with its interactions (one per line). */
async function action(
  messageId: string,
  user: string,
  at: number,
  kind: "click" | "add_to_cart" | "purchase",
  lines: Array<{ product: string; price?: number; quantity?: number }>,
  recId: string | null = null,
) {
  const event = kind === "click" ? "Product Clicked" : kind === "add_to_cart" ? "Product Added" : "Order Completed";
  const time = new Date(at).toISOString();
  await pool.query(
    `insert into events (message_id, user_key, type, event, properties, source_id, event_time, received_at)
     values ($1, $2, 'track', $3, $4, 'web', $5, $5)`,
    [messageId, user, event, JSON.stringify(recId ? { rec_id: recId } : {}), time],
  );
  for (const [i, l] of lines.entries()) {
    await pool.query(
      `insert into interactions (message_id, position, user_key, product_id, kind, weight, quantity, price, event_time)
       values ($1, $2, $3, $4, $5, 1, $6, $7, $8)`,
      [messageId, i, user, l.product, kind, l.quantity ?? null, l.price ?? null, time],
    );
  }
}

/** A split of control (popular) against treat (the ranker), and an interleaving of now (ranker) and pop (popular). */
const split = (id: string, placement: string) => ({
  id,
  placement,
  variants: [
    { id: "control", ranker: { kind: "popular" } },
    { id: "treat", ranker: { kind: "ranker" } },
  ],
});
const interleave = (id: string, placement: string) => ({
  id,
  placement,
  mode: "interleave",
  variants: [
    { id: "now", ranker: { kind: "ranker" } },
    { id: "pop", ranker: { kind: "popular" } },
  ],
});

const SPLIT = parseExperiments(
  {
    experiments: [
      split("exp1", "home"),
      interleave("il", "pdp"),
      split("merge-exp", "cart"),
      split("device-exp", "post_purchase"),
      interleave("il-order", "similar"),
      split("revenue-exp", "rerank"),
    ],
  },
  "v1",
);
if (!SPLIT.ok) throw new Error(JSON.stringify(SPLIT.issues));
type Parsed = (typeof SPLIT.config.experiments)[number];
const [EXP1, IL, MERGE_EXP, DEVICE_EXP, IL_ORDER, REVENUE_EXP] = SPLIT.config.experiments as [
  Parsed,
  Parsed,
  Parsed,
  Parsed,
  Parsed,
  Parsed,
];

async function identity(anonymousId: string, userId: string, firstSeen: number) {
  await pool.query("insert into identities (anonymous_id, user_id, first_seen, last_seen) values ($1, $2, $3, $3)", [
    anonymousId,
    userId,
    new Date(firstSeen).toISOString(),
  ]);
}

beforeAll(async () => {
  await ensureDatabase(server, DATABASE);
  await migrateDatabase(settings);
  pool = openPool(settings);
  db = drizzleOn(pool);
  await pool.query("truncate events, interactions, identities");
  // ── exp1 exposures ──
  await exposure("e1", "u:1", T0, "exp1", "control", [
    { product_id: "A", position: 1 },
    { product_id: "B", position: 2 },
  ]);
  await exposure("e1b", "u:1", T0 + 5 * MIN, "exp1", "control", [{ product_id: "A", position: 1 }]);
  await exposure("e5", "u:4", T0, "exp1", "control", [{ product_id: "D", position: 1 }]);
  await exposure("e2", "u:2", T0, "exp1", "treat", [
    { product_id: "A", position: 1 },
    { product_id: "C", position: 2 },
  ]);
  await exposure("e3", "u:2", T0 + 2 * HOUR, "exp1", "treat", [
    { product_id: "C", position: 1 },
    { product_id: "D", position: 2 },
  ]);
  await exposure("e4", "u:3", T0, "exp1", "treat", [{ product_id: "B", position: 1 }]);
  // Not exp1's: another experiment, and a client's own event of the same name (not from source lastmile).
  await exposure("o1", "u:1", T0, "other", "x", [{ product_id: "A", position: 1 }]);
  await exposure("fake", "u:1", T0, "exp1", "treat", [{ product_id: "A", position: 1 }], "web");
  // ── actions ──
  // u:1: click A naming e1's rec_id (+10 min), add A (+20 min), buy 2 × A at 10 (+5 h), click B (+2 h: too late).
  await action("c1", "u:1", T0 + 10 * MIN, "click", [{ product: "A" }], "e1");
  await action("a1", "u:1", T0 + 20 * MIN, "add_to_cart", [{ product: "A" }]);
  await action("o-u1", "u:1", T0 + 5 * HOUR, "purchase", [{ product: "A", price: 10, quantity: 2 }]);
  await action("c2", "u:1", T0 + 2 * HOUR, "click", [{ product: "B" }]);
  // u:2: click C (+2.5 h: e2's hour is over, e3's is not); an order at +3 h: C at 5 and A at 7.
  await action("c3", "u:2", T0 + 150 * MIN, "click", [{ product: "C" }]);
  await action("o-u2", "u:2", T0 + 3 * HOUR, "purchase", [
    { product: "C", price: 5, quantity: 1 },
    { product: "A", price: 7, quantity: 1 },
  ]);
  // u:3: click B naming e4 (+30 min); buy B after 30 h (outside 24 h).
  await action("c4", "u:3", T0 + 30 * MIN, "click", [{ product: "B" }], "e4");
  await action("o-u3", "u:3", T0 + 30 * HOUR, "purchase", [{ product: "B", price: 100, quantity: 1 }]);
  // ── interleave exposures: i1 b wins (B clicked), i2 tie (C and D), i3 no clicks ──
  await exposure("i1", "u:5", T0, "il", "interleaved", [
    { product_id: "A", position: 1, team: "a" },
    { product_id: "B", position: 2, team: "b" },
  ]);
  await exposure("i2", "u:6", T0, "il", "interleaved", [
    { product_id: "C", position: 1, team: "a" },
    { product_id: "D", position: 2, team: "b" },
  ]);
  await exposure("i3", "u:7", T0, "il", "interleaved", [{ product_id: "E", position: 1, team: "a" }]);
  await action("c5", "u:5", T0 + MIN, "click", [{ product: "B" }]);
  await action("c6", "u:6", T0 + MIN, "click", [{ product: "C" }]);
  await action("c7", "u:6", T0 + 2 * MIN, "click", [{ product: "D" }]);
  // ── merge-exp: exposures under the key the request named, actions under the object that recorded them ──
  // anon1 is shown P1 and P2 before logging in (+10 min: identities links anon1 → buyer1; every later event is
  // recorded under u:buyer1). It adds P2 to the cart while anonymous, then clicks P1 naming m1 and buys it.
  await exposure("m1", "a:anon1", T0, "merge-exp", "treat", [
    { product_id: "P1", position: 1 },
    { product_id: "P2", position: 2 },
  ]);
  await identity("anon1", "buyer1", T0 + 10 * MIN);
  await action("m-cart", "a:anon1", T0 + 5 * MIN, "add_to_cart", [{ product: "P2" }]);
  await action("m-click", "u:buyer1", T0 + 12 * MIN, "click", [{ product: "P1" }], "m1");
  await action("m-order", "u:buyer1", T0 + 20 * MIN, "purchase", [{ product: "P1", price: 30 }]);
  // anon2 is linked to two users: the link first seen (shared1, +1 min) names its person, not shared2 (+2 min).
  // shared2 logged in is exposed in control; anon2's click on P3 belongs to shared1 (treat), not to shared2.
  await exposure("m2", "a:anon2", T0, "merge-exp", "treat", [{ product_id: "P3", position: 1 }]);
  await exposure("m3", "u:shared2", T0, "merge-exp", "control", [{ product_id: "P3", position: 1 }]);
  await identity("anon2", "shared2", T0 + 2 * MIN);
  await identity("anon2", "shared1", T0 + MIN);
  await action("m-click2", "u:shared1", T0 + 3 * MIN, "click", [{ product: "P3" }]);
  // ── device-exp: one user on two devices, in control first (+0) then treat (+1 min), and seen as a:tablet (linked to
  //    u:multi) in treat too; one order of P9 (10) and one click on P9 ──
  await exposure("d1", "u:multi", T0, "device-exp", "control", [{ product_id: "P9", position: 1 }]);
  await exposure("d2", "u:multi", T0 + MIN, "device-exp", "treat", [{ product_id: "P9", position: 1 }]);
  await exposure("d3", "a:tablet", T0 + 2 * MIN, "device-exp", "treat", [{ product_id: "P9", position: 1 }]);
  await identity("tablet", "multi", T0 + 30 * MIN);
  await exposure("d4", "u:solo", T0, "device-exp", "treat", [{ product_id: "P8", position: 1 }]);
  await action("d-click", "u:multi", T0 + 5 * MIN, "click", [{ product: "P9" }]);
  await action("d-order", "u:multi", T0 + 60 * MIN, "purchase", [{ product: "P9", price: 10 }]);
  // ── il-order: exposures that stored the variants of their teams. io1 in the document's order (b wins), o2 with the
  //    variants reversed (the document was reordered: its team a is "pop"; a wins there, a vote for pop), io3 of
  //    another pair (a variant replaced), io4 from before variants were stored (document order) ──
  const il = (id: string, user: string, variants: string[] | null) =>
    exposure(
      id,
      user,
      T0,
      "il-order",
      "interleaved",
      [
        { product_id: "X", position: 1, team: "a" },
        { product_id: "Y", position: 2, team: "b" },
      ],
      EXPOSURE_SOURCE,
      variants ? { variants } : {},
    );
  await il("io1", "u:io1", ["now", "pop"]);
  await il("io2", "u:io2", ["pop", "now"]);
  await il("io3", "u:io3", ["now", "old"]);
  await il("io4", "u:io4", null);
  await action("ioc1", "u:io1", T0 + MIN, "click", [{ product: "Y" }]);
  await action("ioc2", "u:io2", T0 + MIN, "click", [{ product: "X" }]);
  await action("ioc3", "u:io3", T0 + MIN, "click", [{ product: "X" }]);
  await action("ioc4", "u:io4", T0 + MIN, "click", [{ product: "Y" }]);
  // ── revenue-exp: order lines outside the plausible range (|price| ≤ 1e9, |quantity| ≤ 1e6), as a row stored by
  //    another writer would hold them: u:rv1 (control) buys R at 1e200 and at 8 × 2; u:rv2 (treat) buys R at 10 ×
  //    2,000,000,000 and at −1e300 ──
  await exposure("rv1", "u:rv1", T0, "revenue-exp", "control", [{ product_id: "R", position: 1 }]);
  await exposure("rv2", "u:rv2", T0, "revenue-exp", "treat", [{ product_id: "R", position: 1 }]);
  await action("rv1-order", "u:rv1", T0 + MIN, "purchase", [
    { product: "R", price: 1e200, quantity: 1 },
    { product: "R", price: 8, quantity: 2 },
  ]);
  await action("rv2-order", "u:rv2", T0 + MIN, "purchase", [
    { product: "R", price: 10, quantity: 2_000_000_000 },
    { product: "R", price: -1e300 },
  ]);
});

afterAll(async () => {
  await pool?.end();
});

describe("attribution", () => {
  it("last touch: the exposure an action's rec_id names, else the latest within the window", async () => {
    const counts = await armCounts(db, "exp1", REPORT_DEFAULTS);
    // control: u:1 (e1, e1b) and u:4 (e5). c1 names e1; a1 goes to the later e1b; the order line A (20) to e1b.
    // treat: u:2 (e2, e3), u:3 (e4). c3 → e3 (e2's hour is over); c4 → e4; the order's C → e3 (latest), A → e2
    // (only e2 showed A): 2 lines, 12; u:3's order is 30 h late.
    expect(counts).toEqual([
      {
        arm: "control",
        visitors: 2,
        exposures: 3,
        clickedExposures: 1,
        cartedExposures: 1,
        converters: 1,
        clicks: 1,
        carts: 1,
        orderLines: 1,
        revenue: 20,
        revenueSq: 400,
        // Per visitor (exposures, clicked, carted): u:1 (2, 1, 1), u:4 (1, 0, 0).
        exposuresSq: 5,
        clickedSq: 1,
        clickedByExposures: 2,
        cartedSq: 1,
        cartedByExposures: 2,
      },
      {
        arm: "treat",
        visitors: 2,
        exposures: 3,
        clickedExposures: 2,
        cartedExposures: 0,
        converters: 1,
        clicks: 2,
        carts: 0,
        orderLines: 2,
        revenue: 12,
        revenueSq: 144,
        // u:2 (2, 1, 0), u:3 (1, 1, 0).
        exposuresSq: 5,
        clickedSq: 2,
        clickedByExposures: 3,
        cartedSq: 0,
        cartedByExposures: 0,
      },
    ]);
  });

  it("any touch: every qualifying exposure is credited, revenue still once per order line", async () => {
    const counts = await armCounts(db, "exp1", { ...REPORT_DEFAULTS, model: "any" });
    // control: c1 qualifies for e1 and e1b (both showed A within the hour), a1 too: 2 clicked, 2 carted exposures.
    expect(counts.find((c) => c.arm === "control")).toMatchObject({
      clickedExposures: 2,
      cartedExposures: 2,
      clicks: 2,
      carts: 2,
      orderLines: 1,
      revenue: 20,
    });
    expect(counts.find((c) => c.arm === "treat")).toMatchObject({ clickedExposures: 2, orderLines: 2, revenue: 12 });
  });

  it("windows are configurable: a 3-hour click window also credits u:1's late click on B to e1", async () => {
    const counts = await armCounts(db, "exp1", { ...REPORT_DEFAULTS, clickWindowMs: 3 * HOUR });
    // c2 (+2 h) now qualifies for e1 (B shown); c3 (+2.5 h) qualifies for e2 and e3 → last touch e3.
    expect(counts.find((c) => c.arm === "control")).toMatchObject({ clicks: 2, clickedExposures: 1 });
  });
});

describe("the report", () => {
  it("rates with intervals, differences to the control, and the sample-ratio check", async () => {
    const report = await experimentReport(db, EXP1);
    expect(report.control).toBe("control");
    const [control, treat] = report.arms;
    expect(control?.arm).toBe("control");
    expect(control?.ctr).toMatchObject({ successes: 1, trials: 3 });
    expect(treat?.ctr).toMatchObject({ successes: 2, trials: 3 });
    // CTR's standard error over visitors (delta method): treat x = clicked exposures [1, 1], y = exposures [2, 1]:
    // R = 2/3, s²x = 0, s²y = 1/2, sxy = 0 → Var = (4/9 · 1/2) / (2 · 9/4) = 4/81. control x = [1, 0], y = [2, 1]:
    // R = 1/3, s²x = 1/2, s²y = 1/2, sxy = 1/2 → Var = (1/2 − 1/3 + 1/18) / (9/2) = 4/81. Difference se = √(8/81).
    expect(treat?.ctr.se).toBeCloseTo(2 / 9, 12);
    expect(control?.ctr.se).toBeCloseTo(2 / 9, 12);
    expect(treat?.vsControl?.ctr.se).toBeCloseTo(Math.sqrt(8 / 81), 12);
    // Revenue per visitor: control [20, 0] → mean 10, variance 200; treat [12, 0] → mean 6, variance 72.
    expect(control?.revenuePerVisitor?.mean).toBe(10);
    expect(treat?.revenuePerVisitor?.mean).toBe(6);
    expect(treat?.vsControl?.revenuePerVisitor?.difference).toBe(-4);
    // Welch SE = √(72/2 + 200/2) = √136.
    expect(treat?.vsControl?.revenuePerVisitor?.se).toBeCloseTo(Math.sqrt(136), 9);
    expect(treat?.vsControl?.ctr.difference).toBeCloseTo(1 / 3, 12);
    expect(control?.vsControl).toBeNull();
    // 2 and 2 visitors for 50 / 50: χ² = 0.
    expect(report.srm).toMatchObject({ statistic: 0, mismatch: false });
  });

  it("interleave: clicks credited to the team that placed the clicked position", async () => {
    const credits = await teamCredits(db, "il", REPORT_DEFAULTS);
    expect(credits).toEqual([
      { a: 0, b: 1, winner: "b" },
      { a: 1, b: 1, winner: "tie" },
      { a: 0, b: 0, winner: "tie" },
    ]);
    const report = await experimentReport(db, IL);
    expect(report.interleaving).toMatchObject({ a: "now", b: "pop", wins: 0, losses: 1, ties: 1, noClicks: 1, n: 2 });
  });
});

describe("order lines outside the plausible range", () => {
  it("an implausible price is no revenue and an implausible quantity one unit; the report still answers", async () => {
    // control: 1e200 counts 0, 8 × 2 counts 16. treat: 10 × 2e9 counts 10 × 1, −1e300 counts 0. Each line is still an
    // order line and each buyer a converter.
    const counts = await armCounts(db, "revenue-exp", REPORT_DEFAULTS);
    expect(counts.map((c) => [c.arm, c.orderLines, c.converters, c.revenue, c.revenueSq])).toEqual([
      ["control", 2, 1, 16, 256],
      ["treat", 2, 1, 10, 100],
    ]);
    const report = await experimentReport(db, REVENUE_EXP);
    expect(report.arms.map((a) => [a.arm, a.revenue, a.vsControl?.revenuePerVisitor ?? null])).toEqual([
      ["control", 16, null],
      ["treat", 10, null],
    ]);
  });
});

describe("visitors are people", () => {
  it("a visitor's actions after logging in are credited to the exposures they saw before, under either key", async () => {
    const counts = await armCounts(db, "merge-exp", REPORT_DEFAULTS);
    // treat: buyer1 (m1: cart P2 as a:anon1, click P1 and its order as u:buyer1) and shared1 (m2, via anon2's
    // first link: click P3). control: shared2 (m3): anon2's later link to shared2 does not count.
    expect(counts.find((c) => c.arm === "treat")).toMatchObject({
      visitors: 2,
      exposures: 2,
      clicks: 2,
      clickedExposures: 2,
      carts: 1,
      converters: 1,
      orderLines: 1,
      revenue: 30,
    });
    expect(counts.find((c) => c.arm === "control")).toMatchObject({ visitors: 1, exposures: 1, clicks: 0 });
    // Three people, none of them in two arms: anon2's exposure in treat is shared1's, not shared2's (control).
    const report = await experimentReport(db, MERGE_EXP);
    expect(report.crossed).toEqual({ visitors: 0, exposures: 0 });
    expect(report.srm).toMatchObject({ expected: { control: 1.5, treat: 1.5 } });
  });

  it("one person is one visitor in the arm of their first exposure; the report counts those who crossed", async () => {
    const report = await experimentReport(db, DEVICE_EXP, { ...REPORT_DEFAULTS, model: "any" });
    const control = report.arms.find((a) => a.arm === "control");
    const treat = report.arms.find((a) => a.arm === "treat");
    // u:multi (with a:tablet) is first seen in control: d2 and d3 are left out, the click and the order credited
    // once, to d1. treat keeps u:solo alone.
    expect(control).toMatchObject({ visitors: 1, exposures: 1, clicks: 1, orderLines: 1, revenue: 10 });
    expect(treat).toMatchObject({ visitors: 1, exposures: 1, clicks: 0, revenue: 0 });
    expect(report.arms.reduce((s, a) => s + a.visitors, 0)).toBe(2);
    expect(report.crossed).toEqual({ visitors: 1, exposures: 2 });
    // An experiment where nobody crossed says so.
    expect((await experimentReport(db, EXP1)).crossed).toEqual({ visitors: 0, exposures: 0 });
  });

  it("interleaving credit follows the variants an exposure stored, whatever the document's order now", async () => {
    // In the document's terms (a = now, b = pop): io1 b (Y by pop), io2 b (X was pop's), io4 b (document order); io3
    // compares another pair and is left out.
    expect(await teamCredits(db, "il-order", REPORT_DEFAULTS, ["now", "pop"])).toEqual([
      { a: 0, b: 1, winner: "b" },
      { a: 0, b: 1, winner: "b" },
      { a: 0, b: 1, winner: "b" },
    ]);
    const report = await experimentReport(db, IL_ORDER);
    expect(report.interleaving).toMatchObject({ a: "now", b: "pop", impressions: 3, wins: 0, losses: 3 });
    // The document reordered (pop first): the same exposures are the same votes, now wins for its first variant.
    const reordered = { ...IL_ORDER, variants: [...IL_ORDER.variants].reverse() };
    expect((await experimentReport(db, reordered)).interleaving).toMatchObject({ a: "pop", b: "now", wins: 2 });
  });
});
