// The experiments document (src/experiments/config.ts, docs/experiments.md) as an admin resource
// (src/admin/versioned-doc.ts), and its reports:
//   GET /v1/admin/experiments[?version=N]   the active document (or a stored older one), with its version
//   PUT /v1/admin/experiments               a new document: validated (its placements against the active ranking
//                                           config), stored as version N+1 (KV `cfg:experiments`)
//   GET /v1/admin/experiments/:id/report?model=last|any&clickWindow=<s>&purchaseWindow=<s>
//                                           per-arm exposures, CTR, add-to-cart rate, conversion, revenue per visitor
//                                           with intervals, the sample-ratio check, interleaving credit (Postgres)

import { sql } from "drizzle-orm";
import { ApiError } from "../errors.ts";
import { EXPERIMENTS_KEY, parseExperiments, unplacedExperiments } from "../experiments/config.ts";
import { experimentReport, REPORT_DEFAULTS, type ReportOptions } from "../experiments/report.ts";
import { RANKING_CONFIG_KEY } from "../rank/config.ts";
import { decodeExperiments, decodeRankingConfig } from "../rank/online-store.ts";
import { withWarehouse } from "./batch.ts";
import { versionedDocRoutes } from "./versioned-doc.ts";

export const experimentsRoutes = versionedDocRoutes({
  path: "/v1/admin/experiments",
  key: EXPERIMENTS_KEY,
  name: "experiments document",
  parse: parseExperiments,
  decode: decodeExperiments,
  // An experiment that can still run must be on a placement the active ranking config has, or similar / rerank.
  check: async (experiments, _active, env) => {
    const { config } = decodeRankingConfig(await env.ONLINE_STORE.get(RANKING_CONFIG_KEY));
    const placements = Object.keys(config.placements);
    return unplacedExperiments(experiments, placements, Date.now()).map(({ index, experiment }) => ({
      path: `experiments[${index}].placement`,
      message:
        `${experiment.placement} is not a placement of the active ranking config (${config.version}): ` +
        `one of ${placements.join(", ")}, similar or rerank`,
    }));
  },
});

/** Windows in seconds: from a minute to 30 days. */
function windowSeconds(name: string, value: string | undefined, fallbackMs: number): number {
  if (value === undefined || value === "") return fallbackMs;
  if (!/^\d{1,7}$/.test(value) || Number(value) < 60 || Number(value) > 30 * 86_400) {
    throw new ApiError("bad_request", `${name} must be seconds from 60 to 2592000`);
  }
  return Number(value) * 1000;
}

experimentsRoutes.get("/v1/admin/experiments/:id/report", async (c) => {
  const id = c.req.param("id");
  const model = c.req.query("model") ?? REPORT_DEFAULTS.model;
  if (model !== "last" && model !== "any") throw new ApiError("bad_request", "model must be last or any");
  const options: ReportOptions = {
    model,
    clickWindowMs: windowSeconds("clickWindow", c.req.query("clickWindow"), REPORT_DEFAULTS.clickWindowMs),
    purchaseWindowMs: windowSeconds("purchaseWindow", c.req.query("purchaseWindow"), REPORT_DEFAULTS.purchaseWindowMs),
  };
  const { config: experiments } = decodeExperiments(await c.env.ONLINE_STORE.get(EXPERIMENTS_KEY));
  const experiment = experiments.experiments.find((e) => e.id === id);
  if (!experiment) throw new ApiError("not_found", `no experiment "${id}" in the active experiments document`);
  return withWarehouse(c.env, async (db) => {
    // One plain query first: an unreachable database then fails as a rejected query (→ 503), not in the connect
    // path of a pooled transaction, where the Neon driver also raises it outside any promise (an uncaught error).
    await db.execute(sql`select 1`);
    const report = await experimentReport(db, experiment, options);
    return c.json({ version: experiments.version, ...report });
  });
});
