// History checks of clients re-sending batches: the same batch 2–5 times one after the other and at once, again
// after the pipeline drained, again after its objects were evicted; and re-sends after a lost response or a
// client-side timeout while the first request is still being served. A re-sent event has no second effect anywhere.
import { evictDurableObject } from "cloudflare:test";
import { exports } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import type { Batch } from "../../scripts/lib/history-load.ts";
import { mulberry32 } from "../../scripts/lib/prng.ts";
import { eachLimit } from "../../src/concurrency.ts";
import {
  drainAndCheck,
  expectClean,
  postTo,
  runsEndedAfterEach,
  sendAll,
  sessionStub,
  userKeys,
} from "./history-helpers.ts";

const begin = runsEndedAfterEach();

describe("history: clients re-sending batches", () => {
  it("the same batch 2–5 times, in sequence and at once, after a drain and after an eviction", {
    timeout: 120_000,
  }, async () => {
    const r = await begin("resend", { users: 12, events: 300, seed: 707 });
    const random = mulberry32(707);
    const times = () => 2 + Math.floor(random() * 4);
    await eachLimit(r.batches, 4, async (batch) => {
      const n = times();
      if (random() < 0.5) {
        for (let i = 0; i < n; i++) await sendAll(r, [batch]);
      } else {
        await sendAll(
          r,
          Array.from({ length: n }, () => batch),
          undefined,
          { concurrency: n },
        );
      }
    });
    const first = await drainAndCheck(r);
    expectClean(first);
    expect(first.attempts).toBeGreaterThan(2 * first.sent);

    // Late re-sends: after everything was loaded, and after the objects were evicted (the dedupe window is stored).
    const again = r.batches.filter(() => random() < 0.3);
    await sendAll(r, again);
    for (const key of userKeys(r).filter(() => random() < 0.5)) await evictDurableObject(sessionStub(key));
    await sendAll(r, again);
    expectClean(await drainAndCheck(r));
  });

  it("re-sends after a lost response or a client timeout, while the first request may still be served", {
    timeout: 120_000,
  }, async () => {
    const r = await begin("lost-reply", { users: 12, events: 300, seed: 708 });
    const random = mulberry32(708);
    const inFlight: Promise<unknown>[] = [];
    let lost = 0;
    let timedOut = 0;
    const post = postTo(async (request) => {
      const roll = random();
      if (roll < 0.15) {
        // The client gives up waiting; the Worker goes on serving the request.
        inFlight.push(exports.default.fetch(request).then((res) => res.text()));
        timedOut++;
        throw new Error("timed out waiting for the response");
      }
      const res = await exports.default.fetch(request);
      if (roll < 0.35) {
        // Served, then the connection dropped before the client read the answer.
        await res.text();
        lost++;
        throw new Error("socket hang up");
      }
      return res;
    });
    const split = Math.floor(r.batches.length * 0.8);
    // Most clients retry until they get an answer …
    await sendAll(r, r.batches.slice(0, split), post, { retries: 8 });
    // … some give up after one try: their events' outcome stays unknown.
    const givenUp: Batch[] = r.batches.slice(split);
    await sendAll(r, givenUp, post);
    await Promise.all(inFlight);
    expect(lost).toBeGreaterThan(0);
    expect(timedOut).toBeGreaterThan(0);

    const v = await drainAndCheck(r);
    expectClean(v);
    // The server stored every request it received: an unknown outcome here means delivered, unless the event was
    // invalid (a track without a name).
    const invalid = new Set(
      r.batches.flatMap((b) => b.events.filter((e) => e.type === "track" && !e.event).map((e) => e.messageId)),
    );
    expect(v.unknown).toBeGreaterThan(0);
    expect(v.unknownDelivered).toBe(r.history.ids("unknown").filter((id) => !invalid.has(id)).length);
  });
});
