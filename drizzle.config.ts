import { defineConfig } from "drizzle-kit";

// `drizzle-kit generate` only diffs the schema against migrations/meta: it needs no database.
export default defineConfig({
  dialect: "postgresql",
  schema: "./src/stores/schema.ts",
  out: "./migrations",
});
