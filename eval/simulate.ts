// `npm run eval -- ab-sim`: the experiments simulation (docs/experiments.md#simulation). The UCI test invoices are
// replayed as visits through two rankers with a known effect — A, the popular list; B, the merged ranker — under a
// position-biased click model; exposures, clicks and orders are written into a throwaway Postgres as the Worker and
// the warehouse loader would write them, and the experiment report (src/experiments/report.ts) must detect the
// effect. The same visits then see team-draft interleaved lists, credited by the report's teamCredits(), and
// growing prefixes of the visits show how many each design needs to detect the effect.
//
// The click model: at step p of an invoice (the visitor has seen its events 1 … p) the visitor is shown the arm's
// top 10; if the invoice's event p+1 (the target) is at position k, the visitor clicks it with probability
// θ_k = 1/√k, nothing else is clicked; every clicked item is bought at the end of the invoice (the UCI line's price
// × quantity). The uniform draw of a step is a hash of (seed, invoice, p) — the same draw for the visitor's A/B
// list and its interleaved list (common random numbers) — so a run is a pure function of the seed.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { LOCAL_KEYS } from "../scripts/lib/local-keys.ts";
import { startStack } from "../scripts/lib/stack.ts";
import { isSaleLine } from "../scripts/lib/uci-retail.ts";
import { type Executor, writeBatch } from "../src/batch/bulk.ts";
import { mergeIdentities, warehouseRows } from "../src/batch/warehouse.ts";
import type { CollectedEvent } from "../src/collect/event.ts";
import { assign, interleaveSeed, unitInterval } from "../src/experiments/assign.ts";
import { type Experiment, type ExperimentsConfig, parseExperiments } from "../src/experiments/config.ts";
import { exposureEvent } from "../src/experiments/exposure.ts";
import { type Credit, credit, interleavingOutcome, type Team, teamDraft } from "../src/experiments/interleave.ts";
import { type ArmReport, type ExperimentReport, experimentReport, REPORT_DEFAULTS } from "../src/experiments/report.ts";
import { binomialTwoSidedP, ratioDifference } from "../src/experiments/stats.ts";
import { DEFAULT_RANKING_CONFIG } from "../src/rank/config.ts";
import { rank } from "../src/rank/core.ts";
import { type Database, drizzleOn, openPool } from "../src/stores/db.ts";
import { isoDay, parseUciLines, type Session } from "./data.ts";
import type { Query } from "./method.ts";
import { LastmileModels, LastmileRanker, type RequestShape } from "./methods/lastmile.ts";
import { trainData } from "./protocols.ts";
import { readText, readUci, UCI_FILE, UCI_NEXT_ITEM_SHAPE, uciSplit } from "./suites.ts";

/** Items shown per list. */
export const LIST_SIZE = 10;
/** Steps simulated per invoice: p = 1 … min(n − 1, MAX_STEPS) (the runtime; long wholesale invoices). */
export const MAX_STEPS = 20;
/** Seconds between a visit's steps, and from an exposure to its click. */
export const STEP_SECONDS = 10;
export const CLICK_DELAY_SECONDS = 5;
/** Replications of assignment, coins and clicks (lists fixed) behind the power of each prefix. */
export const REPLICATIONS = 200;
/** The prefixes of the visits the p-values are computed on (the last is all of them). */
export const PREFIXES = [2, 4, 6, 8, 10, 12, 15, 20, 25, 30, 40, 50, 75, 100, 200, 400, 800, 1600] as const;
export const ALPHA = 0.05;

export const AB_ID = "sim-ab";
export const IL_ID = "sim-il";
const EXPERIMENTS_VERSION = "ab-sim";
const SOURCE_ID = "ab-sim";

function experimentsOf(document: unknown): ExperimentsConfig {
  const parsed = parseExperiments(document, EXPERIMENTS_VERSION);
  if (!parsed.ok) throw new Error(JSON.stringify(parsed.issues));
  return parsed.config;
}

const VARIANTS = [
  { id: "popular", ranker: { kind: "popular" } },
  { id: "merged", ranker: { kind: "ranker" } },
];
/** The split (50/50, first variant = control) and the interleaved comparison (team a = popular, b = merged). */
export const AB_EXPERIMENT = experimentsOf({ experiments: [{ id: AB_ID, placement: "pdp", variants: VARIANTS }] })
  .experiments[0] as Experiment;
export const IL_EXPERIMENT = experimentsOf({
  experiments: [{ id: IL_ID, placement: "pdp", mode: "interleave", variants: VARIANTS }],
}).experiments[0] as Experiment;

// ── the click model and the known effect (pure) ──

/** θ_k = 1/√k: the probability that a visitor clicks the item at 1-based position k (0 outside the list). */
export function clickProbability(position: number | null): number {
  return position !== null && Number.isInteger(position) && position >= 1 && position <= LIST_SIZE
    ? 1 / Math.sqrt(position)
    : 0;
}

/** The 1-based position of `item` in the first LIST_SIZE of `list`, or null. */
export function positionOf(list: readonly string[], item: string): number | null {
  const i = list.indexOf(item);
  return i < 0 || i >= LIST_SIZE ? null : i + 1;
}

