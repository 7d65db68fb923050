// Tuning the ranking config on validation splits carved from the UCI training data — never the test split
// (docs/relevance.md#tuning). Protocol (i): the last `validationDays` of the training invoices are the validation
// sessions, the earlier ones train. Protocol (ii): the data before the test cut, split again `validationDays`
// earlier. The request shape (placement, event type) is chosen first with the default config, then a coordinate
// search over weights, seeds, decay and diversity maximises the mean of the two validation scores relative to
// the default config's; a change must gain at least `minGain` (1%) over the current config to be kept. The
// trending weight is not searched: offline, the trending list is frozen at the end of the training data, while the
// Worker's is live (docs/relevance.md#tuning).

import { DEFAULT_RANKING_CONFIG, type RankingConfig } from "../src/rank/config.ts";
import { cutBeforeEnd, isoDay, type Session, SPLIT_DEFAULTS, startOf, temporalSplit } from "./data.ts";
import type { Method } from "./method.ts";
import { Popularity, RepeatPurchases, SequentialRules, SessionKnnCosine } from "./methods/baselines.ts";
import { DEFAULT_SHAPE, LastmileModels, LastmileRanker, type RequestShape } from "./methods/lastmile.ts";
import { customersAt, nextItem, nextPurchase, trainData } from "./protocols.ts";
import { readUci, uciSplit } from "./suites.ts";

export interface TuneOptions {
  testDays: number;
  validationDays: number;
  /** Validation sessions (protocol i) and customers (protocol ii) evaluated per candidate config. */
  sessions: number;
  users: number;
  /** Coordinate-search rounds. */
  rounds?: number;
  /** A change is kept only when it raises the objective by at least this much (relative): the noise floor. */
  minGain?: number;
  log?: (line: string) => void;
}

/** A knob: where it lives in the config and the values tried. */
interface Knob {
  name: string;
  values: number[];
  get(c: RankingConfig): number;
  set(c: RankingConfig, v: number): RankingConfig;
}

const weight = (k: keyof RankingConfig["weights"], values: number[]): Knob => ({
  name: `weights.${k}`,
  values,
  get: (c) => c.weights[k],
  set: (c, v) => ({ ...c, weights: { ...c.weights, [k]: v } }),
});
const seed = (k: keyof RankingConfig["seeds"], values: number[]): Knob => ({
  name: `seeds.${k}`,
  values,
  get: (c) => c.seeds[k],
  set: (c, v) => ({ ...c, seeds: { ...c.seeds, [k]: v } }),
});

export const KNOBS: readonly Knob[] = [
  {
    name: "diversity.maxPerCategory",
    values: [4, 8, 20],
    get: (c) => c.diversity.maxPerCategory,
    set: (c, v) => ({ ...c, diversity: { maxPerCategory: v } }),
  },
  weight("sequence", [8, 16, 32]),
  weight("adjacent", [0, 2, 4, 8]),
  weight("content", [0, 1.5, 3, 6]),
  weight("context", [1, 2, 4]),
  weight("covisit", [1.5, 3, 6]),
  weight("sessionAffinity", [0, 0.4, 0.8]),
  weight("popularity", [0, 0.2, 0.6]),
  weight("priceBand", [0, 0.2]),
  weight("batch", [1, 2]),
  weight("longTermAffinity", [0, 0.4, 1]),
  weight("buyAgain", [3, 10, 30]),
  seed("viewed", [5, 10, 20]),
  seed("carted", [3, 10, 20]),
  seed("recencyHalfLife", [2, 5, 10]),
];

/** The shapes tried for protocol (i): which Worker request a basket in progress is. */
export const SHAPES: readonly RequestShape[] = [
  { placement: "pdp", as: null },
  { placement: "pdp", as: "view" },
  { placement: "pdp", as: "cart" },
  { placement: "cart", as: "view" },
  { placement: "home", as: "view" },
];

interface Split {
  train: Session[];
  test: Session[];
  cut: number;
}

export function validationSplits(testDays: number, validationDays: number) {
  const { catalog, sessions } = readUci();
  const outer = uciSplit(testDays);
  // (i): the training sessions' last validationDays are validation sessions.
  const vcut = cutBeforeEnd(outer.train, validationDays);
  const inner: Split = { ...temporalSplit(outer.train, { cut: vcut, ...SPLIT_DEFAULTS }), cut: vcut };
  // (ii): everything before the test cut, customers split validationDays before it.
  const before = sessions.filter((s) => startOf(s) < outer.cut);
  const pcut = outer.cut - validationDays * 86_400;
  const purchases = customersAt(before, pcut);
  return { catalog, outer, inner, pcut, purchases };
}

const round4 = (x: number) => Math.round(x * 1e4) / 1e4;

