// History checks of the loader end to end (sent → acknowledged → session object → stream → Postgres): crashes
// between a batch's COMMIT and its XACK (the next run re-delivers the batch), a lost XACK reply, and missed cron
// runs (a backlog of several intervals caught up by one run, or by bounded runs).
import { describe, expect, it } from "vitest";
import { EVENT_STREAM } from "../../src/session/stream.ts";
import { loaderRedis, losingReplies, pendingCount } from "./batch-helpers.ts";
import {
  drainAndCheck,
  expectClean,
  flushSessions,
  type HistoryRun,
  load,
  runsEndedAfterEach,
  sendAll,
  userKeys,
} from "./history-helpers.ts";

const begin = runsEndedAfterEach();

async function loadedCount(r: HistoryRun): Promise<number> {
  const [row] = await r.q<{ n: number }>("select count(*)::int as n from events where message_id like $1", [
    `${r.prefix}-%`,
  ]);
  return row?.n ?? 0;
}

describe("history: a crash between the Postgres commit and the stream acknowledgement", () => {
  it("re-delivers committed batches and adds nothing twice, over several crashed runs", {
    timeout: 120_000,
  }, async () => {
    const run = await begin("crash", { users: 10, events: 300, seed: 404 });
    await sendAll(run, run.batches);
    await flushSessions(userKeys(run));

    for (const crashAt of [1, 2, 3]) {
      const crashed = await load(run, {
        batchSize: 30,
        hooks: {
          afterCommit: ({ batch }) => {
            if (batch === crashAt) throw new Error(`injected crash after the commit of batch ${crashAt}`);
          },
        },
      });
      expect(crashed).toMatchObject({ status: "failed", stoppedBy: "error" });
      // The crashed batch is in Postgres and still pending in the stream: the next run reads it again.
      expect(await pendingCount(EVENT_STREAM, run.group)).toBeGreaterThan(0);
    }
    expect(await loadedCount(run)).toBeGreaterThan(0);

    // A run whose first XACK reply is lost (Redis acknowledged; the client saw a network error) retries it.
    let acks = 0;
    const flaky = losingReplies(loaderRedis(), (c) => c[0] === "XACK" && acks++ === 0);
    const next = await load(run, { batchSize: 30, redis: flaky });
    expect(next).toMatchObject({ status: "ok", stoppedBy: "drained" });
    expect(next.duplicates).toBeGreaterThan(0);
    expect(acks).toBeGreaterThan(1);
    expectClean(await drainAndCheck(run));
  });
});

describe("history: missed cron runs", () => {
  it("catches up a backlog of several skipped intervals in one run", { timeout: 120_000 }, async () => {
    const run = await begin("missed", { users: 12, events: 400, seed: 405 });
    const rounds = 4;
    const size = Math.ceil(run.batches.length / rounds);
    for (let r = 0; r < rounds; r++) {
      const batches = run.batches.slice(r * size, (r + 1) * size);
      await sendAll(run, batches);
      await flushSessions(userKeys(run, batches));
      // No loader run in this interval.
    }
    expect(await loadedCount(run)).toBe(0);
    const catchUp = await load(run);
    expect(catchUp).toMatchObject({ status: "ok", stoppedBy: "drained" });
    expect(await loadedCount(run)).toBe(run.history.summary().acknowledged);
    expectClean(await drainAndCheck(run));
  });

  it("works a backlog off over bounded runs", { timeout: 120_000 }, async () => {
    const run = await begin("bounded", { users: 12, events: 300, seed: 406 });
    await sendAll(run, run.batches);
    await flushSessions(userKeys(run));
    const first = await load(run, { batchSize: 25, maxBatches: 3 });
    expect(first).toMatchObject({ status: "ok", stoppedBy: "max_batches" });
    const loaded = await loadedCount(run);
    expect(loaded).toBeGreaterThan(0);
    expect(loaded).toBeLessThan(run.history.summary().acknowledged);
    expectClean(await drainAndCheck(run, { batchSize: 25, maxBatches: 3 }));
  });
});
