// `npm run dev`: the whole local stack on this machine, no Cloudflare account and no Docker.
//   PostgreSQL (real server) ← Postgres-over-WebSocket proxy ← the Neon driver in the Worker
//   redis-server (real)      ← Upstash-REST gateway          ← @upstash/redis in the Worker
//   wrangler dev (workerd) on http://127.0.0.1:8787 with local KV, Durable Objects and cron
// State lives in .lastmile/dev (git-ignored) and survives restarts. Ctrl-C stops everything it started.
// On a database whose catalogue is empty, the demo store is seeded from the UCI Online Retail data while wrangler
// starts (the whole catalogue and the newest DEV_SEED_EVENTS purchases; `npm run seed` loads all of them).
//
// The demo store (docs/storefront.md#the-demo) runs next to it: the example storefront Worker under its own wrangler
// dev on http://127.0.0.1:8790, in front of a small origin rendering the seeded catalogue; when nothing is published
// yet, a refresh publishes the first snapshot so the store's blocks are personalised.
//
// Options: --port N (8787), --state-dir DIR (.lastmile/dev), --quiet (no child logs), --no-seed,
// --demo-port N (8790 with the default port, else a free one), --no-demo.
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { describeError } from "../src/log.ts";
import { type DemoStore, startDemoStore } from "./lib/demo-storefront.ts";
import { LOCAL_KEYS, localWorkerVars } from "./lib/local-keys.ts";
import { assertPortFree, portIsFree, StackError } from "./lib/ports.ts";
import { stopAllChildren } from "./lib/processes.ts";
import { catalogIsEmpty, seedUciRetail, UCI_RETAIL_FILE } from "./lib/seed.ts";
import { type Stack, startStack } from "./lib/stack.ts";
import { REPO_ROOT, type RunningWorker, startWorker } from "./lib/worker.ts";

const { values: args } = parseArgs({
  options: {
    port: { type: "string", default: "8787" },
    "state-dir": { type: "string", default: join(REPO_ROOT, ".lastmile", "dev") },
    quiet: { type: "boolean", default: false },
    "no-seed": { type: "boolean", default: false },
    "demo-port": { type: "string", default: "" },
    "no-demo": { type: "boolean", default: false },
  },
});

/**
 * Purchases the automatic seed loads: the newest 50,000 of the 396,340 (the last ~3.5 weeks of the data) take ~7 s
 * here, overlapped with wrangler's start; all of them take ~35 s (`npm run seed`).
 */
const DEV_SEED_EVENTS = 50_000;
const port = Number(args.port);
const stateDir = resolve(args["state-dir"]);
const defaultStateDir = stateDir === join(REPO_ROOT, ".lastmile", "dev");
const lockFile = join(stateDir, "dev.json");
const output = args.quiet ? "quiet" : "inherit";
const say = (line: string) => console.log(`[dev] ${line}`);

