// Source conventions that a type-checker cannot see. Every transaction goes through transaction() of
// src/stores/db.ts: drizzle's own pool transaction leaks its client when BEGIN fails and re-pools a client whose
// ROLLBACK failed (docs/reliability.md, bugs found), which once hung a cron run at teardown.
import { readdirSync, readFileSync } from "node:fs";
import { join, relative } from "node:path";
import { describe, expect, it } from "vitest";

const ROOT = join(import.meta.dirname, "..", "..");

/** The .ts files below `dir`. */
const sources = (dir: string): string[] =>
  readdirSync(dir, { recursive: true, encoding: "utf8" })
    .filter((name) => name.endsWith(".ts"))
    .map((name) => join(dir, name));

/** `.transaction(` calls outside comments in files that use the database, as `file:line`. */
function transactionCalls(file: string): string[] {
  const text = readFileSync(file, "utf8");
  if (!/drizzle-orm|stores\/db\.ts/.test(text)) return [];
  return text
    .split("\n")
    .map((line, i) => ({ line: line.replace(/\/\/.*$/, "").replace(/^\s*\*.*$/, ""), at: i + 1 }))
    .filter(({ line }) => /\.transaction\(/.test(line))
    .map(({ at }) => `${relative(ROOT, file)}:${at}`);
}

describe("database conventions", () => {
  it("calls drizzle's .transaction() only inside transaction() of src/stores/db.ts", () => {
    const files = ["src", "scripts", "eval", "bench"].flatMap((d) => sources(join(ROOT, d)));
    expect(files.length).toBeGreaterThan(50);
    const calls = files.flatMap(transactionCalls);
    // The one allowed call: on a client-bound drizzle instance, whose client transaction() releases itself — a line
    // of transaction()'s own body (from its signature to the closing brace at the start of a line).
    const db = readFileSync(join(ROOT, "src", "stores", "db.ts"), "utf8").split("\n");
    const start = db.findIndex((line) => line.startsWith("export async function transaction<")) + 1;
    const end = db.findIndex((line, i) => i >= start && line === "}") + 1;
    expect(start).toBeGreaterThan(0);
    expect(calls).toHaveLength(1);
    const [file, line] = (calls[0] ?? "").split(":");
    expect(file).toBe("src/stores/db.ts");
    expect(Number(line)).toBeGreaterThan(start);
    expect(Number(line)).toBeLessThan(end);
  });
});
