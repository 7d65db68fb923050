// The ranking core: pure functions, no I/O, no clock. The Worker, the offline evaluation and the benchmarks call
// the same `rank()`. Inputs are whatever the sources answered (any of them may be missing); the output is the
// ordered list with scores, reason codes, and on request each item's feature contributions and a why-not trace.
// docs/ranking.md describes candidates, features, rules and the fallback chain.

import { parseIsoTime } from "../iso-time.ts";
import { tokenValue } from "../session/ecommerce.ts";
import { ADJACENT_SPAN, type CatalogLookup, type CatalogueOrder, type Product, terms } from "./catalog.ts";
import {
  CANDIDATE_SOURCES,
  type CandidateSource,
  type Exclusion,
  FEATURES,
  type Feature,
  type MerchandisingRule,
  type PlacementConfig,
  placementWeights,
  type RankingConfig,
} from "./config.ts";

/** [productId, score]: a neighbour list, a popular or trending list, best first. */
export type Scored = readonly [productId: string, score: number];

/** What the ranking needs of a session snapshot (signals.ts derives it). */
export interface SessionSignals {
  /** Newest first. */
  viewed: string[];
  carted: string[];
  purchased: string[];
  /** Newest first; the first one is the visitor's current query when the session is active. */
  searches: string[];
  /** Category → score in [0, 1] (the best category is 1). */
  sessionCategories: Map<string, number>;
  longTermCategories: Map<string, number>;
  /** Price band → score in [0, 1]. */
  priceBands: Map<string, number>;
  active: boolean;
}

export interface Filters {
  categories?: string[];
  minPrice?: number;
  maxPrice?: number;
  tags?: string[];
}

export interface RankInput {
  /** "similar" and "rerank" are the modes of /v1/similar and /v1/rank; others name a configured placement. */
  placement: string;
  mode: "recommend" | "similar" | "rerank";
  limit: number;
  /** Epoch ms: when merchandising rules are active. */
  now: number;
  /** The product being viewed (pdp, similar) or the context items (cart, post-purchase). */
  context: string[];
  query: string | null;
  filters: Filters;
  session: SessionSignals | null;
  /** The user's batch candidates (best first). */
  batch: ReadonlyArray<{ productId: string; score: number }> | null;
  /** Neighbour lists by seed product. */
  similar: ReadonlyMap<string, readonly Scored[]>;
  boughtTogether: ReadonlyMap<string, readonly Scored[]>;
  /** "Next items" neighbour lists by seed product: what visitors went on to after it (sequential rules). */
  next?: ReadonlyMap<string, readonly Scored[]>;
  /** The user's earlier purchases, best first (count and recency): the buy-again source. */
  buyAgain?: readonly Scored[] | null;
  /** Live trending (best first). */
  trending: readonly Scored[] | null;
  /** Global popular, and popular per category (normalised category → list). */
  popular: readonly Scored[] | null;
  popularByCategory: (category: string) => readonly Scored[] | undefined;
  /** rerank: the caller's candidates, in the caller's order, with optional base scores. */
  candidates?: ReadonlyArray<{ productId: string; score?: number }>;
  catalog: CatalogLookup;
  /** The catalogue's order: the adjacency source reads the context products' neighbours in it (absent: none). */
  catalogueOrder?: CatalogueOrder | null;
  /** Every catalogue product, in a stable order: the last-resort fill (absent: no fill). */
  catalogScan?: () => Iterable<Product>;
  /** No catalogue could be read: keep products it cannot check (flagged by the caller) rather than none. */
  trustUnknown?: boolean;
  explain?: boolean;
  /** A product to trace: why is it not in the answer (or where is it)? */
  whyNot?: string | null;
}

export interface RankedItem {
  productId: string;
  score: number;
  /** Reason codes, strongest first. */
  reasons: string[];
  /** explain only: weight × value per feature (non-zero ones), rule adjustments, and a catalogue fill's score. */
  contributions?: Partial<Record<Feature | "rules" | "fill", number>>;
  sources?: CandidateSource[];
}

export type WhyNot =
  | { productId: string; status: "shown"; position: number; score: number }
  /** An interleaved answer only (service.ts): the first variant showed it, the draft left it out. */
  | { productId: string; status: "interleaved_out" }
  | { productId: string; status: "not_candidate"; inCatalog: boolean }
  | { productId: string; status: "removed"; rule: string }
  | { productId: string; status: "below_cut"; position: number; score: number; cutScore: number; gap: number };

export interface RankOutput {
  items: RankedItem[];
  /** Candidates considered, and removed by each rule (counts). */
  stats: {
    candidates: number;
    removed: Record<string, number>;
    /** Candidates per source; `catalog`: added by the last-resort catalogue fill. */
    bySource: Partial<Record<CandidateSource | "catalog", number>>;
  };
  whyNot?: WhyNot;
}

