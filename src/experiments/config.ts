// The experiments document: A/B/n tests and interleaved comparisons of rankers, per placement (docs/experiments.md).
// One versioned JSON document like the ranking config (src/rank/config.ts): `version` is set by the admin endpoint
// that stores a validated copy in KV under EXPERIMENTS_KEY; absent, no experiment runs. Pure: no I/O, no Env, runs
// in workerd and in Node.

import { parseIsoTime } from "../iso-time.ts";
import {
  CANDIDATE_SOURCES,
  type CandidateSource,
  type ConfigIssue,
  FEATURES,
  type Feature,
  type Weights,
} from "../rank/config.ts";

export type { ConfigIssue };
export { parseIsoTime };

/** The KV key of the active experiments document (absent: DEFAULT_EXPERIMENTS_CONFIG, no experiments). */
export const EXPERIMENTS_KEY = "cfg:experiments";

/** The arm of the visitors an experiment holds out: they get the non-personal list (docs/experiments.md#holdout). */
export const HOLDOUT_ARM = "holdout";
/** The arm of every non-holdout visitor of an `interleave` experiment: they see both variants in one list. */
export const INTERLEAVED_ARM = "interleaved";

/** Limits of a document. */
export const EXPERIMENT_LIMITS = { experiments: 20, variants: 10, maxHoldout: 0.5, maxWeight: 1_000_000 } as const;

/** Experiment and variant ids (they name arms in exposures and reports). */
export const ID_PATTERN = /^[a-z0-9][a-z0-9_-]{0,63}$/;
/** Placement names as the ranking config spells them; `rerank` and `similar` address those modes' lists. */
export const PLACEMENT_PATTERN = /^[a-z][a-z0-9_]{0,31}$/;

/**
 * What a variant ranks with. `popular`: the non-personal list — what the API answers when no visitor is named (the
 * usual control). `ranker`: the merged ranker of the active ranking config, with these feature weights replacing
 * the placement's and, when given, these candidate sources replacing the placement's.
 */
export type Ranker = { kind: "popular" } | { kind: "ranker"; weights?: Partial<Weights>; sources?: CandidateSource[] };

export interface Variant {
  id: string;
  /** Relative share of the non-holdout traffic (split mode); default 1. */
  weight: number;
  ranker: Ranker;
}

export interface Experiment {
  id: string;
  /** A placement of the ranking config (`home`, `pdp`, …) or `rerank` / `similar`. */
  placement: string;
  description?: string;
  /** ISO-8601 window [start, end); absent = open-ended. */
  start?: string;
  end?: string;
  /** Share of visitors in [0, 0.5] held out: the non-personal list, reported as arm `holdout`. Default 0. */
  holdout: number;
  /**
   * split: each visitor sees one variant's list (weights split the non-holdout traffic). interleave: exactly two
   * variants, merged into one list by team-draft interleaving (src/experiments/interleave.ts). Default split.
   */
  mode: "split" | "interleave";
  variants: Variant[];
}

export interface ExperimentsConfig {
  /** Set by the admin endpoint on every change ("default" for the built-in empty document). */
  version: string;
  experiments: Experiment[];
}

export const DEFAULT_EXPERIMENTS_CONFIG: ExperimentsConfig = { version: "default", experiments: [] };

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);
const isNumber = (v: unknown): v is number => typeof v === "number" && Number.isFinite(v);

const EXPERIMENT_FIELDS = ["id", "placement", "description", "start", "end", "holdout", "mode", "variants"];
const VARIANT_FIELDS = ["id", "weight", "ranker"];
const RESERVED_ARMS: readonly string[] = [HOLDOUT_ARM, INTERLEAVED_ARM];
/** The experiment keys of the similar and rerank modes (their lists have no placement of the ranking config). */
const MODE_PLACEMENTS: readonly string[] = ["similar", "rerank"];

/**
 * Validates an experiments document (the admin endpoint's body, `{ experiments: [...] }`). Returns every issue
 * found, each with the path of the offending field (e.g. `experiments[0].variants[1].weight`), or the config with
 * `version` as given and the defaults filled in (holdout 0, mode split, weight 1). Unknown fields are issues: a
 * misspelt `holdOut` must not silently run an experiment without its holdout.
 */
