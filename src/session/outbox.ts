// Outbox delivery policy and the one alarm's schedule. Pure. The alarm serves every timed duty of the object:
// outbox retry, pruning of the dedupe window, and expiry; it is always set to the earliest of them.
import { EXPIRY_MS, MINUTE_MS, SECOND_MS, SEEN_WINDOW_MS } from "./limits.ts";

/** Events per Redis round trip (one EVAL): large enough to drain bursts, small enough for one request body. */
export const FLUSH_MAX_EVENTS = 200;
/** …and at most about this much event JSON (UTF-8 bytes) per round trip (Upstash caps request bodies; 1 MB on small plans). */
export const FLUSH_MAX_BYTES = 512 * 1024;
/** A Redis call that takes longer than this is treated as failed (the rows stay; the retry is idempotent). */
export const FLUSH_TIMEOUT_MS = 10 * SECOND_MS;
/** Round trips per flush before yielding to the alarm (bounds one invocation's subrequests and wall time). */
export const FLUSH_MAX_ROUNDS = 20;
/** Retry backoff after a failed flush: 1 s doubling to a 5-minute cap, ±25 % jitter (no thundering herd). */
export const BACKOFF_BASE_MS = 1 * SECOND_MS;
export const BACKOFF_CAP_MS = 5 * MINUTE_MS;
/**
 * The alarm drains the outbox this long after its oldest row was written. `record` never waits for Redis: a burst
 * of batches for one user shares one round trip, and no Redis work runs in the request that acknowledged them.
 * It bounds how stale the stream and the trending counters may be (docs/session.md): 30 s is invisible next to
 * the 15-minute warehouse load and hour-long trending windows, and it keeps alarm writes (one per drain) rare.
 */
export const OUTBOX_FLUSH_DELAY_MS = 30 * SECOND_MS;

/** Delay before retry number `attempt` (1-based); `random` in [0, 1). */
export function backoffMs(attempt: number, random: number): number {
  const exp = BACKOFF_BASE_MS * 2 ** Math.max(0, Math.min(attempt - 1, 30));
  return Math.round(Math.min(BACKOFF_CAP_MS, exp) * (0.75 + 0.5 * random));
}

/**
 * While a user is active, the alarm keeps beating every OUTBOX_FLUSH_DELAY_MS (until this long after the last
 * event): so `record` finds an alarm already due soon enough and does not write one. Setting an alarm is a
 * storage write of its own; one per beat instead of one per `record` keeps it off the acknowledgement path.
 */
export const ACTIVE_WINDOW_MS = 5 * MINUTE_MS;

export interface AlarmInputs {
  now: number;
  lastActiveAt: number;
  oldestSeenAt: number | null;
  outboxPending: number;
  oldestOutboxAt: number | null;
  outboxRetryAt: number | null;
}

/**
 * The earliest due time among the object's duties. Expiry counts only with nothing left to deliver (isExpired waits
 * for that): with rows pending past the expiry time, it would re-arm the alarm in the past on every run, and the
 * flush retries would ignore their backoff.
 */
export function nextAlarmAt(s: AlarmInputs): number {
  const due = s.outboxPending > 0 ? [] : [s.lastActiveAt + EXPIRY_MS];
  if (s.now - s.lastActiveAt < ACTIVE_WINDOW_MS) due.push(s.now + OUTBOX_FLUSH_DELAY_MS);
  if (s.oldestSeenAt !== null) due.push(s.oldestSeenAt + SEEN_WINDOW_MS);
  if (s.outboxPending > 0) due.push(s.outboxRetryAt ?? (s.oldestOutboxAt ?? s.lastActiveAt) + OUTBOX_FLUSH_DELAY_MS);
  return Math.min(...due);
}

/** Whether state may be erased: inactive long enough, and nothing left to deliver (acknowledged events are never dropped). */
export function isExpired(lastActiveAt: number, outboxPending: number, now: number): boolean {
  return outboxPending === 0 && now - lastActiveAt >= EXPIRY_MS;
}
