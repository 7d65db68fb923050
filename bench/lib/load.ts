// HTTP load with autocannon against one URL: closed-loop connections, bounded by duration or request count (and
// always by a hard deadline), with each response's latency kept at sub-millisecond resolution. autocannon's own
// latency histogram counts whole milliseconds and only 2xx answers, too coarse for a ~4 ms floor, so percentiles
// are computed here from every response.
import autocannon from "autocannon";

export interface LoadOptions {
  /** Base URL of the server, e.g. http://127.0.0.1:8787 */
  url: string;
  /** One path for every request (default "/"). */
  path?: string;
  /** A fixed list of paths; each connection cycles through it from the start. */
  paths?: string[];
  /**
   * A request generator: called with a counter shared by all connections, returns the next path, or the next
   * path and body (for POSTs whose bodies must differ, e.g. events with unique message ids). Each load counts from
   * 0; `ctx.measure` (suite.ts `continuing`) carries the count across its warm-up, measured load and attempts.
   */
  next?: (i: number) => string | { path: string; body: string };
  method?: "GET" | "POST" | "PUT" | "DELETE";
  headers?: Record<string, string>;
  body?: string;
  connections: number;
  /** Seconds to run; ignored when `requests` is set. */
  durationS?: number;
  /** Stop after this many responses (takes precedence over durationS). */
  requests?: number;
  /** Hard deadline in seconds: the run is stopped there whatever happens (default: durationS + 15, or 120). */
  maxS?: number;
  /** Seconds before a request counts as a timeout error (default 10). */
  timeoutS?: number;
  /** Called with every response's status and body (autocannon then keeps each body: some client CPU per answer). */
  inspect?: (status: number, body: string) => void;
}

export interface LoadResult {
  /** Responses received (any status). */
  requests: number;
  rps: number;
  /** Over every response received, in milliseconds. */
  latencyMs: { p50: number; p90: number; p99: number; max: number; mean: number };
  /** Connection errors and timeouts. */
  errors: number;
  non2xx: number;
  /**
   * Wall-clock seconds the load ran: from its start to autocannon's end for a duration-bounded load, to the last
   * answer for one bounded by `requests` (autocannon ends such a load only at its next one-second tick).
   */
  durationS: number;
  connections: number;
}

const round2 = (n: number) => Math.round(n * 100) / 100;

/** Nearest-rank percentile of an ascending array. */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.min(sorted.length, Math.max(1, Math.ceil((p / 100) * sorted.length)));
  return sorted[rank - 1] ?? Number.NaN;
}

export function summarize(latencies: number[]): LoadResult["latencyMs"] {
  const sorted = [...latencies].sort((a, b) => a - b);
  const mean = sorted.length ? sorted.reduce((s, v) => s + v, 0) / sorted.length : Number.NaN;
  return {
    p50: round2(percentile(sorted, 50)),
    p90: round2(percentile(sorted, 90)),
    p99: round2(percentile(sorted, 99)),
    max: round2(sorted[sorted.length - 1] ?? Number.NaN),
    mean: round2(mean),
  };
}

function requestList(options: LoadOptions): autocannon.Request[] {
  const list = requestsOf(options);
  const inspect = options.inspect;
  if (!inspect) return list;
  return list.map((r) => ({ ...r, onResponse: (status: number, body: string) => inspect(status, body) }));
}

function requestsOf(options: LoadOptions): autocannon.Request[] {
  if (options.next) {
    const next = options.next;
    let counter = 0;
    return [
      {
        setupRequest: (request) => {
          const generated = next(counter++);
          if (typeof generated === "string") request.path = generated;
          else {
            request.path = generated.path;
            request.body = generated.body;
          }
          return request;
        },
      },
    ];
  }
  if (options.paths) {
    if (options.paths.length === 0) throw new Error("load: `paths` is empty");
    return options.paths.map((path) => ({ path }));
  }
  return [{ path: options.path ?? "/" }];
}

export function load(options: LoadOptions): Promise<LoadResult> {
  const latencies: number[] = [];
  let non2xx = 0;
  return drive(options, requestList(options), (statusCode, ms) => {
    latencies.push(ms);
    if (statusCode < 200 || statusCode >= 300) non2xx++;
  }).then(({ errors, durationS }) => resultOf(latencies, non2xx, errors, durationS, options.connections));
}

/** One side of a paired load: its requests' shape, and optionally a generator of their paths and bodies. */
export type PairedSide = Pick<LoadOptions, "path" | "next" | "method" | "headers" | "body" | "inspect">;

