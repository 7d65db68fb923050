// An experiment's report (docs/experiments.md#report): attribution of clicks, add-to-carts and orders to the
// exposures that preceded them, per arm, computed in SQL over Postgres `events` and `interactions`; then the
// statistics of src/experiments/stats.ts (intervals, differences to the control, the sample-ratio check) and, for
// an interleave experiment, the team credit of the clicks.
//
// Attribution: an action (interaction `click`, `add_to_cart` or `purchase` of product p by visitor u at time t)
// qualifies for an exposure of the experiment to u that showed p at time s when s ≤ t ≤ s + window (clicks and
// add-to-carts: the click window, default 1 h; purchases: the purchase window, default 24 h). An action whose event
// names a `rec_id` qualifies for that exposure first. `last` touch credits each action to one exposure — the one
// its rec_id names, else the latest; `any` touch credits it to every qualifying exposure (a visitor's revenue still
// counts each order line once).
//
// The visitor is a person: every key resolves through `identities` (an anonymous id to the user it was first linked
// to), exposures and actions alike, and each person is analysed in the arm of their first exposure only.
import { sql } from "drizzle-orm";
import type { Executor } from "../batch/bulk.ts";
import { rows } from "../batch/recommenders/sql.ts";
import { MAX_QUANTITY, MAX_UNIT_PRICE } from "../batch/warehouse.ts";
import { type Database, transaction } from "../stores/db.ts";
import { armShares } from "./assign.ts";
import { type Experiment, HOLDOUT_ARM, INTERLEAVED_ARM } from "./config.ts";
import { EXPOSURE_EVENT, EXPOSURE_SOURCE } from "./exposure.ts";
import { type Credit, type InterleavingOutcome, interleavingOutcome } from "./interleave.ts";
import {
  type Difference,
  type MeanEstimate,
  meanDifference,
  meanEstimate,
  type ProportionEstimate,
  proportion,
  proportionDifference,
  type RatioEstimate,
  type RatioSums,
  ratioDifference,
  ratioEstimate,
  type SampleRatioCheck,
  sampleRatioMismatch,
} from "./stats.ts";

export interface ReportOptions {
  /** Clicks and add-to-carts count within this long after the exposure (ms). */
  clickWindowMs: number;
  /** Orders count within this long after the exposure (ms). */
  purchaseWindowMs: number;
  model: "last" | "any";
}

export const REPORT_DEFAULTS: ReportOptions = { clickWindowMs: 3_600_000, purchaseWindowMs: 86_400_000, model: "last" };

/** One arm's counts as SQL returns them. */
export interface ArmCounts {
  arm: string;
  visitors: number;
  exposures: number;
  /** Exposures with at least one credited click / add-to-cart. */
  clickedExposures: number;
  cartedExposures: number;
  /** Visitors with at least one credited order line. */
  converters: number;
  /** Credited clicks, add-to-carts and order lines. */
  clicks: number;
  carts: number;
  orderLines: number;
  /** Σ credited revenue (price × quantity of the credited order lines), and Σ of each visitor's revenue squared. */
  revenue: number;
  revenueSq: number;
  /**
   * Per-visitor cross sums of the exposure-level rates (x = a visitor's clicked or carted exposures, y = their
   * exposures): Σy², Σx², Σxy — the delta-method standard errors over visitors (stats.ts ratioEstimate).
   */
  exposuresSq: number;
  clickedSq: number;
  clickedByExposures: number;
  cartedSq: number;
  cartedByExposures: number;
}

export interface ArmReport extends ArmCounts {
  /** The configured share of traffic. */
  share: number;
  /**
   * Exposure-level rates with standard errors over visitors (the unit of assignment): a visitor's exposures are not
   * independent trials (delta method, stats.ts ratioEstimate).
   */
  ctr: RatioEstimate;
  addToCartRate: RatioEstimate;
  /** Visitors with a credited order line / visitors (Wilson interval). */
  conversion: ProportionEstimate;
  /** Null below two visitors (no variance). */
  revenuePerVisitor: MeanEstimate | null;
  /**
   * Against the control arm (the first variant; for interleave experiments, the holdout): null for the control and
   * while either arm has no exposure; each difference's interval and p-value null while either arm has fewer than
   * two visitors (or its standard error is 0), the revenue difference null then.
   */
  vsControl: {
    ctr: Difference;
    addToCartRate: Difference;
    conversion: Difference;
    revenuePerVisitor: Difference | null;
  } | null;
}

