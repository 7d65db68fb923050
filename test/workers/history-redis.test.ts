// History check under a Redis outage: events are acknowledged while the session objects cannot reach Redis (their
// outbox settings point at a port where nothing listens), the alarms' flushes fail and retry, clients re-send, and
// once Redis is back every acknowledged event reaches the stream and Postgres exactly once.
import { runDurableObjectAlarm } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import {
  CLOSED_REDIS,
  drainAndCheck,
  expectClean,
  flushSessions,
  load,
  runsEndedAfterEach,
  sendAll,
  sessionStub,
  setRedis,
  streamIds,
  userKeys,
} from "./history-helpers.ts";

const begin = runsEndedAfterEach();

describe("history: Redis down for a while", () => {
  it("loses and duplicates nothing of what was acknowledged during the outage", { timeout: 120_000 }, async () => {
    const run = await begin("redis", { users: 12, events: 300, seed: 101 });
    const third = Math.ceil(run.batches.length / 3);
    const before = run.batches.slice(0, third);
    const during = run.batches.slice(third, 2 * third);
    const after = run.batches.slice(2 * third);
    const keys = userKeys(run);

    await sendAll(run, before);
    await flushSessions(userKeys(run, before));
    await load(run);

    // Redis goes away for every object of the run; collection keeps acknowledging.
    await setRedis(keys, CLOSED_REDIS);
    const sent = await sendAll(run, during);
    expect(sent.failed).toBe(0);
    // The drains run (twice: the first failure's retry too) and fail; the events wait in the outboxes.
    for (let round = 0; round < 2; round++) {
      for (const key of keys) await runDurableObjectAlarm(sessionStub(key));
    }
    const duringIds = new Set(during.flatMap((b) => b.sent.map((s) => s.messageId)));
    expect((await streamIds(run)).filter((id) => duringIds.has(id))).toEqual([]);
    let waiting = 0;
    for (const key of keys) waiting += (await sessionStub(key).snapshot(key)).outbox.pending;
    expect(waiting).toBeGreaterThan(0);
    // A loader run meanwhile loads what reached the stream before the outage, and nothing else.
    expect((await load(run)).status).toBe("ok");
    // Clients re-send part of what they sent during the outage.
    await sendAll(run, during.slice(0, 5));

    // Redis is back; more traffic; then everything drains.
    await setRedis(keys, "real");
    await sendAll(run, after);
    expectClean(await drainAndCheck(run));
  });
});
