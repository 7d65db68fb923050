// Retrying what is worth retrying in the batch loop. Neon computes restart (maintenance, updates), sleep when idle
// and wake in a few hundred ms, and shed connections under load; a WebSocket to the proxy can drop. Those failures
// say nothing about the work itself, and the work is idempotent (one transaction per batch, ON CONFLICT), so it
// is re-run after an exponentially growing, fully jittered pause — a bounded number of times and never past the
// run's deadline. Anything else (a bug, a constraint violation, bad credentials) fails at once.
import { DrizzleQueryError } from "drizzle-orm";
import { describeError } from "../log.ts";

/**
 * SQLSTATEs of a server that is going away, starting, out of connection slots, or a transaction that lost a
 * conflict and may simply be re-run.
 */
export const TRANSIENT_SQLSTATES: ReadonlySet<string> = new Set([
  "57P01", // admin_shutdown: the compute is restarting
  "57P02", // crash_shutdown
  "57P03", // cannot_connect_now: starting up / waking
  "53300", // too_many_connections
  "53400", // configuration_limit_exceeded (connection limits)
  "08000", // connection_exception
  "08001", // sqlclient_unable_to_establish_sqlconnection
  "08003", // connection_does_not_exist
  "08004", // sqlserver_rejected_establishment_of_sqlconnection
  "08006", // connection_failure
  "40001", // serialization_failure
  "40P01", // deadlock_detected
]);

/** Socket-level error codes (Node / workerd) of a connection that failed or dropped. */
const TRANSIENT_ERRNOS: ReadonlySet<string> = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ETIMEDOUT",
  "EPIPE",
  "ENOTCONN",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "EAI_AGAIN",
]);

/**
 * Messages of the same failures where no code survives (the Neon driver over WebSocket, fetch to Upstash, Neon's
 * proxy while a compute wakes).
 */
const TRANSIENT_MESSAGES = [
  /connection terminated/i,
  // node-postgres (and the Neon driver) on a client whose connection broke, e.g. when a transaction's ROLLBACK is
  // sent after the server terminated the backend: that error replaces the transient one that broke it.
  /connection error and is not queryable/i,
  /connection (?:refused|reset)/i,
  /terminating connection/i,
  /the database system is (?:starting up|shutting down|in recovery mode)/i,
  /couldn'?t connect to compute/i,
  /compute (?:is )?(?:starting|waking|unavailable)/i,
  /too many connections/i,
  /socket hang up/i,
  /websocket/i,
  /network (?:connection )?(?:lost|error)/i,
  /fetch failed/i,
  /timed? ?out/i,
];

function field(error: unknown, name: string): unknown {
  return error !== null && typeof error === "object" ? (error as Record<string, unknown>)[name] : undefined;
}

/** The Postgres error in `error`'s cause chain (one with a SQLSTATE; drizzle wraps it): its code and message. */
export function postgresError(error: unknown, depth = 0): { code: string; message: string } | null {
  if (depth > 5 || error === null || typeof error !== "object") return null;
  const code = field(error, "code");
  if (typeof code === "string" && /^[0-9A-Z]{5}$/.test(code)) return { code, message: String(field(error, "message")) };
  return postgresError(field(error, "cause"), depth + 1);
}

/**
 * An error as a run records and logs it: the SQLSTATE and message of the Postgres error when there is one, else the
 * error itself, credentials masked (describeError), at most 300 characters. drizzle's query wrapper is never
 * described by its own message: that is the statement and its parameters (a batch's events), not what went wrong.
 */
export function describeFailure(error: unknown): string {
  const refused = postgresError(error);
  if (refused) return `${refused.code} ${describeError(refused.message)}`.slice(0, 300);
  return describeError(error instanceof DrizzleQueryError ? error.cause : error);
}

/** Whether `error` (or its cause chain) is a transient connection or server-availability failure. */
export function isTransientError(error: unknown, depth = 0): boolean {
  if (error === null || error === undefined || depth > 4) return false;
  // drizzle's query wrapper says only which statement failed, with its parameters (text that may read "timed out"):
  // its cause is the failure.
  if (error instanceof DrizzleQueryError) return isTransientError(error.cause, depth + 1);
  const code = field(error, "code");
  if (typeof code === "string" && (TRANSIENT_SQLSTATES.has(code) || TRANSIENT_ERRNOS.has(code))) return true;
  // A SQLSTATE that is not in the list is the server's definite answer: retrying changes nothing.
  if (typeof code === "string" && /^[0-9A-Z]{5}$/.test(code) && !TRANSIENT_ERRNOS.has(code)) return false;
  // An HTTP answer that is not Redis's (the Upstash client could not parse it as JSON): a gateway's 502 or 503 page,
  // Cloudflare's "error code: 502". Redis's own error answers are JSON (UpstashError) and stay definite. A
  // misconfigured proxy's non-JSON 4xx is retried too, a bounded number of times, before the run fails.
  if (field(error, "name") === "UpstashJSONParseError") return true;
  // Not only Errors: the Neon driver rejects with a WebSocket's ErrorEvent-like object when its socket fails.
  const raw = typeof error === "string" ? error : field(error, "message");
  const message = typeof raw === "string" ? raw : "";
  if (TRANSIENT_MESSAGES.some((pattern) => pattern.test(message))) return true;
  return isTransientError(field(error, "cause"), depth + 1);
}

export interface RetryPolicy {
  /** Attempts in total, the first included. */
  attempts: number;
  /** Cap of the first pause; each later cap doubles. */
  baseDelayMs: number;
  /** No pause is longer. */
  maxDelayMs: number;
}

/**
 * 5 attempts, pauses drawn from [0, 200 ms], [0, 400 ms], [0, 800 ms], [0, 1.6 s]: at most ~3 s in all, enough for
 * a Neon compute to wake (a few hundred ms) or restart (a few seconds), short next to a 15-minute cron interval.
 */
export const DEFAULT_RETRY: RetryPolicy = { attempts: 5, baseDelayMs: 200, maxDelayMs: 5_000 };

/** "Full jitter": uniform in [0, min(max, base × 2^retry)], so retrying runs never fall into step. */
export function backoffDelay(policy: RetryPolicy, retry: number, random: () => number = Math.random): number {
  const cap = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** retry);
  return Math.floor(random() * cap);
}

export interface RetryOptions {
  policy?: RetryPolicy;
  /** Epoch ms after which no retry starts (the run's deadline). */
  deadline?: number;
  /** Called before each pause (counting, logging). */
  onRetry?: (error: unknown, retry: number, delayMs: number) => void;
  sleep?: (ms: number) => Promise<void>;
  now?: () => number;
  random?: () => number;
}

const defaultSleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Runs `fn`, re-running it after transient failures (see `isTransientError`) within the policy and deadline. */
export async function withRetry<T>(fn: (attempt: number) => Promise<T>, options: RetryOptions = {}): Promise<T> {
  const policy = options.policy ?? DEFAULT_RETRY;
  const sleep = options.sleep ?? defaultSleep;
  const now = options.now ?? Date.now;
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn(attempt);
    } catch (error) {
      if (attempt >= policy.attempts || !isTransientError(error)) throw error;
      const delay = backoffDelay(policy, attempt - 1, options.random);
      if (options.deadline !== undefined && now() + delay > options.deadline) throw error;
      options.onRetry?.(error, attempt, delay);
      await sleep(delay);
    }
  }
}
