// The hand-off to SessionState under faults: overloaded objects, transient errors, a partial failure and the
// client's retry, with the real objects behind a wrapper that injects the fault.
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import type { CollectedEvent, RecordOptions } from "../../src/collect/event.ts";
import type { SessionSnapshot } from "../../src/session/snapshot.ts";
import { adminGet, basic, collect, post, recordingSessions, refused, uid, WRITE_KEY } from "./collect-helpers.ts";

const auth = { authorization: basic(WRITE_KEY) };

function fault(message: string, props: { overloaded?: boolean; retryable?: boolean }): Error {
  return Object.assign(new Error(message), props);
}

/**
 * The real namespace, except that the first `times` record calls for `userKey` throw `error`: before the real object
 * is called, or with `answerLost` after it recorded the events (the answer lost in transit).
 */
function failing(userKey: string, error: () => Error, times = 1, answerLost = false) {
  let left = times;
  let calls = 0;
  const namespace = {
    getByName(name: string) {
      const stub = env.SESSION_STATE.getByName(name);
      return {
        async record(key: string, events: CollectedEvent[], options?: RecordOptions) {
          const fails = key === userKey && left > 0;
          if (key === userKey) calls++;
          if (fails) left--;
          if (fails && !answerLost) throw error();
          const result = await stub.record(key, events, options);
          if (fails) throw error();
          return result;
        },
        suppression: () => stub.suppression(),
      };
    },
  } as unknown as Env["SESSION_STATE"];
  return { namespace, calls: () => calls };
}

/** A transient error after the object recorded the events, for the first `times` record calls for `userKey`. */
const answerLost = (userKey: string, times = 1) =>
  failing(userKey, () => fault("network connection lost", { retryable: true }), times, true);

async function snapshotOf(userId: string): Promise<SessionSnapshot> {
  const res = await adminGet(`/v1/admin/users/${userId}`);
  expect(res.status).toBe(200);
  return (await res.json()) as SessionSnapshot;
}

const track = (userId: string) => ({ type: "track", event: "Product Viewed", userId, messageId: uid("m") });

