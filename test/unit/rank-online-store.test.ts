// The online store's head and shared-keys caches under a read that never settles: a fault injected with a fake KV
// namespace (the real one cannot be made to hang); the real decoders read what it returns.
import { beforeEach, describe, expect, it } from "vitest";
import { CODEC_FORMAT, catalogShardContent, encodePointer, type Pointer } from "../../src/publish/codec.ts";
import { catalogShardKey, POINTER_KEY, userListKey } from "../../src/publish/keys.ts";
import {
  LOAD_GIVE_UP_MS,
  POINTER_TTL_MS,
  readHead,
  readLists,
  readShared,
  resetOnlineStoreCaches,
  type Shared,
} from "../../src/rank/online-store.ts";

const pointer = (version: number): Pointer => ({
  f: CODEC_FORMAT,
  version,
  generatedAt: 1,
  publishedAt: 1,
  modelVersion: null,
  modelVersions: {},
  catalog: null,
  popular: { popular: null, trending: null },
});

/** A KV whose bulk gets answer from `answers` in order; `"hang"` never settles, `"fail"` rejects. */
function fakeKv(answers: Array<Pointer | "hang" | "fail">): { kv: KVNamespace; calls: () => number } {
  let n = 0;
  const kv = {
    get(keys: string[]) {
      const answer = answers[n++];
      if (answer === "hang") return new Promise(() => {});
      if (answer === "fail" || answer === undefined) return Promise.reject(new Error("kv down"));
      return Promise.resolve(new Map(keys.map((k) => [k, k === POINTER_KEY ? encodePointer(answer) : null])));
    },
  } as unknown as KVNamespace;
  return { kv, calls: () => n };
}

beforeEach(() => resetOnlineStoreCaches());

describe("the head cache", () => {
  it("shares one read among concurrent requests and caches it for POINTER_TTL_MS", async () => {
    const { kv, calls } = fakeKv([pointer(1), pointer(2)]);
    const [a, b] = await Promise.all([readHead(kv, 1000), readHead(kv, 1001)]);
    expect(a.pointer?.version).toBe(1);
    expect(b.pointer?.version).toBe(1);
    expect(calls()).toBe(1);
    expect((await readHead(kv, 1000 + POINTER_TTL_MS - 1)).pointer?.version).toBe(1);
    expect((await readHead(kv, 1000 + POINTER_TTL_MS)).pointer?.version).toBe(2);
    expect(calls()).toBe(2);
  });

  it("abandons a read that never settles, so a later request reads again", async () => {
    const { kv, calls } = fakeKv(["hang", pointer(7)]);
    const stuck = readHead(kv, 0);
    // Within the give-up time, requests wait on the same read (their own deadlines end them).
    void readHead(kv, LOAD_GIVE_UP_MS);
    expect(calls()).toBe(1);
    const head = await readHead(kv, LOAD_GIVE_UP_MS + 1);
    expect(head.pointer?.version).toBe(7);
    expect(calls()).toBe(2);
    void stuck;
  });

  it("reads again after a failed read", async () => {
    const { kv } = fakeKv(["fail", pointer(3)]);
    await expect(readHead(kv, 0)).rejects.toThrow("kv down");
    expect((await readHead(kv, 1)).pointer?.version).toBe(3);
  });
});

describe("late and failing reads", () => {
  it("a late, abandoned head read does not replace a newer head", async () => {
    let release: (v: Map<string, string | null>) => void = () => {};
    let calls = 0;
    const kv = {
      get(keys: string[]) {
        calls++;
        if (calls === 1) {
          return new Promise((resolve) => {
            release = resolve;
          });
        }
        return Promise.resolve(new Map(keys.map((k) => [k, k === POINTER_KEY ? encodePointer(pointer(6)) : null])));
      },
    } as unknown as KVNamespace;
    // The first read hangs (it would answer version 7); past LOAD_GIVE_UP_MS a new read answers 6 (a rollback).
    const stuck = readHead(kv, 0);
    expect((await readHead(kv, LOAD_GIVE_UP_MS + 1)).pointer?.version).toBe(6);
    release(new Map([[POINTER_KEY, encodePointer(pointer(7))]]));
    await stuck;
    expect((await readHead(kv, LOAD_GIVE_UP_MS + 2)).pointer?.version).toBe(6);
  });

  it("a failing KV read keeps the lists the isolate already holds, and says it failed", async () => {
    let failing = false;
    const value = JSON.stringify({ f: CODEC_FORMAT, e: [[5, 100, [["p1", 1, null]]]] });
    const kv = {
      get(keys: string[]) {
        if (failing) return Promise.reject(new Error("kv down"));
        return Promise.resolve(new Map(keys.map((k) => [k, k === userListKey("u:1") ? value : null])));
      },
    } as unknown as KVNamespace;
    const first = await readLists(kv, pointer(5), ["u:1"], [], 0);
    expect(first.users.get("u:1")?.items).toHaveLength(1);
    expect(first.failed).toBeUndefined();
    failing = true;
    const second = await readLists(kv, pointer(5), ["u:1"], ["seed"], 10);
    expect(second.failed).toBe(true);
    expect(second.users.get("u:1")?.items).toHaveLength(1);
    expect(second.neighbors.similar.size).toBe(0);
  });
});

