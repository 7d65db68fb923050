// The publisher's change reads (src/publish/sources.ts readChanges) against the real Postgres, in a schema of their
// own: whatever the step size (`limit`) and the scan window (`scan`), a walk from cursor "" to `done` returns every
// changed key exactly once, in key order, and a step never examines more than `scan` keys — a publish where
// nothing changed advances window by window instead of reading every key after the cursor in one statement.
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { openDb } from "../../src/publish/db.ts";
import { type ReadOptions, readChanges, recordPublished, type StableChange } from "../../src/publish/sources.ts";
import { openPool } from "../../src/stores/db.ts";

const stack = inject("stack");
const settings = { databaseUrl: stack.DATABASE_URL, localWsProxy: stack.NEON_LOCAL_WS_PROXY };
const schema = `t_sources_${crypto.randomUUID().replaceAll("-", "").slice(0, 12)}`;
const pool = openPool(settings);
const { db, end } = openDb(settings, schema);

type Phase = Parameters<typeof readChanges>[1];

const USERS = 40;
const PRODUCTS = 12;

async function query(text: string, params: unknown[] = []) {
  return (await pool.query(text.replaceAll("$schema", `"${schema}"`), params)).rows as Array<Record<string, unknown>>;
}

/** Walks one phase from the start. */
async function walk(phase: Phase, limit: number, options: ReadOptions = {}) {
  const changes: StableChange[] = [];
  const steps: Array<{ from: string; to: string; changes: number; done: boolean }> = [];
  let cursor = "";
  for (let i = 0; i < 10_000; i++) {
    const batch = await readChanges(db, phase, cursor, limit, options);
    steps.push({ from: cursor, to: batch.cursor, changes: batch.changes.length, done: batch.done });
    changes.push(...batch.changes);
    cursor = batch.cursor;
    if (batch.done) return { changes, steps };
  }
  throw new Error("walk did not end");
}

const record = (changes: StableChange[]) => recordPublished(db, changes, 1);

const userKey = (i: number) => `u:user${String(i).padStart(3, "0")}`;

beforeAll(async () => {
  const tables = ["model_versions", "user_candidates", "item_neighbors", "published_keys", "erased_users"];
  await pool.query(
    [
      `create schema "${schema}"`,
      ...tables.map((t) => `create table "${schema}".${t} (like public.${t} including all)`),
    ].join(";\n"),
  );
  await query(
    `insert into $schema.user_candidates (user_key, product_ids, scores, reasons, model_version)
     select 'user' || lpad(g::text, 3, '0'), array['p' || g, 'p' || (g + 1)], array[1.0, 0.5], null, 1
     from generate_series(1, ${USERS}) g`,
  );
  await query(
    `insert into $schema.item_neighbors (kind, product_id, neighbor_id, score, rank, model_version)
     select k, 'p' || lpad(g::text, 2, '0'), 'p' || lpad((g % ${PRODUCTS} + r)::text, 2, '0'), 1.0 / r, r, 1
     from unnest(array['similar', 'bought_together']) k, generate_series(1, ${PRODUCTS}) g, generate_series(1, 3) r`,
  );
});

afterAll(async () => {
  await end();
  await pool.query(`drop schema if exists "${schema}" cascade`);
  await pool.end();
});

describe("readChanges", () => {
  it("returns the same changes in the same order whatever the step size and scan window", async () => {
    for (const phase of ["users", "items"] as const) {
      const reference = await walk(phase, 100, { scan: 10_000 });
      expect(reference.changes.length).toBe(phase === "users" ? USERS : PRODUCTS * 2);
      for (const [limit, scan] of [
        [3, 5],
        [1, 1],
        [7, 7],
        [4, 100],
      ] as const) {
        const small = await walk(phase, limit, { scan });
        expect(small.changes, `${phase} limit ${limit} scan ${scan}`).toEqual(reference.changes);
        for (const step of small.steps) expect(step.changes).toBeLessThanOrEqual(limit);
      }
    }
  });

  it("walks unchanged users window by window, each step examining at most `scan` keys", async () => {
    await record((await walk("users", 100)).changes);
    const unchanged = await walk("users", 3, { scan: 5 });
    expect(unchanged.changes).toEqual([]);
    // 40 keys in windows of 5: 8 full windows, then one empty read that finds the end.
    expect(unchanged.steps).toHaveLength(USERS / 5 + 1);
    const order = Array.from({ length: USERS }, (_, i) => userKey(i + 1).slice(2));
    for (const [i, step] of unchanged.steps.entries()) {
      const from = step.from === "" ? 0 : order.indexOf(step.from) + 1;
      const to = order.indexOf(step.to) + 1;
      expect(to - from, `step ${i}`).toBeLessThanOrEqual(5);
      expect(step.done).toBe(i === unchanged.steps.length - 1);
    }
  });

  it("finds the few changed users among unchanged ones, across windows with no change", async () => {
    await record((await walk("users", 100)).changes);
    const changed = [3, 4, 17, 39].map(userKey);
    await query(
      `update $schema.user_candidates set scores[1] = scores[1] + 1
       where 'u:' || user_key in (select unnest($1::text[]))`,
      [changed],
    );
    const walked = await walk("users", 1, { scan: 6 });
    expect(walked.changes.map((c) => c.key)).toEqual(changed);
    expect(walked.steps.some((s) => s.changes === 0 && !s.done)).toBe(true);
    await query("update $schema.user_candidates set scores[1] = scores[1] - 1 where 'u:' || user_key = any($1)", [
      changed,
    ]);
  });

  it("walks published keys for tombstones in windows, finding exactly the lists that disappeared", async () => {
    await record((await walk("users", 100)).changes);
    await record((await walk("items", 100)).changes);
    await query("delete from $schema.user_candidates where user_key in ('user005', 'user006', 'user031')");
    await query("delete from $schema.item_neighbors where kind = 'bought_together' and product_id = 'p07'");
    const users = await walk("user_tombstones", 2, { scan: 4 });
    expect(users.changes.map((c) => [c.key, c.hash, c.list])).toEqual(
      ["u:user005", "u:user006", "u:user031"].map((k) => [k, "tombstone", "null"]),
    );
    expect(users.steps.length).toBeGreaterThan(USERS / 4);
    const items = await walk("item_tombstones", 2, { scan: 4 });
    expect(items.changes.map((c) => c.key)).toEqual(["i:bought_together:p07"]);
  });
});