/** The step's uniform draw in [0, 1): a hash of (seed, visit, step), independent of the arm and the list. */
export function clickDraw(seed: number, visitId: string, p: number): number {
  return unitInterval(`ab-sim-click\u0000${seed}\u0000${visitId}\u0000${p}`);
}

/** The clicked position (the target's, when the draw falls under its θ), or null. */
export function clickOf(list: readonly string[], target: string, u: number): number | null {
  const k = positionOf(list, target);
  return k !== null && u < clickProbability(k) ? k : null;
}

/** A step shown both lists: what the visitor had seen, what came next, and the two arms' top lists. */
export interface StepLists {
  a: readonly string[];
  b: readonly string[];
  target: string;
}

export interface TrueEffect {
  steps: number;
  /** E[CTR] of each arm had every step been shown its list: the mean of θ at the target's position. */
  ctrA: number;
  ctrB: number;
  /** ctrB − ctrA. */
  difference: number;
}

/** The known effect: no randomness, only the lists and the targets. */
export function trueEffect(steps: readonly StepLists[]): TrueEffect {
  let a = 0;
  let b = 0;
  for (const s of steps) {
    a += clickProbability(positionOf(s.a, s.target));
    b += clickProbability(positionOf(s.b, s.target));
  }
  const n = steps.length;
  const ctrA = n > 0 ? a / n : 0;
  const ctrB = n > 0 ? b / n : 0;
  return { steps: n, ctrA, ctrB, difference: ctrB - ctrA };
}

/** The interleaved list of a step as the Worker builds it: teamDraft seeded by the answer's recId. */
export function interleaved(a: readonly string[], b: readonly string[], recId: string) {
  return teamDraft(a, b, LIST_SIZE, interleaveSeed(recId));
}

export interface InterleavingExpectation {
  impressions: number;
  /** Expected credited clicks per impression for each team: Σ θ at the target's position when that team placed it. */
  clicksA: number;
  clicksB: number;
  /** The share of credited (won) impressions b is expected to win: clicksB / (clicksA + clicksB). */
  shareB: number;
}

/** What the interleaved lists promise, exactly (no clicks drawn). */
export function interleavingExpectation(
  steps: ReadonlyArray<{ items: readonly string[]; team: readonly Team[]; target: string }>,
): InterleavingExpectation {
  let a = 0;
  let b = 0;
  for (const s of steps) {
    const k = positionOf(s.items, s.target);
    if (k === null) continue;
    if (s.team[k - 1] === "a") a += clickProbability(k);
    else b += clickProbability(k);
  }
  const n = steps.length;
  return {
    impressions: n,
    clicksA: n > 0 ? a / n : 0,
    clicksB: n > 0 ? b / n : 0,
    shareB: a + b > 0 ? b / (a + b) : 0.5,
  };
}

// ── visits ──

export interface SimStep extends StepLists {
  /** The visitor has seen events 1 … p; the target is event p+1. */
  p: number;
  /** Event p: the product in view (the pdp request's context). */
  context: string;
  /** The target's UCI line: unit price and quantity (its order line when clicked). */
  price: number;
  quantity: number;
}

export interface SimVisit {
  /** The invoice. */
  id: string;
  /** `u:<CustomerID>`, or `a:inv-<invoice>` for invoices without a customer. Also the assignment unit. */
  userKey: string;
  /** The invoice time (unix seconds). */
  time: number;
  steps: SimStep[];
}

/** Per step of the A/B run: the arm's list and the clicked position. */
export interface AbStep {
  shown: readonly string[];
  click: number | null;
}
/** Per step of the interleaved run. */
export interface IlStep {
  recId: string;
  items: readonly string[];
  team: readonly Team[];
  click: number | null;
  credit: Credit;
}

export interface VisitOutcome {
  arm: string;
  ab: AbStep[];
  il: IlStep[];
}

/** The recId of a step's answer: experiment, invoice, step (an exposure's message id is exposure-<recId>). */
export const recIdOf = (experimentId: string, visitId: string, p: number) => `${experimentId}-${visitId}-${p}`;

/**
 * One run of the click model over the visits: each visitor's arm by assign() on `ab`, its list and click at each
 * step; the interleaved list of `il` and its click with the same draw. Pure: a function of the visits and the seed.
 */
export function simulate(
  visits: readonly SimVisit[],
  seed: number,
  ab: Experiment = AB_EXPERIMENT,
  il: Experiment = IL_EXPERIMENT,
): VisitOutcome[] {
  const control = ab.variants[0]?.id;
  return visits.map((v) => {
    const { arm } = assign(ab, v.userKey);
    const abSteps: AbStep[] = [];
    const ilSteps: IlStep[] = [];
    for (const s of v.steps) {
      const u = clickDraw(seed, v.id, s.p);
      const shown = arm === control ? s.a : s.b;
      abSteps.push({ shown, click: clickOf(shown, s.target, u) });
      const recId = recIdOf(il.id, v.id, s.p);
      const { items, team } = interleaved(s.a, s.b, recId);
      const click = clickOf(items, s.target, u);
      ilSteps.push({ recId, items, team, click, credit: credit(team, click === null ? [] : [click]) });
    }
    return { arm, ab: abSteps, il: ilSteps };
  });
}

// ── fewer sessions: the statistics of prefixes of the visits ──