describe("the shared keys' cache", () => {
  const withCatalog: Pointer = { ...pointer(3), catalog: { version: 3, shards: 1, items: 2 } };
  /** The bulk read's answer: catalogue shard 0 of version 3 holding `ids`. */
  const shard = (ids: string[]) => {
    const rows = ids.map((id) => ({
      id,
      title: id,
      category: null,
      brand: null,
      tags: [],
      price: 1,
      inStock: true,
      visible: true,
    }));
    const value = { f: CODEC_FORMAT, version: 3, generatedAt: 1, shard: 0, shards: 1, ...catalogShardContent(rows) };
    return new Map([[catalogShardKey(3, 0), JSON.stringify(value)]]);
  };
  /** A KV whose every bulk get waits until the test settles it (`reads[i]`: the i-th read). */
  function pendingKv() {
    const reads: Array<{ resolve: (v: Map<string, string>) => void; reject: (e: Error) => void }> = [];
    const kv = {
      get: () => new Promise((resolve, reject) => reads.push({ resolve, reject })),
    } as unknown as KVNamespace;
    return { kv, reads };
  }
  const itemsOf = (shared: Shared) => shared.products.map((p) => p.id);

  it("abandons a load that never settles, so a later request loads again; the abandoned one failing late keeps the new", async () => {
    const { kv, reads } = pendingKv();
    const stuck = readShared(kv, withCatalog, 0);
    // Within the give-up time, requests wait on the same load (their own deadlines end them).
    expect(readShared(kv, withCatalog, LOAD_GIVE_UP_MS)).toBe(stuck);
    expect(reads).toHaveLength(1);
    const fresh = readShared(kv, withCatalog, LOAD_GIVE_UP_MS + 1);
    expect(fresh).not.toBe(stuck);
    expect(reads).toHaveLength(2);
    reads[0]?.reject(new Error("kv down"));
    await expect(stuck).rejects.toThrow("kv down");
    expect(readShared(kv, withCatalog, LOAD_GIVE_UP_MS + 2)).toBe(fresh);
    expect(reads).toHaveLength(2);
    reads[1]?.resolve(shard(["a", "b"]));
    expect(itemsOf(await fresh)).toEqual(["a", "b"]);
    // Loaded: served synchronously from then on, without a read.
    const later = readShared(kv, withCatalog, 10 * 60_000);
    expect(later).not.toBeInstanceOf(Promise);
    expect(itemsOf(later as Shared)).toEqual(["a", "b"]);
    expect(reads).toHaveLength(2);
  });

  it("keeps the first load to arrive: an abandoned one settling after its replacement does not replace it", async () => {
    const { kv, reads } = pendingKv();
    const stuck = readShared(kv, withCatalog, 0);
    const fresh = readShared(kv, withCatalog, LOAD_GIVE_UP_MS + 1);
    reads[1]?.resolve(shard(["a", "b"]));
    const first = await fresh;
    // (The keys never change under their names; a different answer here only shows which load is kept.)
    reads[0]?.resolve(shard(["x"]));
    await stuck;
    expect(readShared(kv, withCatalog, LOAD_GIVE_UP_MS + 2)).toBe(first);
  });

  it("hands a load it starts to waitUntil, so it outlives the request that started it; joiners and hits do not", async () => {
    const { kv, reads } = pendingKv();
    const kept: Promise<unknown>[] = [];
    const waitUntil = (p: Promise<unknown>) => void kept.push(p);
    const load = readShared(kv, withCatalog, 0, waitUntil);
    void readShared(kv, withCatalog, 1, waitUntil);
    expect(kept).toHaveLength(1);
    reads[0]?.resolve(shard(["a"]));
    await kept[0];
    // Once the kept promise settles the catalogue is in the cache.
    const hit = readShared(kv, withCatalog, 2, waitUntil);
    expect(hit).toBe(await load);
    expect(kept).toHaveLength(1);
  });
});
