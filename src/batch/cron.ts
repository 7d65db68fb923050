// The scheduled (cron) entry of the batch loop: one refresh (src/batch/refresh.ts) — load the Redis stream into
// Postgres, compute the recommenders, start the publish to KV (the PublishCoordinator's alarms carry it out, so this
// invocation makes no KV operation). Each run also records itself in sync_state (`cron.last_run`) so operators
// can see when the loop last ran; every step run has its batch_runs row.
import { sql } from "drizzle-orm";
import { loadConfig } from "../config.ts";
import { log } from "../log.ts";
import { COORDINATOR_NAME } from "../publish/coordinator.ts";
import { openDb } from "../publish/db.ts";
import { openRedis } from "../stores/redis.ts";
import { syncState } from "../stores/schema.ts";
import { refreshOutputs } from "./compute.ts";
import { runRefresh } from "./refresh.ts";
import { describeFailure } from "./retry.ts";

export const CRON_RUN_STATE = "cron.last_run";

export async function runScheduled(controller: ScheduledController, env: Env): Promise<void> {
  const config = loadConfig(env);
  if (!config.database) {
    log("warn", "cron: DATABASE_URL is not set; nothing to do", { cron: controller.cron });
    return;
  }
  const schema = config.databaseSchema;
  const { db, end } = openDb(config.database, schema);
  try {
    if (!config.redis)
      log("warn", "cron: UPSTASH_REDIS_REST_URL is not set; nothing to load", { cron: controller.cron });
    // No retries inside the client: the loader retries transient failures itself, under its deadline.
    const redis = config.redis ? openRedis({ ...config.redis, rawResults: true }) : undefined;
    const refresh = await runRefresh(
      { db, redis, coordinator: env.PUBLISH_COORDINATOR.getByName(COORDINATOR_NAME) },
      { trigger: "cron", schema, loader: config.loader, compute: { only: refreshOutputs(config.externalOutputs) } },
    );
    const value = {
      cron: controller.cron,
      scheduledTime: new Date(controller.scheduledTime).toISOString(),
      finishedAt: new Date().toISOString(),
      refresh: { runId: refresh.runId, status: refresh.status },
      load: refresh.load,
      compute: refresh.compute,
      publish: refresh.publish,
    };
    await db
      .insert(syncState)
      .values({ name: CRON_RUN_STATE, value })
      .onConflictDoUpdate({ target: syncState.name, set: { value, updatedAt: sql`now()` } });
    // A failed step is already in batch_runs and the log; failing the invocation also shows it in the Cloudflare
    // dashboard's cron history.
    if (refresh.status === "failed") throw new Error(`cron: the refresh failed: ${refresh.error ?? ""}`);
  } catch (error) {
    log("error", "cron: run failed", { cron: controller.cron, error: describeFailure(error) });
    throw error;
  } finally {
    await end();
  }
}