/** Per visit, the counts the prefix statistics add up. */
interface VisitCounts {
  inB: boolean;
  exposures: number;
  clicked: number;
  /** Impressions a won, b won (ties say nothing, as in the sign test). */
  wins: number;
  losses: number;
}

function countsOf(o: VisitOutcome, control: string): VisitCounts {
  let wins = 0;
  let losses = 0;
  for (const s of o.il) {
    if (s.credit.winner === "a") wins++;
    else if (s.credit.winner === "b") losses++;
  }
  return {
    inB: o.arm !== control,
    exposures: o.ab.length,
    clicked: o.ab.filter((s) => s.click !== null).length,
    wins,
    losses,
  };
}

export interface PrefixStats {
  visits: number;
  /** A/B: B − A CTR difference and its two-sided p-value, errors over visits (null below two visits per arm). */
  abDifference: number | null;
  abP: number | null;
  /** Interleaving: impressions a won, b won; the sign test's p-value. */
  wins: number;
  losses: number;
  ilP: number;
}

/** The statistics of the first n visits for each n of `prefixes`. */
export function prefixStats(
  outcomes: readonly VisitOutcome[],
  prefixes: readonly number[],
  control: string,
  /** Visit i's visitor: errors are over visitors, as the report's (absent: each visit its own visitor). */
  visitorOf: (i: number) => string = (i) => String(i),
) {
  const counts = outcomes.map((o) => countsOf(o, control));
  const out: PrefixStats[] = [];
  let i = 0;
  // Per arm, the per-visitor sums of the delta-method error (x = clicked exposures, y = exposures of a visitor): a
  // visitor's exposures are not independent trials (as in the report). A visitor's later visit replaces its terms.
  const sums = () => ({ n: 0, sumX: 0, sumY: 0, sumXX: 0, sumYY: 0, sumXY: 0 });
  const acc = { a: sums(), b: sums(), wins: 0, losses: 0 };
  const perVisitor = new Map<string, { x: number; y: number }>();
  for (const n of prefixes) {
    for (; i < Math.min(n, counts.length); i++) {
      const c = counts[i] as VisitCounts;
      const arm = c.inB ? acc.b : acc.a;
      if (c.exposures > 0) {
        const who = visitorOf(i);
        const old = perVisitor.get(who);
        if (old) {
          arm.sumXX -= old.x * old.x;
          arm.sumYY -= old.y * old.y;
          arm.sumXY -= old.x * old.y;
        } else arm.n++;
        const x = (old?.x ?? 0) + c.clicked;
        const y = (old?.y ?? 0) + c.exposures;
        perVisitor.set(who, { x, y });
        arm.sumX += c.clicked;
        arm.sumY += c.exposures;
        arm.sumXX += x * x;
        arm.sumYY += y * y;
        arm.sumXY += x * y;
      }
      acc.wins += c.wins;
      acc.losses += c.losses;
    }
    const d = acc.a.n >= 2 && acc.b.n >= 2 ? ratioDifference(acc.b, acc.a) : null;
    out.push({
      visits: Math.min(n, counts.length),
      abDifference: d?.difference ?? null,
      abP: d?.pValue ?? null,
      wins: acc.wins,
      losses: acc.losses,
      // interleavingOutcome's sign test, on the tallies.
      ilP: binomialTwoSidedP(Math.min(acc.wins, acc.losses), acc.wins + acc.losses),
    });
  }
  return out;
}

/**
 * The smallest prefix from which every prefix (this one and all larger ones) detects: p < alpha and the estimate on
 * the side of the true effect (B better); null if none.
 */
export function detectionVisits(
  rows: ReadonlyArray<{ visits: number; p: number | null; right: boolean }>,
  alpha: number = ALPHA,
): number | null {
  let found: number | null = null;
  for (let i = rows.length - 1; i >= 0; i--) {
    const r = rows[i] as { visits: number; p: number | null; right: boolean };
    if (r.p === null || r.p >= alpha || !r.right) break;
    found = r.visits;
  }
  return found;
}

/** A/B and interleaving rows of detectionVisits: B − A > 0, merged (team b) wins more than popular. */
export const abRows = (rows: readonly PrefixStats[]) =>
  rows.map((r) => ({ visits: r.visits, p: r.abP, right: (r.abDifference ?? 0) > 0 }));
export const ilRows = (rows: readonly PrefixStats[]) =>
  rows.map((r) => ({ visits: r.visits, p: r.ilP, right: r.losses > r.wins }));

/** The prefixes for `total` visits: PREFIXES below it, then all of them. */
export function prefixesFor(total: number): number[] {
  return [...PREFIXES.filter((n) => n < total), total];
}

export interface Power {
  replications: number;
  /**
   * Per prefix, the share of replications that detect (p < alpha, the right sign) — and, with B's lists replaced by
   * A's (no effect: an A/A test), the share with p < alpha either way: the test's real false-positive rate.
   */
  byPrefix: Array<{
    visits: number;
    ab: number;
    interleaving: number;
    abFalsePositive: number;
    interleavingFalsePositive: number;
  }>;
  /** The median (and quartiles) of the visits each design needed to detect the effect (detectionVisits). */
  ab: Quantiles;
  interleaving: Quantiles;
}

