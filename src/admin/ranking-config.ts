// The ranking configuration (src/rank/config.ts) as an admin resource (src/admin/versioned-doc.ts):
//   GET /v1/admin/ranking-config[?version=N]   the active config (or a stored older one), with its version
//   PUT /v1/admin/ranking-config               a new config document: validated, filled from the defaults,
//                                              refused if it drops a placement an experiment that has not
//                                              ended runs on, stored as version N+1 (KV `cfg:ranking` and
//                                              `cfg:ranking:vN`)
import { EXPERIMENTS_KEY, unplacedExperiments } from "../experiments/config.ts";
import { parseRankingConfig, RANKING_CONFIG_KEY } from "../rank/config.ts";
import { decodeExperiments, decodeRankingConfig } from "../rank/online-store.ts";
import { versionedDocRoutes } from "./versioned-doc.ts";

export const rankingConfigRoutes = versionedDocRoutes({
  path: "/v1/admin/ranking-config",
  key: RANKING_CONFIG_KEY,
  name: "ranking config",
  // A PUT refuses unknown fields; the stored documents are read as they were accepted (decodeRankingConfig).
  parse: (input, version) => parseRankingConfig(input, version, { strict: true }),
  decode: decodeRankingConfig,
  // A config that drops the placement of an experiment that can still run is refused: that experiment would stop.
  // Only a placement the active config has counts: an experiment whose placement it already lacks (stored before the
  // experiments PUT checked placements, or by a PUT that raced this one) runs either way, and blocking every ranking
  // change on it would hold back unrelated ones (a rule hiding a product).
  check: async (config, active, env) => {
    const { config: experiments } = decodeExperiments(await env.ONLINE_STORE.get(EXPERIMENTS_KEY));
    const now = Date.now();
    const placedBefore = Object.keys(active.placements);
    const unplacedAlready = new Set(unplacedExperiments(experiments, placedBefore, now).map((u) => u.index));
    const stopped = unplacedExperiments(experiments, Object.keys(config.placements), now);
    return stopped
      .filter(({ index }) => !unplacedAlready.has(index))
      .map(({ index, experiment }) => ({
        path: `placements.${experiment.placement}`,
        message:
          `missing: experiments[${index}] (${experiment.id}) of the active experiments document ` +
          `(${experiments.version}) runs on it; end or remove that experiment first`,
      }));
  },
});
