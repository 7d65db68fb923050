// The warehouse schema (Postgres / Neon), in drizzle. `npm run db:generate` turns changes here into SQL
// migrations under migrations/; `npm run db:migrate` applies them.
import { jsonb, pgTable, text, timestamp } from "drizzle-orm/pg-core";

/**
 * Small named records of the batch loop's progress: watermarks, cursors, published versions, the last
 * cron run. One row per name; `value` is the record itself.
 */
export const syncState = pgTable("sync_state", {
  name: text("name").primaryKey(),
  value: jsonb("value").notNull(),
  updatedAt: timestamp("updated_at", { withTimezone: true }).notNull().defaultNow(),
});