function running(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** A second `npm run dev` on the same state would fight over the same Postgres data: refuse, clearly. */
function takeLock(): void {
  if (existsSync(lockFile)) {
    const previous = JSON.parse(readFileSync(lockFile, "utf8")) as { pid: number; url: string };
    if (previous.pid !== process.pid && running(previous.pid)) {
      throw new StackError(
        `the local stack is already running (pid ${previous.pid}) at ${previous.url}; stop it with Ctrl-C ` +
          `in its terminal or \`kill ${previous.pid}\`.`,
      );
    }
  }
  mkdirSync(stateDir, { recursive: true });
  ownLock = true;
  writeFileSync(
    lockFile,
    JSON.stringify({ pid: process.pid, url: `http://127.0.0.1:${port}`, startedAt: new Date().toISOString() }),
  );
}

let stack: Stack | undefined;
let worker: RunningWorker | undefined;
let demo: DemoStore | undefined;
let stopping = false;
let ownLock = false;

/**
 * Stops everything this process started, then exits. A second Ctrl-C (or SIGTERM) while stopping waits for the first
 * one to finish: exiting at once would leave Postgres, Redis and workerd running with nobody to stop them.
 */
async function shutdown(code: number): Promise<never> {
  if (stopping) {
    say("still stopping: the servers this run started are being shut down …");
    return new Promise<never>(() => {});
  }
  stopping = true;
  say("stopping …");
  await demo?.stop().catch(() => {});
  await worker?.stop().catch(() => {});
  await stack?.stop().catch(() => {});
  await stopAllChildren();
  if (ownLock) rmSync(lockFile, { force: true });
  say("stopped");
  process.exit(code);
}

async function main(): Promise<void> {
  takeLock();
  process.on("SIGINT", () => void shutdown(0));
  process.on("SIGTERM", () => void shutdown(0));
  await assertPortFree(port, "the Worker");

  stack = await startStack({
    stateDir,
    database: "lastmile",
    redisToken: LOCAL_KEYS.redisToken,
    persistRedis: true,
    // Postgres and Redis are chatty; their last lines are shown if they fail to start.
    output: "quiet",
    log: say,
  });
  const vars = { ...localWorkerVars(), ...stack.vars };
  const seeding = args["no-seed"] ? Promise.resolve() : seedIfEmpty(stack.vars);
  writeFileSync(
    lockFile,
    JSON.stringify({ pid: process.pid, url: `http://127.0.0.1:${port}`, ports: stack.ports, pids: stack.pids }),
  );

  // A state folder of its own (tests) gets a wrangler dev registry of its own: the demo store's Service Bindings
  // then reach this stack's Lastmile, never another one running on the machine.
  const registryPath = defaultStateDir ? undefined : join(stateDir, "wrangler-registry");
  if (registryPath) process.env.WRANGLER_REGISTRY_PATH = registryPath;
  say(`worker: starting wrangler dev on http://127.0.0.1:${port}`);
  worker = await startWorker({
    port,
    persistTo: join(stateDir, "wrangler"),
    varsFile: defaultStateDir ? join(REPO_ROOT, ".dev.vars") : join(stateDir, ".dev.vars"),
    vars,
    output,
  });
  await seeding;
  worker.child.exited.then((code) => {
    if (!stopping) {
      say(`wrangler dev exited (${code}); stopping the stack`);
      void shutdown(1);
    }
  });

  if (!args["no-demo"]) {
    demo = await startDemo(stack.vars, worker.url, registryPath);
    writeFileSync(
      lockFile,
      JSON.stringify({
        pid: process.pid,
        url: `http://127.0.0.1:${port}`,
        ports: stack.ports,
        pids: stack.pids,
        ...(demo ? { demoUrl: demo.url, originUrl: demo.origin.url } : {}),
      }),
    );
  }

  const health = (await (await fetch(`${worker.url}/health`)).json()) as {
    status: string;
    checks: Record<string, { status: string; latencyMs: number }>;
  };
  const checks = Object.entries(health.checks)
    .map(([name, c]) => `${name} ${c.status} (${c.latencyMs} ms)`)
    .join(", ");
  console.log(`
  Lastmile is running at ${worker.url}   (Ctrl-C stops everything)

  health        curl ${worker.url}/health        → ${health.status}: ${checks}
  cron          curl "${worker.url}/__scheduled?cron=*/15+*+*+*+*"
  keys          write key ${LOCAL_KEYS.writeKey} · server key ${LOCAL_KEYS.serverKey} · admin key ${LOCAL_KEYS.adminKey}
  postgres      ${stack.vars.DATABASE_URL}
  redis (REST)  ${stack.vars.UPSTASH_REDIS_REST_URL}  token ${LOCAL_KEYS.redisToken}
  state         ${stateDir}${
    demo
      ? `
  demo store    ${demo.url}   (storefront Worker → origin ${demo.origin.url}, ${demo.products} products)`
      : ""
  }
`);
}

/** The demo store; reports and never throws (Lastmile is usable without it). */
async function startDemo(
  stackVars: Stack["vars"],
  workerUrl: string,
  registryPath: string | undefined,
): Promise<DemoStore | undefined> {
  try {
    // 0: the store picks a free port just before wrangler binds it (one picked now could be taken by then).
    let demoPort = args["demo-port"] ? Number(args["demo-port"]) : port === 8787 ? 8790 : 0;
    if (demoPort !== 0 && !(await portIsFree(demoPort))) {
      if (args["demo-port"]) throw new StackError(`port 127.0.0.1:${demoPort} (the demo store) is already in use`);
      demoPort = 0;
    }
    void publishFirstSnapshot(workerUrl);
    say(`demo: starting the storefront Worker${demoPort ? ` on http://127.0.0.1:${demoPort}` : ""}`);
    // The origin on 8791 next to the store's 8790: the ORIGIN_URL of the example's wrangler.toml.
    const originPort = demoPort === 8790 && (await portIsFree(8791)) ? 8791 : 0;
    return await startDemoStore({
      settings: { databaseUrl: stackVars.DATABASE_URL, localWsProxy: stackVars.NEON_LOCAL_WS_PROXY },
      port: demoPort,
      originPort,
      persistTo: join(stateDir, "storefront"),
      ...(registryPath ? { registryPath } : {}),
      output,
      reports: { lastmileUrl: workerUrl, adminKey: LOCAL_KEYS.adminKey },
    });
  } catch (error) {
    say(`demo: not started (${error instanceof StackError ? error.message : describeError(error)})`);
    return undefined;
  }
}

/**
 * With nothing published yet (a new state folder), a refresh now rather than at the next cron: the ranking then
 * has its batch lists and catalogue within a minute. Reports and never throws.
 */
async function publishFirstSnapshot(workerUrl: string): Promise<void> {
  const admin = { authorization: `Bearer ${LOCAL_KEYS.adminKey}` };
  type Versions = { current: { version: number } | null; publishing: unknown };
  const versions = async () =>
    (await (await fetch(`${workerUrl}/v1/admin/versions`, { headers: admin })).json()) as Versions;
  try {
    const before = await versions();
    if (before.current || before.publishing) return;
    say("demo: nothing published yet; running a refresh (load → compute → publish)");
    const res = await fetch(`${workerUrl}/v1/admin/refresh`, { method: "POST", headers: admin });
    await res.body?.cancel();
    const deadline = Date.now() + 10 * 60_000;
    while (!stopping && Date.now() < deadline) {
      const now = await versions();
      if (now.current) {
        say(`demo: snapshot ${now.current.version} published; the store's recommendations are personalised`);
        return;
      }
      if (!now.publishing && res.status !== 200) break;
      await new Promise((r) => setTimeout(r, 1000));
    }
    if (!stopping) say("demo: the first refresh did not publish; `GET /v1/admin/runs` says why");
  } catch (error) {
    if (!stopping) say(`demo: the first refresh failed (${describeError(error)})`);
  }
}

/** Seeds the demo store when the catalogue is empty; reports and never throws (the stack is usable without it). */
async function seedIfEmpty(stackVars: Stack["vars"]): Promise<void> {
  const settings = { databaseUrl: stackVars.DATABASE_URL, localWsProxy: stackVars.NEON_LOCAL_WS_PROXY };
  try {
    if (!(await catalogIsEmpty(settings))) return;
    if (!existsSync(UCI_RETAIL_FILE)) {
      say(`seed: the catalogue is empty and there is no demo data at ${UCI_RETAIL_FILE}; not seeding`);
      return;
    }
    say(`seed: empty catalogue; loading the UCI Online Retail demo store (newest ${DEV_SEED_EVENTS} purchases)`);
    // Shifted so the newest purchase is now: the recommenders' windows (days) then cover the demo history.
    const r = await seedUciRetail({ settings, newestEvents: DEV_SEED_EVENTS, endAt: new Date() });
    say(
      `seed: ${r.products} products (${r.categorized} categorised), ${r.events} purchases of ${r.customers} ` +
        `customers (${r.from?.slice(0, 10)} → ${r.to?.slice(0, 10)}) in ${(r.timings.totalMs / 1000).toFixed(1)} s; ` +
        "`npm run seed` loads all purchases",
    );
  } catch (error) {
    say(`seed: failed (${describeError(error)}); continuing without demo data`);
  }
}

main().catch(async (error: unknown) => {
  console.error(
    `[dev] ${error instanceof StackError ? error.message : error instanceof Error ? error.stack : String(error)}`,
  );
  await shutdown(1);
});
