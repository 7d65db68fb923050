// `npm run catalog:import -- <file.json|file.csv>`: validates a catalogue file and upserts it into DATABASE_URL,
// or into the local stack from .dev.vars — the same validation and upsert as PUT /v1/admin/catalog
// (src/batch/catalog.ts; formats in docs/api.md#put-v1admincatalog). Any invalid row: the errors are printed and
// nothing is written. The per-request item limit does not apply; items are upserted in parts of that size.
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { CatalogFormatError, MAX_CATALOG_ITEMS, parseCatalogFile, upsertCatalog } from "../src/batch/catalog.ts";
import { CsvError } from "../src/batch/csv.ts";
import { describeError } from "../src/log.ts";
import { drizzleOn, openPool } from "../src/stores/db.ts";
import { databaseSettings, describeDatabase } from "./lib/dev-vars.ts";

const { positionals } = parseArgs({ allowPositionals: true });
const file = positionals[0];
if (!file || positionals.length > 1) {
  console.error("usage: npm run catalog:import -- <file.json|file.csv>");
  process.exit(2);
}
const settings = databaseSettings();
if (!settings) {
  console.error("DATABASE_URL is not set (and there is no .dev.vars from `npm run dev`).");
  process.exit(2);
}

// UTF-8 only, as the endpoint takes it: readFileSync(file, "utf8") would turn every other byte into U+FFFD without a
// word (Excel's plain "CSV" export is Windows-1252: "Café" would be stored as "Caf\ufffd").
let text: string;
try {
  text = new TextDecoder("utf-8", { fatal: true }).decode(readFileSync(file));
} catch (error) {
  const notUtf8 = error instanceof TypeError;
  console.error(
    notUtf8
      ? `${file} is not UTF-8 text; nothing was written (save it as "CSV UTF-8" or re-encode it)`
      : `cannot read ${file}: ${describeError(error)}`,
  );
  process.exit(1);
}

try {
  const parsed = parseCatalogFile(file, text, Number.POSITIVE_INFINITY);
  if (parsed.errorCount > 0) {
    console.error(`${parsed.errorCount} invalid item(s); nothing was written:`);
    for (const row of parsed.errors) {
      const where = row.line === undefined ? `item ${row.index}` : `line ${row.line}`;
      const reasons = row.errors.map((e) => `${e.field || "row"} ${e.message}`).join("; ");
      console.error(`  ${where}${row.id ? ` (${row.id})` : ""}: ${reasons}`);
    }
    if (parsed.errorCount > parsed.errors.length)
      console.error(`  … and ${parsed.errorCount - parsed.errors.length} more`);
    process.exit(1);
  }
  const pool = openPool(settings);
  try {
    const db = drizzleOn(pool);
    const total = { received: 0, inserted: 0, updated: 0, unchanged: 0 };
    // One transaction per part, as the admin endpoint would take them.
    for (let start = 0; start < parsed.items.length; start += MAX_CATALOG_ITEMS) {
      const r = await upsertCatalog(db, parsed.items.slice(start, start + MAX_CATALOG_ITEMS));
      total.received += r.received;
      total.inserted += r.inserted;
      total.updated += r.updated;
      total.unchanged += r.unchanged;
    }
    console.log(
      `${describeDatabase(settings)}: ${total.received} items — ${total.inserted} new, ${total.updated} changed, ` +
        `${total.unchanged} unchanged`,
    );
  } finally {
    await pool.end();
  }
} catch (error) {
  if (error instanceof CatalogFormatError || error instanceof CsvError || error instanceof SyntaxError) {
    console.error(`${file}: ${error.message}`);
  } else console.error(`import failed: ${describeError(error)}`);
  process.exit(1);
}
