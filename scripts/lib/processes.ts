// Child processes of the local stack: spawned with prefixed logs, awaited until ready, and stopped on exit so
// that Ctrl-C leaves no orphan behind.
import { type ChildProcess, execFileSync, type SpawnOptions, spawn } from "node:child_process";
import { setTimeout as sleep } from "node:timers/promises";
import { StackError } from "./ports.ts";

export interface Child {
  name: string;
  process: ChildProcess;
  /** Resolves with the exit code (or signal name) once the process has exited. */
  exited: Promise<number | string>;
  /** The last lines the process printed, for error messages. */
  recentOutput(): string;
  /** Sends `signal`, then SIGKILL after `graceMs` if it is still running. */
  stop(signal?: NodeJS.Signals, graceMs?: number): Promise<void>;
}

export interface SpawnChildOptions extends SpawnOptions {
  /** Where output goes: "inherit" prefixes each line with the name; "quiet" keeps only the last lines for errors. */
  output?: "inherit" | "quiet";
}

const children = new Set<Child>();

export function spawnChild(name: string, command: string, args: string[], options: SpawnChildOptions = {}): Child {
  const { output = "quiet", ...spawnOptions } = options;
  const proc = spawn(command, args, { ...spawnOptions, stdio: ["ignore", "pipe", "pipe"] });
  const tail: string[] = [];
  const onData = (chunk: Buffer) => {
    for (const line of chunk.toString("utf8").split("\n")) {
      if (!line.trim()) continue;
      tail.push(line);
      if (tail.length > 40) tail.shift();
      if (output === "inherit") process.stdout.write(`[${name}] ${line}\n`);
    }
  };
  proc.stdout?.on("data", onData);
  proc.stderr?.on("data", onData);
  const exited = new Promise<number | string>((resolve, reject) => {
    proc.once("error", (error: NodeJS.ErrnoException) => {
      children.delete(child);
      reject(error.code === "ENOENT" ? new StackError(`${name}: command not found: ${command}`) : error);
    });
    proc.once("exit", (code, signal) => {
      children.delete(child);
      resolve(code ?? signal ?? "unknown");
    });
  });
  exited.catch(() => {});
  const child: Child = {
    name,
    process: proc,
    exited,
    recentOutput: () => tail.join("\n"),
    async stop(signal = "SIGTERM", graceMs = 10_000) {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      proc.kill(signal);
      const done = await Promise.race([
        exited.then(
          () => true,
          () => true,
        ),
        sleep(graceMs, false, { ref: false }),
      ]);
      if (!done) {
        proc.kill("SIGKILL");
        await exited.catch(() => {});
      }
    },
  };
  children.add(child);
  return child;
}

/**
 * Polls `probe` until it returns true. Fails with the child's last output if the child exits first or the
 * deadline passes.
 */
export async function waitUntilReady(
  child: Child,
  probe: () => Promise<boolean>,
  { timeoutMs = 30_000, intervalMs = 100 } = {},
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let exitedWith: number | string | undefined;
  child.exited.then(
    (code) => {
      exitedWith = code;
    },
    () => {},
  );
  for (;;) {
    if (exitedWith !== undefined) {
      throw new StackError(`${child.name} exited (${exitedWith}) before it was ready:\n${child.recentOutput()}`);
    }
    if (await probe().catch(() => false)) return;
    if (Date.now() > deadline) {
      throw new StackError(`${child.name} was not ready after ${timeoutMs} ms:\n${child.recentOutput()}`);
    }
    await sleep(intervalMs);
  }
}

/** Stops every child still running, most recently started first. */
export async function stopAllChildren(): Promise<void> {
  for (const child of [...children].reverse()) await child.stop();
}

/** Runs a command to completion; rejects with its output when it fails. */
export function run(command: string, args: string[], options: SpawnOptions = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const proc = spawn(command, args, { ...options, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    proc.stdout?.on("data", (d: Buffer) => {
      out += d.toString("utf8");
    });
    proc.stderr?.on("data", (d: Buffer) => {
      out += d.toString("utf8");
    });
    proc.once("error", (error: NodeJS.ErrnoException) =>
      reject(error.code === "ENOENT" ? new StackError(`command not found: ${command}`) : error),
    );
    proc.once("exit", (code) =>
      code === 0 ? resolve(out) : reject(new StackError(`${command} ${args.join(" ")} failed (${code}):\n${out}`)),
    );
  });
}

/** Whether a process with this id is running. */
export function alive(pid: number | undefined): boolean {
  if (!pid) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Every process below `pid` (children, their children, …), from `ps` (works on Linux and macOS). */
export function descendants(pid: number): number[] {
  const table = execFileSync("ps", ["-A", "-o", "pid=,ppid="], { encoding: "utf8" })
    .trim()
    .split("\n")
    .map((line) => line.trim().split(/\s+/).map(Number) as [number, number]);
  const found: number[] = [];
  const queue = [pid];
  while (queue.length) {
    const parent = queue.shift();
    for (const [child, ppid] of table) {
      if (ppid === parent) {
        found.push(child);
        queue.push(child);
      }
    }
  }
  return found;
}
