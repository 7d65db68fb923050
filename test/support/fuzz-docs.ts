// Documents and requests for the property-based tests (test/unit/fuzz-*.test.ts, test/workers/fuzz-*.test.ts): valid
// ranking configs and experiments documents, and documents whose every part may be valid, wrong-typed or hostile;
// catalogue items and ranking parameters likewise.
import fc from "fast-check";
import { EXPERIMENT_LIMITS } from "../../src/experiments/config.ts";
import { CANDIDATE_SOURCES, EXCLUSIONS, FEATURES, MAX_RULE_AMOUNT } from "../../src/rank/config.ts";
import { MAX_FILTER_VALUES, MAX_RERANK_CANDIDATES } from "../../src/rank/request.ts";
import {
  boundedString,
  compactJson,
  HOSTILE_KEYS,
  hostileJson,
  hostileKey,
  hostileNumber,
  hostileString,
  hostileValue,
  objectWith,
} from "./fuzz.ts";

const weight = fc.double({ min: -100, max: 100, noNaN: true });
export const weights = fc.dictionary(fc.constantFrom(...FEATURES), weight, { maxKeys: 5 });
export const placementName = fc.oneof(
  fc.stringMatching(/^[a-z][a-z0-9_]{0,31}$/),
  fc.constantFrom("constructor", "home"),
);
const placement = fc.record(
  {
    sources: fc.subarray([...CANDIDATE_SOURCES]),
    exclude: fc.subarray([...EXCLUSIONS]),
    defaultLimit: fc.integer({ min: 1, max: 50 }),
    weights,
  },
  { requiredKeys: [] },
);
const isoTime = fc
  .integer({ min: Date.UTC(2020, 0, 1), max: Date.UTC(2030, 0, 1) })
  .map((ms) => new Date(ms).toISOString());
const rule = fc.oneof(
  fc.record(
    {
      id: fc.string({ minLength: 1, maxLength: 100 }),
      action: fc.constantFrom("boost", "bury"),
      amount: fc.double({ min: 0.001, max: MAX_RULE_AMOUNT, noNaN: true }),
      productIds: fc.array(boundedString, { maxLength: 5 }),
      placements: fc.array(placementName, { maxLength: 3 }),
      from: isoTime,
      until: isoTime,
    },
    { requiredKeys: ["id", "action", "amount", "productIds"] },
  ),
  fc.record(
    {
      id: fc.string({ minLength: 1, maxLength: 100 }),
      action: fc.constant("pin"),
      slot: fc.integer({ min: 1, max: 100 }),
      productIds: fc.array(boundedString, { minLength: 1, maxLength: 3 }),
      categories: fc.array(boundedString, { maxLength: 3 }),
    },
    { requiredKeys: ["id", "action", "slot", "productIds"] },
  ),
);
export const validRankingConfig = fc.record(
  {
    weights,
    placements: fc.dictionary(placementName, placement, { maxKeys: 4 }),
    diversity: fc.record({ maxPerCategory: fc.integer({ min: 1, max: 100 }) }),
    seeds: fc.record(
      {
        viewed: fc.integer({ min: 0, max: 20 }),
        carted: fc.integer({ min: 0, max: 20 }),
        purchased: fc.integer({ min: 0, max: 20 }),
        recencyHalfLife: fc.integer({ min: 0, max: 20 }),
      },
      { requiredKeys: [] },
    ),
    deadlines: fc.record(
      {
        session: fc.integer({ min: 1, max: 5000 }),
        kv: fc.integer({ min: 1, max: 5000 }),
        total: fc.integer({ min: 1, max: 5000 }),
      },
      { requiredKeys: [] },
    ),
    // Rule ids are unique in a valid document (the PUT refuses a second rule with one).
    rules: fc.uniqueArray(rule, { maxLength: 4, selector: (r) => r.id }),
    maxLimit: fc.integer({ min: 1, max: 200 }),
  },
  { requiredKeys: [] },
);

