// The three evaluation protocols (docs/relevance.md#protocols). Each runs several methods over the same
// predictions and reports per method its metrics and how long it took.

import { mulberry32 } from "../scripts/lib/prng.ts";
import { type Session, type SessionEvent, startOf } from "./data.ts";
import { endOf, type Method, type Query, type TrainData } from "./method.ts";
import { NextItemMetrics, NextPurchaseMetrics, OttoMetric, type OttoTruth, rankOf, topK } from "./metrics.ts";

export interface MethodResult {
  method: string;
  /** Training (fit) and prediction wall time. */
  fitMs: number;
  evalMs: number;
}

/** Items seen in training, sorted by id: the ranked universe and the fixed tie order. */
export function universeOf(sessions: readonly Session[]): { items: string[]; index: Map<string, number> } {
  const set = new Set<string>();
  for (const s of sessions) for (const e of s.events) set.add(e.item);
  const items = [...set].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  return { items, index: new Map(items.map((id, i) => [id, i])) };
}

export function trainData(sessions: readonly Session[], catalog: TrainData["catalog"] = new Map()): TrainData {
  return { sessions, catalog, asOf: endOf(sessions) };
}

const since = (t: number) => Math.round(performance.now() - t);

// ── (i) next item in session (session-rec) ──

/** Protocol (i)'s predictions: for each session and p = 1 … n−1, the query of events 1 … p and the target p+1. */
export function* nextItemCases(sessions: readonly Session[]): Generator<{ query: Query; target: string }> {
  for (const s of sessions)
    for (let p = 1; p < s.events.length; p++) {
      const events = s.events.slice(0, p);
      yield {
        query: { events, history: [], user: s.user, now: (events[p - 1] as SessionEvent).time },
        target: (s.events[p] as SessionEvent).item,
      };
    }
}

export interface NextItemResult extends MethodResult {
  predictions: number;
  hr: number;
  mrr: number;
}

/**
 * For each test session (the first `sessions` in file order) and each position p = 1 … n−1: the method gets events
 * 1 … p, all training items are ranked, the target is event p+1. HR@k, MRR@k; repeated items kept; no sampling.
 */
export function nextItem(
  methods: readonly Method[],
  train: TrainData,
  test: readonly Session[],
  options: { sessions?: number; k?: number } = {},
): NextItemResult[] {
  const k = options.k ?? 20;
  const { index } = universeOf(train.sessions);
  const sessions = test.slice(0, options.sessions ?? test.length);
  return methods.map((method) => {
    let t = performance.now();
    method.fit(train);
    const fitMs = since(t);
    t = performance.now();
    const metrics = new NextItemMetrics(k);
    for (const { query, target } of nextItemCases(sessions)) metrics.add(rankOf(target, method.score(query, k), index));
    return { method: method.name, fitMs, evalMs: since(t), ...metrics.result() };
  });
}

/** Per-prediction comparison of two methods under protocol (i) (docs/relevance.md#tuning). */
export interface OverlapResult {
  methods: [string, string];
  predictions: number;
  k: number;
  /** Predictions whose target both / only the first / only the second / neither has in its top k. */
  both: number;
  onlyFirst: number;
  onlySecond: number;
  neither: number;
  /** HR@k of each method, and of an oracle that takes whichever of the two has the target. */
  hr: [number, number];
  unionHr: number;
  /** Share of predictions whose target is in the second method's top `deep` (its candidates' reach). */
  deep: number;
  secondDeepShare: number;
}

/**
 * Protocol (i) for two methods side by side, prediction by prediction: who finds the target in the top k, and
 * how often the second has it within its top `deep`. The second method is asked once for `deep` items; its top k
 * is the head of that list.
 */
export function overlap(
  first: Method,
  second: Method,
  train: TrainData,
  test: readonly Session[],
  options: { sessions?: number; k?: number; deep?: number } = {},
): OverlapResult {
  const k = options.k ?? 20;
  const deep = Math.max(k, options.deep ?? 150);
  const { index } = universeOf(train.sessions);
  first.fit(train);
  second.fit(train);
  const out = { both: 0, onlyFirst: 0, onlySecond: 0, neither: 0, predictions: 0, secondDeep: 0 };
  for (const { query, target } of nextItemCases(test.slice(0, options.sessions ?? test.length))) {
    const a = rankOf(target, first.score(query, k), index);
    const b = rankOf(target, second.score(query, deep), index);
    const hitA = a !== null && a <= k;
    const hitB = b !== null && b <= k;
    out.predictions++;
    if (b !== null && b <= deep) out.secondDeep++;
    if (hitA && hitB) out.both++;
    else if (hitA) out.onlyFirst++;
    else if (hitB) out.onlySecond++;
    else out.neither++;
  }
  const n = Math.max(1, out.predictions);
  return {
    methods: [first.name, second.name],
    predictions: out.predictions,
    k,
    both: out.both,
    onlyFirst: out.onlyFirst,
    onlySecond: out.onlySecond,
    neither: out.neither,
    hr: [(out.both + out.onlyFirst) / n, (out.both + out.onlySecond) / n],
    unionHr: (out.both + out.onlyFirst + out.onlySecond) / n,
    deep,
    secondDeepShare: out.secondDeep / n,
  };
}

