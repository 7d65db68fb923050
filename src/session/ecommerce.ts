// Segment e-commerce v2 (and RudderStack's identical spec) → session interactions. Pure: no I/O, no clock.
// One event yields zero or more interactions (Order Completed: one per product); events that are not
// e-commerce yield none and so carry no ranking weight (they still count and still reach the warehouse).
// Tokens are normalised here, once, so the ranking path can build the same tokens from its catalogue.
import type { CollectedEvent } from "../collect/event.ts";
import { isWellFormed } from "../collect/json.ts";
import {
  MAX_PRODUCT_ID_CHARS,
  MAX_PRODUCTS_PER_EVENT,
  MAX_QUERY_CHARS,
  MAX_TAGS_PER_PRODUCT,
  MAX_TOKEN_VALUE_CHARS,
  type RecentKind,
} from "./limits.ts";
import { type InteractionKind, priceBand } from "./weights.ts";

export interface Interaction {
  kind: InteractionKind;
  productId: string | null;
  category: string | null;
  brand: string | null;
  price: number | null;
  query: string | null;
  /** Affinity tokens: `category:<c>`, `brand:<b>`, `tag:<t>`, `price:<band>` (normalised, deduplicated). */
  tokens: string[];
}

/** Track event names (normalised by `eventKey`) → kind; v1 names ("Viewed Product") are accepted too. */
const TRACK_KINDS: ReadonlyMap<string, InteractionKind> = new Map([
  ["products searched", "search"],
  ["product searched", "search"],
  ["searched products", "search"],
  ["product list viewed", "list_view"],
  ["product list filtered", "list_view"],
  ["viewed product category", "list_view"],
  ["product clicked", "click"],
  ["clicked product", "click"],
  ["product viewed", "view"],
  ["viewed product", "view"],
  ["product added", "add_to_cart"],
  ["added product", "add_to_cart"],
  ["product removed", "remove_from_cart"],
  ["removed product", "remove_from_cart"],
  ["product added to wishlist", "wishlist"],
  ["added product to wishlist", "wishlist"],
  ["cart viewed", "cart_view"],
  ["viewed cart", "cart_view"],
  ["checkout started", "checkout"],
  ["started checkout", "checkout"],
  ["order completed", "purchase"],
  ["completed order", "purchase"],
]);

/** "Product Viewed", "product_viewed" and " product  viewed " name the same event. */
export function eventKey(name: string): string {
  return name
    .trim()
    .toLowerCase()
    .replace(/[_\s]+/g, " ");
}

export function kindOfTrack(name: string | null): InteractionKind | null {
  return name ? (TRACK_KINDS.get(eventKey(name)) ?? null) : null;
}

/** The value part of a token: trimmed, lower case, inner whitespace collapsed, bounded; null when empty. */
export function tokenValue(value: unknown): string | null {
  const text = scalarText(value);
  if (text === null) return null;
  const v = text.trim().toLowerCase().replace(/\s+/g, " ").slice(0, MAX_TOKEN_VALUE_CHARS);
  return v.length > 0 ? v : null;
}

/** A search query as stored: normalised like a token value, bounded; null when empty. */
export function normalizeQuery(value: unknown): string | null {
  const text = scalarText(value);
  if (text === null) return null;
  const q = text.trim().toLowerCase().replace(/\s+/g, " ").slice(0, MAX_QUERY_CHARS);
  return q.length > 0 ? q : null;
}

function scalarText(value: unknown): string | null {
  if (typeof value === "string") return value;
  if (typeof value === "number" && Number.isFinite(value)) return String(value);
  return null;
}

function idText(value: unknown): string | null {
  const text = scalarText(value)?.trim();
  return text ? text : null;
}

function numberOf(value: unknown): number | null {
  if (typeof value === "number") return Number.isFinite(value) ? value : null;
  if (typeof value === "string" && value.trim() !== "") {
    const n = Number(value);
    return Number.isFinite(n) ? n : null;
  }
  return null;
}

function stringList(value: unknown): string[] {
  if (Array.isArray(value)) return value.filter((v): v is string | number => scalarText(v) !== null).map(String);
  if (typeof value === "string") return value.split(",");
  return [];
}

function record(value: unknown): Record<string, unknown> | null {
  return value !== null && typeof value === "object" && !Array.isArray(value)
    ? (value as Record<string, unknown>)
    : null;
}

export interface ProductFields {
  productId: string | null;
  category: string | null;
  brand: string | null;
  price: number | null;
  tokens: string[];
}

/** The product id as sent: `product_id` (or `productId`, v1 `id`), of any length. */
function sentProductId(props: Record<string, unknown>): string | null {
  return idText(sentProductIdValue(props));
}

/** The raw value sentProductId reads: the first of `product_id`, `productId`, `id` that gives an id. */
function sentProductIdValue(props: Record<string, unknown>): unknown {
  return [props.product_id, props.productId, props.id].find((v) => idText(v) !== null);
}

