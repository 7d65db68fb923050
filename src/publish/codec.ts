// Encodings of the values in Workers KV (layout: keys.ts, docs/publishing.md). The publisher encodes, the ranking
// path decodes with the functions here.
//
// Compact JSON arrays, not objects and not a binary format:
//   - a list of 50 candidates as [id, score, reason] triples is ~40% smaller than the same list of objects (no
//     repeated field names), which is what KV stores, bills and moves to the edge;
//   - JSON.parse is native in V8 and beats any JS-level binary decoder for values of a few KB, so decoding stays
//     well under the ranking path's CPU budget;
//   - the values stay readable with `wrangler kv key get` while debugging;
//   - Postgres builds the lists itself (json_build_array / json_agg), so the publisher never re-encodes them.
// Every value says which snapshot version it belongs to and when that snapshot was generated (epoch ms).

/** Format tag of every value; a reader rejects values with a format it does not know. */
export const CODEC_FORMAT = 1;

/**
 * Entries kept per stable (per-user / per-item) key: the newest and the previous HISTORY_DEPTH − 1 contents. A
 * rollback is a pointer flip as long as fewer than HISTORY_DEPTH versions that wrote stable keys came after the
 * target (publisher.ts checks it). 3 lists of ~50 items are ~5 KB: small next to KV's 25 MiB per value.
 */
export const HISTORY_DEPTH = 3;

/** Catalog item flags. */
export const FLAG_IN_STOCK = 1;
export const FLAG_VISIBLE = 2;

// ───────────────────────────── pointer ─────────────────────────────

export interface CatalogManifest {
  /** The version whose catalog keys hold the shards (`v<version>:catalog:<shard>`). */
  version: number;
  shards: number;
  items: number;
}

/**
 * How well the catalogue's order (ids sorted by code units) predicts what shoppers go on to: of the products'
 * top-10 "next items" neighbours (`pairs`), how many lie within `span` places of the product (`near`), among
 * `products` catalogue products. The ranking path uses the order only when this is far above chance
 * (src/rank/catalog.ts `orderPredictive`).
 */
export interface CatalogOrderStat {
  pairs: number;
  near: number;
  products: number;
  span: number;
}

export interface Pointer {
  f: typeof CODEC_FORMAT;
  /** The served snapshot version: readers take the newest entry ≤ version of each stable key. */
  version: number;
  /** When the served snapshot's data was generated (epoch ms). */
  generatedAt: number;
  /** When this pointer was written (epoch ms). */
  publishedAt: number;
  /** The newest model_versions.id in the snapshot (null: none). */
  modelVersion: number | null;
  /** model name → model_versions.id of each model in the snapshot. */
  modelVersions: Record<string, number>;
  /** Where this version's shared keys are: unchanged shared keys are reused from older versions. */
  catalog: CatalogManifest | null;
  /** list → the version whose `v<version>:pop:<list>` key holds it (null: never published). */
  popular: { popular: number | null; trending: number | null };
  /** Measured at publish time (absent in pointers written before it existed: the order is then not used). */
  catalogOrder?: CatalogOrderStat | null;
  /**
   * The version per-user and per-item keys are read at (the newest entry ≤ it), when it is not `version`: a
   * catalogue push gets a version of its own but serves the lists of the pointer it was pushed onto. Without it, a
   * push after a rollback to 6 of a publish 7 would, as version 8, serve version 7's lists again.
   */
  lists?: number;
}

