// Deleting shared keys nobody can be served any more. Catalogue shards and popular/trending lists are written under
// version-prefixed names and never overwritten (docs/publishing.md), so without this every catalogue change or
// list change would leave its keys in KV forever. A shared key is garbage once neither the served pointer nor the
// pointer of any version a rollback may still go to names it; it is deleted SHARED_GC_GRACE_MS later, when no
// reader can still hold a pointer that names it (isolates re-read the pointer every few seconds and KV edge caches
// keep a value for at most a few minutes). Per-user and per-item keys are not concerned: they are overwritten in
// place and carry their own bounded history.
import type { Pointer } from "./codec.ts";
import type { CoordinatorState } from "./coordinator.ts";
import { catalogShardKey, popularListKey } from "./keys.ts";
import type { KvBudget } from "./kv-budget.ts";

/** 15 minutes: far beyond the ranking path's pointer cache (10 s) plus KV's propagation and cacheTtl (~2 min). */
export const SHARED_GC_GRACE_MS = 15 * 60_000;
/** Deletions per sweep: leaves room in the invocation's budget. */
export const SHARED_GC_BATCH = 500;

export interface GarbageKey {
  key: string;
  /** Not deleted before this time (epoch ms). */
  dueAt: number;
}

/** The shared keys a pointer names. */
export function sharedKeysOf(pointer: Pointer | null): string[] {
  if (!pointer) return [];
  const keys: string[] = [];
  const c = pointer.catalog;
  if (c) for (let s = 0; s < c.shards; s++) keys.push(catalogShardKey(c.version, s));
  if (pointer.popular.popular !== null) keys.push(popularListKey(pointer.popular.popular, "popular"));
  if (pointer.popular.trending !== null) keys.push(popularListKey(pointer.popular.trending, "trending"));
  return keys;
}

/** Keys that must stay: named by the served pointer or by a rollback target's. */
export function liveSharedKeys(state: CoordinatorState, targets: readonly number[]): Set<string> {
  const live = new Set(sharedKeysOf(state.pointer));
  for (const v of state.versions) if (targets.includes(v.version)) for (const k of sharedKeysOf(v.pointer)) live.add(k);
  return live;
}

/** The earliest due time of the queued keys, or null when nothing is queued. */
export function earliestDue(garbage: readonly GarbageKey[] | undefined): number | null {
  return (garbage ?? []).reduce<number | null>((min, g) => (min === null || g.dueAt < min ? g.dueAt : min), null);
}

/**
 * Adds to `state.garbage` every shared key a remembered version named that is no longer live (due at `dueAt`), and
 * drops queued keys that became live again. Returns the earliest due time, or null when nothing is queued.
 */
export function collectGarbage(state: CoordinatorState, targets: readonly number[], dueAt: number): number | null {
  const live = liveSharedKeys(state, targets);
  const queued = new Map((state.garbage ?? []).filter((g) => !live.has(g.key)).map((g) => [g.key, { ...g }]));
  for (const v of state.versions) {
    for (const key of sharedKeysOf(v.pointer)) {
      if (live.has(key)) continue;
      const g = queued.get(key);
      // A key already queued keeps the earlier of its two due times (a shorter grace applies at once).
      if (!g) queued.set(key, { key, dueAt });
      else if (dueAt < g.dueAt) g.dueAt = dueAt;
    }
  }
  state.garbage = [...queued.values()];
  return earliestDue(state.garbage);
}

/**
 * Deletes the due keys (at most SHARED_GC_BATCH and what the budget allows), re-checking that each is still not
 * live. Returns how many were deleted and when the next remaining key is due.
 */
export async function sweepGarbage(
  state: CoordinatorState,
  targets: readonly number[],
  kv: KvBudget,
  now: number,
): Promise<{ deleted: number; nextDueAt: number | null }> {
  const live = liveSharedKeys(state, targets);
  const remaining: GarbageKey[] = [];
  let deleted = 0;
  for (const g of state.garbage ?? []) {
    if (live.has(g.key)) continue;
    if (g.dueAt > now || deleted >= SHARED_GC_BATCH || kv.left < 1) {
      remaining.push(g);
      continue;
    }
    await kv.delete(g.key);
    deleted++;
  }
  state.garbage = remaining;
  return { deleted, nextDueAt: earliestDue(remaining) };
}
