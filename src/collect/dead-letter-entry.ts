// What the dead-letter store keeps of a rejected event: the raw event as JSON (truncated, original size noted),
// why it was rejected and where it came from. Pure, so the collection path and its tests share it.
import { jsonSize, truncateUtf8 } from "./json.ts";
import { MAX_DEAD_LETTER_RAW_BYTES } from "./limits.ts";
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
  /** The event as sent, as JSON; cut at MAX_DEAD_LETTER_RAW_BYTES. */
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
  raw: unknown,
  rejection: Rejection,
  meta: { sourceId: string; requestId: string; receivedAt: string },
): DeadLetterInput {
  // JSON.stringify(undefined) is undefined: a batch item can be anything JSON can hold, but never undefined.
  const json = JSON.stringify(raw) ?? "null";
  const raw_ = truncateUtf8(json, MAX_DEAD_LETTER_RAW_BYTES);
  return {
    ...meta,
    index: rejection.index,
    code: rejection.code,
    message: rejection.message,
    messageId: rejection.messageId ?? null,
    raw: raw_,
    rawBytes: jsonSize(raw),
    truncated: raw_.length !== json.length,
  };
}