/** A candidate carries its feature values as its own fields (one allocation per candidate). */
interface Candidate extends Record<Feature, number> {
  id: string;
  product: Product | undefined;
  /** Bit i set: proposed by CANDIDATE_SOURCES[i]. */
  sources: number;
  /** Feature → the reason code it earns (e.g. covisit → similar_to:<seed>). */
  contextWhy: string | null;
  covisitWhy: string | null;
  sequenceWhy: string | null;
  adjacentWhy: string | null;
  adjust: number;
  /** The merchandising rules that moved it (boosts and buries in config order, then its pin): its rule reasons. */
  rules: MerchandisingRule[] | null;
  score: number;
  /** Added by the catalogue fill (no source proposed it). */
  fill?: boolean;
}

const NO_LISTS: ReadonlyMap<string, readonly Scored[]> = new Map();
/**
 * The session's recent items as seeds of the "next items" lists, relative to a context item's weight 1: what
 * follows the product in view matters most; 0.15 was chosen on the validation split with the rank-aware neighbour
 * values below (0.1 with score/max values) (docs/relevance.md#tuning).
 */
export const SESSION_SEQUENCE_SHARE = 0.15;
/**
 * A neighbour's value in its seed's list: half its score over the list's best, half its rank, 1 / (1 + r / k) with r
 * the number of neighbours scored strictly higher. Score/max alone lets one dominant neighbour flatten the rest of
 * the list to near zero (heavy-tailed counts), so the list's order past its head was lost against weaker features;
 * the rank half keeps it. k = 5 on the validation split (docs/relevance.md#tuning).
 */
export const NEIGHBOUR_RANK_K = 5;
/**
 * The adjacency source: the products within ADJACENT_SPAN (catalog.ts) places of a context product in the
 * catalogue's order, each valued 1 / √distance (the best context product's value per candidate). Span and shape
 * were chosen on the validation split (docs/relevance.md#tuning).
 */
const adjacentValue = (distance: number): number => 1 / Math.sqrt(distance);

const SOURCE_BIT = Object.fromEntries(CANDIDATE_SOURCES.map((source, i) => [source, 1 << i])) as Record<
  CandidateSource,
  number
>;

const EMPTY_VALUES: ReadonlyMap<string, number> = new Map();

/**
 * Per-list values, computed once per list object. Lists are immutable (`readonly`), and the Worker keeps the ones it
 * read in the isolate (neighbour lists for 5 minutes, a visitor's batch list for 60 s, popular and trending lists
 * until they change; src/rank/online-store.ts) and hands the same objects to every request, so most calls find their
 * values here. Weak keys: a list the caller no longer holds goes with its values. The maps returned are shared and
 * never changed.
 */
function perList<L extends object>(
  compute: (list: L) => Map<string, number>,
): (list: L | null | undefined) => ReadonlyMap<string, number> {
  const cache = new WeakMap<L, ReadonlyMap<string, number>>();
  return (list) => {
    if (!list) return EMPTY_VALUES;
    let values = cache.get(list);
    if (values === undefined) {
      values = compute(list);
      cache.set(list, values);
    }
    return values;
  };
}

/** Each entry's score divided by the list's best (negative scores count as 0); the first entry of an id wins. */
function overBest<E>(list: readonly E[], id: (entry: E) => string, score: (entry: E) => number): Map<string, number> {
  const out = new Map<string, number>();
  let max = 0;
  for (const entry of list) {
    const s = score(entry);
    if (s > max) max = s;
  }
  for (const entry of list) {
    const key = id(entry);
    if (!out.has(key)) out.set(key, max > 0 ? Math.max(0, score(entry)) / max : 0);
  }
  return out;
}

/** A list's scores divided by its best one (lists arrive best first; any order works). */
const normalised = perList((list: readonly Scored[]) =>
  overBest(
    list,
    (e) => e[0],
    (e) => e[1],
  ),
);

/** As `normalised`, for a batch list ({ productId, score } entries). */
const normalisedBatch = perList((list: ReadonlyArray<{ productId: string; score: number }>) =>
  overBest(
    list,
    (e) => e.productId,
    (e) => e.score,
  ),
);

/** A seed's neighbour list as values in (0, 1]: ½ · score/max + ½ / (1 + r / NEIGHBOUR_RANK_K), r = rank (ties share it). */
const neighbourValues = perList((list: readonly Scored[]) => {
  const out = new Map<string, number>();
  if (list.length === 0) return out;
  const scores = list.map(([, s]) => Math.max(0, s)).sort((a, b) => b - a);
  const max = scores[0] as number;
  for (const [id, raw] of list) {
    if (out.has(id)) continue;
    const s = Math.max(0, raw);
    // r: how many neighbours score strictly higher (first index of s in the descending scores).
    let lo = 0;
    let hi = scores.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if ((scores[mid] as number) > s) lo = mid + 1;
      else hi = mid;
    }
    out.set(id, 0.5 * (max > 0 ? s / max : 0) + 0.5 / (1 + lo / NEIGHBOUR_RANK_K));
  }
  return out;
});