/** A document whose every part may be valid, wrong-typed or hostile. */
export const rankingConfigLike = objectWith({
  weights: fc.oneof(
    weights,
    fc.dictionary(hostileKey, fc.oneof(hostileNumber, hostileJson), { maxKeys: 4 }),
    hostileJson,
  ),
  placements: fc.oneof(
    fc.dictionary(
      fc.oneof(placementName, hostileKey),
      fc.oneof(
        placement,
        objectWith({
          sources: hostileJson,
          exclude: hostileJson,
          defaultLimit: fc.oneof(hostileNumber, hostileJson),
          weights: hostileJson,
        }),
      ),
      { maxKeys: 4 },
    ),
    hostileJson,
  ),
  diversity: fc.oneof(fc.record({ maxPerCategory: fc.oneof(hostileNumber, hostileJson) }), hostileJson),
  seeds: fc.oneof(fc.dictionary(hostileKey, hostileNumber), hostileJson),
  deadlines: fc.oneof(fc.dictionary(fc.constantFrom("session", "kv", "total"), hostileNumber), hostileJson),
  rules: fc.oneof(
    fc.array(
      fc.oneof(
        rule,
        objectWith({
          id: hostileJson,
          action: hostileJson,
          amount: hostileNumber,
          slot: hostileNumber,
          productIds: hostileJson,
          categories: hostileJson,
          from: hostileString,
          until: hostileJson,
        }),
      ),
      { maxLength: 4 },
    ),
    hostileJson,
  ),
  maxLimit: fc.oneof(hostileNumber, hostileJson),
});

const armId = fc.stringMatching(/^[a-z0-9][a-z0-9_-]{0,63}$/).filter((id) => id !== "holdout" && id !== "interleaved");
const ranker = fc.oneof(
  fc.constant({ kind: "popular" }),
  fc.record(
    {
      kind: fc.constant("ranker"),
      weights,
      sources: fc.uniqueArray(fc.constantFrom(...CANDIDATE_SOURCES), { minLength: 1 }),
    },
    { requiredKeys: ["kind"] },
  ),
);
const variant = fc.record(
  { id: armId, weight: fc.double({ min: 0.001, max: EXPERIMENT_LIMITS.maxWeight, noNaN: true }), ranker },
  { requiredKeys: ["id", "ranker"] },
);
const experiment = fc
  .record(
    {
      id: armId,
      placement: placementName,
      description: fc.string({ maxLength: 500 }),
      holdout: fc.double({ min: 0, max: EXPERIMENT_LIMITS.maxHoldout, noNaN: true }),
      mode: fc.constantFrom("split", "interleave"),
      variants: fc.uniqueArray(variant, { selector: (v) => v.id, minLength: 2, maxLength: EXPERIMENT_LIMITS.variants }),
    },
    { requiredKeys: ["id", "placement", "variants"] },
  )
  .map((e) =>
    // Interleaving compares exactly two variants of equal weight.
    e.mode === "interleave" ? { ...e, variants: e.variants.slice(0, 2).map(({ weight: _, ...v }) => v) } : e,
  );
/** One experiment per placement and id: no windows can overlap. */
export const validExperiments = fc.record({
  experiments: fc
    .uniqueArray(experiment, {
      selector: (e) => e.placement,
      maxLength: EXPERIMENT_LIMITS.experiments,
    })
    .filter((list) => new Set(list.map((e) => e.id)).size === list.length),
});

const experimentLike = objectWith({
  id: fc.oneof(armId, hostileJson),
  placement: fc.oneof(placementName, hostileJson),
  description: fc.oneof(hostileString, hostileJson),
  start: fc.oneof(isoTime, hostileString, hostileJson),
  end: fc.oneof(isoTime, hostileString),
  holdout: fc.oneof(hostileNumber, hostileJson),
  mode: fc.oneof(fc.constantFrom("split", "interleave"), hostileJson),
  variants: fc.oneof(
    fc.array(
      fc.oneof(
        variant,
        objectWith({
          id: fc.oneof(armId, hostileJson),
          weight: hostileNumber,
          ranker: fc.oneof(ranker, objectWith({ kind: hostileJson, weights: hostileJson, sources: hostileJson })),
        }),
      ),
      { maxLength: 4 },
    ),
    hostileJson,
  ),
});
export const experimentsLike = objectWith({
  experiments: fc.oneof(fc.array(fc.oneof(experiment, experimentLike), { maxLength: 5 }), hostileJson),
});

