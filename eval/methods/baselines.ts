// The published baselines of session-based recommendation, re-implemented from their descriptions in Ludewig &
// Jannach (2018), "Evaluation of session-based recommendation algorithms", UMUAI 28(4–5), and Ludewig, Latifi,
// Jannach et al. (2021), "Empirical analysis of session-based recommendation algorithms", UMUAI 31(1):
// global popularity, association rules (AR), sequential rules (SR), session-based kNN (SKNN) and its
// vector-multiplication variant (V-SKNN); plus the customer's own repeat purchases for protocol (ii).
// docs/relevance.md#methods states each definition and its parameters.
import type { Session, SessionEvent } from "../data.ts";
import type { Method, Query, TrainData } from "../method.ts";

/** The sequence a session method reads: the current session, or the customer's history when there is none. */
const sequenceOf = (q: Query): readonly SessionEvent[] => (q.events.length > 0 ? q.events : q.history);

const lastItem = (q: Query): string | null => {
  const seq = sequenceOf(q);
  return seq.length > 0 ? (seq[seq.length - 1] as SessionEvent).item : null;
};

/** POP: every item scored by its number of training events. The same list for every query. */
export class Popularity implements Method {
  readonly name = "popularity";
  #scores = new Map<string, number>();
  fit(train: TrainData): void {
    const counts = new Map<string, number>();
    for (const s of train.sessions) for (const e of s.events) counts.set(e.item, (counts.get(e.item) ?? 0) + 1);
    // Only the best few hundred matter for a top-20; keeping them all makes rankOf linear in the catalogue.
    const best = [...counts].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1)).slice(0, 500);
    this.#scores = new Map(best);
  }
  score(): Map<string, number> {
    return this.#scores;
  }
}

/** The customer's own earlier purchases: by how often, then how recently, they were bought. */
export class RepeatPurchases implements Method {
  readonly name = "repeat";
  fit(): void {}
  score(q: Query): Map<string, number> {
    const out = new Map<string, number>();
    const n = q.history.length;
    q.history.forEach((e, i) => {
      // Count, plus a fraction < 1 that grows with the last position: recency breaks count ties only.
      const count = Math.floor(out.get(e.item) ?? 0) + 1;
      out.set(e.item, count + (i + 1) / (n + 1));
    });
    return out;
  }
}

type Rules = Map<string, Map<string, number>>;

function addRule(rules: Rules, from: string, to: string, w: number): void {
  let m = rules.get(from);
  if (!m) {
    m = new Map();
    rules.set(from, m);
  }
  m.set(to, (m.get(to) ?? 0) + w);
}

/**
 * AR: association rules of size two. Every ordered pair of events (p, q) of a training session with different
 * items, in either order, adds 1 to the rule p → q (co-occurrences counted per pair of events). The score of an
 * item is the weight of the rule from the session's last item to it.
 */
