// The loader's side of the Redis stream (src/session/stream.ts writes it): a consumer group read through Upstash
// REST with raw commands. Create the group once (`XGROUP CREATE … 0 MKSTREAM`: from the start of the stream, so
// events appended before the first load are loaded too), read with `XREADGROUP … COUNT n` — this consumer's own
// pending entries first (ID `0`, then after the last one seen; entries pending for a consumer no run reads with are
// claimed first: XPENDING, XCLAIM), then new ones (`>`) — and acknowledge with `XACK`
// only after the rows are committed. The client must be opened with `rawResults` (src/stores/redis.ts): field
// values are arbitrary strings and must not be JSON-coerced. Upstash base64-encodes replies; the client decodes.
import type { Redis } from "../stores/redis.ts";

export interface StreamEntry {
  /** Stream entry id `<ms>-<seq>`. */
  id: string;
  /** Field → value; null when the entry was deleted from the stream while still pending (XREADGROUP answers nil). */
  fields: Record<string, string> | null;
}

/** The epoch ms of a stream id (its first half: the Redis server time of the XADD). */
export function streamIdTime(id: string): number {
  const ms = Number(id.split("-")[0]);
  return Number.isFinite(ms) ? ms : Number.NaN;
}

function pairs(flat: unknown): Record<string, string> | null {
  if (!Array.isArray(flat)) return null;
  const out: Record<string, string> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) out[String(flat[i])] = String(flat[i + 1]);
  return out;
}

/** `[[id, [f, v, …] | null], …]` → entries. */
function entriesOf(list: unknown): StreamEntry[] {
  if (!Array.isArray(list)) return [];
  return list
    .filter((e): e is unknown[] => Array.isArray(e) && e.length >= 1)
    .map((e) => ({ id: String(e[0]), fields: pairs(e[1]) }));
}

/** Creates the group (and the stream, if missing) at the start of the stream; an existing group is fine. */
export async function ensureGroup(redis: Redis, stream: string, group: string): Promise<boolean> {
  try {
    await redis.exec(["XGROUP", "CREATE", stream, group, "0", "MKSTREAM"]);
    return true;
  } catch (error) {
    if (error instanceof Error && /BUSYGROUP/.test(error.message)) return false;
    throw error;
  }
}

/**
 * Up to `count` entries for `consumer`: after `cursor` among its pending ones (`"0"` = from the first), or new
 * ones when `cursor` is `">"` (which also makes them pending until acknowledged).
 */
export async function readGroup(
  redis: Redis,
  stream: string,
  group: string,
  consumer: string,
  cursor: string,
  count: number,
): Promise<StreamEntry[]> {
  const reply = await redis.exec<unknown>([
    "XREADGROUP",
    "GROUP",
    group,
    consumer,
    "COUNT",
    count,
    "STREAMS",
    stream,
    cursor,
  ]);
  // [[stream, [[id, fields], …]]], or nil when nothing new arrived.
  if (!Array.isArray(reply)) return [];
  const mine = reply.find((s): s is unknown[] => Array.isArray(s) && String(s[0]) === stream);
  return mine ? entriesOf(mine[1]) : [];
}

/** Up to `count` entries from `start` (an id, `(id` for after it, or `-`), in stream order, outside any group. */
export async function readRange(redis: Redis, stream: string, start: string, count: number): Promise<StreamEntry[]> {
  return entriesOf(await redis.exec<unknown>(["XRANGE", stream, start, "+", "COUNT", count]));
}

/** Acknowledges entries (removes them from the group's pending list); returns how many were pending. */
export async function ack(redis: Redis, stream: string, group: string, ids: readonly string[]): Promise<number> {
  if (ids.length === 0) return 0;
  return Number(await redis.exec<number>(["XACK", stream, group, ...ids]));
}

