// The contract between the harness (scripts/bench.ts) and a suite (bench/suites/*.ts), and the helpers every suite
// shares: `measure` (warm-up, then a bounded load, reported with units in the key names), `measurePaired` (two
// requests taking turns on one connection), `measureFloor` (the empty endpoint: what the platform costs before our
// code does anything) and `relativeTo` (a figure over the floor).
import { type LoadOptions, type LoadResult, load, type PairedSide, pairedLoad } from "./load.ts";

/** One load measurement. Every figure carries its unit in its key. */
export interface Measurement {
  /** The path requested (for a generator: a description such as "/x?user={i}"). */
  path: string;
  connections: number;
  durationS: number;
  requests: number;
  rps: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  maxMs: number;
  meanMs: number;
  errors: number;
  non2xx: number;
}

/** A measurement compared with the floor measured in the same run. */
export interface Relative {
  /** Which floor measurement it is compared with, e.g. "floor.c1". */
  against: string;
  addedP50Ms: number;
  addedP99Ms: number;
  rpsRatio: number;
}

/** The empty endpoint, measured at the connection counts a suite uses. */
export interface Floor {
  path: string;
  c1?: Measurement;
  c5?: Measurement;
  c10?: Measurement;
}

/** The connection counts `measureFloor` measures at. */
export type FloorConnections = 1 | 5 | 10;

export interface MeasureOptions {
  path: string;
  /**
   * Generator or fixed list of paths instead of `path` (then `path` only describes them). A generator's counter
   * goes on across the measurement's warm-up, its measured load and a repeated attempt (see `continuing`).
   */
  next?: LoadOptions["next"];
  paths?: string[];
  method?: LoadOptions["method"];
  headers?: Record<string, string>;
  body?: string;
  connections: number;
  /** Seconds of measured load (default: the run's --duration). */
  durationS?: number;
  /** Requests sent first and not counted (default: the run's warm-up; 0 for none). */
  warmUpRequests?: number;
  /** Stop after this many responses instead of after `durationS` (e.g. one request per user of a pool). */
  requests?: number;
  /** Runs before each attempt, before the warm-up (e.g. resetting a cache); not timed. */
  before?: () => Promise<void>;
  /** Sees every measured response's status and body (the warm-up's are not shown to it). */
  inspect?: (status: number, body: string) => void;
}

/** One side of a paired measurement: a request as `measure` takes it, on the pair's one connection. */
export type PairedRequest = PairedSide & { path: string };

export interface PairedOptions {
  /** The reference, e.g. the floor endpoint. */
  a: PairedRequest;
  /** The request measured against it. */
  b: PairedRequest;
  durationS?: number;
  warmUpRequests?: number;
}

/** Two requests interleaved on one connection (a, b, a, b, …): b over a without the drift between measurements. */
export interface PairedMeasurement {
  a: Measurement;
  b: Measurement;
  /** b.p50Ms − a.p50Ms, both taken from the same interleaved series. */
  addedP50Ms: number;
  /** Median of the per-pair differences (each b minus the a sent just before it). */
  pairDifferenceP50Ms: number;
  pairDifferenceP90Ms: number;
  pairs: number;
}

export interface SuiteContext {
  /** Base URL of the Worker under test. */
  url: string;
  /** The Worker's variables (local keys, connection settings). */
  vars: Record<string, string>;
  /** Seconds per measurement (--duration). */
  durationS: number;
  /** Progress lines: stderr, never stdout. */
  log(line: string): void;
  measure(label: string, options: MeasureOptions): Promise<Measurement>;
  /** `b` against `a`, interleaved on one connection (docs/benchmarks.md: paired measurements). */
  measurePaired(label: string, options: PairedOptions): Promise<PairedMeasurement>;
  /** The empty endpoint at each given connection count (1, 5 and/or 10). */
  measureFloor(connections: FloorConnections[]): Promise<Floor>;
}

export interface SuiteResult {
  floor: Floor;
  results: Record<string, unknown>;
  relative: Record<string, unknown>;
  notes: string[];
}

export interface Suite {
  name: string;
  description: string;
  /**
   * false: the suite measures the database alone (ctx.vars holds the connection settings; ctx.url, ctx.measure and
   * ctx.measureFloor are unavailable), so the harness starts the local stack without wrangler dev. Default true.
   */
  needsWorker?: boolean;
  run(ctx: SuiteContext): Promise<SuiteResult>;
}

export const FLOOR_PATH = "/__bench/empty";
export const DEFAULT_WARM_UP_REQUESTS = 300;
/** A warm-up never takes longer than this, however slow the endpoint. */
const WARM_UP_MAX_S = 3;