export interface Quantiles {
  median: number | null;
  q1: number | null;
  q3: number | null;
  /** Replications that never detect it for good. */
  never: number;
}

function quantiles(values: Array<number | null>): Quantiles {
  // Never detected counts as +∞ (it sorts last); a quantile that lands there is null.
  const sorted = values.map((v) => v ?? Number.POSITIVE_INFINITY).sort((x, y) => x - y);
  const at = (q: number) => {
    const v = sorted[Math.min(sorted.length - 1, Math.floor(q * (sorted.length - 1) + 0.5))];
    return v === undefined || !Number.isFinite(v) ? null : v;
  };
  return { median: at(0.5), q1: at(0.25), q3: at(0.75), never: values.filter((v) => v === null).length };
}

/** Each replication's prefix statistics: its own seed, assignment (experiment id `<id>-r<r>`) and coins. */
function replicate(visits: readonly SimVisit[], seed: number, replications: number, prefixes: readonly number[]) {
  const control = AB_EXPERIMENT.variants[0]?.id ?? "";
  const out: PrefixStats[][] = [];
  for (let r = 1; r <= replications; r++) {
    const ab = { ...AB_EXPERIMENT, id: `${AB_ID}-r${r}` };
    const il = { ...IL_EXPERIMENT, id: `${IL_ID}-r${r}` };
    out.push(
      prefixStats(simulate(visits, seed + r * 7919, ab, il), prefixes, control, (i) => visits[i]?.userKey ?? ""),
    );
  }
  return out;
}

/**
 * The power of each design on each prefix: the click model replayed `replications` times on the same lists, each
 * replication with a new random split and new interleaving coins; then the same replications with no effect.
 */
export function power(visits: readonly SimVisit[], seed: number, replications: number): Power {
  const prefixes = prefixesFor(visits.length);
  const runs = replicate(visits, seed, replications, prefixes);
  const noEffect = visits.map((v) => ({ ...v, steps: v.steps.map((s) => ({ ...s, b: s.a })) }));
  const nulls = replicate(noEffect, seed, replications, prefixes);
  const share = (rows: PrefixStats[][], i: number, hit: (r: PrefixStats) => boolean) =>
    rows.filter((x) => hit(x[i] as PrefixStats)).length / Math.max(1, rows.length);
  const below = (p: number | null) => p !== null && p < ALPHA;
  return {
    replications,
    byPrefix: prefixes.map((visits, i) => ({
      visits,
      ab: share(runs, i, (r) => below(r.abP) && (r.abDifference ?? 0) > 0),
      interleaving: share(runs, i, (r) => below(r.ilP) && r.losses > r.wins),
      abFalsePositive: share(nulls, i, (r) => below(r.abP)),
      interleavingFalsePositive: share(nulls, i, (r) => below(r.ilP)),
    })),
    ab: quantiles(runs.map((rows) => detectionVisits(abRows(rows)))),
    interleaving: quantiles(runs.map((rows) => detectionVisits(ilRows(rows)))),
  };
}

// ── building the visits from the UCI test split ──

/** Sale lines of the given invoices, in file order: stock code, unit price, quantity. */
function invoiceLines(invoices: ReadonlySet<string>): Map<string, Array<{ item: string; price: number; qty: number }>> {
  const out = new Map<string, Array<{ item: string; price: number; qty: number }>>();
  for (const line of parseUciLines(readText(UCI_FILE))) {
    if (!invoices.has(line.invoice) || !isSaleLine(line)) continue;
    const list = out.get(line.invoice) ?? [];
    list.push({ item: line.stockCode, price: line.unitPrice, qty: line.quantity });
    out.set(line.invoice, list);
  }
  return out;
}

/**
 * The visits: each test invoice, its first MAX_STEPS steps, with the top LIST_SIZE of A and B at each. A ranks like
 * the experiments' popular variant — no visitor data (no session, no batch list) — with the `popular` source only;
 * B is the merged ranker with the request shape of the UCI next-item protocol.
 */
export function buildVisits(
  test: readonly Session[],
  shared: LastmileModels,
  shape: RequestShape,
  catalogPrice: (item: string) => number | null,
): SimVisit[] {
  const merged = new LastmileRanker(shared, { shape });
  const popular = new LastmileRanker(shared, { name: "popular", shape, sources: ["popular"] });
  const lines = invoiceLines(new Set(test.map((s) => s.id)));
  return test.map((s) => {
    // The session's events are a subsequence of the invoice's sale lines (same order): match them in turn.
    const raw = lines.get(s.id) ?? [];
    let j = 0;
    const lineOf = s.events.map((e) => {
      while (j < raw.length && raw[j]?.item !== e.item) j++;
      const l = raw[j];
      if (l) j++;
      return l ? { price: l.price, quantity: l.qty } : { price: catalogPrice(e.item) ?? 0, quantity: 1 };
    });
    const steps: SimStep[] = [];
    for (let p = 1; p < s.events.length && p <= MAX_STEPS; p++) {
      const events = s.events.slice(0, p);
      const last = events[p - 1] as (typeof events)[number];
      const q: Query = { events, history: [], user: s.user, now: last.time };
      const b = merged.input(q, LIST_SIZE);
      const a = popular.input(q, LIST_SIZE);
      const line = lineOf[p] as { price: number; quantity: number };
      steps.push({
        p,
        context: last.item,
        target: (s.events[p] as (typeof events)[number]).item,
        a: rank({ ...a.input, session: null, batch: null, buyAgain: null }, a.config).items.map((i) => i.productId),
        b: rank(b.input, b.config).items.map((i) => i.productId),
        price: line.price,
        quantity: line.quantity,
      });
    }
    return { id: s.id, userKey: s.user ? `u:${s.user}` : `a:inv-${s.id}`, time: s.events[0]?.time ?? 0, steps };
  });
}