/** The consumers of `group` that have pending entries, with how many each has (XPENDING's summary). */
export async function pendingConsumers(
  redis: Redis,
  stream: string,
  group: string,
): Promise<{ consumer: string; pending: number }[]> {
  const summary = await redis.exec<unknown>(["XPENDING", stream, group]);
  // [count, smallest id, greatest id, [[consumer, count], …]]; the list is nil when nothing is pending.
  const list = Array.isArray(summary) ? summary[3] : null;
  if (!Array.isArray(list)) return [];
  return list
    .filter((c): c is unknown[] => Array.isArray(c) && c.length >= 2)
    .map((c) => ({ consumer: String(c[0]), pending: Number(c[1]) }));
}

/**
 * Moves up to `count` of the oldest entries pending for consumer `from` to consumer `to` (XPENDING … `from`, then
 * XCLAIM … 0 … JUSTID, which leaves their delivery counts alone); `to` then reads them as its own pending entries.
 * Only for a consumer no live reader uses. Returns how many entries were pending for `from` in that range (0: none
 * left). Repeating a call whose reply was lost claims the same entries again, harmlessly.
 */
export async function claimPending(
  redis: Redis,
  stream: string,
  group: string,
  from: string,
  to: string,
  count: number,
): Promise<number> {
  const pending = await redis.exec<unknown>(["XPENDING", stream, group, "-", "+", count, from]);
  const ids = Array.isArray(pending)
    ? pending.filter((p): p is unknown[] => Array.isArray(p) && p.length >= 1).map((p) => String(p[0]))
    : [];
  if (ids.length === 0) return 0;
  await redis.exec(["XCLAIM", stream, group, to, 0, ...ids, "JUSTID"]);
  return ids.length;
}

/** Suffix of the stream that keeps the entries Postgres refuses (`lastmile:events:quarantine`, src/batch/loader.ts). */
export const QUARANTINE_SUFFIX = ":quarantine";

/**
 * `lastmile:erased:<userKey>` = the epoch ms of the key's erasure, set by the erasure before it deletes the key's
 * entries from the streams (src/privacy/erase.ts): a quarantine write the loader gave up waiting for may still land
 * after that, and adds nothing of the key then.
 */
export const ERASURE_FENCE_PREFIX = "lastmile:erased:";
/** A day: far longer than any request can stay in flight (a Worker invocation lasts 15 minutes at most). */
export const ERASURE_FENCE_TTL_SECONDS = 24 * 60 * 60;

// KEYS: the fence keys. ARGV: [erased at (epoch ms), TTL (s)].
const FENCE_SCRIPT = `
for _, key in ipairs(KEYS) do redis.call('SET', key, ARGV[1], 'EX', ARGV[2]) end
return #KEYS
`;

/** Fences the quarantine off `userKeys` (erased at `erasedAt`): one round trip. */
export async function fenceQuarantine(redis: Redis, userKeys: readonly string[], erasedAt: number): Promise<void> {
  if (userKeys.length === 0) return;
  const keys = userKeys.map((key) => `${ERASURE_FENCE_PREFIX}${key}`);
  await redis.eval(FENCE_SCRIPT, keys, [String(erasedAt), String(ERASURE_FENCE_TTL_SECONDS)]);
}

// KEYS: [quarantine stream, the fence key of each of the event's erasure keys].
// ARGV: [the event's receipt (epoch ms), first id to look at (the source entry's time), source id, field, value, …].
// A fence at or after the receipt: nothing added. An entry `from` the source already there (an earlier attempt whose
// transaction failed after it): nothing added either. The quarantine entry is added after its source entry, so its
// id is not older than the source's time.
const QUARANTINE_SCRIPT = `
for i = 2, #KEYS do
  local erased = redis.call('GET', KEYS[i])
  if erased and tonumber(erased) >= tonumber(ARGV[1]) then return 'erased' end
end
for _, entry in ipairs(redis.call('XRANGE', KEYS[1], ARGV[2], '+')) do
  local fields = entry[2]
  for j = 1, #fields - 1, 2 do
    if fields[j] == 'from' and fields[j + 1] == ARGV[3] then return 'present' end
  end
end
redis.call('XADD', KEYS[1], '*', unpack(ARGV, 4))
return 'added'
`;

export type QuarantineWrite = "added" | "present" | "erased";

