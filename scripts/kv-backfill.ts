// `npm run kv:backfill -- --out <folder> [--all] [--record] [--schema <name>] [--pairs <n>]`: writes every changed
// per-user / per-item list from Postgres (DATABASE_URL, or the local stack's .dev.vars) as Workers KV bulk files of
// ≤ 10,000 pairs into a new or empty folder, to upload with `wrangler kv bulk put --binding ONLINE_STORE <file>`;
// then run it again with `--record` (or record through the REST path) so the next publish writes only later changes.
// With CLOUDFLARE_ACCOUNT_ID, CLOUDFLARE_API_TOKEN and --namespace-id (or KV_NAMESPACE_ID) it uploads through
// the KV bulk REST API instead and records what KV stored as it goes; keys KV still refuses after 5 attempts fail
// the run (exit 1, with their count), unrecorded. docs/publishing.md#backfill.
import { parseArgs } from "node:util";
import { describeError } from "../src/log.ts";
import { databaseSettings, describeDatabase } from "./lib/dev-vars.ts";
import { OutDirNotEmptyError, runBackfill } from "./lib/kv-backfill.ts";

const { values: args } = parseArgs({
  options: {
    out: { type: "string" },
    all: { type: "boolean", default: false },
    record: { type: "boolean", default: false },
    schema: { type: "string" },
    pairs: { type: "string" },
    "namespace-id": { type: "string" },
    json: { type: "boolean", default: false },
  },
});

const settings = databaseSettings();
if (!settings) {
  console.error("DATABASE_URL is not set (and there is no .dev.vars from `npm run dev`).");
  process.exit(2);
}
const accountId = process.env.CLOUDFLARE_ACCOUNT_ID;
const apiToken = process.env.CLOUDFLARE_API_TOKEN;
const namespaceId = args["namespace-id"] ?? process.env.KV_NAMESPACE_ID;
const rest = accountId && apiToken && namespaceId ? { accountId, apiToken, namespaceId } : undefined;
if (!rest && !args.out) {
  console.error(
    "give --out <folder> for bulk files, or set CLOUDFLARE_ACCOUNT_ID, CLOUDFLARE_API_TOKEN and --namespace-id",
  );
  process.exit(2);
}
const pairs = args.pairs === undefined ? undefined : Number(args.pairs);
if (pairs !== undefined && (!Number.isInteger(pairs) || pairs < 1 || pairs > 10_000)) {
  console.error("--pairs must be an integer from 1 to 10000");
  process.exit(2);
}

try {
  const report = await runBackfill({
    settings,
    ...(args.schema ? { schema: args.schema } : {}),
    ...(rest ? { rest } : { outDir: args.out }),
    all: args.all,
    record: args.record,
    ...(pairs ? { pairsPerFile: pairs } : {}),
    log: args.json ? undefined : (line) => console.error(`[kv-backfill] ${line}`),
  });
  if (args.json) console.log(JSON.stringify(report, null, 2));
  else {
    const erased = report.erased ? `, ${report.erased} users erased meanwhile, not recorded` : "";
    console.log(
      `[kv-backfill] ${describeDatabase(settings)}: ${report.keys} keys in ` +
        (rest ? `${report.requests} bulk requests` : `${report.files.length} files under ${args.out}`) +
        ` (${report.skipped} ids too long for a KV key${erased}) in ${(report.durationMs / 1000).toFixed(1)} s`,
    );
    if (!rest && report.files.length) {
      console.log(`upload each: npx wrangler kv bulk put --binding ONLINE_STORE --remote <file>; then --record`);
    }
  }
} catch (error) {
  if (error instanceof OutDirNotEmptyError) {
    console.error(error.message);
    process.exit(2);
  }
  console.error(`kv-backfill failed: ${describeError(error)}`);
  process.exit(1);
}
