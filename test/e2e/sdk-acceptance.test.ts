// Acceptance: the real, unmodified Segment and RudderStack Node libraries pointed at the local stack (as
// `npm run dev` runs it). Their events must shape the user's session state (read back through the admin API)
// and reach the warehouse stream in Redis (read back with a separate Redis client).
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import RudderAnalytics from "@rudderstack/rudder-sdk-node";
import { Analytics as SegmentAnalytics } from "@segment/analytics-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LOCAL_KEYS } from "../../scripts/lib/local-keys.ts";
import { freePort } from "../../scripts/lib/ports.ts";
import { OUTBOX_FLUSH_DELAY_MS } from "../../src/session/outbox.ts";
import type { SessionSnapshot } from "../../src/session/snapshot.ts";
import { EVENT_STREAM } from "../../src/session/stream.ts";
import { openRedis } from "../../src/stores/redis.ts";
import { type Dev, devState, startDev, stopDev, until, untilReady } from "./dev-process.ts";

const stateDir = mkdtempSync(join(tmpdir(), "lastmile-sdk-"));
let dev: Dev;
let url: string;

beforeAll(async () => {
  const port = await freePort();
  url = `http://127.0.0.1:${port}`;
  dev = startDev(port, stateDir, { demo: false });
  await untilReady(dev);
});

afterAll(async () => {
  await stopDev(dev);
  rmSync(stateDir, { recursive: true, force: true });
});

async function snapshot(id: string): Promise<SessionSnapshot> {
  const res = await fetch(`${url}/v1/admin/users/${encodeURIComponent(id)}`, {
    headers: { authorization: `Bearer ${LOCAL_KEYS.adminKey}` },
  });
  expect(res.status).toBe(200);
  return (await res.json()) as SessionSnapshot;
}

function streamClient() {
  const { ports } = devState(stateDir);
  return openRedis({ url: `http://127.0.0.1:${ports.redisGateway}`, token: LOCAL_KEYS.redisToken });
}

/** messageIds in the warehouse stream (the stream entry's `id` field). */
async function streamMessageIds(): Promise<Set<string>> {
  const entries = await streamClient().xrange(EVENT_STREAM, "-", "+");
  return new Set(Object.values(entries).map((fields) => String((fields as Record<string, unknown>).id)));
}

describe("@segment/analytics-node, unmodified", () => {
  it("shapes the session: anonymous browsing, identify, cart and order", async () => {
    const errors: unknown[] = [];
    const analytics = new SegmentAnalytics({
      writeKey: LOCAL_KEYS.writeKey,
      host: url,
      flushInterval: 50,
      maxRetries: 1,
    });
    analytics.on("error", (e) => errors.push(e));
    const anonymousId = "seg-visitor-1";
    const userId = "seg-user-1";
    analytics.track({
      anonymousId,
      event: "Product Viewed",
      messageId: "seg-m1",
      properties: { product_id: "p-mug", category: "Mugs", brand: "Acme", price: 12.5 },
    });
    analytics.page({ anonymousId, name: "Teapot", messageId: "seg-m2", properties: { product_id: "p-teapot" } });
    analytics.identify({ anonymousId, userId, messageId: "seg-m3", traits: { email: "a@example.com" } });
    analytics.track({
      userId,
      anonymousId,
      event: "Product Added",
      messageId: "seg-m4",
      properties: { product_id: "p-teapot", category: "Teapots", brand: "Acme", price: 30 },
    });
    analytics.track({
      userId,
      event: "Order Completed",
      messageId: "seg-m5",
      properties: {
        order_id: "o-1",
        revenue: 42.5,
        products: [{ product_id: "p-mug", category: "Mugs", price: 12.5 }],
      },
    });
    await analytics.closeAndFlush({ timeout: 20_000 });
    expect(errors).toEqual([]);

    const user = await snapshot(userId);
    expect(user.exists).toBe(true);
    expect(user.anonymousIds).toContain(anonymousId);
    expect(user.viewed).toEqual(expect.arrayContaining(["p-mug", "p-teapot"]));
    expect(user.carted).toContain("p-teapot");
    expect(user.purchased).toContain("p-mug");
    expect(user.affinities.longTerm.map((a) => a.token)).toEqual(
      expect.arrayContaining(["category:mugs", "brand:acme"].map((t) => expect.stringMatching(new RegExp(t, "i")))),
    );

    const ids = await until(
      "Segment events in the warehouse stream",
      async () => {
        const seen = await streamMessageIds();
        return ["seg-m1", "seg-m2", "seg-m3", "seg-m4", "seg-m5"].every((m) => seen.has(m)) ? seen : undefined;
      },
      // Each object drains its outbox from its alarm OUTBOX_FLUSH_DELAY_MS (30 s) after the first pending write.
      OUTBOX_FLUSH_DELAY_MS + 30_000,
    );
    expect(ids.has("seg-m1")).toBe(true);
  });
});

describe("@rudderstack/rudder-sdk-node, unmodified (gzip on by default)", () => {
  it("shapes the session of the user it tracks", async () => {
    const client = new RudderAnalytics(LOCAL_KEYS.writeKey, { dataPlaneUrl: url, flushAt: 50, flushInterval: 100 });
    const userId = "rs-user-1";
    client.track({
      userId,
      event: "Products Searched",
      properties: { query: "Green Tea" },
    });
    client.track({
      userId,
      event: "Product Viewed",
      properties: { product_id: "p-green-tea", category: "Tea", brand: "Leafy", price: 8 },
    });
    client.track({
      userId,
      event: "Product Added to Wishlist",
      properties: { product_id: "p-kettle", category: "Kettles", price: 55 },
    });
    await client.flush();

    const user = await snapshot(userId);
    expect(user.exists).toBe(true);
    expect(user.searches).toContain("green tea");
    expect(user.viewed).toContain("p-green-tea");
    expect(user.wishlisted).toContain("p-kettle");
    expect(user.counters.events).toBe(3);
  });
});
