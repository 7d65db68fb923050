// The collection API, wire-compatible with Segment's HTTP Tracking API and RudderStack's HTTP API
// (docs/collection.md). Routes, all POST (OPTIONS answers CORS preflights; other methods 405):
//   /v1/track /v1/page /v1/screen /v1/identify /v1/alias /v1/group   one event; the path decides its type
//   /v1/t /v1/p /v1/s /v1/i /v1/a /v1/g                             analytics.js short paths of the same
//   /v1/batch /v1/import /v1/b                                      { batch: [...] }
//   /beacon/v1/batch                                                { batch: [...] } from RudderStack's JavaScript
//                                                                   SDK with useBeacon (key: body or ?writeKey=)
//   /v1/webhook                                                     one event with its own type, as webhook
//                                                                   destinations send it (key: Basic or ?writeKey=)
// Pipeline: body (gzip, caps) → source (write key) → rate limits → envelope → per-event validation → per-user
// budget → { one SessionState.record per user ∥ whether the rejected events' other users are suppressed } → dead
// letters (not of suppressed users) → 200 { success, accepted, duplicates, rejected }.
import { type Context, Hono, type MiddlewareHandler } from "hono";
import type { AppEnv } from "../app.ts";
import { configOrThrow, loadConfig, type Source } from "../config.ts";
import { ApiError } from "../errors.ts";
import { log } from "../log.ts";
import { readJsonBody } from "./body.ts";
import { corsPreflightHeaders, corsResponseHeaders, sourceAllowsOrigin } from "./cors.ts";
import { type DeadLetterInput, deadLetterEntry } from "./dead-letter-entry.ts";
import { bodyWriteKey, type Endpoint, readEnvelope } from "./envelope.ts";
import { type CollectedEvent, type EventType, userKey } from "./event.ts";
import { HANDOFF_RETRY_AFTER_SECONDS, type HandOffOutcome, handOff } from "./handoff.ts";
import { jsonSize } from "./json.ts";
import { MAX_EVENT_BYTES, MAX_REQUEST_BYTES, MAX_USER_BATCH_BYTES } from "./limits.ts";
import { type NormalizeContext, normalizeEvent, type Rejection, rawUserKey } from "./normalize.ts";
import { enforceRateLimits } from "./rate-limit.ts";
import { resolveSource } from "./sources.ts";

export interface CollectEnv {
  Bindings: Env;
  Variables: AppEnv["Variables"] & { source: Source | undefined };
}

export interface CollectResponse {
  success: true;
  /** Events newly stored. */
  accepted: number;
  /** Events whose messageId their user already had: stored before, no second effect. */
  duplicates: number;
  /** Events of suppressed users (docs/privacy.md): answered so clients do not retry them, never stored. */
  suppressed?: number;
  rejected: Rejection[];
}

export const SINGLE_EVENT_PATHS: Readonly<Record<EventType, readonly [string, string]>> = {
  track: ["/v1/track", "/v1/t"],
  page: ["/v1/page", "/v1/p"],
  screen: ["/v1/screen", "/v1/s"],
  identify: ["/v1/identify", "/v1/i"],
  alias: ["/v1/alias", "/v1/a"],
  group: ["/v1/group", "/v1/g"],
};
export const BATCH_PATHS = ["/v1/batch", "/v1/import", "/v1/b"] as const;
/** RudderStack's JavaScript SDK with `useBeacon`: navigator.sendBeacon cannot set a header, so the key is in the URL. */
export const BEACON_PATH = "/beacon/v1/batch";
export const WEBHOOK_PATH = "/v1/webhook";

/** Codes of whole-request refusals that are logged (never stored): the client sent something we cannot read. */
const LOGGED_REFUSALS = new Set([
  "invalid_json",
  "payload_too_large",
  "unsupported_media_type",
  "validation_failed",
  "bad_request",
]);

async function storeDeadLetters(env: Env, sourceId: string, entries: DeadLetterInput[]): Promise<void> {
  try {
    await env.DEAD_LETTERS.getByName(sourceId).store(entries);
  } catch (error) {
    // The response promises every rejected event is kept: without that, the client must retry.
    throw new ApiError("dependency_unavailable", "rejected events could not be recorded; retry the request", {
      headers: { "Retry-After": String(HANDOFF_RETRY_AFTER_SECONDS) },
      cause: error,
    });
  }
}