// ── events as the Worker and the storefront would send them ──

function trackEvent(
  messageId: string,
  userKey: string,
  event: string,
  properties: Record<string, unknown>,
  atMs: number,
): CollectedEvent {
  const at = new Date(atMs).toISOString();
  const isUser = userKey.startsWith("u:");
  return {
    messageId,
    type: "track",
    userId: isUser ? userKey.slice(2) : null,
    anonymousId: isUser ? null : userKey.slice(2),
    previousId: null,
    groupId: null,
    event,
    name: null,
    properties,
    traits: {},
    context: { library: { name: "lastmile-eval", version: "ab-sim/1" } },
    timestamp: at,
    originalTimestamp: null,
    sentAt: null,
    receivedAt: at,
    sourceId: SOURCE_ID,
  };
}

const stepMs = (v: SimVisit, p: number) => (v.time + p * STEP_SECONDS) * 1000;

/**
 * The events of one visit: an exposure per step (exposureEvent, as the visitor's object records it), a Product
 * Clicked naming the answer's rec_id CLICK_DELAY_SECONDS after each clicked list, and — `orders` — one Order
 * Completed of the clicked lines after the last step.
 */
export function visitEvents(
  v: SimVisit,
  experiment: Experiment,
  arm: string,
  steps: ReadonlyArray<{ items: readonly string[]; team?: readonly Team[]; click: number | null }>,
  orders: boolean,
): CollectedEvent[] {
  const out: CollectedEvent[] = [];
  const bought: Array<{ product_id: string; price: number; quantity: number }> = [];
  steps.forEach((s, i) => {
    const step = v.steps[i] as SimStep;
    const recId = recIdOf(experiment.id, v.id, step.p);
    const at = stepMs(v, step.p);
    out.push(
      exposureEvent({
        recId,
        userKey: v.userKey,
        placement: experiment.placement,
        mode: "recommend",
        productIds: s.items,
        context: [step.context],
        experiment: {
          id: experiment.id,
          arm,
          version: EXPERIMENTS_VERSION,
          ...(s.team ? { teams: s.team } : {}),
        },
        configVersion: DEFAULT_RANKING_CONFIG.version,
        snapshotVersion: null,
        now: at,
      }),
    );
    if (s.click === null) return;
    out.push(
      trackEvent(
        `click-${recId}`,
        v.userKey,
        "Product Clicked",
        { product_id: step.target, position: s.click, price: step.price, rec_id: recId },
        at + CLICK_DELAY_SECONDS * 1000,
      ),
    );
    bought.push({ product_id: step.target, price: step.price, quantity: step.quantity });
  });
  if (orders && bought.length > 0) {
    const last = v.steps[steps.length - 1]?.p ?? 0;
    out.push(
      trackEvent(
        `order-${experiment.id}-${v.id}`,
        v.userKey,
        "Order Completed",
        {
          order_id: `${experiment.id}-${v.id}`,
          revenue: bought.reduce((s, l) => s + l.price * l.quantity, 0),
          products: bought,
        },
        stepMs(v, last + 1),
      ),
    );
  }
  return out;
}

/** Events → warehouse rows (the loader's warehouseRows) → Postgres, in batches. */
async function load(db: Executor, events: readonly CollectedEvent[]): Promise<number> {
  let written = 0;
  for (let i = 0; i < events.length; i += 2000) {
    const rows = events.slice(i, i + 2000).map((e) => warehouseRows(e));
    const w = await writeBatch(db, {
      events: rows.map((r) => r.event),
      interactions: rows.flatMap((r) => r.interactions),
      identities: mergeIdentities(rows.flatMap((r) => r.identities)),
    });
    written += w.events;
  }
  return written;
}

/** Per arm, what the report should count: visitors, exposures, clicked exposures, converters, revenue. */
export function armTotals(visits: readonly SimVisit[], outcomes: readonly VisitOutcome[]) {
  const arms = new Map<
    string,
    { visitors: Set<string>; converters: Set<string>; exposures: number; clicked: number; revenue: number }
  >();
  visits.forEach((v, i) => {
    const o = outcomes[i] as VisitOutcome;
    let e = arms.get(o.arm);
    if (!e) {
      e = { visitors: new Set(), converters: new Set(), exposures: 0, clicked: 0, revenue: 0 };
      arms.set(o.arm, e);
    }
    e.visitors.add(v.userKey);
    e.exposures += o.ab.length;
    o.ab.forEach((s, j) => {
      if (s.click === null) return;
      const step = v.steps[j] as SimStep;
      e.clicked++;
      e.revenue += step.price * step.quantity;
      e.converters.add(v.userKey);
    });
  });
  return new Map(
    [...arms].map(([arm, e]) => [
      arm,
      {
        visitors: e.visitors.size,
        converters: e.converters.size,
        exposures: e.exposures,
        clicked: e.clicked,
        revenue: e.revenue,
      },
    ]),
  );
}

