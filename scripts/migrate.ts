// `npm run db:migrate`: applies migrations/ to DATABASE_URL (a Neon URL in production). Without DATABASE_URL
// in the environment it uses the local stack's settings from .dev.vars (written by `npm run dev`).
import { describeError } from "../src/log.ts";
import { databaseSettings, describeDatabase } from "./lib/dev-vars.ts";
import { migrateDatabase } from "./lib/migrate.ts";

const settings = databaseSettings();
if (!settings) {
  console.error("DATABASE_URL is not set (and there is no .dev.vars from `npm run dev`).");
  process.exit(2);
}
try {
  await migrateDatabase(settings);
  console.log(`migrations applied to ${describeDatabase(settings)}`);
} catch (error) {
  console.error(`migration failed: ${describeError(error)}`);
  process.exit(1);
}
