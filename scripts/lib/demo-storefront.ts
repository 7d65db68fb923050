// The demo store of `npm run dev` (docs/storefront.md#the-demo): the origin (demo-origin.ts, pages rendered from the
// catalogue in Postgres) behind the example storefront Worker (examples/storefront-worker) under its own
// `wrangler dev`, whose Service Bindings reach the Lastmile Worker of the same machine through wrangler's dev
// registry. Lastmile keeps its port; the store gets another.
import { join } from "node:path";
import type { DbSettings } from "../../src/stores/db.ts";
import { type DemoOrigin, loadDemoCatalog, type ReportSource, startDemoOrigin } from "./demo-origin.ts";
import { freePort, LOOPBACK } from "./ports.ts";
import { type Child, spawnChild, waitUntilReady } from "./processes.ts";
import { REPO_ROOT, wranglerBin } from "./worker.ts";

export const STOREFRONT_CONFIG = join(REPO_ROOT, "examples", "storefront-worker", "wrangler.toml");

export interface DemoStoreOptions {
  settings: DbSettings;
  /** The store's port (the storefront Worker); 0 = a free one, picked just before wrangler binds it. */
  port: number;
  /** The origin's port; 0 (default) = a free one. */
  originPort?: number;
  /** Folder for the storefront Worker's local state. */
  persistTo: string;
  /** Wrangler's dev registry folder (must be the Lastmile Worker's); absent = wrangler's default. */
  registryPath?: string;
  /** Ranking deadline of the storefront's blocks (ms). */
  rankingTimeoutMs?: number;
  output?: "inherit" | "quiet";
  timeoutMs?: number;
  /** The experiments page's report source (the local Lastmile Worker and its admin key). */
  reports?: ReportSource;
}

export interface DemoStore {
  url: string;
  origin: DemoOrigin;
  products: number;
  child: Child;
  stop(): Promise<void>;
}

export async function startDemoStore(options: DemoStoreOptions): Promise<DemoStore> {
  const catalog = await loadDemoCatalog(options.settings);
  const origin = await startDemoOrigin({
    ...catalog,
    port: options.originPort ?? 0,
    ...(options.reports ? { reports: options.reports } : {}),
  });
  try {
    const port = options.port || (await freePort());
    const args = [
      wranglerBin(),
      "dev",
      "--config",
      STOREFRONT_CONFIG,
      "--ip",
      LOOPBACK,
      "--port",
      String(port),
      "--inspector-port",
      String(await freePort()),
      "--persist-to",
      options.persistTo,
      "--var",
      `ORIGIN_URL:${origin.url}`,
      "--var",
      `RANKING_TIMEOUT_MS:${options.rankingTimeoutMs ?? 150}`,
      "--show-interactive-dev-session=false",
    ];
    const child = spawnChild("storefront", process.execPath, args, {
      cwd: REPO_ROOT,
      output: options.output ?? "quiet",
      env: {
        ...process.env,
        CLOUDFLARE_CF_FETCH_ENABLED: "false",
        WRANGLER_SEND_METRICS: "false",
        NO_COLOR: "1",
        ...(options.registryPath ? { WRANGLER_REGISTRY_PATH: options.registryPath } : {}),
      },
    });
    const url = `http://${LOOPBACK}:${port}`;
    await waitUntilReady(
      child,
      async () => {
        const res = await fetch(`${url}/`, { signal: AbortSignal.timeout(5000) });
        await res.body?.cancel();
        return res.status === 200;
      },
      { timeoutMs: options.timeoutMs ?? 90_000, intervalMs: 250 },
    ).catch(async (error: unknown) => {
      await child.stop();
      throw error;
    });
    return {
      url,
      origin,
      products: origin.products,
      child,
      stop: async () => {
        await child.stop("SIGTERM", 10_000);
        await origin.close();
      },
    };
  } catch (error) {
    await origin.close();
    throw error;
  }
}
