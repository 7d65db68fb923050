// Reading the online store (Workers KV, layout in src/publish/keys.ts) on the request path, with isolate-memory
// caches sized for it:
//   - the pointer and the ranking config: re-read every POINTER_TTL_MS (a publish or rollback reaches every
//     isolate within that plus KV's cacheTtl);
//   - shared keys (catalogue shards, popular/trending lists): immutable under their name, cached until the pointer
//     names others, decoded once (the catalogue into ready-to-rank Products); a load still pending after
//     LOAD_GIVE_UP_MS is abandoned, as a head read is, and the next request starts another;
//   - per-item neighbour lists (NEIGHBOR_TTL_MS) and per-user lists (USER_LIST_TTL_MS, at most USER_LIST_CACHE_MAX
//     users: a shopper asks again on every page) are cached under the pointer's version: their content for a version
//     never changes, so the TTLs only bound how long a rare stale read (KV's eventual consistency right after a
//     publish) can live, and the memory.
// Every read goes through one bulk `get` per phase, so a request costs at most two KV operations when caches are warm.

import {
  DEFAULT_EXPERIMENTS_CONFIG,
  EXPERIMENTS_KEY,
  type ExperimentsConfig,
  parseExperiments,
} from "../experiments/config.ts";
import type { Pointer, PopularValue } from "../publish/codec.ts";
import {
  BUY_AGAIN_REASON,
  decodeCatalogShard,
  decodeNeighbors,
  decodePointer,
  decodePopular,
  decodeUserList,
  listsVersion,
} from "../publish/codec.ts";
import {
  catalogShardKey,
  itemListKey,
  NEIGHBOR_KEY_KINDS,
  type NeighborKeyKind,
  POINTER_KEY,
  popularListKey,
  userListKey,
} from "../publish/keys.ts";
import { docDecoder } from "../stored-doc.ts";
import { type CatalogLookup, CatalogueOrder, type Product, shardProducts } from "./catalog.ts";
import { DEFAULT_RANKING_CONFIG, parseRankingConfig, RANKING_CONFIG_KEY, type RankingConfig } from "./config.ts";
import type { Scored } from "./core.ts";

export const POINTER_TTL_MS = 10_000;
export const NEIGHBOR_TTL_MS = 5 * 60_000;
export const USER_LIST_TTL_MS = 60_000;
/** ~5 KB a list: ~10 MB at most, well inside an isolate's 128 MB. */
const USER_LIST_CACHE_MAX = 2_000;
/**
 * A head read or a load of the shared keys still pending after this long is abandoned and the next request starts a
 * new one (a read that never settles must not hold the isolate's pointer or catalogue back for good).
 */
export const LOAD_GIVE_UP_MS = 5_000;
const NEIGHBOR_CACHE_MAX = 20_000;
/** Edge cache of KV reads (KV's minimum is 60 s). */
const KV_CACHE_TTL_S = 60;

export interface Head {
  pointer: Pointer | null;
  config: RankingConfig;
  /** The stored config could not be used (the default is in effect). */
  configInvalid: boolean;
  /** The experiments document (docs/experiments.md); none running when absent or unreadable. */
  experiments: ExperimentsConfig;
  experimentsInvalid: boolean;
}

export interface Shared {
  catalog: CatalogLookup | null;
  /** Every product, in the shards' order (the ranking's last-resort fill). */
  products: Product[];
  /**
   * The catalogue's order, built on first use and kept with the catalogue (null: no catalogue). Whether it is used
   * is the pointer's to say (Pointer.catalogOrder), per request: a new pointer may reuse these shared keys.
   */
  order: (() => CatalogueOrder) | null;
  catalogItems: number;
  popular: PopularValue | null;
  trending: PopularValue | null;
}

interface Cached<T> {
  at: number;
  value: T;
}

/** A load of the shared keys and when it started (a load pending past LOAD_GIVE_UP_MS is replaced). */
interface SharedLoad {
  promise: Promise<Shared>;
  since: number;
}

