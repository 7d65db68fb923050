// `npm run db:migrate`: applies migrations/ to DATABASE_URL (a Neon URL in production). Without DATABASE_URL
// in the environment it uses the local stack's settings from .dev.vars (written by `npm run dev`).
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describeError } from "../src/log.ts";
import { migrateDatabase } from "./lib/migrate.ts";
import { REPO_ROOT } from "./lib/worker.ts";

function devVars(): Record<string, string> {
  const file = join(REPO_ROOT, ".dev.vars");
  if (!existsSync(file)) return {};
  return Object.fromEntries(
    readFileSync(file, "utf8")
      .split("\n")
      .map((line) => /^([A-Z0-9_]+)="?(.*?)"?$/.exec(line.trim()))
      .filter((m): m is RegExpExecArray => m !== null)
      .map((m) => [m[1], m[2]]),
  );
}

const vars = process.env.DATABASE_URL ? process.env : devVars();
const databaseUrl = vars.DATABASE_URL;
if (!databaseUrl) {
  console.error("DATABASE_URL is not set (and there is no .dev.vars from `npm run dev`).");
  process.exit(2);
}
try {
  await migrateDatabase({ databaseUrl, localWsProxy: vars.NEON_LOCAL_WS_PROXY });
  console.log(`migrations applied to ${new URL(databaseUrl).host}${new URL(databaseUrl).pathname}`);
} catch (error) {
  console.error(`migration failed: ${describeError(error)}`);
  process.exit(1);
}