export interface PairedResult {
  /** Each side's answers. `errors` (connection errors, timeouts) are the series' own: no answer names its side. */
  a: LoadResult;
  b: LoadResult;
  /** Per pair, b's latency minus that of the a request sent just before it. */
  differenceMs: LoadResult["latencyMs"];
  pairs: number;
  durationS: number;
}

/**
 * Two kinds of request interleaved on ONE connection: a, b, a, b, … in a closed loop. Both see the same machine at
 * the same moments, so a figure of b over a (e.g. an endpoint over the empty floor) does not carry the drift of a
 * machine whose speed changes between two measurements taken minutes apart.
 */
export function pairedLoad(
  options: Pick<LoadOptions, "url" | "durationS" | "requests" | "maxS" | "timeoutS"> & { a: PairedSide; b: PairedSide },
): Promise<PairedResult> {
  const sides = [options.a, options.b] as const;
  const latencies: [number[], number[]] = [[], []];
  const non2xx: [number, number] = [0, 0];
  /** The side of the answer being reported (set by its request's onResponse), -1 between answers. */
  let last = -1;
  /** The latency of the a request still waiting for its b. */
  let pairedA: number | undefined;
  const differences: number[] = [];
  const requests = sides.map((side, k) => {
    const [request] = requestsOf({ ...side, url: options.url, connections: 1 });
    const inspect = side.inspect;
    return {
      ...request,
      method: side.method ?? "GET",
      ...(side.headers ? { headers: side.headers } : {}),
      ...(side.body === undefined ? {} : { body: side.body }),
      // Called just before autocannon's "response" event for the same answer: it names the side.
      onResponse: (status: number, body: string) => {
        last = k;
        inspect?.(status, body);
      },
    } as autocannon.Request;
  });
  return drive({ ...options, connections: 1 }, requests, (statusCode, ms) => {
    const k = last;
    last = -1;
    if (k !== 0 && k !== 1) return;
    latencies[k].push(ms);
    if (statusCode < 200 || statusCode >= 300) non2xx[k]++;
    if (k === 0) pairedA = ms;
    else if (pairedA !== undefined) {
      differences.push(ms - pairedA);
      pairedA = undefined;
    }
  }).then(({ errors, durationS }) => ({
    a: resultOf(latencies[0], non2xx[0], errors, durationS, 1),
    b: resultOf(latencies[1], non2xx[1], errors, durationS, 1),
    differenceMs: summarize(differences),
    pairs: differences.length,
    durationS: round2(durationS),
  }));
}

function resultOf(latencies: number[], non2xx: number, errors: number, durationS: number, connections: number) {
  return {
    requests: latencies.length,
    rps: round2(latencies.length / durationS),
    latencyMs: summarize(latencies),
    errors,
    non2xx,
    durationS: round2(durationS),
    connections,
  };
}

/**
 * Runs autocannon over `requests` under the bounds of `options`, reporting each answer to `onAnswer`. A load bounded by
 * a request count lasts until its last answer: autocannon calls back only at its next one-second sampling tick, up to
 * a second later, which would count idle time as load time (150 requests in 2.2 s reported as 3 s).
 */
function drive(
  options: LoadOptions,
  requests: autocannon.Request[],
  onAnswer: (statusCode: number, responseTimeMs: number) => void,
): Promise<{ errors: number; durationS: number }> {
  if (options.requests === undefined && options.durationS === undefined) {
    throw new Error("load: give `durationS` or `requests`: every load is bounded");
  }
  const maxS = options.maxS ?? (options.requests === undefined ? (options.durationS ?? 0) + 15 : 120);
  return new Promise((resolve, reject) => {
    const started = performance.now();
    let lastAnswer: number | undefined;
    const instance = autocannon(
      {
        url: options.url,
        connections: options.connections,
        ...(options.requests === undefined ? { duration: options.durationS } : { amount: options.requests }),
        timeout: options.timeoutS ?? 10,
        method: options.method ?? "GET",
        ...(options.headers ? { headers: options.headers } : {}),
        ...(options.body === undefined ? {} : { body: options.body }),
        requests,
      },
      (error, result) => {
        clearTimeout(deadline);
        if (error) {
          reject(error);
          return;
        }
        const ended = options.requests === undefined ? performance.now() : (lastAnswer ?? performance.now());
        resolve({ errors: result.errors, durationS: (ended - started) / 1000 });
      },
    );
    const deadline = setTimeout(() => instance.stop(), maxS * 1000);
    instance.on("response", (_client, statusCode, _bytes, responseTimeMs) => {
      lastAnswer = performance.now();
      onAnswer(statusCode, responseTimeMs);
    });
  });
}
