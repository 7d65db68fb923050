// Team-draft interleaving (Radlinski, Kurup & Joachims 2008, "How does clickthrough data reflect retrieval
// quality?"): two rankers' lists merged into one, each item credited to the ranker ("team") that contributed it, so
// a click is a vote for that ranker. Outcome statistics as in Chapelle, Joachims, Radlinski & Yue 2012,
// "Large-scale validation and analysis of interleaved search evaluation". docs/experiments.md#interleaving.

import { binomialTwoSidedP } from "./stats.ts";

export type Team = "a" | "b";
/** A slot of an interleaved list: drafted for a team, or a pin, which both variants put there (credited to neither). */
export type ListTeam = Team | "pinned";

export interface Interleaved {
  items: string[];
  /** team[i]: the ranker that contributed items[i]. */
  team: Team[];
}

/** MurmurHash3's 32-bit finaliser. */
function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** The coins of successive rounds for `seed` (see coinFlips). */
function coinSource(seed: number): () => boolean {
  let word = seed >>> 0;
  let round = 0;
  return () => {
    if (round > 0 && round % 32 === 0) word = fmix32((word + 0x9e3779b9) >>> 0);
    const coin = ((word >>> (round % 32)) & 1) === 1;
    round++;
    return coin;
  };
}

/**
 * The coins of the first `rounds` rounds for `seed`: true → b picks first. Rounds 0–31 read the seed's bits, least
 * significant first (bit r); rounds 32–63 the bits of fmix32(seed + 0x9e3779b9), and so on, each word derived from
 * the previous one. A uniformly random seed (interleaveSeed) therefore makes every coin fair and independent, and a
 * test can write the coins of its first 32 rounds directly as a number.
 */
export function coinFlips(seed: number, rounds: number): boolean[] {
  const next = coinSource(seed);
  return Array.from({ length: rounds }, () => next());
}

/**
 * Team-draft interleaving of `a` and `b` into at most `limit` items. Each round, the round's coin (coinFlips)
 * decides which team picks first; then each team in turn appends its highest-ranked item not already in the list
 * (items both lists hold go to whichever team picks them first; duplicates inside one list are skipped alike).
 * When one team has nothing left to add, the other keeps picking alone, one item per round and without a coin,
 * until `limit` or until both are exhausted. The last round may be cut by `limit`: then only its first picker adds.
 * Same inputs and seed → the same list.
 */
export function teamDraft(a: readonly string[], b: readonly string[], limit: number, seed: number): Interleaved {
  const items: string[] = [];
  const team: Team[] = [];
  const taken = new Set<string>();
  let ia = 0;
  let ib = 0;
  const max = Math.max(0, Math.floor(limit));
  const coin = coinSource(seed);
  const next = (t: Team): string | undefined => {
    const list = t === "a" ? a : b;
    let i = t === "a" ? ia : ib;
    while (i < list.length && taken.has(list[i] as string)) i++;
    if (t === "a") ia = i;
    else ib = i;
    return list[i];
  };
  const pick = (t: Team) => {
    const item = next(t);
    if (item === undefined || items.length >= max) return;
    taken.add(item);
    items.push(item);
    team.push(t);
  };
  while (items.length < max) {
    const aLeft = next("a") !== undefined;
    const bLeft = next("b") !== undefined;
    if (!aLeft && !bLeft) break;
    if (aLeft && bLeft) {
      const bFirst = coin();
      pick(bFirst ? "b" : "a");
      pick(bFirst ? "a" : "b");
    } else pick(aLeft ? "a" : "b");
  }
  return { items, team };
}

export interface Credit {
  /** Clicked positions whose item team a contributed. */
  a: number;
  b: number;
  winner: Team | "tie";
}

/**
 * Credits the clicks of one impression: `clickedPositions` are 1-based positions in the interleaved list (as the
 * storefront reports them, `position` on Product Clicked); a position clicked twice counts once; positions outside
 * the list are ignored. The team with more credited clicks wins; equal counts (no clicks included) are a tie.
 */
export function credit(team: readonly Team[], clickedPositions: readonly number[]): Credit {
  let a = 0;
  let b = 0;
  for (const p of new Set(clickedPositions)) {
    const t = Number.isInteger(p) ? team[p - 1] : undefined;
    if (t === "a") a++;
    else if (t === "b") b++;
  }
  return { a, b, winner: a > b ? "a" : b > a ? "b" : "tie" };
}

export interface InterleavingOutcome {
  /** Every impression given. */
  impressions: number;
  /** Impressions without a credited click: not part of n (they say nothing about the preference). */
  noClicks: number;
  /** n = wins + losses + ties: impressions with at least one credited click. */
  n: number;
  /** Impressions a won (more credited clicks than b), b won, tied (equal, > 0). */
  wins: number;
  losses: number;
  ties: number;
  /** (wins + ties/2)/n − (losses + ties/2)/n = (wins − losses)/n, in [−1, 1]; > 0: a preferred. 0 when n = 0. */
  delta: number;
  /**
   * Chapelle et al.'s Δ_AB = (wins + ties/2)/n − 0.5 = delta / 2, in [−0.5, 0.5]: the share of impressions a wins,
   * counting a tie as half a win, minus the half it would get if users had no preference.
   */
  deltaAB: number;
  /** Two-sided sign test over the non-tied impressions: P(a split at least as uneven | no preference). */
  pValue: number;
}

/** The outcome of an interleaving experiment from each impression's credit. */
export function interleavingOutcome(perImpression: readonly Credit[]): InterleavingOutcome {
  let wins = 0;
  let losses = 0;
  let ties = 0;
  let noClicks = 0;
  for (const c of perImpression) {
    if (c.a === 0 && c.b === 0) noClicks++;
    else if (c.a > c.b) wins++;
    else if (c.b > c.a) losses++;
    else ties++;
  }
  const n = wins + losses + ties;
  const delta = n === 0 ? 0 : (wins + ties / 2) / n - (losses + ties / 2) / n;
  return {
    impressions: perImpression.length,
    noClicks,
    n,
    wins,
    losses,
    ties,
    delta,
    deltaAB: n === 0 ? 0 : (wins + ties / 2) / n - 0.5,
    pValue: binomialTwoSidedP(Math.min(wins, losses), wins + losses),
  };
}