/**
 * Adds `entry` (its fields, `error`, and `from` = its id) to the quarantine stream `stream`, once: `present` when an
 * earlier call added it, `erased` when one of `userKeys` (the event's erasure keys) was fenced at or after
 * `receivedAt`. One atomic script, so a retried call, or one that lands late, never adds it twice or after an erasure.
 */
export async function addToQuarantine(
  redis: Redis,
  stream: string,
  entry: StreamEntry,
  error: string,
  event: { userKeys: readonly string[]; receivedAt: number },
): Promise<QuarantineWrite> {
  const keys = [stream, ...event.userKeys.map((key) => `${ERASURE_FENCE_PREFIX}${key}`)];
  const fields = [...Object.entries(entry.fields ?? {}).flat(), "error", error, "from", entry.id];
  const from = String(streamIdTime(entry.id));
  const reply = await redis.eval<string[], unknown>(QUARANTINE_SCRIPT, keys, [
    String(event.receivedAt),
    from,
    entry.id,
    ...fields,
  ]);
  if (reply !== "added" && reply !== "present" && reply !== "erased") {
    throw new Error(`unexpected quarantine reply: ${JSON.stringify(reply)}`);
  }
  return reply;
}

/** Deletes entries from the stream once loaded (just before their XACK), to keep Redis memory to the backlog. */
export async function deleteEntries(redis: Redis, stream: string, ids: readonly string[]): Promise<number> {
  if (ids.length === 0) return 0;
  return Number(await redis.exec<number>(["XDEL", stream, ...ids]));
}

export interface Backlog {
  /** Entries delivered to the group but not acknowledged. */
  pending: number;
  /** Entries not yet delivered to the group; null when Redis cannot tell (entries deleted mid-stream). */
  undelivered: number | null;
  /** Stream id of the oldest entry not yet loaded (pending or undelivered), or null when there is none. */
  oldestId: string | null;
  /**
   * Redis's clock (epoch ms, `TIME`): the clock stream ids are made from, so `redisNow − streamIdTime(oldestId)` is
   * the entry's age whatever the caller's clock says.
   */
  redisNow: number;
}

function groupInfo(reply: unknown, group: string): Record<string, unknown> | null {
  if (!Array.isArray(reply)) return null;
  for (const g of reply) {
    if (!Array.isArray(g)) continue;
    const info: Record<string, unknown> = {};
    for (let i = 0; i + 1 < g.length; i += 2) info[String(g[i])] = g[i + 1];
    if (String(info.name) === group) return info;
  }
  return null;
}

/**
 * What is left to load: XPENDING's summary, XINFO GROUPS' lag and the first entry after the last delivered; and
 * Redis's clock (TIME).
 */
export async function backlog(redis: Redis, stream: string, group: string): Promise<Backlog> {
  const [summary, groups, time] = await Promise.all([
    redis.exec<unknown>(["XPENDING", stream, group]),
    redis.exec<unknown>(["XINFO", "GROUPS", stream]),
    redis.exec<unknown>(["TIME"]),
  ]);
  // [seconds, microseconds]
  const redisNow = Array.isArray(time) ? Number(time[0]) * 1000 + Math.floor(Number(time[1]) / 1000) : Number.NaN;
  if (!Number.isFinite(redisNow)) throw new Error(`unexpected TIME reply: ${JSON.stringify(time)}`);
  const pending = Array.isArray(summary) ? Number(summary[0] ?? 0) : 0;
  const oldestPending = Array.isArray(summary) && summary[1] ? String(summary[1]) : null;
  const info = groupInfo(groups, group);
  const lag = info?.lag;
  const undelivered = lag === null || lag === undefined ? null : Number(lag);
  let oldestId = oldestPending;
  if (oldestId === null && undelivered !== 0) {
    const lastDelivered = info ? String(info["last-delivered-id"] ?? "0-0") : "0-0";
    const next = await redis.exec<unknown>(["XRANGE", stream, `(${lastDelivered}`, "+", "COUNT", 1]);
    oldestId = entriesOf(next)[0]?.id ?? null;
  }
  return { pending, undelivered, oldestId, redisNow };
}
