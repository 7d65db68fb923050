// Admin API of the batch loop (admin key; mounted by src/admin/routes.ts; docs/api.md#admin-api). Routes:
//   POST /v1/admin/refresh          load → compute → start the publish, now; returns the refresh's run record
//   GET  /v1/admin/runs?limit=&kind= batch_runs newest first: status, rows loaded, keys written, duration, lag
//   GET  /v1/admin/versions         the pointer, published versions, rollback targets, the running publish, models
//   POST /v1/admin/rollback         { "version": n }: point readers at an earlier published version
//   POST /v1/admin/catalog/push     ship the catalogue (stock, visibility, price) to KV now
import { desc, eq, inArray, or } from "drizzle-orm";
import { Hono } from "hono";
import type { AppEnv } from "../app.ts";
import { refreshOutputs } from "../batch/compute.ts";
import { runRefresh } from "../batch/refresh.ts";
import { type Config, configOrThrow } from "../config.ts";
import { ApiError } from "../errors.ts";
import { readJsonRequest } from "../json-body.ts";
import { COORDINATOR_NAME } from "../publish/coordinator.ts";
import { openDb } from "../publish/db.ts";
import type { Database } from "../stores/db.ts";
import { openRedis } from "../stores/redis.ts";
import { BATCH_RUN_KINDS, type BatchRunKind, batchRuns, modelVersions } from "../stores/schema.ts";
import { positiveInt } from "./params.ts";

export const RUNS_DEFAULT_LIMIT = 20;
export const RUNS_MAX_LIMIT = 200;
export const MODELS_LIMIT = 50;

export const batchAdminRoutes = new Hono<AppEnv>();

export function database(env: Env) {
  const config = configOrThrow(env);
  if (!config.database) throw new ApiError("dependency_unavailable", "DATABASE_URL is not configured");
  return { config, schema: config.databaseSchema };
}

/**
 * Runs `fn` with the warehouse on a pool for this request (closed afterwards): the one way admin routes reach
 * Postgres. 503 when no database is configured.
 */
export async function withWarehouse<T>(
  env: Env,
  fn: (db: Database, config: Config, schema: string | undefined) => Promise<T>,
): Promise<T> {
  const { config, schema } = database(env);
  const { db, end } = openDb(config.database as NonNullable<typeof config.database>, schema);
  try {
    return await fn(db, config, schema);
  } finally {
    await end();
  }
}

const coordinator = (env: Env) => env.PUBLISH_COORDINATOR.getByName(COORDINATOR_NAME);

type RunRow = typeof batchRuns.$inferSelect;

/** A batch_runs row for the API, with the figures operators look for lifted out of its stats. */
function runRecord(row: RunRow) {
  const stats = row.stats as Record<string, unknown>;
  const num = (v: unknown) => (typeof v === "number" ? v : null);
  return {
    id: row.id,
    parentId: row.parentId,
    kind: row.kind,
    trigger: row.trigger,
    status: row.status,
    startedAt: row.startedAt.toISOString(),
    finishedAt: row.finishedAt?.toISOString() ?? null,
    durationMs: row.finishedAt ? row.finishedAt.getTime() - row.startedAt.getTime() : null,
    rowsLoaded: row.kind === "load" ? num(stats.events) : null,
    rowsComputed: row.kind === "compute" ? num(stats.rows) : null,
    keysWritten: row.kind === "publish" ? num(stats.keysWritten) : null,
    lagMs: num(stats.lagMs),
    stats,
    error: row.error,
  };
}

