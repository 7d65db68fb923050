// GET /v1/admin/trending: the live counters the session objects keep in Redis, read back over HTTP after real
// events went through collection, the objects and their outbox drain.
import { runDurableObjectAlarm } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { ADMIN_KEY, adminGet, collect, refused, uid, WRITE_KEY } from "./collect-helpers.ts";

interface Trending {
  window: { hours: number; buckets: number; from: string; to: string };
  products: Array<{ productId: string; score: number }>;
  categories: Array<{ category: string; score: number }>;
}

async function trending(query: string): Promise<Trending> {
  const res = await adminGet(`/v1/admin/trending${query}`);
  expect(res.status).toBe(200);
  expect(res.headers.get("cache-control")).toBe("no-store");
  return (await res.json()) as Trending;
}

describe("GET /v1/admin/trending", () => {
  it("sums the counters of the window: products and categories, best first", async () => {
    const [hot, warm, old] = [uid("hot"), uid("warm"), uid("old")];
    const category = uid("lamps");
    // A window of this test's own, hours back (the other tests' events fill the current hours' counters).
    const now = Date.now() - 18 * 3_600_000 - Math.floor(Math.random() * 3_600_000);
    const until = `&until=${new Date(now + 1000).toISOString()}`;
    const visitors = [uid("anon"), uid("anon"), uid("anon")];
    const view = (anonymousId: string, productId: string, at: number) => ({
      type: "track",
      event: "Product Viewed",
      anonymousId,
      messageId: uid("m"),
      timestamp: new Date(at).toISOString(),
      properties: { product_id: productId, category },
    });
    // hot: 3 visitors × 4 views and one add to cart (weights 1 and 3); warm: 2 views; old: 5 views two hours ago.
    const batch = [
      ...visitors.flatMap((v) => Array.from({ length: 4 }, (_, i) => view(v, hot, now - i * 1000))),
      { ...view(visitors[0] as string, hot, now), event: "Product Added" },
      view(visitors[1] as string, warm, now),
      view(visitors[2] as string, warm, now),
      ...Array.from({ length: 5 }, (_, i) => view(visitors[2] as string, old, now - 2 * 3_600_000 - i * 1000)),
    ];
    expect((await collect("/v1/batch", { writeKey: WRITE_KEY, batch })).accepted).toBe(batch.length);
    // The objects' alarms drain their outboxes into the stream and the counters.
    for (const v of visitors) await runDurableObjectAlarm(env.SESSION_STATE.getByName(`a:${v}`));

    const lastHour = await trending(`?top=100${until}`);
    const mine = (t: Trending) => t.products.filter((p) => [hot, warm, old].includes(p.productId));
    expect(mine(lastHour)).toEqual([
      { productId: hot, score: 15 },
      { productId: warm, score: 2 },
    ]);
    expect(lastHour.categories.find((c) => c.category === category)?.score).toBe(17);
    expect(lastHour.window).toMatchObject({ hours: 1, buckets: 12, to: new Date(now + 1000).toISOString() });
    expect(Date.parse(lastHour.window.to) - Date.parse(lastHour.window.from)).toBeLessThanOrEqual(3_600_000);

    const threeHours = await trending(`?hours=3&top=100${until}`);
    expect(mine(threeHours)).toEqual([
      { productId: hot, score: 15 },
      { productId: old, score: 5 },
      { productId: warm, score: 2 },
    ]);
    expect(threeHours.categories.find((c) => c.category === category)?.score).toBe(22);
    expect(threeHours.window.buckets).toBe(36);
    // Best first, across everyone's counters.
    const scores = threeHours.products.map((p) => p.score);
    expect(scores).toEqual([...scores].sort((a, b) => b - a));
  });

  it("refuses bad parameters, a missing admin key, and answers 503 without Redis", async () => {
    const longAgo = new Date(Date.now() - 25 * 3_600_000).toISOString();
    for (const query of ["?hours=0", "?hours=25", "?hours=1.5", "?top=0", "?top=101", "?top=x", "?until=yesterday"]) {
      await refused(adminGet(`/v1/admin/trending${query}`), 400, "bad_request");
    }
    await refused(adminGet(`/v1/admin/trending?until=${longAgo}`), 400, "bad_request");
    expect((await trending("?top=1")).products.length).toBeLessThanOrEqual(1);
    // A time ahead is now.
    const ahead = await trending(`?until=${new Date(Date.now() + 3_600_000).toISOString()}`);
    expect(Date.parse(ahead.window.to)).toBeLessThanOrEqual(Date.now());
    expect((await adminGet("/v1/admin/trending", null)).status).toBe(401);
    expect((await adminGet("/v1/admin/trending", "local-write-key")).status).toBe(401);
    const noRedis = { ...env, UPSTASH_REDIS_REST_URL: "" };
    await refused(adminGet("/v1/admin/trending", ADMIN_KEY, noRedis), 503, "dependency_unavailable");
  });
});