/** A catalogue item whose every field may be valid, wrong-typed or hostile, plus hostile extra keys. */
export const catalogItem = objectWith({
  id: fc.oneof(boundedString, hostileJson),
  product_id: fc.oneof(boundedString, hostileJson),
  title: fc.oneof(boundedString, hostileString, hostileJson),
  category: fc.oneof(boundedString, hostileJson),
  brand: fc.oneof(boundedString, hostileJson),
  tags: fc.oneof(fc.array(boundedString, { maxLength: 40 }), hostileString, hostileJson),
  price: fc.oneof(hostileNumber, boundedString, hostileJson),
  currency: fc.oneof(fc.constantFrom("GBP", "eur", "EURO", "€"), hostileJson),
  in_stock: fc.oneof(fc.constantFrom(true, false, "yes", "no", "1", 0, 2), hostileJson),
  visible: hostileJson,
  attributes: fc.oneof(
    compactJson,
    hostileString,
    compactJson.map((v) => JSON.stringify(v) ?? ""),
  ),
});

// ---- ranking parameters ----

const placementParam = fc.oneof(
  fc.constantFrom("home", "pdp", "cart", "post_purchase", ...HOSTILE_KEYS),
  hostileString,
);
export const numberLike = fc.oneof(
  hostileNumber,
  fc.integer({ min: -5, max: 1200 }),
  fc.integer({ min: 1, max: 60 }).map(String),
  fc.constantFrom("1e3", "0x10", " 7 ", "1.5", "-0", "Infinity", "NaN", ""),
  boundedString,
);
const stringList = fc.oneof(
  boundedString,
  fc.array(boundedString, { maxLength: MAX_FILTER_VALUES + 3 }),
  fc.array(hostileJson, { maxLength: 4 }),
);
const candidate = fc.oneof(
  boundedString,
  fc.record({ productId: fc.oneof(boundedString, hostileJson), score: fc.oneof(numberLike, hostileJson) }),
  hostileJson,
);

/** Parameters as a JSON body or an RPC argument carries them: every field valid, wrong or hostile. */
export const rankParams = objectWith({
  userId: fc.oneof(boundedString, hostileValue),
  anonymousId: fc.oneof(boundedString, hostileValue),
  placement: fc.oneof(placementParam, hostileValue),
  productId: fc.oneof(boundedString, hostileValue),
  limit: fc.oneof(numberLike, hostileValue),
  category: fc.oneof(stringList, hostileValue),
  tags: fc.oneof(stringList, hostileValue),
  minPrice: numberLike,
  maxPrice: numberLike,
  country: fc.oneof(fc.constantFrom("GB", "us", "DEU", "1A", ""), hostileValue),
  query: fc.oneof(hostileString, hostileValue),
  candidates: fc.oneof(
    fc.array(candidate, { maxLength: 20 }),
    fc.array(fc.constant("p"), { minLength: MAX_RERANK_CANDIDATES - 1, maxLength: MAX_RERANK_CANDIDATES + 2 }),
    hostileValue,
  ),
  explain: fc.oneof(fc.constantFrom(true, false, "true", "false", "1", "0", "yes"), hostileValue),
  whyNot: fc.oneof(boundedString, hostileValue),
});

/** Parameters as a query string carries them: every value a string. */
export const rankQuery = fc.dictionary(
  fc.oneof(
    fc.constantFrom("userId", "anonymousId", "placement", "productId", "limit", "category", "tags"),
    fc.constantFrom("minPrice", "maxPrice", "country", "query", "explain", "whyNot", ...HOSTILE_KEYS),
  ),
  fc.oneof(hostileString, numberLike.map(String)),
  { maxKeys: 8 },
);
