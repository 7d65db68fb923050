// How much each kind of interaction says about a visitor's taste (affinity) and about what is popular right now
// (trending), and how fast that fades. The one place to tune them; docs/session.md explains the choices.

export const INTERACTION_KINDS = [
  "search",
  "list_view",
  "click",
  "view",
  "add_to_cart",
  "remove_from_cart",
  "wishlist",
  "cart_view",
  "checkout",
  "purchase",
] as const;
export type InteractionKind = (typeof INTERACTION_KINDS)[number];

/**
 * Added to every token of the interaction's product. A removal is weak negative evidence: it takes back half of
 * what the add gave (scores never go below 0). Cart views and checkouts repeat products already counted when
 * they were added; searches carry a query, not product tokens.
 */
export const AFFINITY_WEIGHTS: Readonly<Record<InteractionKind, number>> = {
  search: 0,
  list_view: 0.25,
  click: 1,
  view: 1,
  add_to_cart: 3,
  remove_from_cart: -1.5,
  wishlist: 2,
  cart_view: 0,
  checkout: 0,
  purchase: 5,
};

/**
 * Added to the product (and its category) in the global trending counters. A click usually precedes a view of
 * the same product, so it counts half; list views and removals say nothing about one product's popularity.
 */
export const TREND_WEIGHTS: Readonly<Record<InteractionKind, number>> = {
  search: 0,
  list_view: 0,
  click: 0.5,
  view: 1,
  add_to_cart: 3,
  remove_from_cart: 0,
  wishlist: 2,
  cart_view: 0,
  checkout: 0,
  purchase: 5,
};

export type Horizon = "session" | "longTerm";
export const HORIZONS: readonly Horizon[] = ["session", "longTerm"];

/** Half-lives: the session horizon follows the current visit, the long-term one a visitor's taste over months. */
export const HALF_LIFE_MS: Readonly<Record<Horizon, number>> = {
  session: 30 * 60 * 1000,
  longTerm: 30 * 24 * 60 * 60 * 1000,
};

/**
 * Price bands for `price:<band>` tokens, in the event's currency units (currency is not converted). Upper bounds
 * are exclusive; roughly ×2–2.5 steps, so a band is "the same price class" for most catalogues.
 */
export const PRICE_BANDS: readonly { label: string; below: number }[] = [
  { label: "0-10", below: 10 },
  { label: "10-25", below: 25 },
  { label: "25-50", below: 50 },
  { label: "50-100", below: 100 },
  { label: "100-250", below: 250 },
  { label: "250-500", below: 500 },
  { label: "500-1000", below: 1000 },
  { label: "1000+", below: Number.POSITIVE_INFINITY },
];

export function priceBand(price: number): string | null {
  if (!Number.isFinite(price) || price < 0) return null;
  for (const band of PRICE_BANDS) if (price < band.below) return band.label;
  return null;
}
