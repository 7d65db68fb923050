// `npm run seed [-- --file <csv[.gz]>] [--newest N] [--original-dates] [--json]`: loads the UCI Online Retail demo
// data (../shared/data/uci-online-retail, CC BY 4.0 — docs/data-model.md#demo-data) into DATABASE_URL, or into the
// local stack from .dev.vars. Purchase times are shifted so the newest is now (--original-dates keeps 2010–2011);
// once purchases of the file were seeded (`npm run dev` loads the newest 50,000), by the same shift as those.
// Idempotent: a second run adds nothing.
import { existsSync } from "node:fs";
import { parseArgs } from "node:util";
import { describeError } from "../src/log.ts";
import { databaseSettings, describeDatabase } from "./lib/dev-vars.ts";
import { seedUciRetail, UCI_RETAIL_FILE } from "./lib/seed.ts";

const { values: args } = parseArgs({
  options: {
    file: { type: "string", default: UCI_RETAIL_FILE },
    newest: { type: "string" },
    "original-dates": { type: "boolean", default: false },
    json: { type: "boolean", default: false },
  },
});

const settings = databaseSettings();
if (!settings) {
  console.error("DATABASE_URL is not set (and there is no .dev.vars from `npm run dev`).");
  process.exit(2);
}
if (!existsSync(args.file)) {
  console.error(`no data file at ${args.file} (pass --file <path to online_retail.csv.gz>)`);
  process.exit(2);
}
const newest = args.newest === undefined ? undefined : Number(args.newest);
if (newest !== undefined && (!Number.isInteger(newest) || newest < 0)) {
  console.error("--newest must be a non-negative integer (how many of the newest purchases to load)");
  process.exit(2);
}

try {
  const report = await seedUciRetail({
    settings,
    file: args.file,
    ...(newest === undefined ? {} : { newestEvents: newest }),
    ...(args["original-dates"] ? {} : { endAt: new Date() }),
    log: args.json ? undefined : (line) => console.log(`[seed] ${line}`),
  });
  if (args.json) console.log(JSON.stringify(report, null, 2));
  else {
    const coverage = ((100 * report.categorized) / Math.max(1, report.products)).toFixed(1);
    console.log(
      `[seed] ${describeDatabase(settings)}: ${report.products} products (${coverage}% categorised), ` +
        `${report.events} purchases of ${report.customers} customers in ${report.orders} orders from ` +
        `${report.countries} countries — ${report.eventsInserted} events and ${report.interactionsInserted} ` +
        `interactions new — in ${(report.timings.totalMs / 1000).toFixed(1)} s`,
    );
  }
} catch (error) {
  console.error(`seed failed: ${describeError(error)}`);
  process.exit(1);
}
