// Validation and normalisation of one event: a wire event (Segment spec, RudderStack, webhook) in, a
// CollectedEvent or a rejection with a stable code out. Pure apart from hashing; nothing here throws for bad input.
// The codes are documented in docs/collection.md#validation.
import { unusableProductId } from "../session/ecommerce.ts";
import { MAX_PRODUCT_ID_CHARS } from "../session/limits.ts";
import { type CollectedEvent, EVENT_TYPES, type EventType, userKey } from "./event.ts";
import { isObject, isWellFormed, type JsonObject, jsonDepthExceeds, jsonSize } from "./json.ts";
import { MAX_EVENT_BYTES, MAX_ID_LENGTH, MAX_JSON_DEPTH } from "./limits.ts";
import { deriveMessageId } from "./message-id.ts";
import { parseIsoTimestamp, resolveTimestamp } from "./timestamps.ts";

export const REJECTION_CODES = [
  "invalid_event",
  "event_too_large",
  "invalid_type",
  "invalid_id",
  "missing_identity",
  "missing_user_id",
  "missing_event",
  "missing_previous_id",
  "missing_group_id",
  "invalid_field",
  "invalid_timestamp",
  "invalid_product_id",
  "event_too_deep",
] as const;
export type RejectionCode = (typeof REJECTION_CODES)[number];

export interface Rejection {
  /** Position of the event in the request (0 for single-event endpoints). */
  index: number;
  code: RejectionCode;
  message: string;
  /** The client's messageId, when it sent a usable one. */
  messageId?: string;
}

/** Fields of a batch envelope that apply to each of its events unless the event sets its own. */
export interface BatchDefaults {
  context?: JsonObject;
  integrations?: JsonObject;
  /** Milliseconds since the epoch. */
  sentAt?: number;
  /**
   * JSON bytes of `context` and `integrations`, which every event of the batch inherits: an event is measured
   * against MAX_EVENT_BYTES with them, since it is stored with them.
   */
  inheritedBytes?: number;
}

export interface NormalizeContext {
  sourceId: string;
  /** Server time the request arrived, ms since the epoch. */
  receivedAt: number;
  /** CF-Connecting-IP; null off Cloudflare. */
  ip: string | null;
  /**
   * The connection is not the user's: a server library (trustedServer source) or a webhook's upstream, which pass the
   * user's address in context.ip (Segment's spec). A string context.ip the event or its batch sends is kept.
   */
  clientIp?: boolean;
  /** Single-event endpoints (/v1/track …): the path decides the type. */
  pathType?: EventType;
  defaults?: BatchDefaults;
  /** Webhook deliveries carry a timestamp their upstream pipeline already corrected. */
  trustTimestamp?: boolean;
}

export type NormalizeResult =
  | {
      ok: true;
      event: CollectedEvent;
      /** The event's size as checked against MAX_EVENT_BYTES: its JSON as sent plus the bytes it inherits. */
      bytes: number;
    }
  | { ok: false; rejection: Rejection };

/** Server-owned context fields: whatever a client sends there is dropped (context.ip: but see `clientIp`). */
const SERVER_CONTEXT_FIELDS = ["ip", "lastmile"] as const;

class Rejected extends Error {
  readonly code: RejectionCode;
  constructor(code: RejectionCode, message: string) {
    super(message);
    this.code = code;
  }
}

const EVENT_TYPE_SET: ReadonlySet<string> = new Set(EVENT_TYPES);

/**
 * An id as clients send it: a string or a whole number (a numeric user id), "" and null meaning absent. A number must
 * be a safe integer: past 2^53 JSON.parse has already rounded it (12345678901234567891 arrives as
 * 12345678901234567000, someone else's id), and a fraction names no one.
 */
function optionalId(raw: JsonObject, field: string): string | null {
  const value = raw[field];
  if (value === undefined || value === null || value === "") return null;
  let id: string;
  if (typeof value === "string") id = value;
  else if (typeof value === "number" && Number.isSafeInteger(value)) id = String(value);
  else if (typeof value === "number")
    throw new Rejected("invalid_id", `${field} is a number JSON cannot carry exactly; send it as a string`);
  else throw new Rejected("invalid_id", `${field} must be a string or a number`);
  if (id.length > MAX_ID_LENGTH) {
    throw new Rejected("invalid_id", `${field} is ${id.length} characters long; the limit is ${MAX_ID_LENGTH}`);
  }
  // "a\ud800" and "a\ufffd" would name the same session object (and the same row in its dedupe table).
  if (!isWellFormed(id)) throw new Rejected("invalid_id", `${field} is not valid Unicode (an unpaired surrogate)`);
  // Postgres text cannot hold NUL: the warehouse would store "a\u0000" as "a", the id of someone else.
  if (id.includes("\u0000")) throw new Rejected("invalid_id", `${field} holds a NUL character`);
  return id;
}