/** The report as the admin endpoint computes it (experimentReport runs its own read transaction). */
async function report(db: Database, experiment: Experiment): Promise<ExperimentReport> {
  return experimentReport(db, experiment, REPORT_DEFAULTS);
}

// ── the suite ──

export interface AbSimOptions {
  seed: number;
  /** The first N test invoices (default all). */
  sessions?: number;
  testDays?: number;
  replications?: number;
  log?: (line: string) => void;
}

const pick = (r: ArmReport) => ({
  arm: r.arm,
  visitors: r.visitors,
  exposures: r.exposures,
  clickedExposures: r.clickedExposures,
  converters: r.converters,
  revenue: Math.round(r.revenue * 100) / 100,
});

/** `npm run eval -- ab-sim`: builds the visits, writes both experiments to Postgres, reports. */
export async function runAbSim(options: AbSimOptions): Promise<Record<string, unknown>> {
  const started = performance.now();
  const log = options.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const timings: Record<string, number> = {};
  const lap = (name: string, t: number) => {
    timings[name] = Math.round(performance.now() - t);
    log(`ab-sim: ${name} ${(timings[name] / 1000).toFixed(1)} s`);
  };
  let t = performance.now();
  const { train, test, cut } = uciSplit(options.testDays ?? 30);
  const { catalog } = readUci();
  const shared = new LastmileModels();
  shared.fit(trainData(train, catalog));
  lap("fitMs", t);
  t = performance.now();
  const sessions = test.slice(0, options.sessions ?? test.length);
  const visits = buildVisits(sessions, shared, UCI_NEXT_ITEM_SHAPE, (id) => catalog.get(id)?.price ?? null);
  lap("listsMs", t);

  t = performance.now();
  const outcomes = simulate(visits, options.seed);
  const allSteps = visits.flatMap((v) => v.steps);
  const truth = trueEffect(allSteps);
  const control = AB_EXPERIMENT.variants[0]?.id ?? "";
  const armSteps = (inB: boolean) => visits.flatMap((v, i) => ((outcomes[i]?.arm !== control) === inB ? v.steps : []));
  const given = { a: trueEffect(armSteps(false)), b: trueEffect(armSteps(true)) };
  const expectedGivenAssignment = {
    ctrA: given.a.ctrA,
    ctrB: given.b.ctrB,
    difference: given.b.ctrB - given.a.ctrA,
  };
  const ilExpected = interleavingExpectation(
    visits.flatMap((v, i) =>
      v.steps.map((s, j) => {
        const x = outcomes[i]?.il[j] as IlStep;
        return { items: x.items, team: x.team, target: s.target };
      }),
    ),
  );
  // What the SQL report must find, counted in TypeScript from the same outcomes.
  const expectedArms = armTotals(visits, outcomes);
  const ilTally = interleavingOutcome(outcomes.flatMap((o) => o.il.map((s) => s.credit)));
  const prefixes = prefixesFor(visits.length);
  const rows = prefixStats(outcomes, prefixes, control, (i) => visits[i]?.userKey ?? "");
  const replications = options.replications ?? REPLICATIONS;
  const pw = power(visits, options.seed, replications);
  lap("simulateMs", t);

  // ── Postgres: the A/B run, its report; then the interleaved run, its report ──
  t = performance.now();
  const stateDir = mkdtempSync(join(tmpdir(), "lastmile-ab-sim-"));
  let ab: ExperimentReport;
  let il: ExperimentReport;
  const written = { ab: 0, interleaving: 0 };
  try {
    const stack = await startStack({
      stateDir,
      database: "lastmile_ab_sim",
      redisToken: LOCAL_KEYS.redisToken,
      persistRedis: false,
    });
    try {
      const pool = openPool({ databaseUrl: stack.vars.DATABASE_URL, localWsProxy: stack.vars.NEON_LOCAL_WS_PROXY });
      try {
        const db = drizzleOn(pool);
        lap("databaseMs", t);
        t = performance.now();
        written.ab = await load(
          db,
          visits.flatMap((v, i) => {
            const o = outcomes[i] as VisitOutcome;
            return visitEvents(
              v,
              AB_EXPERIMENT,
              o.arm,
              o.ab.map((s) => ({ items: s.shown, click: s.click })),
              true,
            );
          }),
        );
        await pool.query("vacuum analyze events, interactions");
        lap("writeAbMs", t);
        t = performance.now();
        ab = await report(db, AB_EXPERIMENT);
        lap("reportAbMs", t);
        // The interleaved visits happen at the same times to the same visitors: a fresh warehouse, so that the
        // split's clicks cannot be attributed to the interleaved exposures (or the other way round).
        t = performance.now();
        await pool.query("truncate events, interactions");
        written.interleaving = await load(
          db,
          visits.flatMap((v, i) => {
            const o = outcomes[i] as VisitOutcome;
            return visitEvents(
              v,
              IL_EXPERIMENT,
              "interleaved",
              o.il.map((s) => ({ items: s.items, team: s.team, click: s.click })),
              false,
            );
          }),
        );
        await pool.query("vacuum analyze events, interactions");
        lap("writeInterleavingMs", t);
        t = performance.now();
        il = await report(db, IL_EXPERIMENT);
        lap("reportInterleavingMs", t);
      } finally {
        await pool.end();
      }
    } finally {
      await stack.stop();
    }
  } finally {
    rmSync(stateDir, { recursive: true, force: true });
  }

  const abMatches = ab.arms.every((r) => {
    const e = expectedArms.get(r.arm);
    return (
      e !== undefined &&
      e.visitors === r.visitors &&
      e.exposures === r.exposures &&
      e.clicked === r.clickedExposures &&
      e.converters === r.converters &&
      Math.abs(e.revenue - r.revenue) < 1e-6 * Math.max(1, e.revenue)
    );
  });
  const ilOut = il.interleaving;
  const ilMatches =
    ilOut !== null &&
    ilOut.wins === ilTally.wins &&
    ilOut.losses === ilTally.losses &&
    ilOut.ties === ilTally.ties &&
    ilOut.impressions === ilTally.impressions;
  const treatment = ab.arms.find((r) => r.arm !== control);
  const ctr = treatment?.vsControl?.ctr ?? null;
  return {
    protocol: "ab-sim",
    data: "uci-online-retail invoices",
    cut: isoDay(cut),
    seed: options.seed,
    trainSessions: train.length,
    visits: visits.length,
    visitors: new Set(visits.map((v) => v.userKey)).size,
    steps: allSteps.length,
    maxStepsPerVisit: MAX_STEPS,
    listSize: LIST_SIZE,
    clickModel: "target at position k ≤ 10 clicked with probability 1/√k; clicked lines bought at the invoice's end",
    variants: {
      a: "popular: rank() with the popular source only, no visitor data",
      b: `merged: the merged ranker, request shape ${JSON.stringify(UCI_NEXT_ITEM_SHAPE)}`,
    },
    ab: {
      experiment: AB_ID,
      report: ab,
      ctrDifference: ctr,
      detected: ctr?.low != null && ctr.low > 0,
      trueEffect: truth,
      expectedGivenAssignment,
      sqlMatchesSimulation: abMatches,
      eventsWritten: written.ab,
    },
    interleaving: {
      experiment: IL_ID,
      outcome: ilOut,
      expected: ilExpected,
      sqlMatchesSimulation: ilMatches,
      eventsWritten: written.interleaving,
    },
    sessions: {
      prefixes: rows.map((r, i) => {
        const x = pw.byPrefix[i];
        return {
          ...r,
          abPower: x?.ab,
          interleavingPower: x?.interleaving,
          abFalsePositive: x?.abFalsePositive,
          interleavingFalsePositive: x?.interleavingFalsePositive,
        };
      }),
      detection: { ab: detectionVisits(abRows(rows)), interleaving: detectionVisits(ilRows(rows)) },
      replications: { n: pw.replications, ab: pw.ab, interleaving: pw.interleaving },
    },
    arms: ab.arms.map(pick),
    timings,
    totalMs: Math.round(performance.now() - started),
  };
}

