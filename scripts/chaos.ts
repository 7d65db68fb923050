// `npm run chaos`: longer history checks against the whole local stack under process-level faults. It starts a
// stack of its own (scripts/lib/chaos-stack.ts: own ports, a temporary state folder — never the dev stack), and for
// each scenario runs concurrent clients (many users, batches, retries and re-sends, every attempt recorded by the
// history recorder of scripts/lib/history.ts) while one kind of fault is injected over and over; then it restores
// the stack, drains the pipeline (outboxes → stream → Postgres) and checks the history: every acknowledged event in
// Postgres once, counted once by its session object, in the stream once, nothing unexpected.
//
// stdout: one JSON line per scenario and a total line; progress goes to stderr. Exit code 1 when any scenario lost,
// duplicated or invented an event (or could not drain).
//
//   npm run chaos                                      every scenario, 90 s of load each
//   npm run chaos -- --scenario redis-kill,resend --duration 60
//   npm run chaos -- --list
// Options: --duration S (load per scenario), --clients N (8), --seed N, --drain-timeout S (300), --port N,
// --state-dir DIR (default: a temporary folder, removed at the end), --keep (keep the state folder).
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { eachLimit } from "../src/concurrency.ts";
import { type ChaosStack, startChaosStack } from "./lib/chaos-stack.ts";
import {
  check,
  formatVerdict,
  HistoryRecorder,
  type Observation,
  streamMessageIds,
  summaryLine,
  type Verdict,
} from "./lib/history.ts";
import { type Batch, type Post, sendBatch, workload } from "./lib/history-load.ts";
import { LOCAL_KEYS } from "./lib/local-keys.ts";
import { StackError } from "./lib/ports.ts";
import { mulberry32 } from "./lib/prng.ts";
import { stopAllChildren } from "./lib/processes.ts";

const { values: args } = parseArgs({
  options: {
    scenario: { type: "string", default: "" },
    duration: { type: "string", default: "90" },
    clients: { type: "string", default: "8" },
    seed: { type: "string", default: "1" },
    "drain-timeout": { type: "string", default: "300" },
    port: { type: "string", default: "" },
    "state-dir": { type: "string", default: "" },
    keep: { type: "boolean", default: false },
    list: { type: "boolean", default: false },
  },
});