/**
 * The session key a raw item would be recorded under (`u:<userId>`, else `a:<anonymousId>`), read as collection
 * reads those ids; null when it names no valid one. For rejected events: whose they are (docs/privacy.md).
 */
export function rawUserKey(raw: unknown): string | null {
  if (!isObject(raw)) return null;
  const id = (field: string) => {
    try {
      return optionalId(raw, field);
    } catch {
      return null;
    }
  };
  const ids = { userId: id("userId"), anonymousId: id("anonymousId") };
  return ids.userId || ids.anonymousId ? userKey(ids) : null;
}

function optionalObject(raw: JsonObject, field: string): JsonObject | undefined {
  const value = raw[field];
  if (value === undefined || value === null) return undefined;
  if (!isObject(value)) throw new Rejected("invalid_field", `${field} must be an object`);
  return value;
}

function optionalString(raw: JsonObject, field: string): string | null {
  const value = raw[field];
  if (value === undefined || value === null) return null;
  if (typeof value !== "string") throw new Rejected("invalid_field", `${field} must be a string`);
  return value;
}

function optionalTimestamp(raw: JsonObject, field: string): { text: string; ms: number } | null {
  const value = raw[field];
  if (value === undefined || value === null || value === "") return null;
  const ms = typeof value === "string" ? parseIsoTimestamp(value) : undefined;
  if (ms === undefined) throw new Rejected("invalid_timestamp", `${field} must be an ISO 8601 date-time string`);
  return { text: value as string, ms };
}

function eventType(raw: JsonObject, pathType: EventType | undefined): EventType {
  if (pathType) return pathType;
  const type = raw.type;
  if (type === undefined || type === null || type === "") {
    throw new Rejected("invalid_type", `type is missing; it must be one of ${EVENT_TYPES.join(", ")}`);
  }
  if (typeof type !== "string" || !EVENT_TYPE_SET.has(type)) {
    throw new Rejected("invalid_type", `type must be one of ${EVENT_TYPES.join(", ")}`);
  }
  return type as EventType;
}

/**
 * The client's messageId for a rejection report, when it is a usable id: one that passes the checks of an accepted
 * event's (an id with a NUL or an unpaired surrogate is itself the reason of an `invalid_id`).
 */
function reportedMessageId(raw: unknown): string | undefined {
  if (!isObject(raw)) return undefined;
  try {
    return optionalId(raw, "messageId") ?? undefined;
  } catch {
    return undefined;
  }
}

