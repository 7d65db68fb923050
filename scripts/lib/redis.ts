// A real redis-server for the local stack and the tests. When it is missing we install Debian's package,
// if this is Debian/Ubuntu and we are root; otherwise we say how to install it.
import { existsSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import { createConnection } from "node:net";
import { LOOPBACK, StackError } from "./ports.ts";
import { type Child, run, spawnChild, waitUntilReady } from "./processes.ts";

export interface RedisOptions {
  port: number;
  /** Folder for the append-only file; omit for a memory-only server (tests). */
  dataDir?: string;
  output?: "inherit" | "quiet";
}

export interface RunningRedis {
  host: string;
  port: number;
  child: Child;
  stop(): Promise<void>;
}

function onPath(binary: string): string | undefined {
  for (const dir of (process.env.PATH ?? "").split(":")) {
    if (dir && existsSync(`${dir}/${binary}`)) return `${dir}/${binary}`;
  }
  for (const dir of ["/usr/bin", "/usr/local/bin", "/opt/homebrew/bin"]) {
    if (existsSync(`${dir}/${binary}`)) return `${dir}/${binary}`;
  }
  return undefined;
}

/** The path of redis-server, installing Debian's package first when that is possible and needed. */
export async function ensureRedisServer(log: (line: string) => void = console.log): Promise<string> {
  const found = onPath("redis-server");
  if (found) return found;
  const isRoot = typeof process.getuid === "function" && process.getuid() === 0;
  if (isRoot && existsSync("/etc/debian_version") && onPath("apt-get")) {
    log("redis-server is missing: installing Debian's package redis-server (apt-get) …");
    const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
    const install = () => run("apt-get", ["install", "-y", "--no-install-recommends", "redis-server"], { env });
    try {
      await install();
    } catch {
      // A fresh machine has no package lists yet.
      await run("apt-get", ["update"], { env });
      await install();
    }
    const installed = onPath("redis-server");
    if (installed) return installed;
  }
  throw new StackError(
    "redis-server was not found. Install it: Debian/Ubuntu `sudo apt-get install redis-server`, " +
      "macOS `brew install redis`, Fedora `sudo dnf install redis`; then run this again.",
  );
}

export function redisAnswers(port: number, host = LOOPBACK): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host, port });
    let reply = "";
    socket.setTimeout(1000, () => {
      socket.destroy();
      resolve(false);
    });
    socket.once("connect", () => socket.write("*1\r\n$4\r\nPING\r\n"));
    socket.on("data", (d) => {
      reply += d.toString("utf8");
      if (reply.includes("\r\n")) {
        socket.destroy();
        resolve(reply.startsWith("+PONG"));
      }
    });
    socket.once("error", () => resolve(false));
  });
}

export async function startRedis(options: RedisOptions): Promise<RunningRedis> {
  const binary = await ensureRedisServer();
  const args = ["--port", String(options.port), "--bind", LOOPBACK, "--save", "", "--protected-mode", "no"];
  if (options.dataDir) {
    await mkdir(options.dataDir, { recursive: true });
    args.push("--dir", options.dataDir, "--appendonly", "yes", "--appendfsync", "everysec");
  } else {
    args.push("--appendonly", "no");
  }
  const child = spawnChild("redis", binary, args, { output: options.output ?? "quiet" });
  await waitUntilReady(child, () => redisAnswers(options.port), { timeoutMs: 20_000 });
  return { host: LOOPBACK, port: options.port, child, stop: () => child.stop("SIGTERM", 10_000) };
}
