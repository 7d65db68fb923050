// "Next items" (sequential rules, the SR method of Ludewig & Jannach 2018): for each product p, the products
// visitors went on to after p in the same visit, closer steps counting more. Method:
//   1. interactions of the last WINDOW_DAYS with a positive weight (views, carts, purchases, …:
//      src/session/weights.ts), up to asOf;
//   2. visits per user with a SESSION_GAP_MINUTES inactivity gap, as similar.ts splits them (window functions over
//      a 64-bit hash of user_key);
//   3. each visit's events in order — event_time, then message_id, then position, which keeps the order of an
//      order's lines — every event kept (a product seen twice is there twice), the visit's last
//      MAX_EVENTS_PER_SESSION only (a crawler's 2,000-event visit would otherwise cost 2,000 · MAX_STEPS pairs);
//   4. for every pair of events at positions i < j with x = j − i ≤ MAX_STEPS and different products p ≠ q, the
//      rule p → q gains 1/x: directional (what came after p), the next event counting 1, the one after it 1/2, …;
//   5. score(p → q) = Σ 1/x over the pairs, support = the number of pairs; rules with score ≥ MIN_SCORE, the TOP_K
//      best q per p (ties: neighbour id).
// The weights 1/x are summed as whole numbers (LCM(1…MAX_STEPS)/x, an int) and divided once at the end: the sum is
// then exact whatever order Postgres adds the pairs in, so equal scores are equal (ties fall to the id) and a
// recompute over the same events writes the same lists (the publisher ships nothing). MAX_STEPS ≤ 20 keeps
// LCM(1…20) = 232,792,560 inside an int.
// Products are numbered (int) for the pair step, as in similar.ts. Full recompute: the window moves.
import { sql } from "drizzle-orm";
import { interactions, itemNeighbors } from "../../stores/schema.ts";
import { at, count, days, type Executor, num, type RecommenderResult, Steps } from "./sql.ts";

export interface NextItemsParams {
  windowDays: number;
  sessionGapMinutes: number;
  maxEventsPerSession: number;
  maxSteps: number;
  minScore: number;
  topK: number;
}

export const NEXT_ITEMS_DEFAULTS: NextItemsParams = {
  /**
   * A year: what follows a product changes slowly, and seasonal products have a sequence only once a year. On the
   * UCI validation split (docs/relevance.md#tuning) 90 / 180 / 365 days gave HR@20 0.468 / 0.474 / 0.479.
   */
  windowDays: 365,
  /** The common web-analytics definition of a visit (the same as similar's). */
  sessionGapMinutes: 30,
  /**
   * A visit costs events × MAX_STEPS pairs (linear, not quadratic), so only a crawler's visit needs cutting. Long
   * visits are real in wholesale: a 300-line order entered in catalogue order is the best sequence evidence there
   * is (a 100-event cut cost HR@20 0.479 → 0.458 on the UCI validation split). The last events are kept: they are
   * the ones nearest to what the visit ended with.
   */
  maxEventsPerSession: 1000,
  /** SR's usual reach: an event ten steps later still says something, at a tenth of the weight of the next one. */
  maxSteps: 10,
  /**
   * 0: every rule is kept, as SR does. A single far pair (score 0.1) is weak evidence, but it only ever fills the
   * list of a product with few followers — the long tail, where any evidence beats none — since TOP_K keeps the
   * strongest rules first; the ranking path weighs a neighbour by its score anyway.
   */
  minScore: 0,
  /** As many as the publisher ships per item list (ITEM_LIST_MAX in src/publish/sources.ts). */
  topK: 50,
};

/** MAX_STEPS above this would overflow the int weights (LCM(1…23) > 2³¹). */
export const NEXT_ITEMS_MAX_STEPS = 20;

/** Least common multiple of 1…n: the whole-number unit the step weights 1/x are summed in. */
export function stepUnit(n: number): number {
  const gcd = (a: number, b: number): number => (b === 0 ? a : gcd(b, a % b));
  let l = 1;
  for (let k = 2; k <= n; k++) l = (l / gcd(l, k)) * k;
  return l;
}

