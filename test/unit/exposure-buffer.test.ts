// The isolate's exposure buffer (src/experiments/exposure-buffer.ts): batching, batch ownership (only the request
// that opened a batch waits for it), the full-batch and full-buffer limits, and failures that are reported, never
// thrown at the answer's waitUntil. The push is a recorder here; test/workers/experiments.test.ts sends exposures
// through the real Redis stream.
import { describe, expect, it } from "vitest";
import { ExposureBuffer, type ExposureFlushReport } from "../../src/experiments/exposure-buffer.ts";
import type { StreamItem } from "../../src/session/stream.ts";

const item = (n: number): StreamItem => ({ messageId: `exposure-${n}`, userKey: `a:v${n}`, event: `{"n":${n}}` });

/** A sleep whose timers fire only when the test says so, oldest first. */
function manualTimers() {
  const waiting: Array<() => void> = [];
  return {
    sleep: () => new Promise<void>((resolve) => waiting.push(resolve)),
    fire: async (n = waiting.length) => {
      for (const resolve of waiting.splice(0, n)) resolve();
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
      pushed.push([...items]);
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

function opened(r: ReturnType<ExposureBuffer["add"]>): Promise<void> {
  if (r.status !== "opened") throw new Error(`expected opened, got ${r.status}`);
  return r.sent;
}

describe("ExposureBuffer", () => {
  it("sends the exposures of one interval in one push; the opener's promise settles after it", async () => {
    const { buffer, timers, pushed, reports } = setup();
    let settled = false;
    void opened(buffer.add(item(1))).then(() => {
      settled = true;
    });
    expect(buffer.add(item(2))).toEqual({ status: "joined" });
    expect(buffer.add(item(3))).toEqual({ status: "joined" });
    expect(timers.count()).toBe(1);
    expect(pushed).toEqual([]);
    expect(buffer.pending).toBe(3);
    await timers.fire();
    expect(pushed).toEqual([[item(1), item(2), item(3)]]);
    expect(settled).toBe(true);
    expect(reports).toEqual([{ sent: 3, failed: 0 }]);
    // The next exposure opens a new batch with a timer of its own.
    expect(buffer.add(item(4)).status).toBe("opened");
    await timers.fire();
    expect(pushed).toEqual([[item(1), item(2), item(3)], [item(4)]]);
  });

  it("a full batch waits for its own timer; the next exposure opens another batch", async () => {
    const { buffer, timers, pushed } = setup({ batchMax: 2 });
    const first = opened(buffer.add(item(1)));
    expect(buffer.add(item(2)).status).toBe("joined");
    expect(pushed).toEqual([]);
    const second = opened(buffer.add(item(3)));
    expect(second).not.toBe(first);
    expect(timers.count()).toBe(2);
    await timers.fire(1);
    await first;
    expect(pushed).toEqual([[item(1), item(2)]]);
    await timers.fire();
    await second;
    expect(pushed).toEqual([[item(1), item(2)], [item(3)]]);
  });

  it("refuses exposures beyond its bound while a push hangs, and takes them again once it returns", async () => {
    const { buffer, timers, pushed, held } = setup({ bufferMax: 3, hold: true });
    for (const n of [1, 2, 3]) expect(buffer.add(item(n)).status).not.toBe("refused");
    expect(buffer.add(item(4))).toEqual({ status: "refused" });
    expect(buffer.refused).toBe(1);
    await timers.fire();
    expect(pushed).toHaveLength(1);
    // Still in flight: still counted against the bound.
    expect(buffer.pending).toBe(3);
    expect(buffer.add(item(5)).status).toBe("refused");
    for (const release of held.splice(0)) release();
    await new Promise((r) => setTimeout(r, 0));
    expect(buffer.pending).toBe(0);
    expect(buffer.add(item(6)).status).toBe("opened");
    expect(buffer.refused).toBe(2);
  });

  it("reports a failed push with its count and settles the opener's promise without rejecting", async () => {
    const { buffer, timers, reports } = setup({ fail: true });
    const p = opened(buffer.add(item(1)));
    buffer.add(item(2));
    await timers.fire();
    await expect(p).resolves.toBeUndefined();
    expect(reports).toHaveLength(1);
    expect(reports[0]).toMatchObject({ sent: 0, failed: 2 });
    expect(String(reports[0]?.error)).toMatch(/stream refused/);
    expect(buffer.pending).toBe(0);
  });
});
