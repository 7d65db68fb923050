// `npm run catalog:import` (scripts/catalog-import.ts) run as a process against the test Postgres.
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, inject, it } from "vitest";
import { openPool } from "../../src/stores/db.ts";

const stack = inject("stack");
const settings = { databaseUrl: stack.DATABASE_URL, localWsProxy: stack.NEON_LOCAL_WS_PROXY };
const dir = mkdtempSync(join(tmpdir(), "lastmile-import-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function importFile(file: string) {
  return spawnSync(process.execPath, ["scripts/catalog-import.ts", file], {
    env: { ...process.env, DATABASE_URL: settings.databaseUrl, NEON_LOCAL_WS_PROXY: settings.localWsProxy ?? "" },
    encoding: "utf8",
  });
}

async function titles(ids: string[]): Promise<{ id: string; title: string }[]> {
  const pool = openPool(settings);
  try {
    return (await pool.query("select id, title from catalog where id = any($1) order by id", [ids])).rows as {
      id: string;
      title: string;
    }[];
  } finally {
    await pool.end();
  }
}

describe("catalog:import", () => {
  it("imports a UTF-8 CSV, and refuses a Windows-1252 one (Excel's plain CSV) instead of storing U+FFFD", async () => {
    const good = `utf8-${crypto.randomUUID()}`;
    const bad = `cp1252-${crypto.randomUUID()}`;
    const goodFile = join(dir, "utf8.csv");
    writeFileSync(goodFile, `id,title\n${good},Café mug\n`);
    const badFile = join(dir, "cp1252.csv");
    writeFileSync(
      badFile,
      Buffer.concat([Buffer.from(`id,title\n${bad},Caf`), Buffer.from([0xe9]), Buffer.from(" mug\n")]),
    );
    const ok = importFile(goodFile);
    expect(ok.status, ok.stderr).toBe(0);
    const refused = importFile(badFile);
    expect(refused.status).toBe(1);
    expect(refused.stderr).toMatch(/not UTF-8/);
    expect(await titles([good, bad])).toEqual([{ id: good, title: "Café mug" }]);
  }, 60_000);
});
