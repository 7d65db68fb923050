// Collection keeps its promise through a Redis outage, on the stack `npm run dev` runs: events acknowledged
// while Redis is down wait in each user's outbox and reach the warehouse stream once Redis is back — all of
// them, each exactly once, even when the client sends the same batch again.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LOCAL_KEYS } from "../../scripts/lib/local-keys.ts";
import { freePort } from "../../scripts/lib/ports.ts";
import { type RunningRedis, startRedis } from "../../scripts/lib/redis.ts";
import { OUTBOX_FLUSH_DELAY_MS } from "../../src/session/outbox.ts";
import type { SessionSnapshot } from "../../src/session/snapshot.ts";
import { EVENT_STREAM } from "../../src/session/stream.ts";
import { openRedis } from "../../src/stores/redis.ts";
import { type Dev, devState, startDev, stopDev, until, untilReady } from "./dev-process.ts";

const stateDir = mkdtempSync(join(tmpdir(), "lastmile-outage-"));
let dev: Dev;
let url: string;
let revived: RunningRedis | undefined;

beforeAll(async () => {
  const port = await freePort();
  url = `http://127.0.0.1:${port}`;
  dev = startDev(port, stateDir, { demo: false });
  await untilReady(dev);
});

afterAll(async () => {
  await stopDev(dev);
  await revived?.stop();
  rmSync(stateDir, { recursive: true, force: true });
});

const users = ["outage-u1", "outage-u2", "outage-u3", "outage-u4", "outage-u5"];
const batch = users.flatMap((userId, u) =>
  [0, 1, 2, 3].map((i) => ({
    type: "track",
    userId,
    event: "Product Viewed",
    messageId: `outage-${u}-${i}`,
    properties: { product_id: `p-${u}-${i}`, category: "Outage", price: 10 + i },
  })),
);

async function send(): Promise<{ accepted: number; duplicates: number }> {
  const res = await fetch(`${url}/v1/batch`, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      authorization: `Basic ${btoa(`${LOCAL_KEYS.writeKey}:`)}`,
    },
    body: JSON.stringify({ batch }),
  });
  expect(res.status).toBe(200);
  return (await res.json()) as { accepted: number; duplicates: number };
}

async function snapshot(id: string): Promise<SessionSnapshot> {
  const res = await fetch(`${url}/v1/admin/users/${id}`, {
    headers: { authorization: `Bearer ${LOCAL_KEYS.adminKey}` },
  });
  return (await res.json()) as SessionSnapshot;
}

/** How many times each of our messageIds is in the warehouse stream. */
async function streamCounts(): Promise<Map<string, number>> {
  const { ports } = devState(stateDir);
  const redis = openRedis({ url: `http://127.0.0.1:${ports.redisGateway}`, token: LOCAL_KEYS.redisToken });
  const entries = await redis.xrange(EVENT_STREAM, "-", "+");
  const counts = new Map<string, number>();
  for (const fields of Object.values(entries)) {
    const id = String((fields as Record<string, unknown>).id);
    if (id.startsWith("outage-")) counts.set(id, (counts.get(id) ?? 0) + 1);
  }
  return counts;
}

describe("a Redis outage during collection", () => {
  it("acknowledges while Redis is down, then delivers every event exactly once when it returns", {
    timeout: 240_000,
  }, async () => {
    const { pids, ports } = devState(stateDir);
    process.kill(pids.redis, "SIGKILL");

    const first = await send();
    expect(first).toMatchObject({ accepted: batch.length, duplicates: 0 });
    const waiting = await snapshot(users[0] ?? "");
    expect(waiting.outbox.pending).toBeGreaterThan(0);
    // Past the drain time with Redis still down: the first drains fail, and the events stay in the outboxes.
    await new Promise((r) => setTimeout(r, OUTBOX_FLUSH_DELAY_MS + 5_000));
    for (const userId of users) expect((await snapshot(userId)).outbox.pending).toBe(4);

    // Redis comes back on the same port with its append-only file; the objects' alarms retry with backoff.
    revived = await startRedis({ port: ports.redis, dataDir: join(stateDir, "redis") });
    const counts = await until(
      "every acknowledged event in the stream",
      async () => {
        const c = await streamCounts();
        return c.size === batch.length ? c : undefined;
      },
      90_000,
    );
    expect([...counts.values()].every((n) => n === 1)).toBe(true);

    // The client retries the same batch: no second effect anywhere.
    const again = await send();
    expect(again).toMatchObject({ accepted: 0, duplicates: batch.length });
    await new Promise((r) => setTimeout(r, 2000));
    const after = await streamCounts();
    expect(after.size).toBe(batch.length);
    expect([...after.values()].every((n) => n === 1)).toBe(true);
    for (const userId of users) {
      const s = await snapshot(userId);
      expect(s.outbox.pending).toBe(0);
      expect(s.counters.events).toBe(4);
    }
  });
});
