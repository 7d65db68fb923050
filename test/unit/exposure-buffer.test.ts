// The isolate's exposure buffer (src/experiments/exposure-buffer.ts): batching, the full-batch and full-buffer
// limits, and failures that are reported, never thrown at the answer's waitUntil. The push is a recorder here;
// test/workers/experiments.test.ts sends exposures through the real Redis stream.
import { describe, expect, it } from "vitest";
import { ExposureBuffer, type ExposureFlushReport } from "../../src/experiments/exposure-buffer.ts";
import type { StreamItem } from "../../src/session/stream.ts";

const item = (n: number): StreamItem => ({ messageId: `exposure-${n}`, userKey: `a:v${n}`, event: `{"n":${n}}` });

/** A sleep whose timers fire only when the test says so. */
function manualTimers() {
  const waiting: Array<() => void> = [];
  return {
    sleep: () => new Promise<void>((resolve) => waiting.push(resolve)),
    fire: async () => {
      for (const resolve of waiting.splice(0)) resolve();
      await new Promise((r) => setTimeout(r, 0));
    },
    count: () => waiting.length,
  };
}

function setup(options: { batchMax?: number; bufferMax?: number; fail?: boolean; hold?: boolean } = {}) {
  const timers = manualTimers();
  const pushed: StreamItem[][] = [];
  const reports: ExposureFlushReport[] = [];
  const held: Array<() => void> = [];
  const buffer = new ExposureBuffer({
    push: async (items) => {
      pushed.push(items);
      if (options.hold) await new Promise<void>((resolve) => held.push(resolve));
      if (options.fail) throw new Error("stream refused");
    },
    report: (r) => reports.push(r),
    sleep: timers.sleep,
    ...(options.batchMax ? { batchMax: options.batchMax } : {}),
    ...(options.bufferMax ? { bufferMax: options.bufferMax } : {}),
  });
  return { buffer, timers, pushed, reports, held };
}

describe("ExposureBuffer", () => {
  it("sends the exposures of one interval in one push, and each answer's promise settles after it", async () => {
    const { buffer, timers, pushed, reports } = setup();
    const settled: number[] = [];
    const promises = [1, 2, 3].map((n) => buffer.add(item(n)));
    promises.forEach((p, i) => void p?.then(() => settled.push(i)));
    expect(timers.count()).toBe(1);
    expect(pushed).toEqual([]);
    await timers.fire();
    expect(pushed).toEqual([[item(1), item(2), item(3)]]);
    expect(settled).toEqual([0, 1, 2]);
    expect(reports).toEqual([{ sent: 3, failed: 0 }]);
    // The next exposure opens a new batch with a timer of its own.
    void buffer.add(item(4));
    await timers.fire();
    expect(pushed).toEqual([[item(1), item(2), item(3)], [item(4)]]);
  });

  it("sends a full batch at once; its timer then sends nothing", async () => {
    const { buffer, timers, pushed } = setup({ batchMax: 2 });
    const first = buffer.add(item(1));
    const second = buffer.add(item(2));
    expect(second).toBe(first);
    await first;
    expect(pushed).toEqual([[item(1), item(2)]]);
    const third = buffer.add(item(3));
    expect(third).not.toBe(first);
    await timers.fire();
    expect(pushed).toEqual([[item(1), item(2)], [item(3)]]);
  });

  it("refuses exposures beyond its bound while a push hangs, and takes them again once it returns", async () => {
    const { buffer, timers, pushed, held } = setup({ bufferMax: 3, hold: true });
    for (const n of [1, 2, 3]) expect(buffer.add(item(n))).not.toBeNull();
    expect(buffer.add(item(4))).toBeNull();
    expect(buffer.refused).toBe(1);
    await timers.fire();
    expect(pushed).toHaveLength(1);
    // Still in flight: still counted against the bound.
    expect(buffer.pending).toBe(3);
    expect(buffer.add(item(5))).toBeNull();
    for (const release of held.splice(0)) release();
    await new Promise((r) => setTimeout(r, 0));
    expect(buffer.pending).toBe(0);
    expect(buffer.add(item(6))).not.toBeNull();
    expect(buffer.refused).toBe(2);
  });

  it("reports a failed push with its count and settles the answers' promises without rejecting", async () => {
    const { buffer, timers, reports } = setup({ fail: true });
    const p = buffer.add(item(1));
    void buffer.add(item(2));
    await timers.fire();
    await expect(p).resolves.toBeUndefined();
    expect(reports).toHaveLength(1);
    expect(reports[0]).toMatchObject({ sent: 0, failed: 2 });
    expect(String(reports[0]?.error)).toMatch(/stream refused/);
    expect(buffer.pending).toBe(0);
  });
});
