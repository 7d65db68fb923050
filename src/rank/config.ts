// The ranking configuration: feature weights, candidate sources and exclusions per placement, diversity, source
// deadlines and merchandising rules. One versioned JSON document (docs/ranking.md#configuration): the built-in
// DEFAULT_RANKING_CONFIG, replaced at run time by `PUT /v1/admin/ranking-config`, which stores a validated copy
// in KV under RANKING_CONFIG_KEY. Every answer names the config version it was ranked with.

import { parseIsoTime } from "../iso-time.ts";

/** The features of a candidate (docs/ranking.md#features); every value is in [0, 1]. */
export const FEATURES = [
  "batch",
  "context",
  "covisit",
  "sequence",
  "adjacent",
  "buyAgain",
  "content",
  "sessionAffinity",
  "longTermAffinity",
  "trending",
  "popularity",
  "query",
  "priceBand",
  "base",
] as const;
export type Feature = (typeof FEATURES)[number];
export type Weights = Record<Feature, number>;

/** What a placement may exclude at serve time. */
/**
 * purchased / carted: the session's purchased and cart items; viewing: the product the request is about;
 * viewed: the visitor's `seeds.viewed` most recently viewed products (they are the seeds, not the suggestions).
 */
export const EXCLUSIONS = ["purchased", "carted", "viewing", "viewed"] as const;
export type Exclusion = (typeof EXCLUSIONS)[number];

/** Candidate sources, in fallback-chain order. */
export const CANDIDATE_SOURCES = ["context", "session", "buy_again", "batch", "trending", "popular"] as const;
export type CandidateSource = (typeof CANDIDATE_SOURCES)[number];

export interface PlacementConfig {
  /** Sources that contribute candidates. */
  sources: CandidateSource[];
  exclude: Exclusion[];
  /** Replace the global weights of the features it names, for this placement only. */
  weights?: Partial<Weights>;
  defaultLimit: number;
}

export interface MerchandisingRule {
  id: string;
  action: "boost" | "bury" | "pin";
  /** Matches any of these products … */
  productIds?: readonly string[];
  /** … or any product of these categories (compared normalised). */
  categories?: readonly string[];
  /** boost / bury: added to (boost) or subtracted from (bury) the score. */
  amount?: number;
  /** pin: the 1-based position the product takes. */
  slot?: number;
  /** Placements it applies to; absent = all. */
  placements?: readonly string[];
  /** ISO-8601 window; absent = open-ended. */
  from?: string;
  until?: string;
}

export interface RankingConfig {
  /** Set by the admin endpoint on every change (the built-in default is "default"). */
  version: string;
  weights: Weights;
  placements: Record<string, PlacementConfig>;
  diversity: { maxPerCategory: number };
  /** Seeds taken from the session: this many recently viewed / carted / purchased items. */
  seeds: { viewed: number; carted: number; purchased: number; recencyHalfLife: number };
  /** Per-source deadlines in ms, and the whole answer's. */
  deadlines: { session: number; kv: number; total: number };
  rules: MerchandisingRule[];
  /** Hard caps. */
  maxLimit: number;
}

/**
 * maxPerCategory 4 → 20 (no cap within a usual answer) was chosen offline on a validation split of the UCI Online
 * Retail data, never its test split: docs/relevance.md#tuning, `npm run eval -- tune`.
 */
