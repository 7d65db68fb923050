// The admin API (admin key, src/auth.ts; docs/api.md#admin-api). Routes:
//   GET /v1/admin/dead-letters?source=<id>&limit=&before=   rejected events of a source, newest first
//   GET /v1/admin/users/:id?kind=user|anonymous             a user's live session snapshot (SessionSnapshot)
//   DELETE /v1/admin/users/:id?kind=…&suppress=true, GET …/erasure, PUT|GET|DELETE …/suppression
//                                                           erasure and suppression (src/admin/users.ts)
//   PUT /v1/admin/catalog                                   upsert catalogue items, JSON or CSV (src/admin/catalog.ts)
//   POST /v1/admin/refresh, GET /v1/admin/runs, GET /v1/admin/versions, POST /v1/admin/rollback,
//   POST /v1/admin/catalog/push                             the batch loop and publishing (src/admin/batch.ts)
//   GET/PUT /v1/admin/ranking-config                        the ranking config (src/admin/ranking-config.ts)
//   GET/PUT /v1/admin/experiments                           the experiments document (src/admin/experiments.ts)
//   GET /v1/admin/trending?hours=&top=&until=              live trending products and categories (src/admin/trending.ts)
import { Hono } from "hono";
import type { AppEnv } from "../app.ts";
import { requireAdmin } from "../auth.ts";
import { configOrThrow } from "../config.ts";
import { ApiError } from "../errors.ts";
import { batchAdminRoutes } from "./batch.ts";
import { putCatalog } from "./catalog.ts";
import { experimentsRoutes } from "./experiments.ts";
import { positiveInt } from "./params.ts";
import { rankingConfigRoutes } from "./ranking-config.ts";
import { trendingRoutes } from "./trending.ts";
import { userRoutes } from "./users.ts";

export const DEAD_LETTERS_DEFAULT_LIMIT = 100;
/** 1,000 rows with raw events at their 8 KB cap: ~8 MB, well under the 32 MiB a Durable Object RPC may return. */
export const DEAD_LETTERS_MAX_LIMIT = 1_000;

export const adminRoutes = new Hono<AppEnv>();

// Every admin answer, errors and refusals included, is `no-store` (docs/api.md#admin-api): a 404 for a user id is
// heuristically cacheable otherwise.
adminRoutes.use("/v1/admin/*", async (c, next) => {
  await next();
  c.header("cache-control", "no-store");
});
adminRoutes.use("/v1/admin/*", requireAdmin);

adminRoutes.get("/v1/admin/dead-letters", async (c) => {
  const sourceId = c.req.query("source");
  if (!sourceId) throw new ApiError("bad_request", "source is required: ?source=<source id>");
  const source = configOrThrow(c.env).sources.byId.get(sourceId);
  if (!source) throw new ApiError("not_found", `no source "${sourceId.slice(0, 64)}"`);
  const limit = positiveInt("limit", c.req.query("limit"), DEAD_LETTERS_MAX_LIMIT) ?? DEAD_LETTERS_DEFAULT_LIMIT;
  const before = positiveInt("before", c.req.query("before"), Number.MAX_SAFE_INTEGER);
  const deadLetters = await c.env.DEAD_LETTERS.getByName(source.id).list(
    before === undefined ? { limit } : { limit, before },
  );
  const last = deadLetters.at(-1);
  return c.json({
    source: source.id,
    deadLetters,
    // A full page may have more behind it: pass this as ?before= for the next one.
    nextBefore: deadLetters.length === limit && last ? last.id : null,
  });
});

adminRoutes.put("/v1/admin/catalog", putCatalog);
adminRoutes.route("/", batchAdminRoutes);
adminRoutes.route("/", rankingConfigRoutes);
adminRoutes.route("/", experimentsRoutes);
adminRoutes.route("/", trendingRoutes);
adminRoutes.route("/", userRoutes);
