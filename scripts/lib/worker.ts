// Runs the Worker under `wrangler dev` (workerd) against a started local stack: used by `npm run dev`, the
// end-to-end tests and the benchmarks, so all three run the Worker the same way.
import { writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { LOOPBACK } from "./ports.ts";
import { type Child, spawnChild, waitUntilReady } from "./processes.ts";

export const REPO_ROOT = join(import.meta.dirname, "..", "..");

export interface WorkerOptions {
  port: number;
  /** Folder for local KV, Durable Object and cache state. */
  persistTo: string;
  /** Where the variables file is written; the repository's .dev.vars is what `wrangler dev` reads by default. */
  varsFile: string;
  vars: Record<string, string>;
  output?: "inherit" | "quiet";
  timeoutMs?: number;
}

export interface RunningWorker {
  url: string;
  child: Child;
  stop(): Promise<void>;
}

export function wranglerBin(): string {
  // wrangler's package exports do not include its bin script: find the package folder instead.
  return join(createRequire(import.meta.url).resolve("wrangler/package.json"), "..", "bin", "wrangler.js");
}

/** A .dev.vars / .env file body (values quoted; none of ours contain quotes or newlines). */
export function dotenv(vars: Record<string, string>): string {
  return `${Object.entries(vars)
    .map(([key, value]) => `${key}="${value}"`)
    .join("\n")}\n`;
}

export async function startWorker(options: WorkerOptions): Promise<RunningWorker> {
  writeFileSync(options.varsFile, dotenv(options.vars), { mode: 0o600 });
  const args = [
    wranglerBin(),
    "dev",
    "--ip",
    LOOPBACK,
    "--port",
    String(options.port),
    "--persist-to",
    options.persistTo,
    "--test-scheduled",
    "--show-interactive-dev-session=false",
  ];
  // wrangler reads the repository's .dev.vars unless told of another file.
  if (options.varsFile !== join(REPO_ROOT, ".dev.vars")) args.push("--env-file", options.varsFile);
  const child = spawnChild("wrangler", process.execPath, args, {
    cwd: REPO_ROOT,
    output: options.output ?? "quiet",
    env: {
      ...process.env,
      // Miniflare otherwise fetches Request.cf data from the internet at start.
      CLOUDFLARE_CF_FETCH_ENABLED: "false",
      WRANGLER_SEND_METRICS: "false",
      NO_COLOR: "1",
    },
  });
  const url = `http://${LOOPBACK}:${options.port}`;
  await waitUntilReady(
    child,
    async () => {
      const res = await fetch(`${url}/health`, { signal: AbortSignal.timeout(5000) });
      await res.body?.cancel();
      return res.status === 200;
    },
    { timeoutMs: options.timeoutMs ?? 90_000, intervalMs: 250 },
  );
  return { url, child, stop: () => child.stop("SIGTERM", 10_000) };
}