/** A product as Segment describes it: `product_id` (or `productId`, v1 `id`), category, brand, price, tags. */
export function productOf(props: Record<string, unknown>): ProductFields {
  const sent = sentProductId(props);
  const productId = sent !== null && sent.length <= MAX_PRODUCT_ID_CHARS ? sent : null;
  const category = scalarText(props.category)?.trim() || null;
  const brand = scalarText(props.brand)?.trim() || null;
  const price = numberOf(props.price);
  const tokens = new Set<string>();
  for (const c of [category, ...stringList(props.categories)]) {
    const v = tokenValue(c);
    if (v) tokens.add(`category:${v}`);
  }
  const b = tokenValue(brand);
  if (b) tokens.add(`brand:${b}`);
  for (const t of stringList(props.tags).slice(0, MAX_TAGS_PER_PRODUCT)) {
    const v = tokenValue(t);
    if (v) tokens.add(`tag:${v}`);
  }
  const band = price === null ? null : priceBand(price);
  if (band) tokens.add(`price:${band}`);
  return { productId, category, brand, price, tokens: [...tokens] };
}

function productInteraction(kind: InteractionKind, props: Record<string, unknown>): Interaction {
  return { kind, ...productOf(props), query: null };
}

function bare(kind: InteractionKind, extra: Partial<Interaction> = {}): Interaction {
  return { kind, productId: null, category: null, brand: null, price: null, query: null, tokens: [], ...extra };
}

function productsOf(props: Record<string, unknown>): Record<string, unknown>[] {
  const list = Array.isArray(props.products) ? props.products : [];
  return list
    .map(record)
    .filter((p): p is Record<string, unknown> => p !== null)
    .slice(0, MAX_PRODUCTS_PER_EVENT);
}

/**
 * The property objects whose product id `interpret` reads: the event's own for a page, a screen or a product event
 * (viewed, clicked, added, …), each of its `products` (the first MAX_PRODUCTS_PER_EVENT) for an order; none for any
 * other event, whose `id` (a comment's, an order's) names no product.
 */
function productRecords(event: CollectedEvent, props: Record<string, unknown>): Record<string, unknown>[] {
  if (event.type === "page" || event.type === "screen") return [props];
  if (event.type !== "track") return [];
  const kind = kindOfTrack(event.event);
  if (kind === null || kind === "search" || kind === "list_view" || kind === "cart_view" || kind === "checkout") {
    return [];
  }
  return kind === "purchase" ? productsOf(props) : [props];
}

/**
 * The first product id of the event that no catalogue can hold, among those `interpret` reads (productRecords):
 * a number JSON cannot carry exactly (past 2^53 it arrives rounded: another product's id, or a fraction), longer than
 * MAX_PRODUCT_ID_CHARS, holding a NUL (Postgres text cannot, and the catalogue refuses it), or an unpaired surrogate
 * (no UTF-8 form: stored, it would become U+FFFD and two ids one); null when there is none.
 */
export function unusableProductId(event: CollectedEvent): string | number | null {
  for (const p of productRecords(event, record(event.properties) ?? {})) {
    const sent = sentProductIdValue(p);
    if (typeof sent === "number" && !Number.isSafeInteger(sent)) return sent;
    const id = sentProductId(p);
    if (id !== null && (id.length > MAX_PRODUCT_ID_CHARS || id.includes("\u0000") || !isWellFormed(id))) return id;
  }
  return null;
}

/** The interactions one event stands for; [] for anything that is not e-commerce. */
export function interpret(event: CollectedEvent): Interaction[] {
  const props = record(event.properties) ?? {};
  if (event.type === "page" || event.type === "screen") {
    // A product page: the storefront put the product on the page call instead of (or besides) Product Viewed.
    const product = productOf(props);
    return product.productId ? [{ kind: "view", ...product, query: null }] : [];
  }
  if (event.type !== "track") return [];
  const kind = kindOfTrack(event.event);
  switch (kind) {
    case null:
      return [];
    case "search": {
      const query = normalizeQuery(props.query);
      return query ? [bare("search", { query })] : [];
    }
    case "list_view": {
      const category = scalarText(props.category)?.trim() || null;
      const v = tokenValue(category);
      return [bare("list_view", { category, tokens: v ? [`category:${v}`] : [] })];
    }
    case "cart_view":
    case "checkout":
      // The products were weighed when they were added; one marker keeps the timeline without flooding the ring.
      return [bare(kind)];
    case "purchase": {
      const products = productsOf(props).map((p) => productInteraction("purchase", p));
      return products.length > 0 ? products : [bare("purchase")];
    }
    default: {
      const interaction = productInteraction(kind, props);
      return interaction.productId || interaction.tokens.length > 0 ? [interaction] : [];
    }
  }
}

export interface RecentEffect {
  kind: RecentKind;
  op: "add" | "remove";
  value: string;
}

/** How an interaction changes the recent sets: viewed, carted (−removed, −purchased), purchased, wishlisted, searches. */
export function recentEffects(i: Interaction): RecentEffect[] {
  if (i.kind === "search") return i.query ? [{ kind: "search", op: "add", value: i.query }] : [];
  const id = i.productId;
  if (!id) return [];
  switch (i.kind) {
    case "view":
      return [{ kind: "viewed", op: "add", value: id }];
    case "add_to_cart":
      return [{ kind: "carted", op: "add", value: id }];
    case "remove_from_cart":
      return [{ kind: "carted", op: "remove", value: id }];
    case "wishlist":
      return [{ kind: "wishlisted", op: "add", value: id }];
    case "purchase":
      return [
        { kind: "purchased", op: "add", value: id },
        { kind: "carted", op: "remove", value: id },
      ];
    default:
      return [];
  }
}
