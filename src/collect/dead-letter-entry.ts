// What the dead-letter store keeps of a rejected event: the raw event as JSON (truncated, original size noted; a
// top-level `writeKey` left out), why it was rejected and where it came from. Pure, so the collection path and its
// tests share it.
import { isObject, jsonCutAt, jsonDepthExceeds, jsonSize, toLastMember, truncateUtf8, utf8Length } from "./json.ts";
import { MAX_DEAD_LETTER_RAW_BYTES, MAX_JSON_DEPTH } from "./limits.ts";
import type { Rejection } from "./normalize.ts";

export interface DeadLetterInput {
  sourceId: string;
  requestId: string;
  /** ISO 8601, server time. */
  receivedAt: string;
  index: number;
  code: string;
  message: string;
  messageId: string | null;
  /** The event as sent (without a top-level `writeKey`), as JSON; cut at MAX_DEAD_LETTER_RAW_BYTES. */
  raw: string;
  /** Size of the full raw JSON in bytes. */
  rawBytes: number;
  truncated: boolean;
}

export interface DeadLetter extends DeadLetterInput {
  /** Increasing per source; page with `before`. */
  id: number;
}

export function deadLetterEntry(
  sent: unknown,
  rejection: Rejection,
  meta: { sourceId: string; requestId: string; receivedAt: string },
): DeadLetterInput {
  // Credentials, not content: on the single-event paths the body is the event, and a write key sent in it would be
  // readable by admins for 30 days. (fromEntries keeps a `__proto__` key an own field, as it was sent.)
  const raw =
    isObject(sent) && Object.hasOwn(sent, "writeKey")
      ? Object.fromEntries(Object.entries(sent).filter(([key]) => key !== "writeKey"))
      : sent;
  // Too deep to serialise safely (an event_too_deep rejection): what lies past the limit is cut, and the size is
  // that of what is kept.
  const deep = jsonDepthExceeds(raw, MAX_JSON_DEPTH);
  // JSON.stringify(undefined) is undefined: a batch item can be anything JSON can hold, but never undefined.
  const json = deep
    ? jsonCutAt(raw, MAX_JSON_DEPTH, `[nested deeper than ${MAX_JSON_DEPTH} levels]`)
    : (JSON.stringify(raw) ?? "null");
  // A cut text ends at its last whole member: an id cut off (or left without its closing quote) would escape the
  // erasure's search for it (docs/privacy.md).
  const cut = truncateUtf8(json, MAX_DEAD_LETTER_RAW_BYTES);
  const raw_ = cut.length === json.length ? json : toLastMember(cut);
  return {
    ...meta,
    index: rejection.index,
    code: rejection.code,
    message: rejection.message,
    messageId: rejection.messageId ?? null,
    raw: raw_,
    rawBytes: deep ? utf8Length(json) : jsonSize(raw),
    truncated: deep || raw_.length !== json.length,
  };
}