describe("hand-off failures", () => {
  it("answers 503 with Retry-After when an object is overloaded, without retrying it", async () => {
    const userId = uid("u");
    const sessions = failing(`u:${userId}`, () => fault("overloaded", { overloaded: true, retryable: true }), 5);
    const res = await post("/v1/t", track(userId), {
      headers: auth,
      env: { ...env, SESSION_STATE: sessions.namespace },
    });
    const body = await refused(res, 503, "dependency_unavailable");
    expect(res.headers.get("retry-after")).toBe("2");
    expect(body.error.message).toMatch(/overloaded/);
    expect(sessions.calls()).toBe(1);
  });

  it("retries a retryable error once and then succeeds", async () => {
    const userId = uid("u");
    const sessions = failing(`u:${userId}`, () => fault("network", { retryable: true }), 1);
    const result = await collect("/v1/t", track(userId), {
      headers: auth,
      env: { ...env, SESSION_STATE: sessions.namespace },
    });
    expect(result.accepted).toBe(1);
    expect(sessions.calls()).toBe(2);
    expect((await snapshotOf(userId)).counters.events).toBe(1);
  });

  it("counts the events a call stored before its answer was lost as accepted when the request retries it", async () => {
    const [u1, u2] = [uid("u"), uid("u")];
    const batch = [track(u1), track(u2), track(u1), track(u1)];
    const sessions = answerLost(`u:${u1}`);
    const testEnv = { ...env, SESSION_STATE: sessions.namespace };
    const result = await collect("/v1/batch", { batch }, { headers: auth, env: testEnv });
    expect(sessions.calls()).toBe(2);
    expect(result).toEqual({ success: true, accepted: 4, duplicates: 0, rejected: [] });
    // Stored once, by the first call.
    expect((await snapshotOf(u1)).counters.events).toBe(3);
    // The client sending the batch again is another request: every event is a duplicate.
    expect(await collect("/v1/batch", { batch }, { headers: auth })).toEqual({
      success: true,
      accepted: 0,
      duplicates: 4,
      rejected: [],
    });
    expect((await snapshotOf(u1)).counters.events).toBe(3);
  });

  it("still counts an earlier request's events as duplicates in a call retried after a lost answer", async () => {
    const userId = uid("u");
    const earlier = track(userId);
    await collect("/v1/t", earlier, { headers: auth });
    const repeated = track(userId);
    // The earlier request's event, two new ones, and one of them twice.
    const batch = [earlier, repeated, track(userId), repeated];
    const sessions = answerLost(`u:${userId}`);
    const result = await collect(
      "/v1/batch",
      { batch },
      { headers: auth, env: { ...env, SESSION_STATE: sessions.namespace } },
    );
    expect(sessions.calls()).toBe(2);
    expect(result).toEqual({ success: true, accepted: 2, duplicates: 2, rejected: [] });
    expect((await snapshotOf(userId)).counters.events).toBe(3);
  });

  it("answers 503 when the retry fails too", async () => {
    const userId = uid("u");
    const sessions = failing(`u:${userId}`, () => fault("network", { retryable: true }), 2);
    await refused(
      post("/v1/t", track(userId), { headers: auth, env: { ...env, SESSION_STATE: sessions.namespace } }),
      503,
      "dependency_unavailable",
    );
    expect(sessions.calls()).toBe(2);
  });

  it("answers 503 for a partial failure; the client's retry of the batch dedupes the users that succeeded", async () => {
    const [u1, u2, u3] = [uid("u"), uid("u"), uid("u")];
    const batch = [track(u1), track(u2), track(u3), track(u2)];
    const sessions = failing(`u:${u2}`, () => fault("object reset", {}), 1);
    const testEnv = { ...env, SESSION_STATE: sessions.namespace };
    const first = await post("/v1/batch", { batch }, { headers: auth, env: testEnv });
    const body = await refused(first, 503, "dependency_unavailable");
    expect(body.error).toMatchObject({ failedUsers: 1, users: 3 });
    // The other users were stored before the 503 …
    expect((await snapshotOf(u1)).counters.events).toBe(1);
    // … so the retry reports them as duplicates and stores only u2's events.
    const retry = await collect("/v1/batch", { batch }, { headers: auth, env: testEnv });
    expect(retry).toEqual({ success: true, accepted: 2, duplicates: 2, rejected: [] });
    for (const [user, count] of [
      [u1, 1],
      [u2, 2],
      [u3, 1],
    ] as const) {
      expect((await snapshotOf(user)).counters.events, user).toBe(count);
    }
  });

  it("stores a rejected event's dead letter once across a failed hand-off and the client's retry", async () => {
    const userId = uid("u");
    const bad = { type: "track", userId: "x", messageId: uid("bad") };
    const batch = [track(userId), bad];
    const sessions = failing(`u:${userId}`, () => fault("object reset", {}), 1);
    const testEnv = { ...env, SESSION_STATE: sessions.namespace };
    await refused(post("/v1/batch", { batch }, { headers: auth, env: testEnv }), 503, "dependency_unavailable");
    const retry = await collect("/v1/batch", { batch }, { headers: auth, env: testEnv });
    expect(retry).toMatchObject({ accepted: 1, rejected: [{ index: 1, code: "missing_event" }] });
    const res = await adminGet("/v1/admin/dead-letters?source=local&limit=1000");
    const letters = ((await res.json()) as { deadLetters: Array<{ messageId: string | null }> }).deadLetters;
    expect(letters.filter((d) => d.messageId === bad.messageId)).toHaveLength(1);
  });

  it("answers 503 (and stores nothing twice) when the dead-letter store fails", async () => {
    const sessions = recordingSessions();
    const broken = {
      getByName: () => ({
        store: async () => {
          throw new Error("dead letters unavailable");
        },
      }),
    } as unknown as Env["DEAD_LETTERS"];
    const res = await post(
      "/v1/batch",
      { batch: [track(uid("u")), { type: "track", userId: "x" }] },
      { headers: auth, env: { ...env, SESSION_STATE: sessions.namespace, DEAD_LETTERS: broken } },
    );
    expect(res.headers.get("retry-after")).toBe("2");
    await refused(res, 503, "dependency_unavailable");
  });
});

describe("identity", () => {
  it("sends an event with both ids to the user's object, which stitches the visitor in", async () => {
    const [userId, anonymousId] = [uid("u"), uid("a")];
    await collect("/v1/p", { anonymousId, messageId: uid("m") }, { headers: auth });
    await collect("/v1/i", { userId, anonymousId, messageId: uid("m") }, { headers: auth });
    const user = await snapshotOf(userId);
    expect(user.userKey).toBe(`u:${userId}`);
    expect(user.anonymousIds).toContain(anonymousId);
  });
});
