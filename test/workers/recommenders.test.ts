// computeRecommendations inside workerd, through the Neon driver over the WebSocket proxy — exactly as the refresh
// calls it from the Worker. The test database is shared with other test files, so this one works in a schema of
// its own: the tables are created LIKE the migrated ones and the connection's search_path points at it (the
// recommenders name tables unqualified). The numbers themselves are checked in test/integration/recommenders.test.ts.
import { env } from "cloudflare:workers";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { computeRecommendations, currentModelVersions } from "../../src/batch/compute.ts";
import { drizzleOn, openPool } from "../../src/stores/db.ts";
import { fixtureStatements, T } from "../fixtures/recommenders/fixture.ts";

const SCHEMA = `recs_${crypto.randomUUID().replaceAll("-", "").slice(0, 12)}`;
const TABLES = [
  "catalog",
  "events",
  "interactions",
  "model_versions",
  "item_neighbors",
  "user_candidates",
  "popular_items",
  // user_candidates' swap leaves out users erased while it staged.
  "erased_users",
];

const admin = () => openPool({ databaseUrl: env.DATABASE_URL, localWsProxy: env.NEON_LOCAL_WS_PROXY });
function inSchema() {
  const url = new URL(env.DATABASE_URL);
  url.searchParams.set("options", `-c search_path=${SCHEMA}`);
  return openPool({ databaseUrl: url.toString(), localWsProxy: env.NEON_LOCAL_WS_PROXY });
}

beforeAll(async () => {
  const pool = admin();
  try {
    await pool.query(`create schema ${SCHEMA}`);
    for (const table of TABLES) {
      await pool.query(`create table ${SCHEMA}.${table} (like public.${table} including all)`);
    }
  } finally {
    await pool.end();
  }
});

afterAll(async () => {
  const pool = admin();
  try {
    await pool.query(`drop schema ${SCHEMA} cascade`);
  } finally {
    await pool.end();
  }
});

describe("computeRecommendations in the Worker runtime", () => {
  it("computes every output through the Neon driver and registers ready versions", async () => {
    const pool = inSchema();
    try {
      // Everything below lands in this test's schema, never in the shared tables.
      expect((await pool.query("select current_schema() as s")).rows).toEqual([{ s: SCHEMA }]);
      for (const statement of fixtureStatements()) await pool.query(statement);
      const db = drizzleOn(pool);
      // Next items over 90 days, as the fixture's expectations (test/integration/recommenders.test.ts) are made.
      const report = await computeRecommendations(db, { asOf: T, params: { nextItems: { windowDays: 90 } } });
      expect(Object.keys(report.outputs).sort()).toEqual([
        "bought_together",
        "next_items",
        "popular",
        "similar",
        "trending",
        "user_candidates",
      ]);
      expect(report.outputs.similar?.rows).toBe(8);
      expect(report.outputs.bought_together?.rows).toBe(4);
      expect(report.outputs.next_items?.rows).toBe(13);
      const current = await currentModelVersions(db);
      expect([...current.values()].every((v) => v.status === "ready" && v.version === report.version)).toBe(true);
      const { rows } = await pool.query(
        "select product_ids[1] as product_id, reasons[1] as reason from user_candidates where user_key = 'u2'",
      );
      expect(rows).toEqual([{ product_id: "A", reason: "similar_to:B" }]);
    } finally {
      await pool.end();
    }
  });
});
