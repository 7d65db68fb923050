// What an experiment changes in one ranking answer (docs/experiments.md#serving): which arm the visitor is in, the
// ranking config that arm ranks with, and — for an interleave experiment — the one list made of both variants'.
// Pure: the ranking service (src/rank/service.ts) calls it with what it has already read; no I/O of its own.

import type { RankingConfig } from "../rank/config.ts";
import { capPerCategory, type RankedItem, type RankOutput } from "../rank/core.ts";
import { assign, interleaveSeed } from "./assign.ts";
import {
  activeExperiment,
  type Experiment,
  type ExperimentsConfig,
  HOLDOUT_ARM,
  INTERLEAVED_ARM,
  type Ranker,
} from "./config.ts";
import { type ListTeam, teamDraft } from "./interleave.ts";

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

/** The `degraded` flag of an answer that an experiment would have applied to but whose unit was unknown. */
export const UNIT_UNKNOWN = "experiment_unit_unknown";

/** An answer's assignment unit: a unit, no visitor at all, or a named visitor whose unit cannot be known. */
export type AssignmentUnit = { status: "known"; unit: string } | { status: "none" } | { status: "unknown" };

/**
 * The visitor's assignment unit (docs/experiments.md#serving). One per person, so that every device a user logs in
 * on gets the same arm: for a named user, the first anonymous id merged into the user's object; before any merge,
 * the anonymous id the request names (the one the login will merge), else the user's own key. For an anonymous
 * visitor, their anonymous id. `merged`: the anonymous ids merged into the visitor's object, oldest last ([] when
 * none or the object does not exist), or null when the session could not be read — then a user named without an
 * anonymous id has no known unit (their arm may be that of an anonymous id merged into them).
 */
export function assignmentUnit(
  requestAnonymousId: string | null,
  userKey: string | null,
  merged: readonly string[] | null,
): AssignmentUnit {
  if (!userKey) return { status: "none" };
  if (!userKey.startsWith("u:")) return { status: "known", unit: userKey };
  const oldest = merged?.at(-1);
  if (oldest) return { status: "known", unit: `a:${oldest}` };
  if (requestAnonymousId) return { status: "known", unit: `a:${requestAnonymousId}` };
  return merged ? { status: "known", unit: userKey } : { status: "unknown" };
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

/** The pins of a ranked list (merchandising rules: the item's first reason is `pinned:<rule>`) by slot index. */
function pinsOf(list: readonly RankedItem[]): Array<[number, RankedItem]> {
  return list.flatMap(
    (item, i): Array<[number, RankedItem]> => (item.reasons[0]?.startsWith("pinned:") ? [[i, item]] : []),
  );
}

/**
 * One list of two rankers' answers by team-draft interleaving, seeded by the answer's recId (the same recId always
 * gives the same list). Each item keeps the ranked item of the team that placed it.
 *
 * Pins (docs/experiments.md#interleaving) are merchandising, not either ranker's choice: every product either list
 * pinned is taken out of both lists before the draft, and the pins are put back at their slots, team `pinned`. Both
 * variants rank under the same rules, but a rule's product may be eligible in one list and not the other (a
 * non-personal variant does not exclude what the visitor has seen); the first variant's pins hold their slots, and
 * a pin of the second variant whose slot the first variant's pin holds — or whose product the first variant pinned
 * elsewhere — is left out of the list.
 *
 * With `diversity`, the shown list keeps the per-category cap each variant's own list kept (pins counted): a drafted
 * item over the cap waits, in draft order, and fills the list only when too few others remain, as in `rank()`.
 */
export function interleaveAnswers(
  a: readonly RankedItem[],
  b: readonly RankedItem[],
  limit: number,
  recId: string,
  diversity?: { maxPerCategory: number; categoryOf: (productId: string) => string | undefined },
): { items: RankedItem[]; teams: ListTeam[] } {
  const pinsA = pinsOf(a);
  const pinsB = pinsOf(b);
  const pinnedIds = new Set([...pinsA, ...pinsB].map(([, item]) => item.productId));
  const pinnedAt = new Map<number, RankedItem>(pinsA);
  const placed = new Set(pinsA.map(([, item]) => item.productId));
  for (const [slot, item] of pinsB) {
    if (pinnedAt.has(slot) || placed.has(item.productId)) continue;
    pinnedAt.set(slot, item);
    placed.add(item.productId);
  }
  const free = (list: readonly RankedItem[]) => list.filter((i) => !pinnedIds.has(i.productId));
  const [fa, fb] = [free(a), free(b)];
  const byId = new Map<string, RankedItem>();
  for (const item of fb) byId.set(`b|${item.productId}`, item);
  for (const item of fa) byId.set(`a|${item.productId}`, item);
  const room = Math.max(0, limit - pinnedAt.size);
  // The whole draft when a cap may pass items over (a draft's first n items do not depend on its length).
  const drafted = teamDraft(
    fa.map((i) => i.productId),
    fb.map((i) => i.productId),
    diversity ? fa.length + fb.length : room,
    interleaveSeed(recId),
  );
  const draftOrder = drafted.items.map((_, i) => i);
  const order = diversity
    ? capPerCategory(
        draftOrder,
        room,
        diversity.maxPerCategory,
        (i) => diversity.categoryOf(drafted.items[i] as string),
        [...pinnedAt.values()].map((item) => diversity.categoryOf(item.productId)),
      ).chosen
    : draftOrder.slice(0, room);
  const items = order.map((i) => byId.get(`${drafted.team[i]}|${drafted.items[i]}`) as RankedItem);
  const teams: ListTeam[] = order.map((i) => drafted.team[i] as ListTeam);
  for (const [slot, item] of [...pinnedAt].sort((x, y) => x[0] - y[0])) {
    const at = Math.min(slot, items.length);
    items.splice(at, 0, item);
    teams.splice(at, 0, "pinned");
  }
  return { items: items.slice(0, limit), teams: teams.slice(0, limit) };
}

/**
 * The why-not trace of an interleaved answer: the first variant's, except where the product stands, which only the
 * shown list can say (shown at its slot there, or not shown: then the first variant's reason, or `interleaved_out`
 * when that variant had shown it).
 */
export function interleavedWhyNot(trace: RankOutput["whyNot"], items: readonly RankedItem[]): RankOutput["whyNot"] {
  if (!trace) return trace;
  const at = items.findIndex((i) => i.productId === trace.productId);
  if (at >= 0) return { productId: trace.productId, status: "shown", position: at + 1, score: items[at]?.score ?? 0 };
  return trace.status === "shown" ? { productId: trace.productId, status: "interleaved_out" } : trace;
}