export function checkNextItemsParams(p: NextItemsParams): void {
  if (!Number.isInteger(p.maxSteps) || p.maxSteps < 1 || p.maxSteps > NEXT_ITEMS_MAX_STEPS) {
    throw new Error(`next_items: maxSteps must be a whole number from 1 to ${NEXT_ITEMS_MAX_STEPS}: ${p.maxSteps}`);
  }
}

export async function computeNextItems(
  tx: Executor,
  asOf: Date,
  modelVersion: number,
  p: NextItemsParams,
): Promise<RecommenderResult> {
  checkNextItemsParams(p);
  const unit = stepUnit(p.maxSteps);
  const steps = new Steps();
  const inWindow = sql`event_time > ${at(asOf)} - ${days(p.windowDays)} and event_time <= ${at(asOf)} and weight > 0`;
  steps.counts.products = await steps.run(
    tx,
    "products",
    sql`
    create temp table nx_products on commit drop as
    select product_id, (row_number() over (order by product_id))::int as pid
    from (select distinct product_id from ${interactions} where ${inWindow}) d`,
  );
  await tx.execute(sql`create unique index on nx_products (product_id)`);
  await tx.execute(sql`analyze nx_products`);
  // Each visit as one array of product numbers, most recent event first, cut at MAX_EVENTS_PER_SESSION: pids[1] is
  // the visit's last event, and pids[j] came before pids[i] when i < j. Visitors are numbered by a 64-bit hash of
  // user_key (as in similar.ts), so the window sort compares integers first.
  steps.counts.sessions = await steps.run(
    tx,
    "sessions",
    sql`
    create temp table nx_sessions on commit drop as
    with recent as (
      select hashtextextended(i.user_key, 0) as visitor, d.pid, i.event_time, i.message_id, i.position,
             case when i.event_time - lag(i.event_time) over visits > ${num(p.sessionGapMinutes)} * interval '1 minute'
                  then 1 else 0 end as starts_session
      from ${interactions} i join nx_products d using (product_id)
      where ${inWindow}
      window visits as (partition by hashtextextended(i.user_key, 0) order by i.event_time, i.message_id, i.position)
    ),
    visits as (
      select visitor, pid, event_time, message_id, position,
             sum(starts_session) over (partition by visitor order by event_time, message_id, position
                                       rows unbounded preceding) as session_no
      from recent
    )
    select (array_agg(pid order by event_time desc, message_id desc, position desc))[1:${count(p.maxEventsPerSession)}] as pids
    from visits
    group by visitor, session_no
    having count(*) >= 2`,
  );
  // Pairs (earlier pids[j], later pids[i]) at most MAX_STEPS apart, of different products; the rule
  // pids[j] → pids[i] gains UNIT / (j − i), a whole number.
  steps.counts.rules = await steps.run(
    tx,
    "rules",
    sql`
    create temp table nx_rules on commit drop as
    select s.pids[j] as a, s.pids[i] as b, sum(${count(unit)} / (j - i)) as w, count(*) as support
    from nx_sessions s,
      generate_series(1, cardinality(s.pids) - 1) as i,
      generate_series(i + 1, least(i + ${count(p.maxSteps)}, cardinality(s.pids))) as j
    where s.pids[i] <> s.pids[j]
    group by 1, 2`,
  );
  // The swap: this transaction removes the previous version's rows and writes the new ones.
  await steps.run(tx, "delete", sql`delete from ${itemNeighbors} where kind = 'next'`);
  const written = await steps.run(
    tx,
    "write",
    sql`
    insert into ${itemNeighbors} (kind, product_id, neighbor_id, score, rank, support, model_version)
    with ranked as (
      select a, b, w, support, row_number() over (partition by a order by w desc, b) as rank
      from nx_rules
      where w::float8 / ${count(unit)} >= ${num(p.minScore)}
    )
    select 'next', pa.product_id, pb.product_id, r.w::float8 / ${count(unit)}, r.rank, r.support, ${num(modelVersion)}
    from ranked r
      join nx_products pa on pa.pid = r.a
      join nx_products pb on pb.pid = r.b
    where r.rank <= ${count(p.topK)}`,
  );
  return steps.result(written);
}
