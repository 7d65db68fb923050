// What a benchmark ran on and against: the machine, the runtime, the code (git commit), and the Worker runner's
// versions. Every report carries it, because figures from different machines or commits are not comparable.
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { arch, cpus, loadavg, platform, release, totalmem } from "node:os";
import { REPO_ROOT } from "../../scripts/lib/worker.ts";

export interface MachineInfo {
  cpuModel: string;
  cores: number;
  memoryGiB: number;
  node: string;
  platform: string;
  /** 1-minute load average when the run started: other work on the machine skews the figures. */
  loadAvg1m: number;
  gitCommit: string;
  /** True when the working tree had uncommitted changes. */
  gitDirty: boolean;
}

function git(args: string[]): string | undefined {
  try {
    return execFileSync("git", args, { cwd: REPO_ROOT, encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
  } catch {
    return undefined;
  }
}

export function machineInfo(): MachineInfo {
  const cpu = cpus();
  return {
    cpuModel: cpu[0]?.model.trim() ?? "unknown",
    cores: cpu.length,
    memoryGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    node: process.version,
    platform: `${platform()} ${release()} ${arch()}`,
    loadAvg1m: Math.round((loadavg()[0] ?? 0) * 100) / 100,
    gitCommit: git(["rev-parse", "HEAD"]) ?? "unknown",
    gitDirty: (git(["status", "--porcelain"]) ?? "") !== "",
  };
}

export function wranglerVersion(): string {
  const require = createRequire(import.meta.url);
  const pkg = JSON.parse(readFileSync(require.resolve("wrangler/package.json"), "utf8")) as { version: string };
  return pkg.version;
}

/** The one line that says how the Worker was run. */
export function runnerLine(): string {
  return `wrangler dev (workerd) on 127.0.0.1, Node ${process.version}, wrangler ${wranglerVersion()}`;
}

/** A one-line summary of the machine, for tables and docs. */
export function machineLine(m: MachineInfo): string {
  return `${m.cpuModel}, ${m.cores} cores, ${m.memoryGiB} GiB, ${m.platform}, Node ${m.node}`;
}
