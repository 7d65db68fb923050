// Live trending as the ranking path reads it: the Lua script over the collection path's five-minute buckets, in a
// real Redis through the Upstash REST gateway and the real @upstash/redis client.
import { describe, expect, inject, it } from "vitest";
import { fetchTrending, TRENDING_TOP, TRENDING_WINDOW_BUCKETS } from "../../src/rank/trending.ts";
import { TREND_BUCKET_MS, TREND_PRODUCT_PREFIX, trendBucket } from "../../src/session/stream.ts";
import { openRedis } from "../../src/stores/redis.ts";

const stack = inject("stack");
const redis = () => openRedis({ url: stack.UPSTASH_REDIS_REST_URL, token: stack.UPSTASH_REDIS_REST_TOKEN });

describe("live trending", () => {
  it("sums the window's buckets, ranks best first with ties by id, and ignores older buckets", async () => {
    const r = redis();
    // A time of its own far in the future, so other tests' buckets cannot mix in.
    const now = Date.parse("2031-03-04T12:02:00Z") + Math.floor(Math.random() * 1e6) * TREND_BUCKET_MS;
    const b = trendBucket(now);
    const key = (bucket: number) => `${TREND_PRODUCT_PREFIX}${bucket}`;
    await r.zincrby(key(b), 3, "a");
    await r.zincrby(key(b), 1, "b");
    await r.zincrby(key(b - 1), 2, "b");
    await r.zincrby(key(b - (TRENDING_WINDOW_BUCKETS - 1)), 1, "c");
    await r.zincrby(key(b - (TRENDING_WINDOW_BUCKETS - 1)), 3, "d");
    // Just outside the window: must not count.
    await r.zincrby(key(b - TRENDING_WINDOW_BUCKETS), 100, "e");
    await r.zincrby(key(b - TRENDING_WINDOW_BUCKETS), 100, "a");
    // a = 3, b = 1 + 2 = 3, d = 3, c = 1; ties broken by id.
    expect(await fetchTrending(r, now)).toEqual([
      ["a", 3],
      ["b", 3],
      ["d", 3],
      ["c", 1],
    ]);
  });

  it("returns product ids that look like JSON exactly as counted (the client deserialises replies)", async () => {
    const r = redis();
    const now = Date.parse("2034-05-06T12:02:00Z") + Math.floor(Math.random() * 1e6) * TREND_BUCKET_MS;
    const ids = ['"sku-9"', "[1]", "1", '{"a":1}', "true", "null"];
    for (const [i, id] of ids.entries()) await r.zincrby(`${TREND_PRODUCT_PREFIX}${trendBucket(now)}`, i + 1, id);
    expect((await fetchTrending(r, now)).map(([id]) => id)).toEqual([...ids].reverse());
  });

  it("returns at most TRENDING_TOP products, and nothing for an empty window", async () => {
    const r = redis();
    const now = Date.parse("2032-01-01T00:00:00Z") + Math.floor(Math.random() * 1e6) * TREND_BUCKET_MS;
    expect(await fetchTrending(r, now)).toEqual([]);
    const bucket = `${TREND_PRODUCT_PREFIX}${trendBucket(now)}`;
    const members = Array.from({ length: TRENDING_TOP + 20 }, (_, i) => ({ score: i + 1, member: `p${i}` }));
    const [first, ...rest] = members;
    if (first) await r.zadd(bucket, first, ...rest);
    const top = await fetchTrending(r, now);
    expect(top).toHaveLength(TRENDING_TOP);
    expect(top[0]).toEqual([`p${TRENDING_TOP + 19}`, TRENDING_TOP + 20]);
    expect(top.at(-1)).toEqual(["p20", 21]);
  });
});