/** Weighted neighbours of several seeds: Σ w_seed · value_seed / Σ w_seed (neighbourValues), with the best seed per product. */
function blend(
  seeds: ReadonlyArray<{ id: string; weight: number }>,
  lists: ReadonlyArray<ReadonlyMap<string, readonly Scored[]>>,
  label: readonly string[],
): Map<string, { value: number; best: string; bestValue: number }> {
  const out = new Map<string, { value: number; best: string; bestValue: number }>();
  let total = 0;
  for (const s of seeds) total += s.weight;
  if (total <= 0) return out;
  for (const seed of seeds) {
    lists.forEach((byseed, k) => {
      const norm = neighbourValues(byseed.get(seed.id));
      if (norm.size === 0) return;
      const reason = `${label[k]}:${seed.id}`;
      for (const [id, v] of norm) {
        if (id === seed.id) continue;
        const part = (seed.weight * v) / total;
        const cur = out.get(id);
        if (!cur) out.set(id, { value: part, best: reason, bestValue: part });
        else {
          cur.value += part;
          if (part > cur.bestValue) {
            cur.best = reason;
            cur.bestValue = part;
          }
        }
      }
    });
  }
  for (const v of out.values()) v.value = Math.min(1, v.value);
  return out;
}

const uniq = (ids: readonly string[], without: ReadonlySet<string>, n: number): string[] => {
  const out: string[] = [];
  for (const id of ids) {
    if (out.length >= n) break;
    if (!without.has(id) && !out.includes(id)) out.push(id);
  }
  return out;
};

/** Whether a merchandising rule applies to this placement now. */
export function ruleActive(rule: MerchandisingRule, placement: string, now: number): boolean {
  if (rule.placements && !rule.placements.includes(placement)) return false;
  // The window as the config's validation reads it (a zone-less or impossible time never reaches here from KV; one
  // that does anyway keeps the rule off rather than guessing).
  if (rule.from !== undefined) {
    const from = parseIsoTime(rule.from);
    if (from === null || now < from) return false;
  }
  if (rule.until !== undefined) {
    const until = parseIsoTime(rule.until);
    if (until === null || now >= until) return false;
  }
  return true;
}

function ruleMatches(rule: MerchandisingRule, id: string, p: Product | undefined): boolean {
  if (rule.productIds?.includes(id)) return true;
  if (rule.categories && p?.category) {
    // Normalised as the catalogue's categories are (trimmed, lower-case, inner whitespace collapsed).
    for (const c of rule.categories) if (tokenValue(c) === p.category) return true;
  }
  return false;
}

/** How many query terms prefix-match one of the product's words (`text`: " word word …", needles " term"). */
function queryHits(queryNeedles: readonly string[], text: string): number {
  let hit = 0;
  for (const needle of queryNeedles) if (text.includes(needle)) hit++;
  return hit;
}

/** The score at the answer's precision (millionths): what order and ties are decided on. */
const scoreKey = (score: number): number => Math.round(score * 1e6);

const byScore = (a: Candidate, b: Candidate): number =>
  scoreKey(b.score) - scoreKey(a.score) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
const byId = (a: Candidate, b: Candidate): number => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);

/**
 * Sorts by score descending, ties by id — both decided on the score at the answer's precision (six decimals, as
 * `round` shows it), so items shown with equal scores are always in id order. Each candidate's rounded score and
 * position are packed into one integer-valued double and sorted natively as a Float64Array (no comparator calls);
 * runs of equal scores (rare) are then put in id order. Scores too large to pack fall back to a comparator sort.
 */
function sortByScore(list: Candidate[]): void {
  const n = list.length;
  if (n < 2) return;
  let bits = 1;
  while (2 ** bits < n) bits++;
  const scale = 2 ** bits;
  const packed = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const v = -scoreKey((list[i] as Candidate).score) * scale + i;
    if (!Number.isSafeInteger(v)) {
      list.sort(byScore);
      return;
    }
    packed[i] = v;
  }
  packed.sort();
  const original = list.slice();
  for (let i = 0; i < n; i++) {
    const v = packed[i] as number;
    list[i] = original[((v % scale) + scale) % scale] as Candidate;
  }
  let i = 0;
  while (i < n) {
    const key = scoreKey((list[i] as Candidate).score);
    let j = i + 1;
    while (j < n && scoreKey((list[j] as Candidate).score) === key) j++;
    if (j - i > 1) {
      const run = list.slice(i, j).sort(byId);
      for (let k = 0; k < run.length; k++) list[i + k] = run[k] as Candidate;
    }
    i = j;
  }
}

const round = (x: number): number => Math.round(x * 1e6) / 1e6;

