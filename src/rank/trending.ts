// Live trending products from the Redis counters the collection path maintains (src/session/stream.ts): the sum
// of the last TRENDING_WINDOW_BUCKETS five-minute buckets, top TRENDING_TOP, computed by one Lua script in Redis.
// Off the critical path: a request uses the isolate's cached list (refreshed in the background once older than
// TRENDING_REFRESH_MS) and never waits for Redis; a cold isolate answers without live trending (flagged), and the
// batch trending list from KV stands in.
import { TREND_PRODUCT_PREFIX, trendBucket } from "../session/stream.ts";
import type { Redis } from "../stores/redis.ts";
import type { Scored } from "./core.ts";

export const TRENDING_WINDOW_BUCKETS = 12;
export const TRENDING_TOP = 100;
export const TRENDING_REFRESH_MS = 10_000;
/** Older than this, a cached list is not used at all. */
export const TRENDING_MAX_AGE_MS = 10 * 60_000;
/**
 * A refresh's Redis read is abandoned after this long, and a refresh still pending after it (one whose context was
 * cut off) is replaced by the next request's: a Redis that never answers cannot switch live trending off for good.
 */
export const TRENDING_GIVE_UP_MS = 5_000;

// KEYS: the bucket keys; ARGV: [top]. Returns ['=' .. id, score, '=' .. id, score, …] best first. The '=' keeps an
// id that happens to be JSON (`[1]`, `"sku"`, `7`) from being parsed by a client that deserialises replies.
const TRENDING_SCRIPT = `
local args = { 'ZUNION', #KEYS }
for i = 1, #KEYS do args[#args + 1] = KEYS[i] end
args[#args + 1] = 'WITHSCORES'
local rows = redis.call(unpack(args))
local n = #rows / 2
local items = {}
for i = 1, n do items[i] = { rows[2 * i - 1], tonumber(rows[2 * i]) } end
table.sort(items, function(a, b) if a[2] ~= b[2] then return a[2] > b[2] end return a[1] < b[1] end)
local out = {}
for i = 1, math.min(n, tonumber(ARGV[1])) do
  out[#out + 1] = '=' .. items[i][1]
  out[#out + 1] = tostring(items[i][2])
end
return out`;

/**
 * The `top` members of the counters under `prefix` (products, or categories with TREND_CATEGORY_PREFIX) summed over
 * the `buckets` five-minute buckets up to `now`'s, best first.
 */
export async function fetchTrending(
  redis: Redis,
  now: number,
  options: { prefix?: string; buckets?: number; top?: number } = {},
): Promise<Scored[]> {
  const { prefix = TREND_PRODUCT_PREFIX, buckets = TRENDING_WINDOW_BUCKETS, top = TRENDING_TOP } = options;
  const last = trendBucket(now);
  const keys = Array.from({ length: buckets }, (_, i) => `${prefix}${last - i}`);
  const reply = await redis.eval<string[], unknown[]>(TRENDING_SCRIPT, keys, [String(top)]);
  const out: Scored[] = [];
  if (!Array.isArray(reply)) return out;
  for (let i = 0; i + 1 < reply.length; i += 2) {
    const score = Number(reply[i + 1]);
    if (Number.isFinite(score) && score > 0) out.push([String(reply[i]).slice(1), score]);
  }
  return out;
}

export interface TrendingState {
  list: Scored[] | null;
  at: number | null;
  refreshing: Promise<void> | null;
  /** When the pending refresh started. */
  refreshStartedAt: number | null;
  lastError: number | null;
}

const states = new Map<string, TrendingState>();

/** Forgets every cached trending list (tests). */
export function resetTrendingCaches(): void {
  states.clear();
}

export function trendingState(id: string): TrendingState {
  let s = states.get(id);
  if (!s) {
    s = { list: null, at: null, refreshing: null, refreshStartedAt: null, lastError: null };
    states.set(id, s);
  }
  return s;
}

/**
 * The cached list (null when there is none younger than TRENDING_MAX_AGE_MS), starting a background refresh
 * through `waitUntil` when it is older than TRENDING_REFRESH_MS.
 */
export function cachedTrending(
  state: TrendingState,
  now: number,
  refresh: () => Promise<Scored[]>,
  waitUntil: (p: Promise<unknown>) => void,
): { list: Scored[] | null; ageMs: number | null } {
  const age = state.at === null ? null : now - state.at;
  const recentError = state.lastError !== null && now - state.lastError < TRENDING_REFRESH_MS;
  const pending = state.refreshing !== null && now - (state.refreshStartedAt ?? now) < TRENDING_GIVE_UP_MS;
  if ((age === null || age >= TRENDING_REFRESH_MS) && !pending && !recentError) {
    // An abandoned refresh that answers late changes nothing: only the current one writes the state.
    const run: Promise<void> = refresh()
      .then(
        (list) => {
          if (state.refreshing !== run) return;
          state.list = list;
          state.at = Date.now();
          state.lastError = null;
        },
        () => {
          if (state.refreshing === run) state.lastError = Date.now();
        },
      )
      .finally(() => {
        if (state.refreshing === run) state.refreshing = null;
      });
    state.refreshing = run;
    state.refreshStartedAt = now;
    waitUntil(run);
  }
  if (age === null || age > TRENDING_MAX_AGE_MS) return { list: null, ageMs: age };
  return { list: state.list, ageMs: age };
}
