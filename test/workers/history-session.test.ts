// History check with session objects aborted mid-write (`ctx.abort()` at some SQL statement of a `record`, or in
// the alarm's flush right after Redis took the events and before the outbox rows are deleted). A client whose
// request failed re-sends it. Nothing is half-applied: every acknowledged event is counted once by its object,
// appended to the stream once and loaded once.
import { describe, expect, it } from "vitest";
import { mulberry32 } from "../../scripts/lib/prng.ts";
import { eachLimit } from "../../src/concurrency.ts";
import {
  armAbort,
  drainAndCheck,
  expectClean,
  flushSessions,
  runsEndedAfterEach,
  sendAll,
  userKeys,
} from "./history-helpers.ts";

const begin = runsEndedAfterEach();

describe("history: a Durable Object aborted mid-write", () => {
  it("leaves nothing half-applied: retried requests and re-run flushes add nothing twice", {
    timeout: 120_000,
  }, async () => {
    const run = await begin("do-abort", { users: 10, events: 300, seed: 303, maxBatch: 12 });
    const random = mulberry32(303);
    const keys = userKeys(run);
    let aborts = 0;
    const onAbort = () => {
      aborts++;
    };

    const rounds = 4;
    const size = Math.ceil(run.batches.length / rounds);
    let failedRequests = 0;
    for (let r = 0; r < rounds; r++) {
      // Half of the objects get a trap at one of their next 15 SQL statements: inside record's transaction mostly.
      await eachLimit(
        keys.filter(() => random() < 0.5),
        4,
        (key) => armAbort(key, 1 + Math.floor(random() * 15), { onAbort }),
      );
      const sent = await sendAll(run, run.batches.slice(r * size, (r + 1) * size), undefined, { retries: 5 });
      failedRequests += sent.failed;
    }
    expect(aborts).toBeGreaterThan(0);
    expect(failedRequests).toBeGreaterThan(0);

    // Crashes between the Redis append and the outbox delete: the next flush sends the same events again.
    const flushAborts = aborts;
    await eachLimit(keys, 4, (key) =>
      armAbort(key, 1, { matches: (q) => q.startsWith("DELETE FROM outbox"), onAbort }),
    );
    await flushSessions(keys);
    expect(aborts).toBeGreaterThan(flushAborts);

    expectClean(await drainAndCheck(run));
  });
});
