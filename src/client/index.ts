// A small client of the ranking API for storefront edge middleware (a storefront Worker, a Next.js proxy, any
// server that renders pages). Two transports:
//   HTTP             base URL + server key; each call under a deadline (AbortSignal), 150 ms by default
//   Service Binding  the `Ranking` entrypoint of the Lastmile Worker (same account: no key, no network hop)
// A dependency fault — timeout, network error, non-2xx answer, an error thrown over RPC, a body that is not an
// answer — never throws: the call resolves with the caller's fallback list (bestsellers, say) flagged
// `fallback: true`, and `onError` hears why. A page must render whether or not Lastmile answers in time.
// docs/storefront.md describes the integration.
import type { RankParams } from "../rank/request.ts";
import type { RankAnswer } from "../rank/service.ts";

/** The parameters of a ranking call, as the API takes them (src/rank/request.ts). */
export type { RankParams } from "../rank/request.ts";

/** An answer of the ranking API as it travels (the Server-Timing figures are headers over HTTP). */
export type RankResponse = Omit<RankAnswer, "timing"> & { timing?: Record<string, number> };

export type RankedItem = RankResponse["items"][number];

/** Lastmile answered: the answer itself, unchanged. */
export type LiveAnswer = RankResponse & { fallback: false };

/** Lastmile did not answer usefully: the caller's fallback list, and why. */
export interface FallbackAnswer {
  fallback: true;
  /** No recommendation id: clicks on fallback items are not attributed to a ranking answer. */
  recId: null;
  placement: string;
  items: RankedItem[];
  error: ClientError;
}

export type ClientAnswer = LiveAnswer | FallbackAnswer;

export type ClientErrorKind = "timeout" | "network" | "http" | "rpc" | "invalid_response" | "aborted" | "empty";

export interface ClientError {
  kind: ClientErrorKind;
  message: string;
  /** HTTP status of a non-2xx answer. */
  status?: number;
  /** The API's machine-readable error code, when the answer had one (`validation_failed`, `unauthorized`, …). */
  code?: string;
  /** Wall time of the failed call (ms). */
  ms: number;
}

/**
 * What a Service Binding to the `Ranking` entrypoint offers (src/rank/entrypoint.ts):
 * `services = [{ binding = "LASTMILE", service = "lastmile", entrypoint = "Ranking" }]`.
 */
export interface RankingBinding {
  recommendations(params: RankParams): Promise<unknown>;
  rank(params: RankParams): Promise<unknown>;
  similar(params: RankParams & { productId: string }): Promise<unknown>;
}

/** Anything with the shape of `fetch`: the global one, or a Service Binding's `Fetcher`. */
export type FetchLike = (input: Request | string | URL, init?: RequestInit) => Promise<Response>;

interface CommonOptions {
  /** Deadline of each call in ms (default 150); a call may lower or raise it. */
  timeoutMs?: number;
  /**
   * Told about every fault that produced a fallback (log it). It may be async; what it throws or rejects with is
   * ignored.
   */
  onError?: (error: ClientError, call: { method: string; params: RankParams }) => void;
}

export interface HttpClientOptions extends CommonOptions {
  /** Where the Lastmile Worker answers, e.g. https://lastmile.example.workers.dev */
  baseUrl: string;
  /** A server key (SERVER_KEYS). Keep it on the server: a browser uses a signed user token instead. */
  serverKey: string;
  /** Default: the global fetch. A `Fetcher` (a Service Binding to Lastmile's default entrypoint) also fits. */
  fetch?: FetchLike | { fetch: FetchLike };
}

export interface BindingClientOptions extends CommonOptions {
  binding: RankingBinding;
}

export type ClientOptions = HttpClientOptions | BindingClientOptions;

/** A fallback item: a product id, or an id with the score to report. */
export type FallbackItem = string | { productId: string; score?: number };