async function normalize(raw: unknown, ctx: NormalizeContext): Promise<{ event: CollectedEvent; bytes: number }> {
  if (!isObject(raw)) throw new Rejected("invalid_event", "an event must be a JSON object");
  // First: everything below walks the event recursively.
  if (jsonDepthExceeds(raw, MAX_JSON_DEPTH)) {
    throw new Rejected("event_too_deep", `the event nests arrays and objects deeper than ${MAX_JSON_DEPTH} levels`);
  }
  const inherited = ctx.defaults?.inheritedBytes ?? 0;
  const size = jsonSize(raw) + inherited;
  if (size > MAX_EVENT_BYTES) {
    const what =
      inherited > 0 ? ` with the ${inherited} bytes of context and integrations it inherits from the batch` : "";
    throw new Rejected("event_too_large", `the event is ${size} bytes as JSON${what}; the limit is ${MAX_EVENT_BYTES}`);
  }
  const type = eventType(raw, ctx.pathType);

  const userId = optionalId(raw, "userId");
  const anonymousId = optionalId(raw, "anonymousId");
  const clientMessageId = optionalId(raw, "messageId");
  const previousId = type === "alias" ? optionalId(raw, "previousId") : null;
  const groupId = type === "group" ? optionalId(raw, "groupId") : null;
  if (userId === null && anonymousId === null) {
    throw new Rejected("missing_identity", "the event needs a userId or an anonymousId");
  }

  let event: string | null = null;
  let name: string | null = null;
  switch (type) {
    case "track":
      event = optionalString(raw, "event");
      if (event === null || event === "") throw new Rejected("missing_event", "a track event needs an event name");
      break;
    case "alias":
      if (previousId === null) throw new Rejected("missing_previous_id", "an alias needs a previousId");
      if (userId === null) throw new Rejected("missing_user_id", "an alias needs the userId previousId merges into");
      break;
    case "group":
      if (groupId === null) throw new Rejected("missing_group_id", "a group call needs a groupId");
      break;
    case "page":
    case "screen": {
      name = optionalString(raw, "name");
      // RudderStack's mobile SDKs name a screen in `event` (with `properties.name`), not in `name`.
      const named = raw.event;
      if ((name === null || name === "") && typeof named === "string" && named !== "") name = named;
      break;
    }
    case "identify":
      break;
  }

  const properties = optionalObject(raw, "properties") ?? {};
  const traits = optionalObject(raw, "traits") ?? {};
  const ownContext = optionalObject(raw, "context");
  const ownIntegrations = optionalObject(raw, "integrations");

  const timestamp = optionalTimestamp(raw, "timestamp");
  const originalTimestamp = optionalTimestamp(raw, "originalTimestamp");
  const ownSentAt = optionalTimestamp(raw, "sentAt");
  const sentAtMs = ownSentAt?.ms ?? ctx.defaults?.sentAt ?? null;

  const resolved = resolveTimestamp({
    timestamp: timestamp?.ms ?? null,
    originalTimestamp: originalTimestamp?.ms ?? null,
    sentAt: sentAtMs,
    receivedAt: ctx.receivedAt,
    trustTimestamp: ctx.trustTimestamp === true,
  });

  // Batch-level context and integrations apply key by key; the event's own values win.
  const context: JsonObject = { ...(ctx.defaults?.context ?? {}), ...(ownContext ?? {}) };
  const sentIp = context.ip;
  for (const field of SERVER_CONTEXT_FIELDS) delete context[field];
  if (ctx.clientIp === true && typeof sentIp === "string" && sentIp !== "") context.ip = sentIp;
  else if (ctx.ip !== null) context.ip = ctx.ip;
  const integrations =
    ctx.defaults?.integrations || ownIntegrations
      ? { ...(ctx.defaults?.integrations ?? {}), ...(ownIntegrations ?? {}) }
      : undefined;

  const messageId = clientMessageId ?? (await deriveMessageId(ctx.sourceId, type, raw));
  const flags: JsonObject = {};
  if (resolved.clamped) flags.timestampClamped = true;
  if (clientMessageId === null) flags.messageIdDerived = true;
  if (Object.keys(flags).length > 0) context.lastmile = flags;

  const collected: CollectedEvent = {
    messageId,
    type,
    userId,
    anonymousId,
    previousId,
    groupId,
    event,
    name,
    properties,
    traits,
    context,
    timestamp: new Date(resolved.ms).toISOString(),
    originalTimestamp: originalTimestamp?.text ?? timestamp?.text ?? null,
    sentAt:
      ownSentAt?.text ?? (ctx.defaults?.sentAt === undefined ? null : new Date(ctx.defaults.sentAt).toISOString()),
    receivedAt: new Date(ctx.receivedAt).toISOString(),
    sourceId: ctx.sourceId,
  };
  if (integrations) collected.integrations = integrations;
  const unusable = unusableProductId(collected);
  if (unusable !== null) {
    throw new Rejected(
      "invalid_product_id",
      typeof unusable === "number"
        ? "a product id is a number JSON cannot carry exactly; send it as a string"
        : unusable.includes("\u0000")
          ? "a product id holds a NUL character"
          : !isWellFormed(unusable)
            ? "a product id is not valid Unicode (an unpaired surrogate)"
            : `a product id is ${unusable.length} characters long; the limit is ${MAX_PRODUCT_ID_CHARS}`,
    );
  }
  return { event: collected, bytes: size };
}

/** Validates and normalises one event; `index` is its position in the request, echoed in a rejection. */
export async function normalizeEvent(raw: unknown, index: number, ctx: NormalizeContext): Promise<NormalizeResult> {
  try {
    return { ok: true, ...(await normalize(raw, ctx)) };
  } catch (error) {
    if (!(error instanceof Rejected)) throw error;
    const rejection: Rejection = { index, code: error.code, message: error.message };
    const messageId = reportedMessageId(raw);
    if (messageId !== undefined) rejection.messageId = messageId;
    return { ok: false, rejection };
  }
}
