// The KV encodings of src/publish/codec.ts and the key builders of keys.ts: what the publisher writes is what the
// ranking path decodes, histories keep HISTORY_DEPTH entries, a re-run of a version replaces its own entry, and
// readers take the newest entry not newer than their pointer.
import { describe, expect, it } from "vitest";
import {
  BulkChunker,
  type BulkPair,
  backfillValue,
  bulkJson,
  KV_BULK_MAX_BYTES,
  KV_BULK_MAX_PAIRS,
} from "../../src/publish/bulk-files.ts";
import {
  catalogItem,
  catalogShardContent,
  decodeNeighbors,
  decodePointer,
  decodeUserList,
  HISTORY_DEPTH,
  mergeStable,
  parseStable,
} from "../../src/publish/codec.ts";
import {
  catalogShardOf,
  fitsKvKey,
  itemListKey,
  NEIGHBOR_KEY_KINDS,
  POINTER_KEY,
  userListKey,
} from "../../src/publish/keys.ts";
import { NEIGHBOR_KINDS } from "../../src/stores/schema.ts";

const list = (score: number) => JSON.stringify([["p1", score, "popular"]]);

describe("stable values", () => {
  it("keeps the newest HISTORY_DEPTH entries, newest first", () => {
    let value: string | null = null;
    for (let v = 1; v <= HISTORY_DEPTH + 2; v++) value = mergeStable(value, v, 1000 * v, list(v));
    const parsed = parseStable<unknown>(value);
    expect(parsed?.e.map((e) => e[0])).toEqual([5, 4, 3]);
  });

  it("keeps the entry the served pointer reads, past HISTORY_DEPTH, until the key's next write", () => {
    let value: string | null = null;
    for (let v = 1; v <= HISTORY_DEPTH; v++) value = mergeStable(value, v, 1000 * v, list(v));
    // Served: version 1 (a rollback). Version 4 keeps 3 and 2 for rollbacks, and 1 for the readers until its pointer.
    const written = mergeStable(value, 4, 4000, list(4), 1);
    expect(parseStable<unknown>(written)?.e.map((e) => e[0])).toEqual([4, 3, 2, 1]);
    expect(decodeUserList(written, 1)?.items[0]?.score).toBe(1);
    // Served: version 4. Version 5 drops 1 again.
    expect(parseStable<unknown>(mergeStable(written, 5, 5000, list(5), 4))?.e.map((e) => e[0])).toEqual([5, 4, 3]);
    // A served entry already among the newest is not repeated.
    expect(parseStable<unknown>(mergeStable(value, 4, 4000, list(4), 3))?.e.map((e) => e[0])).toEqual([4, 3, 2]);
  });

  it("replaces its own version's entry when a version is written twice (alarms are at-least-once)", () => {
    const once = mergeStable(mergeStable(null, 1, 1, list(1)), 2, 2, list(2));
    const twice = mergeStable(once, 2, 2, list(2));
    expect(twice).toBe(once);
  });

  it("gives each reader the newest entry not newer than its pointer's version", () => {
    const value = mergeStable(mergeStable(null, 3, 30, list(3)), 7, 70, list(7));
    expect(decodeUserList(value, 9)?.version).toBe(7);
    expect(decodeUserList(value, 7)?.items).toEqual([{ productId: "p1", score: 7, reason: "popular" }]);
    expect(decodeUserList(value, 6)?.version).toBe(3);
    expect(decodeUserList(value, 2)).toBeNull();
    expect(decodeUserList(null, 2)).toBeNull();
  });

  it("reads a tombstone as no list from its version on", () => {
    const value = mergeStable(mergeStable(null, 1, 1, list(1)), 2, 2, "null");
    expect(decodeUserList(value, 2)).toBeNull();
    expect(decodeUserList(value, 1)?.items).toHaveLength(1);
  });

  it("decodes neighbours and rejects what is not a known format", () => {
    const value = mergeStable(null, 1, 1, JSON.stringify([["p2", 0.5]]));
    expect(decodeNeighbors(value, 1)?.items).toEqual([{ productId: "p2", score: 0.5 }]);
    expect(decodeNeighbors("{not json", 1)).toBeNull();
    expect(decodeNeighbors(JSON.stringify({ f: 99, e: [] }), 1)).toBeNull();
    expect(decodePointer(JSON.stringify({ version: 1 }))).toBeNull();
  });
});

