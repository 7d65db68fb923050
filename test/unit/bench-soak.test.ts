// The soak suite's comparison with the floor (bench/suites/soak.ts): docs/benchmarks.md compares a figure "against
// the floor at the same connection count". Each mixed window ranks on 5 connections (next to 5 of collection), and
// `relative.lastWindowRank` used to compare that with the floor measured at 10. The suite is run here with its
// data steps stubbed (no store to seed: the seed, refresh, readStore and session recording return at once), a local
// HTTP server standing in for the Worker, and a context whose measurements are made up per connection count, so
// which floor a figure was compared with shows in its numbers.
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import type { BenchUser, StoreData } from "../../bench/lib/rank-data.ts";
import type { Floor, FloorConnections, Measurement, Suite, SuiteContext } from "../../bench/lib/suite.ts";
import { startServer } from "../support/http-server.ts";

vi.mock("../../scripts/lib/seed.ts", () => ({ seedUciRetail: async () => ({}) }));
vi.mock("../../bench/lib/rank-data.ts", async (importOriginal) => ({
  ...(await importOriginal<typeof import("../../bench/lib/rank-data.ts")>()),
  database: () => ({ q: async () => [], end: async () => {} }),
  refreshAndPublish: async () => ({ refreshS: 0, publishS: 0 }),
  readStore: async (): Promise<StoreData> => ({
    // Enough products for the suite's 100-candidate bodies.
    products: new Map(Array.from({ length: 200 }, (_, i) => [`p${i}`, { id: `p${i}` } as never])),
    popular: [["p1", 1]],
    trending: [],
    popularByCategory: new Map(),
    users: Array.from({ length: 60 }, (_, i) => ({ userId: `u${i}`, batch: [] }) as unknown as BenchUser),
  }),
  streamLength: async () => 0,
  recordSessions: async () => 0,
  waitForOutboxes: async () => 0,
}));

// Imported by a path the type-checker does not follow: the suite reads workerd's memory with Node's WebSocket, which
// tsconfig.json's Workers types (test/unit) do not have; tsconfig.node.json checks the suite itself.
const SOAK = "../../bench/suites/soak.ts";
const { default: soak } = (await import(SOAK)) as { default: Suite };

/** A made-up measurement whose figures name its kind and connection count. */
function measurement(path: string, connections: number, p50Ms: number): Measurement {
  return {
    path,
    connections,
    durationS: 1,
    requests: 100,
    rps: 100 * connections,
    p50Ms,
    p90Ms: p50Ms,
    p99Ms: 2 * p50Ms,
    maxMs: 3 * p50Ms,
    meanMs: p50Ms,
    errors: 0,
    non2xx: 0,
  };
}

describe("soak: the last window's ranking against the floor", () => {
  let server: Awaited<ReturnType<typeof startServer>>;

  beforeAll(async () => {
    server = await startServer((_request, res) => {
      res.writeHead(200, { "content-type": "application/json" });
      res.end('{"ok":true}');
    });
    vi.stubEnv("BENCH_SOAK_SECONDS", "60");
    vi.stubEnv("BENCH_SOAK_VISITORS", "1");
  });

  afterAll(async () => {
    vi.unstubAllEnvs();
    await server.close();
  });

  it("compares ranking at 5 connections with the floor measured at 5 connections", async () => {
    /** The floor's p50 is 1 ms per connection; ranking's 100 ms. */
    const ctx: SuiteContext = {
      url: server.url,
      vars: {},
      durationS: 1,
      log: () => {},
      measure: async (_label, m) => measurement(m.path, m.connections, 100),
      measurePaired: async () => {
        throw new Error("not used by the soak");
      },
      measureFloor: async (connections: FloorConnections[]) => {
        const floor: Floor = { path: "/__bench/empty" };
        for (const c of connections) floor[`c${c}`] = measurement("/__bench/empty", c, c);
        return floor;
      },
    };
    const result = await soak.run(ctx);
    const windows = (result.results.windows as unknown[]).length;
    expect(windows).toBe(2);
    const relative = result.relative as { lastWindowRank: { against: string; addedP50Ms: number; rpsRatio: number } };
    expect(relative.lastWindowRank.against).toBe("floor.c5 (before)");
    // 100 ms over the 5 ms of the floor at 5 connections (not the 10 ms of the one at 10), at the same rps.
    expect(relative.lastWindowRank.addedP50Ms).toBe(95);
    expect(relative.lastWindowRank.rpsRatio).toBe(1);
    // The floor before the soak carries both counts; the one after it, compared with before, is at 10.
    expect(result.floor.c5?.connections).toBe(5);
    expect(result.floor.c10?.connections).toBe(10);
  });
});