export interface CallOptions {
  /** What to answer when Lastmile cannot: bestsellers, the category's top sellers, … (may be empty). */
  fallback?: readonly FallbackItem[];
  timeoutMs?: number;
  /** The caller's own cancellation (the incoming request's signal, say); it also yields the fallback. */
  signal?: AbortSignal;
  /**
   * Also answer the fallback when Lastmile answers an empty list (nothing published yet, every candidate filtered
   * out), with error kind `empty` and Lastmile's `degraded` flags in the message. Off by default: an empty answer is
   * an answer.
   */
  fallbackWhenEmpty?: boolean;
}

export interface TokenAnswer {
  token: string;
  userKey: string;
  expiresAt: number;
}

export interface LastmileClient {
  /** As GET /v1/recommendations: a placement's list (`home`, `pdp`, `cart`, `post_purchase`). */
  recommendations(params: RankParams, options?: CallOptions): Promise<ClientAnswer>;
  /** As GET /v1/similar/:productId. */
  similar(params: RankParams & { productId: string }, options?: CallOptions): Promise<ClientAnswer>;
  /**
   * As POST /v1/rank: re-rank the caller's candidates. Without a fallback option the candidates in the caller's
   * order are the fallback.
   */
  rank(
    params: RankParams & { candidates: NonNullable<RankParams["candidates"]> },
    options?: CallOptions,
  ): Promise<ClientAnswer>;
  /**
   * A signed user token for the browser (POST /v1/tokens), or null when it could not be had. HTTP transport only:
   * over a binding there is no server key to mint with.
   */
  userToken(
    params: { userId?: string; anonymousId?: string; ttlSeconds?: number },
    options?: Pick<CallOptions, "timeoutMs" | "signal">,
  ): Promise<TokenAnswer | null>;
}

export const DEFAULT_TIMEOUT_MS = 150;

/** Query parameters of attribution links: the answer's id, the item's 1-based position, the placement. */
export const ATTRIBUTION_PARAMS = { recId: "lm_rec", position: "lm_pos", placement: "lm_pl" } as const;

export interface Attribution {
  recId: string;
  position: number;
  placement: string;
}

/** `href` with the attribution parameters added (relative hrefs stay relative). */
export function withAttribution(href: string, attribution: Attribution): string {
  const hashAt = href.indexOf("#");
  const hash = hashAt >= 0 ? href.slice(hashAt) : "";
  const path = hashAt >= 0 ? href.slice(0, hashAt) : href;
  const query = new URLSearchParams({
    [ATTRIBUTION_PARAMS.recId]: attribution.recId,
    [ATTRIBUTION_PARAMS.position]: String(attribution.position),
    [ATTRIBUTION_PARAMS.placement]: attribution.placement,
  });
  return `${path}${path.includes("?") ? "&" : "?"}${query.toString()}${hash}`;
}

/** The query of a URL, absolute or relative (`req.url` of a Node server); null when it is no URL. */
function searchParamsOf(url: URL | string): URLSearchParams | null {
  if (typeof url !== "string") return url.searchParams;
  try {
    return new URL(url, "http://relative.invalid").searchParams;
  } catch {
    return null;
  }
}

/**
 * The attribution of a request URL (absolute, or relative as `withAttribution()` keeps a relative link), or null
 * when it carries none, a malformed one, or is no URL.
 */
export function readAttribution(url: URL | string): Attribution | null {
  const params = searchParamsOf(url);
  if (params === null) return null;
  const recId = params.get(ATTRIBUTION_PARAMS.recId);
  const position = Number(params.get(ATTRIBUTION_PARAMS.position));
  const placement = params.get(ATTRIBUTION_PARAMS.placement) ?? "";
  if (!recId || recId.length > 100 || !Number.isInteger(position) || position < 1 || placement.length > 50) {
    return null;
  }
  return { recId, position, placement };
}

class Fault extends Error {
  readonly kind: ClientErrorKind;
  readonly extra: { status?: number; code?: string };