const round2 = (n: number) => Math.round(n * 100) / 100;
const round3 = (n: number) => Math.round(n * 1000) / 1000;

type Generator = NonNullable<LoadOptions["next"]>;

/**
 * A request generator whose counter goes on across every load it is given to. Each `load` counts its requests from
 * 0, so a generator handed to the warm-up and then to the measured load would send the warm-up's requests again:
 * for collection, the same message ids, which the session objects skip as duplicates (cheap) instead of storing.
 * With this, the warm-up, the measured load and a repeated attempt each continue where the one before stopped.
 */
export function continuing(next: Generator): Generator {
  let sent = 0;
  return () => next(sent++);
}

export function relativeTo(m: Measurement, floor: Measurement, against: string): Relative {
  return {
    against,
    addedP50Ms: round2(m.p50Ms - floor.p50Ms),
    addedP99Ms: round2(m.p99Ms - floor.p99Ms),
    rpsRatio: round3(m.rps / floor.rps),
  };
}

function measurementOf(path: string, r: LoadResult): Measurement {
  return {
    path,
    connections: r.connections,
    durationS: r.durationS,
    requests: r.requests,
    rps: r.rps,
    p50Ms: r.latencyMs.p50,
    p90Ms: r.latencyMs.p90,
    p99Ms: r.latencyMs.p99,
    maxMs: r.latencyMs.max,
    meanMs: r.latencyMs.mean,
    errors: r.errors,
    non2xx: r.non2xx,
  };
}

const summaryOf = (m: Measurement): string =>
  `${m.requests} requests, ${m.rps} req/s, p50 ${m.p50Ms} ms, p99 ${m.p99Ms} ms` +
  (m.errors || m.non2xx ? `, ${m.errors} errors, ${m.non2xx} non-2xx` : "");

/** The floor measurement at the same connection count as `m`, with its label. */
export function floorFor(m: Measurement, floor: Floor): { measurement: Measurement; label: string } | undefined {
  const key = [1, 5, 10].includes(m.connections) ? (`c${m.connections}` as `c${FloorConnections}`) : undefined;
  const measurement = key ? floor[key] : undefined;
  return key && measurement ? { measurement, label: `floor.${key}` } : undefined;
}

/** Problems that make a measurement untrustworthy, as notes for the report. */
export function warnings(label: string, m: Measurement): string[] {
  const out: string[] = [];
  if (m.errors > 0) out.push(`WARNING ${label}: ${m.errors} connection errors or timeouts`);
  if (m.non2xx > 0) out.push(`WARNING ${label}: ${m.non2xx} non-2xx answers`);
  if (m.requests === 0) out.push(`WARNING ${label}: no answer at all`);
  return out;
}

/** What the harness knows about the running Worker: reloads by wrangler dev's file watcher, and liveness. */
export interface WorkerGuard {
  reloads(): number;
  sinceLastReloadMs(): number;
  assertRunning(): void;
}

/** A measurement that straddled a reload is taken again, at most this many times in all. */
const MAX_ATTEMPTS = 3;
/** After a reload: no further reload for this long, and the floor endpoint answering, before measuring again. */
const SETTLE_QUIET_MS = 2000;
const SETTLE_MAX_MS = 60_000;

