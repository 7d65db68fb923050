// GET /v1/admin/trending?hours=1&top=20&until=<ISO time>: the live trending counters the collection path keeps in
// Redis (docs/session.md#outbox-stream-and-trending-counters), products and categories, summed over the `hours`
// before `until` (default now; within the last day, which the counters cover).
// What the ranking reads (products, the last hour, cached for seconds) and what it does not (categories) alike: an
// operator's view of what shoppers are doing now, and a check that the counters move.
import { Hono } from "hono";
import type { AppEnv } from "../app.ts";
import { configOrThrow } from "../config.ts";
import { ApiError } from "../errors.ts";
import { fetchTrending } from "../rank/trending.ts";
import { TREND_BUCKET_MS, TREND_CATEGORY_PREFIX, TREND_PRODUCT_PREFIX, trendBucket } from "../session/stream.ts";
import { withRedisDeadline } from "../stores/redis.ts";
import { positiveInt } from "./params.ts";

/** Events older than 24 h are not counted (the buckets live 26 h). */
export const TRENDING_MAX_HOURS = 24;
export const TRENDING_MAX_TOP = 100;
const TRENDING_DEFAULT_TOP = 20;

const HOUR_MS = 3_600_000;
/**
 * How far `until` may lie in the past: the counters hold the last day (events older than 24 h are not counted, the
 * buckets live 26 h), so a window reaching back further than that counts less than happened.
 */
export const TRENDING_MAX_UNTIL_AGE_MS = 24 * HOUR_MS;
/** Redis not answering within this is a 503, not a request that hangs. */
const ADMIN_TRENDING_TIMEOUT_MS = 5_000;

/** `until` as epoch ms: an ISO 8601 time within the last TRENDING_MAX_UNTIL_AGE_MS (later times mean now). */
function untilParam(value: string | undefined, now: number): number {
  if (value === undefined || value === "") return now;
  const at = /^\d{4}-\d{2}-\d{2}T/.test(value) ? Date.parse(value) : Number.NaN;
  if (Number.isNaN(at) || at < now - TRENDING_MAX_UNTIL_AGE_MS) {
    throw new ApiError("bad_request", "until must be an ISO 8601 time within the last 24 hours");
  }
  return Math.min(at, now);
}

export const trendingRoutes = new Hono<AppEnv>();

trendingRoutes.get("/v1/admin/trending", async (c) => {
  const hours = positiveInt("hours", c.req.query("hours"), TRENDING_MAX_HOURS) ?? 1;
  const top = positiveInt("top", c.req.query("top"), TRENDING_MAX_TOP) ?? TRENDING_DEFAULT_TOP;
  const now = Date.now();
  const until = untilParam(c.req.query("until"), now);
  const settings = configOrThrow(c.env).redis;
  if (!settings) throw new ApiError("dependency_unavailable", "UPSTASH_REDIS_REST_URL is not configured");
  const buckets = (hours * HOUR_MS) / TREND_BUCKET_MS;
  const [products, categories] = await withRedisDeadline(
    { url: settings.url, token: settings.token },
    ADMIN_TRENDING_TIMEOUT_MS,
    (redis) => {
      const read = (prefix: string) => fetchTrending(redis, until, { prefix, buckets, top });
      return Promise.all([read(TREND_PRODUCT_PREFIX), read(TREND_CATEGORY_PREFIX)]);
    },
  ).catch((error: unknown) => {
    throw new ApiError("dependency_unavailable", "Redis did not answer", { cause: error });
  });
  return c.json({
    window: {
      hours,
      buckets,
      // The oldest bucket counted starts here; the newest is the one holding `until` (still filling when it is now).
      from: new Date((trendBucket(until) - buckets + 1) * TREND_BUCKET_MS).toISOString(),
      to: new Date(until).toISOString(),
    },
    products: products.map(([id, score]) => ({ productId: id, score })),
    categories: categories.map(([category, score]) => ({ category, score })),
  });
});
