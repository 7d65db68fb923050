// eachLimit and settleAll (src/concurrency.ts): how KV puts run within an invocation's budget and how the refresh
// runs the independent outputs at once. The outputs themselves run against the real Postgres in
// test/integration/recommenders.test.ts.
import { describe, expect, it } from "vitest";
import { eachLimit, settleAll } from "../../src/concurrency.ts";

const tick = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Jobs that record how many run at once and in which order they start. */
function tracked(n: number, fail: ReadonlySet<number> = new Set()) {
  let running = 0;
  const state = { peak: 0, started: [] as number[], finished: [] as number[] };
  const jobs = Array.from({ length: n }, (_, i) => async () => {
    running++;
    state.peak = Math.max(state.peak, running);
    state.started.push(i);
    await tick(5 + ((i * 7) % 11));
    running--;
    state.finished.push(i);
    if (fail.has(i)) throw new Error(`job ${i} failed`);
  });
  return { jobs, state };
}

describe("eachLimit", () => {
  it("starts no call once it has rejected (a failed publish's remaining KV puts are not made)", async () => {
    const started: number[] = [];
    const run = eachLimit(
      Array.from({ length: 20 }, (_, i) => i),
      2,
      async (i) => {
        started.push(i);
        await tick(5);
        if (i === 0) throw new Error("put 0 failed");
      },
    );
    await expect(run).rejects.toThrow("put 0 failed");
    // Item 1 was running beside item 0; the second worker may start one more before it sees the failure.
    await tick(100);
    expect(started.length).toBeLessThanOrEqual(3);
  });
});

describe("settleAll", () => {
  it("runs at most `lanes` jobs at once and every job once", async () => {
    const { jobs, state } = tracked(7);
    await settleAll(jobs, 2);
    expect(state.peak).toBe(2);
    expect([...state.finished].sort()).toEqual([0, 1, 2, 3, 4, 5, 6]);
    // Jobs start in the order given (longest-first ordering relies on it).
    expect(state.started).toEqual([0, 1, 2, 3, 4, 5, 6]);
  });

  it("one lane runs the jobs one after the other", async () => {
    const { jobs, state } = tracked(4);
    await settleAll(jobs, 1);
    expect(state.peak).toBe(1);
    expect(state.finished).toEqual([0, 1, 2, 3]);
  });

  it("a failure does not stop the other jobs; the first failing job's error is thrown after all ended", async () => {
    const { jobs, state } = tracked(5, new Set([3, 1]));
    await expect(settleAll(jobs, 2)).rejects.toThrow("job 1 failed");
    expect([...state.finished].sort()).toEqual([0, 1, 2, 3, 4]);
  });

  it("a lane count below one or not a number still runs every job, one at a time", async () => {
    for (const lanes of [0, -3, 0.5, Number.NaN]) {
      const { jobs, state } = tracked(3);
      await settleAll(jobs, lanes);
      expect(state.peak).toBe(1);
      expect(state.finished).toEqual([0, 1, 2]);
    }
  });

  it("more lanes than jobs, and no jobs, are fine", async () => {
    const { jobs, state } = tracked(2);
    await settleAll(jobs, 8);
    expect(state.peak).toBe(2);
    await expect(settleAll([], 2)).resolves.toBeUndefined();
  });
});