  constructor(kind: ClientErrorKind, message: string, extra: { status?: number; code?: string } = {}) {
    super(message);
    this.kind = kind;
    this.extra = extra;
  }
}

/** An item as the API answers it: `{ productId, score, reasons }` (reasons: strings). */
function isRankedItem(value: unknown): value is RankedItem {
  if (typeof value !== "object" || value === null) return false;
  const i = value as { productId?: unknown; score?: unknown; reasons?: unknown };
  return (
    typeof i.productId === "string" &&
    typeof i.score === "number" &&
    Array.isArray(i.reasons) &&
    i.reasons.every((r: unknown) => typeof r === "string")
  );
}

/** The documented shape of an answer, as far as a storefront relies on it: recId, placement, and its items. */
function isAnswer(value: unknown): value is RankResponse {
  if (typeof value !== "object" || value === null) return false;
  const v = value as { recId?: unknown; placement?: unknown; items?: unknown };
  return (
    typeof v.recId === "string" &&
    typeof v.placement === "string" &&
    Array.isArray(v.items) &&
    v.items.every(isRankedItem)
  );
}

/**
 * The answer a storefront shows when Lastmile does not answer usefully: the fallback list (duplicates and the page's
 * own product left out, at most `limit`), and why. What the client answers then; a storefront that does not call
 * (its deadline spent, no binding) builds the same with it.
 */
export function fallbackAnswer(
  placement: string,
  list: readonly FallbackItem[],
  params: RankParams,
  error: ClientError,
): FallbackAnswer {
  return { fallback: true, recId: null, placement, items: fallbackItems(list, params ?? {}), error };
}

/** A product id as a fallback list may hold one: a non-empty string, or a finite number (written as a string). */
function fallbackId(value: unknown): string | null {
  if (typeof value === "string") return value === "" ? null : value;
  return typeof value === "number" && Number.isFinite(value) ? String(value) : null;
}

/**
 * The fallback's items. The list is the caller's (its search results, its bestsellers), passed on as it came: an
 * entry that names no product (null, an object without an id) is left out, and a score that is no finite number is 0,
 * so the fallback always has the documented shape and building it never throws.
 */
function fallbackItems(list: unknown, params: RankParams): RankedItem[] {
  const limit = typeof params.limit === "number" ? params.limit : Number(params.limit ?? Number.NaN);
  const seen = new Set<string>(typeof params.productId === "string" ? [params.productId] : []);
  const out: RankedItem[] = [];
  for (const entry of Array.isArray(list) ? (list as unknown[]) : []) {
    const object =
      typeof entry === "object" && entry !== null ? (entry as { productId?: unknown; score?: unknown }) : null;
    const productId = fallbackId(object ? object.productId : entry);
    if (productId === null || seen.has(productId)) continue;
    seen.add(productId);
    const score = typeof object?.score === "number" && Number.isFinite(object.score) ? object.score : 0;
    out.push({ productId, score, reasons: ["fallback"] });
    if (Number.isInteger(limit) && limit > 0 && out.length >= limit) break;
  }
  return out;
}

/**
 * The placement Lastmile's answer to this call names (src/rank/request.ts): the one asked for, else `home` for
 * recommendations and the mode (`similar`, `rerank`) for the others. A fallback says the same.
 */
function answerPlacement(method: "recommendations" | "similar" | "rank", params: RankParams): string {
  const named = typeof params.placement === "string" && params.placement !== "" ? params.placement : null;
  return named ?? (method === "recommendations" ? "home" : method === "rank" ? "rerank" : "similar");
}

