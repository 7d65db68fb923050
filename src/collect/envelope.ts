// The request envelope: which events a parsed body holds, and the batch-level fields that apply to each of them.
//   single-event endpoints (/v1/track …, /v1/t …)  the body is the event; its type comes from the path
//   /v1/batch, /v1/import, /v1/b,                   { batch: [event…], context?, integrations?, sentAt?, writeKey? }
//   /beacon/v1/batch
//   /v1/webhook                                     the body is one event carrying its own type
import { ApiError } from "../errors.ts";
import { refuseDeepJson } from "./body.ts";
import type { EventType } from "./event.ts";
import { isObject, jsonSize } from "./json.ts";
import { MAX_BATCH_EVENTS, MAX_EVENT_BYTES } from "./limits.ts";
import type { BatchDefaults } from "./normalize.ts";
import { parseIsoTimestamp } from "./timestamps.ts";

export type Endpoint =
  | { kind: "single"; type: EventType }
  /** `keyInQuery`: the write key may come as `?writeKey=` (RudderStack's beacon path: a beacon sends no header). */
  | { kind: "batch"; keyInQuery?: boolean }
  | { kind: "webhook" };

export interface Envelope {
  items: unknown[];
  defaults: BatchDefaults;
}

/** The writeKey a body carries (analytics.js puts it in every payload), if any. */
export function bodyWriteKey(body: unknown): string | undefined {
  if (!isObject(body)) return undefined;
  const key = body.writeKey;
  return typeof key === "string" && key.length > 0 ? key : undefined;
}

function batchDefaults(body: Record<string, unknown>): BatchDefaults {
  const defaults: BatchDefaults = {};
  let inherited = 0;
  for (const field of ["context", "integrations"] as const) {
    const value = body[field];
    if (value === undefined || value === null) continue;
    if (!isObject(value)) throw new ApiError("validation_failed", `the batch's ${field} must be an object`);
    defaults[field] = value;
    inherited += jsonSize(value);
  }
  // Every event is stored with these; past one event's limit, no event of the batch could be.
  if (inherited > MAX_EVENT_BYTES) {
    throw new ApiError(
      "payload_too_large",
      `the batch's context and integrations, which every event inherits, are ${inherited} bytes as JSON; the limit is ${MAX_EVENT_BYTES}`,
      { details: { limit: MAX_EVENT_BYTES, actual: inherited, unit: "bytes" } },
    );
  }
  if (inherited > 0) defaults.inheritedBytes = inherited;
  const sentAt = body.sentAt;
  if (sentAt !== undefined && sentAt !== null && sentAt !== "") {
    const ms = typeof sentAt === "string" ? parseIsoTimestamp(sentAt) : undefined;
    if (ms === undefined) throw new ApiError("validation_failed", "the batch's sentAt must be an ISO 8601 date-time");
    defaults.sentAt = ms;
  }
  return defaults;
}

export function readEnvelope(body: unknown, endpoint: Endpoint): Envelope {
  // A single-event body is the event: too deep is the request refused, as a too-large one is. A batch's envelope
  // is checked without its events, which normalize checks one by one (one too deep never refuses the others).
  if (endpoint.kind !== "batch") refuseDeepJson(body);
  else if (isObject(body) && Array.isArray(body.batch)) refuseDeepJson({ ...body, batch: [] });
  if (!isObject(body)) {
    throw new ApiError(
      "validation_failed",
      endpoint.kind === "batch"
        ? 'the body must be an object with a "batch" array'
        : "the body must be one event object",
    );
  }
  if (endpoint.kind !== "batch") return { items: [body], defaults: {} };

  const batch = body.batch;
  if (!Array.isArray(batch)) throw new ApiError("validation_failed", 'the body must be an object with a "batch" array');
  if (batch.length === 0) throw new ApiError("validation_failed", "the batch is empty");
  if (batch.length > MAX_BATCH_EVENTS) {
    throw new ApiError("payload_too_large", `a batch holds at most ${MAX_BATCH_EVENTS} events`, {
      details: { limit: MAX_BATCH_EVENTS, actual: batch.length, unit: "events" },
    });
  }
  return { items: batch, defaults: batchDefaults(body) };
}
