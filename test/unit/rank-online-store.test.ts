// The online store's head cache under a read that never settles: a fault injected with a fake KV namespace (the
// real one cannot be made to hang); the real decoders read what it returns.
import { beforeEach, describe, expect, it } from "vitest";
import { CODEC_FORMAT, encodePointer, type Pointer } from "../../src/publish/codec.ts";
import { POINTER_KEY, userListKey } from "../../src/publish/keys.ts";
import {
  HEAD_LOAD_GIVE_UP_MS,
  POINTER_TTL_MS,
  readHead,
  readLists,
  resetOnlineStoreCaches,
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
    void readHead(kv, HEAD_LOAD_GIVE_UP_MS);
    expect(calls()).toBe(1);
    const head = await readHead(kv, HEAD_LOAD_GIVE_UP_MS + 1);
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
    // The first read hangs (it would answer version 7); past HEAD_LOAD_GIVE_UP_MS a new read answers 6 (a rollback).
    const stuck = readHead(kv, 0);
    expect((await readHead(kv, HEAD_LOAD_GIVE_UP_MS + 1)).pointer?.version).toBe(6);
    release(new Map([[POINTER_KEY, encodePointer(pointer(7))]]));
    await stuck;
    expect((await readHead(kv, HEAD_LOAD_GIVE_UP_MS + 2)).pointer?.version).toBe(6);
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