async function settle(url: string, guard: WorkerGuard): Promise<void> {
  const deadline = Date.now() + SETTLE_MAX_MS;
  for (;;) {
    guard.assertRunning();
    if (guard.sinceLastReloadMs() >= SETTLE_QUIET_MS) {
      const ok = await fetch(`${url}${FLOOR_PATH}`, { signal: AbortSignal.timeout(5000) }).then(
        async (res) => {
          await res.body?.cancel();
          return res.status === 200;
        },
        () => false,
      );
      if (ok) return;
    }
    if (Date.now() > deadline) throw new Error(`the Worker did not settle within ${SETTLE_MAX_MS / 1000} s`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

export function createContext(options: {
  url: string;
  vars: Record<string, string>;
  durationS: number;
  warmUpRequests: number;
  guard: WorkerGuard;
  log: (line: string) => void;
}): SuiteContext & { repeated: string[] } {
  const { url, log, guard } = options;
  const repeated: string[] = [];

  const once = async (label: string, m: MeasureOptions): Promise<Measurement> => {
    const durationS = m.durationS ?? options.durationS;
    const request: LoadOptions = {
      url,
      connections: m.connections,
      ...(m.next ? { next: m.next } : m.paths ? { paths: m.paths } : { path: m.path }),
      ...(m.method ? { method: m.method } : {}),
      ...(m.headers ? { headers: m.headers } : {}),
      ...(m.body === undefined ? {} : { body: m.body }),
    };
    await m.before?.();
    const warmUp = m.warmUpRequests ?? options.warmUpRequests;
    if (warmUp > 0) {
      log(`${label}: warm-up, up to ${warmUp} requests or ${WARM_UP_MAX_S} s`);
      await load({ ...request, requests: Math.max(warmUp, m.connections), maxS: WARM_UP_MAX_S });
    }
    const bound = m.requests === undefined ? `${durationS} s` : `${m.requests} requests`;
    log(`${label}: ${m.method ?? "GET"} ${m.path}, ${m.connections} connection(s), ${bound}`);
    const inspect = m.inspect ? { inspect: m.inspect } : {};
    const r = await load(
      m.requests === undefined
        ? { ...request, ...inspect, durationS }
        : { ...request, ...inspect, requests: m.requests },
    );
    return measurementOf(m.path, r);
  };

  const oncePaired = async (label: string, m: PairedOptions): Promise<PairedMeasurement> => {
    const warmUp = m.warmUpRequests ?? options.warmUpRequests;
    if (warmUp > 0) {
      log(`${label}: warm-up, up to ${warmUp} pairs or ${WARM_UP_MAX_S} s`);
      // The inspectors see measured answers only, as with `measure`.
      const { inspect: _a, ...a } = m.a;
      const { inspect: _b, ...b } = m.b;
      await pairedLoad({ url, a, b, requests: 2 * warmUp, maxS: WARM_UP_MAX_S });
    }
    const durationS = m.durationS ?? options.durationS;
    log(
      `${label}: ${m.b.method ?? "GET"} ${m.b.path} against ${m.a.method ?? "GET"} ${m.a.path}, interleaved, ${durationS} s`,
    );
    const r = await pairedLoad({ url, a: m.a, b: m.b, durationS });
    const a = measurementOf(m.a.path, r.a);
    const b = measurementOf(m.b.path, r.b);
    return {
      a,
      b,
      addedP50Ms: round2(b.p50Ms - a.p50Ms),
      pairDifferenceP50Ms: r.differenceMs.p50,
      pairDifferenceP90Ms: r.differenceMs.p90,
      pairs: r.pairs,
    };
  };

  /** Runs a measurement; one that straddled a reload of the Worker is taken again. */
  const guarded = async <T>(label: string, run: () => Promise<T>, summary: (result: T) => string): Promise<T> => {
    for (let attempt = 1; ; attempt++) {
      guard.assertRunning();
      if (guard.sinceLastReloadMs() < SETTLE_QUIET_MS) await settle(url, guard);
      const reloadsBefore = guard.reloads();
      const result = await run();
      guard.assertRunning();
      if (guard.reloads() === reloadsBefore) {
        log(`${label}: ${summary(result)}`);
        return result;
      }
      if (attempt >= MAX_ATTEMPTS) {
        throw new Error(
          `${label}: wrangler dev reloaded the Worker during each of ${MAX_ATTEMPTS} attempts (source files keep ` +
            "changing): no measurement is trustworthy; run again when src/ is not being edited",
        );
      }
      repeated.push(label);
      log(`${label}: wrangler dev reloaded the Worker (a source file changed) during the measurement: measuring again`);
      await settle(url, guard);
    }
  };

  const measure = (label: string, m: MeasureOptions): Promise<Measurement> => {
    const options = m.next ? { ...m, next: continuing(m.next) } : m;
    return guarded(label, () => once(label, options), summaryOf);
  };

  const measurePaired = (label: string, m: PairedOptions): Promise<PairedMeasurement> => {
    const side = (r: PairedRequest): PairedRequest => (r.next ? { ...r, next: continuing(r.next) } : r);
    const options = { ...m, a: side(m.a), b: side(m.b) };
    return guarded(
      label,
      () => oncePaired(label, options),
      (r) =>
        `a ${summaryOf(r.a)}; b ${summaryOf(r.b)}; b − a p50 ${r.addedP50Ms} ms, pair difference p50 ${r.pairDifferenceP50Ms} ms`,
    );
  };

  return {
    url,
    vars: options.vars,
    durationS: options.durationS,
    log,
    measure,
    measurePaired,
    repeated,
    async measureFloor(connections) {
      const floor: Floor = { path: FLOOR_PATH };
      for (const c of connections) {
        floor[`c${c}`] = await measure(`floor.c${c}`, { path: FLOOR_PATH, connections: c });
      }
      return floor;
    },
  };
}
