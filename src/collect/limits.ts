// The collection API's limits in one place (docs/collection.md). Sizes are bytes of UTF-8.

/**
 * Per event, measured as the JSON of the event as sent. Segment's HTTP Tracking API refuses events over 32 KB, so
 * no Segment client sends bigger ones; the same bound keeps one visitor's session object small.
 */
export const MAX_EVENT_BYTES = 32 * 1024;

/**
 * Per request body, after decompression. Segment's batch limit (500 KB): its clients size their batches to it.
 * It also bounds the memory and CPU one request can cost the Worker (128 MB isolate).
 */
export const MAX_REQUEST_BYTES = 500 * 1024;

/**
 * How much bigger than MAX_REQUEST_BYTES a gzip body may be as sent. Deflate's stored blocks add 5 bytes per 65,535,
 * the gzip header and trailer 18, plus optional header fields no library fills much: a body past the cap plus this
 * decodes past the cap, and is refused (413) before it is decoded. It also bounds the work of decoding one.
 */
export const GZIP_SLACK_BYTES = 16 * 1024;

/**
 * Events per batch. 500 KB of the smallest valid events (~200 bytes) is about 2,500; anything beyond is not a real
 * client, and each event costs validation plus a share of a Durable Object call.
 */
export const MAX_BATCH_EVENTS = 2_500;

/**
 * Per user per batch: the events a request hands to one user's SessionState in its one `record` call, each measured
 * as for MAX_EVENT_BYTES (its JSON as sent plus the batch context and integrations it inherits, since it is stored
 * with them). Without inheritance a user's events are bounded by the body (500 KB); with it, 2,500 events can each
 * carry a copy of up to 32 KB of batch context, ~80 MB. workerd refuses RPC arguments over 32 MiB, serialised —
 * where a string holding any character past U+00FF takes two bytes a character, about twice its UTF-8 JSON (17.4 MiB
 * of such events measured 36.2 MB) — and a call over it would fail the same way on every retry. About twice 12 MiB,
 * with the fields the server adds, stays under. Past it the request is refused (413) rather than split over several
 * calls: one call per user per request is one transaction, all of the user's events stored or none.
 */
export const MAX_USER_BATCH_BYTES = 12 * 1024 * 1024;

/**
 * Arrays and objects nested deeper than this in a request body are refused (400 invalid_json) before anything walks
 * them. Real events nest a handful of levels; JSON.stringify, structured clone (the session objects' RPC) and
 * recursive helpers overflow the stack somewhere past a thousand, which a 500 KB body reaches easily.
 */
export const MAX_JSON_DEPTH = 64;

/** userId, anonymousId, previousId, groupId, messageId: real ids are UUIDs, emails, hashes; 256 leaves room. */
export const MAX_ID_LENGTH = 256;

/** A client clock may run a little fast; beyond a minute into the future the timestamp is wrong, not early. */
export const MAX_FUTURE_SKEW_MS = 60_000;

/**
 * Events older than this are clamped: the live session only cares about recent behaviour, and Segment's
 * libraries drop their queues long before. Historical loads belong in the warehouse, not the edge.
 */
export const MAX_EVENT_AGE_MS = 31 * 24 * 60 * 60 * 1000;

/** How much of a rejected event the dead-letter store keeps: enough to see what was wrong, never 32 KB × 10,000. */
export const MAX_DEAD_LETTER_RAW_BYTES = 8 * 1024;

/** Dead letters kept per source: the newest N … */
export const DEAD_LETTER_MAX_ROWS = 10_000;
/** … and none older than this. */
export const DEAD_LETTER_MAX_AGE_MS = 30 * 24 * 60 * 60 * 1000;
