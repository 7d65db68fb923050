// The HTTP API: request ids, the one error model, and route mounting. Routes:
//   GET /health      dependency status and latency (docs/api.md)
//   POST /v1/…       collection, Segment/RudderStack-compatible (src/collect/routes.ts, docs/collection.md)
//   /v1/admin/…      admin API, admin key (src/admin/routes.ts)
//   /v1/recommendations, /v1/rank, /v1/similar/…, /v1/tokens   ranking (src/rank/routes.ts, docs/ranking.md)
import { Hono } from "hono";
import { adminRoutes } from "./admin/routes.ts";
import { describeFailure, isTransientError } from "./batch/retry.ts";
import { benchRoutes } from "./bench/routes.ts";
import { collectRoutes } from "./collect/routes.ts";
import { ApiError, errorBody } from "./errors.ts";
import { healthRoute } from "./health.ts";
import { log } from "./log.ts";
import { rankRoutes } from "./rank/routes.ts";

export interface AppEnv {
  Bindings: Env;
  Variables: { requestId: string };
}

/** Retry-After of a 503 whose route set none: a dependency fault no route classified itself, a missing database. */
export const DEPENDENCY_RETRY_AFTER_S = 5;

export function createApp(): Hono<AppEnv> {
  const app = new Hono<AppEnv>();

  app.use(async (c, next) => {
    // Cloudflare's ray id ties our logs to Cloudflare's; locally there is none.
    const requestId = c.req.header("cf-ray") ?? crypto.randomUUID();
    c.set("requestId", requestId);
    await next();
    c.header("x-request-id", requestId);
  });

  app.get("/health", healthRoute);
  app.route("/", benchRoutes);
  app.route("/", collectRoutes);
  app.route("/", rankRoutes);
  app.route("/", adminRoutes);

  app.notFound((c) => {
    const error = new ApiError("not_found", `no route for ${c.req.method} ${new URL(c.req.url).pathname}`);
    return c.json(errorBody(error, c.get("requestId")), error.status);
  });

  app.onError((err, c) => {
    const requestId = c.get("requestId") ?? crypto.randomUUID();
    const error = reportedError(err, requestId);
    for (const [name, value] of Object.entries(error.headers ?? {})) c.header(name, value);
    // Every 503 says when to retry (docs/api.md#errors); a route that knows better sets its own.
    if (error.code === "dependency_unavailable" && !hasHeader(error.headers, "retry-after")) {
      c.header("Retry-After", String(DEPENDENCY_RETRY_AFTER_S));
    }
    c.header("x-request-id", requestId);
    return c.json(errorBody(error, requestId), error.status);
  });

  return app;
}

/**
 * What a caller is told of `err` (asApiError), a 5xx logged with its cause under `requestId`: the error the HTTP API
 * answers, and the one the Ranking RPC class throws (src/rank/entrypoint.ts).
 */
export function reportedError(err: unknown, requestId: string): ApiError {
  const error = asApiError(err instanceof Error ? err : new Error(String(err)));
  if (error.status >= 500) {
    log("error", error.message, {
      requestId,
      code: error.code,
      // Causes are drivers' messages: credentials in a connection string never reach the log.
      cause: describeFailure(err instanceof ApiError ? err.cause : err),
    });
  }
  return error;
}

function hasHeader(headers: Record<string, string> | undefined, name: string): boolean {
  return Object.keys(headers ?? {}).some((key) => key.toLowerCase() === name);
}

/**
 * What the client is told about an error: ours as it is; a database or Redis that did not answer is a 503 to retry,
 * not our bug (docs/api.md#errors); anything else an internal error whose details stay in the log.
 */
function asApiError(err: Error): ApiError {
  if (err instanceof ApiError) return err;
  if (isTransientError(err)) {
    return new ApiError("dependency_unavailable", "a dependency did not answer; retry the request", {
      headers: { "Retry-After": String(DEPENDENCY_RETRY_AFTER_S) },
      cause: err,
    });
  }
  return new ApiError("internal_error", "internal error", { cause: err });
}
