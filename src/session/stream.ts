// The warehouse stream and the trending counters in Redis: key names, the entry format and the one Lua script
// that writes a flush of outbox rows. The warehouse loader reads the same stream, so names and fields are
// exported constants (docs/session.md documents them).
//
// Exactly-once into Redis on top of at-least-once delivery: for each event the script first does
// `SET lastmile:seen:<messageId> 1 NX EX 172800`; only when that key is new does it XADD the event and apply its
// trending increments. A retried flush (lost reply, alarm retry) therefore changes nothing the second time.
// The script runs atomically, so a flush is all-or-nothing in Redis.
import type { CollectedEvent } from "../collect/event.ts";
import type { Redis } from "../stores/redis.ts";
import { interpret, tokenValue } from "./ecommerce.ts";
import { HOUR_MS, MINUTE_MS } from "./limits.ts";
import { TREND_WEIGHTS } from "./weights.ts";

/** The stream every accepted event is appended to. */
export const EVENT_STREAM = "lastmile:events";
// No MAXLEN: a cap would trim entries the loader has not loaded yet, losing accepted events without a trace. The
// loader deletes what it acknowledged (LOADER_DELETE_ACKED), so the stream holds the backlog only; if Redis fills up
// during a long warehouse outage, XADD fails and the events wait in the objects' outboxes (docs/session.md).
/** Entry fields: `id` = messageId, `user` = the object key that recorded it, `e` = CollectedEvent JSON. */
export const STREAM_FIELDS = { messageId: "id", userKey: "user", event: "e" } as const;

/** `lastmile:seen:<messageId>`: the delivery guard. */
export const SEEN_KEY_PREFIX = "lastmile:seen:";
/** 48 h: covers the DO dedupe window (24 h) plus a day of outbox retries. */
export const SEEN_TTL_SECONDS = 48 * 60 * 60;

/** `lastmile:trend:product:<bucket>` sorted set: member productId, score the summed TREND_WEIGHTS. */
export const TREND_PRODUCT_PREFIX = "lastmile:trend:product:";
/** `lastmile:trend:category:<bucket>`: member the normalised category (as in `category:<c>` tokens). */
export const TREND_CATEGORY_PREFIX = "lastmile:trend:category:";
/** `<bucket>` = floor(event epoch ms / TREND_BUCKET_MS): 5-minute buckets, summed by readers over a window. */
export const TREND_BUCKET_MS = 5 * MINUTE_MS;
/** Buckets live 26 h: a day of trending plus slack for late readers. */
export const TREND_TTL_SECONDS = 26 * 60 * 60;
/** Events older than this (by event time) do not count towards trending: their buckets are (nearly) expired. */
export const TREND_MAX_AGE_MS = 24 * HOUR_MS;

export function trendBucket(epochMs: number): number {
  return Math.floor(epochMs / TREND_BUCKET_MS);
}

export interface TrendIncrement {
  key: string;
  member: string;
  weight: number;
}

/** The trending increments of one event (aggregated per key and member). */
export function trendIncrements(event: CollectedEvent, now: number): TrendIncrement[] {
  const at = Date.parse(event.timestamp);
  if (!Number.isFinite(at) || now - at > TREND_MAX_AGE_MS) return [];
  const bucket = trendBucket(Math.min(at, now));
  const sums = new Map<string, TrendIncrement>();
  const add = (key: string, member: string, weight: number) => {
    const id = `${key}\u0000${member}`;
    const prev = sums.get(id);
    if (prev) prev.weight += weight;
    else sums.set(id, { key, member, weight });
  };
  for (const i of interpret(event)) {
    const weight = TREND_WEIGHTS[i.kind];
    if (weight <= 0) continue;
    if (i.productId) add(`${TREND_PRODUCT_PREFIX}${bucket}`, i.productId, weight);
    const category = tokenValue(i.category);
    if (category) add(`${TREND_CATEGORY_PREFIX}${bucket}`, category, weight);
  }
  return [...sums.values()];
}

/** One outbox row as the flush sends it. */
export interface StreamItem {
  messageId: string;
  userKey: string;
  /** CollectedEvent JSON. */
  event: string;
}

// KEYS: [stream, seen key of event 1..n, trend key 1..t]
// ARGV: [maxlen, seenTtl, trendTtl, n, then per event: messageId, userKey, json, m, m × (trendKeyIndex, member, weight)]
// Returns {appended, duplicates}.
export const FLUSH_SCRIPT = `
local seenTtl, trendTtl, n = ARGV[1], ARGV[2], tonumber(ARGV[3])
local a = 4
local appended = 0
local touched = {}
for e = 1, n do
  local id, user, json, m = ARGV[a], ARGV[a + 1], ARGV[a + 2], tonumber(ARGV[a + 3])
  a = a + 4
  if redis.call('SET', KEYS[1 + e], '1', 'NX', 'EX', seenTtl) then
    redis.call('XADD', KEYS[1], '*', '${STREAM_FIELDS.messageId}', id, '${STREAM_FIELDS.userKey}', user, '${STREAM_FIELDS.event}', json)
    for j = 0, m - 1 do
      local k = tonumber(ARGV[a + 3 * j])
      redis.call('ZINCRBY', KEYS[k], ARGV[a + 3 * j + 2], ARGV[a + 3 * j + 1])
      touched[k] = true
    end
    appended = appended + 1
  end
  a = a + 3 * m
end
for k in pairs(touched) do redis.call('EXPIRE', KEYS[k], trendTtl) end
return {appended, n - appended}
`;

/** The KEYS and ARGV of one flush (every key the script touches is declared, as Upstash and clusters require). */
export function flushCommand(
  items: readonly StreamItem[],
  now: number,
  options: { trending?: boolean } = {},
): { keys: string[]; args: string[] } {
  const keys = [EVENT_STREAM, ...items.map((i) => `${SEEN_KEY_PREFIX}${i.messageId}`)];
  const trendIndex = new Map<string, number>();
  const args = [String(SEEN_TTL_SECONDS), String(TREND_TTL_SECONDS), String(items.length)];
  for (const item of items) {
    let increments: TrendIncrement[] = [];
    try {
      if (options.trending !== false) increments = trendIncrements(JSON.parse(item.event) as CollectedEvent, now);
    } catch {
      // Unparseable JSON cannot happen for rows we wrote; still deliver the event, without trending.
    }
    args.push(item.messageId, item.userKey, item.event, String(increments.length));
    for (const inc of increments) {
      let k = trendIndex.get(inc.key);
      if (k === undefined) {
        keys.push(inc.key);
        k = keys.length; // Lua tables are 1-based
        trendIndex.set(inc.key, k);
      }
      args.push(String(k), inc.member, String(inc.weight));
    }
  }
  return { keys, args };
}

/**
 * One round trip: appends the new events to the stream and counts them in trending (unless `trending` is false:
 * events the session model ignores, such as exposures, count for nothing); returns what it did.
 */
export async function pushToStream(
  redis: Redis,
  items: readonly StreamItem[],
  now: number,
  options: { trending?: boolean } = {},
): Promise<{ appended: number; duplicates: number }> {
  if (items.length === 0) return { appended: 0, duplicates: 0 };
  const { keys, args } = flushCommand(items, now, options);
  const reply = await redis.eval<string[], [number, number]>(FLUSH_SCRIPT, keys, args);
  if (!Array.isArray(reply) || reply.length !== 2) throw new Error(`unexpected flush reply: ${JSON.stringify(reply)}`);
  return { appended: Number(reply[0]), duplicates: Number(reply[1]) };
}