// ── markdown ──

const f4 = (x: number) => x.toFixed(4);
const f2 = (x: number) => x.toFixed(2);
/** A p-value; 0 is below what a double holds (< 1e-300). */
const pv = (p: number | null | undefined) =>
  p === null || p === undefined ? "–" : p === 0 ? "< 1e-300" : p < 1e-4 ? p.toExponential(1) : p.toFixed(4);
const ci = (x: { low: number | null; high: number | null }, f: (n: number) => string) =>
  x.low === null || x.high === null ? "–" : `[${f(x.low)}, ${f(x.high)}]`;
const visitsOrNever = (v: number | null) => (v === null ? "not within the data" : `${v} visits`);

/** The suite's tables. */
export function abSimMarkdown(r: Record<string, unknown>): string {
  const ab = r.ab as {
    report: ExperimentReport;
    ctrDifference: {
      difference: number;
      low: number | null;
      high: number | null;
      pValue: number | null;
      relativeLift: number | null;
    } | null;
    detected: boolean;
    trueEffect: TrueEffect;
    expectedGivenAssignment: { ctrA: number; ctrB: number; difference: number };
    sqlMatchesSimulation: boolean;
  };
  const il = r.interleaving as {
    outcome: (ReturnType<typeof interleavingOutcome> & { a: string; b: string }) | null;
    expected: InterleavingExpectation;
    sqlMatchesSimulation: boolean;
  };
  const s = r.sessions as {
    prefixes: Array<
      PrefixStats & {
        abPower?: number;
        interleavingPower?: number;
        abFalsePositive?: number;
        interleavingFalsePositive?: number;
      }
    >;
    detection: { ab: number | null; interleaving: number | null };
    replications: { n: number; ab: Quantiles; interleaving: Quantiles };
  };
  const out: string[] = [];
  out.push(
    `ab-sim: ${r.data} from ${r.cut}, seed ${r.seed}: ${r.visits} visits (invoices) of ${r.visitors} visitors, ` +
      `${r.steps} steps (at most ${r.maxStepsPerVisit} per invoice); top ${r.listSize}, θ_k = 1/√k`,
    "",
    `### A/B (${AB_ID}: popular vs merged, 50/50; the SQL report)`,
    "",
    "| arm | visitors | exposures | CTR [95 % CI] | conversion [95 % CI] | revenue / visitor [95 % CI] |",
    "|---|---|---|---|---|---|",
  );
  for (const a of ab.report.arms)
    out.push(
      `| ${a.arm} | ${a.visitors} | ${a.exposures} | ${f4(a.ctr.rate)} ${ci(a.ctr, f4)} | ${f4(a.conversion.rate)} ${ci(a.conversion, f4)} | ${
        a.revenuePerVisitor ? `${f2(a.revenuePerVisitor.mean)} ${ci(a.revenuePerVisitor, f2)}` : "–"
      } |`,
    );
  const t = ab.report.arms.find((a) => a.vsControl);
  out.push("");
  if (ab.ctrDifference && t?.vsControl) {
    const v = t.vsControl;
    out.push(
      "| B − A | difference [95 % CI] | p-value |",
      "|---|---|---|",
      `| CTR (measured) | ${f4(v.ctr.difference)} ${ci(v.ctr, f4)} | ${pv(v.ctr.pValue)} |`,
      `| CTR (true effect: lists × θ, all steps) | ${f4(ab.trueEffect.difference)} (A ${f4(ab.trueEffect.ctrA)}, B ${f4(ab.trueEffect.ctrB)}) | |`,
      `| CTR (expected on each arm's own steps) | ${f4(ab.expectedGivenAssignment.difference)} | |`,
      `| conversion | ${f4(v.conversion.difference)} ${ci(v.conversion, f4)} | ${pv(v.conversion.pValue)} |`,
      ...(v.revenuePerVisitor
        ? [
            `| revenue / visitor | ${f2(v.revenuePerVisitor.difference)} ${ci(v.revenuePerVisitor, f2)} | ${pv(v.revenuePerVisitor.pValue)} |`,
          ]
        : []),
    );
  }
  const srm = ab.report.srm;
  out.push(
    "",
    `Detected (CI excludes 0): ${ab.detected ? "yes" : "no"}; true effect inside the CI: ${
      ab.ctrDifference?.low != null &&
      ab.ctrDifference.high != null &&
      ab.ctrDifference.low <= ab.trueEffect.difference &&
      ab.trueEffect.difference <= ab.ctrDifference.high
        ? "yes"
        : "no"
    }. SRM: χ² ${srm ? f2(srm.statistic) : "–"}, p ${pv(srm?.pValue)}${srm?.mismatch ? " — MISMATCH" : ""}. ` +
      `SQL = simulation counts: ${ab.sqlMatchesSimulation ? "yes" : "NO"}.`,
    "",
    `### Interleaving (${IL_ID}: team a = popular, b = merged; the SQL team credit)`,
    "",
  );
  if (il.outcome) {
    const o = il.outcome;
    out.push(
      "| impressions | with a credited click | popular wins | merged wins | ties | share merged | expected share merged | sign test p |",
      "|---|---|---|---|---|---|---|---|",
      `| ${o.impressions} | ${o.n} | ${o.wins} | ${o.losses} | ${o.ties} | ${f4(o.n > 0 ? (o.losses + o.ties / 2) / o.n : 0)} | ${f4(il.expected.shareB)} | ${pv(o.pValue)} |`,
      "",
      `Δ_AB (popular's) ${f4(o.deltaAB)}. SQL = simulation credits: ${il.sqlMatchesSimulation ? "yes" : "NO"}.`,
    );
  }
  out.push(
    "",
    `### Fewer sessions (first n visits; p-values of this seed; power and false positives over ${s.replications.n} replications)`,
    "",
    "| visits | A/B CTR diff | A/B p | interleaving popular : merged wins | interleaving p | A/B power | interleaving power | A/B false pos. (no effect) | interleaving false pos. (no effect) |",
    "|---|---|---|---|---|---|---|---|---|",
  );
  const share = (x: number | undefined) => (x === undefined ? "–" : f2(x));
  for (const p of s.prefixes)
    out.push(
      `| ${p.visits} | ${p.abDifference === null ? "–" : f4(p.abDifference)} | ${pv(p.abP)} | ${p.wins} : ${p.losses} | ${pv(p.ilP)} | ${share(
        p.abPower,
      )} | ${share(p.interleavingPower)} | ${share(p.abFalsePositive)} | ${share(p.interleavingFalsePositive)} |`,
    );
  const q = (x: Quantiles) =>
    `median ${x.median ?? "–"} (quartiles ${x.q1 ?? "–"}–${x.q3 ?? "–"}${x.never > 0 ? `, never: ${x.never}` : ""})`;
  out.push(
    "",
    `p < 0.05 from then on — this seed: A/B ${visitsOrNever(s.detection.ab)}, interleaving ${visitsOrNever(s.detection.interleaving)}; ` +
      `over the replications: A/B ${q(s.replications.ab)}, interleaving ${q(s.replications.interleaving)}.`,
    "",
    `timings (ms): ${JSON.stringify(r.timings)}, total ${r.totalMs}`,
  );
  return `${out.join("\n")}\n`;
}
