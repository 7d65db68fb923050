// The warehouse loader inside workerd, against the real Postgres and Redis of the test stack: stream → events,
// interactions and identities exactly once under injected faults (a crash between COMMIT and XACK, a transient
// error, a lost lease), never two runs at once, a backlog worked off in bounded runs, and the cron entry.
import { createExecutionContext, createScheduledController, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { ensureGroup, QUARANTINE_SUFFIX, readGroup } from "../../src/batch/consumer.ts";
import { CRON_RUN_STATE } from "../../src/batch/cron.ts";
import { acquireLease } from "../../src/batch/lease.ts";
import {
  LOADER_GROUP,
  type LoaderOptions,
  type LoadReport,
  MAX_QUARANTINED_PER_RUN,
  runLoader,
} from "../../src/batch/loader.ts";
import { REFRESH_LEASE } from "../../src/batch/refresh.ts";
import worker from "../../src/index.ts";
import { COORDINATOR_NAME } from "../../src/publish/coordinator.ts";
import { EVENT_STREAM, STREAM_FIELDS } from "../../src/session/stream.ts";
import { openClient } from "../../src/stores/db.ts";
import {
  append,
  aroundQuarantineWrites,
  dbSettings,
  event,
  loaded,
  loaderRedis,
  losingReplies,
  pendingCount,
  redis,
  sql,
  streamNames,
  T0,
  uid,
  viewed,
  withDb,
} from "./batch-helpers.ts";
import { createSchema, drain, dropSchema } from "./publish-helpers.ts";

/** No pauses between retries in tests (the policy itself is unit-tested). */
const noSleep = async () => {};

function load(names: ReturnType<typeof streamNames>, options: LoaderOptions = {}) {
  return withDb((db) => runLoader({ db, redis: loaderRedis() }, { ...names, sleep: noSleep, ...options }));
}

/** [k1, v1, k2, v2, …] → [[k1, v1], [k2, v2], …] (a stream entry's fields). */
const chunks = (flat: string[]) => Array.from({ length: flat.length / 2 }, (_, i) => [flat[2 * i], flat[2 * i + 1]]);

const views = (n: number, user = uid("anon")) =>
  Array.from({ length: n }, (_, k) => viewed(`p-${k % 7}`, { anonymousId: user, at: T0 + k * 1000 }));

describe("runLoader", () => {
  it("loads every entry once: events, their interactions, and acknowledges them", async () => {
    const names = streamNames("basic");
    const order = event("track", {
      userId: "u-1",
      anonymousId: null,
      event: "Order Completed",
      properties: {
        order_id: "o-1",
        products: [
          { product_id: "a", price: 3, quantity: 2 },
          { product_id: "b", price: "4.5", quantity: "1" },
        ],
      },
    });
    const batch = [...views(5), order, event("page", { name: "Home" })];
    await append(names.stream, batch);

    const report = await load(names, { batchSize: 3 });
    expect(report).toMatchObject({ status: "ok", stoppedBy: "drained", entries: 7, events: 7, duplicates: 0 });
    expect(report.interactions).toBe(7); // 5 views + 2 purchased products; the page has no product
    expect(report.batches).toBe(3);
    expect(await loaded(batch.map((e) => e.messageId))).toEqual({ events: 7, interactions: 7 });
    expect(await pendingCount(names.stream, names.group)).toBe(0);

    const rows = await sql<{ product_id: string; kind: string; quantity: number; price: number; order_id: string }>(
      "select product_id, kind, quantity, price, order_id from interactions where message_id = $1 order by position",
      [order.messageId],
    );
    expect(rows).toEqual([
      { product_id: "a", kind: "purchase", quantity: 2, price: 3, order_id: "o-1" },
      { product_id: "b", kind: "purchase", quantity: 1, price: 4.5, order_id: "o-1" },
    ]);
    const [row] = await sql<{ user_key: string; product_id: string; event_time: Date; stream_id: string }>(
      "select user_key, product_id, event_time, stream_id from events where message_id = $1",
      [order.messageId],
    );
    expect(row).toMatchObject({ user_key: "u:u-1", product_id: "a" });
    expect(row?.event_time.toISOString()).toBe(order.timestamp);
    expect(row?.stream_id).toMatch(/^\d+-\d+$/);

    const [run] = await sql<{ kind: string; trigger: string; status: string; stats: Record<string, unknown> }>(
      "select kind, trigger, status, stats from batch_runs where id = $1",
      [report.runId],
    );
    expect(run).toMatchObject({ kind: "load", trigger: "cron", status: "ok" });
    expect(run?.stats).toMatchObject({ events: 7, batches: 3, backlog: 0, lagMs: 0 });
  });

  it("loses nothing and duplicates nothing when it crashes between COMMIT and XACK", async () => {
    const names = streamNames("crash");
    const batch = views(30);
    await append(names.stream, batch);

    const crashed = await load(names, {
      batchSize: 10,
      writers: 1,
      hooks: {
        afterCommit: ({ batch }) => {
          if (batch === 2) throw new Error("injected crash after commit");
        },
      },
    });
    expect(crashed).toMatchObject({ status: "failed", stoppedBy: "error", batches: 2, events: 20 });
    expect(crashed.error).toContain("injected crash");
    // Batch 2 is committed but not acknowledged, batch 3 was read ahead but not loaded: both still pending.
    expect(await pendingCount(names.stream, names.group)).toBe(20);
    expect(await loaded(batch.map((e) => e.messageId))).toEqual({ events: 20, interactions: 20 });

    const next = await load(names, { batchSize: 10 });
    // The pending entries are read again first: batch 2's rows exist, so it adds nothing; batch 3's are new.
    expect(next).toMatchObject({ status: "ok", entries: 20, events: 10, duplicates: 10 });
    expect(await loaded(batch.map((e) => e.messageId))).toEqual({ events: 30, interactions: 30 });
    expect(await pendingCount(names.stream, names.group)).toBe(0);
    const [failedRun] = await sql<{ status: string; error: string }>(
      "select status, error from batch_runs where id = $1",
      [crashed.runId],
    );
    expect(failedRun).toMatchObject({ status: "failed", error: "injected crash after commit" });
  });

  it("recovers entries left pending under a consumer that is not one of its slots, a batch at a time", async () => {
    const names = streamNames("foreign-pending");
    const batch = views(25);
    await append(names.stream, batch);
    // Delivered, never acknowledged, to consumers this version's runs do not read with: a slot of a version with
    // more writers, and someone's own XREADGROUP.
    await ensureGroup(redis(), names.stream, names.group);
    expect(await readGroup(redis(), names.stream, names.group, "loader-7", ">", 12)).toHaveLength(12);
    expect(await readGroup(redis(), names.stream, names.group, "operator", ">", 13)).toHaveLength(13);

    const report = await load(names, { batchSize: 10 });
    expect({
      report: { status: report.status, entries: report.entries, events: report.events, backlog: report.backlog },
      loaded: await loaded(batch.map((e) => e.messageId)),
      pending: await pendingCount(names.stream, names.group),
    }).toEqual({
      report: { status: "ok", entries: 25, events: 25, backlog: 0 },
      loaded: { events: 25, interactions: 25 },
      pending: 0,
    });
  });

  it("keeps exactly-once with several batch transactions in flight and a crash among them", async () => {
    const names = streamNames("pipelined");
    const batch = views(60);
    await append(names.stream, batch);
    let largestPending = 0;
    const crashed = await load(names, {
      batchSize: 5,
      writers: 3,
      hooks: {
        beforeCommit: async ({ batch }) => {
          // Upstash refuses reads past 1,000 pending entries per consumer: no consumer ever holds more than a batch.
          const summary = await redis().exec<[number, string, string, [string, string][] | null]>([
            "XPENDING",
            names.stream,
            names.group,
          ]);
          for (const [, count] of summary[3] ?? []) largestPending = Math.max(largestPending, Number(count));
          // Uneven transaction times, so batches commit out of order.
          await new Promise((r) => setTimeout(r, (batch * 7) % 20));
        },
        afterCommit: ({ batch }) => {
          if (batch === 4) throw new Error("injected crash after commit");
        },
      },
    });
    expect(crashed.status).toBe("failed");
    expect(largestPending).toBeGreaterThan(0);
    expect(largestPending).toBeLessThanOrEqual(5);
    const afterCrash = await loaded(batch.map((e) => e.messageId));
    expect(afterCrash.events).toBe(crashed.events);
    expect(afterCrash.events).toBeGreaterThanOrEqual(20);
    expect(await pendingCount(names.stream, names.group)).toBeGreaterThanOrEqual(5); // batch 4 at least

    const next = await load(names, { batchSize: 5, writers: 3 });
    expect(next.status).toBe("ok");
    expect(crashed.events + next.events).toBe(60);
    expect(await loaded(batch.map((e) => e.messageId))).toEqual({ events: 60, interactions: 60 });
    expect(await pendingCount(names.stream, names.group)).toBe(0);
  });

  it("never runs twice at once: the second run skips while the first holds the lease", async () => {
    const names = streamNames("overlap");
    const batch = views(40);
    await append(names.stream, batch);

    let release: () => void = () => {};
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    let entered: () => void = () => {};
    const inside = new Promise<void>((resolve) => {
      entered = resolve;
    });
    // The first run parks after its first batch until the second has tried and given up. (Parked inside the
    // transaction it would hold the lease row's lock, and the second run's attempt would wait for it instead.)
    const first = load(names, {
      batchSize: 10,
      hooks: {
        afterCommit: async ({ batch }) => {
          if (batch === 1) {
            entered();
            await gate;
          }
        },
      },
    });
    await inside;
    const second = await load(names, { batchSize: 10 });
    release();
    const done = await first;

    expect(second).toMatchObject({ status: "skipped", stoppedBy: "lease_held", entries: 0, events: 0 });
    expect(done).toMatchObject({ status: "ok", events: 40 });
    expect(await loaded(batch.map((e) => e.messageId))).toEqual({ events: 40, interactions: 40 });
    const [skipped] = await sql<{ status: string }>("select status from batch_runs where id = $1", [second.runId]);
    expect(skipped?.status).toBe("skipped");
    // Released at the end: the next run takes it.
    expect(await load(names)).toMatchObject({ status: "ok", events: 0 });
  });

  it("retries a transient failure (the batch rolls back and runs again) and fails at once on others", async () => {
    const names = streamNames("retry");
    const batch = views(12);
    await append(names.stream, batch);
    const attempts: number[] = [];
    const report = await load(names, {
      batchSize: 5,
      writers: 1,
      hooks: {
        beforeCommit: ({ batch, attempt }) => {
          attempts.push(batch * 10 + attempt);
          if (batch === 2 && attempt < 3) {
            throw Object.assign(new Error("terminating connection due to administrator command"), { code: "57P01" });
          }
        },
      },
    });
    expect(report).toMatchObject({ status: "ok", events: 12, retries: 2, duplicates: 0 });
    expect(attempts).toEqual([11, 21, 22, 23, 31]);
    expect(await loaded(batch.map((e) => e.messageId))).toEqual({ events: 12, interactions: 12 });

    const names2 = streamNames("permanent");
    const batch2 = views(3);
    await append(names2.stream, batch2);
    const failed = await load(names2, {
      hooks: {
        beforeCommit: () => {
          throw Object.assign(new Error("permission denied for table events"), { code: "42501" });
        },
      },
    });
    expect(failed).toMatchObject({ status: "failed", retries: 0, events: 0 });
    // Rolled back and not acknowledged: the next run loads it.
    expect(await loaded(batch2.map((e) => e.messageId))).toEqual({ events: 0, interactions: 0 });
    expect(await load(names2)).toMatchObject({ status: "ok", events: 3 });
  });

  it("gives up on a Redis call that never answers after redisTimeoutMs and retries it, instead of waiting for good", async () => {
    const names = streamNames("redis-silent");
    const batch = views(6);
    await append(names.stream, batch);
    let silenced = 0;
    const real = loaderRedis();
    // The first read of new entries never gets an answer (a connection accepted and never served).
    const silent = new Proxy(real, {
      get(target, prop, receiver) {
        if (prop !== "exec") return Reflect.get(target, prop, receiver);
        return (command: [string, ...(string | number)[]]) => {
          if (command[0] === "XREADGROUP" && command.at(-1) === ">" && silenced++ === 0) return new Promise(() => {});
          return target.exec(command);
        };
      },
    });
    const run = withDb((db) =>
      runLoader({ db, redis: silent }, { ...names, sleep: noSleep, batchSize: 10, redisTimeoutMs: 300 }),
    );
    const report = await Promise.race([
      run,
      new Promise<"still waiting">((r) => setTimeout(r, 8_000, "still waiting")),
    ]);
    expect(report === "still waiting" ? report : { status: report.status, events: report.events }).toEqual({
      status: "ok",
      events: 6,
    });
    expect(silenced).toBeGreaterThan(1);
    expect(await pendingCount(names.stream, names.group)).toBe(0);
  });

  it("recovers a read whose reply was lost: the delivered entries come from the pending list", async () => {
    const names = streamNames("lost-reply");
    const batch = views(12);
    await append(names.stream, batch);
    let lost = 0;
    // Redis runs the second `>` read, then the reply is lost on the way back (a transient network failure).
    const flaky = losingReplies(loaderRedis(), (c) => c[0] === "XREADGROUP" && c.at(-1) === ">" && ++lost === 2);
    const report = await withDb((db) => runLoader({ db, redis: flaky }, { ...names, batchSize: 5, sleep: noSleep }));
    expect(report).toMatchObject({ status: "ok", events: 12, duplicates: 0, retries: 1 });
    expect(await loaded(batch.map((e) => e.messageId))).toEqual({ events: 12, interactions: 12 });
    expect(await pendingCount(names.stream, names.group)).toBe(0);
  });

  it("works off a backlog over several bounded runs and reports what is left and how old it is", async () => {
    const names = streamNames("backlog");
    const batch = views(25);
    await append(names.stream, batch);

    const runs = [];
    for (let k = 0; k < 3; k++) runs.push(await load(names, { batchSize: 5, maxBatches: 2 }));
    expect(runs.map((r) => r.events)).toEqual([10, 10, 5]);
    expect(runs.map((r) => r.stoppedBy)).toEqual(["max_batches", "max_batches", "drained"]);
    expect(runs.map((r) => r.backlog)).toEqual([15, 5, 0]);
    expect(runs[0]?.lagMs).toBeGreaterThanOrEqual(0);
    expect(runs[2]?.lagMs).toBe(0);
    expect(await loaded(batch.map((e) => e.messageId))).toEqual({ events: 25, interactions: 25 });

    // A budget already spent starts no batch at all.
    const names2 = streamNames("budget");
    await append(names2.stream, views(3));
    const none = await load(names2, { budgetMs: 0 });
    expect(none).toMatchObject({ status: "ok", stoppedBy: "budget", batches: 0, backlog: 3 });
  });

  it("measures lagMs on Redis's clock, the clock of the stream ids, not the Worker's", async () => {
    const names = streamNames("lag-clock");
    await append(names.stream, views(4));
    // The Worker's clock an hour ahead of Redis's: the entries left are seconds old all the same.
    const ahead = () => Date.now() + 3_600_000;
    const report = await load(names, { batchSize: 2, maxBatches: 1, now: ahead });
    expect({ backlog: report.backlog, lagUnderAMinute: (report.lagMs ?? Number.NaN) < 60_000 }).toEqual({
      backlog: 2,
      lagUnderAMinute: true,
    });
  });

  it("records identities from identify, alias and events that carry both ids", async () => {
    const names = streamNames("identity");
    const [user, anon, anon2, oldUser] = [uid("u"), uid("a"), uid("a"), uid("old")];
    const batch = [
      event("identify", { userId: user, anonymousId: anon, traits: { email: "x@example.com" }, at: T0 }),
      viewed("p1", { userId: user, anonymousId: anon, at: T0 + 60_000 }),
      event("alias", { userId: user, previousId: oldUser, anonymousId: anon2, at: T0 + 120_000 }),
      viewed("p2", { userId: null, anonymousId: anon, at: T0 + 5_000 }),
    ];
    await append(names.stream, batch);
    expect(await load(names)).toMatchObject({ status: "ok", events: 4, identities: 3 });
    const rows = await sql<{ anonymous_id: string; first_seen: Date; last_seen: Date }>(
      "select anonymous_id, first_seen, last_seen from identities where user_id = $1 order by anonymous_id",
      [user],
    );
    const byId = new Map(rows.map((r) => [r.anonymous_id, r]));
    expect([...byId.keys()].sort()).toEqual([anon, anon2, oldUser].sort());
    expect(byId.get(anon)?.first_seen.getTime()).toBe(T0);
    expect(byId.get(anon)?.last_seen.getTime()).toBe(T0 + 60_000);
    expect(byId.get(oldUser)?.first_seen.getTime()).toBe(T0 + 120_000);

    // A later event widens last_seen; an earlier one first_seen; one inside the range changes nothing.
    await append(names.stream, [
      viewed("p3", { userId: user, anonymousId: anon, at: T0 + 600_000 }),
      viewed("p4", { userId: user, anonymousId: anon, at: T0 - 600_000 }),
      viewed("p5", { userId: user, anonymousId: anon, at: T0 + 30_000 }),
    ]);
    expect(await load(names)).toMatchObject({ events: 3, identities: 1 });
    const [widened] = await sql<{ first_seen: Date; last_seen: Date }>(
      "select first_seen, last_seen from identities where user_id = $1 and anonymous_id = $2",
      [user, anon],
    );
    expect(widened?.first_seen.getTime()).toBe(T0 - 600_000);
    expect(widened?.last_seen.getTime()).toBe(T0 + 600_000);
  });

  it("stops before committing once its lease was taken over (fencing)", async () => {
    const names = streamNames("fence");
    const batch = views(6);
    await append(names.stream, batch);
    const report = await load(names, {
      batchSize: 3,
      writers: 1,
      hooks: {
        afterCommit: async ({ batch }) => {
          // Another run takes the lease (as if ours had expired while this one stalled).
          if (batch === 1) await sql("update leases set holder = 'someone-else' where name = $1", [names.leaseName]);
        },
      },
    });
    expect(report).toMatchObject({ status: "failed", stoppedBy: "lease_lost", events: 3 });
    expect(await loaded(batch.map((e) => e.messageId))).toEqual({ events: 3, interactions: 3 });
    const [lease] = await sql<{ holder: string }>("select holder from leases where name = $1", [names.leaseName]);
    expect(lease?.holder).toBe("someone-else");
  });

  it("a batch whose transaction outlasts the lease's lifetime commits with the lease renewed from its commit, not its start", async () => {
    const names = streamNames("lease-clock");
    const [user, anon] = [uid("u"), uid("a")];
    await append(names.stream, [event("identify", { userId: user, anonymousId: anon })]);
    // A second connection holds the identity row the batch upserts, uncommitted: the batch's transaction waits for
    // it, longer than the lease's lifetime, before it renews the lease.
    const blocker = openClient(dbSettings());
    await blocker.connect();
    let takenOver: boolean | undefined;
    try {
      await blocker.query("begin");
      await blocker.query(
        "insert into identities (anonymous_id, user_id, first_seen, last_seen) values ($1, $2, now(), now())",
        [anon, user],
      );
      const released = new Promise((r) => setTimeout(r, 1_500)).then(() => blocker.query("rollback"));
      const report = await load(names, {
        leaseTtlMs: 1_000,
        // The wait must not be cancelled here (statementTimeoutMs defaults to a quarter of the lease).
        statementTimeoutMs: 10_000,
        writers: 1,
        hooks: {
          // Between COMMIT and XACK: the run is still going, so nobody else may take its lease.
          afterCommit: async () => {
            takenOver = await withDb((db) => acquireLease(db, names.leaseName, "another-run", 60_000));
          },
        },
      });
      await released;
      expect({ status: report.status, events: report.events, takenOver }).toEqual({
        status: "ok",
        events: 1,
        takenOver: false,
      });
    } finally {
      await blocker.end();
    }
  });

  it("a batch statement that waits past statementTimeoutMs is cancelled: the run fails at once and the next loads it", async () => {
    const names = streamNames("statement-timeout");
    const [user, anon] = [uid("u"), uid("a")];
    const identify = event("identify", { userId: user, anonymousId: anon });
    await append(names.stream, [identify]);
    // A second connection holds the identity row the batch upserts for 4 s: far longer than the bound.
    const blocker = openClient(dbSettings());
    await blocker.connect();
    let blocked = true;
    try {
      await blocker.query("begin");
      await blocker.query(
        "insert into identities (anonymous_id, user_id, first_seen, last_seen) values ($1, $2, now(), now())",
        [anon, user],
      );
      const released = new Promise((r) => setTimeout(r, 4_000))
        .then(() => blocker.query("rollback"))
        .then(() => {
          blocked = false;
        });
      const report = await load(names, { writers: 1, statementTimeoutMs: 300 });
      const finishedWhileBlocked = blocked;
      await released;
      const again = await load(names, { writers: 1, statementTimeoutMs: 300 });
      expect({
        report: { status: report.status, stoppedBy: report.stoppedBy, error: report.error?.slice(0, 5) },
        finishedWhileBlocked,
        again: { status: again.status, events: again.events },
        loaded: await loaded([identify.messageId]),
      }).toEqual({
        report: { status: "failed", stoppedBy: "error", error: "57014" },
        finishedWhileBlocked: true,
        again: { status: "ok", events: 1 },
        loaded: { events: 1, interactions: 0 },
      });
    } finally {
      await blocker.end();
    }
  });

  it("a lease taken again by its own holder (a retry after a lost answer) is granted; another holder waits", async () => {
    const name = uid("lease");
    await withDb(async (db) => {
      expect(await acquireLease(db, name, "run-1", 60_000)).toBe(true);
      // The answer to that insert was lost: the run's retry finds its own, unexpired lease.
      expect(await acquireLease(db, name, "run-1", 60_000)).toBe(true);
      expect(await acquireLease(db, name, "run-2", 60_000)).toBe(false);
    });
    const [lease] = await sql<{ holder: string }>("select holder from leases where name = $1", [name]);
    expect(lease?.holder).toBe("run-1");
  });

  it("lets the next run in once a crashed run's lease expires", async () => {
    const names = streamNames("expiry");
    await append(names.stream, views(2));
    await sql("insert into leases (name, holder, expires_at) values ($1, 'crashed', now() + interval '1 second')", [
      names.leaseName,
    ]);
    expect(await load(names)).toMatchObject({ status: "skipped" });
    await new Promise((r) => setTimeout(r, 1_200));
    expect(await load(names)).toMatchObject({ status: "ok", events: 2 });
  });

  it("acknowledges malformed entries without loading them, and can delete what it loaded", async () => {
    const names = streamNames("malformed");
    const good = views(3);
    await append(names.stream, good);
    await redis().exec(["XADD", names.stream, "*", "id", "x", "user", "a:x", "e", "{not json"]);
    await redis().exec(["XADD", names.stream, "*", "id", "y", "user", "a:y", "e", JSON.stringify({ type: "nope" })]);
    const report = await load(names, { deleteAcked: true });
    expect(report).toMatchObject({ status: "ok", events: 3, malformed: 2, acked: 5, deleted: 5 });
    expect(await redis().exec(["XLEN", names.stream])).toBe(0);
    expect(await loaded(good.map((e) => e.messageId))).toEqual({ events: 3, interactions: 3 });
  });

  it("keeps odd text (NUL, lone surrogates, numeric-looking ids) loadable", async () => {
    const names = streamNames("odd");
    const odd = [
      viewed("p\u0000x", { anonymousId: "123", properties: { product_id: "007", note: "a\u0000b\ud800c", n: "true" } }),
      event("track", { anonymousId: "1e5", event: "Weird \ud83d", properties: { "k\u0000": 1 } }),
    ];
    await append(names.stream, odd);
    expect(await load(names)).toMatchObject({ status: "ok", events: 2, malformed: 0 });
    const rows = await sql<{ user_key: string; product_id: string | null; properties: Record<string, unknown> }>(
      "select user_key, product_id, properties from events where message_id = any($1) order by user_key",
      [odd.map((e) => e.messageId)],
    );
    expect(rows.map((r) => r.user_key)).toEqual(["a:123", "a:1e5"]);
    expect(rows[0]?.product_id).toBe("007");
    expect(rows[0]?.properties.note).toBe("ab\ufffdc");
  });
});

describe("entries that fail Postgres as they are", () => {
  /** A time Postgres cannot hold (before 4713 BC): streamed by a writer other than collection, which clamps times. */
  const NO_TIME = "-100000-01-01T00:00:00.000Z";

  // Collection refuses NUL in ids now; entries streamed before it did must still load, and not block the stream.
  it("loads an entry whose ids hold a NUL, with its ids as Postgres stores them, between two ordinary ones", async () => {
    const names = streamNames("nul-ids");
    const anon = uid("anon");
    const user = uid("user");
    const before = viewed("p-1", { anonymousId: uid("anon") });
    const odd = viewed("p-2", { anonymousId: `${anon}\u0000x` });
    // An alias whose previousId is the anonymousId but for a NUL: one identity link, not two rows of one key.
    const alias = event("alias", { userId: user, anonymousId: anon, previousId: `${anon}\u0000` });
    const after = viewed("p-3", { anonymousId: uid("anon"), at: T0 + 1000 });
    await append(names.stream, [before, odd, alias, after]);
    const report = await load(names, { batchSize: 10 });
    const rows = await sql<{ user_key: string }>("select user_key from events where message_id = $1", [odd.messageId]);
    const links = await sql<{ anonymous_id: string }>("select anonymous_id from identities where user_id = $1", [user]);
    expect({
      status: report.status,
      error: report.error,
      loaded: await loaded([before, odd, alias, after].map((e) => e.messageId)),
      oddKey: rows[0]?.user_key,
      links: links.map((l) => l.anonymous_id),
      pending: await pendingCount(names.stream, names.group),
    }).toEqual({
      status: "ok",
      error: undefined,
      loaded: { events: 4, interactions: 3 },
      oddKey: `a:${anon}x`,
      links: [anon],
      pending: 0,
    });
  });

  it("loads an entry another writer streamed without optional ids, acknowledges one without rows, and goes on", async () => {
    const names = streamNames("other-writer");
    const anon = uid("anon");
    // No groupId and no previousId (another writer of the stream leaves them out), and a NUL in the anonymousId:
    // the ids are cleaned, and the absent ones stay absent.
    const { groupId: _g, previousId: _p, ...partial } = viewed("p-1", { anonymousId: `${anon}\u0000x` });
    // An empty userId, no anonymousId and no user field: no user key to load it under.
    const keyless = { ...viewed("p-2"), userId: "", anonymousId: null };
    const r = redis();
    const { messageId: id, userKey, event: e } = STREAM_FIELDS;
    await r.exec([
      "XADD",
      names.stream,
      "*",
      id,
      partial.messageId,
      userKey,
      `a:${anon}\u0000x`,
      e,
      JSON.stringify(partial),
    ]);
    await r.exec(["XADD", names.stream, "*", id, keyless.messageId, e, JSON.stringify(keyless)]);
    const after = viewed("p-3", { at: T0 + 1 });
    await append(names.stream, [after]);
    const first = await load(names);
    const again = await load(names);
    const [row] = await sql<{ user_key: string }>("select user_key from events where message_id = $1", [
      partial.messageId,
    ]);
    expect({
      first: { status: first.status, error: first.error, events: first.events, malformed: first.malformed },
      again: { status: again.status, entries: again.entries },
      loaded: await loaded([partial.messageId, after.messageId]),
      keyless: await loaded([keyless.messageId]),
      partialKey: row?.user_key,
      pending: await pendingCount(names.stream, names.group),
    }).toEqual({
      first: { status: "ok", error: undefined, events: 2, malformed: 1 },
      again: { status: "ok", entries: 0 },
      loaded: { events: 2, interactions: 2 },
      keyless: { events: 0, interactions: 0 },
      partialKey: `a:${anon}x`,
      pending: 0,
    });
  });

  it("moves an entry Postgres refuses to the quarantine stream and loads the others of its batch", async () => {
    const names = streamNames("quarantine");
    const good = Array.from({ length: 6 }, (_, k) => viewed(`p-${k}`, { at: T0 + k }));
    const odd = { ...viewed("p-x"), timestamp: NO_TIME };
    const ids = await append(names.stream, [...good.slice(0, 4), odd, ...good.slice(4)]);
    const report = await load(names, { batchSize: 10 });
    const again = await load(names, { batchSize: 10 });
    const quarantined = (await redis().exec<unknown[][]>(["XRANGE", `${names.stream}${QUARANTINE_SUFFIX}`, "-", "+"]))
      .map((e) => Object.fromEntries(chunks(e[1] as string[])))
      .map((f) => ({ id: f.id, from: f.from, error: f.error }));
    expect({
      report: { status: report.status, quarantined: report.quarantined, events: report.events, acked: report.acked },
      again: { status: again.status, entries: again.entries },
      loaded: await loaded([...good, odd].map((e) => e.messageId)),
      quarantined,
      pending: await pendingCount(names.stream, names.group),
    }).toEqual({
      report: { status: "ok", quarantined: 1, events: 6, acked: 7 },
      again: { status: "ok", entries: 0 },
      loaded: { events: 6, interactions: 6 },
      quarantined: [{ id: odd.messageId, from: ids[4], error: expect.stringMatching(/^22\d\d\d .*out of range/) }],
      pending: 0,
    });
  });

  it("fails the run once it has quarantined MAX_QUARANTINED_PER_RUN entries: a refusal of everything is no poison", async () => {
    const names = streamNames("quarantine-cap");
    const batch = views(MAX_QUARANTINED_PER_RUN + 2);
    await append(names.stream, batch);
    const refuseAll = {
      beforeCommit: () => {
        throw Object.assign(new Error("value too long for type character varying(8)"), { code: "22001" });
      },
    };
    const report = await load(names, { batchSize: 20, hooks: refuseAll });
    expect({
      status: report.status,
      quarantined: report.quarantined,
      pending: await pendingCount(names.stream, names.group),
      quarantine: await redis().exec(["XLEN", `${names.stream}${QUARANTINE_SUFFIX}`]),
    }).toEqual({
      status: "failed",
      quarantined: MAX_QUARANTINED_PER_RUN,
      pending: 2,
      quarantine: MAX_QUARANTINED_PER_RUN,
    });
  });

  it("records Postgres's SQLSTATE and message for a run Postgres failed, not drizzle's statement text", async () => {
    const names = streamNames("run-error");
    await append(
      names.stream,
      Array.from({ length: MAX_QUARANTINED_PER_RUN + 1 }, (_, k) => ({ ...viewed(`p-${k}`), timestamp: NO_TIME })),
    );
    const report = await load(names, { batchSize: 20 });
    const [row] = await sql<{ error: string }>("select error from batch_runs where id = $1", [report.runId]);
    expect({ status: report.status, quarantined: report.quarantined, error: row?.error }).toEqual({
      status: "failed",
      quarantined: MAX_QUARANTINED_PER_RUN,
      error: expect.stringMatching(/^22\d\d\d .*out of range/),
    });
  });

  it("does not retry a data error as transient because an event of the batch mentions a time-out", async () => {
    const names = streamNames("not-transient");
    const chatty = viewed("p-1", { at: T0 + 1 });
    chatty.properties = { ...chatty.properties, title: "Checkout timed out, please retry" };
    await append(names.stream, [chatty, { ...viewed("p-2"), timestamp: NO_TIME }]);
    const report = await load(names, { batchSize: 10 });
    expect({
      status: report.status,
      quarantined: report.quarantined,
      events: report.events,
      retries: report.retries,
    }).toEqual({ status: "ok", quarantined: 1, events: 1, retries: 0 });
  });

  it("quarantines at most MAX_QUARANTINED_PER_RUN entries with batches in flight at once", async () => {
    const names = streamNames("quarantine-cap-writers");
    await append(
      names.stream,
      Array.from({ length: 40 }, (_, k) => ({ ...viewed(`p-${k}`), timestamp: NO_TIME })),
    );
    // The quarantine writes of the three batches in flight arrive together (a Redis round trip can take longer than
    // a refused one-entry transaction): each waits until three are waiting, or 500 ms.
    const waiting: (() => void)[] = [];
    const together = aroundQuarantineWrites(loaderRedis(), async (write) => {
      await new Promise<void>((resolve) => {
        waiting.push(resolve);
        if (waiting.length < 3) setTimeout(resolve, 500);
        else for (const release of waiting.splice(0)) release();
      });
      return write();
    });
    const report = await withDb((db) =>
      runLoader({ db, redis: together }, { ...names, sleep: noSleep, batchSize: 10, writers: 3 }),
    );
    expect({
      status: report.status,
      quarantined: report.quarantined,
      quarantine: await redis().exec(["XLEN", `${names.stream}${QUARANTINE_SUFFIX}`]),
    }).toEqual({ status: "failed", quarantined: MAX_QUARANTINED_PER_RUN, quarantine: MAX_QUARANTINED_PER_RUN });
  });

  it("a move to the quarantine whose transaction fails after its write quarantines the entry once", async () => {
    const names = streamNames("quarantine-retry");
    const suffix = crypto.randomUUID().replaceAll("-", "").slice(0, 12);
    const [fn, seq, trigger] = [`fail_commit_${suffix}`, `fail_commit_seq_${suffix}`, `fail_commit_trg_${suffix}`];
    // The first COMMIT of a transaction that extended this run's lease fails with a transient SQLSTATE (a deferred
    // trigger runs at COMMIT). The batch's own transaction never gets there: Postgres refuses its data first.
    await sql(`create sequence ${seq}`);
    await sql(`create function ${fn}() returns trigger language plpgsql as $$
      begin
        if new.name = '${names.leaseName}' and nextval('${seq}') = 1 then
          raise exception 'could not serialize access' using errcode = '40001';
        end if;
        return null;
      end $$`);
    await sql(
      `create constraint trigger ${trigger} after update on leases deferrable initially deferred for each row execute function ${fn}()`,
    );
    try {
      await append(names.stream, [{ ...viewed("p-x"), timestamp: NO_TIME }]);
      const report = await load(names);
      expect({
        report: { status: report.status, quarantined: report.quarantined, retries: report.retries },
        quarantine: await redis().exec(["XLEN", `${names.stream}${QUARANTINE_SUFFIX}`]),
      }).toEqual({ report: { status: "ok", quarantined: 1, retries: 1 }, quarantine: 1 });
    } finally {
      await sql(`drop trigger ${trigger} on leases`);
      await sql(`drop function ${fn}()`);
      await sql(`drop sequence ${seq}`);
    }
  });

  it("a run that lost its lease quarantines nothing: the run that took over moves the refused entry, once", async () => {
    const names = streamNames("stale-quarantine");
    const good = viewed("p-1");
    await append(names.stream, [good, { ...viewed("p-x"), timestamp: NO_TIME }]);
    let takeover: LoadReport | undefined;
    // The batch is refused and halved; once its good half committed, this run stalls past its lease's expiry, and
    // the next run takes over and recovers both entries from the pending list.
    const stale = await load(names, {
      batchSize: 2,
      writers: 1,
      hooks: {
        afterCommit: async () => {
          if (takeover) return;
          await sql("update leases set expires_at = now() - interval '1 second' where name = $1", [names.leaseName]);
          takeover = await load(names);
        },
      },
    });
    expect({
      takeover: { status: takeover?.status, quarantined: takeover?.quarantined },
      stale: { status: stale.status, stoppedBy: stale.stoppedBy, quarantined: stale.quarantined },
      quarantine: await redis().exec(["XLEN", `${names.stream}${QUARANTINE_SUFFIX}`]),
      loaded: await loaded([good.messageId]),
      pending: await pendingCount(names.stream, names.group),
    }).toEqual({
      takeover: { status: "ok", quarantined: 1 },
      stale: { status: "failed", stoppedBy: "lease_lost", quarantined: 0 },
      quarantine: 1,
      loaded: { events: 1, interactions: 1 },
      pending: 0,
    });
  });

  it("with deleteAcked, a run cut off between the delete and the acknowledgement leaves nothing in Redis", async () => {
    const names = streamNames("xdel-cut");
    const batch = Array.from({ length: 6 }, (_, k) => viewed(`p-${k}`, { at: T0 + k }));
    await append(names.stream, batch);
    const real = loaderRedis();
    // The run dies between the two commands of its first batch (whichever it sends second never arrives).
    let sent = 0;
    const cut = new Proxy(real, {
      get(target, prop, receiver) {
        if (prop !== "exec") return Reflect.get(target, prop, receiver);
        return async (command: [string, ...(string | number)[]]) => {
          if (command[0] === "XACK" || command[0] === "XDEL") {
            if (sent++ === 1) throw new Error("the Worker died");
          }
          return target.exec(command);
        };
      },
    });
    const crashed = await withDb((db) =>
      runLoader(
        { db, redis: cut },
        {
          ...names,
          sleep: noSleep,
          batchSize: 3,
          writers: 1,
          deleteAcked: true,
          retry: { attempts: 1, baseDelayMs: 0, maxDelayMs: 0 },
        },
      ),
    );
    const more = Array.from({ length: 3 }, (_, k) => viewed(`q-${k}`, { at: T0 + 100 + k }));
    await append(names.stream, more);
    const next = await load(names, { batchSize: 3, deleteAcked: true });
    expect({
      crashed: crashed.status,
      next: next.status,
      loaded: await loaded([...batch, ...more].map((e) => e.messageId)),
      pending: await pendingCount(names.stream, names.group),
      length: await redis().exec(["XLEN", names.stream]),
    }).toEqual({ crashed: "failed", next: "ok", loaded: { events: 9, interactions: 9 }, pending: 0, length: 0 });
  });
});

describe("scheduled()", () => {
  it("loads the production stream into Postgres and records the run", async () => {
    // Other test files write to (and the health test's cron also drains) this stream: only our events are checked.
    // Locally acknowledged entries stay in the stream (those tests read it back).
    expect(env.LOADER_DELETE_ACKED).toBe("false");
    const mine = views(5);
    await append(EVENT_STREAM, mine);
    const ids = mine.map((e) => e.messageId);
    const deadline = Date.now() + 20_000;
    while ((await loaded(ids)).events < ids.length) {
      if (Date.now() > deadline) throw new Error("the cron did not load the events");
      const ctx = createExecutionContext();
      await worker.scheduled(createScheduledController({ scheduledTime: Date.now(), cron: "*/15 * * * *" }), env, ctx);
      await waitOnExecutionContext(ctx);
    }
    expect(await loaded(ids)).toEqual({ events: 5, interactions: 5 });
    const [run] = await sql<{ status: string; stats: { group: string; stream: string } }>(
      "select status, stats from batch_runs where kind = 'load' and trigger = 'cron' and status = 'ok' order by id desc limit 1",
    );
    expect(run?.stats).toMatchObject({ group: LOADER_GROUP, stream: EVENT_STREAM });
  });

  it("two runs at once: both finish, one refreshes, the other is skipped by the lease; events loaded once", async () => {
    // A Postgres schema of this test's own: its batch_runs, leases and sync_state hold only these two runs.
    const { schema, q } = await createSchema("cron2");
    const testEnv = { ...env, DATABASE_SCHEMA: schema };
    // A publish still running (the previous test's cron started one) makes a refresh skip compute and publish: the
    // coordinator is drained first, so the refresh that takes the lease computes.
    await drain(env.PUBLISH_COORDINATOR.getByName(COORDINATOR_NAME));
    try {
      const mine = views(4);
      const ids = mine.map((e) => e.messageId);
      await append(EVENT_STREAM, mine);
      const times = [Date.UTC(2026, 10, 27, 9, 0), Date.UTC(2026, 10, 27, 9, 15)];
      const runs = times.map(async (scheduledTime) => {
        const ctx = createExecutionContext();
        await worker.scheduled(createScheduledController({ scheduledTime, cron: "*/15 * * * *" }), testEnv, ctx);
        await waitOnExecutionContext(ctx);
      });
      // Both invocations finish without an error (a failed refresh fails its invocation).
      expect(await Promise.allSettled(runs)).toEqual([
        { status: "fulfilled", value: undefined },
        { status: "fulfilled", value: undefined },
      ]);

      const refreshes = await q<{ id: number; status: string; stats: { reason?: string; lease?: string } }>(
        "select id, status, stats from batch_runs where kind = 'refresh' and trigger = 'cron' order by id",
      );
      expect(refreshes).toHaveLength(2);
      const ran = refreshes.filter((r) => r.status !== "skipped");
      const skipped = refreshes.filter((r) => r.status === "skipped");
      expect(ran.map((r) => r.status)).toEqual(["ok"]);
      expect(skipped.map((r) => r.stats)).toEqual([{ reason: "lease_held", lease: REFRESH_LEASE }]);
      // Exactly one compute, under the refresh that ran; none under the skipped one.
      const computes = await q<{ parent_id: number }>("select parent_id from batch_runs where kind = 'compute'");
      expect(computes.map((r) => Number(r.parent_id))).toEqual([Number(ran[0]?.id)]);
      // The lease is released again.
      expect(await q("select name from leases where name = $1", [REFRESH_LEASE])).toEqual([]);

      // Each event loaded exactly once — by these runs, or (when another test file's cron drained the shared stream
      // first) into the public schema, never in both, never twice.
      const here = await q<{ message_id: string; n: number }>(
        "select message_id, count(*)::int as n from events where message_id = any($1) group by message_id",
        [ids],
      );
      const there = await sql<{ message_id: string; n: number }>(
        "select message_id, count(*)::int as n from events where message_id = any($1) group by message_id",
        [ids],
      );
      expect([...here, ...there].map((r) => r.message_id).sort()).toEqual([...ids].sort());
      for (const r of [...here, ...there]) expect(r.n).toBe(1);

      // One cron.last_run record, of one of the two invocations, naming a refresh run with the status it recorded.
      const state = await q<{ value: { scheduledTime: string; refresh: { runId: number; status: string } } }>(
        "select value from sync_state where name = $1",
        [CRON_RUN_STATE],
      );
      expect(state).toHaveLength(1);
      const last = state[0]?.value;
      expect(times.map((t) => new Date(t).toISOString())).toContain(last?.scheduledTime);
      const named = refreshes.find((r) => Number(r.id) === last?.refresh.runId);
      expect(named, "cron.last_run names one of the two refresh runs").toBeDefined();
      expect(last?.refresh.status).toBe(named?.status);
    } finally {
      // The publish the refresh started reads this schema: finished before the schema goes.
      await drain(env.PUBLISH_COORDINATOR.getByName(COORDINATOR_NAME));
      await dropSchema(schema);
    }
  });
});
