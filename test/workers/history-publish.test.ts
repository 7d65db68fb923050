// History check through to the edge with KV write rejections: events of many users go sent → session objects →
// stream → Postgres (checked: none lost or duplicated), the recommenders run on them, and the publish to Workers KV
// meets 429 "too many requests" answers for a fraction of its key writes. It must retry and resume until every
// list is served: each user's and product's KV key, read back, holds what Postgres computed.
import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { runRefresh } from "../../src/batch/refresh.ts";
import { decodeNeighbors, decodePointer, decodeUserList } from "../../src/publish/codec.ts";
import type { PublishCoordinator } from "../../src/publish/coordinator.ts";
import { openDb } from "../../src/publish/db.ts";
import { fnv1a, itemListKey, type NeighborKeyKind, POINTER_KEY, userListKey } from "../../src/publish/keys.ts";
import { ITEM_LIST_MAX, USER_LIST_MAX } from "../../src/publish/sources.ts";
import { loaderRedis } from "./batch-helpers.ts";
import {
  drainAndCheck,
  expectClean,
  flushSessions,
  loaderNames,
  noSleep,
  runsEndedAfterEach,
  sendAll,
  userKeys,
} from "./history-helpers.ts";
import { dbSettings, drain } from "./publish-helpers.ts";

const begin = runsEndedAfterEach();

const PRODUCTS = 30;

/**
 * A KV binding whose puts are refused with a 429 the first `times` times for one key in `every` (by a hash of the
 * key, so the same keys are refused on every run); everything else goes to the real binding. `refused` counts.
 */
function rejectingKv(every: number, times: number) {
  const attempts = new Map<string, number>();
  const counter = { refused: 0 };
  const wrap = (kv: KVNamespace): KVNamespace =>
    new Proxy(kv, {
      get(target, prop, receiver) {
        const value = Reflect.get(target, prop, receiver) as unknown;
        if (typeof value !== "function") return value;
        if (prop !== "put") return (value as (...a: unknown[]) => unknown).bind(target);
        return async (key: string, ...rest: unknown[]) => {
          const n = (attempts.get(key) ?? 0) + 1;
          attempts.set(key, n);
          if (fnv1a(key) % every === 0 && n <= times) {
            counter.refused++;
            throw new Error(`KV PUT failed: 429 Too Many Requests (${key})`);
          }
          return (value as (...a: unknown[]) => Promise<unknown>).apply(target, [key, ...rest]);
        };
      },
    });
  return { wrap, counter };
}

describe("history: KV write rejections (429) during the publish", () => {
  it("retries and resumes until every computed list is served from KV", { timeout: 120_000 }, async () => {
    const r = await begin("kv", { users: 40, events: 450, seed: 606, products: PRODUCTS });
    await r.q(
      `insert into catalog (id, title, category, price)
       select $1 || '-p' || g, 'item ' || g, 'cat' || (g % 5), 1 + g from generate_series(0, $2 - 1) g`,
      [r.prefix, PRODUCTS],
    );
    await sendAll(r, r.batches);
    await flushSessions(userKeys(r));

    const coordinator = env.PUBLISH_COORDINATOR.getByName(`history-${r.prefix}`);
    const kv = rejectingKv(4, 2);
    await runInDurableObject(coordinator, (instance: PublishCoordinator) => {
      instance.wrapKv = kv.wrap;
    });
    const { db, end } = openDb(dbSettings(), r.schema);
    try {
      const refresh = await runRefresh(
        { db, redis: loaderRedis(), coordinator },
        {
          trigger: "cron",
          schema: r.schema,
          loader: { ...loaderNames(r), sleep: noSleep },
          // Small alarms: the publish spans many of them, and many meet a refusal.
          publish: { settleMs: 0, opsPerAlarm: 25 },
        },
      );
      expect(refresh.status, JSON.stringify(refresh)).toBe("ok");
      expect(refresh.publish).toMatchObject({ status: "started" });
    } finally {
      await end();
    }
    await drain(coordinator, 90_000);
    expect(kv.counter.refused).toBeGreaterThan(5);

    // The publish finished and its pointer is served …
    const status = await coordinator.status();
    expect(status.job).toBeNull();
    const pointer = decodePointer(await env.ONLINE_STORE.get(POINTER_KEY));
    expect(pointer?.version).toBe(status.lastVersion);
    const version = pointer?.version ?? -1;
    const [publishRun] = await r.q<{ status: string }>("select status from batch_runs where kind = 'publish'");
    expect(publishRun?.status).toBe("ok");

    // … and every user's and product's list reads back from KV as Postgres computed it.
    const users = await r.q<{ user_key: string; product_ids: string[] }>(
      "select user_key, product_ids from user_candidates order by user_key",
    );
    expect(users.length).toBeGreaterThan(10);
    for (const u of users) {
      const list = decodeUserList(await env.ONLINE_STORE.get(userListKey(u.user_key)), version);
      expect(
        list?.items.map((i) => i.productId),
        u.user_key,
      ).toEqual(u.product_ids.slice(0, USER_LIST_MAX));
    }
    const neighbors = await r.q<{ kind: string; product_id: string; ids: string[] }>(
      `select kind, product_id, array_agg(neighbor_id order by rank) as ids from item_neighbors
       group by kind, product_id order by kind, product_id`,
    );
    expect(neighbors.length).toBeGreaterThan(10);
    for (const n of neighbors) {
      const key = itemListKey(n.kind as NeighborKeyKind, n.product_id);
      const list = decodeNeighbors(await env.ONLINE_STORE.get(key), version);
      expect(
        list?.items.map((i) => i.productId),
        key,
      ).toEqual(n.ids.slice(0, ITEM_LIST_MAX));
    }

    expectClean(await drainAndCheck(r));
  });
});
