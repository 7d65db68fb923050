// Exponentially decayed scores, stored as (value at time `at`) and decayed lazily on read, so reading needs no
// write: score(now) = value × 2^(−(now − at) / halfLife). Pure.
//
// Adding and combining are order-independent (a late event or a merge gives the same score as in-order
// arrival), except for the floor at 0, which only matters when removals outweigh what was added.

export interface Decayed {
  value: number;
  /** Epoch ms the value refers to. */
  at: number;
}

/** Below this a score is treated as gone (its row is deleted). */
export const SCORE_EPSILON = 1e-6;

export function decayFactor(elapsedMs: number, halfLifeMs: number): number {
  return elapsedMs <= 0 ? 1 : 2 ** (-elapsedMs / halfLifeMs);
}

/** The score at `now` (never grows for a `now` before `at`). */
export function valueAt(score: Decayed, now: number, halfLifeMs: number): number {
  return score.value * decayFactor(now - score.at, halfLifeMs);
}

/** `score` plus `delta` that happened at `at`; the result refers to the later of the two times. Floors at 0. */
export function addScore(score: Decayed | null, delta: number, at: number, halfLifeMs: number): Decayed {
  if (!score) return { value: Math.max(0, delta), at };
  const t = Math.max(score.at, at);
  const value = score.value * decayFactor(t - score.at, halfLifeMs) + delta * decayFactor(t - at, halfLifeMs);
  return { value: Math.max(0, value), at: t };
}

/** The sum of two scores, both decayed to the later of their times. */
export function combine(a: Decayed | null, b: Decayed | null, halfLifeMs: number): Decayed | null {
  if (!a) return b;
  if (!b) return a;
  return addScore(a, b.value, b.at, halfLifeMs);
}

/**
 * A time-invariant sort key: log2(score(now)) + now/halfLife does not depend on `now`, so ordering stored rows
 * by it (through an index) orders them by their current score at any time, without decaying every row.
 */
export function rankOf(score: Decayed, halfLifeMs: number): number {
  if (score.value <= 0) return Number.MIN_SAFE_INTEGER;
  return Math.log2(score.value) + score.at / halfLifeMs;
}
