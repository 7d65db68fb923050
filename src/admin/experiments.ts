// The experiments document (src/experiments/config.ts, docs/experiments.md) as an admin resource
// (src/admin/versioned-doc.ts):
//   GET /v1/admin/experiments[?version=N]   the active document (or a stored older one), with its version
//   PUT /v1/admin/experiments               a new document: validated, stored as version N+1 (KV `cfg:experiments`)
import { EXPERIMENTS_KEY, parseExperiments } from "../experiments/config.ts";
import { decodeExperiments } from "../rank/online-store.ts";
import { versionedDocRoutes } from "./versioned-doc.ts";

export const experimentsRoutes = versionedDocRoutes({
  path: "/v1/admin/experiments",
  key: EXPERIMENTS_KEY,
  name: "experiments document",
  parse: parseExperiments,
  decode: decodeExperiments,
});
