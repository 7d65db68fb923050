// The benchmark harness's paired load (bench/lib/load.ts): two kinds of request interleaved on one connection, each
// answer's latency counted for the side that sent it. Against a local HTTP server whose `/b` answers only after a
// delay, so a fast `/a` answer counted for b (or the reverse order) shows in the figures.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { pairedLoad } from "../../bench/lib/load.ts";
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