/** Why `c` may not be shown (null: eligible). Unknown products are kept only in rerank (the caller owns them). */
function removal(
  id: string,
  p: Product | undefined,
  input: RankInput,
  excluded: ReadonlyMap<string, Exclusion>,
): string | null {
  const hit = excluded.get(id);
  if (hit) return hit;
  if (!p) return input.mode === "rerank" || input.trustUnknown ? null : "unknown_product";
  if (!p.visible) return "hidden";
  if (!p.inStock) return "out_of_stock";
  const f = input.filters;
  if (f.categories && f.categories.length > 0 && !(p.category !== null && f.categories.includes(p.category)))
    return "filter:category";
  if (f.minPrice !== undefined && (p.price === null || p.price < f.minPrice)) return "filter:price";
  if (f.maxPrice !== undefined && (p.price === null || p.price > f.maxPrice)) return "filter:price";
  if (f.tags && f.tags.length > 0 && !f.tags.some((t) => p.tags.includes(t))) return "filter:tags";
  return null;
}

/** The placement's configuration, or a mode's built-in one. */
export function placementConfig(config: RankingConfig, input: Pick<RankInput, "placement" | "mode">): PlacementConfig {
  // Similar items leave out what the visitor has in the cart or bought; a re-rank answers exactly the caller's list
  // (a search for a product one owns must still find it), so it excludes nothing of the session's.
  if (input.mode === "similar") {
    return { sources: ["context", "popular"], exclude: ["viewing", "purchased", "carted"], defaultLimit: 10 };
  }
  if (input.mode === "rerank") return { sources: [], exclude: [], defaultLimit: 20 };
  const p = config.placements[input.placement];
  if (!p) throw new Error(`unknown placement ${input.placement}`);
  return p;
}