export function parseExperiments(
  input: unknown,
  version: string,
): { ok: true; config: ExperimentsConfig } | { ok: false; issues: ConfigIssue[] } {
  const issues: ConfigIssue[] = [];
  const issue = (path: string, message: string) => issues.push({ path, message });
  if (!isObject(input)) return { ok: false, issues: [{ path: "", message: "must be a JSON object" }] };
  // `version` is what a GET answers with the document: it goes back unchanged (the PUT gives the new one).
  for (const k of Object.keys(input)) {
    if (k !== "experiments" && k !== "version") issue(k, "unknown field; the document has experiments");
  }

  const experiments: Experiment[] = [];
  const list = input.experiments === undefined ? [] : input.experiments;
  if (!Array.isArray(list)) issue("experiments", "must be a list");
  else if (list.length > EXPERIMENT_LIMITS.experiments)
    issue("experiments", `at most ${EXPERIMENT_LIMITS.experiments} experiments`);
  else {
    // Only experiments without issues of their own take part in the id and overlap checks.
    const valid: { index: number; experiment: Experiment }[] = [];
    list.forEach((e, i) => {
      const path = `experiments[${i}]`;
      const experiment = parseExperiment(e, path, issue);
      if (!experiment) return;
      const [s, t] = windowOf(experiment);
      for (const { index: j, experiment: other } of valid) {
        if (other.id === experiment.id) issue(`${path}.id`, `duplicate id; experiments[${j}] has it`);
        // At most one experiment per placement at any instant: windows are [start, end), absent ends unbounded.
        if (other.placement !== experiment.placement) continue;
        const [os, ot] = windowOf(other);
        if (s < ot && os < t)
          issue(path, `overlaps experiments[${j}] (${other.id}) on placement ${experiment.placement}`);
      }
      valid.push({ index: i, experiment });
      experiments.push(experiment);
    });
  }
  if (issues.length > 0) return { ok: false, issues };
  return { ok: true, config: { version, experiments } };
}

function windowOf(e: Experiment): [number, number] {
  return [parseIsoTime(e.start) ?? Number.NEGATIVE_INFINITY, parseIsoTime(e.end) ?? Number.POSITIVE_INFINITY];
}

/**
 * The experiments that can still run at `now` (no end, or an end after it) on a placement that is neither one of
 * `placements` (the active ranking config's) nor similar / rerank: the ranking path refuses such a placement, so they
 * would never be served. Each with its index in the document. Ended experiments are left alone: they are kept for
 * their reports, whatever the ranking config has become.
 */
export function unplacedExperiments(
  config: ExperimentsConfig,
  placements: readonly string[],
  now: number,
): { index: number; experiment: Experiment }[] {
  return config.experiments.flatMap((experiment, index) => {
    const { placement } = experiment;
    const served = placements.includes(placement) || MODE_PLACEMENTS.includes(placement);
    return served || windowOf(experiment)[1] <= now ? [] : [{ index, experiment }];
  });
}

function parseExperiment(e: unknown, path: string, issue: (path: string, message: string) => void): Experiment | null {
  if (!isObject(e)) {
    issue(path, "must be an object");
    return null;
  }
  let bad = 0;
  const fail = (p: string, m: string) => {
    bad++;
    issue(`${path}.${p}`, m);
  };
  for (const k of Object.keys(e)) if (!EXPERIMENT_FIELDS.includes(k)) fail(k, "unknown field");
  if (typeof e.id !== "string" || !ID_PATTERN.test(e.id)) fail("id", `must match ${ID_PATTERN.source}`);
  if (typeof e.placement !== "string" || !PLACEMENT_PATTERN.test(e.placement))
    fail("placement", `must be a placement name (${PLACEMENT_PATTERN.source}), rerank or similar`);
  if (e.description !== undefined && (typeof e.description !== "string" || e.description.length > 500))
    fail("description", "must be a string of at most 500 characters");
  const start = e.start === undefined ? undefined : parseIsoTime(e.start);
  const end = e.end === undefined ? undefined : parseIsoTime(e.end);
  if (start === null) fail("start", "must be an ISO-8601 time with a zone, e.g. 2026-12-01T00:00:00Z");
  if (end === null) fail("end", "must be an ISO-8601 time with a zone, e.g. 2026-12-08T00:00:00Z");
  if (typeof start === "number" && typeof end === "number" && end <= start) fail("end", "must be after start");
  const holdout = e.holdout === undefined ? 0 : e.holdout;
  if (!isNumber(holdout) || holdout < 0 || holdout > EXPERIMENT_LIMITS.maxHoldout)
    fail("holdout", `must be a number in [0, ${EXPERIMENT_LIMITS.maxHoldout}]`);
  const mode = e.mode === undefined ? "split" : e.mode;
  if (mode !== "split" && mode !== "interleave") fail("mode", "must be split or interleave");

  const variants: Variant[] = [];
  if (!Array.isArray(e.variants)) fail("variants", "must be a list");
  else if (e.variants.length === 0 || e.variants.length > EXPERIMENT_LIMITS.variants)
    fail("variants", `must hold 1 to ${EXPERIMENT_LIMITS.variants} variants`);
  else {
    const ids = new Map<string, number>();
    e.variants.forEach((v, j) => {
      const variant = parseVariant(v, `variants[${j}]`, fail);
      if (!variant) return;
      // similar and rerank rank fixed candidates (the product's neighbours and the popular list; the caller's list):
      // a variant's `sources` would change nothing there, so it is refused rather than silently ignored.
      if (
        variant.ranker.kind === "ranker" &&
        variant.ranker.sources &&
        typeof e.placement === "string" &&
        MODE_PLACEMENTS.includes(e.placement)
      )
        fail(`variants[${j}].ranker.sources`, `${e.placement} ranks fixed candidates: sources change nothing there`);
      const first = ids.get(variant.id);
      if (first !== undefined) fail(`variants[${j}].id`, `duplicate id; variants[${first}] has it`);
      else ids.set(variant.id, j);
      variants.push(variant);
    });
    if (bad === 0) {
      if (mode === "interleave") {
        if (variants.length !== 2) fail("variants", "interleave compares exactly two variants");
        else if (variants[0]?.weight !== variants[1]?.weight)
          fail("variants[1].weight", "interleave shows both variants in every list: weights must be equal or omitted");
      } else if (variants.length < 2 && holdout === 0)
        fail("variants", "a split needs two arms: two variants, or one variant and a holdout");
    }
  }
  if (bad > 0) return null;
  return {
    id: e.id as string,
    placement: e.placement as string,
    ...(e.description !== undefined ? { description: e.description as string } : {}),
    ...(e.start !== undefined ? { start: e.start as string } : {}),
    ...(e.end !== undefined ? { end: e.end as string } : {}),
    holdout: holdout as number,
    mode: mode as Experiment["mode"],
    variants,
  };
}