// ── (ii) next purchase per customer on a temporal split ──

export interface NextPurchaseResult extends MethodResult {
  users: number;
  recall: number;
  ndcg: number;
}

export interface Customer {
  user: string;
  /** Purchases before the cut, oldest first. */
  history: SessionEvent[];
  /** Distinct items bought after the cut that were seen in training. */
  future: Set<string>;
}

/**
 * Customers with purchases on both sides of `cut` (sessions are split by start time), sorted by id; the future is
 * what they buy from the cut to the end of the data, restricted to items seen in training.
 */
export function customersAt(sessions: readonly Session[], cut: number): { train: Session[]; customers: Customer[] } {
  const train = sessions.filter((s) => startOf(s) < cut);
  const known = new Set<string>();
  for (const s of train) for (const e of s.events) known.add(e.item);
  const byUser = new Map<string, Customer>();
  const get = (user: string) => {
    let c = byUser.get(user);
    if (!c) {
      c = { user, history: [], future: new Set() };
      byUser.set(user, c);
    }
    return c;
  };
  for (const s of sessions) {
    if (!s.user) continue;
    const c = get(s.user);
    if (startOf(s) < cut) c.history.push(...s.events);
    else for (const e of s.events) if (known.has(e.item)) c.future.add(e.item);
  }
  const customers = [...byUser.values()]
    .filter((c) => c.history.length > 0 && c.future.size > 0)
    .sort((a, b) => (a.user < b.user ? -1 : a.user > b.user ? 1 : 0));
  for (const c of customers) c.history.sort((a, b) => a.time - b.time);
  return { train, customers };
}

/** Each customer's top-k from their history (no current session) at the cut; Recall@k and NDCG@k. */
export function nextPurchase(
  methods: readonly Method[],
  train: TrainData,
  customers: readonly Customer[],
  cut: number,
  options: { users?: number; k?: number } = {},
): NextPurchaseResult[] {
  const k = options.k ?? 20;
  const { items } = universeOf(train.sessions);
  const chosen = customers.slice(0, options.users ?? customers.length);
  return methods.map((method) => {
    let t = performance.now();
    method.fit(train);
    const fitMs = since(t);
    t = performance.now();
    const metrics = new NextPurchaseMetrics(k);
    for (const c of chosen) {
      const scores = method.score({ events: [], history: c.history, user: c.user, now: cut }, k);
      metrics.add(topK(scores, k, items), c.future);
    }
    return { method: method.name, fitMs, evalMs: since(t), ...metrics.result() };
  });
}

// ── (iii) the OTTO metric ──

export interface OttoCase {
  session: string;
  input: SessionEvent[];
  truth: OttoTruth;
}

/**
 * OTTO's test construction: each session of ≥ 2 events is cut after a uniformly drawn position 1 … n−1 (seeded);
 * the method sees the events before the cut; truth: the first click after it, the items carted after it, the items
 * ordered after it.
 */
export function ottoCases(sessions: readonly Session[], seed = 42): OttoCase[] {
  const random = mulberry32(seed);
  const out: OttoCase[] = [];
  for (const s of sessions) {
    const n = s.events.length;
    if (n < 2) continue;
    const cut = 1 + Math.floor(random() * (n - 1));
    const after = s.events.slice(cut);
    out.push({
      session: s.id,
      input: s.events.slice(0, cut),
      truth: {
        clicks: after.find((e) => e.type === "view")?.item ?? null,
        carts: new Set(after.filter((e) => e.type === "cart").map((e) => e.item)),
        orders: new Set(after.filter((e) => e.type === "purchase").map((e) => e.item)),
      },
    });
  }
  return out;
}

export interface OttoResult extends MethodResult {
  sessions: number;
  clicks: number;
  carts: number;
  orders: number;
  score: number;
}

/** One top-20 per session (the same list for the three types), scored with the OTTO metric. */
export function otto(methods: readonly Method[], train: TrainData, cases: readonly OttoCase[]): OttoResult[] {
  const { items } = universeOf(train.sessions);
  return methods.map((method) => {
    let t = performance.now();
    method.fit(train);
    const fitMs = since(t);
    t = performance.now();
    const metric = new OttoMetric();
    for (const c of cases) {
      const last = c.input[c.input.length - 1] as SessionEvent;
      const list = topK(method.score({ events: c.input, history: [], user: null, now: last.time }, 20), 20, items);
      metric.add({ clicks: list, carts: list, orders: list }, c.truth);
    }
    return { method: method.name, fitMs, evalMs: since(t), ...metric.result() };
  });
}