export interface ExperimentReport {
  experiment: { id: string; placement: string; mode: Experiment["mode"]; holdout: number };
  options: ReportOptions;
  control: string | null;
  arms: ArmReport[];
  srm: SampleRatioCheck | null;
  /**
   * Visitors exposed in more than one arm (e.g. on a device before logging in, under another unit): each is analysed
   * in the arm of their first exposure; `exposures`: their exposures in other arms, left out.
   */
  crossed: CrossedArms;
  /** Interleave experiments: the team credit of the interleaved arm's clicks (a = first variant). */
  interleaving: (InterleavingOutcome & { a: string; b: string }) | null;
}

const num = (v: unknown): number => (v === null || v === undefined ? 0 : Number(v));

/**
 * The experiment's exposures, each under its person, and only those in the arm of the person's first exposure.
 *
 * A person is one key of the warehouse: an anonymous key `a:<id>` stands for the user `identities` links the
 * anonymous id to — the link first seen, when it links to several users (ties by user id) —, any other key for
 * itself. Exposures go under the key the request named (a visitor before a login, `a:<id>`, the user after), and
 * the visitor's later events under the object that recorded them (`u:<user>` once merged): both name one person.
 * `links` holds the links of every anonymous id that names an exposed person or that a user among them is linked
 * to, so that actions recorded under any of the person's keys are found.
 *
 * `xp`: every exposure with its person; `firsts`: each person's first arm (earliest exposure, ties by message id);
 * `x`: the exposures analysed — the person's (as `user_key`) in that arm only.
 */
function exposures(experimentId: string) {
  return sql`
    x0 as (
      select e.message_id as exposure, e.user_key as key, e.event_time as at, e.properties->>'rec_id' as rec_id,
             coalesce(e.properties->>'arm', '') as arm,
             case when jsonb_typeof(e.properties->'items') = 'array' then e.properties->'items' else '[]'::jsonb end
               as items,
             case when jsonb_typeof(e.properties->'variants') = 'array' then e.properties->'variants'->>0 end
               as variant_a,
             case when jsonb_typeof(e.properties->'variants') = 'array' then e.properties->'variants'->>1 end
               as variant_b
      from events e
      where e.type = 'track' and e.event = ${EXPOSURE_EVENT} and e.source_id = ${EXPOSURE_SOURCE}
        and e.properties->>'experiment_id' = ${experimentId}
    ),
    exposed_keys as (select distinct key from x0),
    exposed_users as (
      select substr(key, 3) as user_id from exposed_keys where key like 'u:%'
      union
      select i.user_id from identities i join exposed_keys k on k.key = 'a:' || i.anonymous_id
    ),
    anon_ids as (
      select substr(key, 3) as anonymous_id from exposed_keys where key like 'a:%'
      union
      select i.anonymous_id from identities i join exposed_users u on u.user_id = i.user_id
    ),
    links as (
      select distinct on (i.anonymous_id) 'a:' || i.anonymous_id as key, 'u:' || i.user_id as person
      from identities i join anon_ids a on a.anonymous_id = i.anonymous_id
      order by i.anonymous_id, i.first_seen, i.user_id
    ),
    xp as (
      select x0.*, coalesce(l.person, x0.key) as person from x0 left join links l on l.key = x0.key
    ),
    firsts as (select distinct on (person) person, arm from xp order by person, at, exposure),
    x as (
      select xp.exposure, xp.person as user_key, xp.at, xp.rec_id, xp.arm, xp.items, xp.variant_a, xp.variant_b
      from xp join firsts f on f.person = xp.person and f.arm = xp.arm
    )`;
}

/**
 * An order line's revenue, price × quantity, read within the loader's plausible range (src/batch/warehouse.ts): a
 * row outside it (stored before the loader bounded them, or by another writer) counts as the loader now stores it —
 * a price outside it is no revenue, a quantity outside it one unit —, so no row can overflow the float8 sums.
 */
const lineRevenue = sql`
  coalesce(case when i.price between ${-MAX_UNIT_PRICE} and ${MAX_UNIT_PRICE} then i.price end, 0)
  * coalesce(case when i.quantity between ${-MAX_QUANTITY} and ${MAX_QUANTITY} then i.quantity end, 1)`;

