// The publisher end to end in workerd: Postgres (real, a schema per test) → PublishCoordinator alarms → local KV.
// Asserts keys and values, the pointer swap, only-changed-keys, tombstones, rollback, the catalogue push and the
// per-invocation KV operation budget (counted by the wrapper of publish-helpers.ts, the only fake).
import { runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it } from "vitest";
import { type RefreshReport, runRefresh } from "../../src/batch/refresh.ts";
import { PUBLISH_RUN_LEASE, startRun } from "../../src/batch/runs.ts";
import { ERASURE_LOCK, eraseWarehouse, subjectKeys } from "../../src/privacy/warehouse.ts";
import {
  catalogItem,
  decodeCatalogShard,
  decodeNeighbors,
  decodePointer,
  decodePopular,
  decodeUserList,
  HISTORY_DEPTH,
  listsVersion,
  type Pointer,
} from "../../src/publish/codec.ts";
import type { PublishCoordinator, PushResult } from "../../src/publish/coordinator.ts";
import { openDb } from "../../src/publish/db.ts";
import { catalogShardKey, itemListKey, POINTER_KEY, popularListKey, userListKey } from "../../src/publish/keys.ts";
import { KV_MIN_WRITE_INTERVAL_MS, KV_OPS_PER_INVOCATION } from "../../src/publish/kv-budget.ts";
import { ERASURE_SWEEP_PAGE } from "../../src/publish/sources.ts";
import { openClient } from "../../src/stores/db.ts";
import {
  coordinator,
  createSchema,
  dbSettings,
  drain,
  dropSchema,
  modelVersion,
  type OpLog,
  puts,
  type Query,
} from "./publish-helpers.ts";

const kv = () => env.ONLINE_STORE;
const schemas: string[] = [];
afterEach(async () => {
  for (const s of schemas.splice(0)) await dropSchema(s);
});

async function setup(label: string) {
  const { schema, q } = await createSchema(label);
  schemas.push(schema);
  const log: OpLog = [];
  const stub = await coordinator(log);
  const publish = async (options: { opsPerAlarm?: number } = {}) => {
    log.length = 0;
    const started = await stub.start({ trigger: "admin", schema, settleMs: 0, ...options });
    expect(started.status).toBe("started");
    await drain(stub);
    return started;
  };
  return { schema, q, log, stub, publish, tag: crypto.randomUUID().slice(0, 8) };
}

/** Versions 1 and 2 published; alice's list differs between them (her first score: 0.9, then 1.9). */
async function twoVersions() {
  const t = await setup("pub");
  await seed(t.q, t.tag);
  await t.publish();
  await t.q("update user_candidates set scores[1] = scores[1] + 1 where user_key = $1", [`u:${t.tag}-alice`]);
  await t.publish();
  return t;
}

/**
 * From now on every `ok` update of a batch_runs row in `schema` fails: Postgres refuses a run's record. Returns the
 * switch that makes it accept them again.
 */
async function refuseOkRecords(q: Query, schema: string): Promise<() => Promise<void>> {
  await q(`create table "${schema}".refuse_ok (on_ boolean)`);
  await q(`insert into "${schema}".refuse_ok values (true)`);
  await q(`create function "${schema}".refuse_ok() returns trigger language plpgsql as $$
    begin
      if new.status = 'ok' and (select on_ from "${schema}".refuse_ok) then raise exception 'refused'; end if;
      return new;
    end $$`);
  await q(
    `create trigger refuse_ok before update on "${schema}".batch_runs for each row execute function "${schema}".refuse_ok()`,
  );
  return async () => {
    await q(`update "${schema}".refuse_ok set on_ = false`);
  };
}

async function seed(q: Query, tag: string) {
  const users = await modelVersion(q, "user_candidates");
  const similar = await modelVersion(q, "co_visitation");
  const popular = await modelVersion(q, "popular");
  await q(
    `insert into catalog (id, title, category, price, in_stock, visible) values
       ($1, 'Mug', 'kitchen', 4.5, true, true), ($2, 'Lamp', 'home', 20, false, true), ($3, 'Bag', null, null, true, false)`,
    [`${tag}-p1`, `${tag}-p2`, `${tag}-p3`],
  );
  await q(
    `insert into user_candidates (user_key, product_ids, scores, reasons, model_version) values
       ($1, array[$3::text, $4::text], '{0.9,0.5}', array['bought_together:x', null], $5), ($2, array[$4::text], '{0.7}', '{popular}', $5)`,
    [`u:${tag}-alice`, `u:${tag}-bob`, `${tag}-p1`, `${tag}-p2`, users],
  );
  await q(
    `insert into item_neighbors (kind, product_id, neighbor_id, score, rank, model_version) values
       ('similar', $1, $2, 0.8, 1, $4), ('similar', $1, $3, 0.4, 2, $4), ('bought_together', $2, $1, 0.3, 1, $4)`,
    [`${tag}-p1`, `${tag}-p2`, `${tag}-p3`, similar],
  );
  await q(
    `insert into popular_items (list, segment, product_id, score, rank, model_version) values
       ('popular', 'global', $1, 10, 1, $3), ('popular', 'category:kitchen', $1, 10, 1, $3),
       ('trending', 'global', $2, 3, 1, $3)`,
    [`${tag}-p1`, `${tag}-p2`, popular],
  );
  return { models: { users, similar, popular } };
}

