// The benchmark harness's loads (bench/lib/load.ts). The paired load: two kinds of request interleaved on one
// connection, each answer's latency counted for the side that sent it, against a local HTTP server whose `/b` answers
// only after a delay, so a fast `/a` answer counted for b (or the reverse order) shows in the figures. A load bounded
// by a request count: its duration (and so its rps) runs to its last answer, not to autocannon's next tick.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { load, pairedLoad } from "../../bench/lib/load.ts";
import { startServer } from "../support/http-server.ts";

const B_DELAY_MS = 25;

describe("pairedLoad", () => {
  const seen: Array<{ method: string; path: string; body: string }> = [];
  let server: Awaited<ReturnType<typeof startServer>>;
  let url: string;

  beforeAll(async () => {
    server = await startServer((request, res) => {
      seen.push(request);
      const slow = request.path.startsWith("/b");
      setTimeout(
        () => {
          res.writeHead(slow ? 201 : 200, { "content-type": "text/plain" });
          res.end(slow ? "b" : "a");
        },
        slow ? B_DELAY_MS : 0,
      );
    });
    url = server.url;
  });

  afterAll(() => server.close());

  it("alternates a and b on one connection and counts each answer for the side that sent it", async () => {
    seen.length = 0;
    const inspected: Array<[string, number, string]> = [];
    const result = await pairedLoad({
      url,
      a: { path: "/a", inspect: (status, body) => inspected.push(["a", status, body]) },
      b: {
        path: "/b",
        method: "POST",
        headers: { "content-type": "application/json" },
        next: (i) => ({ path: `/b?i=${i}`, body: JSON.stringify({ i }) }),
        inspect: (status, body) => inspected.push(["b", status, body]),
      },
      requests: 20,
    });

    // The server saw a, b, a, b, …; b's generator ran once per b request, in order.
    expect(seen.length).toBeGreaterThanOrEqual(20);
    seen.slice(0, 20).forEach((request, k) => {
      if (k % 2 === 0) expect(request).toEqual({ method: "GET", path: "/a", body: "" });
      else {
        const i = (k - 1) / 2;
        expect(request).toEqual({ method: "POST", path: `/b?i=${i}`, body: JSON.stringify({ i }) });
      }
    });
    // Each side's inspector saw only its own answers.
    expect(inspected.filter(([side]) => side === "a").every(([, status, body]) => status === 200 && body === "a")).toBe(
      true,
    );
    expect(inspected.filter(([side]) => side === "b").every(([, status, body]) => status === 201 && body === "b")).toBe(
      true,
    );
    expect(result.a.requests + result.b.requests).toBe(20);
    expect(result.a.requests).toBe(10);
    expect(result.b.requests).toBe(10);
    expect(result.pairs).toBe(10);
    // Every b answer took at least the server's delay: none of a's fast answers was counted for b.
    expect(result.b.latencyMs.p50).toBeGreaterThanOrEqual(B_DELAY_MS);
    // The per-pair difference is b minus the a before it, so positive here; a's own p50 is below b's.
    expect(result.a.latencyMs.p50).toBeLessThan(result.b.latencyMs.p50);
    expect(result.differenceMs.p50).toBeGreaterThan(0);
    // 201 is a 2xx: no side counts a non-2xx answer.
    expect(result.a.non2xx + result.b.non2xx).toBe(0);
  });
});

describe("load: the duration a load is measured over", () => {
  /** performance.now() when the server sent its latest answer (same process, same clock as the load). */
  let lastSent = 0;
  let server: Awaited<ReturnType<typeof startServer>>;

  beforeAll(async () => {
    server = await startServer((_request, res) => {
      setTimeout(() => {
        res.writeHead(200, { "content-type": "application/json" });
        res.end('{"ok":true}');
        lastSent = performance.now();
      }, 2);
    });
  });

  afterAll(() => server.close());

  it("bounded by a request count: from the start to the last answer (autocannon ends only at its next 1 s tick)", async () => {
    const t0 = performance.now();
    const r = await load({ url: server.url, path: "/", connections: 2, requests: 40 });
    expect(r.requests).toBe(40);
    // 40 answers of ~2 ms on two connections take a fraction of a second; autocannon called back ~1 s after its start.
    // The load's clock starts after t0 and stops when its last answer arrives, just after the server sent it.
    expect(r.durationS * 1000).toBeLessThanOrEqual(lastSent - t0 + 100);
    // rps over that time: more than the 40 per second that the old one-second wait capped it at.
    expect(r.rps).toBeGreaterThan(40);
  });

  it("bounded by a duration: from the start to autocannon's end, as before", async () => {
    const t0 = performance.now();
    const r = await load({ url: server.url, path: "/", connections: 1, durationS: 0.5 });
    const returned = performance.now();
    expect(r.durationS).toBeGreaterThanOrEqual(0.5);
    // (durationS is rounded to 10 ms)
    expect(r.durationS * 1000).toBeLessThanOrEqual(returned - t0 + 10);
    // autocannon ends a duration at its sampling tick: the load runs to there, whatever came after the last answer.
    expect(r.durationS * 1000).toBeGreaterThan(returned - t0 - 100);
  });
});