export function rank(input: RankInput, config: RankingConfig): RankOutput {
  const placement = placementConfig(config, input);
  const weights = placementWeights(config, placement);
  const session = input.session;
  const sources = new Set(placement.sources);
  const candidates = new Map<string, Candidate>();
  const bySource: Partial<Record<CandidateSource | "catalog", number>> = {};

  const add = (id: string, source: CandidateSource | null): Candidate => {
    let c = candidates.get(id);
    if (!c) {
      c = {
        id,
        product: input.catalog(id),
        sources: 0,
        batch: 0,
        context: 0,
        covisit: 0,
        sequence: 0,
        adjacent: 0,
        buyAgain: 0,
        content: 0,
        sessionAffinity: 0,
        longTermAffinity: 0,
        trending: 0,
        popularity: 0,
        query: 0,
        priceBand: 0,
        base: 0,
        contextWhy: null,
        covisitWhy: null,
        sequenceWhy: null,
        adjacentWhy: null,
        adjust: 0,
        rules: null,
        score: 0,
      };
      candidates.set(id, c);
    }
    if (source && (c.sources & SOURCE_BIT[source]) === 0) {
      c.sources |= SOURCE_BIT[source];
      bySource[source] = (bySource[source] ?? 0) + 1;
    }
    return c;
  };

  // ── exclusions ──
  const excluded = new Map<string, Exclusion>();
  const exclude = new Set(placement.exclude);
  if (session) {
    if (exclude.has("purchased")) for (const id of session.purchased) excluded.set(id, "purchased");
    if (exclude.has("carted")) for (const id of session.carted) if (!excluded.has(id)) excluded.set(id, "carted");
  }
  if (session && exclude.has("viewed"))
    for (const id of session.viewed.slice(0, config.seeds.viewed)) if (!excluded.has(id)) excluded.set(id, "viewed");
  if (exclude.has("viewing")) for (const id of input.context) excluded.set(id, "viewing");

  // ── seeds ──
  const contextSet = new Set(input.context);
  const halfLife = Math.max(0.5, config.seeds.recencyHalfLife);
  const recency = (i: number) => 0.5 ** (i / halfLife);
  const contextSeeds = input.context.map((id) => ({ id, weight: 1 }));
  const sessionSeeds = session
    ? [
        ...uniq(session.viewed, contextSet, config.seeds.viewed).map((id, i) => ({ id, weight: recency(i) })),
        ...uniq(session.carted, contextSet, config.seeds.carted).map((id, i) => ({ id, weight: 1.5 * recency(i) })),
      ]
    : [];

  // ── candidates, in fallback-chain order: context → session → batch → trending → popular ──
  const contextBlend = blend(contextSeeds, [input.similar, input.boughtTogether], ["similar_to", "bought_together"]);
  const covisit = blend(sessionSeeds, [input.similar, input.boughtTogether], ["similar_to", "bought_together"]);
  // What visitors went on to after the context items (weight 1) and, less, after the session's recent items.
  const next = input.next ?? NO_LISTS;
  const sequenceSeeds =
    next.size === 0
      ? []
      : [...contextSeeds, ...sessionSeeds.map((s) => ({ id: s.id, weight: SESSION_SEQUENCE_SHARE * s.weight }))];
  const sequence = blend(sequenceSeeds, [next], ["next_after"]);
  /** Products that follow a context item (the context source proposes them; the session source the others). */
  const afterContext = new Set<string>();
  for (const id of input.context) for (const [n] of next.get(id) ?? []) afterContext.add(n);
  // Neighbours of the context products in the catalogue's order.
  const adjacent = new Map<string, { value: number; best: string }>();
  const order = input.catalogueOrder;
  if (order && weights.adjacent !== 0)
    for (const seed of input.context)
      for (const [id, distance] of order.near(seed, ADJACENT_SPAN)) {
        const value = adjacentValue(distance);
        const cur = adjacent.get(id);
        if (!cur || value > cur.value) adjacent.set(id, { value, best: `catalogue_neighbour:${seed}` });
      }
  const buyAgainNorm = normalised(input.buyAgain);
  const batchNorm = normalisedBatch(input.batch);
  const trendNorm = normalised(input.trending);
  const popularNorm = normalised(input.popular);

  if (input.mode === "rerank") {
    const list = input.candidates ?? [];
    const n = list.length;
    let min = Number.POSITIVE_INFINITY;
    let max = Number.NEGATIVE_INFINITY;
    let scored = true;
    for (const c of list) {
      if (c.score === undefined) scored = false;
      else {
        if (c.score < min) min = c.score;
        if (c.score > max) max = c.score;
      }
    }
    // Halves: the difference of two finite doubles can overflow to Infinity (1e308 − −1e308), that of halves cannot.
    const range = max / 2 - min / 2;
    list.forEach((item, i) => {
      const c = add(item.productId, null);
      // Base: the caller's scores min-max scaled, or its order when it gave none.
      c.base = scored && range > 0 ? ((item.score ?? min) / 2 - min / 2) / range : scored ? 1 : n > 1 ? 1 - i / n : 1;
    });
  } else {
    if (sources.has("context")) {
      for (const id of contextBlend.keys()) add(id, "context");
      for (const id of adjacent.keys()) add(id, "context");
    }
    for (const id of sequence.keys()) {
      const source = afterContext.has(id) ? "context" : "session";
      if (sources.has(source)) add(id, source);
    }
    if (sources.has("session")) {
      for (const id of covisit.keys()) add(id, "session");
      // The visitor's strongest session categories bring their popular products.
      if (session) {
        let n = 0;
        for (const [category] of session.sessionCategories) {
          if (n++ >= 2) break;
          for (const [id] of input.popularByCategory(category) ?? []) add(id, "session");
        }
      }
    }
    if (sources.has("buy_again")) for (const id of buyAgainNorm.keys()) add(id, "buy_again");
    if (sources.has("batch")) for (const id of batchNorm.keys()) add(id, "batch");
    if (sources.has("trending")) for (const id of trendNorm.keys()) add(id, "trending");
    if (sources.has("popular")) {
      for (const category of input.filters.categories ?? [])
        for (const [id] of input.popularByCategory(category) ?? []) add(id, "popular");
      if (input.mode === "similar")
        for (const id of input.context) {
          const category = input.catalog(id)?.category;
          if (category) for (const [pid] of input.popularByCategory(category) ?? []) add(pid, "popular");
        }
      for (const id of popularNorm.keys()) add(id, "popular");
    }
  }

  // ── features ──
  const query = input.query ?? (session?.active ? (session.searches[0] ?? null) : null);
  const queryTerms = query ? terms(query) : [];
  /** " term": a word of the product's text starts with the term (see Product.text). */
  const queryNeedles = queryTerms.map((t) => ` ${t}`);
  const queryScale = input.query ? 1 : 0.5;
  // Content: how many of the context products' title words start one of the candidate's words.
  const contentNeedles: string[] = [];
  for (const id of input.context)
    for (const t of terms(input.catalog(id)?.title ?? ""))
      if (!contentNeedles.includes(` ${t}`)) contentNeedles.push(` ${t}`);
  // List features: each list is walked once and writes into the candidates it names (fewer lookups than asking
  // every list about every candidate when candidates are many, as in a 1,000-item rerank).
  for (const [id, v] of contextBlend) {
    const c = candidates.get(id);
    if (c) {
      c.context = v.value;
      c.contextWhy = v.best;
    }
  }
  for (const [id, v] of covisit) {
    const c = candidates.get(id);
    if (c) {
      c.covisit = v.value;
      c.covisitWhy = v.best;
    }
  }
  for (const [id, v] of sequence) {
    const c = candidates.get(id);
    if (c) {
      c.sequence = v.value;
      c.sequenceWhy = v.best;
    }
  }
  for (const [id, v] of adjacent) {
    const c = candidates.get(id);
    if (c) {
      c.adjacent = v.value;
      c.adjacentWhy = v.best;
    }
  }
  for (const [id, v] of buyAgainNorm) {
    const c = candidates.get(id);
    if (c) c.buyAgain = v;
  }
  for (const [id, v] of batchNorm) {
    const c = candidates.get(id);
    if (c) c.batch = v;
  }
  for (const [id, v] of trendNorm) {
    const c = candidates.get(id);
    if (c) c.trending = v;
  }
  for (const [id, v] of popularNorm) {
    const c = candidates.get(id);
    if (c) c.popularity = v;
  }
  for (const c of candidates.values()) {
    const f = c;
    const p = c.product;
    if (session && p?.category) {
      f.sessionAffinity = session.sessionCategories.get(p.category) ?? 0;
      f.longTermAffinity = session.longTermCategories.get(p.category) ?? 0;
    }
    if (session && p?.band) f.priceBand = session.priceBands.get(p.band) ?? 0;
    if (queryTerms.length > 0 && p) f.query = (queryScale * queryHits(queryNeedles, p.text)) / queryTerms.length;
    if (contentNeedles.length > 0 && p) f.content = queryHits(contentNeedles, p.text) / contentNeedles.length;
    c.score =
      weights.batch * f.batch +
      weights.context * f.context +
      weights.covisit * f.covisit +
      weights.sequence * f.sequence +
      weights.adjacent * f.adjacent +
      weights.buyAgain * f.buyAgain +
      weights.content * f.content +
      weights.sessionAffinity * f.sessionAffinity +
      weights.longTermAffinity * f.longTermAffinity +
      weights.trending * f.trending +
      weights.popularity * f.popularity +
      weights.query * f.query +
      weights.priceBand * f.priceBand +
      weights.base * f.base;
  }

  // ── merchandising: boost / bury ──
  // Rules are scoped by placement, or by mode for rerank / similar (their placement is a caller's label only).
  const scope = input.mode === "recommend" ? input.placement : input.mode;
  const rules = config.rules.filter((r) => ruleActive(r, scope, input.now));
  for (const rule of rules) {
    if (rule.action === "pin") continue;
    for (const c of candidates.values()) {
      if (!ruleMatches(rule, c.id, c.product)) continue;
      const delta = rule.action === "boost" ? (rule.amount ?? 0) : -(rule.amount ?? 0);
      c.adjust += delta;
      c.score += delta;
      c.rules ??= [];
      c.rules.push(rule);
    }
  }

  // ── rules: exclusions, stock, visibility, filters ──
  const removed: Record<string, number> = {};
  const removedWhy = new Map<string, string>();
  /** Counts a product out of the answer, and keeps the rule for its why-not trace. */
  const drop = (id: string, why: string): void => {
    removed[why] = (removed[why] ?? 0) + 1;
    removedWhy.set(id, why);
  };
  const eligible: Candidate[] = [];
  for (const c of candidates.values()) {
    const why = removal(c.id, c.product, input, excluded);
    if (why) drop(c.id, why);
    else eligible.push(c);
  }
  sortByScore(eligible);

  // ── last resort: when every source together leaves the list short, eligible catalogue products fill it (the
  //    first ones in the catalogue's order, after every scored candidate), so a list is never shorter than asked
  //    while enough exist
  if (input.mode !== "rerank" && input.catalogScan && eligible.length < input.limit) {
    // One score below every scored candidate (scores may be negative after a bury).
    const floor = Math.min(0, eligible[eligible.length - 1]?.score ?? 0) - 1;
    const fills: Candidate[] = [];
    for (const p of input.catalogScan()) {
      if (eligible.length + fills.length >= input.limit) break;
      if (candidates.has(p.id) || removal(p.id, p, input, excluded) !== null) continue;
      const c = add(p.id, null);
      c.fill = true;
      c.score = floor;
      fills.push(c);
    }
    // Equal scores: in id order, as every tie.
    fills.sort(byId);
    for (const c of fills) eligible.push(c);
    if (fills.length > 0) bySource.catalog = fills.length;
  }

  // ── pins: a pinned product takes its slot if it is eligible (it need not have been a candidate, except in a rerank,
  //    which answers only what the caller sent); each slot goes to the first rule (config order) that fills it ──
  const pins: Array<{ slot: number; c: Candidate }> = [];
  const pinned = new Set<string>();
  /** Products of rules whose slot an earlier rule took, which no source proposed. */
  const outpinned: string[] = [];
  for (const rule of rules) {
    // A slot past the answer's end is not in this answer: it must not take an organic item's room.
    if (rule.action !== "pin" || !rule.slot || rule.slot > input.limit) continue;
    for (const id of rule.productIds ?? []) {
      if (pinned.has(id)) continue;
      const existing = candidates.get(id);
      if (!existing && input.mode === "rerank") continue;
      const p = existing?.product ?? input.catalog(id);
      const why = removal(id, p, input, excluded);
      if (why !== null) {
        // A candidate's removal is already counted; a product only the rule names is counted here, once.
        if (!removedWhy.has(id)) drop(id, why);
        continue;
      }
      if (pins.some((pin) => pin.slot === rule.slot)) {
        // A candidate keeps its place by score; a product only the rule names is out of the answer.
        if (!existing) outpinned.push(id);
        break;
      }
      const c = existing ?? add(id, null);
      c.rules ??= [];
      c.rules.push(rule);
      pins.push({ slot: rule.slot, c });
      pinned.add(id);
      break;
    }
  }
  for (const id of outpinned) if (!pinned.has(id) && !removedWhy.has(id)) drop(id, "pin_slot_taken");

  // ── diversity: at most maxPerCategory per category, filled from the deferred ones when too few remain ──
  const limit = input.limit;
  const cap = input.mode === "rerank" ? Number.POSITIVE_INFINITY : config.diversity.maxPerCategory;
  const room = Math.max(0, limit - pins.length);
  const { chosen, deferred, filled } = capPerCategory(
    pinned.size > 0 ? eligible.filter((c) => !pinned.has(c.id)) : eligible,
    room,
    cap,
    (c) => c.product?.category,
    pins.map(({ c }) => c.product?.category),
  );
  if (filled) chosen.sort(byScore);
  for (const { slot, c } of pins.sort((a, b) => a.slot - b.slot)) {
    chosen.splice(Math.min(slot - 1, chosen.length), 0, c);
  }
  const final = chosen.slice(0, limit);

  const items = final.map((c) => toItem(c, weights, input.explain === true));
  const output: RankOutput = { items, stats: { candidates: candidates.size, removed, bySource } };
  if (input.whyNot) {
    const capped = new Set(deferred.filter((c) => !final.includes(c)).map((c) => c.id));
    output.whyNot = whyNot(input.whyNot, final, eligible, removedWhy, capped, candidates, input);
  }
  return output;
}