describe("publish", () => {
  it("writes the pointer, the shared keys and one key per user and item list", async () => {
    const { q, log, stub, publish, tag } = await setup("pub");
    const { models } = await seed(q, tag);
    const started = await publish();
    if (started.status !== "started") throw new Error("not started");
    expect(started.version).toBe(1);

    const pointer = decodePointer(await kv().get(POINTER_KEY));
    expect(pointer?.version).toBe(1);
    expect(pointer?.modelVersion).toBe(Math.max(models.users, models.similar, models.popular));
    expect(pointer?.catalog).toEqual({ version: 1, shards: 1, items: 3 });
    expect(pointer?.popular).toEqual({ popular: 1, trending: 1 });

    const alice = decodeUserList(await kv().get(userListKey(`u:${tag}-alice`)), 1);
    expect(alice?.version).toBe(1);
    expect(alice?.generatedAt).toBe(pointer?.generatedAt);
    expect(alice?.items).toEqual([
      { productId: `${tag}-p1`, score: 0.9, reason: "bought_together:x" },
      { productId: `${tag}-p2`, score: 0.5, reason: null },
    ]);
    const similar = decodeNeighbors(await kv().get(itemListKey("similar", `${tag}-p1`)), 1);
    expect(similar?.items).toEqual([
      { productId: `${tag}-p2`, score: 0.8 },
      { productId: `${tag}-p3`, score: 0.4 },
    ]);
    expect(decodeNeighbors(await kv().get(itemListKey("bought_together", `${tag}-p2`)), 1)?.items).toHaveLength(1);

    const shard = decodeCatalogShard(await kv().get(catalogShardKey(1, 0)));
    expect(shard?.version).toBe(1);
    expect(shard && catalogItem(shard, `${tag}-p1`)).toEqual({
      category: "kitchen",
      price: 4.5,
      inStock: true,
      visible: true,
      title: "Mug",
      brand: null,
      tags: [],
    });
    expect(shard && catalogItem(shard, `${tag}-p2`)?.inStock).toBe(false);
    expect(shard && catalogItem(shard, `${tag}-p3`)).toEqual({
      category: null,
      price: null,
      inStock: true,
      visible: false,
      title: "Bag",
      brand: null,
      tags: [],
    });
    const popular = decodePopular(await kv().get(popularListKey(1, "popular")));
    expect(popular?.segments["category:kitchen"]).toEqual([[`${tag}-p1`, 10]]);
    expect(decodePopular(await kv().get(popularListKey(1, "trending")))?.segments.global).toEqual([[`${tag}-p2`, 3]]);

    // 2 users + 2 item lists + 1 catalog shard + 2 popular lists + the pointer, the pointer last.
    const written = puts(log);
    expect(written).toHaveLength(8);
    expect(written.at(-1)).toBe(POINTER_KEY);
    const status = await stub.status();
    expect(status.versions[0]?.version).toBe(1);
    expect(status.job).toBeNull();
    const [run] = await q<{ status: string; stats: { keysWritten: number; lagMs: number } }>(
      "select status, stats from batch_runs where kind = 'publish'",
    );
    expect(run?.status).toBe("ok");
    expect(run?.stats.keysWritten).toBe(8);
    const published = await q<{ status: string }>("select distinct status from model_versions");
    expect(published).toEqual([{ status: "published" }]);
  });

  it("re-publishes nothing when nothing changed, and only the changed user's key when one list changed", async () => {
    const { q, log, stub, publish, tag } = await setup("pub");
    await seed(q, tag);
    await publish();

    await publish();
    expect(log.flat().filter((o) => o.op === "put")).toEqual([]);
    expect(decodePointer(await kv().get(POINTER_KEY))?.version).toBe(1);
    expect((await stub.status()).lastVersion).toBe(1);

    const aliceBefore = await kv().get(userListKey(`u:${tag}-bob`));
    await q("update user_candidates set scores[1] = 0.95 where user_key = $1", [`u:${tag}-alice`]);
    await publish();
    expect(puts(log)).toEqual([userListKey(`u:${tag}-alice`), POINTER_KEY]);
    expect(decodePointer(await kv().get(POINTER_KEY))?.version).toBe(2);
    // Bob's key was not rewritten, and a reader of version 2 takes his version-1 entry.
    expect(await kv().get(userListKey(`u:${tag}-bob`))).toBe(aliceBefore);
    const alice = await kv().get(userListKey(`u:${tag}-alice`));
    expect(decodeUserList(alice, 2)?.items[0]?.score).toBeCloseTo(0.95, 5);
    // The previous entry is still there for readers (and rollbacks) of version 1.
    expect(decodeUserList(alice, 1)?.items[0]?.score).toBeCloseTo(0.9, 5);
  });

  it("writes a tombstone when a user's list disappears", async () => {
    const { q, publish, tag } = await setup("pub");
    await seed(q, tag);
    await publish();
    await q("delete from user_candidates where user_key = $1", [`u:${tag}-bob`]);
    await publish();
    const bob = await kv().get(userListKey(`u:${tag}-bob`));
    expect(decodeUserList(bob, 2)).toBeNull();
    expect(decodeUserList(bob, 1)?.items).toHaveLength(1);
  });

  it("ships a next-items list as i:next:<productId>, and a tombstone when it disappears", async () => {
    const { q, publish, log, tag } = await setup("pub");
    const { models } = await seed(q, tag);
    await q(
      `insert into item_neighbors (kind, product_id, neighbor_id, score, rank, support, model_version) values
         ('next', $1, $2, 1.5, 1, 2, $4), ('next', $1, $3, 0.5, 2, 1, $4)`,
      [`${tag}-p1`, `${tag}-p2`, `${tag}-p3`, models.similar],
    );
    await publish();
    const next = decodeNeighbors(await kv().get(itemListKey("next", `${tag}-p1`)), 1);
    expect(next?.items).toEqual([
      { productId: `${tag}-p2`, score: 1.5 },
      { productId: `${tag}-p3`, score: 0.5 },
    ]);
    // The pointer carries the measure of the catalogue's order: both next pairs lie within 12 places of p1.
    const measured = { pairs: 2, near: 2, products: 3, span: 12 };
    expect(decodePointer(await kv().get(POINTER_KEY))?.catalogOrder).toEqual(measured);
    await q("delete from item_neighbors where kind = 'next'");
    await publish();
    expect(puts(log)).toEqual([itemListKey("next", `${tag}-p1`), POINTER_KEY]);
    expect(decodePointer(await kv().get(POINTER_KEY))?.catalogOrder).toEqual({ ...measured, pairs: 0, near: 0 });
    const gone = await kv().get(itemListKey("next", `${tag}-p1`));
    expect(decodeNeighbors(gone, 2)).toBeNull();
    expect(decodeNeighbors(gone, 1)?.items).toHaveLength(2);
  });

  it("rolls back with one pointer flip, and refuses unknown or too old versions", async () => {
    const { q, log, stub, publish, tag } = await twoVersions();

    log.length = 0;
    const back = await stub.rollback(1);
    expect(back.ok).toBe(true);
    expect(puts(log)).toEqual([POINTER_KEY]);
    const pointer = decodePointer(await kv().get(POINTER_KEY));
    expect(pointer?.version).toBe(1);
    // Readers of version 1 again get the version-1 list.
    const alice = decodeUserList(await kv().get(userListKey(`u:${tag}-alice`)), pointer?.version ?? 0);
    expect(alice?.items[0]?.score).toBeCloseTo(0.9, 5);

    const unknown = await stub.rollback(99);
    expect(unknown).toMatchObject({ ok: false, code: "version_not_found" });

    // HISTORY_DEPTH more versions that rewrite alice's key push version 1 out of her history.
    for (let i = 0; i < HISTORY_DEPTH; i++) {
      await q("update user_candidates set scores[1] = scores[1] + 1 where user_key = $1", [`u:${tag}-alice`]);
      await publish();
    }
    const old = await stub.rollback(1);
    expect(old).toMatchObject({ ok: false, code: "version_not_rollbackable" });
    const status = await stub.status();
    expect(status.rollbackTargets).toContain(status.lastVersion - 1);
    expect((await stub.rollback(status.lastVersion - 1)).ok).toBe(true);
  });

  it("writes the pointer at least 1 s after the last write, counting from the write, not from the queries before it", async () => {
    const { schema, q, stub, publish, tag } = await setup("pub");
    await seed(q, tag);
    await publish(); // v1
    await q("update catalog set in_stock = false, updated_at = now() where id = $1", [`${tag}-p1`]);
    const pointerWrites: number[] = [];
    let held = false;
    await interceptKv(stub, {
      put: async (key, call) => {
        if (key === catalogShardKey(2, 0) && !held) {
          held = true;
          // The statements between v2's shared keys and its pointer are slow (a large item_neighbors): a lock on
          // the table, held 1.5 s, makes them so.
          const client = openClient(dbSettings());
          await client.connect();
          await client.query("begin");
          await client.query(`lock table "${schema}".item_neighbors in access exclusive mode`);
          setTimeout(() => void client.query("commit").then(() => client.end()), 1500);
        }
        if (key === POINTER_KEY) pointerWrites.push(Date.now());
        return call();
      },
    });
    await publish(); // v2 ships the catalogue change
    expect((await stub.rollback(1)).ok).toBe(true); // the operator takes it back at once
    const [v2, rollback] = pointerWrites;
    expect({ held, writes: pointerWrites.length }).toEqual({ held: true, writes: 2 });
    expect((rollback as number) - (v2 as number)).toBeGreaterThanOrEqual(KV_MIN_WRITE_INTERVAL_MS);
  });

  it("deletes the shared keys no servable version names, once their grace period is over", async () => {
    const { q, stub, publish, tag } = await setup("pub");
    await seed(q, tag);
    await publish();
    const v1Catalog = catalogShardKey(1, 0);
    expect(await kv().get(v1Catalog)).not.toBeNull();
    // Each publish changes the catalogue (a new catalogue key) and alice's list (a writer of stable keys).
    for (let i = 1; i <= HISTORY_DEPTH; i++) {
      await q("update catalog set price = price + 1, updated_at = now() where id = $1", [`${tag}-p1`]);
      await q("update user_candidates set scores[1] = scores[1] + 1 where user_key = $1", [`u:${tag}-alice`]);
      await publish();
    }
    const status = await stub.status();
    expect(status.lastVersion).toBe(HISTORY_DEPTH + 1);
    // Version 1 is no rollback target any more; its catalogue key is named by nobody, so it is queued …
    expect(status.rollbackTargets).not.toContain(1);
    expect(status.garbage.map((g) => g.key)).toEqual([v1Catalog]);
    // … but kept during the grace period: an alarm now deletes nothing.
    await runDurableObjectAlarm(stub);
    expect(await kv().get(v1Catalog)).not.toBeNull();
    // Past it (grace 0 for the test), the sweep deletes exactly that key; the keys of every target stay.
    await runInDurableObject(stub, (instance: PublishCoordinator) => {
      instance.gcGraceMs = 0;
    });
    await q("update catalog set price = price + 1, updated_at = now() where id = $1", [`${tag}-p1`]);
    await q("update user_candidates set scores[1] = scores[1] + 1 where user_key = $1", [`u:${tag}-alice`]);
    await publish();
    await runDurableObjectAlarm(stub);
    const after = await stub.status();
    expect(await kv().get(v1Catalog)).toBeNull();
    expect(await kv().get(catalogShardKey(2, 0))).toBeNull();
    expect(after.garbage).toEqual([]);
    for (const v of after.versions.filter((x) => after.rollbackTargets.includes(x.version))) {
      const c = v.pointer?.catalog;
      expect(c && (await kv().get(catalogShardKey(c.version, 0)))).not.toBeNull();
    }
    // Popular lists never changed: the key of version 1 is still the one every pointer names.
    expect(decodePointer(await kv().get(POINTER_KEY))?.popular.popular).toBe(1);
    expect(await kv().get(popularListKey(1, "popular"))).not.toBeNull();
  });

  it("re-arms the sweep of queued shared keys when a publish that writes no pointer ends", async () => {
    const { q, stub, publish, tag } = await setup("pub");
    await seed(q, tag);
    await runInDurableObject(stub, (instance: PublishCoordinator) => {
      instance.gcGraceMs = 60_000;
    });
    await publish();
    for (let i = 1; i <= HISTORY_DEPTH; i++) {
      await q("update catalog set price = price + 1, updated_at = now() where id = $1", [`${tag}-p1`]);
      await q("update user_candidates set scores[1] = scores[1] + 1 where user_key = $1", [`u:${tag}-alice`]);
      await publish();
    }
    // Version 1 left the rollback targets: its catalogue key is queued, and an alarm is set for it.
    expect((await stub.status()).garbage.map((g) => g.key)).toEqual([catalogShardKey(1, 0)]);
    const alarm = () => runInDurableObject(stub, (_o: PublishCoordinator, state) => state.storage.getAlarm());
    expect(await alarm()).not.toBeNull();
    // A publish with nothing changed: its start replaced that alarm; when it ends, the sweep has one again.
    await publish();
    expect({ garbage: (await stub.status()).garbage.length, armed: (await alarm()) !== null }).toEqual({
      garbage: 1,
      armed: true,
    });
  });

  it("pushes a stock change at once as a new catalogue key, and nothing when the catalogue is unchanged", async () => {
    const { schema, q, log, stub, publish, tag } = await setup("pub");
    await seed(q, tag);
    await publish();
    await q("update catalog set in_stock = false, updated_at = now() where id = $1", [`${tag}-p1`]);
    log.length = 0;
    const pushed = await stub.pushCatalog({ schema });
    expect(pushed).toMatchObject({ status: "published", version: 2, keysWritten: 2 });
    expect(puts(log)).toEqual([catalogShardKey(2, 0), POINTER_KEY]);
    const pointer = decodePointer(await kv().get(POINTER_KEY));
    expect(pointer?.version).toBe(2);
    expect(pointer?.catalog?.version).toBe(2);
    // Everything else is still version 1's.
    expect(pointer?.popular).toEqual({ popular: 1, trending: 1 });
    const shard = decodeCatalogShard(await kv().get(catalogShardKey(2, 0)));
    expect(shard && catalogItem(shard, `${tag}-p1`)?.inStock).toBe(false);

    log.length = 0;
    expect(await stub.pushCatalog({ schema })).toMatchObject({ status: "unchanged", version: 2 });
    expect(puts(log)).toEqual([]);
    // The next publish finds the catalogue already shipped.
    await publish();
    expect(puts(log)).toEqual([]);
  });

  it("records a catalogue push that fails as failed, not as running", async () => {
    const { schema, q, stub, publish, tag } = await setup("pub");
    await seed(q, tag);
    await publish();
    await q("update catalog set in_stock = false, updated_at = now() where id = $1", [`${tag}-p1`]);
    await runInDurableObject(stub, (instance: PublishCoordinator) => {
      instance.wrapKv = (raw) =>
        new Proxy(raw, {
          get(target, prop, receiver) {
            if (prop === "put") return () => Promise.reject(new Error("injected: KV unavailable"));
            const value = Reflect.get(target, prop, receiver) as unknown;
            return typeof value === "function" ? (value as (...a: unknown[]) => unknown).bind(target) : value;
          },
        });
    });
    let failure: unknown = null;
    try {
      await stub.pushCatalog({ schema });
    } catch (error) {
      failure = error;
    }
    expect(String(failure)).toMatch(/KV unavailable/);
    const runs = await q<{ status: string; error: string | null }>(
      "select status, error from batch_runs where kind = 'publish' order by id desc limit 1",
    );
    expect(runs).toHaveLength(1);
    expect(runs[0]?.status).toBe("failed");
    expect(runs[0]?.error).toMatch(/KV unavailable/);
  });
});

