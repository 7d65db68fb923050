// What an experiment changes in one ranking answer (docs/experiments.md#serving): which arm the visitor is in, the
// ranking config that arm ranks with, and — for an interleave experiment — the one list made of both variants'.
// Pure: the ranking service (src/rank/service.ts) calls it with what it has already read; no I/O of its own.

import type { RankingConfig } from "../rank/config.ts";
import type { RankedItem } from "../rank/core.ts";
import { assign, interleaveSeed } from "./assign.ts";
import {
  activeExperiment,
  type Experiment,
  type ExperimentsConfig,
  HOLDOUT_ARM,
  INTERLEAVED_ARM,
  type Ranker,
} from "./config.ts";
import { type Team, teamDraft } from "./interleave.ts";

/** How one arm ranks: the config to rank with, and whether the visitor's own data (session, lists) is used. */
export interface ArmPlan {
  config: RankingConfig;
  personal: boolean;
}

export interface ExperimentPlan {
  experiment: Experiment;
  arm: string;
  /** The visitor's bucket in [0, 1) (assign.ts). */
  bucket: number;
  /** The unit the visitor was assigned by. */
  unit: string;
  /** split / holdout: one plan; interleave: team a's and team b's. */
  plans: [ArmPlan] | [ArmPlan, ArmPlan];
}

/** The experiment key of a request: the placement for recommendations, the mode for rerank and similar. */
export function experimentPlacement(mode: "recommend" | "similar" | "rerank", placement: string): string {
  return mode === "recommend" ? placement : mode;
}

/**
 * The visitor's assignment unit: the anonymous id the request names (analytics SDKs keep it across a login), else
 * the oldest anonymous id merged into the visitor's object (a login on this identity keeps the arm it had as a
 * visitor), else the visitor's own id.
 */
export function assignmentUnit(
  requestAnonymousId: string | null,
  userKey: string | null,
  mergedAnonymousIds: readonly string[] | null,
): string | null {
  if (requestAnonymousId) return `a:${requestAnonymousId}`;
  const oldest = mergedAnonymousIds && mergedAnonymousIds.length > 0 ? mergedAnonymousIds.at(-1) : undefined;
  if (oldest) return `a:${oldest}`;
  return userKey;
}

/** The ranking config a variant's ranker means for this placement (or mode). */
export function rankerConfig(config: RankingConfig, placement: string, ranker: Ranker): ArmPlan {
  if (ranker.kind === "popular") return { config, personal: false };
  const weights = ranker.weights ?? {};
  const p = config.placements[placement];
  if (!p) {
    // rerank / similar: their placement config is built in; weights apply globally for this answer.
    return { config: { ...config, weights: { ...config.weights, ...weights } }, personal: true };
  }
  return {
    config: {
      ...config,
      placements: {
        ...config.placements,
        [placement]: {
          ...p,
          weights: { ...(p.weights ?? {}), ...weights },
          ...(ranker.sources ? { sources: [...ranker.sources] } : {}),
        },
      },
    },
    personal: true,
  };
}

/** The experiment running on this placement now and the visitor's arm in it (null: none, or no visitor id). */
export function planExperiment(
  experiments: ExperimentsConfig,
  placement: string,
  now: number,
  unit: string | null,
  config: RankingConfig,
): ExperimentPlan | null {
  if (!unit) return null;
  const experiment = activeExperiment(experiments, placement, now);
  if (!experiment) return null;
  const { arm, bucket } = assign(experiment, unit);
  const base = { experiment, arm, bucket, unit };
  if (arm === HOLDOUT_ARM) return { ...base, plans: [{ config, personal: false }] };
  if (arm === INTERLEAVED_ARM) {
    const [a, b] = experiment.variants;
    if (!a || !b) return null;
    return { ...base, plans: [rankerConfig(config, placement, a.ranker), rankerConfig(config, placement, b.ranker)] };
  }
  const variant = experiment.variants.find((v) => v.id === arm);
  if (!variant) return null;
  return { ...base, plans: [rankerConfig(config, placement, variant.ranker)] };
}

/**
 * One list of two rankers' answers by team-draft interleaving, seeded by the answer's recId (the same recId always
 * gives the same list). Each item keeps the ranked item of the team that placed it.
 */
export function interleaveAnswers(
  a: readonly RankedItem[],
  b: readonly RankedItem[],
  limit: number,
  recId: string,
): { items: RankedItem[]; teams: Team[] } {
  const byId = new Map<string, RankedItem>();
  for (const item of b) byId.set(`b|${item.productId}`, item);
  for (const item of a) byId.set(`a|${item.productId}`, item);
  const drafted = teamDraft(
    a.map((i) => i.productId),
    b.map((i) => i.productId),
    limit,
    interleaveSeed(recId),
  );
  const items = drafted.items.map((id, i) => byId.get(`${drafted.team[i]}|${id}`) as RankedItem);
  return { items, teams: drafted.team };
}