/**
 * The first `room` of `order` with at most `cap` per category (`placed`: the categories of items already in the list,
 * counted against the cap); an item over the cap is deferred, and the deferred ones fill the list, in order, only when
 * too few others remain (`filled`). `deferred` holds every item passed over, whether it filled or not.
 */
export function capPerCategory<T>(
  order: readonly T[],
  room: number,
  cap: number,
  categoryOf: (item: T) => string | null | undefined,
  placed: ReadonlyArray<string | null | undefined>,
): { chosen: T[]; deferred: T[]; filled: boolean } {
  if (cap === Number.POSITIVE_INFINITY) return { chosen: order.slice(0, room), deferred: [], filled: false };
  const perCategory = new Map<string, number>();
  for (const k of placed) if (k) perCategory.set(k, (perCategory.get(k) ?? 0) + 1);
  const chosen: T[] = [];
  const deferred: T[] = [];
  for (const item of order) {
    if (chosen.length >= room) break;
    const k = categoryOf(item);
    const n = k ? (perCategory.get(k) ?? 0) : 0;
    if (k && n >= cap) {
      deferred.push(item);
      continue;
    }
    if (k) perCategory.set(k, n + 1);
    chosen.push(item);
  }
  let filled = false;
  for (const item of deferred) {
    if (chosen.length >= room) break;
    chosen.push(item);
    filled = true;
  }
  return { chosen, deferred, filled };
}

