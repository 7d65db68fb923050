// Our methods, through the code the Worker deploys: the batch lists (eval/methods/batch.ts, docs/recommenders.md)
// alone; the session scoring alone (src/rank/core.ts `rank()` with only the session source: co-visitation
// neighbours of the session's recent items and its category affinity); and the full merged ranker (`rank()` with
// every source of the placement, the ranking config's weights).

import { BUY_AGAIN_REASON } from "../../src/publish/codec.ts";
import { CatalogueOrder, orderPredictive, type Product, product } from "../../src/rank/catalog.ts";
import { DEFAULT_RANKING_CONFIG, type RankingConfig } from "../../src/rank/config.ts";
import { type RankInput, rank, type Scored, type SessionSignals } from "../../src/rank/core.ts";
import { HALF_LIFE_MS, priceBand } from "../../src/session/weights.ts";
import type { EventType, ItemInfo, SessionEvent } from "../data.ts";
import { listScores, type Method, type Query, type TrainData } from "../method.ts";
import {
  BATCH_DEFAULTS,
  type BatchModels,
  type BatchParams,
  computeModels,
  nextNeighbours,
  userCandidates,
  weightOf,
} from "./batch.ts";

/** How a query maps onto a ranking request (docs/relevance.md#our-methods). */
export interface RequestShape {
  /**
   * pdp: the session's latest item is the product being viewed (context) and the earlier ones are session seeds;
   * cart: every item of the session is in the cart (context); home: no context, the session's items are seeds.
   */
  placement: "pdp" | "cart" | "home";
  /** The event type the session's events count as in its signals (null: as the data says). */
  as: EventType | null;
}

export const DEFAULT_SHAPE: RequestShape = { placement: "pdp", as: null };

/** Lists computed once per training set, shared by the three methods. */
export class LastmileModels {
  readonly params: BatchParams;
  models: BatchModels | null = null;
  next: ReadonlyMap<string, readonly Scored[]> = new Map();
  asOf = 0;
  /**
   * The items seen in training (the protocols' universe) in the catalogue's order; null when the next-items lists
   * say it predicts nothing (orderPredictive, as the publisher measures it).
   */
  order: CatalogueOrder | null = null;
  #catalog: ReadonlyMap<string, ItemInfo> = new Map();
  #products = new Map<string, Product>();
  #fitted: TrainData | null = null;
  #users = new Map<string, Array<{ productId: string; score: number }>>();
  /** Lists computed elsewhere (the SQL recommenders: eval/sql.ts), with the user candidates by user id. */
  #preset: { models: BatchModels; candidates: Map<string, Array<{ productId: string; score: number }>> } | null = null;

  constructor(params: BatchParams = BATCH_DEFAULTS) {
    this.params = params;
  }

  /** Use these lists for the next fit instead of computing them. */
  preset(models: BatchModels, candidates: Map<string, Array<{ productId: string; score: number }>>): void {
    this.#preset = { models, candidates };
    this.#fitted = null;
  }