/** The pointer served, and whether the catalogue it names has the seeded product p1 in stock. */
async function p1InStock(tag: string) {
  const pointer = decodePointer(await kv().get(POINTER_KEY));
  const shard = decodeCatalogShard(await kv().get(catalogShardKey(pointer?.catalog?.version ?? 0, 0)));
  return { pointer, inStock: shard ? catalogItem(shard, `${tag}-p1`)?.inStock : undefined };
}

describe("shared keys against what the pointer serves", () => {
  it("after a rollback, the rollback holds while nothing changes; a publish that writes a pointer serves the newest catalogue", async () => {
    const { q, stub, publish, tag } = await setup("pub");
    await seed(q, tag);
    await publish();
    await q("update catalog set in_stock = false, updated_at = now() where id = $1", [`${tag}-p1`]);
    await q("update user_candidates set scores[1] = scores[1] + 1 where user_key = $1", [`u:${tag}-alice`]);
    await publish();
    expect((await p1InStock(tag)).inStock).toBe(false);
    expect((await stub.rollback(1)).ok).toBe(true);
    expect(await p1InStock(tag)).toMatchObject({ pointer: { version: 1 }, inStock: true });

    // Nothing changed since: the publish writes nothing, and readers stay on version 1.
    await publish();
    expect(await p1InStock(tag)).toMatchObject({ pointer: { version: 1 }, inStock: true });

    // A list changes: the new version names the catalogue as it is now, not version 1's.
    await q("update user_candidates set scores[1] = scores[1] + 1 where user_key = $1", [`u:${tag}-bob`]);
    await publish();
    const after = await p1InStock(tag);
    expect(after.pointer?.version).toBe(3);
    expect(after.inStock).toBe(false);
  });

  it("a catalogue push after a rollback keeps serving the rollback target's lists", async () => {
    const { schema, q, stub, publish, tag } = await twoVersions();
    expect((await stub.rollback(1)).ok).toBe(true);
    await q("update catalog set in_stock = false, updated_at = now() where id = $1", [`${tag}-p1`]);
    expect(await stub.pushCatalog({ schema })).toMatchObject({ status: "published", version: 3 });
    const pointer = decodePointer(await kv().get(POINTER_KEY));
    expect(pointer).toMatchObject({ version: 3, lists: 1, catalog: { version: 3 } });
    // Readers take alice's entry at the lists' version: version 1's score, not the rolled-back version 2's.
    const alice = decodeUserList(await kv().get(userListKey(`u:${tag}-alice`)), listsVersion(pointer as Pointer));
    expect(alice?.items[0]?.score).toBeCloseTo(0.9, 5);
    // A publish after that serves its own lists again.
    await q("update user_candidates set scores[1] = scores[1] + 1 where user_key = $1", [`u:${tag}-bob`]);
    await publish();
    const next = decodePointer(await kv().get(POINTER_KEY));
    expect(next?.version).toBe(4);
    expect(listsVersion(next as Pointer)).toBe(4);
  });

  it("a catalogue push after a rollback ships the catalogue as it is, not `unchanged`", async () => {
    const { schema, q, stub, publish, tag } = await setup("pub");
    await seed(q, tag);
    await publish(); // v1: p1 in stock
    await q("update catalog set in_stock = false, updated_at = now() where id = $1", [`${tag}-p1`]);
    await q("update user_candidates set scores[1] = scores[1] + 1 where user_key = $1", [`u:${tag}-alice`]);
    await publish(); // v2: p1 out of stock
    expect((await stub.rollback(1)).ok).toBe(true);
    expect((await p1InStock(tag)).inStock).toBe(true);
    // The last build (version 2's) is the catalogue as it is, but the served pointer names version 1's.
    const pushed = await stub.pushCatalog({ schema });
    expect({ status: pushed.status, inStock: (await p1InStock(tag)).inStock }).toEqual({
      status: "published",
      inStock: false,
    });
  });

  it("a catalogue push after a rollback is a rollback target only while its lists' entries are in the keys", async () => {
    const { schema, q, stub, publish, tag } = await twoVersions();
    const alice = `u:${tag}-alice`;
    const bump = () => q("update user_candidates set scores[1] = scores[1] + 1 where user_key = $1", [alice]);
    expect((await stub.rollback(1)).ok).toBe(true);
    await q("update catalog set in_stock = false, updated_at = now() where id = $1", [`${tag}-p1`]);
    expect(await stub.pushCatalog({ schema })).toMatchObject({ status: "published", version: 3 }); // lists: 1
    await bump();
    await publish(); // v4
    await bump();
    await publish(); // v5: alice's key holds entries 5, 4 and 2, none for version 3's lists (1)
    const status = await stub.status();
    expect({ lastVersion: status.lastVersion, targets: status.rollbackTargets }).toEqual({
      lastVersion: 5,
      targets: [5, 4, 2],
    });
    expect(await stub.rollback(3)).toMatchObject({ ok: false, code: "version_not_rollbackable" });
    const back = await stub.rollback(2);
    if (!back.ok) throw new Error(back.message);
    const list = decodeUserList(await kv().get(userListKey(alice)), listsVersion(back.pointer));
    expect(list?.items[0]?.score).toBeCloseTo(1.9, 5);
  });

  it("a publish after a rollback to the oldest target keeps the served version's entries until its pointer", async () => {
    const { schema, q, stub, publish, tag } = await twoVersions();
    const alice = `u:${tag}-alice`;
    const bump = () => q("update user_candidates set scores[1] = scores[1] + 1 where user_key = $1", [alice]);
    await bump();
    await publish(); // v3: alice's key holds entries 3, 2 and 1
    expect((await stub.rollback(1)).ok).toBe(true);
    await bump();
    // Version 4 writes alice's key, then waits to settle: the pointer still serves version 1 meanwhile.
    expect(await stub.start({ trigger: "admin", schema, settleMs: 60_000 })).toMatchObject({ version: 4 });
    for (let i = 0; i < 20 && !(await stub.status()).job?.settled; i++) await runDurableObjectAlarm(stub);
    expect((await stub.status()).job?.settled).toBe(true);
    const served = decodePointer(await kv().get(POINTER_KEY));
    expect(served?.version).toBe(1);
    const during = decodeUserList(await kv().get(userListKey(alice)), listsVersion(served as Pointer));
    expect(during?.items[0]?.score).toBeCloseTo(0.9, 5);
    await drain(stub);
    const after = decodePointer(await kv().get(POINTER_KEY));
    expect(after?.version).toBe(4);
    const now = decodeUserList(await kv().get(userListKey(alice)), 4);
    expect(now?.items[0]?.score).toBeCloseTo(3.9, 5);
    // Once version 4 is served, version 1 is no target any more, and the next write of the key drops its entry.
    expect((await stub.status()).rollbackTargets).toEqual([4, 3, 2]);
    await bump();
    await publish();
    const value = JSON.parse((await kv().get(userListKey(alice))) ?? "{}") as { e: unknown[][] };
    expect(value.e.map((e) => e[0])).toEqual([5, 4, 3]);
  });

  it("a catalogue push and a publish started at once never get the same version", async () => {
    const { schema, q, stub, publish, tag } = await setup("pub");
    await seed(q, tag);
    await publish();
    await q("update catalog set in_stock = false, updated_at = now() where id = $1", [`${tag}-p1`]);
    await q("update user_candidates set scores[1] = scores[1] + 1 where user_key = $1", [`u:${tag}-alice`]);
    const [pushed, started] = await Promise.all([
      stub.pushCatalog({ schema }),
      stub.start({ trigger: "admin", schema, settleMs: 0 }),
    ]);
    await drain(stub);
    expect(pushed.status).toBe("published");
    expect(started.status).toBe("started");
    const versions = (await stub.status()).versions.map((v) => v.version);
    expect(new Set(versions).size).toBe(versions.length);
    expect("version" in pushed && "version" in started && pushed.version !== started.version).toBe(true);
  });

  it("a catalogue push refused at its pointer write is shipped by the next publish", async () => {
    const { schema, q, stub, publish, tag } = await setup("pub");
    await seed(q, tag);
    await publish(); // v1: p1 in stock
    await q("update catalog set in_stock = false, updated_at = now() where id = $1", [`${tag}-p1`]);
    let refuse = true;
    await refusePuts(stub, (key) => refuse && key === POINTER_KEY);
    // Awaited with catch: `expect(rpcPromise).rejects` leaves the RPC's own rejection unobserved (an unhandled error).
    const refused = await stub.pushCatalog({ schema }).then(
      () => null,
      (error: unknown) => error,
    );
    expect(String(refused)).toMatch(/429/); // version 2 spent, its shard written
    refuse = false;
    await publish(); // nothing but the catalogue changed since version 1
    expect(await p1InStock(tag)).toMatchObject({ pointer: { version: 3, catalog: { version: 3 } }, inStock: false });
  });

  it("a catalogue push whose bookkeeping fails after its pointer write is served, known to the coordinator and shipped again", async () => {
    const { schema, q, stub, publish, tag } = await setup("pub");
    await seed(q, tag);
    await publish(); // v1
    await q("update catalog set in_stock = false, updated_at = now() where id = $1", [`${tag}-p1`]);
    // Postgres refuses the push's statements after its pointer write: the build's record and the catalogue watermark.
    for (const [table, column] of [
      ["sync_state", "name"],
      ["published_keys", "key"],
    ]) {
      await q(`create function "${schema}".fail_${table}() returns trigger language plpgsql as $$
        begin
          if new.${column} in ('publish.catalog_watermark', 'catalog') then raise exception 'injected: database unavailable'; end if;
          return new;
        end $$`);
      await q(
        `create trigger fail_${table} before insert or update on "${schema}".${table} for each row execute function "${schema}".fail_${table}()`,
      );
    }
    const pushed = await stub.pushCatalog({ schema });
    const served = decodePointer(await kv().get(POINTER_KEY));
    const status = await stub.status();
    const lastPointerWriteAt = await runInDurableObject(
      stub,
      async (_instance: PublishCoordinator, state) =>
        (await state.storage.get<{ lastPointerWriteAt: number }>("state"))?.lastPointerWriteAt,
    );
    expect({
      pushed: pushed.status,
      served: served?.version,
      known: status.pointer?.version,
      newest: { version: status.versions[0]?.version, kind: status.versions[0]?.kind },
      lastPointerWriteAt,
    }).toEqual({
      pushed: "published",
      served: 2,
      known: 2,
      newest: { version: 2, kind: "catalog_push" },
      lastPointerWriteAt: served?.publishedAt,
    });

    for (const table of ["sync_state", "published_keys"]) await q(`drop trigger fail_${table} on "${schema}".${table}`);
    await publish(); // ships the unrecorded build again, and records it
    expect(await p1InStock(tag)).toMatchObject({ pointer: { version: 3, catalog: { version: 3 } }, inStock: false });
    expect(await stub.pushCatalog({ schema })).toMatchObject({ status: "unchanged", version: 3 });
  });

  it("a catalogue push that arrives during a publish's last alarm ships the catalogue as it is then", async () => {
    const { schema, q, stub, publish, tag } = await setup("pub");
    await seed(q, tag);
    await publish(); // v1
    await q("update user_candidates set scores[1] = scores[1] + 1 where user_key = $1", [`u:${tag}-alice`]);
    // At v2's pointer write its shared step has read the catalogue: p1 goes out of stock and is pushed then.
    let pushed: Promise<PushResult> | null = null;
    await interceptKv(stub, {
      put: async (key, call, coordinator) => {
        if (key === POINTER_KEY && !pushed) {
          await q("update catalog set in_stock = false, updated_at = now() where id = $1", [`${tag}-p1`]);
          pushed = coordinator.pushCatalog({ schema });
        }
        return call();
      },
    });
    await publish(); // v2
    expect({ pushed: await pushed, served: await p1InStock(tag) }).toMatchObject({
      pushed: { status: "published", version: 3 },
      served: { pointer: { version: 3 }, inStock: false },
    });
  });

  it("a publish whose pointer write failed ships its catalogue change on the retry", async () => {
    const { schema, q, stub, publish, tag } = await setup("pub");
    await seed(q, tag);
    await publish();
    await q("update catalog set in_stock = false, updated_at = now() where id = $1", [`${tag}-p1`]);
    let failed = 0;
    await runInDurableObject(stub, (instance: PublishCoordinator) => {
      const counting = instance.wrapKv;
      instance.wrapKv = (raw) => {
        const inner = counting(raw);
        return new Proxy(inner, {
          get(target, prop, receiver) {
            if (prop === "put") {
              return (key: string, ...rest: unknown[]) => {
                if (key === POINTER_KEY && failed++ === 0) return Promise.reject(new Error("KV PUT failed: 500"));
                return (target.put as (...a: unknown[]) => Promise<void>)(key, ...rest);
              };
            }
            const value = Reflect.get(target, prop, receiver) as unknown;
            return typeof value === "function" ? (value as (...a: unknown[]) => unknown).bind(target) : value;
          },
        });
      };
    });
    expect((await stub.start({ trigger: "admin", schema, settleMs: 0 })).status).toBe("started");
    await drain(stub);
    expect(failed).toBe(2);
    expect(await p1InStock(tag)).toMatchObject({ pointer: { version: 2, catalog: { version: 2 } }, inStock: false });
    expect((await stub.status()).lastVersion).toBe(2);
  });
});

