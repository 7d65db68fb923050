// `npm run eval -- … --config JSON|FILE` (scripts/eval.ts). No I/O of its own: the caller passes the file reader.
import { parseRankingConfig, type RankingConfig } from "../src/rank/config.ts";

/**
 * A ranking config for the merged ranker, as `--config` gives it: a JSON document (text starting with "{") or the
 * path of a file holding one, in the shape `PUT /v1/admin/ranking-config` takes (omitted parts take the default
 * values). Validated as the admin endpoint validates it, so a document tried offline is one the Worker accepts.
 */
export function rankingConfigArg(value: string, read: (file: string) => string): RankingConfig {
  const text = value.trimStart().startsWith("{") ? value : read(value);
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new Error(`--config: not JSON: ${(e as Error).message}`);
  }
  // strict, as the PUT parses: unknown fields and duplicate rule ids are refused here too.
  const parsed = parseRankingConfig(doc, "offline", { strict: true });
  if (!parsed.ok) throw new Error(`--config: ${parsed.issues.map((i) => `${i.path}: ${i.message}`).join("; ")}`);
  return parsed.config;
}
