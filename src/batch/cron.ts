// The scheduled (cron) entry of the batch loop. Each run records itself in sync_state so operators can see
// when the loop last ran and whether it finished; the load → compute → publish steps hang off this entry.
import { sql } from "drizzle-orm";
import { loadConfig } from "../config.ts";
import { log } from "../log.ts";
import { drizzleOn, openPool } from "../stores/db.ts";
import { syncState } from "../stores/schema.ts";

export const CRON_RUN_STATE = "cron.last_run";

export async function runScheduled(controller: ScheduledController, env: Env): Promise<void> {
  const config = loadConfig(env);
  if (!config.database) {
    log("warn", "cron: DATABASE_URL is not set; nothing to do", { cron: controller.cron });
    return;
  }
  const pool = openPool(config.database);
  try {
    const db = drizzleOn(pool);
    const value = {
      cron: controller.cron,
      scheduledTime: new Date(controller.scheduledTime).toISOString(),
      finishedAt: new Date().toISOString(),
    };
    await db
      .insert(syncState)
      .values({ name: CRON_RUN_STATE, value })
      .onConflictDoUpdate({ target: syncState.name, set: { value, updatedAt: sql`now()` } });
  } finally {
    await pool.end();
  }
}