export const DEFAULT_RANKING_CONFIG: RankingConfig = {
  version: "default",
  weights: {
    batch: 1.0,
    context: 2.0,
    covisit: 3.0,
    sequence: 16.0,
    adjacent: 4.0,
    buyAgain: 10.0,
    content: 3.0,
    sessionAffinity: 0.8,
    longTermAffinity: 0.4,
    trending: 0.3,
    popularity: 0.2,
    query: 1.0,
    priceBand: 0.2,
    base: 1.0,
  },
  placements: {
    home: {
      sources: ["session", "buy_again", "batch", "trending", "popular"],
      exclude: ["purchased", "carted", "viewed"],
      defaultLimit: 12,
    },
    pdp: {
      sources: ["context", "session", "batch", "trending", "popular"],
      exclude: ["purchased", "carted", "viewing"],
      defaultLimit: 8,
    },
    cart: {
      sources: ["context", "session", "batch", "trending", "popular"],
      exclude: ["purchased", "carted"],
      defaultLimit: 8,
    },
    post_purchase: {
      sources: ["context", "session", "batch", "trending", "popular"],
      exclude: ["purchased", "carted"],
      defaultLimit: 8,
    },
  },
  diversity: { maxPerCategory: 20 },
  seeds: { viewed: 5, carted: 3, purchased: 3, recencyHalfLife: 2 },
  deadlines: { session: 30, kv: 30, total: 50 },
  rules: [],
  maxLimit: 50,
};

/** The KV key of the active config (absent: DEFAULT_RANKING_CONFIG). */
export const RANKING_CONFIG_KEY = "cfg:ranking";

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);
const isNumber = (v: unknown): v is number => typeof v === "number" && Number.isFinite(v);
const isStringArray = (v: unknown): v is string[] => Array.isArray(v) && v.every((x) => typeof x === "string");

/** A problem with a config document: `path` is where (e.g. `weights.batch`). */
export interface ConfigIssue {
  path: string;
  message: string;
}

/** The modes' own experiment keys (src/experiments/serve.ts): a placement of that name would share their experiments. */
const RESERVED_PLACEMENTS = ["similar", "rerank"];
const CONFIG_FIELDS = ["version", "weights", "placements", "diversity", "seeds", "deadlines", "rules", "maxLimit"];
const PLACEMENT_FIELDS = ["sources", "exclude", "defaultLimit", "weights"];
const RULE_FIELDS = ["id", "action", "productIds", "categories", "amount", "slot", "placements", "from", "until"];

type Issue = (path: string, message: string) => void;

/** An issue for each key of `obj` that is not one of `known`: a typo (`weigths`) must not be dropped silently. */
function refuseUnknown(obj: Record<string, unknown>, known: readonly string[], path: string, issue: Issue): void {
  for (const k of Object.keys(obj)) {
    if (!known.includes(k)) issue(path ? `${path}.${k}` : k, `unknown field; one of ${known.join(", ")}`);
  }
}

/**
 * Validates a config document and fills what it leaves out from the default. Returns the issues found, or the config
 * with `version` as given. `strict` (the admin endpoint's body) also refuses unknown fields; documents stored
 * before that check are read without it.
 */
