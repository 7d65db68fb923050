// Erasure against the loader's quarantine (docs/privacy.md#order-and-races): an entry Postgres refused moves to the
// quarantine stream under the shared erasure lock, so an erasure that lands while it moves either deletes it
// afterwards or is seen by the move, which then drops it. Both orders, against the real Postgres, Redis and the
// admin API; the stream is read back with a second client. A move whose write Redis does not answer holds the lock
// for its deadline only, and the write, landing after the erasure, adds nothing. The erasure matches entries by the
// keys the loader drops an event by: another user's entry on an erased device goes too.
import { exports } from "cloudflare:workers";
import { expect, it } from "vitest";
import { QUARANTINE_SUFFIX } from "../../src/batch/consumer.ts";
import { type LoaderHooks, type LoadReport, runLoader } from "../../src/batch/loader.ts";
import type { RetryPolicy } from "../../src/batch/retry.ts";
import { ERASURE_LOCK } from "../../src/privacy/warehouse.ts";
import { EVENT_STREAM, STREAM_FIELDS } from "../../src/session/stream.ts";
import type { Redis } from "../../src/stores/redis.ts";
import {
  append,
  aroundQuarantineWrites,
  event,
  gate,
  loaderRedis,
  redis,
  sql,
  streamNames,
  uid,
  withDb,
} from "./batch-helpers.ts";
import { ADMIN_KEY, BASE } from "./collect-helpers.ts";

const QUARANTINE = `${EVENT_STREAM}${QUARANTINE_SUFFIX}`;

const admin = (method: string, path: string) =>
  exports.default.fetch(new Request(`${BASE}${path}`, { method, headers: { authorization: `Bearer ${ADMIN_KEY}` } }));

const erase = (userId: string) => admin("DELETE", `/v1/admin/users/${userId}?kind=user`);

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A Redis stream id just before `id` (a consumer group created there reads `id` first). */
function idBefore(id: string): string {
  const [ms, seq] = id.split("-");
  return seq === "0" ? `${BigInt(ms ?? 0) - 1n}-18446744073709551615` : `${ms}-${BigInt(seq ?? 0) - 1n}`;
}

/**
 * Loads one event of `userId` that Postgres refuses (a data error, 22001) from the production stream, whose
 * quarantine the erasure scans: read by a consumer group of this test that starts right before the entry, in one
 * batch of one entry, so nothing other tests append is read. `beforeRefusal` runs inside the batch's transaction.
 */
async function loadRefused(
  userId: string,
  options: {
    redis?: Redis;
    beforeRefusal?: () => Promise<void>;
    anonymousId?: string;
    quarantineTimeoutMs?: number;
    retry?: RetryPolicy;
  } = {},
): Promise<LoadReport> {
  const refused = event("track", {
    userId,
    anonymousId: options.anonymousId ?? null,
    event: "Product Viewed",
    properties: { product_id: "p" },
  });
  const [id] = await append(EVENT_STREAM, [refused], `u:${userId}`);
  const group = uid("g-quarantine");
  await redis().exec(["XGROUP", "CREATE", EVENT_STREAM, group, idBefore(id ?? "0-1")]);
  const hooks: LoaderHooks = {
    beforeCommit: async () => {
      await options.beforeRefusal?.();
      throw Object.assign(new Error("value too long for type character varying(8)"), { code: "22001" });
    },
  };
  return withDb((db) =>
    runLoader(
      { db, redis: options.redis ?? loaderRedis() },
      {
        stream: EVENT_STREAM,
        group,
        leaseName: uid("lease"),
        batchSize: 1,
        maxBatches: 1,
        hooks,
        ...(options.quarantineTimeoutMs ? { quarantineTimeoutMs: options.quarantineTimeoutMs } : {}),
        ...(options.retry ? { retry: options.retry } : {}),
      },
    ),
  );
}

/** The quarantine stream's entries of `userKey` (a second client). */
async function quarantinedOf(userKey: string): Promise<number> {
  const entries = (await redis().exec<unknown[][]>(["XRANGE", QUARANTINE, "-", "+"])) ?? [];
  return entries.filter((e) => {
    const f = e[1] as string[];
    return f[f.indexOf(STREAM_FIELDS.userKey) + 1] === userKey;
  }).length;
}

/** Entries of `stream` whose event JSON names `id` anywhere (a second client). */
async function entriesNaming(stream: string, id: string): Promise<number> {
  const entries = (await redis().exec<unknown[][]>(["XRANGE", stream, "-", "+"])) ?? [];
  return entries.filter((e) => {
    const f = e[1] as string[];
    return (f[f.indexOf(STREAM_FIELDS.event) + 1] ?? "").includes(id);
  }).length;
}

async function verifiedClean(userId: string): Promise<boolean> {
  const verification = await admin("GET", `/v1/admin/users/${userId}/erasure?kind=user`);
  return ((await verification.json()) as { clean: boolean }).clean;
}

const cleanAnswer = async (erasure: Promise<Response> | undefined) =>
  ((await (await erasure)?.json()) as { verification: { clean: boolean } } | undefined)?.verification.clean;