/** An erasure of `userKey` as eraseUser does it: the Postgres transaction, then the KV key. */
async function erase(schema: string, userKey: string): Promise<void> {
  const { db, end } = openDb(dbSettings(), schema);
  try {
    await eraseWarehouse(db, userKey, subjectKeys([userKey]), false);
  } finally {
    await end();
  }
  await kv().delete(userListKey(userKey));
}

/**
 * Decides what the coordinator's KV puts and deletes do from now on (on top of the wrappers installed before):
 * `call` runs the real operation; `coordinator` is the object the alarm runs in, `state` its state (to abort it).
 */
type KvHook = (
  key: string,
  call: () => Promise<unknown>,
  coordinator: PublishCoordinator,
  state: DurableObjectState,
) => Promise<unknown>;

async function interceptKv(stub: DurableObjectStub<PublishCoordinator>, hooks: { put?: KvHook; delete?: KvHook }) {
  await runInDurableObject(stub, (instance: PublishCoordinator, state) => {
    const inner = instance.wrapKv;
    instance.wrapKv = (raw) =>
      new Proxy(inner(raw), {
        get(target, prop, receiver) {
          const value = Reflect.get(target, prop, receiver) as unknown;
          if (typeof value !== "function") return value;
          const bound = (value as (...a: unknown[]) => Promise<unknown>).bind(target);
          const hook = prop === "put" ? hooks.put : prop === "delete" ? hooks.delete : undefined;
          return hook
            ? (key: string, ...rest: unknown[]) => hook(key, () => bound(key, ...rest), instance, state)
            : bound;
        },
      });
  });
}

