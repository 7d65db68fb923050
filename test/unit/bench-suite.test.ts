// The benchmark harness's measurements (bench/lib/suite.ts, createContext): a request generator handed to
// `ctx.measure` or `ctx.measurePaired` serves its warm-up, its measured load and a repeated attempt, and none of them
// may send a request that one before it sent. The collect suite builds its message ids from the generator's counter:
// a counter that started again at 0 for the measured load resent the warm-up's ids, which the session objects skip
// as duplicates. Against a local HTTP server that keeps every request it is sent.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createContext, type WorkerGuard } from "../../bench/lib/suite.ts";
import { startServer } from "../support/http-server.ts";

describe("createContext: a generator's requests within one measurement", () => {
  const received: string[] = [];
  let server: Awaited<ReturnType<typeof startServer>>;
  let url: string;

  beforeAll(async () => {
    server = await startServer(({ method, path, body }, res) => {
      if (!path.startsWith("/__bench/empty")) received.push(`${method} ${path} ${body}`);
      setTimeout(() => {
        res.writeHead(200, { "content-type": "application/json" });
        res.end('{"ok":true}');
      }, 1);
    });
    url = server.url;
  });

  afterAll(() => server.close());

  const steady: WorkerGuard = {
    reloads: () => 0,
    sinceLastReloadMs: () => Number.POSITIVE_INFINITY,
    assertRunning() {},
  };
  const context = (guard: WorkerGuard) =>
    createContext({ url, vars: {}, durationS: 0.3, warmUpRequests: 20, guard, log: () => {} });
  const repeats = (list: string[]) => list.length - new Set(list).size;

  it("measure: the measured requests continue the warm-up's counter (no message id sent twice)", async () => {
    received.length = 0;
    const m = await context(steady).measure("collect", {
      path: "POST /batch",
      method: "POST",
      headers: { "content-type": "application/json" },
      next: (i) => ({ path: "/batch", body: JSON.stringify({ messageId: `m${i}` }) }),
      connections: 2,
      requests: 30,
    });
    expect(m.requests).toBe(30);
    // The warm-up's 20 and the measurement's 30, each with an id of its own.
    expect(received.length).toBeGreaterThanOrEqual(50);
    expect(repeats(received)).toBe(0);
  });

  it("measure: a duration-bounded measurement after the warm-up repeats none of its requests either", async () => {
    received.length = 0;
    const m = await context(steady).measure("collect", {
      path: "GET /item?i={i}",
      next: (i) => `/item?i=${i}`,
      connections: 3,
    });
    expect(m.requests).toBeGreaterThan(20);
    expect(repeats(received)).toBe(0);
  });

  it("measurePaired: each side's generator goes on from its warm-up", async () => {
    received.length = 0;
    const m = await context(steady).measurePaired("paired", {
      a: { path: "/floor", method: "POST", next: (i) => ({ path: "/floor", body: `f${i}` }) },
      b: { path: "/batch", method: "POST", next: (i) => ({ path: "/batch", body: `b${i}` }) },
    });
    expect(m.pairs).toBeGreaterThan(10);
    expect(received.filter((r) => r.startsWith("POST /batch")).length).toBeGreaterThan(m.b.requests);
    expect(repeats(received)).toBe(0);
  });

  it("a measurement taken again after a reload of the Worker sends none of the first attempt's requests", async () => {
    received.length = 0;
    // The first attempt straddles a reload (the count moves while it runs); the second does not.
    let asked = 0;
    const reloadedOnce: WorkerGuard = { ...steady, reloads: () => (asked++ === 0 ? 0 : 1) };
    const ctx = context(reloadedOnce);
    const m = await ctx.measure("collect", {
      path: "POST /batch",
      method: "POST",
      next: (i) => ({ path: "/batch", body: `m${i}` }),
      connections: 1,
      requests: 10,
    });
    expect(ctx.repeated).toEqual(["collect"]);
    expect(m.requests).toBe(10);
    // Two warm-ups of 20 and two measurements of 10.
    expect(received.length).toBeGreaterThanOrEqual(60);
    expect(repeats(received)).toBe(0);
  });
});