export class AssociationRules implements Method {
  readonly name = "ar";
  #rules: Rules = new Map();
  fit(train: TrainData): void {
    this.#rules = new Map();
    for (const s of train.sessions) {
      const items = s.events.map((e) => e.item);
      for (let i = 0; i < items.length; i++)
        for (let j = 0; j < items.length; j++) {
          if (i === j || items[i] === items[j]) continue;
          addRule(this.#rules, items[i] as string, items[j] as string, 1);
        }
    }
  }
  score(q: Query): Map<string, number> {
    const last = lastItem(q);
    return new Map(last === null ? [] : (this.#rules.get(last) ?? []));
  }
}

/**
 * SR: sequential rules. An item q that follows p in a training session within `maxSteps` steps adds 1/x to the
 * rule p → q, x being the number of steps from p to q (1 for the next event). Scored from the last item.
 */
export class SequentialRules implements Method {
  readonly name = "sr";
  readonly maxSteps: number;
  #rules: Rules = new Map();
  constructor(options: { maxSteps?: number } = {}) {
    this.maxSteps = options.maxSteps ?? 10;
  }
  fit(train: TrainData): void {
    this.#rules = new Map();
    for (const s of train.sessions) {
      const items = s.events.map((e) => e.item);
      for (let i = 0; i < items.length; i++)
        for (let x = 1; x <= this.maxSteps && i + x < items.length; x++) {
          if (items[i] === items[i + x]) continue;
          addRule(this.#rules, items[i] as string, items[i + x] as string, 1 / x);
        }
    }
  }
  score(q: Query): Map<string, number> {
    const last = lastItem(q);
    return new Map(last === null ? [] : (this.#rules.get(last) ?? []));
  }
}

export interface KnnOptions {
  /** Neighbours kept (k). */
  k?: number;
  /** Candidate sessions: the `sampleSize` most recent training sessions sharing an item with the current one. */
  sampleSize?: number;
}

/** The shared part of SKNN and V-SKNN: session sets, the item → sessions index, the recent-candidate sample. */
abstract class SessionKnn implements Method {
  abstract readonly name: string;
  readonly k: number;
  readonly sampleSize: number;
  /** Training sessions' distinct items, sessions sorted by start time (index = recency order). */
  protected sets: Array<ReadonlySet<string>> = [];
  #byItem = new Map<string, number[]>();

  constructor(options: KnnOptions = {}) {
    this.k = options.k ?? 100;
    this.sampleSize = options.sampleSize ?? 500;
  }

  fit(train: TrainData): void {
    const sorted = [...train.sessions].sort(
      (a: Session, b: Session) => (a.events[0]?.time ?? 0) - (b.events[0]?.time ?? 0),
    );
    this.sets = sorted.map((s) => new Set(s.events.map((e) => e.item)));
    this.#byItem = new Map();
    this.sets.forEach((set, i) => {
      for (const item of set) {
        let list = this.#byItem.get(item);
        if (!list) {
          list = [];
          this.#byItem.set(item, list);
        }
        list.push(i);
      }
    });
  }

  /** The most recent `sampleSize` sessions holding any of `items` (indices, most recent first). */
  protected candidates(items: Iterable<string>): number[] {
    const pool = new Set<number>();
    for (const item of items) {
      const list = this.#byItem.get(item);
      if (!list) continue;
      for (let i = list.length - 1, n = 0; i >= 0 && n < this.sampleSize; i--, n++) pool.add(list[i] as number);
    }
    return [...pool].sort((a, b) => b - a).slice(0, this.sampleSize);
  }

  /** Σ over the k most similar candidates of sim × 1[item in the neighbour]; ties between neighbours: more recent. */
  protected aggregate(similar: Array<[index: number, sim: number]>): Map<string, number> {
    similar.sort((a, b) => b[1] - a[1] || b[0] - a[0]);
    const out = new Map<string, number>();
    for (const [index, sim] of similar.slice(0, this.k)) {
      if (sim <= 0) break;
      for (const item of this.sets[index] as ReadonlySet<string>) out.set(item, (out.get(item) ?? 0) + sim);
    }
    return out;
  }

  abstract score(q: Query): Map<string, number>;
}

/**
 * SKNN: the current session and each candidate session as binary item vectors; similarity = cosine =
 * |s ∩ n| / √(|s|·|n|); score(i) = Σ_{n ∈ k nearest} sim(s, n) · 1[i ∈ n].
 */
export class SessionKnnCosine extends SessionKnn {
  readonly name = "sknn";
  score(q: Query): Map<string, number> {
    const current = new Set(sequenceOf(q).map((e) => e.item));
    if (current.size === 0) return new Map();
    const similar: Array<[number, number]> = [];
    for (const index of this.candidates(current)) {
      const set = this.sets[index] as ReadonlySet<string>;
      let common = 0;
      for (const item of current) if (set.has(item)) common++;
      similar.push([index, common / Math.sqrt(current.size * set.size)]);
    }
    return this.aggregate(similar);
  }
}

/**
 * V-SKNN: the current session as a real-valued vector whose weights decay linearly towards its start (the item at
 * position p of L weighs p/L, a repeated item its latest position's weight); similarity = dot product with the
 * candidate's binary vector; scored like SKNN.
 */
export class SessionKnnVector extends SessionKnn {
  readonly name = "v-sknn";
  score(q: Query): Map<string, number> {
    const seq = sequenceOf(q);
    const weights = new Map<string, number>();
    seq.forEach((e, i) => {
      weights.set(e.item, (i + 1) / seq.length);
    });
    if (weights.size === 0) return new Map();
    const similar: Array<[number, number]> = [];
    for (const index of this.candidates(weights.keys())) {
      const set = this.sets[index] as ReadonlySet<string>;
      let dot = 0;
      for (const [item, w] of weights) if (set.has(item)) dot += w;
      similar.push([index, dot]);
    }
    return this.aggregate(similar);
  }
}