/** `work` under the deadline and the caller's signal (never started once that is aborted); a late result is dropped. */
async function deadline<T>(
  work: (signal: AbortSignal) => Promise<T>,
  timeoutMs: number,
  callerSignal: AbortSignal | undefined,
): Promise<T> {
  const controller = new AbortController();
  let timer: ReturnType<typeof setTimeout> | undefined;
  let onAbort: (() => void) | undefined;
  const stopped = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      const fault = new Fault("timeout", `no answer within ${timeoutMs} ms`);
      controller.abort(fault);
      reject(fault);
    }, timeoutMs);
    onAbort = () => {
      const fault = new Fault("aborted", "the caller cancelled the call");
      controller.abort(fault);
      reject(fault);
    };
    if (callerSignal?.aborted) onAbort();
    else callerSignal?.addEventListener("abort", onAbort, { once: true });
  });
  stopped.catch(() => {});
  try {
    // A call the caller has already cancelled is not made: over a binding nothing would stop it, and an answer
    // counts its items as shown.
    if (controller.signal.aborted) throw controller.signal.reason;
    return await Promise.race([work(controller.signal), stopped]);
  } catch (error) {
    // An aborted fetch rejects with the abort reason (our Fault) or an AbortError: report the reason.
    if (controller.signal.aborted && controller.signal.reason instanceof Fault) throw controller.signal.reason;
    throw error;
  } finally {
    if (timer !== undefined) clearTimeout(timer);
    if (onAbort) callerSignal?.removeEventListener("abort", onAbort);
  }
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** The API's `{ error: { code, message } }`, if the body is one. */
function apiError(body: string): { code?: string; message?: string } {
  try {
    const parsed = JSON.parse(body) as { error?: { code?: unknown; message?: unknown } };
    const code = typeof parsed.error?.code === "string" ? parsed.error.code : undefined;
    const message = typeof parsed.error?.message === "string" ? parsed.error.message : undefined;
    return { ...(code ? { code } : {}), ...(message ? { message } : {}) };
  } catch {
    return {};
  }
}

type Call = (
  method: "recommendations" | "similar" | "rank",
  params: RankParams,
  signal: AbortSignal,
) => Promise<unknown>;

function httpTransport(options: HttpClientOptions): { call: Call; fetch: FetchLike; base: string } {
  const base = options.baseUrl.replace(/\/+$/, "");
  const given = options.fetch;
  const doFetch: FetchLike =
    given === undefined
      ? (input, init) => fetch(input, init)
      : typeof given === "function"
        ? given
        : (input, init) => given.fetch(input, init);
  const headers = { authorization: `Bearer ${options.serverKey}`, accept: "application/json" };

  const call: Call = async (method, params, signal) => {
    let request: Request;
    if (method === "rank") {
      request = new Request(`${base}/v1/rank`, {
        method: "POST",
        headers: { ...headers, "content-type": "application/json" },
        body: JSON.stringify(params),
        signal,
      });
    } else {
      const query = new URLSearchParams();
      for (const [key, value] of Object.entries(params)) {
        if (value === undefined || value === null || (method === "similar" && key === "productId")) continue;
        query.set(key, Array.isArray(value) ? value.join(",") : String(value));
      }
      const path =
        method === "similar"
          ? `/v1/similar/${encodeURIComponent(String(params.productId ?? ""))}`
          : "/v1/recommendations";
      const qs = query.toString();
      request = new Request(`${base}${path}${qs ? `?${qs}` : ""}`, { headers, signal });
    }
    let response: Response;
    try {
      response = await doFetch(request);
    } catch (error) {
      if (signal.aborted) throw signal.reason;
      throw new Fault("network", describe(error));
    }
    const text = await response.text();
    if (!response.ok) {
      const { code, message } = apiError(text);
      throw new Fault("http", message ?? `HTTP ${response.status}`, {
        status: response.status,
        ...(code ? { code } : {}),
      });
    }
    try {
      return JSON.parse(text) as unknown;
    } catch {
      throw new Fault("invalid_response", "the answer is not JSON", { status: response.status });
    }
  };
  return { call, fetch: doFetch, base };
}

function bindingTransport(options: BindingClientOptions): Call {
  const binding = options.binding;
  return async (method, params) => {
    try {
      return method === "similar"
        ? await binding.similar(params as RankParams & { productId: string })
        : await binding[method](params);
    } catch (error) {
      // The entrypoint's errors start with the API's code: "validation_failed: limit: …".
      const message = describe(error);
      const code = /^([a-z_]+): /.exec(message)?.[1];
      throw new Fault("rpc", message, code ? { code } : {});
    }
  };
}