/** The attribution query: the qualifying (action, exposure) pairs, each action credited as the model says. */
function credited(experimentId: string, o: ReportOptions) {
  return sql`
    ${exposures(experimentId)},
    shown as (
      select x.exposure, x.user_key, x.at, x.rec_id, x.arm, i->>'product_id' as product_id,
             (i->>'position')::int as position, i->>'team' as team
      from x cross join lateral jsonb_array_elements(x.items) i
    ),
    -- Computed once: folded into the join with the exposures, the planner (expecting one exposure) re-read the
    -- actions per exposure.
    acts as materialized (
      select i.message_id, i.position as line, coalesce(l.person, i.user_key) as user_key, i.product_id,
             i.event_time as at,
             case i.kind when 'click' then 'click' when 'add_to_cart' then 'cart' else 'purchase' end as kind,
             case when i.kind = 'purchase' then ${lineRevenue} else 0 end as revenue,
             e.properties->>'rec_id' as rec_id
      from interactions i join events e on e.message_id = i.message_id left join links l on l.key = i.user_key
      where i.kind in ('click', 'add_to_cart', 'purchase')
        and i.user_key in (select user_key from x union select key from links)
    ),
    matches as (
      select a.message_id, a.line, a.kind, a.revenue, s.exposure, s.arm, s.user_key, s.position, s.team,
             row_number() over (
               partition by a.message_id, a.line
               order by (a.rec_id is not null and a.rec_id = s.rec_id) desc, s.at desc, s.exposure
             ) as pick
      from acts a
      join shown s on s.user_key = a.user_key and s.product_id = a.product_id and a.at >= s.at
        and a.at <= s.at + (case when a.kind = 'purchase' then ${o.purchaseWindowMs}::bigint else ${o.clickWindowMs}::bigint end)
                           * interval '1 millisecond'
    ),
    credited as (select * from matches where ${o.model}::text = 'any' or pick = 1)`;
}

/** Visitors (persons) whose exposures are in more than one arm, and their exposures left out of the analysis. */
export interface CrossedArms {
  visitors: number;
  exposures: number;
}

/** The experiment's crossed visitors: each analysed in the arm of their first exposure, the rest left out. */
export async function crossedArms(db: Executor, experimentId: string): Promise<CrossedArms> {
  const [r] = await rows<Record<string, unknown>>(
    db,
    sql`
    with ${exposures(experimentId)},
    people as (select person, count(distinct arm) as arms from xp group by person)
    select (select count(*) from people where arms > 1) as visitors,
           (select count(*) from xp) - (select count(*) from x) as exposures`,
  );
  return { visitors: num(r?.visitors), exposures: num(r?.exposures) };
}

/** Per-arm counts (ArmCounts) for the experiment's exposures. */
export async function armCounts(db: Executor, experimentId: string, o: ReportOptions): Promise<ArmCounts[]> {
  const result = await rows<Record<string, unknown>>(
    db,
    sql`
    with ${credited(experimentId, o)},
    per_exposure as (
      select x.exposure, x.arm, x.user_key,
             count(c.exposure) filter (where c.kind = 'click') as clicks,
             count(c.exposure) filter (where c.kind = 'cart') as carts
      from x left join credited c on c.exposure = x.exposure
      group by x.exposure, x.arm, x.user_key
    ),
    per_visitor as (
      select arm, user_key, count(*) as exposures,
             count(*) filter (where clicks > 0) as clicked, count(*) filter (where carts > 0) as carted,
             sum(clicks) as clicks, sum(carts) as carts
      from per_exposure
      group by arm, user_key
    ),
    lines as (select distinct message_id, line, arm, user_key, revenue from credited where kind = 'purchase'),
    visitor_lines as (
      select arm, user_key, count(*) as order_lines, sum(revenue) as revenue from lines group by arm, user_key
    ),
    visitors as (
      select v.*, coalesce(l.order_lines, 0) as order_lines, coalesce(l.revenue, 0) as revenue
      from per_visitor v left join visitor_lines l on l.arm = v.arm and l.user_key = v.user_key
    )
    select arm, count(*) as visitors, sum(exposures) as exposures, sum(clicked) as clicked_exposures,
           sum(carted) as carted_exposures, count(*) filter (where order_lines > 0) as converters,
           sum(clicks) as clicks, sum(carts) as carts, sum(order_lines) as order_lines,
           sum(revenue) as revenue, sum(revenue * revenue) as revenue_sq,
           sum(exposures * exposures) as exposures_sq, sum(clicked * clicked) as clicked_sq,
           sum(clicked * exposures) as clicked_by_exposures, sum(carted * carted) as carted_sq,
           sum(carted * exposures) as carted_by_exposures
    from visitors
    group by arm
    order by arm`,
  );
  return result.map((r) => ({
    arm: String(r.arm),
    visitors: num(r.visitors),
    exposures: num(r.exposures),
    clickedExposures: num(r.clicked_exposures),
    cartedExposures: num(r.carted_exposures),
    converters: num(r.converters),
    clicks: num(r.clicks),
    carts: num(r.carts),
    orderLines: num(r.order_lines),
    revenue: num(r.revenue),
    revenueSq: num(r.revenue_sq),
    exposuresSq: num(r.exposures_sq),
    clickedSq: num(r.clicked_sq),
    clickedByExposures: num(r.clicked_by_exposures),
    cartedSq: num(r.carted_sq),
    cartedByExposures: num(r.carted_by_exposures),
  }));
}

