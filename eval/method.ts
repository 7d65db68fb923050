// The one interface every evaluated method implements: learn from training sessions, then score items for a
// query. Items a method does not score rank after the scored ones in the fixed tie order (eval/metrics.ts).
import type { ItemInfo, Session, SessionEvent } from "./data.ts";

export interface TrainData {
  sessions: readonly Session[];
  /** Titles, categories and prices when the data has them (UCI); empty otherwise. */
  catalog: ReadonlyMap<string, ItemInfo>;
  /** The training data's end: the latest event time (unix seconds), the batch recommenders' `asOf`. */
  asOf: number;
}

export interface Query {
  /** The current session so far, oldest first (protocol i: events 1 … p). */
  events: readonly SessionEvent[];
  /** The customer's earlier purchases, oldest first (protocol ii); empty when there is no known customer. */
  history: readonly SessionEvent[];
  user: string | null;
  /** When the recommendation is asked for (unix seconds). */
  now: number;
}

export interface Method {
  readonly name: string;
  fit(train: TrainData): void;
  /** Item → score, higher first; only positive scores count. `k` is how many the protocol will read. */
  score(query: Query, k: number): Map<string, number>;
}

/** A ranked list as scores (k, k−1, …), for methods that answer a list rather than scores. */
export function listScores(ids: readonly string[]): Map<string, number> {
  const out = new Map<string, number>();
  ids.forEach((id, i) => {
    if (!out.has(id)) out.set(id, ids.length - i);
  });
  return out;
}

/** The latest event time of the sessions. */
export function endOf(sessions: readonly Session[]): number {
  let t = Number.NEGATIVE_INFINITY;
  for (const s of sessions) for (const e of s.events) if (e.time > t) t = e.time;
  return t;
}
