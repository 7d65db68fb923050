// The Workers KV layout of batch outputs (docs/publishing.md): one pointer, version-prefixed shared hot keys, and
// stable per-user / per-item keys whose value carries its own short version history. The ranking path imports
// these builders (never hand-written key strings), so the writer and the readers cannot drift apart.
//
//   ptr                              → Pointer: the served version and the names of its shared keys (codec.ts)
//   v<version>:catalog:<shard>       → catalog / stock / visibility of the items hashed to that shard (immutable)
//   v<version>:pop:<list>            → popular or trending lists of every segment (immutable)
//   u:<userKey>                      → the user's candidate lists, newest entries first, each with its version
//   i:<kind>:<productId>             → the product's neighbours of that kind (similar, bought_together, next),
//                                      same envelope
//
// Shared keys are immutable (a changed catalog is a new key under a new version): a key name a reader has never
// asked for is a cache miss at its edge location and is read from KV's central store, so it is never stale.
// Per-user / per-item keys are overwritten in place (millions of them; only changed ones are written), so a reader
// may see an older value for up to KV's cache TTL — and then reads an older entry, never a torn one.

/** The one key every reader resolves first. */
export const POINTER_KEY = "ptr";

/** Workers KV rejects keys longer than 512 bytes; such ids are skipped (and logged) by the publisher. */
export const KV_MAX_KEY_BYTES = 512;

export const USER_PREFIX = "u:";
export const ITEM_PREFIX = "i:";

/** The item_neighbors kinds (NEIGHBOR_KINDS of src/stores/schema.ts) the publisher ships as `i:<kind>:<productId>`. */
export const NEIGHBOR_KEY_KINDS = ["similar", "bought_together", "next"] as const;
export type NeighborKeyKind = (typeof NEIGHBOR_KEY_KINDS)[number];

export const POPULAR_KEY_LISTS = ["popular", "trending"] as const;
export type PopularKeyList = (typeof POPULAR_KEY_LISTS)[number];

/** `u:<userKey>` — userKey as the session objects name users (`u:<userId>` / `a:<anonymousId>`). */
export function userListKey(userKey: string): string {
  return `${USER_PREFIX}${userKey}`;
}

/** `i:<kind>:<productId>`. */
export function itemListKey(kind: NeighborKeyKind, productId: string): string {
  return `${ITEM_PREFIX}${kind}:${productId}`;
}

/** `v<version>:catalog:<shard>`. */
export function catalogShardKey(version: number, shard: number): string {
  return `v${version}:catalog:${shard}`;
}

/** `v<version>:pop:<list>`. */
export function popularListKey(version: number, list: PopularKeyList): string {
  return `v${version}:pop:${list}`;
}

/** Whether `key` fits Workers KV's key length limit. */
export function fitsKvKey(key: string): boolean {
  // UTF-8 length without allocating for the common ASCII case.
  return key.length * 3 <= KV_MAX_KEY_BYTES || new TextEncoder().encode(key).length <= KV_MAX_KEY_BYTES;
}

/**
 * FNV-1a 32-bit of `id`: which catalog shard holds it. Stable across runtimes (no Math.random, no platform hash),
 * so the publisher and every reader agree.
 */
export function fnv1a(id: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < id.length; i++) {
    hash ^= id.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  return hash >>> 0;
}

/** The shard (0 … shards-1) whose catalog key holds product `id`. */
export function catalogShardOf(id: string, shards: number): number {
  return shards <= 1 ? 0 : fnv1a(id) % shards;
}
