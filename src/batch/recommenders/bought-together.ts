// Frequently bought together: association rules a → b over orders. Method:
//   1. purchases of the last WINDOW_DAYS, grouped into baskets: one basket per order (`order_id` of the Order
//      Completed; without one, the message itself, whose products are one order) and user;
//   2. each basket's first MAX_ITEMS_PER_BASKET distinct products (a wholesale order of 500 lines says little
//      about any one pair and would cost 125k pairs);
//   3. for every pair met in at least MIN_ORDERS baskets, with N baskets in all and n(x) baskets holding x:
//        support(a,b)   = n(a,b) / N
//        confidence(a→b) = n(a,b) / n(a)
//        lift(a,b)      = n(a,b) · N / (n(a) · n(b))      (> 1: bought together more often than by chance)
//      kept when lift ≥ MIN_LIFT and confidence ≥ MIN_CONFIDENCE;
//   4. score = confidence(a→b) ("of the orders with a, this share also had b"); the TOP_K per product.
// Full recompute.
import { sql } from "drizzle-orm";
import { interactions, itemNeighbors } from "../../stores/schema.ts";
import { at, count, days, type Executor, num, type RecommenderResult, Steps } from "./sql.ts";

export interface BoughtTogetherParams {
  windowDays: number;
  maxItemsPerBasket: number;
  minOrders: number;
  minConfidence: number;
  minLift: number;
  topK: number;
}

export const BOUGHT_TOGETHER_DEFAULTS: BoughtTogetherParams = {
  /** Orders are rarer than views: half a year of them. */
  windowDays: 180,
  maxItemsPerBasket: 50,
  minOrders: 2,
  minConfidence: 0.01,
  minLift: 1,
  topK: 20,
};

export async function computeBoughtTogether(
  tx: Executor,
  asOf: Date,
  modelVersion: number,
  p: BoughtTogetherParams,
): Promise<RecommenderResult> {
  const steps = new Steps();
  await steps.run(
    tx,
    "basketItems",
    sql`
    create temp table bt_items on commit drop as
    with lines as (
      select user_key, coalesce(order_id, message_id) as basket, product_id, min(event_time) as first_at
      from ${interactions}
      where kind = 'purchase' and event_time > ${at(asOf)} - ${days(p.windowDays)} and event_time <= ${at(asOf)}
      group by 1, 2, 3
    )
    select user_key, basket, product_id,
           (row_number() over (partition by user_key, basket order by first_at, product_id))::int as line
    from lines`,
  );
  await tx.execute(sql`delete from bt_items where line > ${count(p.maxItemsPerBasket)}`);
  const products = await steps.run(
    tx,
    "products",
    sql`
    create temp table bt_products on commit drop as
    select product_id, (row_number() over (order by product_id))::int as pid, count(*) as orders
    from bt_items group by product_id`,
  );
  steps.counts.products = products;
  await tx.execute(sql`analyze bt_products`);
  const baskets = await steps.run(
    tx,
    "baskets",
    sql`
    create temp table bt_baskets on commit drop as
    select array_agg(d.pid) as pids
    from bt_items i join bt_products d using (product_id)
    group by i.user_key, i.basket`,
  );
  await steps.run(
    tx,
    "pairs",
    sql`
    create temp table bt_pairs on commit drop as
    select least(a.pid, b.pid) as a, greatest(a.pid, b.pid) as b, count(*) as orders
    from bt_baskets s
      cross join lateral unnest(s.pids) with ordinality as a(pid, i)
      cross join lateral unnest(s.pids) with ordinality as b(pid, j)
    where a.i < b.j
    group by 1, 2
    having count(*) >= ${count(p.minOrders)}`,
  );
  await steps.run(tx, "delete", sql`delete from ${itemNeighbors} where kind = 'bought_together'`);
  const written = await steps.run(
    tx,
    "write",
    sql`
    insert into ${itemNeighbors} (kind, product_id, neighbor_id, score, rank, support, confidence, lift, model_version)
    with pairs as (
      select pa.product_id as a, pb.product_id as b, x.orders as n_ab, pa.orders as n_a, pb.orders as n_b
      from bt_pairs x
        join bt_products pa on pa.pid = x.a
        join bt_products pb on pb.pid = x.b
    ),
    rules as (
      select a as product_id, b as neighbor_id, n_ab, n_a, n_b from pairs
      union all
      select b, a, n_ab, n_b, n_a from pairs
    ),
    measured as (
      select product_id, neighbor_id,
             n_ab::float8 / ${num(baskets)} as support,
             n_ab::float8 / n_a as confidence,
             n_ab::float8 * ${num(baskets)} / (n_a::float8 * n_b) as lift
      from rules
    ),
    ranked as (
      select *, row_number() over (partition by product_id order by confidence desc, lift desc, neighbor_id) as rank
      from measured
      where lift >= ${num(p.minLift)} and confidence >= ${num(p.minConfidence)}
    )
    select 'bought_together', product_id, neighbor_id, confidence, rank, support, confidence, lift, ${num(modelVersion)}
    from ranked where rank <= ${count(p.topK)}`,
  );
  steps.counts.baskets = baskets;
  return steps.result(written);
}