/** The reason code a feature earns (null: none). */
function reasonCode(c: Candidate, k: Feature): string | null {
  switch (k) {
    case "context":
      return c.contextWhy;
    case "covisit":
      return c.covisitWhy;
    case "sequence":
      return c.sequenceWhy;
    case "adjacent":
      return c.adjacentWhy;
    case "buyAgain":
      return "bought_before";
    case "content":
      return "similar_content";
    case "sessionAffinity":
      return c.product?.category ? `session_affinity:${c.product.category}` : null;
    case "longTermAffinity":
      return c.product?.category ? `long_term_affinity:${c.product.category}` : null;
    case "batch":
      return "batch";
    case "trending":
      return "trending";
    case "popularity":
      return c.sources === SOURCE_BIT.popular ? "popular_fallback" : "popular";
    case "query":
      return "query_match";
    case "priceBand":
      return "price_band";
    case "base":
      return "base_score";
  }
}

/** Inserts `code` with contribution `v` into the parallel arrays, kept in order: v descending, then code. */
function insertReason(codes: string[], values: number[], code: string | null, v: number): void {
  if (code === null || !(v > 0) || codes.includes(code)) return;
  let i = values.length;
  codes.push(code);
  values.push(v);
  while (i > 0) {
    const pv = values[i - 1] as number;
    const pc = codes[i - 1] as string;
    if (pv > v || (pv === v && pc < code)) break;
    values[i] = pv;
    codes[i] = pc;
    i--;
  }
  values[i] = v;
  codes[i] = code;
}

