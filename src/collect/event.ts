// The canonical event: what collection hands to a user's SessionState object and, through its outbox, to the
// warehouse stream. Wire formats (Segment, RudderStack, webhooks) are normalised into this shape once, at
// the edge; everything downstream reads only this.

export const EVENT_TYPES = ["track", "page", "screen", "identify", "alias", "group"] as const;
export type EventType = (typeof EVENT_TYPES)[number];

export interface CollectedEvent {
  /** Client-supplied, or derived from the event's content when absent (so a client's retry keeps it). */
  messageId: string;
  type: EventType;
  userId: string | null;
  anonymousId: string | null;
  /** alias: the id being merged into `userId`. */
  previousId: string | null;
  /** group: the account id. */
  groupId: string | null;
  /** track: the event name (e.g. "Product Viewed"). */
  event: string | null;
  /** page/screen: the page name. */
  name: string | null;
  properties: Record<string, unknown>;
  traits: Record<string, unknown>;
  context: Record<string, unknown>;
  /** When it happened, ISO 8601, corrected for client clock skew and clamped (docs/collection.md). */
  timestamp: string;
  /** The client's own timestamp, as sent. */
  originalTimestamp: string | null;
  sentAt: string | null;
  /** Set by the server. */
  receivedAt: string;
  /** The source (write key) it came through. */
  sourceId: string;
  /**
   * Segment's per-destination switches (`{ "All": false, "Mixpanel": true }`), batch-level ones merged in; absent
   * when the client sent none. Kept for the warehouse: Lastmile itself routes nowhere.
   */
  integrations?: Record<string, unknown>;
}

/**
 * The Durable Object name of the user an event belongs to: the userId when known, else the visitor's
 * anonymousId. The prefixes keep the two id spaces apart and keep internal objects (e.g. the health probe)
 * out of both.
 */
export function userKey(event: Pick<CollectedEvent, "userId" | "anonymousId">): string {
  if (event.userId) return `u:${event.userId}`;
  if (event.anonymousId) return `a:${event.anonymousId}`;
  throw new Error("an event needs a userId or an anonymousId");
}

/** What a SessionState object reports for the events of one `record` call. */
export interface RecordResult {
  /**
   * Events newly applied to the session (and queued for the warehouse), and those an earlier call under the same
   * `attempt` applied (a retried hand-off whose first answer was lost: applied once, counted as that call counted them).
   */
  accepted: number;
  /** Events whose messageId this user already had within the dedupe window from another call: no second effect. */
  duplicates: number;
  /** Events of a suppressed user (docs/privacy.md): answered, not stored. Absent when none. */
  suppressed?: number;
}

/** The options of a `record` call. */
export interface RecordOptions {
  /**
   * The hand-off's token: one per request and user, the same on the retry of a failed call (src/collect/handoff.ts).
   * An id a call under the same token stored is answered as `accepted` again, not as a duplicate (nothing is applied
   * twice). At most ATTEMPT_MAX_CHARS characters (src/session/limits.ts).
   */
  attempt?: string;
}