describe("keys and the catalogue", () => {
  it("builds the documented key names", () => {
    expect(POINTER_KEY).toBe("ptr");
    expect(userListKey("u:42")).toBe("u:u:42");
    expect(itemListKey("bought_together", "sku-1")).toBe("i:bought_together:sku-1");
    expect(itemListKey("next", "sku-1")).toBe("i:next:sku-1");
    // Every kind item_neighbors may hold has its keys (and their tombstones).
    expect([...NEIGHBOR_KEY_KINDS].sort()).toEqual([...NEIGHBOR_KINDS].sort());
    expect(fitsKvKey("x".repeat(512))).toBe(true);
    expect(fitsKvKey("é".repeat(300))).toBe(false);
  });

  it("shards deterministically and encodes items compactly", () => {
    expect(catalogShardOf("sku-1", 1)).toBe(0);
    const shard = catalogShardOf("sku-1", 8);
    expect(shard).toBe(catalogShardOf("sku-1", 8));
    expect(shard).toBeGreaterThanOrEqual(0);
    expect(shard).toBeLessThan(8);
    const content = catalogShardContent([
      {
        id: "a",
        title: "Red mug",
        category: "mugs",
        brand: "acme",
        tags: ["red"],
        price: 3,
        inStock: false,
        visible: true,
      },
      { id: "b", title: "Mug", category: "mugs", brand: null, tags: [], price: null, inStock: true, visible: false },
    ]);
    expect(content).toEqual({
      categories: ["mugs"],
      items: { a: [0, 3, 2, "Red mug", "acme", ["red"]], b: [0, null, 1, "Mug", null, []] },
    });
    const decoded = { f: 1 as const, version: 1, generatedAt: 1, shard: 0, shards: 1, ...content };
    expect(catalogItem(decoded, "a")).toEqual({
      category: "mugs",
      price: 3,
      inStock: false,
      visible: true,
      title: "Red mug",
      brand: "acme",
      tags: ["red"],
    });
    // The first format's 3-element tuples still decode (without title, brand and tags).
    const old = { ...decoded, items: { c: [-1, 2, 3] as [number, number, number] } };
    expect(catalogItem(old, "c")).toEqual({
      category: null,
      price: 2,
      inStock: true,
      visible: true,
      title: "",
      brand: null,
      tags: [],
    });
    expect(catalogItem(decoded, "zz")).toBeUndefined();
  });
});

describe("bulk files", () => {
  it("cuts pairs into files of at most the bulk limit, in order, and writes version-0 entries", async () => {
    const files: BulkPair[][] = [];
    const chunker = new BulkChunker(async (pairs) => {
      files.push(pairs);
    }, 3);
    for (let i = 0; i < 7; i++) await chunker.add({ key: `u:${i}`, value: backfillValue(list(i), 5) });
    await chunker.end();
    expect(files.map((f) => f.length)).toEqual([3, 3, 1]);
    expect(JSON.parse(bulkJson(files[0] ?? []))[0]).toEqual({ key: "u:0", value: backfillValue(list(0), 5) });
    expect(decodeUserList(files[2]?.[0]?.value ?? null, 1)).toMatchObject({ version: 0, generatedAt: 5 });
    expect(new BulkChunker(async () => {}, 50_000)).toBeDefined();
    expect(KV_BULK_MAX_PAIRS).toBe(10_000);
  });

  it("keeps every body under the bulk API's 100 MB counted in UTF-8 bytes, with non-ASCII ids", async () => {
    // 100 candidates whose ids are 64-character Japanese product slugs: 3 bytes of UTF-8 per character.
    const id = (k: number) => `${"有機りんごジュース贈答用セット".repeat(4)}-${String(k).padStart(3, "0")}`;
    const value = backfillValue(JSON.stringify(Array.from({ length: 100 }, (_, k) => [id(k), 0.5, "similar"])), 5);
    const valueBytes = Buffer.byteLength(JSON.stringify(value));
    const bodies: number[] = [];
    const chunker = new BulkChunker(async (pairs) => {
      // bulkJson's length without building a 100 MB string: [ ], commas, and each {"key":…,"value":…}.
      const keys = pairs.reduce((n, p) => n + Buffer.byteLength(JSON.stringify({ key: p.key, value: "" })), 0);
      bodies.push(2 + (pairs.length - 1) + keys - 2 * pairs.length + pairs.length * valueBytes);
    });
    for (let k = 0; k < 16_000; k++) await chunker.add({ key: `u:u:${k}`, value });
    await chunker.end();
    expect(bodies.length).toBeGreaterThan(1);
    expect(Math.max(...bodies)).toBeLessThanOrEqual(KV_BULK_MAX_BYTES);
    expect(KV_BULK_MAX_BYTES).toBeLessThan(100_000_000);
  });
});