/** The version a pointer's readers take per-user and per-item entries at. */
export function listsVersion(pointer: Pointer): number {
  return pointer.lists ?? pointer.version;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

const isInt = (v: unknown): v is number => typeof v === "number" && Number.isSafeInteger(v);

/** The pointer, or null when it is missing or not one this code understands. */
export function decodePointer(text: string | null): Pointer | null {
  if (text === null) return null;
  let p: unknown;
  try {
    p = JSON.parse(text);
  } catch {
    return null;
  }
  if (!isObject(p) || p.f !== CODEC_FORMAT || !isInt(p.version) || !isInt(p.generatedAt)) return null;
  if (!isObject(p.popular) || !isObject(p.modelVersions)) return null;
  if (p.lists !== undefined && (!isInt(p.lists) || p.lists > p.version)) return null;
  return p as unknown as Pointer;
}

export function encodePointer(pointer: Pointer): string {
  return JSON.stringify(pointer);
}

// ───────────────────────────── stable keys (users, items) ─────────────────────────────

/** [version, generatedAt, list] — list null is a tombstone: from that version on there is no list. */
export type Entry<T> = [version: number, generatedAt: number, list: T[] | null];

/** `{"f":1,"e":[entry, …]}`, entries newest first. */
export interface StableValue<T> {
  f: typeof CODEC_FORMAT;
  e: Entry<T>[];
}

/**
 * The reason code of a user list's buy-again entries: the user's earlier purchases, appended after the candidates
 * with their own scores (docs/recommenders.md#user-candidates); the ranking path reads them as its buy-again source.
 */
export const BUY_AGAIN_REASON = "bought_before";

/** A user candidate: [productId, score, reason code or null]. */
export type UserCandidateTuple = [productId: string, score: number, reason: string | null];
/** A neighbour: [productId, score]. */
export type NeighborTuple = [productId: string, score: number];

export function parseStable<T>(text: string | null): StableValue<T> | null {
  if (text === null) return null;
  try {
    const v = JSON.parse(text) as unknown;
    if (!isObject(v) || v.f !== CODEC_FORMAT || !Array.isArray(v.e)) return null;
    return v as unknown as StableValue<T>;
  } catch {
    return null;
  }
}

/** The entry a reader of snapshot `version` must use: the newest one not newer than it. */
export function selectEntry<T>(value: StableValue<T> | null, version: number): Entry<T> | null {
  if (!value) return null;
  for (const entry of value.e) {
    if (Array.isArray(entry) && isInt(entry[0]) && entry[0] <= version) return entry;
  }
  return null;
}

/**
 * The new value of a stable key: the new entry (its list already JSON, as Postgres built it) in front of the
 * previous value's entries older than `version` (a re-run of the same version replaces its own entry: alarms are
 * at-least-once), cut to HISTORY_DEPTH. `served`: the version the served pointer reads lists at (listsVersion);
 * the entry its readers take is kept even when it falls past HISTORY_DEPTH, so that after a rollback to the oldest
 * target a publish never takes the served list away before its own pointer names the new entry (the key then holds
 * HISTORY_DEPTH + 1 entries until its next write).
 */
export function mergeStable(
  previous: string | null,
  version: number,
  generatedAt: number,
  listJson: string,
  served: number | null = null,
): string {
  const old = parseStable<unknown>(previous);
  const kept = (old?.e ?? []).filter((e) => Array.isArray(e) && isInt(e[0]) && e[0] < version);
  const tail = kept.slice(0, HISTORY_DEPTH - 1);
  const read = served === null ? undefined : kept.find((e) => (e[0] as number) <= served);
  if (read && !tail.includes(read)) tail.push(read);
  return `{"f":${CODEC_FORMAT},"e":[[${version},${generatedAt},${listJson}]${tail.map((t) => `,${JSON.stringify(t)}`).join("")}]}`;
}

export interface ListAt<T> {
  /** The version whose content this is (≤ the pointer's version). */
  version: number;
  generatedAt: number;
  items: T[];
}

function listAt<T>(text: string | null, version: number): ListAt<T> | null {
  const entry = selectEntry(parseStable<T>(text), version);
  if (!entry || !Array.isArray(entry[2])) return null;
  return { version: entry[0], generatedAt: entry[1], items: entry[2] };
}

export interface UserCandidate {
  productId: string;
  score: number;
  reason: string | null;
}

/** A `u:<userKey>` value as of snapshot `version` (null: no list for that version). */
export function decodeUserList(text: string | null, version: number): ListAt<UserCandidate> | null {
  const list = listAt<UserCandidateTuple>(text, version);
  if (!list) return null;
  return {
    ...list,
    items: list.items.map(([productId, score, reason]) => ({ productId, score, reason: reason ?? null })),
  };
}

export interface Neighbor {
  productId: string;
  score: number;
}

/** An `i:<kind>:<productId>` value as of snapshot `version` (null: no list for that version). */
export function decodeNeighbors(text: string | null, version: number): ListAt<Neighbor> | null {
  const list = listAt<NeighborTuple>(text, version);
  if (!list) return null;
  return { ...list, items: list.items.map(([productId, score]) => ({ productId, score })) };
}

// ───────────────────────────── catalog ─────────────────────────────

/**
 * [category index into `categories` or -1, price or null, flags (FLAG_IN_STOCK | FLAG_VISIBLE), title, brand or
 * null, tags]. Title, brand and tags feed the ranking path's request filters and query match; a reader treats a
 * 3-element tuple (the first format) as an item without them.
 */
export type CatalogTuple = [
  category: number,
  price: number | null,
  flags: number,
  title?: string,
  brand?: string | null,
  tags?: string[],
];

export interface CatalogShardValue {
  f: typeof CODEC_FORMAT;
  version: number;
  generatedAt: number;
  shard: number;
  shards: number;
  categories: string[];
  items: Record<string, CatalogTuple>;
}

export interface CatalogRow {
  id: string;
  title: string;
  category: string | null;
  brand: string | null;
  tags: string[];
  price: number | null;
  inStock: boolean;
  visible: boolean;
}

/** The `catalog` table's columns a CatalogRow is read from (`select ${CATALOG_ROW_COLUMNS} from catalog`). */
export const CATALOG_ROW_COLUMNS = "id, title, category, brand, tags, price, in_stock, visible";

/** A row of `select ${CATALOG_ROW_COLUMNS} from catalog`, as a CatalogRow. */
export function catalogRowOf(r: Record<string, unknown>): CatalogRow {
  return {
    id: String(r.id),
    title: String(r.title ?? ""),
    category: r.category === null || r.category === undefined ? null : String(r.category),
    brand: r.brand === null || r.brand === undefined ? null : String(r.brand),
    tags: Array.isArray(r.tags) ? r.tags.map(String) : [],
    price: r.price === null || r.price === undefined ? null : Number(r.price),
    inStock: r.in_stock === true,
    visible: r.visible === true,
  };
}

/** The content of one shard (without version/generatedAt: what its hash covers). */
export function catalogShardContent(rows: readonly CatalogRow[]): Pick<CatalogShardValue, "categories" | "items"> {
  const categories: string[] = [];
  const index = new Map<string, number>();
  const items: Record<string, CatalogTuple> = {};
  for (const row of rows) {
    let c = -1;
    if (row.category !== null) {
      c = index.get(row.category) ?? -1;
      if (c < 0) {
        c = categories.length;
        categories.push(row.category);
        index.set(row.category, c);
      }
    }
    const flags = (row.inStock ? FLAG_IN_STOCK : 0) | (row.visible ? FLAG_VISIBLE : 0);
    items[row.id] = [c, row.price, flags, row.title, row.brand, row.tags];
  }
  return { categories, items };
}

export function decodeCatalogShard(text: string | null): CatalogShardValue | null {
  if (text === null) return null;
  try {
    const v = JSON.parse(text) as unknown;
    if (!isObject(v) || v.f !== CODEC_FORMAT || !isObject(v.items) || !Array.isArray(v.categories)) return null;
    return v as unknown as CatalogShardValue;
  } catch {
    return null;
  }
}

export interface CatalogItem {
  category: string | null;
  price: number | null;
  inStock: boolean;
  visible: boolean;
  title: string;
  brand: string | null;
  tags: string[];
}

/** One product of a decoded shard (undefined: not in the catalogue). */
export function catalogItem(shard: CatalogShardValue, id: string): CatalogItem | undefined {
  const t = shard.items[id];
  if (!t) return undefined;
  return {
    category: t[0] >= 0 ? (shard.categories[t[0]] ?? null) : null,
    price: t[1],
    inStock: (t[2] & FLAG_IN_STOCK) !== 0,
    visible: (t[2] & FLAG_VISIBLE) !== 0,
    title: typeof t[3] === "string" ? t[3] : "",
    brand: typeof t[4] === "string" ? t[4] : null,
    tags: Array.isArray(t[5]) ? t[5] : [],
  };
}

// ───────────────────────────── popular / trending ─────────────────────────────

export interface PopularValue {
  f: typeof CODEC_FORMAT;
  version: number;
  generatedAt: number;
  list: string;
  /** segment (`global`, `category:<c>`, `country:<CC>`) → [productId, score] best first. */
  segments: Record<string, NeighborTuple[]>;
}

export function decodePopular(text: string | null): PopularValue | null {
  if (text === null) return null;
  try {
    const v = JSON.parse(text) as unknown;
    if (!isObject(v) || v.f !== CODEC_FORMAT || !isObject(v.segments)) return null;
    return v as unknown as PopularValue;
  } catch {
    return null;
  }
}
