// The settings a Node script needs to reach the database: DATABASE_URL (+ NEON_LOCAL_WS_PROXY) from the
// environment (a Neon URL in production), else the local stack's .dev.vars written by `npm run dev`. Shared by
// `npm run db:migrate`, `npm run seed` and `npm run catalog:import`.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { DbSettings } from "../../src/stores/db.ts";
import { REPO_ROOT } from "./worker.ts";

/** The variables of the repository's .dev.vars ({} when `npm run dev` never ran). */
export function devVars(file = join(REPO_ROOT, ".dev.vars")): Record<string, string> {
  if (!existsSync(file)) return {};
  return Object.fromEntries(
    readFileSync(file, "utf8")
      .split("\n")
      .map((line) => /^([A-Z0-9_]+)="?(.*?)"?$/.exec(line.trim()))
      .filter((m): m is RegExpExecArray => m !== null)
      .map((m) => [m[1], m[2]]),
  );
}

/** DATABASE_URL from the environment, else from .dev.vars; undefined when neither has one. */
export function databaseSettings(): DbSettings | undefined {
  const vars = process.env.DATABASE_URL ? process.env : devVars();
  const databaseUrl = vars.DATABASE_URL;
  if (!databaseUrl) return undefined;
  return { databaseUrl, localWsProxy: vars.NEON_LOCAL_WS_PROXY };
}

/** Where a script says it wrote: host and database, never credentials. */
export function describeDatabase(settings: DbSettings): string {
  const url = new URL(settings.databaseUrl);
  return `${url.host}${url.pathname}`;
}
