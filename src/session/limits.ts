// Every bound and time constant of a SessionState object, in one place, each with the reason for its value.
// docs/session.md lists them; change both together.

export const SECOND_MS = 1_000;
export const MINUTE_MS = 60 * SECOND_MS;
export const HOUR_MS = 60 * MINUTE_MS;
export const DAY_MS = 24 * HOUR_MS;

/** A new session starts after this much inactivity (event time), the usual web-analytics convention. */
export const SESSION_GAP_MS = 30 * MINUTE_MS;

/** A messageId seen within this window has no second effect: Segment's own dedupe window is 24 h. */
export const SEEN_WINDOW_MS = 24 * HOUR_MS;
/**
 * At most this many remembered messageIds per user. More than this in 24 h is a bot; beyond it the oldest ids are
 * forgotten early (the stream still dedupes through Redis, the warehouse by messageId).
 */
export const SEEN_MAX = 10_000;

/** The ring of recent interactions: enough for session-based ranking, small enough to read in one go. */
export const INTERACTIONS_MAX = 200;

/** The bounded recent-item sets, per kind (newest kept). */
export const RECENT_MAX = {
  viewed: 50,
  carted: 50,
  purchased: 100,
  wishlisted: 100,
  search: 20,
} as const;
export type RecentKind = keyof typeof RECENT_MAX;
export const RECENT_KINDS = Object.keys(RECENT_MAX) as RecentKind[];

/** Affinity tokens kept per horizon (lowest-ranked dropped first). */
export const AFFINITY_MAX = { session: 100, longTerm: 500 } as const;

/** Merged-in keys remembered (they are also the "merge once" guard); more than this is a shared or bot device. */
export const MERGED_MAX = 1_000;

/** State of a user with no event for this long is erased by the alarm (data minimisation). */
export const EXPIRY_MS = 90 * DAY_MS;

/**
 * A user object asks a key it merged this long ago for a hand-over again (at most once per this interval) when an
 * event names it: the merged object's pointer expires like any state (EXPIRY_MS), and a logged-in user's events go to
 * the user, never to the pointer. Asking keeps the pointer alive, well within EXPIRY_MS, and merges what the id
 * recorded if its pointer expired after all. Once a month costs one call per such id.
 */
export const MERGE_REFRESH_MS = 30 * DAY_MS;

/**
 * Back-pressure: with this many events waiting for Redis, `record` refuses new events (the client retries later)
 * rather than growing the object without bound. ~100 MB at 1 KB per event; DO SQLite allows 10 GB.
 */
export const OUTBOX_MAX_ROWS = 100_000;

/** What a snapshot returns (the ranking path reads it on every request: keep it small). */
export const SNAPSHOT_INTERACTIONS = 50;
export const SNAPSHOT_AFFINITIES = 25;
export const SNAPSHOT_MERGED = 50;

/**
 * record → merged object → … → target. A chain of merges is legitimate (a visitor merged into a user, that user later
 * aliased into another, and so on) and has no length bound of its own, but it shortens with use: every merged object a
 * call passes through points at the final target afterwards (path compression). One call nests at most this many
 * relays (each a Durable Object call inside the previous one; the platform limits how deep calls may nest), then the
 * first object of the chain resumes from where it stopped, at most FORWARD_MAX_ROUNDS times: a chain longer than
 * their product fails the call with "forwarding loop", but its pointers have moved on, so the client's retry gets
 * further. A cycle (corruption: an object that is merged absorbs nothing) fails every time.
 */
export const FORWARD_MAX_HOPS = 4;
export const FORWARD_MAX_ROUNDS = 4;

/**
 * A merge asked of an object that is absorbing another one right now is answered `busy` (docs/session.md): asked
 * again up to this many times in all. The asker whose key sorts first waits MERGE_BUSY_WAIT_MS before asking again,
 * the other MERGE_BUSY_WAIT_RATIO times as long, so two objects asking each other at once do not ask again at the
 * same moment. After the last `busy` the merge waits for the next event carrying the id.
 */
export const MERGE_BUSY_ATTEMPTS = 4;
export const MERGE_BUSY_WAIT_MS = 20;
export const MERGE_BUSY_WAIT_RATIO = 5;

/**
 * The longest hand-off token `record` takes (`RecordOptions.attempt`); it is stored with every id the call records. The
 * Worker's are UUIDs (36 characters).
 */
export const ATTEMPT_MAX_CHARS = 64;

/** Field caps, so one odd event cannot bloat a row. */
export const MAX_TAGS_PER_PRODUCT = 8;
export const MAX_TOKEN_VALUE_CHARS = 100;
export const MAX_QUERY_CHARS = 200;
export const MAX_PRODUCTS_PER_EVENT = 50;
/**
 * A product id longer than this is no product id (the catalogue's limit too, src/batch/catalog.ts): collection rejects
 * the event (`invalid_product_id`), and the interpretation never yields one, so no longer id reaches the session
 * or a warehouse index (a B-tree entry cannot pass ~2.7 KB; a longer one would fail its whole load batch).
 */
export const MAX_PRODUCT_ID_CHARS = 256;