const say = (line: string) => process.stderr.write(`[chaos] ${line}\n`);
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Attempts of one batch before a client gives up (its events' outcome then stays unknown): ~2 minutes of backoff. */
const MAX_ATTEMPTS = 20;
const REQUEST_TIMEOUT_MS = 15_000;
const CRON = "*/15 * * * *";

interface Run {
  chaos: ChaosStack;
  history: HistoryRecorder;
  prefix: string;
  random: () => number;
  /** True once the load phase is over (fault loops restore the stack and return). */
  stopped(): boolean;
  /** Sleeps `ms`, or less when the load phase ends meanwhile. */
  nap(ms: number): Promise<void>;
  faults: number;
  requests: number;
}

interface Scenario {
  description: string;
  /** Share of acknowledged batches a client sends again (1–4 more times, in sequence or at once). */
  resendRate: number;
  /** Share of first attempts made with a timeout of a few ms: the answer is lost while the server may store it. */
  lostResponseRate: number;
  /** The cron during the load: every few seconds, or driven by the fault itself. */
  steadyCron: boolean;
  /** Injects the fault until the load phase ends, then leaves the stack running. */
  fault(run: Run): Promise<void>;
}

const between = (run: Run, lo: number, hi: number) => lo + Math.floor(run.random() * (hi - lo));

/** GET /__scheduled (wrangler dev --test-scheduled): the cron handler, now. Errors are expected under faults. */
async function scheduled(run: Run): Promise<void> {
  const res = await fetch(`${run.chaos.url}/__scheduled?cron=${encodeURIComponent(CRON)}`, {
    signal: AbortSignal.timeout(120_000),
  }).catch(() => undefined);
  await res?.body?.cancel();
}

async function adminRefresh(chaos: ChaosStack): Promise<RefreshAnswer | undefined> {
  const res = await fetch(`${chaos.url}/v1/admin/refresh`, {
    method: "POST",
    headers: { authorization: `Bearer ${LOCAL_KEYS.adminKey}` },
    signal: AbortSignal.timeout(180_000),
  }).catch(() => undefined);
  if (!res) return undefined;
  return (await res.json().catch(() => undefined)) as RefreshAnswer | undefined;
}

interface RefreshAnswer {
  report?: {
    status: string;
    load: { status: string; entries?: number; backlog?: number | null };
  };
}

/**
 * A process-level fault injected every `every` ms (uniform in the range) until the load phase ends; `inject` breaks
 * something and brings it back. Clients re-send a few batches; the cron runs every few seconds.
 */
function repeatedly(
  description: string,
  every: [number, number],
  inject: (run: Run, cycle: number) => Promise<void>,
): Scenario {
  return {
    description,
    resendRate: 0.05,
    lostResponseRate: 0,
    steadyCron: true,
    async fault(run) {
      for (let cycle = 0; ; cycle++) {
        await run.nap(between(run, every[0], every[1]));
        if (run.stopped()) return;
        await inject(run, cycle);
      }
    },
  };
}

const SCENARIOS: Record<string, Scenario> = {
  resend: {
    description: "clients re-send half of their batches 1–4 times (also at once), a quarter of answers are lost",
    resendRate: 0.5,
    lostResponseRate: 0.25,
    steadyCron: true,
    async fault() {},
  },
  cron: {
    description: "cron runs fired in overlapping bursts (scheduled and admin refresh), and intervals skipped",
    resendRate: 0.05,
    lostResponseRate: 0,
    steadyCron: false,
    async fault(run) {
      while (!run.stopped()) {
        if (run.random() < 0.2) {
          run.faults++;
          await run.nap(between(run, 10_000, 20_000)); // skipped intervals: a backlog builds up
          continue;
        }
        const burst = between(run, 2, 5);
        run.faults++;
        const calls = Array.from({ length: burst }, (_, i) =>
          i % 2 === 0 ? scheduled(run) : adminRefresh(run.chaos).then(() => {}),
        );
        await run.nap(between(run, 500, 4_000));
        void Promise.all(calls);
      }
    },
  },
  "redis-kill": repeatedly(
    "redis-server killed (SIGKILL) every 5–15 s and restarted 3–8 s later on its append-only file",
    [5_000, 15_000],
    async (run) => {
      await run.chaos.killRedis();
      run.faults++;
      say("  redis-server killed");
      await sleep(between(run, 3_000, 8_000));
      await run.chaos.restartRedis();
      say("  redis-server restarted");
    },
  ),
  postgres: repeatedly(
    "Postgres backends terminated every 2–6 s, and Postgres stopped for 4–8 s every other time",
    [2_000, 6_000],
    async (run, cycle) => {
      const n = await run.chaos.terminateBackends().catch(() => 0);
      run.faults++;
      say(`  ${n} Postgres backends terminated`);
      if (cycle % 2 === 0) return;
      await run.chaos.stopPostgres();
      run.faults++;
      say("  Postgres stopped");
      await sleep(between(run, 4_000, 8_000));
      await run.chaos.restartPostgres();
      say("  Postgres restarted");
    },
  ),
  "workerd-kill": repeatedly(
    "wrangler dev and workerd killed (SIGKILL) every 5–15 s mid-load and mid-cron, then restarted",
    [5_000, 15_000],
    async (run) => {
      // A cron run in flight, so that the kill can land anywhere in the loader too.
      void scheduled(run);
      await sleep(between(run, 0, 1_500));
      await run.chaos.killWorker();
      run.faults++;
      say("  workerd killed");
      await sleep(between(run, 500, 2_000));
      await run.chaos.restartWorker();
      say("  workerd restarted");
    },
  ),
};

// ---- the load -----------------------------------------------------------------------------------------------

function post(url: string, timeoutMs: number): Post {
  return async (body) => {
    const res = await fetch(`${url}/v1/batch`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Basic ${btoa(`${LOCAL_KEYS.writeKey}:`)}` },
      body,
      signal: AbortSignal.timeout(timeoutMs),
    });
    return { status: res.status, text: await res.text() };
  };
}

/** Sends a batch until it is answered (2xx or 4xx) or MAX_ATTEMPTS, with jittered exponential backoff. */
async function deliver(run: Run, batch: Batch, firstTimeoutMs = REQUEST_TIMEOUT_MS): Promise<boolean> {
  for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
    const timeout = attempt === 0 ? firstTimeoutMs : REQUEST_TIMEOUT_MS;
    const result = await sendBatch(post(run.chaos.url, timeout), batch, run.history);
    run.requests++;
    if (result.status !== undefined && result.status < 500) return result.status < 300;
    await sleep(Math.min(8_000, 250 * 2 ** attempt) * (0.5 + run.random() / 2));
  }
  return false;
}

async function client(run: Run, scenario: Scenario, k: number, seed: number): Promise<void> {
  for (let round = 0; !run.stopped(); round++) {
    const batches = workload({
      prefix: `${run.prefix}-k${k}r${round}`,
      users: 6,
      events: 300,
      seed: seed * 100_003 + k * 7_919 + round,
      maxBatch: 20,
    });
    for (const batch of batches) {
      if (run.stopped()) return;
      const lost = run.random() < scenario.lostResponseRate;
      const ok = await deliver(run, batch, lost ? between(run, 1, 40) : REQUEST_TIMEOUT_MS);
      if (ok && run.random() < scenario.resendRate) {
        const times = between(run, 1, 5);
        if (run.random() < 0.5) for (let i = 0; i < times; i++) await deliver(run, batch);
        else await Promise.all(Array.from({ length: times }, () => deliver(run, batch)));
      }
    }
  }
}

// ---- drain and observe --------------------------------------------------------------------------------------

async function healthy(chaos: ChaosStack, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const res = await fetch(`${chaos.url}/health?strict=1`, { signal: AbortSignal.timeout(10_000) }).catch(
      () => undefined,
    );
    await res?.body?.cancel();
    if (res?.status === 200) return true;
    await sleep(1_000);
  }
  return false;
}

interface Snapshot {
  outbox: { pending: number };
  counters: { events: number };
}

/** A session object's snapshot through the admin API (null: no such object). */
async function snapshot(chaos: ChaosStack, userKey: string): Promise<Snapshot | null> {
  const kind = userKey.startsWith("u:") ? "user" : "anonymous";
  const res = await fetch(`${chaos.url}/v1/admin/users/${encodeURIComponent(userKey.slice(2))}?kind=${kind}`, {
    headers: { authorization: `Bearer ${LOCAL_KEYS.adminKey}` },
    signal: AbortSignal.timeout(30_000),
  });
  if (res.status === 404) {
    await res.body?.cancel();
    return null;
  }
  if (res.status !== 200) throw new Error(`snapshot of ${userKey}: ${res.status} ${await res.text()}`);
  return (await res.json()) as Snapshot;
}

/**
 * Waits until every session object's outbox is empty (their alarms flush 30 s after a write, later after failures),
 * then runs refreshes until the loader finds the stream drained. False when `deadline` passed first.
 */
async function drain(run: Run, deadline: number): Promise<boolean> {
  const waiting = new Set(run.history.userKeys().filter((k) => k !== ""));
  while (waiting.size > 0) {
    if (Date.now() > deadline) {
      say(`  ${waiting.size} session objects still hold events in their outbox`);
      return false;
    }
    await eachLimit([...waiting], 8, async (key) => {
      const s = await snapshot(run.chaos, key).catch(() => undefined);
      if (s === null || s?.outbox.pending === 0) waiting.delete(key);
    });
    if (waiting.size > 0) await sleep(2_000);
  }
  let last: RefreshAnswer | undefined;
  while (Date.now() < deadline) {
    last = await adminRefresh(run.chaos);
    const load = last?.report?.load;
    if (load?.status === "ok" && (load.backlog === 0 || (load.backlog === null && load.entries === 0))) return true;
    await sleep(1_000);
  }
  const leases = await run.chaos.query("select name, holder, expires_at from leases").catch((e: unknown) => String(e));
  say(`  the loader did not drain the stream in time; last refresh: ${JSON.stringify(last?.report)}`);
  say(`  leases: ${JSON.stringify(leases)}`);
  return false;
}

async function observe(run: Run): Promise<Observation> {
  const like = `${run.prefix}-%`;
  const events = await run.chaos.query<{ message_id: string }>(
    "select message_id from events where message_id like $1",
    [like],
  );
  const interactions = await run.chaos.query<{ message_id: string; position: number }>(
    "select message_id, position from interactions where message_id like $1",
    [like],
  );
  const sessions: { userKey: string; events: number }[] = [];
  await eachLimit(
    run.history.userKeys().filter((k) => k !== ""),
    8,
    async (userKey) => {
      const s = await snapshot(run.chaos, userKey);
      sessions.push({ userKey, events: s?.counters.events ?? 0 });
    },
  );
  return {
    warehouse: events.map((r) => r.message_id),
    interactions: interactions.map((r) => ({ messageId: r.message_id, position: r.position })),
    stream: await streamMessageIds(run.chaos.redis(), "-", run.prefix),
    sessions,
  };
}

/** From acknowledgement to the stream (ms): the outbox's delay, and what a fault added to it. */
async function streamDelay(run: Run): Promise<{ p50: number; p99: number; max: number } | null> {
  const [row] = await run.chaos.query<{ p50: string | null; p99: string | null; max: string | null }>(
    `select percentile_disc(0.5) within group (order by d) as p50, percentile_disc(0.99) within group (order by d) as p99,
            max(d) as max
     from (select split_part(stream_id, '-', 1)::bigint - (extract(epoch from received_at) * 1000)::bigint as d
           from events where message_id like $1 and stream_id is not null) x`,
    [`${run.prefix}-%`],
  );
  if (!row || row.p50 === null) return null;
  return { p50: Number(row.p50), p99: Number(row.p99), max: Number(row.max) };
}

// ---- scenarios ----------------------------------------------------------------------------------------------

async function runScenario(chaos: ChaosStack, name: string, scenario: Scenario, index: number) {
  const seed = Number(args.seed) * 1_000 + index;
  const durationMs = Number(args.duration) * 1_000;
  let stopped = false;
  const wake = new Set<() => void>();
  const run: Run = {
    chaos,
    history: new HistoryRecorder(),
    prefix: `chaos-${name}-${Date.now().toString(36)}`,
    random: mulberry32(seed),
    stopped: () => stopped,
    nap: (ms) =>
      new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer);
          wake.delete(done);
          resolve();
        };
        const timer = setTimeout(done, ms);
        wake.add(done);
      }),
    faults: 0,
    requests: 0,
  };
  say(`${name}: ${scenario.description}; ${args.clients} clients for ${args.duration} s`);
  const started = Date.now();
  const clients = Array.from({ length: Number(args.clients) }, (_, k) => client(run, scenario, k, seed));
  const cron = (async () => {
    while (scenario.steadyCron && !stopped) {
      if (chaos.workerUp()) void scheduled(run);
      await run.nap(between(run, 3_000, 6_000));
    }
  })();
  const fault = scenario.fault(run);
  await sleep(durationMs);
  stopped = true;
  for (const done of [...wake]) done();
  await Promise.all([fault, cron, ...clients]);
  const loadMs = Date.now() - started;
  say(`${name}: load over after ${(loadMs / 1000).toFixed(0)} s, ${run.requests} requests, ${run.faults} faults`);

  const drainStarted = Date.now();
  const deadline = drainStarted + Number(args["drain-timeout"]) * 1_000;
  if (!chaos.workerUp()) await chaos.restartWorker();
  if (!(await healthy(chaos, 120_000))) say(`${name}: the stack is not healthy after the faults`);
  const drained = await drain(run, deadline);
  const drainMs = Date.now() - drainStarted;
  const verdict: Verdict = check(run.history, await observe(run));
  say(`${name}: ${formatVerdict(verdict)}${drained ? "" : " (NOT drained)"}`);
  for (const kind of ["lost", "duplicated", "unexpected"] as const) {
    for (const f of verdict.findings[kind]) say(`  ${kind}: ${f.place} ${f.id} (${f.note})`);
  }
  return {
    ...summaryLine(name, loadMs, verdict),
    attempts: verdict.attempts,
    unknownDelivered: verdict.unknownDelivered,
    requests: run.requests,
    faults: run.faults,
    drained,
    drainMs,
    streamDelayMs: await streamDelay(run),
  };
}

async function main(): Promise<number> {
  if (args.list) {
    for (const [name, s] of Object.entries(SCENARIOS)) console.log(`${name.padEnd(14)} ${s.description}`);
    return 0;
  }
  const names = args.scenario ? args.scenario.split(",").map((s) => s.trim()) : Object.keys(SCENARIOS);
  const unknown = names.filter((n) => !(n in SCENARIOS));
  if (unknown.length) throw new StackError(`unknown scenario: ${unknown.join(", ")} (--list shows them)`);

  const stateDir = args["state-dir"] ? resolve(args["state-dir"]) : mkdtempSync(join(tmpdir(), "lastmile-chaos-"));
  say(`starting a stack of its own in ${stateDir}`);
  let chaos: ChaosStack | undefined;
  const cleanup = async () => {
    await chaos?.stop().catch(() => {});
    await stopAllChildren();
    if (!args.keep && !args["state-dir"]) rmSync(stateDir, { recursive: true, force: true });
  };
  process.once("SIGINT", () => void cleanup().then(() => process.exit(130)));
  try {
    chaos = await startChaosStack({ stateDir, ...(args.port ? { port: Number(args.port) } : {}) });
    say(`worker on ${chaos.url}`);
    const lines: Awaited<ReturnType<typeof runScenario>>[] = [];
    for (const [i, name] of names.entries()) {
      const line = await runScenario(chaos, name, SCENARIOS[name] as Scenario, i);
      console.log(JSON.stringify(line));
      lines.push(line);
    }
    const sum = (f: (l: (typeof lines)[number]) => number) => lines.reduce((a, l) => a + f(l), 0);
    const total = {
      scenario: "total",
      durationMs: sum((l) => l.durationMs),
      sent: sum((l) => l.sent),
      acknowledged: sum((l) => l.acknowledged),
      rejected: sum((l) => l.rejected),
      unknown: sum((l) => l.unknown),
      lost: sum((l) => l.lost),
      duplicated: sum((l) => l.duplicated),
      unexpected: sum((l) => l.unexpected),
    };
    console.log(JSON.stringify(total));
    const failed = total.lost + total.duplicated + total.unexpected > 0 || lines.some((l) => !l.drained);
    return failed ? 1 : 0;
  } finally {
    await cleanup();
  }
}

main().then(
  (code) => process.exit(code),
  async (error: unknown) => {
    say(
      error instanceof StackError
        ? error.message
        : error instanceof Error
          ? (error.stack ?? error.message)
          : String(error),
    );
    await stopAllChildren();
    process.exit(1);
  },
);
