// The real sources of the ranking service: the SessionState objects, the online store (KV) and the live trending
// counters (Redis, through the isolate cache in trending.ts); and where answers' exposures go (the event stream,
// through the isolate's exposure buffer).
import { loadConfig } from "../config.ts";
import { EXPOSURE_PUSH_TIMEOUT_MS, ExposureBuffer } from "../experiments/exposure-buffer.ts";
import { describeError, log } from "../log.ts";
import { pushToStream } from "../session/stream.ts";
import { type RedisSettings, withRedisDeadline } from "../stores/redis.ts";
import type { RankDeps } from "./service.ts";
import { cachedTrending, fetchTrending, TRENDING_GIVE_UP_MS, trendingState } from "./trending.ts";

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
        () => withRedisDeadline(redis, TRENDING_GIVE_UP_MS, (client) => fetchTrending(client, Date.now())),
        (p) => ctx.waitUntil(p),
      );
      const status = cached.list ? "ok" : state.lastError !== null ? "unavailable" : "warming";
      return { ...cached, status };
    },
    now: () => Date.now(),
    waitUntil: (promise) => ctx.waitUntil(promise),
    expose(userKey, event) {
      // After the answer, batched with the isolate's other exposures: one that cannot be recorded (no Redis, the
      // buffer full, the push failed) is logged and dropped — the shopper's list is never held for it
      // (docs/experiments.md#exposures).
      const redis = loadConfig(env).redis;
      if (!redis) return;
      const buffer = exposureBuffer(redis);
      const added = buffer.add({ messageId: event.messageId, userKey, event: JSON.stringify(event) });
      // Only the request that opened the batch waits for it (the batch's timer and Redis call are its own I/O).
      if (added.status === "opened") ctx.waitUntil(added.sent);
      else if (added.status === "refused") {
        log("warn", "exposure not recorded: the isolate's exposure buffer is full", { refused: buffer.refused });
      }
    },
  };
}

const buffers = new Map<string, ExposureBuffer>();

/** The isolate's exposure buffer for one Redis (one per URL and token: a rotated token gets a new one). */
export function exposureBuffer(redis: Pick<RedisSettings, "url" | "token">): ExposureBuffer {
  const id = `${redis.url}\n${redis.token}`;
  let buffer = buffers.get(id);
  if (!buffer) {
    buffer = new ExposureBuffer({
      async push(items) {
        await withRedisDeadline(redis, EXPOSURE_PUSH_TIMEOUT_MS, (client) =>
          pushToStream(client, items, Date.now(), { trending: false }),
        );
      },
      report({ failed, error }) {
        if (failed > 0)
          log("warn", "exposures not recorded: the event stream refused them", {
            count: failed,
            error: describeError(error),
          });
      },
    });
    buffers.set(id, buffer);
  }
  return buffer;
}