/**
 * The erasure of `userKey` commits (Postgres, then KV) just before the coordinator's first put of that user's key:
 * after the publish step read the list and the key's current value, before it writes the key and records it.
 */
async function eraseDuringPut(stub: DurableObjectStub<PublishCoordinator>, schema: string, userKey: string) {
  let armed = true;
  await interceptKv(stub, {
    put: async (key, call) => {
      if (armed && key === userListKey(userKey)) {
        armed = false;
        await erase(schema, userKey);
      }
      return call();
    },
  });
}

/** The coordinator's KV puts of the keys `refuse` picks fail (as KV's 429s or 500s do) while it returns true. */
async function refusePuts(stub: DurableObjectStub<PublishCoordinator>, refuse: (key: string) => boolean) {
  await interceptKv(stub, {
    put: (key, call) => (refuse(key) ? Promise.reject(new Error(`KV PUT failed: 429 (${key})`)) : call()),
  });
}

describe("erasure against the publish", () => {
  it("a step writing a user's key while the user is erased neither records the key nor leaves it in KV", async () => {
    const { schema, q, stub, publish, tag } = await setup("erase");
    await seed(q, tag);
    const [alice, bob] = [`u:${tag}-alice`, `u:${tag}-bob`];
    await publish(); // v1
    await q("update user_candidates set scores[1] = 1.9 where user_key = $1", [alice]);
    await eraseDuringPut(stub, schema, alice);
    await publish(); // the step read alice's changed list; her erasure lands before its put
    const recorded = await q("select key from published_keys where key = $1", [userListKey(alice)]);
    const [run] = await q<{ stats: { erased?: number; written: number } }>(
      "select stats from batch_runs where kind = 'publish' order by id desc limit 1",
    );
    await q("update user_candidates set scores[1] = 1.7 where user_key = $1", [bob]);
    await publish(); // an unrelated change: its tombstone phase must not find alice's key
    const pointer = decodePointer(await kv().get(POINTER_KEY));
    const afterNext = await kv().get(userListKey(alice));
    const rollback = await stub.rollback(1); // a rollback target (the current and the two before it)
    expect({
      recorded: recorded.length,
      stats: { erased: run?.stats.erased, written: run?.stats.written },
      afterNext,
      rollback: rollback.ok,
      afterRollback: await kv().get(userListKey(alice)),
      bob: decodeUserList(await kv().get(userListKey(bob)), pointer?.version ?? 0)?.items[0]?.score,
    }).toEqual({
      recorded: 0,
      stats: { erased: 1, written: 0 },
      afterNext: null,
      rollback: true,
      afterRollback: null,
      bob: expect.closeTo(1.7, 5),
    });
  });

  it("deletes an erased user's key in the next alarm when the step's KV budget is spent", async () => {
    const { schema, q, log, stub, publish, tag } = await setup("erase");
    const model = await modelVersion(q, "user_candidates");
    // opsPerAlarm 10: one step of 9 keys (one bulk get, 9 puts) spends the whole budget.
    await q(
      `insert into user_candidates (user_key, product_ids, scores, reasons, model_version)
       select 'u:' || $1 || '-' || g, array['p1'], array[1.0], null, $2 from generate_series(1, 9) g`,
      [tag, model],
    );
    await publish();
    const carol = `u:${tag}-5`;
    await q("update user_candidates set scores[1] = 2.0");
    await eraseDuringPut(stub, schema, carol);
    await publish({ opsPerAlarm: 10 });
    const recorded = await q<{ key: string }>("select key from published_keys where key like 'u:%' order by key");
    const invocationOf = (op: string) =>
      log.findIndex((ops) => ops.some((o) => o.op === op && o.key === userListKey(carol)));
    expect({
      deletedInALaterAlarm: invocationOf("delete") > invocationOf("put"),
      carol: await kv().get(userListKey(carol)),
      recorded: recorded.map((r) => r.key),
      other: decodeUserList(await kv().get(userListKey(`u:${tag}-4`)), 2)?.items[0]?.score,
    }).toEqual({
      deletedInALaterAlarm: true,
      carol: null,
      recorded: [1, 2, 3, 4, 6, 7, 8, 9].map((g) => userListKey(`u:${tag}-${g}`)),
      other: 2,
    });
  });

  it("deletes the key again when the alarm died between recording the step and deleting the key", async () => {
    const { schema, q, stub, tag } = await setup("erase");
    await seed(q, tag);
    const [alice, bob] = [`u:${tag}-alice`, `u:${tag}-bob`];
    const start = async (target: DurableObjectStub<PublishCoordinator>) => {
      expect((await target.start({ trigger: "admin", schema, settleMs: 0 })).status).toBe("started");
    };
    await start(stub);
    await drain(stub); // v1
    await q("update user_candidates set scores[1] = scores[1] + 1");
    await eraseDuringPut(stub, schema, alice);
    // The step's record transaction has committed (without alice); the object dies at the delete that follows.
    let crashed = 0;
    await interceptKv(stub, {
      delete: (key, call, _coordinator, state) => {
        if (key === userListKey(alice)) {
          crashed++;
          state.abort("injected crash");
        }
        return call();
      },
    });
    await start(stub);
    await expect(runDurableObjectAlarm(stub)).rejects.toThrow();
    expect(crashed).toBe(1);
    // The platform runs a failed alarm again, in a new instance (the test harness removed it: set it again).
    const revived = env.PUBLISH_COORDINATOR.get(stub.id);
    await runInDurableObject(revived, (_o: PublishCoordinator, state) => state.storage.setAlarm(Date.now()));
    await drain(revived);
    const [run] = await q<{ stats: { swept?: number } }>(
      "select stats from batch_runs where kind = 'publish' order by id desc limit 1",
    );
    const pointer = decodePointer(await kv().get(POINTER_KEY));
    expect({
      alice: await kv().get(userListKey(alice)),
      recorded: (await q("select 1 from published_keys where key = $1", [userListKey(alice)])).length,
      swept: run?.stats.swept,
      bob: decodeUserList(await kv().get(userListKey(bob)), pointer?.version ?? 0)?.items[0]?.score,
      // Bob's key got its version-2 entry in the step that died: version 2 counts against the keys' history.
      stableWrites: (await revived.status()).versions[0]?.stableWrites,
    }).toEqual({ alice: null, recorded: 0, swept: 1, bob: expect.closeTo(1.7, 5), stableWrites: 1 });
  });

  it("a step whose delete of an erased user's key fails still counts the keys it wrote against their history", async () => {
    const { schema, q, stub, publish, tag } = await setup("erase");
    await seed(q, tag);
    const [alice, bob] = [`u:${tag}-alice`, `u:${tag}-bob`];
    const bumpBob = () => q("update user_candidates set scores[1] = scores[1] + 1 where user_key = $1", [bob]);
    await publish(); // v1
    await q("update user_candidates set scores[1] = scores[1] + 1"); // alice's and bob's lists change
    await eraseDuringPut(stub, schema, alice);
    let refused = false;
    await interceptKv(stub, {
      delete: (key, call) => {
        if (refused || key !== userListKey(alice)) return call();
        refused = true;
        return Promise.reject(new Error("KV DELETE failed: 500"));
      },
    });
    await publish(); // v2: bob's key written and recorded, then the step fails at alice's delete; its retry finishes
    for (let i = 0; i < 2; i++) {
      await bumpBob();
      await publish(); // v3, v4
    }
    const entries = (JSON.parse((await kv().get(userListKey(bob))) ?? "{}") as { e: [number][] }).e.map((e) => e[0]);
    const status = await stub.status();
    expect({
      refused,
      entries,
      stableWrites: status.versions.find((v) => v.version === 2)?.stableWrites,
      targets: status.rollbackTargets,
      rollback: await stub.rollback(1),
    }).toEqual({
      refused: true,
      entries: [4, 3, 2], // nothing left for version 1
      stableWrites: 1,
      targets: [4, 3, 2],
      rollback: expect.objectContaining({ ok: false, code: "version_not_rollbackable" }),
    });
  });

  it("sweeps each erasure once, and keeps the key of a user published again since their erasure", async () => {
    const { schema, q, publish, tag } = await setup("erase");
    await seed(q, tag);
    const [alice, bob] = [`u:${tag}-alice`, `u:${tag}-bob`];
    await publish(); // v1
    await erase(schema, alice);
    await publish(); // sweeps alice's key (already gone)
    // bob was erased before the lists' model was computed and came back: his new list is published and recorded.
    await q("insert into erased_users (user_key, subject, erased_at) values ($1, $1, now() - interval '1 hour')", [
      bob,
    ]);
    await q("update user_candidates set scores[1] = 2.5 where user_key = $1", [bob]);
    await publish();
    await publish(); // nothing erased since the last sweep
    const runs = await q<{ stats: { swept?: number } }>(
      "select stats from batch_runs where kind = 'publish' order by id",
    );
    const pointer = decodePointer(await kv().get(POINTER_KEY));
    expect({
      swept: runs.map((r) => r.stats.swept),
      bob: decodeUserList(await kv().get(userListKey(bob)), pointer?.version ?? 0)?.items[0]?.score,
    }).toEqual({ swept: [0, 1, 0, 0], bob: 2.5 });
  });

  it("sweeps a mass erasure page by page: the saved job never holds more than a page of keys, and every key goes", {
    timeout: 60_000,
  }, async () => {
    const { schema, q, stub, tag } = await setup("erase");
    await seed(q, tag);
    const erased = 2 * ERASURE_SWEEP_PAGE + 500;
    await q(
      `insert into erased_users (user_key, subject, erased_at)
         select $1 || lpad(n::text, 5, '0'), $1 || lpad(n::text, 5, '0'), now() - interval '1 hour'
         from generate_series(1, $2::int) n`,
      [`${tag}-gone-`, erased],
    );
    // Keys left behind by steps that died before deleting them again: the first, a middle and the last user's.
    const left = [1, ERASURE_SWEEP_PAGE + 1, erased].map((n) =>
      userListKey(`${tag}-gone-${String(n).padStart(5, "0")}`),
    );
    for (const key of left) await kv().put(key, "stale");
    const started = await stub.start({ trigger: "admin", schema, settleMs: 0 });
    expect(started.status).toBe("started");
    let largest = 0;
    for (let alarms = 0; alarms < 40 && (await stub.status()).job; alarms++) {
      await runDurableObjectAlarm(stub);
      const held = await runInDurableObject(stub, async (_: PublishCoordinator, state) => {
        return (await state.storage.get<{ erasedKeys?: string[] }>("job"))?.erasedKeys?.length ?? 0;
      });
      largest = Math.max(largest, held);
    }
    expect((await stub.status()).job).toBeNull();
    expect(largest).toBeLessThanOrEqual(ERASURE_SWEEP_PAGE);
    expect(await Promise.all(left.map((key) => kv().get(key)))).toEqual([null, null, null]);
    const [run] = await q<{ swept: number }>(
      "select (stats ->> 'swept')::int as swept from batch_runs where kind = 'publish' order by id desc limit 1",
    );
    expect(run?.swept).toBe(erased);
  });

  it("never publishes a list whose input was read while the erasure waited for its lock, before it committed", async () => {
    const { schema, q, publish, tag } = await setup("erase");
    await seed(q, tag);
    const alice = `u:${tag}-alice`;
    await publish(); // v1
    const writer = openClient(dbSettings());
    await writer.connect();
    let external: string | undefined;
    try {
      // A loader batch holds the shared erasure lock: the erasure's transaction starts and waits for it.
      await writer.query("begin");
      await writer.query("select pg_advisory_xact_lock_shared($1::bigint)", [ERASURE_LOCK.toString()]);
      const erasure = erase(schema, alice);
      await new Promise((r) => setTimeout(r, 300));
      // Meanwhile an external writer reads its input, alice's rows still there: its version's created_at is now.
      [external] = (
        await q<{ id: string }>(
          `insert into model_versions (model, version, source, status, created_at)
           values ('user_candidates', $1, 'external', 'ready', clock_timestamp()) returning id`,
          [`ext-${tag}`],
        )
      ).map((r) => r.id);
      await new Promise((r) => setTimeout(r, 50));
      await writer.query("commit");
      await erasure;
    } finally {
      await writer.end();
    }
    // It writes its lists after the erasure, alice's among them (it does not leave erased users out).
    await q(
      `insert into user_candidates (user_key, product_ids, scores, reasons, model_version) values ($1, array['x1'], '{0.9}', null, $2)`,
      [alice, external],
    );
    await publish(); // v2
    expect({
      alice: await kv().get(userListKey(alice)),
      recorded: (await q("select key from published_keys where key = $1", [userListKey(alice)])).length,
    }).toEqual({ alice: null, recorded: 0 });
  });

  it("never publishes an erased user's list built from data read before the erasure", async () => {
    const { schema, q, publish, tag } = await setup("erase");
    await seed(q, tag);
    const [alice, bob, carol] = [`u:${tag}-alice`, `u:${tag}-bob`, `u:${tag}-carol`];
    await publish(); // v1
    await erase(schema, alice);
    // carol was erased an hour ago and came back: lists computed since then are hers to get.
    await q("insert into erased_users (user_key, subject, erased_at) values ($1, $1, now() - interval '1 hour')", [
      carol,
    ]);
    // An external writer replaces user_candidates from its own tables, read before alice's erasure (its version's
    // created_at: when its input was read) and without leaving erased users out.
    const [external] = await q<{ id: string }>(
      `insert into model_versions (model, version, source, status, created_at)
       values ('user_candidates', $1, 'external', 'ready', (select erased_at from erased_users where user_key = $2) - interval '1 minute')
       returning id`,
      [`ext-${tag}`, alice],
    );
    await q("delete from user_candidates");
    await q(
      `insert into user_candidates (user_key, product_ids, scores, reasons, model_version) values
         ($1, array['x1'], '{0.9}', null, $4), ($2, array['x2'], '{0.8}', null, $4), ($3, array['x3'], '{0.7}', null, $4)`,
      [alice, bob, carol, external?.id],
    );
    await publish(); // v2
    const recorded = await q<{ key: string }>("select key from published_keys where key like 'u:%' order by key");
    expect({
      alice: await kv().get(userListKey(alice)),
      bob: decodeUserList(await kv().get(userListKey(bob)), 2)?.items.map((i) => i.productId),
      carol: decodeUserList(await kv().get(userListKey(carol)), 2)?.items.map((i) => i.productId),
      recorded: recorded.map((r) => r.key),
    }).toEqual({
      alice: null,
      bob: ["x2"],
      carol: ["x3"],
      recorded: [userListKey(bob), userListKey(carol)].sort(),
    });
  });
});

