// When an event happened, corrected for the client's clock (docs/collection.md#timestamps).
//
// A browser's clock can be hours off; what it measures correctly is the interval between the event
// (originalTimestamp) and the moment it sent the request (sentAt). Our clock stamps receivedAt, so
//   timestamp = receivedAt − (sentAt − originalTimestamp)
// puts the event on the server's clock (network latency aside) — the same formula Segment uses. The result is
// clamped to [receivedAt − MAX_EVENT_AGE_MS, receivedAt + MAX_FUTURE_SKEW_MS].
import { isCalendarDay } from "../iso-time.ts";
import { MAX_EVENT_AGE_MS, MAX_FUTURE_SKEW_MS } from "./limits.ts";

export interface TimestampInput {
  /** Milliseconds since the epoch, parsed from the event (null when absent). */
  timestamp: number | null;
  originalTimestamp: number | null;
  sentAt: number | null;
  receivedAt: number;
  /**
   * The `timestamp` field was already corrected upstream (a Segment/RudderStack webhook forwards events its own
   * pipeline processed): use it as is, since its sentAt says nothing about our receipt.
   */
  trustTimestamp?: boolean;
}

export interface ResolvedTimestamp {
  ms: number;
  clamped: boolean;
  /** How it was obtained, for logs and tests. */
  method: "skew_corrected" | "client" | "received";
}

export function resolveTimestamp(input: TimestampInput): ResolvedTimestamp {
  const clientTime = input.originalTimestamp ?? input.timestamp;
  let ms: number;
  let method: ResolvedTimestamp["method"];
  if (input.trustTimestamp && input.timestamp !== null) {
    ms = input.timestamp;
    method = "client";
  } else if (clientTime !== null && input.sentAt !== null) {
    ms = input.receivedAt - (input.sentAt - clientTime);
    method = "skew_corrected";
  } else if (clientTime !== null) {
    ms = clientTime;
    method = "client";
  } else {
    ms = input.receivedAt;
    method = "received";
  }
  const earliest = input.receivedAt - MAX_EVENT_AGE_MS;
  const latest = input.receivedAt + MAX_FUTURE_SKEW_MS;
  if (ms < earliest) return { ms: earliest, clamped: true, method };
  if (ms > latest) return { ms: latest, clamped: true, method };
  return { ms, clamped: false, method };
}

/**
 * An ISO 8601 date-time as clients send it ("2026-11-26T19:17:05.192Z", with or without fraction or offset).
 * Anything else (numbers, "yesterday", locale strings Date.parse happens to accept) is invalid.
 */
const ISO_DATE_TIME = /^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:?\d{2})?)?$/i;

/**
 * Milliseconds since the epoch, or undefined when the value is not an ISO 8601 string — or names a day the calendar
 * does not have: Date.parse rolls "2026-02-30" over into March 2.
 */
export function parseIsoTimestamp(value: string): number | undefined {
  const text = value.trim();
  if (!ISO_DATE_TIME.test(text)) return undefined;
  if (!isCalendarDay(Number(text.slice(0, 4)), Number(text.slice(5, 7)), Number(text.slice(8, 10)))) return undefined;
  const ms = Date.parse(text);
  return Number.isFinite(ms) ? ms : undefined;
}
