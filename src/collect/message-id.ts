// The messageId of an event that came without one (docs/collection.md#messageid).
//
// Deduplication in the SessionState object works on messageIds, and a client that retries after a timeout sends
// the same payload again. A random id would turn every retry into a second event; an id derived from the event's
// content makes the retry a duplicate. The hash covers the source, the resolved type (single-event endpoints take
// it from the path) and the event as sent, minus the fields a client legitimately changes between attempts:
// `sentAt` (stamped per attempt) and `writeKey` (credentials, not content).
import { canonicalJson, type JsonObject } from "./json.ts";

/** Prefix of derived ids: tells them apart from client ids in the warehouse and in logs. */
export const DERIVED_MESSAGE_ID_PREFIX = "lm-";

const VOLATILE_FIELDS = new Set(["sentAt", "writeKey"]);

export async function deriveMessageId(sourceId: string, type: string, raw: JsonObject): Promise<string> {
  // fromEntries defines own properties: an assignment `content["__proto__"] = v` would set the prototype instead,
  // and the field would drop out of the hash (two events differing only there would be one).
  const content: JsonObject = Object.fromEntries(Object.entries(raw).filter(([key]) => !VOLATILE_FIELDS.has(key)));
  const input = canonicalJson({ sourceId, type, event: content });
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(input)));
  // 128 bits of the digest: collision-free for any realistic volume, half the bytes in every dedupe index.
  let hex = "";
  for (const byte of digest.subarray(0, 16)) hex += byte.toString(16).padStart(2, "0");
  return `${DERIVED_MESSAGE_ID_PREFIX}${hex}`;
}
