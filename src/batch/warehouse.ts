// One CollectedEvent → its warehouse rows: the `events` row, the product-level `interactions` (through
// `interpret` of src/session/ecommerce.ts, so the warehouse and the live session read an event identically) and
// the identity links it proves. Pure: no I/O, no clock. Used by the loader (stream entries) and the seed.
import type { CollectedEvent } from "../collect/event.ts";
import { userKey as userKeyOf } from "../collect/event.ts";
import { interpret, productOf } from "../session/ecommerce.ts";
import { MAX_PRODUCTS_PER_EVENT } from "../session/limits.ts";
import { AFFINITY_WEIGHTS, type InteractionKind } from "../session/weights.ts";

/** An `events` row (keys are the drizzle property names of src/stores/schema.ts `events`). */
export interface EventRow {
  messageId: string;
  userKey: string;
  userId: string | null;
  anonymousId: string | null;
  type: CollectedEvent["type"];
  event: string | null;
  name: string | null;
  productId: string | null;
  previousId: string | null;
  groupId: string | null;
  properties: Record<string, unknown>;
  traits: Record<string, unknown>;
  context: Record<string, unknown>;
  country: string | null;
  sourceId: string;
  /** ISO 8601. */
  eventTime: string;
  receivedAt: string;
  streamId: string | null;
}

/** An `interactions` row. */
export interface InteractionRow {
  messageId: string;
  position: number;
  userKey: string;
  productId: string;
  kind: InteractionKind;
  weight: number;
  quantity: number | null;
  price: number | null;
  orderId: string | null;
  eventTime: string;
}

/** An `identities` link: `anonymousId` (or an alias's previous id) seen with `userId` at `at`. */
export interface IdentityLink {
  anonymousId: string;
  userId: string;
  at: string;
}

export interface WarehouseRows {
  event: EventRow;
  interactions: InteractionRow[];
  identities: IdentityLink[];
}

/**
 * The plausible range of an order line (docs/data-model.md): a unit price of at most MAX_UNIT_PRICE and a quantity
 * of at most MAX_QUANTITY units, either sign. A value outside it (a typo, a test value, a hostile write key) is
 * stored as null, so it never becomes revenue; the event's properties keep it as sent. Within it, price × quantity
 * and the experiment report's sums of squares stay far inside float8.
 */
export const MAX_UNIT_PRICE = 1e9;
export const MAX_QUANTITY = 1_000_000;

function bounded(value: number | null, max: number): number | null {
  return value !== null && Math.abs(value) <= max ? value : null;
}

function record(value: unknown): Record<string, unknown> | null {
  return value !== null && typeof value === "object" && !Array.isArray(value)
    ? (value as Record<string, unknown>)
    : null;
}

function text(value: unknown): string | null {
  if (typeof value === "string") return value.trim() || null;
  if (typeof value === "number" && Number.isFinite(value)) return String(value);
  return null;
}

function quantityOf(value: unknown): number | null {
  const n = typeof value === "number" ? value : typeof value === "string" && value.trim() ? Number(value) : Number.NaN;
  return Number.isFinite(n) ? bounded(Math.round(n), MAX_QUANTITY) : null;
}

/** ISO 3166-1 alpha-2 from `context.location.country`, upper-cased; null for names or anything else. */
export function countryOf(context: Record<string, unknown>): string | null {
  const country = text(record(context.location)?.country);
  return country && /^[A-Za-z]{2}$/.test(country) ? country.toUpperCase() : null;
}

/** A timestamp Postgres accepts, or null. */
function isoTime(value: string | null | undefined): string | null {
  if (!value) return null;
  const ms = Date.parse(value);
  return Number.isFinite(ms) ? new Date(ms).toISOString() : null;
}

/**
 * The product objects `interpret` turns into purchase interactions, in its order (objects of `products`, at
 * most MAX_PRODUCTS_PER_EVENT): interaction i of an Order Completed is products[i]. Used only for `quantity`,
 * which interactions do not carry.
 */
