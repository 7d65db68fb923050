// The stored shapes of a SessionState object, shared by the SQLite store, the merge math and the hand-over RPC.
// Plain data only (they cross RPC boundaries as structured clones).
import type { Interaction } from "./ecommerce.ts";
import type { RecentKind } from "./limits.ts";
import type { CurrentSession } from "./visit.ts";
import type { Horizon } from "./weights.ts";

export interface StoredInteraction extends Interaction {
  at: number;
  messageId: string;
  sessionId: string | null;
}

export interface AffinityRow {
  horizon: Horizon;
  token: string;
  value: number;
  at: number;
}

export interface RecentRow {
  kind: RecentKind;
  value: string;
  at: number;
}

/**
 * How a key relates to this object: `merged` (its state was merged in), `claimed` (it had no state; it now
 * forwards here), `elsewhere` (already merged into another user), `refused` (merging would create a cycle).
 * Every status means "do not ask again".
 */
export type MergeStatus = "merged" | "claimed" | "elsewhere" | "refused";

export interface MergedRow {
  key: string;
  status: MergeStatus;
  at: number;
}

export interface SeenRow {
  messageId: string;
  at: number;
  /**
   * The hand-off token of the record call that stored the id, kept through a merge so that the same call retried
   * against the merged user still finds it (absent: none given, or handed over by an earlier version).
   */
  attempt?: string;
}

/** Everything a user's state consists of, except the outbox (which each object drains itself). */
export interface PortableState {
  userKey: string;
  userId: string | null;
  createdAt: number;
  lastEventAt: number | null;
  session: CurrentSession | null;
  events: number;
  duplicates: number;
  interactions: StoredInteraction[];
  affinities: AffinityRow[];
  recent: RecentRow[];
  merged: MergedRow[];
  seen: SeenRow[];
}

/** What `handOver` answers. */
export type HandOver =
  /**
   * `again`: this object was already merged into the caller (it answers until released; the caller may have it).
   * `stamp`: drawn when the object marked itself merged, the same in every answer until it is erased (none from an
   * object marked before stamps existed): the caller merges a stamp once.
   * `unanswered` and `taken`: what of this object's own merges is still open (the hand-overs it asked for whose answer
   * never came, and the stamps of the states it merged whose release is not confirmed); the caller takes them over.
   */
  | {
      status: "handed-over";
      state: PortableState;
      again?: boolean;
      stamp?: string;
      unanswered?: Record<string, boolean>;
      taken?: Record<string, string>;
    }
  /** Nothing to merge; with `claim`, the key now forwards to the caller anyway. */
  | { status: "empty" }
  /** Already merged into the caller and its data released: nothing more to merge. */
  | { status: "released" }
  /** Merged into another object (`mergedInto`), which neither is the caller nor was named as merged into it (`via`). */
  | { status: "elsewhere"; mergedInto: string }
  | { status: "refused" }
  /**
   * This object is absorbing another one right now, so it does not hand itself over (two objects absorbing each
   * other at once would each forward to the other; one in the middle of a chain would leave what it absorbs
   * behind). Nothing is remembered: the next event carrying the id asks again.
   */
  | { status: "busy" };