export function createClient(options: ClientOptions): LastmileClient {
  const defaultTimeout = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const http = "binding" in options ? null : httpTransport(options);
  const call: Call = http ? http.call : bindingTransport(options as BindingClientOptions);

  const report = (error: ClientError, method: string, params: RankParams) => {
    // A logging hook must not turn a fallback into a failure: neither by throwing nor, when it is async, by
    // rejecting (that would be an unhandled rejection, which some runtimes treat as fatal).
    try {
      const returned: unknown = options.onError?.(error, { method, params });
      if (typeof (returned as PromiseLike<unknown> | undefined)?.then === "function") {
        Promise.resolve(returned).catch(() => {});
      }
    } catch {
      // ignored, as above
    }
  };

  async function run(
    method: "recommendations" | "similar" | "rank",
    given: RankParams | undefined,
    options: CallOptions | undefined,
    defaultFallback: () => unknown,
  ): Promise<ClientAnswer> {
    const started = Date.now();
    // What the caller passes is not checked here (the API validates it): whatever it is, the answer is Lastmile's
    // or the fallback, never an exception.
    const params: RankParams = given ?? {};
    const callOptions: CallOptions = options ?? {};
    const placement = answerPlacement(method, params);
    try {
      const value = await deadline(
        (signal) => call(method, params, signal),
        callOptions.timeoutMs ?? defaultTimeout,
        callOptions.signal,
      );
      if (!isAnswer(value))
        throw new Fault(
          "invalid_response",
          "the answer is not of the documented shape (recId, placement, items of productId, score, reasons)",
        );
      if (callOptions.fallbackWhenEmpty && value.items.length === 0) {
        const flags = Array.isArray(value.degraded) && value.degraded.length > 0 ? value.degraded.join(", ") : "none";
        throw new Fault("empty", `Lastmile answered an empty list (degraded: ${flags})`);
      }
      return { ...value, fallback: false };
    } catch (caught) {
      const fault = caught instanceof Fault ? caught : new Fault("network", describe(caught));
      const error: ClientError = { kind: fault.kind, message: fault.message, ...fault.extra, ms: Date.now() - started };
      report(error, method, params);
      const list = (callOptions.fallback ?? defaultFallback()) as readonly FallbackItem[];
      return fallbackAnswer(placement, list, params, error);
    }
  }

  return {
    recommendations: (params, callOptions) => run("recommendations", params, callOptions, () => []),
    similar: (params, callOptions) => run("similar", params, callOptions, () => []),
    // The candidates in the caller's order are the fallback (those that name a product: fallbackItems).
    rank: (params, callOptions) => run("rank", params, callOptions, () => params?.candidates),
    async userToken(params, callOptions = {}) {
      if (!http) return null;
      try {
        return await deadline(
          async (signal) => {
            const response = await http.fetch(
              new Request(`${http.base}/v1/tokens`, {
                method: "POST",
                headers: {
                  authorization: `Bearer ${(options as HttpClientOptions).serverKey}`,
                  "content-type": "application/json",
                },
                body: JSON.stringify(params),
                signal,
              }),
            );
            if (!response.ok) {
              await response.body?.cancel();
              return null;
            }
            const body = (await response.json()) as Partial<TokenAnswer> | null;
            // The documented answer, or no token: a userKey of "undefined" is no user key.
            return typeof body?.token === "string" &&
              typeof body.userKey === "string" &&
              typeof body.expiresAt === "number"
              ? { token: body.token, userKey: body.userKey, expiresAt: body.expiresAt }
              : null;
          },
          callOptions.timeoutMs ?? defaultTimeout,
          callOptions.signal,
        );
      } catch {
        return null;
      }
    },
  };
}