/**
 * Which of the rejected events' user keys (those with no accepted event in the request) belong to a suppressed user:
 * one `suppression()` call per distinct key, only when a request has rejected events.
 */
async function suppressedAmong(
  env: Env,
  keys: readonly (string | null)[],
  answered: ReadonlySet<string>,
): Promise<string[]> {
  const ask = [...new Set(keys)].filter((k): k is string => k !== null && !answered.has(k));
  if (ask.length === 0) return [];
  try {
    const states = await Promise.all(ask.map((key) => env.SESSION_STATE.getByName(key).suppression()));
    return ask.filter((_, i) => states[i]?.suppressed === true);
  } catch (error) {
    // Without the answer the rejected events can be neither kept nor dropped: the client retries.
    throw new ApiError("dependency_unavailable", "rejected events could not be recorded; retry the request", {
      headers: { "Retry-After": String(HANDOFF_RETRY_AFTER_SECONDS) },
      cause: error,
    });
  }
}

async function collect(c: Context<CollectEnv>, endpoint: Endpoint): Promise<Response> {
  const receivedAt = Date.now();
  const requestId = c.get("requestId");
  const config = configOrThrow(c.env);

  const body = await readJsonBody(c.req.raw, MAX_REQUEST_BYTES);
  const source = resolveSource(config.sources, {
    header: c.req.header("authorization") ?? null,
    body: endpoint.kind === "webhook" ? undefined : bodyWriteKey(body.value),
    query:
      endpoint.kind === "webhook" || (endpoint.kind === "batch" && endpoint.keyInQuery)
        ? c.req.query("writeKey")
        : undefined,
  });
  c.set("source", source);
  // A browser sends Origin; the source's allow-list decides whether its pages may send with this key at all. CORS
  // alone would not: a beacon (text/plain, no preflight) is delivered and stored whether or not the page may read
  // the answer. Server libraries send no Origin.
  const origin = c.req.header("origin");
  if (origin !== undefined && !sourceAllowsOrigin(source, origin)) {
    throw new ApiError("forbidden", "this source does not allow pages of this origin to send events", {
      details: { reason: "origin_not_allowed", origin },
    });
  }
  const ip = c.req.header("cf-connecting-ip") ?? null;
  await enforceRateLimits(c.env, source, ip, requestId);

  const envelope = readEnvelope(body.value, endpoint);
  const ctx: NormalizeContext = {
    sourceId: source.id,
    receivedAt,
    ip,
    // A server library's connection, or a webhook's, is not the user's: the address it passes is (Segment's spec).
    clientIp: source.trustedServer || endpoint.kind === "webhook",
    defaults: envelope.defaults,
    trustTimestamp: endpoint.kind === "webhook",
  };
  if (endpoint.kind === "single") ctx.pathType = endpoint.type;
  const results = await Promise.all(envelope.items.map((raw, index) => normalizeEvent(raw, index, ctx)));

  const accepted: CollectedEvent[] = [];
  const rejected: Rejection[] = [];
  /** Per user: the bytes of its accepted events, each with what it inherits (its one `record` call carries them). */
  const userBytes = new Map<string, number>();
  for (const result of results) {
    if (result.ok) {
      accepted.push(result.event);
      const key = userKey(result.event);
      userBytes.set(key, (userBytes.get(key) ?? 0) + result.bytes);
    } else rejected.push(result.rejection);
  }
  // One event per request: an oversized one is the request being too large, as Segment answers it.
  const first = rejected[0];
  if (endpoint.kind !== "batch" && first?.code === "event_too_large") {
    throw new ApiError("payload_too_large", first.message, {
      details: { limit: MAX_EVENT_BYTES, actual: jsonSize(envelope.items[0]), unit: "bytes" },
    });
  }

  // A user's events go in one record call, each with its own copy of the batch's context and integrations: past the
  // budget that call could exceed workerd's RPC limit and fail the same way on every retry. Refused whole, before
  // anything is stored (docs/collection.md#limits).
  const largest = Math.max(0, ...userBytes.values());
  if (largest > MAX_USER_BATCH_BYTES) {
    throw new ApiError(
      "payload_too_large",
      `one user's events in this batch are ${largest} bytes as JSON with the context and integrations each inherits from the batch; the limit is ${MAX_USER_BATCH_BYTES}: send that user's events in smaller batches, or with a smaller batch-level context`,
      { details: { limit: MAX_USER_BATCH_BYTES, actual: largest, unit: "bytes" } },
    );
  }

  const meta = { sourceId: source.id, requestId, receivedAt: new Date(receivedAt).toISOString() };
  // Whose each rejected event is: a suppressed user's events are stored nowhere, dead letters included.
  const rejectedKeys = rejected.map((r) => rawUserKey(envelope.items[r.index]));
  // The users among them with no accepted event here are asked beside the hand-off (its answers cover the others).
  const checks =
    rejected.length > 0 ? suppressedAmong(c.env, rejectedKeys, new Set(accepted.map(userKey))) : Promise.resolve([]);
  const none: HandOffOutcome = { accepted: 0, duplicates: 0, suppressed: 0, users: 0, suppressedKeys: [] };
  const handOver =
    accepted.length > 0 ? handOff(accepted, (key) => c.env.SESSION_STATE.getByName(key)) : Promise.resolve(none);
  checks.catch(() => undefined); // awaited below, unless the hand-off fails first
  const outcome = await handOver;
  const checked = await checks;
  const suppressedKeys = new Set([...outcome.suppressedKeys, ...checked]);
  const deadLetters = rejected
    .filter((_, i) => !suppressedKeys.has(rejectedKeys[i] ?? ""))
    .map((r) => deadLetterEntry(envelope.items[r.index], r, meta));
  // After the hand-off, not beside it: when the hand-off fails (503), the client sends the request again, and its
  // rejected events would otherwise be stored twice.
  if (deadLetters.length > 0) await storeDeadLetters(c.env, source.id, deadLetters);
  if (rejected.length > 0) {
    log("info", "events rejected", {
      requestId,
      sourceId: source.id,
      rejected: rejected.length,
      codes: [...new Set(rejected.map((r) => r.code))],
    });
  }
  const response: CollectResponse = {
    success: true,
    accepted: outcome.accepted,
    duplicates: outcome.duplicates,
    // Only when some were: events of suppressed users, answered so clients do not retry them, never stored.
    ...(outcome.suppressed > 0 ? { suppressed: outcome.suppressed } : {}),
    rejected,
  };
  return c.json(response);
}

