// The Worker the benchmarks measure: the local stack (real Postgres + WebSocket proxy, real redis-server +
// Upstash gateway) and the Worker under `wrangler dev` (workerd), started exactly as `npm run dev` and the e2e
// tests start them, with BENCH_ROUTES on. Everything lives in a throwaway folder with its own database, never
// touches dev data, and is stopped and deleted at the end, on error and on Ctrl-C (`stopLocalWorker`).
//
// `wrangler dev` watches the sources and reloads the Worker whenever a file changes (it has no switch to stop
// that), so a measurement taken while someone edits src/ can straddle a reload. The Worker's output is watched
// for reloads and an early exit: the harness measures again after a reload and stops when the Worker died.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { LOCAL_KEYS, localWorkerVars } from "../../scripts/lib/local-keys.ts";
import { freePort, StackError } from "../../scripts/lib/ports.ts";
import { stopAllChildren } from "../../scripts/lib/processes.ts";
import { type Stack, startStack } from "../../scripts/lib/stack.ts";
import { type RunningWorker, startWorker } from "../../scripts/lib/worker.ts";

export interface LocalWorker {
  /** Base URL of the Worker, e.g. http://127.0.0.1:41234 */
  url: string;
  /** The variables the Worker runs with (connection settings and local keys). */
  vars: Record<string, string>;
  stack: Stack;
  worker: RunningWorker;
  /** How many times wrangler dev has reloaded (or started reloading) the Worker since it was ready. */
  reloads(): number;
  /** Milliseconds since the last reload began, or Infinity. */
  sinceLastReloadMs(): number;
  /** Throws (with wrangler's last output) when the Worker process has exited. */
  assertRunning(): void;
}

/** wrangler's own lines when a source or config change rebuilds or restarts the Worker. */
const RELOAD_LINE = /Reloading local server|Detected changes, restarted server|Build failed/;

// What has been started so far, so that a failure or Ctrl-C half-way through still stops it all.
let tempDir: string | undefined;
let stack: Stack | undefined;
let worker: RunningWorker | undefined;

export async function startLocalWorker(log: (line: string) => void): Promise<LocalWorker> {
  if (tempDir) throw new Error("the bench Worker is already running");
  const dir = mkdtempSync(join(tmpdir(), "lastmile-bench-"));
  tempDir = dir;
  try {
    log(`stack: starting (state in ${dir})`);
    stack = await startStack({
      // The folder itself, as in the test setup: the Postgres launcher opens it to its server user, one level up.
      stateDir: dir,
      database: "lastmile_bench",
      redisToken: LOCAL_KEYS.redisToken,
      persistRedis: false,
      output: "quiet",
      log: (line) => log(`stack: ${line}`),
    });
    const vars = { BENCH_ROUTES: "true", ...localWorkerVars(), ...stack.vars };
    const port = await freePort();
    log(`worker: starting wrangler dev on 127.0.0.1:${port}`);
    worker = await startWorker({
      port,
      persistTo: join(dir, "wrangler"),
      varsFile: join(dir, ".dev.vars"),
      vars,
      output: "quiet",
    });
    const running = worker;
    let reloads = 0;
    let lastReloadAt = Number.NEGATIVE_INFINITY;
    const onOutput = (chunk: Buffer) => {
      if (RELOAD_LINE.test(chunk.toString("utf8"))) {
        reloads++;
        lastReloadAt = performance.now();
      }
    };
    running.child.process.stdout?.on("data", onOutput);
    running.child.process.stderr?.on("data", onOutput);
    return {
      url: running.url,
      vars,
      stack,
      worker: running,
      reloads: () => reloads,
      sinceLastReloadMs: () => performance.now() - lastReloadAt,
      assertRunning() {
        const proc = running.child.process;
        if (proc.exitCode !== null || proc.signalCode !== null) {
          throw new StackError(
            `wrangler dev exited (${proc.exitCode ?? proc.signalCode}) during the run:\n${running.child.recentOutput()}`,
          );
        }
      },
    };
  } catch (error) {
    await stopLocalWorker();
    throw error;
  }
}

/**
 * The local stack alone (Postgres + proxy, Redis + gateway), for suites that measure the database and need no
 * Worker (`needsWorker: false`). Same throwaway folder and database, same `stopLocalWorker`; `url` is empty and
 * the guard never reports a reload.
 */
export async function startLocalStackOnly(log: (line: string) => void): Promise<LocalWorker> {
  if (tempDir) throw new Error("the bench stack is already running");
  const dir = mkdtempSync(join(tmpdir(), "lastmile-bench-"));
  tempDir = dir;
  try {
    log(`stack: starting without a Worker (state in ${dir})`);
    const started = await startStack({
      stateDir: dir,
      database: "lastmile_bench",
      redisToken: LOCAL_KEYS.redisToken,
      persistRedis: false,
      output: "quiet",
      log: (line) => log(`stack: ${line}`),
    });
    stack = started;
    return {
      url: "",
      vars: { ...localWorkerVars(), ...started.vars },
      stack: started,
      get worker(): RunningWorker {
        throw new Error("this run started no Worker (every suite has needsWorker: false)");
      },
      reloads: () => 0,
      sinceLastReloadMs: () => Number.POSITIVE_INFINITY,
      assertRunning() {},
    };
  } catch (error) {
    await stopLocalWorker();
    throw error;
  }
}

/** Stops whatever `startLocalWorker` started and deletes its folder; safe to call more than once. */
export async function stopLocalWorker(): Promise<void> {
  const [w, s, dir] = [worker, stack, tempDir];
  worker = undefined;
  stack = undefined;
  tempDir = undefined;
  await w?.stop().catch(() => {});
  await s?.stop().catch(() => {});
  // Anything a half-finished start left behind (a wrangler that never became ready, a Postgres mid-start).
  await stopAllChildren().catch(() => {});
  if (dir) rmSync(dir, { recursive: true, force: true });
}
