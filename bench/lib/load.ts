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
   * path and body (for POSTs whose bodies must differ, e.g. events with unique message ids).
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
  /** Wall-clock seconds the load ran. */
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
  if (options.requests === undefined && options.durationS === undefined) {
    throw new Error("load: give `durationS` or `requests`: every load is bounded");
  }
  const maxS = options.maxS ?? (options.requests === undefined ? (options.durationS ?? 0) + 15 : 120);
  const latencies: number[] = [];
  let non2xx = 0;
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const instance = autocannon(
      {
        url: options.url,
        connections: options.connections,
        ...(options.requests === undefined ? { duration: options.durationS } : { amount: options.requests }),
        timeout: options.timeoutS ?? 10,
        method: options.method ?? "GET",
        ...(options.headers ? { headers: options.headers } : {}),
        ...(options.body === undefined ? {} : { body: options.body }),
        requests: requestList(options),
      },
      (error, result) => {
        clearTimeout(deadline);
        if (error) {
          reject(error);
          return;
        }
        const durationS = (performance.now() - started) / 1000;
        resolve({
          requests: latencies.length,
          rps: round2(latencies.length / durationS),
          latencyMs: summarize(latencies),
          errors: result.errors,
          non2xx,
          durationS: round2(durationS),
          connections: options.connections,
        });
      },
    );
    const deadline = setTimeout(() => instance.stop(), maxS * 1000);
    instance.on("response", (_client, statusCode, _bytes, responseTimeMs) => {
      latencies.push(responseTimeMs);
      if (statusCode < 200 || statusCode >= 300) non2xx++;
    });
  });
}