function parseVariant(v: unknown, path: string, fail: (path: string, message: string) => void): Variant | null {
  if (!isObject(v)) {
    fail(path, "must be an object");
    return null;
  }
  let bad = 0;
  const own = (p: string, m: string) => {
    bad++;
    fail(`${path}.${p}`, m);
  };
  for (const k of Object.keys(v)) if (!VARIANT_FIELDS.includes(k)) own(k, "unknown field");
  if (typeof v.id !== "string" || !ID_PATTERN.test(v.id)) own("id", `must match ${ID_PATTERN.source}`);
  else if (RESERVED_ARMS.includes(v.id)) own("id", `${v.id} is reserved for the arm of that name`);
  const weight = v.weight === undefined ? 1 : v.weight;
  if (!isNumber(weight) || weight <= 0 || weight > EXPERIMENT_LIMITS.maxWeight)
    own("weight", `must be a number > 0 (at most ${EXPERIMENT_LIMITS.maxWeight})`);
  const ranker = parseRanker(v.ranker, own);
  if (bad > 0 || !ranker) return null;
  return { id: v.id as string, weight: weight as number, ranker };
}

/** `fail` takes paths relative to the variant: `ranker`, `ranker.weights.batch`, … */
function parseRanker(r: unknown, fail: (path: string, message: string) => void): Ranker | null {
  const rel = "ranker";
  if (!isObject(r)) {
    fail(rel, 'must be { "kind": "popular" } or { "kind": "ranker", "weights"?, "sources"? }');
    return null;
  }
  if (r.kind === "popular") {
    for (const k of Object.keys(r)) if (k !== "kind") fail(`${rel}.${k}`, "unknown field; popular takes no options");
    return Object.keys(r).length === 1 ? { kind: "popular" } : null;
  }
  if (r.kind !== "ranker") {
    fail(`${rel}.kind`, "must be popular or ranker");
    return null;
  }
  let bad = 0;
  const own = (p: string, m: string) => {
    bad++;
    fail(`${rel}.${p}`, m);
  };
  for (const k of Object.keys(r)) if (k !== "kind" && k !== "weights" && k !== "sources") own(k, "unknown field");
  const weights: Partial<Weights> = {};
  if (r.weights !== undefined) {
    if (!isObject(r.weights)) own("weights", "must be an object");
    else
      for (const [k, w] of Object.entries(r.weights)) {
        if (!(FEATURES as readonly string[]).includes(k)) own(`weights.${k}`, `unknown feature; one of ${FEATURES}`);
        else if (!isNumber(w) || Math.abs(w) > 100) own(`weights.${k}`, "must be a number in [-100, 100]");
        else weights[k as Feature] = w;
      }
  }
  let sources: CandidateSource[] | undefined;
  if (r.sources !== undefined) {
    const s = r.sources;
    if (
      !Array.isArray(s) ||
      s.length === 0 ||
      !s.every((x) => typeof x === "string" && (CANDIDATE_SOURCES as readonly string[]).includes(x))
    )
      own("sources", `must be a non-empty list of ${CANDIDATE_SOURCES}`);
    else if (new Set(s).size !== s.length) own("sources", "names a source twice");
    else sources = s as CandidateSource[];
  }
  if (bad > 0) return null;
  return {
    kind: "ranker",
    ...(r.weights !== undefined ? { weights } : {}),
    ...(sources ? { sources } : {}),
  };
}

/**
 * The experiment running on `placement` at `now` (ms since the epoch, or a Date): the one whose [start, end) window
 * holds it, or null. A valid document has at most one.
 */
export function activeExperiment(config: ExperimentsConfig, placement: string, now: number | Date): Experiment | null {
  const t = typeof now === "number" ? now : now.getTime();
  for (const e of config.experiments) {
    if (e.placement !== placement) continue;
    if (e.start !== undefined && t < (parseIsoTime(e.start) ?? Number.POSITIVE_INFINITY)) continue;
    if (e.end !== undefined && t >= (parseIsoTime(e.end) ?? Number.NEGATIVE_INFINITY)) continue;
    return e;
  }
  return null;
}