/** Until a session waits for an advisory lock: the erasure queued behind the writer that holds its lock shared. */
async function erasureWaiting(): Promise<void> {
  // The erasure's own lock: a bigint advisory lock is (classid, objid) = its high and low 32 bits, taken exclusive.
  const [high, low] = [String(ERASURE_LOCK >> 32n), String(ERASURE_LOCK & 0xffffffffn)];
  for (let tries = 0; tries < 250; tries++) {
    const [row] = await sql<{ n: number }>(
      `select count(*)::int as n from pg_locks where locktype = 'advisory' and not granted
         and mode = 'ExclusiveLock' and classid::bigint = $1 and objid::bigint = $2`,
      [high, low],
    );
    if ((row?.n ?? 0) > 0) return;
    await sleep(20);
  }
  throw new Error("no erasure waited for the erasure lock");
}

it("deletes the entry the loader moves to the quarantine stream while the erasure runs", async () => {
  const userId = uid("quarantined-during");
  let erasure: Promise<Response> | undefined;
  const racing = aroundQuarantineWrites(loaderRedis(), async (write) => {
    if (!erasure) {
      // The erasure lands between Postgres's refusal and the write: it either finishes at once (nothing holds it
      // up) or waits for the lock this move holds; then the write goes on.
      erasure = erase(userId);
      await Promise.race([erasure, sleep(1_500)]);
    }
    return write();
  });
  const load = await loadRefused(userId, { redis: racing });
  expect({
    load: { status: load.status, quarantined: load.quarantined },
    erasureAnsweredClean: await cleanAnswer(erasure),
    quarantinedOfErasedUser: await quarantinedOf(`u:${userId}`),
    verifierNow: await verifiedClean(userId),
  }).toEqual({
    load: { status: "ok", quarantined: 1 },
    erasureAnsweredClean: true,
    quarantinedOfErasedUser: 0,
    verifierNow: true,
  });
});

it("drops a refused entry whose user was erased before it reached the quarantine stream", async () => {
  const userId = uid("quarantined-after");
  let erasure: Promise<Response> | undefined;
  const load = await loadRefused(userId, {
    // The erasure arrives while the batch holds the erasure lock and waits for it; then Postgres refuses the batch.
    beforeRefusal: async () => {
      erasure ??= erase(userId);
      await erasureWaiting();
    },
  });
  expect({
    load: { status: load.status, quarantined: load.quarantined, erased: load.erased },
    erasureAnsweredClean: await cleanAnswer(erasure),
    quarantinedOfErasedUser: await quarantinedOf(`u:${userId}`),
    verifierNow: await verifiedClean(userId),
  }).toEqual({
    load: { status: "ok", quarantined: 0, erased: 1 },
    erasureAnsweredClean: true,
    quarantinedOfErasedUser: 0,
    verifierNow: true,
  });
});

it("an erasure is not held up by a quarantine write Redis does not answer, and the write landing late adds nothing", {
  timeout: 60_000,
}, async () => {
  const userId = uid("quarantine-stalled");
  // Redis takes every quarantine write of this load and answers none until released: a request accepted and never
  // answered. Once released, the writes it holds reach Redis.
  const [stalled, released] = [gate(), gate()];
  const landed: Promise<unknown>[] = [];
  const stalling = aroundQuarantineWrites(loaderRedis(), async (write) => {
    stalled.open();
    await released.wait;
    const landing = write();
    landed.push(landing);
    return landing;
  });
  const load = loadRefused(userId, {
    redis: stalling,
    quarantineTimeoutMs: 300,
    retry: { attempts: 20, baseDelayMs: 50, maxDelayMs: 200 },
  });
  await stalled.wait;
  // The user's erasure while the loader waits for Redis, holding the erasure lock shared.
  const erasure = await erase(userId);
  const answer = { status: erasure.status, clean: await cleanAnswer(Promise.resolve(erasure)) };
  released.open();
  const report = await load;
  await Promise.allSettled(landed);
  expect({
    erasure: answer,
    load: { status: report.status, quarantined: report.quarantined, erased: report.erased },
    writesLanded: landed.length > 0,
    quarantinedOfErasedUser: await quarantinedOf(`u:${userId}`),
  }).toEqual({
    erasure: { status: 200, clean: true },
    load: { status: "ok", quarantined: 0, erased: 1 },
    writesLanded: true,
    quarantinedOfErasedUser: 0,
  });
});

it("erasing a user deletes another user's entries on the user's erased device from both streams", async () => {
  const [userId, other, device] = [uid("erase-device-owner"), uid("other"), uid("shared-device")];
  // The user logged in on the device: the warehouse links it to the user, so erasing the user erases a:<device>.
  const login = streamNames("privacy-device");
  await append(login.stream, [event("identify", { userId, anonymousId: device })]);
  expect((await withDb((db) => runLoader({ db, redis: loaderRedis() }, login))).status).toBe("ok");
  // Another user's event on that device, recorded under that user's key: refused by Postgres and quarantined (it
  // stays in the event stream too, which this test's consumer group does not delete from).
  expect(await loadRefused(other, { anonymousId: device })).toMatchObject({ status: "ok", quarantined: 1 });
  const before = await admin("GET", `/v1/admin/users/${userId}/erasure?kind=user`);
  const stillThere = ((await before.json()) as { left: { stream: { matched: number } } }).left.stream.matched;

  const erasure = await erase(userId);
  const report = (await erasure.json()) as { userKeys: string[]; verification: { clean: boolean } };
  expect({
    verifierFoundBefore: stillThere,
    erasedDevice: report.userKeys.includes(`a:${device}`),
    answeredClean: report.verification.clean,
    inStream: await entriesNaming(EVENT_STREAM, device),
    inQuarantine: await entriesNaming(QUARANTINE, device),
  }).toEqual({ verifierFoundBefore: 2, erasedDevice: true, answeredClean: true, inStream: 0, inQuarantine: 0 });
});
