// The hand-off policy, with fake session objects that inject faults (the real objects are exercised by the Worker
// tests in test/workers/collect-*.test.ts).
import { describe, expect, it } from "vitest";
import type { CollectedEvent, RecordOptions, RecordResult } from "../../src/collect/event.ts";
import { groupByUser, handOff, type SessionRecorder } from "../../src/collect/handoff.ts";
import { ApiError } from "../../src/errors.ts";

function event(messageId: string, userId: string | null, anonymousId: string | null = null): CollectedEvent {
  return {
    messageId,
    type: "track",
    userId,
    anonymousId,
    previousId: null,
    groupId: null,
    event: "e",
    name: null,
    properties: {},
    traits: {},
    context: {},
    timestamp: "2026-11-26T00:00:00.000Z",
    originalTimestamp: null,
    sentAt: null,
    receivedAt: "2026-11-26T00:00:00.000Z",
    sourceId: "s",
  };
}

function fault(props: { overloaded?: boolean; retryable?: boolean }): Error {
  return Object.assign(new Error("object failed"), props);
}

/** Fake objects: each call is logged; `plan[userKey]` lists what successive calls do. */
function fakes(plan: Record<string, (Error | "ok" | "suppressed")[]> = {}) {
  const calls: { key: string; messageIds: string[]; attempt?: string }[] = [];
  const stubFor = (name: string): SessionRecorder => ({
    async record(key: string, events: CollectedEvent[], options?: RecordOptions): Promise<RecordResult> {
      expect(key).toBe(name);
      calls.push({ key, messageIds: events.map((e) => e.messageId), attempt: options?.attempt });
      const step = plan[key]?.shift() ?? "ok";
      if (step === "suppressed") return { accepted: 0, duplicates: 0, suppressed: events.length };
      if (step !== "ok") throw step;
      return { accepted: events.length, duplicates: 0 };
    },
  });
  return { calls, stubFor };
}

describe("groupByUser", () => {
  it("groups by user key in request order; userId wins over anonymousId", () => {
    const groups = groupByUser([event("1", "u1"), event("2", null, "a1"), event("3", "u1", "a1"), event("4", "u2")]);
    expect([...groups].map(([k, v]) => [k, v.map((e) => e.messageId)])).toEqual([
      ["u:u1", ["1", "3"]],
      ["a:a1", ["2"]],
      ["u:u2", ["4"]],
    ]);
  });
});

describe("handOff", () => {
  it("makes exactly one record call per distinct user and sums the results", async () => {
    const { calls, stubFor } = fakes();
    const outcome = await handOff([event("1", "u1"), event("2", "u2"), event("3", "u1")], stubFor);
    expect(outcome).toEqual({ accepted: 3, duplicates: 0, suppressed: 0, users: 2, suppressedKeys: [] });
    expect(calls.map(({ attempt: _attempt, ...call }) => call)).toEqual([
      { key: "u:u1", messageIds: ["1", "3"] },
      { key: "u:u2", messageIds: ["2"] },
    ]);
  });

  it("counts a suppressed user's events apart from the accepted ones, and names the suppressed users", async () => {
    const { stubFor } = fakes({ "u:u2": ["suppressed"] });
    const outcome = await handOff([event("1", "u1"), event("2", "u2"), event("3", "u2")], stubFor);
    expect(outcome).toEqual({ accepted: 1, duplicates: 0, suppressed: 2, users: 2, suppressedKeys: ["u:u2"] });
  });

  it("calls all users in parallel", async () => {
    let inFlight = 0;
    let most = 0;
    const stubFor = (): SessionRecorder => ({
      async record(_key, events) {
        inFlight++;
        most = Math.max(most, inFlight);
        await new Promise((r) => setTimeout(r, 10));
        inFlight--;
        return { accepted: events.length, duplicates: 0 };
      },
    });
    await handOff([event("1", "a"), event("2", "b"), event("3", "c")], stubFor);
    expect(most).toBe(3);
  });

  it("retries a retryable error once", async () => {
    const { calls, stubFor } = fakes({ "u:u1": [fault({ retryable: true }), "ok"] });
    expect(await handOff([event("1", "u1")], stubFor)).toMatchObject({ accepted: 1 });
    expect(calls).toHaveLength(2);
  });

  it("retries under the call's attempt token; every user of every request has a token of its own", async () => {
    const { calls, stubFor } = fakes({ "u:u1": [fault({ retryable: true }), "ok"] });
    const batch = [event("1", "u1"), event("2", "u2")];
    await handOff(batch, stubFor);
    await handOff(batch, stubFor);
    const tokens = (key: string) => calls.filter((c) => c.key === key).map((c) => c.attempt);
    const [first, retry, next] = tokens("u:u1");
    expect(tokens("u:u1")).toHaveLength(3);
    expect(first).toMatch(/^[0-9a-f-]{36}$/);
    expect(retry).toBe(first);
    const all = [first, next, ...tokens("u:u2")];
    expect(new Set(all).size).toBe(all.length);
  });

  it("gives up after the one retry with a 503 and Retry-After", async () => {
    const { calls, stubFor } = fakes({ "u:u1": [fault({ retryable: true }), fault({ retryable: true })] });
    const error = await handOff([event("1", "u1")], stubFor).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ApiError);
    expect((error as ApiError).status).toBe(503);
    expect((error as ApiError).headers?.["Retry-After"]).toMatch(/^\d+$/);
    expect(calls).toHaveLength(2);
  });

  it("never retries an overloaded object, even when it is also marked retryable", async () => {
    const { calls, stubFor } = fakes({ "u:u1": [fault({ overloaded: true, retryable: true })] });
    const error = (await handOff([event("1", "u1"), event("2", "u2")], stubFor).catch((e: unknown) => e)) as ApiError;
    expect(error.code).toBe("dependency_unavailable");
    expect(error.message).toMatch(/overloaded/);
    expect(error.details).toEqual({ failedUsers: 1, users: 2 });
    expect(calls.filter((c) => c.key === "u:u1")).toHaveLength(1);
  });

  it("does not retry errors that are not marked retryable", async () => {
    const { calls, stubFor } = fakes({ "u:u1": [new Error("bug")] });
    await expect(handOff([event("1", "u1")], stubFor)).rejects.toBeInstanceOf(ApiError);
    expect(calls).toHaveLength(1);
  });
});