describe("refresh", () => {
  it("retries a transient database error on its first statement instead of failing the run", async () => {
    const { schema, stub } = await setup("pub");
    const { db, end } = openDb(dbSettings(), schema);
    let failures = 0;
    // The database restarts under the first statement (the lease), as a waking Neon compute does.
    const flaky = new Proxy(db, {
      get(target, prop, receiver) {
        const value = Reflect.get(target, prop, receiver) as unknown;
        if (prop !== "execute" || typeof value !== "function") return value;
        return (...args: unknown[]) => {
          if (failures++ === 0) {
            const error = Object.assign(new Error("terminating connection due to administrator command"), {
              code: "57P01",
            });
            return Promise.reject(error);
          }
          return (value as (...a: unknown[]) => unknown).apply(target, args);
        };
      },
    });
    try {
      const report = await runRefresh({ db: flaky, coordinator: stub }, { trigger: "cron", schema });
      expect(report.status).toBe("ok");
      expect(report.runId).not.toBeNull();
      expect(failures).toBeGreaterThan(1);
    } finally {
      await end();
      // The refresh started a publish: it runs to its end before the schema is dropped under it.
      await drain(stub);
    }
  });

  it("ships a stock change through a catalogue push when the compute fails", async () => {
    const { schema, q, stub, publish, tag } = await setup("pub");
    await seed(q, tag);
    await publish();
    await q("update catalog set in_stock = false, updated_at = now() where id = $1", [`${tag}-p1`]);
    const { db, end } = openDb(dbSettings(), schema);
    let report: RefreshReport;
    try {
      // An impossible parameter makes the compute fail before it writes anything.
      report = await runRefresh(
        { db, coordinator: stub },
        { trigger: "cron", schema, compute: { params: { nextItems: { maxSteps: 99 } } } },
      );
    } finally {
      await end();
    }
    expect(report.compute).toMatchObject({ status: "failed" });
    expect(report.publish).toMatchObject({ status: "published", version: 2 });
    const pointer = decodePointer(await kv().get(POINTER_KEY));
    expect(pointer?.catalog?.version).toBe(2);
    const shard = decodeCatalogShard(await kv().get(catalogShardKey(2, 0)));
    expect(shard && catalogItem(shard, `${tag}-p1`)?.inStock).toBe(false);
  });
});

