// `npm run bench`: benchmark suites against the Worker as it runs locally (wrangler dev / workerd, with the real
// local stack behind it). Every suite measures the platform floor (an empty endpoint) in the same run and reports
// its figures relative to it. Benchmarks are measurements, not tests: nothing here passes or fails on a time.
// See docs/benchmarks.md.
//
//   npm run bench -- --list                         the suites
//   npm run bench -- <suite> [<suite> …]            readable tables on stdout
//   npm run bench -- <suite> --json                 one JSON object per suite on stdout, nothing else
//   options: --duration <seconds> (5) per measurement, --warm-up <requests> (300)
//
// Progress and child-process logs go to stderr, so stdout holds only the results.
import { parseArgs } from "node:util";
import { type LocalWorker, startLocalStackOnly, startLocalWorker, stopLocalWorker } from "../bench/lib/local-worker.ts";
import { machineInfo, runnerLine } from "../bench/lib/machine.ts";
import { type Report, renderText } from "../bench/lib/report.ts";
import { createContext, DEFAULT_WARM_UP_REQUESTS } from "../bench/lib/suite.ts";
import { findSuite, SUITES } from "../bench/suites/index.ts";
import { StackError } from "./lib/ports.ts";

// Anything that logs with console.log (a library, a helper's default logger) must not reach stdout.
console.log = console.error;
const log = (line: string) => process.stderr.write(`[bench] ${line}\n`);

const USAGE = `usage: npm run bench -- <suite> [<suite> …] [--json] [--duration <seconds>] [--warm-up <requests>]
       npm run bench -- --list`;

function positiveNumber(name: string, value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new StackError(`--${name} must be a positive number, got "${value}"`);
  return n;
}

// One stop, whoever asks first (the end of the run, an error, Ctrl-C): the others wait for it to finish.
let started = false;
let stopped: Promise<void> | undefined;
function stopOnce(): Promise<void> {
  if (!started) return Promise.resolve();
  if (!stopped) {
    log("stopping the local stack …");
    stopped = stopLocalWorker();
  }
  return stopped;
}

async function shutdown(code: number): Promise<never> {
  await stopOnce();
  process.exit(code);
}

async function main(): Promise<void> {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      list: { type: "boolean", default: false },
      json: { type: "boolean", default: false },
      duration: { type: "string", default: "5" },
      "warm-up": { type: "string", default: String(DEFAULT_WARM_UP_REQUESTS) },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  if (values.list) {
    const width = Math.max(...SUITES.map((s) => s.name.length));
    for (const s of SUITES) process.stdout.write(`${s.name.padEnd(width)}  ${s.description}\n`);
    return;
  }
  if (positionals.length === 0) throw new StackError(`name a suite (npm run bench -- --list)\n${USAGE}`);
  const suites = positionals.map((name) => {
    const suite = findSuite(name);
    if (!suite) throw new StackError(`unknown suite "${name}"; known: ${SUITES.map((s) => s.name).join(", ")}`);
    return suite;
  });
  const durationS = positiveNumber("duration", values.duration);
  const warmUpRequests = Math.floor(Number(values["warm-up"]));
  if (!Number.isInteger(warmUpRequests) || warmUpRequests < 0) throw new StackError("--warm-up must be >= 0");

  const command =
    process.env.npm_lifecycle_event === "bench"
      ? `npm run bench -- ${process.argv.slice(2).join(" ")}`
      : `node scripts/bench.ts ${process.argv.slice(2).join(" ")}`;
  // Read before the stack starts: the load average then says what else this machine was doing.
  const machine = machineInfo();
  // Suites that measure only the database (needsWorker: false) run without wrangler dev when they run alone.
  const needsWorker = suites.some((s) => s.needsWorker !== false);
  const runner = needsWorker
    ? runnerLine()
    : `local PostgreSQL 15 through the Neon driver (WebSocket proxy), Node ${process.version}, no Worker`;

  process.on("SIGINT", () => void shutdown(130));
  process.on("SIGTERM", () => void shutdown(143));
  started = true;
  const local: LocalWorker = needsWorker ? await startLocalWorker(log) : await startLocalStackOnly(log);
  try {
    const ctx = createContext({ url: local.url, vars: local.vars, durationS, warmUpRequests, guard: local, log });
    for (const suite of suites) {
      log(`suite ${suite.name}: running`);
      const startedAt = new Date();
      ctx.repeated.length = 0;
      const result = await suite.run(ctx).catch((error: unknown) => {
        local.assertRunning(); // a dead Worker explains the failure better, with wrangler's last output
        throw error;
      });
      const notes = [...result.notes];
      if (machine.loadAvg1m > machine.cores / 2) {
        notes.push(
          `WARNING: the 1-minute load average was ${machine.loadAvg1m} on ${machine.cores} cores when the run ` +
            "started: other work was running and the figures are likely inflated.",
        );
      }
      if (ctx.repeated.length) {
        notes.push(
          `wrangler dev reloaded the Worker (source files changed) during ${ctx.repeated.join(", ")}: ` +
            "each was measured again; the figures are from the attempt without a reload.",
        );
      }
      const report: Report = {
        suite: suite.name,
        command,
        startedAt: startedAt.toISOString(),
        durationS: Math.round((Date.now() - startedAt.getTime()) / 100) / 10,
        machine,
        runner,
        floor: result.floor,
        results: result.results,
        relative: result.relative,
        notes,
      };
      process.stdout.write(values.json ? `${JSON.stringify(report)}\n` : `${renderText(report)}\n`);
    }
  } finally {
    await stopOnce();
  }
}

main().then(
  () => process.exit(0),
  async (error: unknown) => {
    log(
      error instanceof StackError
        ? error.message
        : error instanceof Error
          ? (error.stack ?? error.message)
          : String(error),
    );
    await shutdown(1);
  },
);
