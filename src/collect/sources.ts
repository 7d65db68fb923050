// Which source a collection request belongs to: the write key from HTTP Basic auth (username, empty password —
// Segment's and RudderStack's server libraries, newer analytics.js), else from the body (`writeKey`, what
// analytics.js sends with text/plain), else from `?writeKey=` (the webhook endpoint, whose destinations can be given
// a URL but not always a header, and RudderStack's beacon path, whose beacons cannot send one). Header beats body
// beats query.
import { constantTimeEqual } from "../auth.ts";
import type { Source, Sources } from "../config.ts";
import { ApiError } from "../errors.ts";

/** The username of a Basic Authorization header; undefined when there is no Basic header. */
export function basicAuthUser(header: string | null): string | undefined {
  if (!header) return undefined;
  const match = /^basic\s+(\S+)\s*$/i.exec(header);
  if (!match?.[1]) {
    // Another scheme is not ours to judge (a proxy may add one); a broken Basic header is.
    if (/^basic\b/i.test(header)) throw unauthorized("the Authorization header is not valid Basic auth");
    return undefined;
  }
  let decoded: string;
  try {
    decoded = atob(match[1]);
  } catch {
    throw unauthorized("the Authorization header is not valid Basic auth");
  }
  // "writeKey:" — the password is empty (RudderStack's docs even show '""'); it is ignored.
  const colon = decoded.indexOf(":");
  return colon === -1 ? decoded : decoded.slice(0, colon);
}

/**
 * No `WWW-Authenticate: Basic` on purpose: on a same-origin request (a storefront proxying collection under its own
 * domain) a browser answers that header with a login dialog in front of the shopper.
 */
function unauthorized(message: string): ApiError {
  return new ApiError("unauthorized", message);
}

export interface WriteKeyCandidates {
  header: string | null;
  body?: string | undefined;
  query?: string | undefined;
}

/** The source of a write key: 401 when missing or unknown, 403 when the source is disabled. */
export function resolveSource(sources: Sources, candidates: WriteKeyCandidates): Source {
  const writeKey = basicAuthUser(candidates.header) || candidates.body || candidates.query;
  if (!writeKey) {
    throw unauthorized(
      "a write key is required: HTTP Basic auth with the write key as username, or writeKey in the body",
    );
  }
  const source = sourceOfKey(sources, writeKey);
  if (!source) throw unauthorized("unknown write key");
  if (!source.enabled) {
    throw new ApiError("forbidden", `source "${source.id}" is disabled`, { details: { sourceId: source.id } });
  }
  return source;
}

const encoder = new TextEncoder();
/** The configured write keys as bytes, once per configuration (sources are loaded once per env). */
const encodedKeys = new WeakMap<Sources, Array<[Uint8Array, Source]>>();

/**
 * The source whose write key is `writeKey`, comparing it with every configured key byte by byte without an early
 * exit (constantTimeEqual of src/auth.ts): server-side write keys are secrets, and a hash-map lookup would answer a
 * near miss in other time than a far one.
 */
function sourceOfKey(sources: Sources, writeKey: string): Source | undefined {
  let keys = encodedKeys.get(sources);
  if (!keys) {
    keys = sources.list.map((source) => [encoder.encode(source.writeKey), source]);
    encodedKeys.set(sources, keys);
  }
  const presented = encoder.encode(writeKey);
  let found: Source | undefined;
  for (const [key, source] of keys) {
    if (constantTimeEqual(presented, key)) found = source;
  }
  return found;
}