describe("publish across invocations", () => {
  it("gives a publish up after 5 failed alarms in a row without progress", async () => {
    const { q, stub, schema, tag } = await setup("refused");
    await seed(q, tag);
    let invocations = 0;
    await runInDurableObject(stub, (instance: PublishCoordinator) => {
      instance.wrapKv = (kv) => {
        invocations++;
        return new Proxy(kv, {
          get(target, prop, receiver) {
            if (prop === "put") return async () => Promise.reject(new Error("KV PUT failed: 429 Too Many Requests"));
            const value = Reflect.get(target, prop, receiver) as unknown;
            return typeof value === "function" ? (value as (...a: unknown[]) => unknown).bind(target) : value;
          },
        });
      };
    });
    expect((await stub.start({ trigger: "admin", schema, settleMs: 0 })).status).toBe("started");
    await drain(stub);
    expect(invocations).toBe(5);
    expect((await stub.status()).job).toBeNull();
    const [run] = await q<{ status: string }>("select status from batch_runs where kind = 'publish'");
    expect(run?.status).toBe("failed");
  });

  it("keeps every alarm within the KV budget and finishes a publish of more than 1,000 keys", async () => {
    const { q, log, stub, publish, tag } = await setup("big");
    const model = await modelVersion(q, "user_candidates");
    const USERS = 1_050;
    await q(
      `insert into user_candidates (user_key, product_ids, scores, reasons, model_version)
       select 'u:' || $1 || '-' || lpad(g::text, 5, '0'), array['p' || (g % 7)], array[1.0 / g], null, $2
       from generate_series(1, $3) g`,
      [tag, model, USERS],
    );
    const OPS = 300;
    await publish({ opsPerAlarm: OPS });
    const perInvocation = log.map((ops) => ops.length).filter((n) => n > 0);
    expect(perInvocation.length).toBeGreaterThanOrEqual(Math.ceil(USERS / OPS));
    expect(Math.max(...perInvocation)).toBeLessThanOrEqual(OPS);
    expect(Math.max(...perInvocation)).toBeLessThanOrEqual(KV_OPS_PER_INVOCATION);
    const userPuts = puts(log).filter((k) => k.startsWith("u:"));
    expect(userPuts).toHaveLength(USERS);
    expect(new Set(userPuts).size).toBe(USERS);
    const status = await stub.status();
    expect(status.versions[0]?.stableWrites).toBe(USERS);
    const [run] = await q<{ stats: { invocations: number; maxOpsPerInvocation: number } }>(
      "select stats from batch_runs where kind = 'publish'",
    );
    expect(run?.stats.invocations).toBeGreaterThanOrEqual(4);
    expect(run?.stats.maxOpsPerInvocation).toBeLessThanOrEqual(OPS);
    const last = await kv().get(userListKey(`u:${tag}-0${USERS}`));
    expect(decodeUserList(last, 1)?.items).toHaveLength(1);
  });

  it("a publish given up after some of a step's puts landed spends its version, and the next publish rewrites them", async () => {
    const { schema, q, stub, publish, tag } = await setup("refused");
    await seed(q, tag);
    await publish(); // v1
    const [alice, bob] = [`u:${tag}-alice`, `u:${tag}-bob`];
    await q("update user_candidates set scores[1] = scores[1] + 1 where user_key = $1", [alice]); // 1.9
    await q("update user_candidates set scores[1] = 0.1 where user_key = $1", [bob]);
    let refuse = true;
    await refusePuts(stub, (key) => refuse && key === userListKey(bob));
    expect((await stub.start({ trigger: "admin", schema, settleMs: 0 })).status).toBe("started");
    await drain(stub);
    const [run] = await q<{ status: string }>(
      "select status from batch_runs where kind = 'publish' order by id desc limit 1",
    );
    expect(run?.status).toBe("failed");
    // Alice's put landed in the same step as bob's refused one: her key holds a version-2 entry.
    expect(decodeUserList(await kv().get(userListKey(alice)), 2)?.items[0]?.score).toBeCloseTo(1.9, 5);
    expect((await stub.status()).versions[0]).toMatchObject({ version: 2, kind: "failed", stableWrites: 1 });

    // Alice's list goes back to what version 1 published; bob's still changed.
    refuse = false;
    await q("update user_candidates set scores[1] = 0.9 where user_key = $1", [alice]);
    await publish();
    const pointer = decodePointer(await kv().get(POINTER_KEY)) as Pointer;
    const served = decodeUserList(await kv().get(userListKey(alice)), listsVersion(pointer));
    expect({ version: pointer.version, alice: served?.items[0]?.score }).toEqual({ version: 3, alice: 0.9 });
  });

  it("after a publish given up at its pointer write, the next publish of the same snapshot writes the pointer", async () => {
    const { schema, q, stub, publish, tag } = await setup("refused");
    await seed(q, tag);
    await publish(); // v1
    await q("update user_candidates set scores[1] = scores[1] + 1 where user_key = $1", [`u:${tag}-alice`]); // 1.9
    let refuse = true;
    await refusePuts(stub, (key) => refuse && key === POINTER_KEY);
    expect((await stub.start({ trigger: "admin", schema, settleMs: 0 })).status).toBe("started");
    await drain(stub);
    expect((await stub.status()).lastVersion).toBe(2); // spent, kind failed; alice's key recorded under it
    refuse = false;
    await publish(); // the same snapshot again: nothing changed since the failed publish
    const pointer = decodePointer(await kv().get(POINTER_KEY)) as Pointer;
    const served = decodeUserList(await kv().get(userListKey(`u:${tag}-alice`)), listsVersion(pointer));
    expect({ version: pointer.version, alice: served?.items[0]?.score }).toEqual({
      version: 3,
      alice: expect.closeTo(1.9, 5),
    });
  });

  it.each([
    ["a user's list", "update user_candidates set scores[1] = scores[1] + 1 where user_key like '%-alice'"],
    ["the catalogue alone", "update catalog set in_stock = not in_stock, updated_at = now() where id like '%-p1'"],
  ])(
    "a publish of %s whose alarm died after its pointer write, given up without a KV operation, spends its version",
    async (_what, change) => {
      const { schema, q, stub } = await setup("refused");
      await seed(q, crypto.randomUUID().slice(0, 8));
      expect((await stub.start({ trigger: "admin", schema, settleMs: 0 })).status).toBe("started");
      await drain(stub); // v1
      await q(change);
      // The object dies right after KV took version 2's pointer, before any count of its KV operations was saved.
      let crashed = false;
      await interceptKv(stub, {
        put: async (key, call, _coordinator, state) => {
          await call();
          if (key === POINTER_KEY) {
            crashed = true;
            state.abort("injected crash");
          }
        },
      });
      // One alarm makes every write of this small publish: version 1's pointer is over 1 s old when it runs.
      await new Promise((r) => setTimeout(r, KV_MIN_WRITE_INTERVAL_MS + 100));
      expect((await stub.start({ trigger: "admin", schema, settleMs: 0 })).status).toBe("started");
      for (let i = 0; i < 40 && !crashed; i++) {
        await runDurableObjectAlarm(stub).catch(() => {});
        if (!crashed) await new Promise((r) => setTimeout(r, 100)); // the pointer's 1 s after version 1's
      }
      expect(decodePointer(await kv().get(POINTER_KEY))?.version).toBe(2);
      // Its retries fail before any KV operation (Postgres refuses the catalogue's query) until the job is given up.
      await q("alter table catalog rename to catalog_away");
      const revived = env.PUBLISH_COORDINATOR.get(stub.id);
      await runInDurableObject(revived, (_o: PublishCoordinator, state) => state.storage.setAlarm(Date.now()));
      await drain(revived);
      await q("alter table catalog_away rename to catalog");
      const given = await revived.status();
      expect({ job: given.job, lastVersion: given.lastVersion, kind: given.versions[0]?.kind }).toEqual({
        job: null,
        lastVersion: 2,
        kind: "failed",
      });
      // The next publish takes a new number: version 2's pointer and keys are not written over under the same name.
      await q(change);
      const next = await revived.start({ trigger: "admin", schema, settleMs: 0 });
      await drain(revived);
      expect({
        started: next.status === "started" ? next.version : null,
        pointer: decodePointer(await kv().get(POINTER_KEY))?.version,
      }).toEqual({ started: 3, pointer: 3 });
    },
  );

  it("a publish whose model versions cannot be marked published after its pointer is recorded once, as published", async () => {
    const { schema, q, stub, publish, tag } = await setup("pub");
    await seed(q, tag);
    const alice = `u:${tag}-alice`;
    await publish(); // v1
    const next = await modelVersion(q, "user_candidates"); // a new compute: alice's list changes
    await q("update user_candidates set scores[1] = 1.9, model_version = $2 where user_key = $1", [alice, next]);
    // Postgres refuses every update of model_versions, the statement that follows the pointer write.
    await q(`create function "${schema}".fail_mark() returns trigger language plpgsql as $$
      begin raise exception 'injected: database unavailable'; end $$`);
    await q(
      `create trigger fail_mark before update on "${schema}".model_versions for each row execute function "${schema}".fail_mark()`,
    );
    expect((await stub.start({ trigger: "admin", schema, settleMs: 0 })).status).toBe("started");
    await drain(stub); // v2, served
    await q(`drop trigger fail_mark on "${schema}".model_versions`);
    await q("update user_candidates set scores[1] = 2.9 where user_key = $1", [alice]);
    await publish(); // v3: alice's key holds entries 3, 2 and 1
    const status = await stub.status();
    const [marked] = await q<{ status: string }>("select status from model_versions where id = $1", [next]);
    expect({
      versions: status.versions.map((v) => `${v.version}:${v.kind}`),
      targets: status.rollbackTargets,
      next: marked?.status,
    }).toEqual({ versions: ["3:publish", "2:publish", "1:publish"], targets: [3, 2, 1], next: "published" });
    expect(await stub.rollback(1)).toMatchObject({ ok: true });
  });

  it("a publish that cannot save its catalogue watermark is given up without serving a pointer the coordinator does not know", async () => {
    const { schema, q, stub, publish, tag } = await setup("pub");
    await seed(q, tag);
    await publish(); // v1
    await q("update catalog set in_stock = false, updated_at = now() where id = $1", [`${tag}-p1`]);
    await q(`create function "${schema}".fail_watermark() returns trigger language plpgsql as $$
      begin
        if new.name = 'publish.catalog_watermark' then raise exception 'injected: database unavailable'; end if;
        return new;
      end $$`);
    await q(
      `create trigger fail_watermark before insert or update on "${schema}".sync_state for each row execute function "${schema}".fail_watermark()`,
    );
    expect((await stub.start({ trigger: "admin", schema, settleMs: 0 })).status).toBe("started");
    await drain(stub); // given up
    const served = decodePointer(await kv().get(POINTER_KEY));
    const status = await stub.status();
    expect({ served: served?.version, known: status.pointer?.version, v2: status.versions[0]?.kind }).toEqual({
      served: 1,
      known: 1,
      v2: "failed",
    });
    await q(`drop trigger fail_watermark on "${schema}".sync_state`);
    await publish(); // v3: the pointer owed, with the catalogue change
    expect(await p1InStock(tag)).toMatchObject({ pointer: { version: 3 }, inStock: false });
  });

  it("a publish whose run record Postgres refuses after its pointer is recorded `ok` at the next start, not left running", async () => {
    const { schema, q, stub, publish, tag } = await setup("pub");
    await seed(q, tag);
    const accept = await refuseOkRecords(q, schema);
    const first = await publish(); // v1: served, its record refused
    const runOf = async (id: number | null) =>
      (
        await q<{ status: string; keys: number | null }>(
          "select status, (stats ->> 'keysWritten')::int as keys from batch_runs where id = $1",
          [id],
        )
      )[0];
    const runId = (started: Awaited<ReturnType<typeof publish>>) =>
      started.status === "started" ? started.runId : null;
    expect((await runOf(runId(first)))?.status).toBe("running");
    // The next start meets a working Postgres: the owed record is written before the new run's row.
    await accept();
    await q("update user_candidates set scores[1] = scores[1] + 1 where user_key = $1", [`u:${tag}-alice`]);
    const second = await publish();
    const versions = (await stub.status()).versions;
    expect(versions.map((v) => v.version)).toEqual([2, 1]);
    const run1 = await runOf(runId(first));
    const run2 = await runOf(runId(second));
    expect(run1?.status).toBe("ok");
    expect(run1?.keys).toBeGreaterThan(0);
    expect(run2?.status).toBe("ok");
  });

  it("a start or push closes the rows earlier starts left running (a lost answer), but not a run whose outcome it owes", async () => {
    const { schema, q, stub, publish, tag } = await setup("pub");
    await seed(q, tag);
    const { db, end } = openDb(dbSettings(), schema);
    // What a start whose answer was lost leaves: Postgres inserted its row, the coordinator never had a job for it.
    const lost = await startRun(db, { kind: "publish", trigger: "cron" }, { name: PUBLISH_RUN_LEASE, holder: "lost" });
    await end();
    // And a served publish whose `ok` Postgres refused: the coordinator owes that record (owedRuns).
    const accept = await refuseOkRecords(q, schema);
    const started = await publish();
    const owing = started.status === "started" ? (started.runId ?? -1) : -1;
    const statuses = async () =>
      Object.fromEntries(
        (
          await q<{ id: number; status: string }>("select id::int, status from batch_runs where id = any($1)", [
            [lost, owing],
          ])
        ).map((r) => [r.id, r.status]),
      );
    expect(await statuses()).toEqual({ [lost]: "abandoned", [owing]: "running" });
    // A catalogue push while Postgres still refuses the owed `ok`: it closes no row whose outcome is owed.
    await q("update catalog set in_stock = false where id = $1", [`${tag}-p1`]);
    const pushed = await stub.pushCatalog({ schema });
    expect(pushed.status).toBe("published");
    expect(await statuses()).toEqual({ [lost]: "abandoned", [owing]: "running" });
    // Postgres takes it again: the next start writes the owed outcome.
    await accept();
    await q("update user_candidates set scores[1] = scores[1] + 1 where user_key = $1", [`u:${tag}-alice`]);
    await publish();
    expect(await statuses()).toEqual({ [lost]: "abandoned", [owing]: "ok" });
  });

  it("a publish whose run record fails after its pointer is recorded once in the versions history", async () => {
    const { schema, q, stub, publish, tag } = await setup("pub");
    await seed(q, tag);
    await publish(); // v1
    // The next `ok` update of a batch_runs row fails once: a transient database error after the pointer write.
    await q(`create sequence "${schema}".fail_once`);
    await q(`create function "${schema}".fail_ok() returns trigger language plpgsql as $$
      begin
        if new.status = 'ok' and nextval('"${schema}".fail_once') = 1 then raise exception 'transient'; end if;
        return new;
      end $$`);
    await q(
      `create trigger fail_ok before update on "${schema}".batch_runs for each row execute function "${schema}".fail_ok()`,
    );
    for (let i = 0; i < 2; i++) {
      await q("update user_candidates set scores[1] = scores[1] + 1 where user_key = $1", [`u:${tag}-alice`]);
      await publish(); // v2, v3
    }
    const status = await stub.status();
    // Alice's key holds entries 3, 2 and 1: version 1 is still a target (the current and the two before it).
    expect({ versions: status.versions.map((v) => v.version), targets: status.rollbackTargets }).toEqual({
      versions: [3, 2, 1],
      targets: [3, 2, 1],
    });
  });
});
