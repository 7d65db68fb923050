// The ranking path's view of the catalogue: what the rules and features need of a product, with its category,
// tags and title terms normalised once (per decoded shard, per isolate) instead of once per request.
import { type CatalogOrderStat, type CatalogShardValue, catalogItem } from "../publish/codec.ts";
import { tokenValue } from "../session/ecommerce.ts";
import { priceBand } from "../session/weights.ts";

export interface Product {
  id: string;
  /** Normalised like the session's `category:<c>` tokens (null: none). */
  category: string | null;
  price: number | null;
  /** `price:<band>` token value (null: no price). */
  band: string | null;
  inStock: boolean;
  visible: boolean;
  title: string;
  /** Lower-case words of title, category, brand and tags: what a query matches against. */
  terms: string[];
  /** The same words as one string, each preceded by a space (" white heart … "): a word prefix is one substring test. */
  text: string;
  /** Normalised tags. */
  tags: string[];
}

export type CatalogLookup = (id: string) => Product | undefined;

/** Lower-case words of at least two characters (letters and digits of any script). */
export function terms(text: string): string[] {
  const out: string[] = [];
  for (const w of text.toLowerCase().split(/[^\p{L}\p{N}]+/u)) if (w.length >= 2) out.push(w);
  return out;
}

export function product(
  id: string,
  fields: {
    category: string | null;
    price: number | null;
    inStock: boolean;
    visible: boolean;
    title?: string;
    brand?: string | null;
    tags?: string[];
  },
): Product {
  const category = tokenValue(fields.category);
  const tags = (fields.tags ?? []).map((t) => tokenValue(t)).filter((t): t is string => t !== null);
  const words = new Set([
    ...terms(fields.title ?? ""),
    ...terms(category ?? ""),
    ...terms(fields.brand ?? ""),
    ...tags.flatMap(terms),
  ]);
  return {
    id,
    category,
    price: fields.price,
    band: fields.price === null ? null : priceBand(fields.price),
    inStock: fields.inStock,
    visible: fields.visible,
    title: fields.title ?? "",
    terms: [...words],
    text: ` ${[...words].join(" ")}`,
    tags,
  };
}

/** Every product of a decoded catalogue shard. */
export function shardProducts(shard: CatalogShardValue): Map<string, Product> {
  const out = new Map<string, Product>();
  for (const id of Object.keys(shard.items)) {
    const item = catalogItem(shard, id);
    if (item) out.set(id, product(id, item));
  }
  return out;
}

const byCodeUnits = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

/** How far on either side of a context product the adjacency source looks (docs/relevance.md#tuning). */
export const ADJACENT_SPAN = 12;
/** The order is used when its share of near neighbours is at least this many times chance … */
export const ORDER_MIN_LIFT = 5;
/** … measured on at least this many neighbour pairs … */
export const ORDER_MIN_PAIRS = 100;
/** … among each product's this many best "next items" neighbours. */
export const ORDER_TOP_NEIGHBOURS = 10;

/**
 * The share of near neighbours over the share a random order would give (2 · span places out of products − 1).
 * 1 for ids that carry no order; 55 for the UCI store's stock codes.
 */
export function orderLift(s: CatalogOrderStat): number {
  if (s.pairs <= 0 || s.products < 2) return 0;
  const chance = Math.min(1, (2 * s.span) / (s.products - 1));
  return s.near / s.pairs / chance;
}

/** Whether the catalogue's order predicts what shoppers go on to, by the batch's measure (null: unknown → no). */
export function orderPredictive(s: CatalogOrderStat | null | undefined): boolean {
  return s != null && s.pairs >= ORDER_MIN_PAIRS && orderLift(s) >= ORDER_MIN_LIFT;
}

/**
 * Product ids in the catalogue's order: sorted by code units. Where ids are SKU-style codes, that order groups a
 * product family (the UCI store's 22697, 22698 and 22699 are one tea cup in three colours), and a product's
 * neighbours in it are what a buyer ordering from the catalogue sees next to it. The adjacency feature reads them
 * (docs/ranking.md#features) where the publish found the order predictive (`orderPredictive`).
 */
export class CatalogueOrder {
  readonly #ids: string[];

  constructor(ids: Iterable<string>) {
    this.#ids = [...new Set(ids)].sort(byCodeUnits);
  }

  get size(): number {
    return this.#ids.length;
  }

  /**
   * The products within `span` places of `id` on either side with their distance in places, nearest first (at
   * equal distance the earlier one first); none when `id` is not in the catalogue.
   */
  near(id: string, span: number): Array<readonly [id: string, distance: number]> {
    const ids = this.#ids;
    const lo = this.#index(id);
    if (lo < 0) return [];
    const out: Array<readonly [string, number]> = [];
    for (let d = 1; d <= span; d++) {
      if (lo - d >= 0) out.push([ids[lo - d] as string, d]);
      if (lo + d < ids.length) out.push([ids[lo + d] as string, d]);
    }
    return out;
  }

  /**
   * The measure of `orderPredictive` over neighbour lists (best first): of each product's first `top` neighbours,
   * how many lie within `span` places of it. The publisher measures the same in SQL (src/publish/sources.ts).
   */
  measure(
    lists: ReadonlyMap<string, ReadonlyArray<readonly [string, number]>>,
    top = ORDER_TOP_NEIGHBOURS,
    span = ADJACENT_SPAN,
  ): CatalogOrderStat {
    let pairs = 0;
    let near = 0;
    for (const [id, list] of lists) {
      const at = this.#index(id);
      if (at < 0) continue;
      for (const [n] of list.slice(0, top)) {
        const place = n === id ? -1 : this.#index(n);
        if (place < 0) continue;
        pairs++;
        if (Math.abs(place - at) <= span) near++;
      }
    }
    return { pairs, near, products: this.size, span };
  }

  /** The place of `id`, or −1. */
  #index(id: string): number {
    const ids = this.#ids;
    let lo = 0;
    let hi = ids.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if ((ids[mid] as string) < id) lo = mid + 1;
      else hi = mid;
    }
    return ids[lo] === id ? lo : -1;
  }
}