/** Reason codes, strongest contribution first (ties by code), a boost by its amount; a pin first, buries last. */
function reasonsOf(c: Candidate, w: Record<Feature, number>): string[] {
  const codes: string[] = [];
  const values: number[] = [];
  // Direct property reads in a fixed order (this runs once per answered item).
  if (c.batch > 0) insertReason(codes, values, "batch", w.batch * c.batch);
  if (c.context > 0) insertReason(codes, values, c.contextWhy, w.context * c.context);
  if (c.covisit > 0) insertReason(codes, values, c.covisitWhy, w.covisit * c.covisit);
  if (c.sequence > 0) insertReason(codes, values, c.sequenceWhy, w.sequence * c.sequence);
  if (c.adjacent > 0) insertReason(codes, values, c.adjacentWhy, w.adjacent * c.adjacent);
  if (c.buyAgain > 0) insertReason(codes, values, "bought_before", w.buyAgain * c.buyAgain);
  if (c.content > 0) insertReason(codes, values, "similar_content", w.content * c.content);
  if (c.sessionAffinity > 0) {
    insertReason(codes, values, reasonCode(c, "sessionAffinity"), w.sessionAffinity * c.sessionAffinity);
  }
  if (c.longTermAffinity > 0) {
    insertReason(codes, values, reasonCode(c, "longTermAffinity"), w.longTermAffinity * c.longTermAffinity);
  }
  if (c.trending > 0) insertReason(codes, values, "trending", w.trending * c.trending);
  if (c.popularity > 0) insertReason(codes, values, reasonCode(c, "popularity"), w.popularity * c.popularity);
  if (c.query > 0) insertReason(codes, values, "query_match", w.query * c.query);
  if (c.priceBand > 0) insertReason(codes, values, "price_band", w.priceBand * c.priceBand);
  if (c.base > 0) insertReason(codes, values, "base_score", w.base * c.base);
  const rules = c.rules;
  if (rules !== null) {
    for (const r of rules) if (r.action === "boost") insertReason(codes, values, `boosted:${r.id}`, r.amount ?? 0);
    for (const r of rules) if (r.action === "pin") codes.unshift(`pinned:${r.id}`);
    for (const r of rules) if (r.action === "bury" && !codes.includes(`buried:${r.id}`)) codes.push(`buried:${r.id}`);
  }
  if (codes.length === 0) {
    codes.push(c.fill ? "catalog_fill" : (c.sources & SOURCE_BIT.popular) !== 0 ? "popular_fallback" : "candidate");
  }
  return codes;
}

function toItem(c: Candidate, weights: Record<Feature, number>, explain: boolean): RankedItem {
  const item: RankedItem = { productId: c.id, score: round(c.score), reasons: reasonsOf(c, weights) };
  if (explain) {
    const contributions: Partial<Record<Feature | "rules" | "fill", number>> = {};
    for (const k of FEATURES) {
      const v = weights[k] * c[k];
      if (v !== 0) contributions[k] = round(v);
    }
    if (c.adjust !== 0) contributions.rules = round(c.adjust);
    // A fill has no feature value and no rule adjustment (it joins after both): its whole score is its place.
    if (c.fill) contributions.fill = round(c.score);
    item.contributions = contributions;
    item.sources = CANDIDATE_SOURCES.filter((source) => (c.sources & SOURCE_BIT[source]) !== 0);
  }
  return item;
}

function whyNot(
  id: string,
  final: readonly Candidate[],
  eligible: readonly Candidate[],
  removedWhy: ReadonlyMap<string, string>,
  capped: ReadonlySet<string>,
  candidates: ReadonlyMap<string, Candidate>,
  input: RankInput,
): WhyNot {
  const shown = final.findIndex((c) => c.id === id);
  if (shown >= 0)
    return { productId: id, status: "shown", position: shown + 1, score: round(final[shown]?.score ?? 0) };
  const rule = removedWhy.get(id);
  if (rule) return { productId: id, status: "removed", rule };
  if (!candidates.has(id))
    return { productId: id, status: "not_candidate", inCatalog: input.catalog(id) !== undefined };
  if (capped.has(id)) return { productId: id, status: "removed", rule: "diversity" };
  const position = eligible.findIndex((c) => c.id === id);
  const c = eligible[position];
  if (!c) return { productId: id, status: "not_candidate", inCatalog: input.catalog(id) !== undefined };
  // The cut is the last organically placed item's score: a pin holds its slot whatever its score.
  const organic = final.filter((x) => !x.rules?.some((r) => r.action === "pin"));
  const cutScore = organic[organic.length - 1]?.score ?? c.score;
  return {
    productId: id,
    status: "below_cut",
    position: position + 1,
    score: round(c.score),
    cutScore: round(cutScore),
    gap: round(cutScore - c.score),
  };
}
