// Helpers for end-to-end tests that run `scripts/dev.ts` — the `npm run dev` launcher — as a child process.
import { type ChildProcess, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";

export { alive, descendants } from "../../scripts/lib/processes.ts";

const root = join(import.meta.dirname, "..", "..");

export interface Dev {
  proc: ChildProcess;
  output: () => string;
  exited: Promise<number | null>;
}

/** What the launcher records in `<state-dir>/dev.json` once its services run. */
export interface DevState {
  pid: number;
  url: string;
  ports: { postgres: number; pgWsProxy: number; redis: number; redisGateway: number };
  pids: { postgres: number; redis: number };
}

/** `demo: false` leaves the demo store (and its first refresh) out: tests that do not look at it start faster. */
export function startDev(port: number, stateDir: string, options: { demo?: boolean } = {}): Dev {
  const args = [join(root, "scripts", "dev.ts"), "--port", String(port), "--state-dir", stateDir, "--quiet"];
  if (options.demo === false) args.push("--no-demo");
  const proc = spawn(process.execPath, args, { cwd: root, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  const collect = (d: Buffer) => {
    output += d.toString();
  };
  proc.stdout?.on("data", collect);
  proc.stderr?.on("data", collect);
  const exited = new Promise<number | null>((resolve) => proc.once("exit", (code) => resolve(code)));
  return { proc, output: () => output, exited };
}

/** Waits for the banner the launcher prints once the Worker answers; fails fast if the launcher exits. */
export async function untilReady(dev: Dev, timeoutMs = 150_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!dev.output().includes("Lastmile is running")) {
    if (dev.proc.exitCode !== null) throw new Error(`npm run dev exited early:\n${dev.output()}`);
    if (Date.now() > deadline) throw new Error(`npm run dev was not ready in time:\n${dev.output()}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

export function devState(stateDir: string): DevState {
  return JSON.parse(readFileSync(join(stateDir, "dev.json"), "utf8")) as DevState;
}

export async function stopDev(dev: Dev | undefined): Promise<void> {
  if (dev && dev.proc.exitCode === null) {
    dev.proc.kill("SIGINT");
    await dev.exited;
  }
}

/** Polls `fn` until it returns a value; errors count as "not yet". */
export async function until<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await fn().catch(() => undefined);
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}