/**
 * The interleaved arm's impressions: credited clicks per team, one Credit per exposure (those without clicks too).
 * `variants`: the experiment's two variant ids in document order. An exposure that stored its teams' variants
 * (`properties.variants`) is read by them: reversed (the document's variants reordered since) its credit is
 * swapped, a different pair (a variant replaced) is left out; one without them is read in document order.
 */
export async function teamCredits(
  db: Executor,
  experimentId: string,
  o: ReportOptions,
  variants?: readonly [string, string],
): Promise<Credit[]> {
  const result = await rows<Record<string, unknown>>(
    db,
    sql`
    with ${credited(experimentId, o)},
    team_clicks as (
      select exposure,
             count(distinct position) filter (where team = 'a') as a,
             count(distinct position) filter (where team = 'b') as b
      from credited
      where kind = 'click'
      group by exposure
    )
    select x.exposure, coalesce(t.a, 0) as a, coalesce(t.b, 0) as b, x.variant_a, x.variant_b
    from x left join team_clicks t on t.exposure = x.exposure
    where x.arm = ${INTERLEAVED_ARM}
    order by x.exposure`,
  );
  return result.flatMap((r) => {
    let a = num(r.a);
    let b = num(r.b);
    if (variants && r.variant_a != null) {
      const stored = [String(r.variant_a), String(r.variant_b)];
      if (stored[0] === variants[1] && stored[1] === variants[0]) [a, b] = [b, a];
      else if (stored[0] !== variants[0] || stored[1] !== variants[1]) return [];
    }
    return [{ a, b, winner: a > b ? "a" : b > a ? "b" : "tie" } as Credit];
  });
}

/** Per-visitor sums of the click-through and add-to-cart rates (x: clicked / carted exposures, y: exposures). */
const ctrSums = (c: ArmCounts): RatioSums => ({
  n: c.visitors,
  sumX: c.clickedExposures,
  sumY: c.exposures,
  sumXX: c.clickedSq,
  sumYY: c.exposuresSq,
  sumXY: c.clickedByExposures,
});
const cartSums = (c: ArmCounts): RatioSums => ({
  n: c.visitors,
  sumX: c.cartedExposures,
  sumY: c.exposures,
  sumXX: c.cartedSq,
  sumYY: c.exposuresSq,
  sumXY: c.cartedByExposures,
});

/** The revenue-per-visitor sample of an arm from its sums (n, mean, sample variance). */
function revenueSample(c: ArmCounts) {
  const n = c.visitors;
  const mean = n > 0 ? c.revenue / n : 0;
  const variance = n > 1 ? Math.max(0, (c.revenueSq - n * mean * mean) / (n - 1)) : 0;
  return { n, mean, variance };
}