export function parseRankingConfig(
  input: unknown,
  version: string,
  { strict = false }: { strict?: boolean } = {},
): { ok: true; config: RankingConfig } | { ok: false; issues: ConfigIssue[] } {
  const issues: ConfigIssue[] = [];
  const issue = (path: string, message: string) => issues.push({ path, message });
  if (!isObject(input)) return { ok: false, issues: [{ path: "", message: "must be a JSON object" }] };
  const d = DEFAULT_RANKING_CONFIG;
  const known = strict
    ? (obj: unknown, fields: readonly string[], path: string) => {
        if (isObject(obj)) refuseUnknown(obj, fields, path, issue);
      }
    : () => {};
  known(input, CONFIG_FIELDS, "");
  known(input.diversity, ["maxPerCategory"], "diversity");
  known(input.seeds, ["viewed", "carted", "purchased", "recencyHalfLife"], "seeds");
  known(input.deadlines, ["session", "kv", "total"], "deadlines");
  if (isObject(input.placements)) {
    for (const [name, p] of Object.entries(input.placements)) known(p, PLACEMENT_FIELDS, `placements.${name}`);
  }
  if (Array.isArray(input.rules)) {
    for (const [i, r] of input.rules.entries()) known(r, RULE_FIELDS, `rules[${i}]`);
  }

  const weights: Weights = { ...d.weights };
  if (input.weights !== undefined) {
    if (!isObject(input.weights)) issue("weights", "must be an object");
    else {
      for (const [k, v] of Object.entries(input.weights)) {
        if (!(FEATURES as readonly string[]).includes(k)) issue(`weights.${k}`, `unknown feature; one of ${FEATURES}`);
        else if (!isNumber(v) || Math.abs(v) > 100) issue(`weights.${k}`, "must be a number in [-100, 100]");
        else weights[k as Feature] = v;
      }
    }
  }

  const placements: Record<string, PlacementConfig> = { ...d.placements };
  if (input.placements !== undefined) {
    if (!isObject(input.placements)) issue("placements", "must be an object");
    else {
      for (const [name, p] of Object.entries(input.placements)) {
        const path = `placements.${name}`;
        if (!/^[a-z][a-z0-9_]{0,31}$/.test(name)) issue(path, "name must match ^[a-z][a-z0-9_]{0,31}$");
        else if (strict && RESERVED_PLACEMENTS.includes(name)) issue(path, `${name} names a mode, not a placement`);
        else if (!isObject(p)) issue(path, "must be an object");
        else {
          const sources = p.sources ?? placements[name]?.sources ?? d.placements.home?.sources;
          const exclude = p.exclude ?? placements[name]?.exclude ?? [];
          const limit = p.defaultLimit ?? placements[name]?.defaultLimit ?? 10;
          if (!isStringArray(sources) || !sources.every((s) => (CANDIDATE_SOURCES as readonly string[]).includes(s)))
            issue(`${path}.sources`, `must be a list of ${CANDIDATE_SOURCES}`);
          if (!isStringArray(exclude) || !exclude.every((s) => (EXCLUSIONS as readonly string[]).includes(s)))
            issue(`${path}.exclude`, `must be a list of ${EXCLUSIONS}`);
          if (!Number.isInteger(limit) || (limit as number) < 1 || (limit as number) > 50)
            issue(`${path}.defaultLimit`, "must be an integer in [1, 50]");
          const extra: Partial<Weights> = {};
          if (p.weights !== undefined) {
            if (!isObject(p.weights)) issue(`${path}.weights`, "must be an object");
            else
              for (const [k, v] of Object.entries(p.weights)) {
                if (!(FEATURES as readonly string[]).includes(k)) issue(`${path}.weights.${k}`, "unknown feature");
                else if (!isNumber(v) || Math.abs(v) > 100) issue(`${path}.weights.${k}`, "must be a number");
                else extra[k as Feature] = v;
              }
          }
          placements[name] = {
            sources: sources as CandidateSource[],
            exclude: exclude as Exclusion[],
            defaultLimit: limit as number,
            ...(Object.keys(extra).length > 0 ? { weights: extra } : {}),
          };
        }
      }
    }
  }

  const diversity = { ...d.diversity };
  if (input.diversity !== undefined) {
    const m = isObject(input.diversity) ? input.diversity.maxPerCategory : undefined;
    if (!Number.isInteger(m) || (m as number) < 1) issue("diversity.maxPerCategory", "must be an integer ≥ 1");
    else diversity.maxPerCategory = m as number;
  }

  const seeds = { ...d.seeds };
  if (input.seeds !== undefined) {
    if (!isObject(input.seeds)) issue("seeds", "must be an object");
    else
      for (const k of ["viewed", "carted", "purchased", "recencyHalfLife"] as const) {
        const v = input.seeds[k];
        if (v === undefined) continue;
        if (!Number.isInteger(v) || (v as number) < 0 || (v as number) > 20) issue(`seeds.${k}`, "must be in [0, 20]");
        else seeds[k] = v as number;
      }
  }

  const deadlines = { ...d.deadlines };
  if (input.deadlines !== undefined) {
    if (!isObject(input.deadlines)) issue("deadlines", "must be an object");
    else
      for (const k of ["session", "kv", "total"] as const) {
        const v = input.deadlines[k];
        if (v === undefined) continue;
        if (!isNumber(v) || v < 1 || v > 5000) issue(`deadlines.${k}`, "must be milliseconds in [1, 5000]");
        else deadlines[k] = v;
      }
  }

  const rules: MerchandisingRule[] = [];
  if (input.rules !== undefined) {
    if (!Array.isArray(input.rules)) issue("rules", "must be a list");
    else {
      // A rule's id names it in reasons (`boosted:<id>`) and explain traces: the PUT refuses a second rule with one.
      const firstWithId = new Map<string, number>();
      input.rules.forEach((r, i) => {
        const path = `rules[${i}]`;
        const rule = parseRule(r, path, issue);
        if (!rule) return;
        rules.push(rule);
        const first = firstWithId.get(rule.id);
        if (first === undefined) firstWithId.set(rule.id, i);
        else if (strict) issue(`${path}.id`, `duplicate id; rules[${first}] has it`);
        // An empty window keeps the rule off for ever (as an experiment's end must be after its start). The PUT
        // refuses it; a stored document with one still ranks, the rule never applying, as before the check.
        if (strict && rule.from !== undefined && rule.until !== undefined) {
          if ((parseIsoTime(rule.until) as number) <= (parseIsoTime(rule.from) as number))
            issue(`${path}.until`, "must be after from");
        }
      });
    }
  }

  let maxLimit = d.maxLimit;
  if (input.maxLimit !== undefined) {
    if (!Number.isInteger(input.maxLimit) || (input.maxLimit as number) < 1 || (input.maxLimit as number) > 200)
      issue("maxLimit", "must be an integer in [1, 200]");
    else maxLimit = input.maxLimit as number;
  }

  if (issues.length > 0) return { ok: false, issues };
  return { ok: true, config: { version, weights, placements, diversity, seeds, deadlines, rules, maxLimit } };
}