/** Per-isolate state. One per KV namespace object (tests bind several). */
class IsolateCache {
  head: Cached<Head> | null = null;
  headLoading: Promise<Head> | null = null;
  headLoadingSince = 0;
  shared = new Map<string, SharedLoad>();
  /** The entries of `shared` that have loaded, for synchronous reads. */
  sharedLoaded = new Map<string, Shared>();
  neighbors = new Map<string, Cached<Scored[] | null>>();
  users = new Map<string, Cached<UserList | null>>();
}

let caches = new WeakMap<KVNamespace, IsolateCache>();

/** Drops every isolate cache of the online store (tests; the next request re-reads KV). */
export function resetOnlineStoreCaches(): void {
  caches = new WeakMap();
}
function cacheOf(kv: KVNamespace): IsolateCache {
  let c = caches.get(kv);
  if (!c) {
    c = new IsolateCache();
    caches.set(kv, c);
  }
  return c;
}

/** The stored ranking config, or the default (an unreadable one is reported, never fatal). */
export const decodeRankingConfig = docDecoder(parseRankingConfig, DEFAULT_RANKING_CONFIG);

/** The stored experiments document, or none running (an unreadable one is reported, never fatal). */
export const decodeExperiments = docDecoder(parseExperiments, DEFAULT_EXPERIMENTS_CONFIG);

/** The pointer, the ranking config and the experiments: from the isolate cache (synchronously, no I/O) or one bulk read. */
export function readHead(kv: KVNamespace, now: number): Head | Promise<Head> {
  const cache = cacheOf(kv);
  if (cache.head && now - cache.head.at < POINTER_TTL_MS) return cache.head.value;
  // A read that never settles (a hung connection) must not block every later request of this isolate.
  if (!cache.headLoading || now - cache.headLoadingSince > LOAD_GIVE_UP_MS) {
    cache.headLoadingSince = now;
    const load = async (): Promise<Head> => {
      const values = await kv.get([POINTER_KEY, RANKING_CONFIG_KEY, EXPERIMENTS_KEY], {
        type: "text",
        cacheTtl: KV_CACHE_TTL_S,
      });
      const { config, invalid } = decodeRankingConfig(values.get(RANKING_CONFIG_KEY) ?? null);
      const experiments = decodeExperiments(values.get(EXPERIMENTS_KEY) ?? null);
      const head: Head = {
        pointer: decodePointer(values.get(POINTER_KEY) ?? null),
        config,
        configInvalid: invalid,
        experiments: experiments.config,
        experimentsInvalid: experiments.invalid,
      };
      // A read abandoned as hung (LOAD_GIVE_UP_MS) may settle after a newer one: it must not replace it.
      if (!cache.head || cache.head.at <= now) cache.head = { at: now, value: head };
      return head;
    };
    const loading = load();
    cache.headLoading = loading;
    const clear = () => {
      if (cache.headLoading === loading) cache.headLoading = null;
    };
    loading.then(clear, clear);
    return loading;
  }
  return cache.headLoading;
}

/** The last head this isolate read, however old (null: none): what a request uses while KV fails. */
export function lastHead(kv: KVNamespace): Head | null {
  return cacheOf(kv).head?.value ?? null;
}

/** Forget the cached pointer and config (after an admin change in this isolate). */
export function invalidateHead(kv: KVNamespace): void {
  cacheOf(kv).head = null;
}

function sharedId(pointer: Pointer | null): string {
  if (!pointer) return "none";
  const c = pointer.catalog;
  return `${c ? `${c.version}/${c.shards}` : "-"}|${pointer.popular.popular ?? "-"}|${pointer.popular.trending ?? "-"}`;
}

/**
 * The shared hot keys the pointer names, decoded, cached per isolate under their (immutable) names; synchronously
 * once they are loaded. `waitUntil` keeps a load this call starts alive past the request's answer (a Worker's
 * outstanding I/O ends with its request; the load is for the isolate's later requests too).
 */
