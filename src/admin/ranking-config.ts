// The ranking configuration (src/rank/config.ts) as an admin resource (src/admin/versioned-doc.ts):
//   GET /v1/admin/ranking-config[?version=N]   the active config (or a stored older one), with its version
//   PUT /v1/admin/ranking-config               a new config document: validated, filled from the defaults,
//                                              stored as version N+1 (KV `cfg:ranking` and `cfg:ranking:vN`)
import { parseRankingConfig, RANKING_CONFIG_KEY } from "../rank/config.ts";
import { decodeRankingConfig } from "../rank/online-store.ts";
import { versionedDocRoutes } from "./versioned-doc.ts";

export const rankingConfigRoutes = versionedDocRoutes({
  path: "/v1/admin/ranking-config",
  key: RANKING_CONFIG_KEY,
  name: "ranking config",
  // A PUT refuses unknown fields; the stored documents are read as they were accepted (decodeRankingConfig).
  parse: (input, version) => parseRankingConfig(input, version, { strict: true }),
  decode: decodeRankingConfig,
});