function purchasedProducts(props: Record<string, unknown>): Record<string, unknown>[] {
  const list = Array.isArray(props.products) ? props.products : [];
  return list
    .map(record)
    .filter((p): p is Record<string, unknown> => p !== null)
    .slice(0, MAX_PRODUCTS_PER_EVENT);
}

/**
 * The rows of one event. `userKey` is the key of the SessionState object that recorded it (the stream's `user`
 * field: the user a visitor was merged into); by default the event's own key.
 */
export function warehouseRows(event: CollectedEvent, userKey?: string, streamId: string | null = null): WarehouseRows {
  const key = userKey ?? userKeyOf(event);
  const props = record(event.properties) ?? {};
  const context = record(event.context) ?? {};
  const receivedAt = isoTime(event.receivedAt) ?? new Date(0).toISOString();
  const eventTime = isoTime(event.timestamp) ?? receivedAt;

  const interpreted = interpret(event);
  const purchased = purchasedProducts(props);
  // interpret maps each object of `products` to one purchase interaction, in order; if that ever changes, the
  // lengths disagree and quantities are left out rather than misattributed.
  const aligned = interpreted.length === purchased.length;
  const orderId = text(props.order_id) ?? text(props.orderId);
  const interactionRows: InteractionRow[] = [];
  interpreted.forEach((i, position) => {
    if (!i.productId) return;
    const source = i.kind === "purchase" ? (aligned ? purchased[position] : undefined) : props;
    interactionRows.push({
      messageId: event.messageId,
      position,
      userKey: key,
      productId: i.productId,
      kind: i.kind,
      weight: AFFINITY_WEIGHTS[i.kind],
      quantity: source ? quantityOf(source.quantity) : null,
      price: bounded(i.price, MAX_UNIT_PRICE),
      orderId: i.kind === "purchase" ? orderId : null,
      eventTime,
    });
  });

  const identities: IdentityLink[] = [];
  if (event.userId && event.anonymousId) {
    identities.push({ anonymousId: event.anonymousId, userId: event.userId, at: eventTime });
  }
  if (event.type === "alias" && event.userId && event.previousId && event.previousId !== event.anonymousId) {
    identities.push({ anonymousId: event.previousId, userId: event.userId, at: eventTime });
  }

  return {
    event: {
      messageId: event.messageId,
      userKey: key,
      userId: event.userId,
      anonymousId: event.anonymousId,
      type: event.type,
      event: event.event,
      name: event.name,
      productId: interactionRows[0]?.productId ?? productOf(props).productId,
      previousId: event.previousId,
      groupId: event.groupId,
      properties: props,
      traits: record(event.traits) ?? {},
      context,
      country: countryOf(context),
      sourceId: event.sourceId,
      eventTime,
      receivedAt,
      streamId,
    },
    interactions: interactionRows,
    identities,
  };
}

/**
 * Identity links merged per (anonymousId, userId) into first/last seen: one upsert row per pair (Postgres refuses
 * to update the same row twice in one INSERT … ON CONFLICT DO UPDATE).
 */
export function mergeIdentities(
  links: Iterable<IdentityLink>,
): { anonymousId: string; userId: string; firstSeen: string; lastSeen: string }[] {
  const pairs = new Map<string, { anonymousId: string; userId: string; firstSeen: string; lastSeen: string }>();
  for (const link of links) {
    const id = `${link.anonymousId}\u0000${link.userId}`;
    const pair = pairs.get(id);
    if (!pair)
      pairs.set(id, { anonymousId: link.anonymousId, userId: link.userId, firstSeen: link.at, lastSeen: link.at });
    else {
      if (link.at < pair.firstSeen) pair.firstSeen = link.at;
      if (link.at > pair.lastSeen) pair.lastSeen = link.at;
    }
  }
  return [...pairs.values()];
}