export function readShared(
  kv: KVNamespace,
  pointer: Pointer | null,
  now: number,
  waitUntil?: (promise: Promise<unknown>) => void,
): Shared | Promise<Shared> {
  const cache = cacheOf(kv);
  const id = sharedId(pointer);
  const loaded = cache.sharedLoaded.get(id);
  if (loaded) return loaded;
  const current = cache.shared.get(id);
  // A load that never settles (a hung connection) must not leave the isolate without its catalogue for good.
  if (current && now - current.since <= LOAD_GIVE_UP_MS) return current.promise;
  const load: SharedLoad = { promise: loadShared(kv, pointer), since: now };
  // Keep the newest two generations (a reader of the previous pointer may still be in flight).
  cache.shared.delete(id);
  cache.shared.set(id, load);
  while (cache.shared.size > 2) {
    const oldest = cache.shared.keys().next().value as string;
    cache.shared.delete(oldest);
  }
  const settled = load.promise.then(
    (value) => {
      // The keys are immutable under their names: the first load to arrive serves (an abandoned one too, if it
      // settles first); a later one never replaces it, nor revives a generation no longer kept.
      if (!cache.shared.has(id) || cache.sharedLoaded.has(id)) return;
      cache.sharedLoaded.set(id, value);
      for (const key of cache.sharedLoaded.keys()) if (!cache.shared.has(key)) cache.sharedLoaded.delete(key);
    },
    () => {
      // Only the current load's failure clears the entry (an abandoned one's must not drop its replacement).
      if (cache.shared.get(id) === load) cache.shared.delete(id);
    },
  );
  waitUntil?.(settled);
  return load.promise;
}

async function loadShared(kv: KVNamespace, pointer: Pointer | null): Promise<Shared> {
  if (!pointer) return { catalog: null, products: [], order: null, catalogItems: 0, popular: null, trending: null };
  const keys: string[] = [];
  const catalog = pointer.catalog;
  if (catalog) for (let s = 0; s < catalog.shards; s++) keys.push(catalogShardKey(catalog.version, s));
  const popularKey = pointer.popular.popular !== null ? popularListKey(pointer.popular.popular, "popular") : null;
  const trendingKey = pointer.popular.trending !== null ? popularListKey(pointer.popular.trending, "trending") : null;
  if (popularKey) keys.push(popularKey);
  if (trendingKey) keys.push(trendingKey);
  const values = new Map<string, string | null>();
  // Catalogue shards are large: fetched with the longest edge cache; ≤ 100 keys per bulk read.
  for (let i = 0; i < keys.length; i += 100) {
    const part = await kv.get(keys.slice(i, i + 100), { type: "text", cacheTtl: 3600 });
    for (const [k, v] of part) values.set(k, v);
  }
  let products: Map<string, Product> | null = null;
  if (catalog) {
    products = new Map();
    for (let s = 0; s < catalog.shards; s++) {
      const shard = decodeCatalogShard(values.get(catalogShardKey(catalog.version, s)) ?? null);
      if (!shard) throw new Error(`catalogue shard ${s} of version ${catalog.version} is missing or unreadable`);
      for (const [id, p] of shardProducts(shard)) products.set(id, p);
    }
  }
  const map = products;
  let order: CatalogueOrder | null = null;
  return {
    catalog: map ? (id: string) => map.get(id) : null,
    products: map ? [...map.values()] : [],
    order: map ? () => (order ??= new CatalogueOrder(map.keys())) : null,
    catalogItems: map?.size ?? 0,
    popular: popularKey ? decodePopular(values.get(popularKey) ?? null) : null,
    trending: trendingKey ? decodePopular(values.get(trendingKey) ?? null) : null,
  };
}

export interface UserList {
  /** The batch candidates, best first. */
  items: Array<{ productId: string; score: number }>;
  /** The user's earlier purchases (the entries with BUY_AGAIN_REASON), best first. */
  buyAgain: Scored[];
  version: number;
  generatedAt: number;
}

const emptyNeighbors = (): Lists["neighbors"] =>
  Object.fromEntries(NEIGHBOR_KEY_KINDS.map((kind) => [kind, new Map()])) as Lists["neighbors"];