/**
 * The largest `amount` of a boost or bury rule: above the whole score at the default weights (Σ weight ≈ 43, every
 * feature in [0, 1]), so a boost can still lift a product over the rest, and far below where a score could overflow
 * to Infinity (which JSON writes as null, and which breaks the order).
 */
export const MAX_RULE_AMOUNT = 1000;

function parseRule(r: unknown, path: string, issue: Issue): MerchandisingRule | null {
  if (!isObject(r)) {
    issue(path, "must be an object");
    return null;
  }
  const before = { n: 0 };
  const fail = (p: string, m: string) => {
    before.n++;
    issue(`${path}.${p}`, m);
  };
  if (typeof r.id !== "string" || r.id.length === 0 || r.id.length > 100) fail("id", "must be a non-empty string");
  if (r.action !== "boost" && r.action !== "bury" && r.action !== "pin") fail("action", "must be boost, bury or pin");
  if (r.productIds !== undefined && !isStringArray(r.productIds)) fail("productIds", "must be a list of strings");
  if (r.categories !== undefined && !isStringArray(r.categories)) fail("categories", "must be a list of strings");
  if (r.productIds === undefined && r.categories === undefined) fail("productIds", "give productIds or categories");
  if (r.action === "pin") {
    if (!Number.isInteger(r.slot) || (r.slot as number) < 1) fail("slot", "a pin needs a 1-based slot");
    if (!isStringArray(r.productIds) || r.productIds.length === 0) fail("productIds", "a pin names its products");
  } else if (r.action === "boost" || r.action === "bury") {
    if (!isNumber(r.amount) || r.amount <= 0 || r.amount > MAX_RULE_AMOUNT)
      fail("amount", `must be a number in (0, ${MAX_RULE_AMOUNT}]`);
  }
  if (r.placements !== undefined && !isStringArray(r.placements)) fail("placements", "must be a list of strings");
  for (const k of ["from", "until"] as const) {
    if (r[k] !== undefined && parseIsoTime(r[k]) === null)
      fail(k, "must be an ISO-8601 date-time with a zone, like 2026-12-01T00:00:00Z");
  }
  if (before.n > 0) return null;
  return r as unknown as MerchandisingRule;
}

/** The weights of a placement: the global ones plus the placement's own additions. */
export function placementWeights(config: RankingConfig, placement: PlacementConfig): Weights {
  if (!placement.weights) return config.weights;
  const w = { ...config.weights };
  for (const [k, v] of Object.entries(placement.weights)) w[k as Feature] = v;
  return w;
}
