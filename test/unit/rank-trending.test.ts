// The isolate cache of live trending (src/rank/trending.ts): a request never waits for Redis; the list is refreshed
// in the background once older than TRENDING_REFRESH_MS, at most one refresh at a time, not retried for
// TRENDING_REFRESH_MS after a failure, not used at all once older than TRENDING_MAX_AGE_MS, and a refresh still
// pending after TRENDING_GIVE_UP_MS is replaced (its late answer ignored).
import { describe, expect, it } from "vitest";
import type { Scored } from "../../src/rank/core.ts";
import {
  cachedTrending,
  TRENDING_GIVE_UP_MS,
  TRENDING_MAX_AGE_MS,
  TRENDING_REFRESH_MS,
  type TrendingState,
} from "../../src/rank/trending.ts";

const fresh = (): TrendingState => ({
  list: null,
  at: null,
  refreshing: null,
  refreshStartedAt: null,
  lastError: null,
});

function harness(state: TrendingState, reply: () => Promise<Scored[]>) {
  const waited: Array<Promise<unknown>> = [];
  let refreshes = 0;
  const call = (now: number) =>
    cachedTrending(
      state,
      now,
      () => {
        refreshes++;
        return reply();
      },
      (p) => waited.push(p),
    );
  return { call, waited, refreshes: () => refreshes };
}

describe("cachedTrending", () => {
  it("answers a cold isolate at once with no list, and refreshes once in the background", async () => {
    const state = fresh();
    let release: (list: Scored[]) => void = () => {};
    const h = harness(state, () => new Promise((r) => (release = r)));
    expect(h.call(Date.now())).toEqual({ list: null, ageMs: null });
    expect(h.call(Date.now())).toEqual({ list: null, ageMs: null });
    expect(h.refreshes()).toBe(1);
    expect(h.waited).toHaveLength(1);
    release([["p1", 3]]);
    await Promise.all(h.waited);
    const now = Date.now();
    const answer = h.call(now);
    expect(answer.list).toEqual([["p1", 3]]);
    expect(answer.ageMs).toBeGreaterThanOrEqual(0);
    expect(answer.ageMs).toBeLessThan(1000);
    expect(h.refreshes()).toBe(1);
  });

  it("serves the cached list while refreshing it once older than the refresh interval", async () => {
    const at = Date.now();
    const state: TrendingState = { list: [["old", 1]], at, refreshing: null, refreshStartedAt: null, lastError: null };
    const h = harness(state, async () => [["new", 2]]);
    expect(h.call(at + TRENDING_REFRESH_MS - 1).list).toEqual([["old", 1]]);
    expect(h.refreshes()).toBe(0);
    expect(h.call(at + TRENDING_REFRESH_MS).list).toEqual([["old", 1]]);
    expect(h.refreshes()).toBe(1);
    await Promise.all(h.waited);
    expect(state.list).toEqual([["new", 2]]);
  });

  it("does not use a list older than the maximum age", () => {
    const at = Date.now() - TRENDING_MAX_AGE_MS - 1;
    const state: TrendingState = {
      list: [["stale", 1]],
      at,
      refreshing: null,
      refreshStartedAt: null,
      lastError: null,
    };
    const h = harness(state, () => new Promise(() => {}));
    const answer = h.call(Date.now());
    expect(answer.list).toBeNull();
    expect(answer.ageMs).toBeGreaterThan(TRENDING_MAX_AGE_MS);
    expect(h.refreshes()).toBe(1);
  });

  it("after a failed refresh, waits the refresh interval before trying again", async () => {
    const state = fresh();
    const h = harness(state, () => Promise.reject(new Error("redis down")));
    h.call(Date.now());
    await Promise.all(h.waited);
    expect(state.lastError).not.toBeNull();
    expect(state.refreshing).toBeNull();
    const failedAt = state.lastError as number;
    expect(h.call(failedAt + 1).list).toBeNull();
    expect(h.refreshes()).toBe(1);
    h.call(failedAt + TRENDING_REFRESH_MS);
    expect(h.refreshes()).toBe(2);
  });

  it("replaces a refresh still pending after the give-up time, and ignores its late answer", async () => {
    const state = fresh();
    const replies: Array<(list: Scored[]) => void> = [];
    const h = harness(state, () => new Promise((r) => replies.push(r)));
    const t0 = Date.now();
    h.call(t0);
    h.call(t0 + TRENDING_GIVE_UP_MS - 1);
    expect(h.refreshes()).toBe(1);
    h.call(t0 + TRENDING_GIVE_UP_MS);
    expect(h.refreshes()).toBe(2);
    replies[1]?.([["current", 2]]);
    replies[0]?.([["abandoned", 1]]);
    await Promise.all(h.waited);
    expect(state.list).toEqual([["current", 2]]);
    expect(state.refreshing).toBeNull();
  });
});