export interface Lists {
  /** userKey → its batch list at the pointer's version (null: none). */
  users: Map<string, UserList | null>;
  /** Neighbour lists by kind, then by seed product. */
  neighbors: Record<NeighborKeyKind, Map<string, Scored[]>>;
  /** KV operations used (0 when everything came from the isolate cache). */
  reads: number;
  /** A KV read failed: these are the isolate cache's hits only (the caller flags the source). */
  failed?: boolean;
}

/**
 * Per-user and per-item lists at the pointer's version, in one bulk read; synchronously when every one of them is
 * in the isolate cache.
 */
export function readLists(
  kv: KVNamespace,
  pointer: Pointer,
  userKeys: readonly string[],
  seeds: readonly string[],
  now: number,
): Lists | Promise<Lists> {
  const cache = cacheOf(kv);
  const out: Lists = { users: new Map(), neighbors: emptyNeighbors(), reads: 0 };
  const at = listsVersion(pointer);
  const wanted: string[] = [];
  const usersToRead: string[] = [];
  for (const u of userKeys) {
    const hit = cache.users.get(`${at}|${u}`);
    if (hit && now - hit.at < USER_LIST_TTL_MS) out.users.set(u, hit.value);
    else {
      usersToRead.push(u);
      wanted.push(userListKey(u));
    }
  }
  const neighborKeys: Array<[seed: string, kind: NeighborKeyKind, key: string]> = [];
  for (const seed of seeds) {
    for (const kind of NEIGHBOR_KEY_KINDS) {
      const key = itemListKey(kind, seed);
      const hit = cache.neighbors.get(`${at}|${key}`);
      if (hit && now - hit.at < NEIGHBOR_TTL_MS) {
        if (hit.value) out.neighbors[kind].set(seed, hit.value);
      } else {
        neighborKeys.push([seed, kind, key]);
        wanted.push(key);
      }
    }
  }
  if (wanted.length === 0) return out;
  return readMissing(kv, cache, at, out, wanted, usersToRead, neighborKeys, now);
}

async function readMissing(
  kv: KVNamespace,
  cache: IsolateCache,
  /** The version list entries are read at: listsVersion(pointer). */
  at: number,
  out: Lists,
  wanted: readonly string[],
  usersToRead: readonly string[],
  neighborKeys: ReadonlyArray<[seed: string, kind: NeighborKeyKind, key: string]>,
  now: number,
): Promise<Lists> {
  const values = new Map<string, string | null>();
  try {
    for (let i = 0; i < wanted.length; i += 100) {
      const part = await kv.get(wanted.slice(i, i + 100), { type: "text", cacheTtl: KV_CACHE_TTL_S });
      out.reads++;
      for (const [k, v] of part) values.set(k, v);
    }
  } catch {
    // What the isolate already holds still serves (docs/ranking.md#failure); nothing missing is cached as absent.
    out.failed = true;
    return out;
  }
  for (const u of usersToRead) {
    const list = decodeUserList(values.get(userListKey(u)) ?? null, at);
    let value: UserList | null = null;
    if (list) {
      const items: UserList["items"] = [];
      const buyAgain: Scored[] = [];
      for (const c of list.items) {
        if (c.reason === BUY_AGAIN_REASON) buyAgain.push([c.productId, c.score]);
        else items.push({ productId: c.productId, score: c.score });
      }
      value = { items, buyAgain, version: list.version, generatedAt: list.generatedAt };
    }
    out.users.set(u, value);
    const id = `${at}|${u}`;
    cache.users.delete(id);
    if (cache.users.size >= USER_LIST_CACHE_MAX) {
      const oldest = cache.users.keys().next().value;
      if (oldest !== undefined) cache.users.delete(oldest);
    }
    cache.users.set(id, { at: now, value });
  }
  for (const [seed, kind, key] of neighborKeys) {
    const list = decodeNeighbors(values.get(key) ?? null, at);
    const scored: Scored[] | null = list ? list.items.map((n) => [n.productId, n.score] as const) : null;
    if (cache.neighbors.size >= NEIGHBOR_CACHE_MAX) cache.neighbors.clear();
    cache.neighbors.set(`${at}|${key}`, { at: now, value: scored });
    if (scored) out.neighbors[kind].set(seed, scored);
  }
  return out;
}
