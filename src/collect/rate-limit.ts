// Collection rate limits, through Workers Rate Limiting bindings (wrangler.toml [[ratelimits]]): per client IP,
// then per source. Both count requests, not events, per Cloudflare location. The IP check runs first so that an
// abusive client that is refused does not also spend its source's budget (which would lock out the whole shop).
import type { Source } from "../config.ts";
import { ApiError } from "../errors.ts";
import { log } from "../log.ts";

/** The bindings' period (wrangler.toml): the longest a refused client has to wait, so it is the Retry-After. */
export const RATE_LIMIT_PERIOD_SECONDS = 10;

interface Limiter {
  limit(options: { key: string }): Promise<{ success: boolean }>;
}

async function allowed(limiter: Limiter, key: string, requestId: string): Promise<boolean> {
  try {
    return (await limiter.limit({ key })).success;
  } catch (error) {
    // Fail open: a limiter outage must not stop collection; the session objects have their own overload guard.
    log("warn", "rate limiter unavailable", { requestId, key: key.split(":")[0], error: String(error) });
    return true;
  }
}

function limited(scope: "ip" | "source"): ApiError {
  return new ApiError(
    "rate_limited",
    scope === "ip" ? "too many requests from this IP address" : "too many requests for this source",
    { details: { scope }, headers: { "Retry-After": String(RATE_LIMIT_PERIOD_SECONDS) } },
  );
}

export async function enforceRateLimits(
  env: Pick<Env, "RATE_LIMIT_IP" | "RATE_LIMIT_SOURCE">,
  source: Source,
  ip: string | null,
  requestId: string,
): Promise<void> {
  // No CF-Connecting-IP means the request did not come through Cloudflare's edge (local stack, service binding).
  if (ip !== null && !source.trustedServer && !(await allowed(env.RATE_LIMIT_IP, `ip:${ip}`, requestId))) {
    throw limited("ip");
  }
  if (!(await allowed(env.RATE_LIMIT_SOURCE, `source:${source.id}`, requestId))) throw limited("source");
}
