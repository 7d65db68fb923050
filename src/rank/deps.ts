// The real sources of the ranking service: the SessionState objects, the online store (KV) and the live trending
// counters (Redis, through the isolate cache in trending.ts).
import { loadConfig } from "../config.ts";
import { describeError, log } from "../log.ts";
import { openRedis } from "../stores/redis.ts";
import type { RankDeps } from "./service.ts";
import { cachedTrending, fetchTrending, trendingState } from "./trending.ts";

export interface WaitUntil {
  waitUntil(promise: Promise<unknown>): void;
}

export function depsFromEnv(env: Env, ctx: WaitUntil): RankDeps {
  return {
    kv: env.ONLINE_STORE,
    snapshot: (userKey) => env.SESSION_STATE.getByName(userKey).snapshot(userKey, { lean: true }),
    trending(now) {
      const redis = loadConfig(env).redis;
      if (!redis) return { list: null, ageMs: null, status: "unavailable" };
      const state = trendingState(redis.url);
      const cached = cachedTrending(
        state,
        now,
        () => fetchTrending(openRedis({ url: redis.url, token: redis.token }), Date.now()),
        (p) => ctx.waitUntil(p),
      );
      const status = cached.list ? "ok" : state.lastError !== null ? "unavailable" : "warming";
      return { ...cached, status };
    },
    now: () => Date.now(),
    expose(userKey, event) {
      // After the answer: an exposure that cannot be recorded (the object overloaded, its outbox full) is logged and
      // dropped — the shopper's list is never held for it (docs/experiments.md#exposures).
      ctx.waitUntil(
        env.SESSION_STATE.getByName(userKey)
          .expose(userKey, event)
          .then(
            (kept) => {
              if (!kept) log("warn", "exposure not recorded: the visitor's outbox is full", { userKey });
            },
            (error: unknown) => log("warn", "exposure not recorded", { userKey, error: describeError(error) }),
          ),
      );
    },
  };
}
