// `npm run dev` as a newcomer runs it: the whole stack under wrangler dev, /health over HTTP, dependency
// faults seen by /health, a second instance refused, a taken port refused, and Ctrl-C leaving no orphan.
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort } from "../../scripts/lib/ports.ts";
import type { HealthReport } from "../../src/health-report.ts";
import { alive, type Dev, descendants, devState, startDev, stopDev, until, untilReady } from "./dev-process.ts";

const stateDir = mkdtempSync(join(tmpdir(), "lastmile-e2e-"));

async function health(url: string): Promise<HealthReport> {
  const res = await fetch(`${url}/health`, { signal: AbortSignal.timeout(10_000) });
  expect(res.status).toBe(200);
  return (await res.json()) as HealthReport;
}

let dev: Dev;
let url: string;
let pids: { postgres: number; redis: number };

beforeAll(async () => {
  const port = await freePort();
  url = `http://127.0.0.1:${port}`;
  dev = startDev(port, stateDir);
  // The launcher prints its banner (URLs, keys) once the Worker answers: that is "ready" for a person too.
  await untilReady(dev);
  pids = devState(stateDir).pids;
});

afterAll(async () => {
  await stopDev(dev);
  rmSync(stateDir, { recursive: true, force: true });
});

describe("npm run dev", () => {
  it("serves /health with every dependency ok", async () => {
    const report = await health(url);
    expect(Object.fromEntries(Object.entries(report.checks).map(([k, v]) => [k, v.status]))).toEqual({
      postgres: "ok",
      redis: "ok",
      kv: "ok",
      durableObjects: "ok",
    });
    expect(dev.output()).toContain("local-write-key");
  });

  it("refuses a second instance on the same state, clearly, and leaves the first running", async () => {
    const second = startDev(await freePort(), stateDir);
    expect(await second.exited).toBe(1);
    expect(second.output()).toMatch(/already running \(pid \d+\)/);
    expect((await health(url)).status).toBe("ok");
  });

  it("refuses a taken port with a clear message before starting anything", async () => {
    const blocker: Server = createServer();
    const port = await freePort();
    await new Promise<void>((r) => blocker.listen(port, "127.0.0.1", () => r()));
    const other = mkdtempSync(join(tmpdir(), "lastmile-e2e-port-"));
    try {
      const third = startDev(port, other);
      expect(await third.exited).toBe(1);
      expect(third.output()).toContain(`port 127.0.0.1:${port} (the Worker) is already in use`);
      expect(third.output()).not.toContain("postgres: starting");
    } finally {
      blocker.close();
      rmSync(other, { recursive: true, force: true });
    }
  });

  it("reports a stopped Redis, then a stopped Postgres, as errors within seconds while still answering", async () => {
    process.kill(pids.redis, "SIGKILL");
    const redisDown = await until(
      "redis error",
      async () => {
        const r = await health(url);
        return r.checks.redis.status === "error" ? r : undefined;
      },
      10_000,
    );
    expect(redisDown.checks.postgres.status).toBe("ok");

    process.kill(pids.postgres, "SIGKILL");
    const pgDown = await until(
      "postgres error",
      async () => {
        const r = await health(url);
        return r.checks.postgres.status === "error" ? r : undefined;
      },
      10_000,
    );
    expect(pgDown.status).toBe("degraded");
    expect(pgDown.checks.kv.status).toBe("ok");
    expect(pgDown.checks.durableObjects.status).toBe("ok");
  });

  it("stops everything it started on Ctrl-C, also when Ctrl-C is pressed twice", async () => {
    const started = descendants(dev.proc.pid ?? 0);
    expect(started.length).toBeGreaterThan(0); // wrangler and its workerd at least
    dev.proc.kill("SIGINT");
    // An impatient second Ctrl-C while it stops: it must still stop what it started before exiting.
    await new Promise((r) => setTimeout(r, 100));
    dev.proc.kill("SIGINT");
    expect(await dev.exited).toBe(0);
    await until("every child to exit", async () => (started.every((pid) => !alive(pid)) ? true : undefined), 15_000);
    const res = await fetch(`${url}/health`).catch((e: unknown) => e);
    expect(res).toBeInstanceOf(Error);
  });
});