export function tune(options: TuneOptions): Record<string, unknown> {
  const started = performance.now();
  const log = options.log ?? ((line: string) => console.error(line));
  const { catalog, outer, inner, pcut, purchases } = validationSplits(options.testDays, options.validationDays);
  const iTrain = trainData(inner.train, catalog);
  const iiTrain = trainData(purchases.train, catalog);
  const iShared = new LastmileModels();
  const iiShared = new LastmileModels();
  const runI = (methods: Method[]) => nextItem(methods, iTrain, inner.test, { sessions: options.sessions });
  const runII = (methods: Method[]) =>
    nextPurchase(methods, iiTrain, purchases.customers, pcut, { users: options.users });

  const reference = {
    nextItem: runI([new Popularity(), new SequentialRules(), new SessionKnnCosine()]).map((r) => ({
      method: r.method,
      hr: round4(r.hr),
      mrr: round4(r.mrr),
    })),
    nextPurchase: runII([new Popularity(), new RepeatPurchases()]).map((r) => ({
      method: r.method,
      recall: round4(r.recall),
      ndcg: round4(r.ndcg),
    })),
  };
  log(`reference ${JSON.stringify(reference)}`);

  // 1. The request shape for protocol (i), with the default config.
  const shapes = SHAPES.map((shape) => {
    const [r] = runI([new LastmileRanker(iShared, { shape })]);
    log(`shape ${JSON.stringify(shape)} hr ${r?.hr}`);
    return { shape, hr: r?.hr ?? 0, mrr: r?.mrr ?? 0 };
  });
  const best = shapes.reduce((a, b) => (b.hr > a.hr ? b : a));
  const shape: RequestShape = best.shape ?? DEFAULT_SHAPE;
  const iiShape: RequestShape = { placement: "home", as: null };

  // 2. Coordinate search of the config on both validation protocols.
  const evaluate = (config: RankingConfig) => {
    const [i] = runI([new LastmileRanker(iShared, { shape, config })]);
    const [ii] = runII([new LastmileRanker(iiShared, { shape: iiShape, config })]);
    return { hr: i?.hr ?? 0, mrr: i?.mrr ?? 0, recall: ii?.recall ?? 0, ndcg: ii?.ndcg ?? 0 };
  };
  const base = evaluate(DEFAULT_RANKING_CONFIG);
  const objective = (s: ReturnType<typeof evaluate>) =>
    (s.hr / Math.max(base.hr, 1e-9) + s.recall / Math.max(base.recall, 1e-9)) / 2;
  const minGain = options.minGain ?? 0.01;
  let config = DEFAULT_RANKING_CONFIG;
  let current = base;
  const trail: Array<Record<string, unknown>> = [];
  for (let round = 0; round < (options.rounds ?? 2); round++) {
    let changed = false;
    for (const knob of KNOBS) {
      const from = knob.get(config);
      let bestValue = from;
      let bestScore = current;
      for (const v of knob.values) {
        if (v === from) continue;
        const s = evaluate(knob.set(config, v));
        if (objective(s) > objective(bestScore) + (bestScore === current ? minGain : 1e-9)) {
          bestScore = s;
          bestValue = v;
        }
      }
      if (bestValue !== from) {
        config = knob.set(config, bestValue);
        current = bestScore;
        changed = true;
      }
      const line = {
        round,
        knob: knob.name,
        from,
        to: bestValue,
        hr: round4(current.hr),
        recall: round4(current.recall),
      };
      trail.push(line);
      log(`tune ${JSON.stringify(line)}`);
    }
    if (!changed) break;
  }
  const changes: Record<string, { from: number; to: number }> = {};
  for (const knob of KNOBS) {
    const from = knob.get(DEFAULT_RANKING_CONFIG);
    const to = knob.get(config);
    if (from !== to) changes[knob.name] = { from, to };
  }
  const r = (s: ReturnType<typeof evaluate>) => ({
    hr: round4(s.hr),
    mrr: round4(s.mrr),
    recall: round4(s.recall),
    ndcg: round4(s.ndcg),
  });
  return {
    protocol: "tune",
    split: {
      testCut: isoDay(outer.cut),
      nextItem: { trainSessions: inner.train.length, validationSessions: inner.test.length, cut: isoDay(inner.cut) },
      nextPurchase: { cut: isoDay(pcut), customers: purchases.customers.length },
      evaluated: { sessions: options.sessions, users: options.users },
    },
    reference,
    shapes: shapes.map((s) => ({ ...s.shape, hr: round4(s.hr), mrr: round4(s.mrr) })),
    chosenShape: shape,
    default: r(base),
    tuned: r(current),
    changes,
    trail,
    totalMs: Math.round(performance.now() - started),
  };
}
