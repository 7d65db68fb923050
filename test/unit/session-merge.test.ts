// Identity merge math (src/session/merge.ts) and which objects a user absorbs (src/session/identity.ts).
import { describe, expect, it } from "vitest";
import { stitchTargets } from "../../src/session/identity.ts";
import { MINUTE_MS } from "../../src/session/limits.ts";
import { mergeStates } from "../../src/session/merge.ts";
import type { PortableState, StoredInteraction } from "../../src/session/model.ts";

const T = 1_800_000_000_000;

function state(key: string, over: Partial<PortableState> = {}): PortableState {
  return {
    userKey: key,
    userId: key.startsWith("u:") ? key.slice(2) : null,
    createdAt: T,
    lastEventAt: null,
    session: null,
    events: 0,
    duplicates: 0,
    interactions: [],
    affinities: [],
    recent: [],
    merged: [],
    seen: [],
    ...over,
  };
}

function view(messageId: string, at: number, sessionId: string, token = "category:a"): StoredInteraction {
  return {
    at,
    kind: "view",
    productId: messageId,
    category: null,
    brand: null,
    price: null,
    query: null,
    tokens: [token],
    messageId,
    sessionId,
  };
}

const never = () => false;

describe("mergeStates", () => {
  it("unions interactions and sums affinities after decaying both", () => {
    const target = state("u:1", {
      interactions: [view("t1", T + 2000, "ts")],
      affinities: [{ horizon: "longTerm", token: "category:a", value: 1, at: T + 2000 }],
      events: 1,
      lastEventAt: T + 2000,
    });
    const source = state("a:x", {
      interactions: [view("s1", T + 1000, "ss")],
      affinities: [
        { horizon: "longTerm", token: "category:a", value: 1, at: T + 1000 },
        { horizon: "longTerm", token: "brand:b", value: 2, at: T },
      ],
      events: 1,
      lastEventAt: T + 1000,
      createdAt: T - 5000,
      seen: [{ messageId: "s1", at: T }],
    });
    const r = mergeStates(target, source, never, T + 3000);
    expect(r.interactions.map((i) => i.messageId)).toEqual(["t1", "s1"]);
    const a = r.affinities.find((x) => x.horizon === "longTerm" && x.token === "category:a");
    expect(a?.at).toBe(T + 2000);
    expect(a?.value).toBeCloseTo(2, 6);
    expect(r.affinities.find((x) => x.token === "brand:b")?.value).toBe(2);
    expect(r.events).toBe(2);
    expect(r.createdAt).toBe(T - 5000);
    expect(r.lastEventAt).toBe(T + 2000);
    expect(r.seen).toEqual([{ messageId: "s1", at: T }]);
    expect(r.merged).toEqual([{ key: "a:x", status: "merged", at: T + 3000 }]);
    expect(r.overlap).toBe(0);
  });

  it("skips interactions the target already has and takes their weight back out", () => {
    const shared = view("dup", T, "ss");
    const target = state("u:1", {
      interactions: [shared],
      affinities: [{ horizon: "longTerm", token: "category:a", value: 1, at: T }],
      events: 1,
    });
    const source = state("a:x", {
      interactions: [shared],
      affinities: [{ horizon: "longTerm", token: "category:a", value: 1, at: T }],
      events: 1,
      seen: [{ messageId: "dup", at: T }],
    });
    const r = mergeStates(target, source, (id) => id === "dup", T);
    expect(r.interactions).toHaveLength(1);
    expect(r.affinities.find((x) => x.token === "category:a")?.value).toBeCloseTo(1, 9);
    expect(r.events).toBe(1);
    expect(r.seen).toEqual([]);
    expect(r.overlap).toBe(1);
  });

  it("joins visits within the session gap into one, keeping the earlier id", () => {
    const target = state("u:1", {
      session: { id: "ts", startedAt: T + 10 * MINUTE_MS, lastEventAt: T + 12 * MINUTE_MS, eventCount: 2 },
      interactions: [view("t1", T + 12 * MINUTE_MS, "ts")],
      affinities: [{ horizon: "session", token: "category:a", value: 1, at: T + 12 * MINUTE_MS }],
    });
    const source = state("a:x", {
      session: { id: "ss", startedAt: T, lastEventAt: T + 5 * MINUTE_MS, eventCount: 3 },
      interactions: [view("s1", T + 5 * MINUTE_MS, "ss")],
      affinities: [{ horizon: "session", token: "category:b", value: 1, at: T + 5 * MINUTE_MS }],
    });
    const r = mergeStates(target, source, never, T + 13 * MINUTE_MS);
    expect(r.session).toEqual({ id: "ss", startedAt: T, lastEventAt: T + 12 * MINUTE_MS, eventCount: 5 });
    expect(r.interactions.map((i) => i.sessionId)).toEqual(["ss", "ss"]);
    expect(
      r.affinities
        .filter((x) => x.horizon === "session")
        .map((x) => x.token)
        .sort(),
    ).toEqual(["category:a", "category:b"]);
  });

  it("keeps only the more recent visit's session affinities when the visits are apart", () => {
    const target = state("u:1", {
      session: { id: "ts", startedAt: T, lastEventAt: T, eventCount: 1 },
      affinities: [{ horizon: "session", token: "category:old", value: 1, at: T }],
    });
    const source = state("a:x", {
      session: { id: "ss", startedAt: T + 120 * MINUTE_MS, lastEventAt: T + 121 * MINUTE_MS, eventCount: 2 },
      affinities: [{ horizon: "session", token: "category:new", value: 1, at: T + 121 * MINUTE_MS }],
    });
    const r = mergeStates(target, source, never, T + 122 * MINUTE_MS);
    expect(r.session?.id).toBe("ss");
    expect(r.affinities.map((x) => x.token)).toEqual(["category:new"]);
  });

  it("unions recent sets, drops carted items purchased later, and carries merged keys over once", () => {
    const target = state("u:1", {
      recent: [
        { kind: "carted", value: "p1", at: T },
        { kind: "viewed", value: "p1", at: T + 5 },
      ],
      merged: [{ key: "a:old", status: "merged", at: T }],
    });
    const source = state("a:x", {
      recent: [
        { kind: "purchased", value: "p1", at: T + 10 },
        { kind: "viewed", value: "p1", at: T + 1 },
        { kind: "viewed", value: "p2", at: T + 2 },
      ],
      merged: [
        { key: "a:old", status: "merged", at: T },
        { key: "a:other", status: "claimed", at: T },
        { key: "a:nope", status: "elsewhere", at: T },
      ],
    });
    const r = mergeStates(target, source, never, T + 20);
    expect(r.recent).toEqual([
      { kind: "viewed", value: "p1", at: T + 5 },
      { kind: "viewed", value: "p2", at: T + 2 },
      { kind: "purchased", value: "p1", at: T + 10 },
    ]);
    expect(r.merged.map((m) => m.key)).toEqual(["a:other", "a:x"]);
  });
});

describe("stitchTargets", () => {
  const e = (
    type: "track" | "identify" | "alias",
    userId: string | null,
    anonymousId: string | null,
    previousId: string | null = null,
  ) => ({
    type,
    userId,
    anonymousId,
    previousId,
  });

  it("asks a user's object to absorb its visitor ids and aliased ids, once each", () => {
    expect(
      stitchTargets("u:1", [
        e("identify", "1", "v"),
        e("track", "1", "v"),
        e("track", null, "w"),
        e("alias", "1", null, "old"),
      ]),
    ).toEqual([
      { key: "a:v", claim: true },
      { key: "a:old", claim: true },
      { key: "u:old", claim: false },
    ]);
  });

  it("never merges itself, and visitor objects absorb nothing", () => {
    expect(stitchTargets("u:1", [e("alias", "1", null, "1")])).toEqual([{ key: "a:1", claim: true }]);
    expect(stitchTargets("a:v", [e("identify", "1", "v")])).toEqual([]);
  });
});
