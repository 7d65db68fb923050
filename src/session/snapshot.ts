// SessionSnapshot: what `SessionState.snapshot()` returns — the read model the ranking path imports. All times are
// epoch milliseconds; affinity scores are already decayed to `asOf`.
import type { StoredInteraction } from "./model.ts";

/** A stored interaction as the snapshot shows it (its affinity tokens stay inside the object). */
export type SnapshotInteraction = Omit<StoredInteraction, "tokens">;

export interface AffinityScore {
  /** `category:<c>`, `brand:<b>`, `tag:<t>` or `price:<band>` (docs/session.md). */
  token: string;
  score: number;
}

export interface SessionSnapshot {
  /** false for a user this object has never recorded (nothing else is set then). */
  exists: boolean;
  userKey: string;
  userId: string | null;
  /** Anonymous ids merged into this user (newest first, bounded). */
  anonymousIds: string[];
  /** Every object key merged in (`a:…` and, through aliases, `u:…`), newest first, bounded. */
  mergedKeys: string[];
  /** Set when this object was merged into another: ask that key instead (its data lives there). */
  mergedInto: string | null;
  /** The time the snapshot was taken and the scores decayed to. */
  asOf: number;
  createdAt: number | null;
  lastEventAt: number | null;
  session: {
    id: string;
    startedAt: number;
    lastEventAt: number;
    eventCount: number;
    /** Less than the 30-minute session gap since its last event. */
    active: boolean;
  } | null;
  /** Newest first (by event time), at most SNAPSHOT_INTERACTIONS. */
  interactions: SnapshotInteraction[];
  /** Product ids, newest first. */
  viewed: string[];
  carted: string[];
  purchased: string[];
  wishlisted: string[];
  /** Normalised queries, newest first. */
  searches: string[];
  /** Top tokens by current score, highest first. */
  affinities: { session: AffinityScore[]; longTerm: AffinityScore[] };
  /** Events accepted but not yet confirmed by Redis. */
  outbox: { pending: number; oldestAt: number | null };
  counters: { events: number; duplicates: number };
  /**
   * Set (true) only while the visitor is suppressed (docs/privacy.md#suppression), whether their data was erased or
   * kept: nothing new about them may be recorded, exposures included.
   */
  suppressed?: true;
}

export function emptySnapshot(userKey: string, asOf: number): SessionSnapshot {
  return {
    exists: false,
    userKey,
    userId: null,
    anonymousIds: [],
    mergedKeys: [],
    mergedInto: null,
    asOf,
    createdAt: null,
    lastEventAt: null,
    session: null,
    interactions: [],
    viewed: [],
    carted: [],
    purchased: [],
    wishlisted: [],
    searches: [],
    affinities: { session: [], longTerm: [] },
    outbox: { pending: 0, oldestAt: null },
    counters: { events: 0, duplicates: 0 },
  };
}