/** Counts → the report (pure: the statistics only). */
export function buildReport(
  experiment: Experiment,
  counts: readonly ArmCounts[],
  options: ReportOptions,
  credits: readonly Credit[] | null,
  crossed: CrossedArms = { visitors: 0, exposures: 0 },
): ExperimentReport {
  const shares = armShares(experiment);
  const shareOf = new Map(shares.map((s) => [s.arm, s.share]));
  const byArm = new Map(counts.map((c) => [c.arm, c]));
  const empty = (arm: string): ArmCounts => ({
    arm,
    visitors: 0,
    exposures: 0,
    clickedExposures: 0,
    cartedExposures: 0,
    converters: 0,
    clicks: 0,
    carts: 0,
    orderLines: 0,
    revenue: 0,
    revenueSq: 0,
    exposuresSq: 0,
    clickedSq: 0,
    clickedByExposures: 0,
    cartedSq: 0,
    cartedByExposures: 0,
  });
  const control =
    experiment.mode === "interleave"
      ? experiment.holdout > 0
        ? HOLDOUT_ARM
        : null
      : (experiment.variants[0]?.id ?? null);
  const controlCounts = control ? (byArm.get(control) ?? empty(control)) : null;
  const arms: ArmReport[] = shares.map(({ arm, share }) => {
    const c = byArm.get(arm) ?? empty(arm);
    const rpv = revenueSample(c);
    const comparable = controlCounts && arm !== control && c.exposures > 0 && controlCounts.exposures > 0;
    return {
      ...c,
      share,
      ctr: ratioEstimate(ctrSums(c)),
      addToCartRate: ratioEstimate(cartSums(c)),
      conversion: proportion(c.converters, c.visitors),
      revenuePerVisitor: rpv.n >= 2 ? meanEstimate(rpv) : null,
      vsControl: comparable
        ? {
            ctr: ratioDifference(ctrSums(c), ctrSums(controlCounts)),
            addToCartRate: ratioDifference(cartSums(c), cartSums(controlCounts)),
            conversion: proportionDifference(
              { successes: c.converters, trials: c.visitors },
              { successes: controlCounts.converters, trials: controlCounts.visitors },
            ),
            revenuePerVisitor:
              rpv.n >= 2 && controlCounts.visitors >= 2 ? meanDifference(rpv, revenueSample(controlCounts)) : null,
          }
        : null,
    };
  });
  // Exposures of an arm the document no longer has (its variants were edited): reported, outside the SRM check.
  for (const c of counts) {
    if (shareOf.has(c.arm)) continue;
    const rpv = revenueSample(c);
    arms.push({
      ...c,
      share: 0,
      ctr: ratioEstimate(ctrSums(c)),
      addToCartRate: ratioEstimate(cartSums(c)),
      conversion: proportion(c.converters, c.visitors),
      revenuePerVisitor: rpv.n >= 2 ? meanEstimate(rpv) : null,
      vsControl: null,
    });
  }
  const visitors = Object.fromEntries(shares.map((s) => [s.arm, byArm.get(s.arm)?.visitors ?? 0]));
  const total = Object.values(visitors).reduce((s, v) => s + v, 0);
  const srm =
    shares.length > 1 && total > 0
      ? sampleRatioMismatch(visitors, Object.fromEntries(shares.map((s) => [s.arm, s.share])))
      : null;
  const [a, b] = experiment.variants;
  const interleaving =
    experiment.mode === "interleave" && credits && a && b
      ? { ...interleavingOutcome(credits), a: a.id, b: b.id }
      : null;
  return {
    experiment: {
      id: experiment.id,
      placement: experiment.placement,
      mode: experiment.mode,
      holdout: experiment.holdout,
    },
    options,
    control,
    arms,
    srm,
    crossed,
    interleaving,
  };
}

/**
 * The whole report of one experiment from Postgres, in one read-only transaction with nested-loop joins off: the
 * attribution's CTEs hide their sizes from the planner (it expects ~150 exposures where there may be 35,000), and a
 * nested loop over them re-runs the attribution per exposure — minutes instead of seconds on the simulation's data
 * (docs/experiments.md#simulation). JIT compilation is off too (below).
 */
export async function experimentReport(
  db: Database,
  experiment: Experiment,
  options: ReportOptions = REPORT_DEFAULTS,
): Promise<ExperimentReport> {
  return transaction(db, async (tx) => {
    await tx.execute(sql`set local enable_nestloop = off`);
    // The nested loops that remain (the lateral expansion of each exposure's items) then carry the planner's disable
    // cost, an estimate far past the JIT thresholds: compiling the query took ~1.8 s of a 1.9 s report.
    await tx.execute(sql`set local jit = off`);
    const counts = await armCounts(tx, experiment.id, options);
    const [a, b] = experiment.variants;
    const credits =
      experiment.mode === "interleave" && a && b ? await teamCredits(tx, experiment.id, options, [a.id, b.id]) : null;
    const crossed = await crossedArms(tx, experiment.id);
    return buildReport(experiment, counts, options, credits, crossed);
  });
}
