// The production configuration reaches no debug route. wrangler.toml's [vars] are what a `wrangler deploy` runs
// with; with them, the bench routes (src/bench/routes.ts, BENCH_ROUTES) and every other `/__…` path the app
// mounts answer 404 like any unknown path, whatever the credential. `/__scheduled` is not the app's: it exists
// only under `wrangler dev --test-scheduled`, which the local stack passes and `wrangler deploy` has no notion of
// (the deploy bundle holds no handler for it); in the app it is a plain 404.
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import packageJson from "../../package.json";
import { createApp } from "../../src/app.ts";
import wranglerToml from "../../wrangler.toml?raw";
import { ADMIN_KEY, basic, refused, WRITE_KEY } from "./collect-helpers.ts";
import { appFetch, SERVER_KEY } from "./rank-helpers.ts";

/** The `KEY = "value"` lines of wrangler.toml's [vars] table (the file's own layout; comments skipped). */
function productionVars(toml: string): Record<string, string> {
  const vars: Record<string, string> = {};
  let inVars = false;
  for (const raw of toml.split("\n")) {
    const line = raw.trim();
    if (line.startsWith("[")) inVars = line === "[vars]";
    else if (inVars && line !== "" && !line.startsWith("#")) {
      const match = /^([A-Z0-9_]+)\s*=\s*"([^"]*)"\s*(#.*)?$/.exec(line);
      if (!match) throw new Error(`wrangler.toml [vars]: a line this test cannot read: ${line}`);
      vars[match[1] as string] = match[2] as string;
    }
  }
  return vars;
}

const PRODUCTION_VARS = productionVars(wranglerToml);
/** The Worker's bindings with production's vars (the secrets stay the test stack's). */
const production: Env = { ...env, ...PRODUCTION_VARS } as Env;

const CREDENTIALS = [null, `Bearer ${ADMIN_KEY}`, `Bearer ${SERVER_KEY}`, basic(WRITE_KEY)];
const METHODS = ["GET", "POST", "PUT", "DELETE"];

async function answersNotFound(testEnv: Env, path: string): Promise<void> {
  for (const method of METHODS) {
    for (const authorization of CREDENTIALS) {
      const res = await appFetch(testEnv, path, {
        method,
        headers: authorization ? { authorization, "content-type": "application/json" } : {},
        ...(method === "GET" ? {} : { body: "{}" }),
      });
      const body = await refused(res, 404, "not_found");
      expect(body.error.message, `${method} ${path}`).toMatch(/^no route for /);
    }
  }
}

describe("production configuration", () => {
  it("wrangler.toml's [vars] are production's: environment production, bench routes off", () => {
    expect(PRODUCTION_VARS.LASTMILE_ENV).toBe("production");
    expect(PRODUCTION_VARS.BENCH_ROUTES).toBe("false");
    expect(Object.keys(PRODUCTION_VARS).length).toBeGreaterThan(5);
  });

  it("answers 404 on every /__ route the app mounts, with any method and credential", { timeout: 60_000 }, async () => {
    const debugPaths = [
      ...new Set(
        createApp()
          .routes.map((r) => r.path)
          .filter((p) => p.startsWith("/__")),
      ),
    ].map((p) => p.replace("*", "anything").replace(/:[^/]+/g, "x"));
    expect(debugPaths).toContain("/__bench/empty");
    for (const path of debugPaths) await answersNotFound(production, path);
  });

  it("answers 404 on /__scheduled and on spellings of the bench paths", async () => {
    for (const path of [
      "/__scheduled?cron=*/15+*+*+*+*",
      "/__scheduled",
      "/__scheduled/",
      "/__bench",
      "/__bench/",
      "/__bench//empty",
      "/__bench/empty/",
      "/__BENCH/empty",
      "/%5F%5Fbench/empty",
      "/__bench/empty?BENCH_ROUTES=true",
    ]) {
      await answersNotFound(production, path);
    }
  });

  it("the same bench route answers once BENCH_ROUTES is true: the 404 is the guard's doing", async () => {
    const bench = { ...production, BENCH_ROUTES: "true" } as Env;
    const res = await appFetch(bench, "/__bench/empty");
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ ok: true });
    // Only the exact value opens them.
    for (const value of ["TRUE", "1", "yes", " true"]) {
      await refused(appFetch({ ...production, BENCH_ROUTES: value } as Env, "/__bench/empty"), 404, "not_found");
    }
    // And /__scheduled is no route of the app's even then.
    await refused(appFetch(bench, "/__scheduled?cron=*/15+*+*+*+*"), 404, "not_found");
  });

  it("the session object's bench write refuses to store anything unless the bench routes are on", async () => {
    expect(env.BENCH_ROUTES).toBe("false");
    const stub = env.SESSION_STATE.getByName("u:bench-write-probe");
    // Settled by one `then`: the RPC promise is a proxy, and handing it to expect() would pipeline property reads
    // into the object (each a rejected call of its own).
    const outcome = await stub.benchWrite([{ type: "track" }]).then(
      (value) => ({ value }),
      (error: unknown) => ({ error: String(error) }),
    );
    expect(outcome).toEqual({ error: expect.stringMatching(/bench routes are off/) });
  });

  it("the deploy scripts never pass --test-scheduled (the local stack's launcher alone does)", () => {
    const scripts = packageJson.scripts as Record<string, string>;
    for (const name of ["deploy", "deploy:check"]) {
      expect(scripts[name], name).toMatch(/^wrangler deploy\b/);
      expect(scripts[name], name).not.toMatch(/test-scheduled/);
    }
  });
});