  fit(train: TrainData): void {
    if (this.#fitted === train) return;
    this.#fitted = train;
    this.#catalog = train.catalog;
    this.#products = new Map();
    this.#users = new Map(this.#preset?.candidates ?? []);
    this.asOf = train.asOf;
    this.models =
      this.#preset?.models ?? computeModels(train.sessions, train.asOf, this.params, (id) => this.product(id).category);
    this.next = this.#preset?.models.next ?? nextNeighbours(train);
    const order = new CatalogueOrder(train.sessions.flatMap((s) => s.events.map((e) => e.item)));
    this.order = orderPredictive(order.measure(this.next)) ? order : null;
  }

  /** Every product is visible and in stock: the data sets have no stock; categories and prices when known. */
  product(id: string): Product {
    let p = this.#products.get(id);
    if (!p) {
      const info = this.#catalog.get(id);
      p = product(id, {
        category: info?.category ?? null,
        price: info?.price ?? null,
        inStock: true,
        visible: true,
        title: info?.title ?? "",
      });
      this.#products.set(id, p);
    }
    return p;
  }

  /** The user's batch list as the batch run at asOf would have written it (memoised per user). */
  candidates(q: Query): Array<{ productId: string; score: number }> | null {
    if (!q.user || !this.models) return null;
    let list = this.#users.get(q.user);
    if (!list && this.#preset) return null;
    if (!list) {
      list = userCandidates(
        q.history,
        this.asOf,
        this.models,
        this.params.userCandidates,
        (id) => this.product(id).category,
      );
      this.#users.set(q.user, list);
    }
    return list.length > 0 ? list : null;
  }
}

/** Token → decayed score over events, `prefix` values scaled to the best = 1 (like src/rank/signals.ts). */
function affinities(
  events: readonly SessionEvent[],
  now: number,
  halfLifeMs: number,
  tokenOf: (e: SessionEvent) => string | null,
): Map<string, number> {
  const raw = new Map<string, number>();
  for (const e of events) {
    const token = tokenOf(e);
    const w = weightOf(e);
    if (!token || w <= 0) continue;
    const decay = 0.5 ** (Math.max(0, now - e.time) / (halfLifeMs / 1000));
    raw.set(token, (raw.get(token) ?? 0) + w * decay);
  }
  let max = 0;
  for (const v of raw.values()) if (v > max) max = v;
  const out = new Map<string, number>();
  if (max <= 0) return out;
  for (const [k, v] of [...raw].sort((a, b) => b[1] - a[1])) out.set(k, v / max);
  return out;
}

const newestFirst = (events: readonly SessionEvent[], type: EventType): string[] => {
  const out: string[] = [];
  const seen = new Set<string>();
  for (let i = events.length - 1; i >= 0; i--) {
    const e = events[i] as SessionEvent;
    if (e.type === type && !seen.has(e.item)) {
      seen.add(e.item);
      out.push(e.item);
    }
  }
  return out;
};

/**
 * The session signals the Worker would derive from the SessionState snapshot of these events: recent lists,
 * session category affinity (30-minute half-life), long-term affinity from the customer's history (30 days),
 * price bands (half of each horizon).
 */
export function signalsOf(
  events: readonly SessionEvent[],
  history: readonly SessionEvent[],
  now: number,
  productOf: (id: string) => Product,
): SessionSignals {
  const category = (e: SessionEvent) => productOf(e.item).category;
  const band = (e: SessionEvent) => {
    const price = productOf(e.item).price;
    return price === null ? null : priceBand(price);
  };
  const bands = new Map<string, number>();
  for (const [b, v] of affinities(history, now, HALF_LIFE_MS.longTerm, band)) bands.set(b, 0.5 * v);
  for (const [b, v] of affinities(events, now, HALF_LIFE_MS.session, band)) bands.set(b, (bands.get(b) ?? 0) + 0.5 * v);
  return {
    viewed: newestFirst(events, "view"),
    carted: newestFirst(events, "cart"),
    purchased: newestFirst(events, "purchase"),
    searches: [],
    sessionCategories: affinities(events, now, HALF_LIFE_MS.session, category),
    longTermCategories: affinities(history, now, HALF_LIFE_MS.longTerm, category),
    priceBands: bands,
    active: events.length > 0,
  };
}

/** A user's batch list as the Worker reads it (src/rank/online-store.ts): candidates, and the buy-again entries. */
export function splitUserList(
  list: ReadonlyArray<{ productId: string; score: number; reason?: string | null }> | null,
): {
  batch: Array<{ productId: string; score: number }> | null;
  buyAgain: Scored[] | null;
} {
  if (!list) return { batch: null, buyAgain: null };
  const batch: Array<{ productId: string; score: number }> = [];
  const buyAgain: Scored[] = [];
  for (const c of list) {
    if (c.reason === BUY_AGAIN_REASON) buyAgain.push([c.productId, c.score]);
    else batch.push({ productId: c.productId, score: c.score });
  }
  return { batch: batch.length > 0 ? batch : null, buyAgain: buyAgain.length > 0 ? buyAgain : null };
}

const EMPTY: ReadonlyMap<string, readonly Scored[]> = new Map();

/** The full merged ranker (and, with `sources`, any subset of its candidate sources). */
export class LastmileRanker implements Method {
  readonly name: string;
  readonly shared: LastmileModels;
  config: RankingConfig;
  shape: RequestShape;
  readonly #sources: RankingConfig["placements"][string]["sources"] | null;

  constructor(
    shared: LastmileModels,
    options: {
      name?: string;
      config?: RankingConfig;
      shape?: RequestShape;
      sources?: RankingConfig["placements"][string]["sources"];
    } = {},
  ) {
    this.shared = shared;
    this.name = options.name ?? "lastmile";
    this.config = options.config ?? DEFAULT_RANKING_CONFIG;
    this.shape = options.shape ?? DEFAULT_SHAPE;
    this.#sources = options.sources ?? null;
  }

  fit(train: TrainData): void {
    this.shared.fit(train);
  }

  /** The ranking request this query makes. */
  input(q: Query, k: number): { input: RankInput; config: RankingConfig } {
    const m = this.shared.models;
    if (!m) throw new Error("fit() first");
    const as = this.shape.as;
    const events = as ? q.events.map((e) => ({ ...e, type: as })) : q.events;
    const last = events[events.length - 1];
    const context =
      this.shape.placement === "pdp" && last
        ? [last.item]
        : this.shape.placement === "cart"
          ? [...new Set(events.map((e) => e.item))]
          : [];
    let config = this.config;
    const placement = config.placements[this.shape.placement];
    if (!placement) throw new Error(`no placement ${this.shape.placement} in the ranking config`);
    if (this.#sources) {
      const only = this.#sources;
      config = {
        ...config,
        placements: {
          ...config.placements,
          [this.shape.placement]: { ...placement, sources: placement.sources.filter((s) => only.includes(s)) },
        },
      };
    }
    const sources = new Set(config.placements[this.shape.placement]?.sources ?? []);
    const session = signalsOf(events, q.history, q.now, (id) => this.shared.product(id));
    const userList = splitUserList(this.shared.candidates(q));
    const input: RankInput = {
      placement: this.shape.placement,
      mode: "recommend",
      limit: k,
      now: q.now * 1000,
      context,
      query: null,
      filters: {},
      session,
      batch: sources.has("batch") ? userList.batch : null,
      similar: sources.has("context") || sources.has("session") ? m.similar : EMPTY,
      boughtTogether: sources.has("context") || sources.has("session") ? m.boughtTogether : EMPTY,
      next: sources.has("context") || sources.has("session") ? this.shared.next : EMPTY,
      buyAgain: sources.has("buy_again") ? userList.buyAgain : null,
      trending: sources.has("trending") ? m.trending : null,
      popular: sources.has("popular") ? m.popular : null,
      popularByCategory: (c) => m.popularByCategory.get(c),
      catalog: (id) => this.shared.product(id),
      catalogueOrder: sources.has("context") ? this.shared.order : null,
    };
    return { input, config };
  }

  score(q: Query, k: number): Map<string, number> {
    const { input, config } = this.input(q, k);
    return listScores(rank(input, config).items.map((i) => i.productId));
  }
}

/**
 * The batch lists alone: with a session, the neighbours (similar, bought together and next items, each list scaled
 * to its best = 1, summed) of its latest item — what the Worker's context source reads; without one, the user's
 * published list: its candidates and its buy-again entries, each part scaled to its best = 1.
 */
export class LastmileBatch implements Method {
  readonly name = "lastmile-batch";
  readonly shared: LastmileModels;
  constructor(shared: LastmileModels) {
    this.shared = shared;
  }
  fit(train: TrainData): void {
    this.shared.fit(train);
  }
  score(q: Query): Map<string, number> {
    const m = this.shared.models;
    const out = new Map<string, number>();
    const last = q.events[q.events.length - 1];
    if (!m) return out;
    const add = (list: readonly Scored[], skip: string | null) => {
      let best = 0;
      for (const [, s] of list) if (s > best) best = s;
      if (best > 0) for (const [id, s] of list) if (id !== skip) out.set(id, (out.get(id) ?? 0) + s / best);
    };
    if (!last) {
      const { batch, buyAgain } = splitUserList(this.shared.candidates(q));
      add(
        (batch ?? []).map((c) => [c.productId, c.score] as const),
        null,
      );
      add(buyAgain ?? [], null);
      return out;
    }
    for (const lists of [m.similar, m.boughtTogether, this.shared.next]) add(lists.get(last.item) ?? [], last.item);
    return out;
  }
}
