// computeRecommendations when the database fails around its transactions: a version it registered never stays
// `building` (docs/recommenders.md: a failure stays visible, the version becomes `failed`).
import type { SQL } from "drizzle-orm";
import { PgDialect } from "drizzle-orm/pg-core";
import { expect, it } from "vitest";
import { computeRecommendations } from "../../src/batch/compute.ts";
import type { Database } from "../../src/stores/db.ts";
import { ownDatabase } from "../support/own-database.ts";

const own = ownDatabase("lastmile_test_compute_failures");

/** `db` whose connection drops (the error a Neon restart gives) at the statements `drops` picks, counted from 1. */
function dropping(drops: (sql: string, params: unknown[], nth: number) => boolean): Database {
  const dialect = new PgDialect();
  let n = 0;
  return new Proxy(own.db, {
    get(target, prop, receiver) {
      if (prop !== "execute") return Reflect.get(target, prop, receiver);
      return async (query: SQL) => {
        const { sql, params } = dialect.sqlToQuery(query);
        if (drops(sql, params, ++n)) {
          throw Object.assign(new Error("Connection terminated unexpectedly"), { code: "ECONNRESET" });
        }
        return target.execute(query);
      };
    },
  }) as Database;
}

async function statuses(version: string) {
  const result = await own.pool.query("select model, status from model_versions where version = $1 order by model", [
    version,
  ]);
  return result.rows as Array<{ model: string; status: string }>;
}

it("marks the popular version failed when registering the trending one fails", async () => {
  const version = `cf-${crypto.randomUUID().slice(0, 8)}`;
  // Every attempt at the trending version's insert fails: the popular one is committed already.
  const flaky = dropping((sql, params) => /insert into "model_versions"/.test(sql) && params.includes("trending"));
  await expect(computeRecommendations(flaky, { version, only: ["popular", "trending"] })).rejects.toThrow();
  expect(await statuses(version)).toEqual([{ model: "popular", status: "failed" }]);
});

it("marks a version failed even when the first attempt at marking it drops too", async () => {
  const version = `cf-${crypto.randomUUID().slice(0, 8)}`;
  let marks = 0;
  const flaky = dropping((sql, params) => {
    if (/insert into "model_versions"/.test(sql) && params.includes("trending")) return true;
    return /set status = 'failed'/.test(sql) && ++marks === 1;
  });
  await expect(computeRecommendations(flaky, { version, only: ["popular", "trending"] })).rejects.toThrow();
  expect({ marks, statuses: await statuses(version) }).toEqual({
    marks: 2,
    statuses: [{ model: "popular", status: "failed" }],
  });
});