/** Whole-request refusals are logged with what we know; the body itself is never logged. */
const logRefusals: MiddlewareHandler<CollectEnv> = async (c, next) => {
  await next();
  const error = c.error;
  if (error instanceof ApiError && LOGGED_REFUSALS.has(error.code)) {
    log("warn", "collection request refused", {
      requestId: c.get("requestId"),
      path: c.req.path,
      code: error.code,
      message: error.message,
      sourceId: c.get("source")?.id,
      contentType: c.req.header("content-type"),
      contentEncoding: c.req.header("content-encoding"),
      ...(error.details ?? {}),
    });
  }
};

/** CORS on every collection response, errors included (docs/collection.md#cors). */
const cors: MiddlewareHandler<CollectEnv> = async (c, next) => {
  await next();
  c.header("Vary", "Origin", { append: true });
  if (c.req.method === "OPTIONS") return;
  let sources: ReturnType<typeof loadConfig>["sources"];
  try {
    sources = loadConfig(c.env).sources;
  } catch {
    return; // misconfigured: the error response says so, without CORS
  }
  for (const [name, value] of Object.entries(corsResponseHeaders(c.req.header("origin"), c.get("source"), sources))) {
    c.header(name, value);
  }
};

export const collectRoutes = new Hono<CollectEnv>();

function mount(path: string, endpoint: Endpoint): void {
  collectRoutes.use(path, cors, logRefusals);
  collectRoutes.post(path, (c) => collect(c, endpoint));
  collectRoutes.options(path, (c) => {
    const headers = corsPreflightHeaders(c.req.header("origin"), configOrThrow(c.env).sources);
    return c.body(null, 204, headers);
  });
  collectRoutes.all(path, (c) => {
    throw new ApiError("method_not_allowed", `${c.req.method} is not allowed here; use POST`, {
      headers: { Allow: "POST, OPTIONS" },
    });
  });
}

for (const [type, paths] of Object.entries(SINGLE_EVENT_PATHS)) {
  for (const path of paths) mount(path, { kind: "single", type: type as EventType });
}
for (const path of BATCH_PATHS) mount(path, { kind: "batch" });
mount(BEACON_PATH, { kind: "batch", keyInQuery: true });
mount(WEBHOOK_PATH, { kind: "webhook" });
