// Identity merge math: folds the state handed over by another object (a visitor's, or an aliased user's) into
// this user's state, without double counting. Pure.
//   - interactions: union by messageId; source interactions the target already has (or has seen) are skipped,
//     and their contribution is taken back out of the source's affinities before those are added;
//   - affinities: both decayed to the later update time and summed, per horizon;
//   - session: two visits within the session gap of each other become one (the earlier one's id survives);
//     otherwise the more recent visit is current and only its session affinities are kept;
//   - recent sets: union (latest time wins), carted minus what was purchased later, bounded;
//   - seen ids: union; counters: summed minus the overlap; merged keys: union plus the source itself.
import { addScore, combine } from "./decay.ts";
import { INTERACTIONS_MAX, RECENT_KINDS, RECENT_MAX, SESSION_GAP_MS } from "./limits.ts";
import type { AffinityRow, MergedRow, PortableState, RecentRow, StoredInteraction } from "./model.ts";
import type { CurrentSession } from "./visit.ts";
import { AFFINITY_WEIGHTS, HALF_LIFE_MS, type Horizon } from "./weights.ts";

/**
 * The target's state after a merge, in the shape it is stored in; `merged` holds the rows to add to the target's
 * merged keys (the source itself included) and `seen` the source ids the target did not have.
 */
export interface MergeResult extends Omit<PortableState, "userKey" | "userId"> {
  /** Source events the target already had. */
  overlap: number;
}

type SessionPlan = {
  session: CurrentSession | null;
  keepTarget: boolean;
  keepSource: boolean;
  rename: Map<string, string>;
};

function planSession(t: CurrentSession | null, s: CurrentSession | null): SessionPlan {
  const rename = new Map<string, string>();
  if (!s) return { session: t, keepTarget: true, keepSource: false, rename };
  if (!t) return { session: s, keepTarget: false, keepSource: true, rename };
  const overlapping = s.startedAt <= t.lastEventAt + SESSION_GAP_MS && t.startedAt <= s.lastEventAt + SESSION_GAP_MS;
  if (overlapping) {
    const first = s.startedAt < t.startedAt ? s : t;
    const other = first === s ? t : s;
    rename.set(other.id, first.id);
    return {
      session: {
        id: first.id,
        startedAt: Math.min(s.startedAt, t.startedAt),
        lastEventAt: Math.max(s.lastEventAt, t.lastEventAt),
        eventCount: s.eventCount + t.eventCount,
      },
      keepTarget: true,
      keepSource: true,
      rename,
    };
  }
  return s.lastEventAt > t.lastEventAt
    ? { session: s, keepTarget: false, keepSource: true, rename }
    : { session: t, keepTarget: true, keepSource: false, rename };
}

function affinityMap(rows: readonly AffinityRow[], horizon: Horizon): Map<string, AffinityRow> {
  return new Map(rows.filter((r) => r.horizon === horizon).map((r) => [r.token, { ...r }]));
}

export function mergeStates(
  target: PortableState,
  source: PortableState,
  alreadySeen: (messageId: string) => boolean,
  now: number,
): MergeResult {
  const targetIds = new Set(target.interactions.map((i) => i.messageId));
  const isOverlap = (id: string) => targetIds.has(id) || alreadySeen(id);
  const overlapping = source.interactions.filter((i) => isOverlap(i.messageId));
  const overlapIds = new Set([
    ...overlapping.map((i) => i.messageId),
    ...source.seen.filter((s) => alreadySeen(s.messageId)).map((s) => s.messageId),
  ]);

  const plan = planSession(target.session, source.session);

  // Source affinities minus what the overlapping interactions contributed to them.
  const horizons: Horizon[] = ["session", "longTerm"];
  const affinities: AffinityRow[] = [];
  for (const horizon of horizons) {
    const halfLife = HALF_LIFE_MS[horizon];
    const src = affinityMap(source.affinities, horizon);
    for (const i of overlapping) {
      if (horizon === "session" && i.sessionId !== source.session?.id) continue;
      const w = AFFINITY_WEIGHTS[i.kind];
      if (w === 0) continue;
      for (const token of i.tokens) {
        const prev = src.get(token);
        if (prev) src.set(token, { ...prev, ...addScore(prev, -w, i.at, halfLife) });
      }
    }
    const tgt = affinityMap(target.affinities, horizon);
    const useTarget = horizon === "longTerm" || plan.keepTarget;
    const useSource = horizon === "longTerm" || plan.keepSource;
    const tokens = new Set([...(useTarget ? tgt.keys() : []), ...(useSource ? src.keys() : [])]);
    for (const token of tokens) {
      const a = useTarget ? (tgt.get(token) ?? null) : null;
      const b = useSource ? (src.get(token) ?? null) : null;
      const sum = combine(a, b, halfLife);
      if (sum && sum.value > 0) affinities.push({ horizon, token, value: sum.value, at: sum.at });
    }
  }

  const renameSession = (i: StoredInteraction): StoredInteraction => {
    const to = i.sessionId ? plan.rename.get(i.sessionId) : undefined;
    return to ? { ...i, sessionId: to } : i;
  };
  const interactions = [...target.interactions, ...source.interactions.filter((i) => !isOverlap(i.messageId))]
    .map(renameSession)
    .sort((x, y) => y.at - x.at)
    .slice(0, INTERACTIONS_MAX);

  const recentMap = new Map<string, RecentRow>();
  for (const r of [...target.recent, ...source.recent]) {
    const id = `${r.kind}\u0000${r.value}`;
    const prev = recentMap.get(id);
    if (!prev || r.at > prev.at) recentMap.set(id, r);
  }
  const purchasedAt = new Map<string, number>();
  for (const r of recentMap.values()) if (r.kind === "purchased") purchasedAt.set(r.value, r.at);
  const recent: RecentRow[] = [];
  for (const kind of RECENT_KINDS) {
    const rows = [...recentMap.values()]
      .filter((r) => r.kind === kind)
      .filter((r) => kind !== "carted" || (purchasedAt.get(r.value) ?? -1) < r.at)
      .sort((x, y) => y.at - x.at)
      .slice(0, RECENT_MAX[kind]);
    recent.push(...rows);
  }

  const known = new Set(target.merged.map((m) => m.key));
  const merged: MergedRow[] = [];
  for (const m of source.merged) {
    if (m.status !== "merged" && m.status !== "claimed") continue;
    if (known.has(m.key) || m.key === target.userKey) continue;
    known.add(m.key);
    merged.push(m);
  }
  merged.push({ key: source.userKey, status: "merged", at: now });

  return {
    createdAt: Math.min(target.createdAt, source.createdAt),
    lastEventAt:
      target.lastEventAt === null
        ? source.lastEventAt
        : source.lastEventAt === null
          ? target.lastEventAt
          : Math.max(target.lastEventAt, source.lastEventAt),
    session: plan.session,
    events: target.events + Math.max(0, source.events - overlapIds.size),
    duplicates: target.duplicates + source.duplicates,
    interactions,
    affinities,
    recent,
    merged,
    seen: source.seen.filter((s) => !alreadySeen(s.messageId)),
    overlap: overlapIds.size,
  };
}