batchAdminRoutes.post("/v1/admin/refresh", async (c) => {
  return withWarehouse(c.env, async (db, config, schema) => {
    const redis = config.redis ? openRedis({ ...config.redis, rawResults: true }) : undefined;
    const report = await runRefresh(
      { db, redis, coordinator: coordinator(c.env) },
      { trigger: "admin", schema, loader: config.loader, compute: { only: refreshOutputs(config.externalOutputs) } },
    );
    const ids = report.runId === null ? [] : [report.runId];
    const rows = ids.length
      ? await db
          .select()
          .from(batchRuns)
          .where(or(inArray(batchRuns.id, ids), inArray(batchRuns.parentId, ids)))
          .orderBy(batchRuns.id)
      : [];
    const [parent, ...steps] = rows.map(runRecord);
    return c.json({ run: parent ? { ...parent, steps } : null, report }, report.status === "failed" ? 500 : 200);
  });
});

batchAdminRoutes.get("/v1/admin/runs", async (c) => {
  const limit = positiveInt("limit", c.req.query("limit"), RUNS_MAX_LIMIT) ?? RUNS_DEFAULT_LIMIT;
  const kind = c.req.query("kind");
  if (kind !== undefined && !(BATCH_RUN_KINDS as readonly string[]).includes(kind)) {
    throw new ApiError("bad_request", `kind must be one of ${BATCH_RUN_KINDS.join(", ")}`);
  }
  return withWarehouse(c.env, async (db) => {
    const rows = await db
      .select()
      .from(batchRuns)
      .where(kind ? eq(batchRuns.kind, kind as BatchRunKind) : undefined)
      .orderBy(desc(batchRuns.id))
      .limit(limit);
    return c.json({ runs: rows.map(runRecord) });
  });
});

batchAdminRoutes.get("/v1/admin/versions", async (c) => {
  database(c.env); // 503 before asking the coordinator when no database is configured
  const status = await coordinator(c.env).status();
  return withWarehouse(c.env, async (db) => {
    const models = await db.select().from(modelVersions).orderBy(desc(modelVersions.id)).limit(MODELS_LIMIT);
    return c.json({
      current: status.pointer,
      lastVersion: status.lastVersion,
      rollbackTargets: status.rollbackTargets,
      /** Old shared keys (catalogue shards, popular lists) queued for deletion. */
      sharedKeysPendingDeletion: status.garbage.length,
      publishing: status.job
        ? { version: status.job.version, phase: status.job.phase, runId: status.job.runId, stats: status.job.stats }
        : null,
      published: status.versions.map(({ pointer: _pointer, ...v }) => ({
        ...v,
        current: status.pointer?.version === v.version,
      })),
      models: models.map((m) => ({
        id: m.id,
        model: m.model,
        version: m.version,
        source: m.source,
        status: m.status,
        createdAt: m.createdAt.toISOString(),
        finishedAt: m.finishedAt?.toISOString() ?? null,
      })),
    });
  });
});

/** `{ "version": n }` needs a few bytes; the cap keeps a huge body from being read into memory. */
export const ROLLBACK_BODY_LIMIT = 4 * 1024;

batchAdminRoutes.post("/v1/admin/rollback", async (c) => {
  // application/json only (415), at most ROLLBACK_BODY_LIMIT bytes after any gzip (413), valid JSON (400).
  const body = await readJsonRequest(c.req.raw, ROLLBACK_BODY_LIMIT);
  const version = (body as { version?: unknown } | null)?.version;
  if (typeof version !== "number" || !Number.isSafeInteger(version) || version < 1) {
    throw new ApiError("validation_failed", "version must be a positive integer");
  }
  const result = await coordinator(c.env).rollback(version);
  if (!result.ok) throw new ApiError(result.code, result.message);
  return c.json({ version: result.pointer.version, previous: result.previous, pointer: result.pointer });
});

batchAdminRoutes.post("/v1/admin/catalog/push", async (c) => {
  const { schema } = database(c.env);
  const result = await coordinator(c.env).pushCatalog({ trigger: "admin", ...(schema ? { schema } : {}) });
  if (result.status === "not_configured") {
    throw new ApiError("dependency_unavailable", "DATABASE_URL is not configured");
  }
  return c.json(result, result.status === "queued" ? 202 : 200);
});
