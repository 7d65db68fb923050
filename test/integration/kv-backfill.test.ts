// The KV backfill's file output (scripts/lib/kv-backfill.ts) against the real Postgres, in a schema of its own:
// files of at most N pairs in `wrangler kv bulk put` format, values identical to what a publish writes, and with
// --record a second run that finds nothing left to write. The REST path: kv-backfill-rest.test.ts.
import { spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runBackfill } from "../../scripts/lib/kv-backfill.ts";
import { decodeNeighbors, decodeUserList } from "../../src/publish/codec.ts";
import { createSchema, dropSchema, query, STABLE_KEY_TABLES, stackSettings } from "../support/own-schema.ts";

const settings = stackSettings();
const out = mkdtempSync(join(tmpdir(), "lastmile-backfill-"));
let schema = "";

beforeAll(async () => {
  schema = await createSchema("backfill", STABLE_KEY_TABLES);
  await query(
    `insert into "${schema}".user_candidates (user_key, product_ids, scores, reasons, model_version)
     select 'u:user' || lpad(g::text, 3, '0'), '{p1,p2}', '{1,0.5}', null, 1 from generate_series(1, 25) g`,
  );
  await query(
    `insert into "${schema}".item_neighbors (kind, product_id, neighbor_id, score, rank, model_version)
     values ('similar', 'p1', 'p2', 0.5, 1, 1), ('similar', 'p2', 'p1', 0.5, 1, 1)`,
  );
});

afterAll(async () => {
  await dropSchema(schema);
  rmSync(out, { recursive: true, force: true });
});

describe("kv-backfill", () => {
  it("writes bulk files of at most N pairs, then nothing once recorded", async () => {
    const report = await runBackfill({ settings, schema, outDir: join(out, "a"), pairsPerFile: 10, record: true });
    expect(report.keys).toBe(27);
    expect(report.files).toHaveLength(3);
    const pairs = report.files.flatMap(
      (f) => JSON.parse(readFileSync(f, "utf8")) as Array<{ key: string; value: string }>,
    );
    expect(pairs.map((p) => Object.keys(p).sort().join())).toEqual(Array(27).fill("key,value"));
    expect(pairs[0]?.key).toBe("u:u:user001");
    expect(decodeUserList(pairs[0]?.value ?? null, 5)?.items).toEqual([
      { productId: "p1", score: 1, reason: null },
      { productId: "p2", score: 0.5, reason: null },
    ]);
    expect(decodeNeighbors(pairs.find((p) => p.key === "i:similar:p1")?.value ?? null, 1)?.items).toHaveLength(1);

    const again = await runBackfill({ settings, schema, outDir: join(out, "b") });
    expect(again.keys).toBe(0);
    expect(again.files).toHaveLength(0);
    const all = await runBackfill({ settings, schema, outDir: join(out, "c"), all: true });
    expect(all.keys).toBe(27);
  });

  it("refuses an output folder that is not empty: the upload loop would send an earlier run's files too", async () => {
    const dir = join(out, "again");
    const first = await runBackfill({ settings, schema, outDir: dir, pairsPerFile: 10, all: true });
    expect(first.files).toHaveLength(3);
    const before = readdirSync(dir).map((f) => [f, readFileSync(join(dir, f), "utf8")]);
    await expect(runBackfill({ settings, schema, outDir: dir, pairsPerFile: 5, all: true })).rejects.toThrow(
      `${dir} is not empty (3 entries)`,
    );
    const cli = spawnSync(process.execPath, ["scripts/kv-backfill.ts", "--out", dir, "--schema", schema, "--all"], {
      env: { ...process.env, DATABASE_URL: settings.databaseUrl, NEON_LOCAL_WS_PROXY: settings.localWsProxy },
      encoding: "utf8",
    });
    expect(cli.status, cli.stderr).toBe(2);
    expect(cli.stderr).toMatch(/is not empty \(3 entries\)/);
    expect(readdirSync(dir).map((f) => [f, readFileSync(join(dir, f), "utf8")])).toEqual(before);
  });
});
