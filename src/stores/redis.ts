// Upstash Redis over REST: the event stream the warehouse loader drains and the global real-time counters.
// Locally the same client talks to a real redis-server through an Upstash-compatible REST gateway.
import { Redis } from "@upstash/redis/cloudflare";

export interface RedisSettings {
  url: string;
  token: string;
  /** Aborts the client's requests. A function makes an aborted call reject (a plain signal makes the client
   * answer the abort's reason as if Redis had: callers then have to check the reply's shape). */
  signal?: AbortSignal | (() => AbortSignal);
  /**
   * Results exactly as Redis returned them (strings stay strings). By default the client JSON-parses every string
   * it can, which turns a stream field "123" into a number and "true" into a boolean; readers of arbitrary data
   * (the warehouse loader) want the raw strings.
   */
  rawResults?: boolean;
}

export function openRedis(settings: RedisSettings): Redis {
  return new Redis({
    url: settings.url,
    token: settings.token,
    enableTelemetry: false,
    // No retry inside the client: every caller has a deadline or a retry of its own. (`retry: false` is not that:
    // the client maps it to one retry after a network error.)
    retry: { retries: 0 },
    ...(settings.signal ? { signal: settings.signal } : {}),
    ...(settings.rawResults ? { automaticDeserialization: false } : {}),
  });
}
export type { Redis };

/** Read as transient by the batch loop's retry (src/batch/retry.ts). */
const timedOut = (timeoutMs: number) => new Error(`Redis call timed out after ${timeoutMs} ms`);

/**
 * `call` on a client whose every request is abandoned after `timeoutMs`: the call rejects then. Without it a Redis
 * that accepts the connection and never answers holds the call pending for as long as the isolate lives.
 */
export async function withRedisDeadline<T>(
  settings: RedisSettings,
  timeoutMs: number,
  call: (redis: Redis) => Promise<T>,
): Promise<T> {
  const abort = new AbortController();
  // A timer we clear ourselves: AbortSignal.timeout() would keep the context busy for the whole timeout.
  const timer = setTimeout(() => abort.abort(timedOut(timeoutMs)), timeoutMs);
  try {
    return await call(openRedis({ ...settings, signal: () => abort.signal }));
  } finally {
    clearTimeout(timer);
  }
}

/**
 * `call` (made on a client opened elsewhere), rejected after `timeoutMs` without its answer. Its request is not
 * aborted and may still reach Redis later: only for calls that are idempotent and harmless when they land late.
 */
export async function redisDeadline<T>(timeoutMs: number, call: Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(timedOut(timeoutMs)), timeoutMs);
  });
  try {
    return await Promise.race([call, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * The client with every `exec` and `eval` rejected after `timeoutMs` without its answer (redisDeadline): for a caller
 * whose every Redis call is safe to repeat and harmless when it lands late. The request itself is not aborted.
 */
export function callsWithDeadline(redis: Redis, timeoutMs: number): Redis {
  return new Proxy(redis, {
    get(target, prop, receiver) {
      const value: unknown = Reflect.get(target, prop, receiver);
      if ((prop !== "exec" && prop !== "eval") || typeof value !== "function") return value;
      return (...args: unknown[]) => redisDeadline(timeoutMs, Promise.resolve(value.apply(target, args)));
    },
  });
}
