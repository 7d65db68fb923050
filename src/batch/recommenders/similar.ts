// Item-to-item co-visitation ("similar"): two products are similar when the same visitors look at them in the
// same visit. Method:
//   1. interactions of the last WINDOW_DAYS with a positive weight (views 1, carts 3, purchases 5, …:
//      src/session/weights.ts);
//   2. sessions per user from event_time with a SESSION_GAP_MINUTES inactivity gap (window functions);
//   3. one row per (session, product) with the strongest interaction's weight, the session's last
//      MAX_ITEMS_PER_SESSION distinct products only (a crawler's 500-product visit would otherwise cost 125k pairs);
//   4. each session becomes an array of product numbers (and one of weights); its pairs i < j come from two
//      generate_series over the array's subscripts (no join);
//   5. cosine similarity of the products' session vectors: score(a, b) = Σ_s w(a,s)·w(b,s) / √(Σ_s w(a,s)² · Σ_s w(b,s)²),
//      kept when the pair met in at least MIN_SESSIONS sessions;
//   6. the TOP_K best neighbours of every product.
// Products are numbered (int) for the pair step: arrays of ints and an int hash aggregate are several times
// cheaper than text. Full recompute: the window moves, so every pair may change.
import { sql } from "drizzle-orm";
import { interactions, itemNeighbors } from "../../stores/schema.ts";
import { at, count, days, type Executor, num, type RecommenderResult, Steps } from "./sql.ts";

export interface SimilarParams {
  windowDays: number;
  sessionGapMinutes: number;
  maxItemsPerSession: number;
  minSessions: number;
  topK: number;
}

export const SIMILAR_DEFAULTS: SimilarParams = {
  /** Taste in similar items changes slowly; three months hold enough sessions for the long tail. */
  windowDays: 90,
  /** The common web-analytics definition of a visit. */
  sessionGapMinutes: 30,
  maxItemsPerSession: 30,
  /** One shared session is an accident; two begin to be evidence. */
  minSessions: 2,
  topK: 30,
};

export async function computeSimilar(
  tx: Executor,
  asOf: Date,
  modelVersion: number,
  p: SimilarParams,
): Promise<RecommenderResult> {
  const steps = new Steps();
  // Visitors are numbered by a 64-bit hash of user_key (collisions: ~1e-10 at a million users): the window sort
  // and the session grouping then compare integers, not strings.
  await steps.run(
    tx,
    "sessionItems",
    sql`
    create temp table sim_session_items on commit drop as
    with recent as (
      select hashtextextended(user_key, 0) as visitor, product_id, weight, event_time,
             case when event_time - lag(event_time) over visits > ${num(p.sessionGapMinutes)} * interval '1 minute'
                  then 1 else 0 end as starts_session
      from ${interactions}
      where event_time > ${at(asOf)} - ${days(p.windowDays)} and event_time <= ${at(asOf)} and weight > 0
      window visits as (partition by hashtextextended(user_key, 0) order by event_time)
    ),
    sessions as (
      select visitor, product_id, weight, event_time,
             sum(starts_session) over (partition by visitor order by event_time rows unbounded preceding) as session_no
      from recent
    )
    select visitor, session_no, product_id, max(weight) as w, max(event_time) as last_at
    from sessions
    group by visitor, session_no, product_id`,
  );
  await steps.run(
    tx,
    "products",
    sql`
    create temp table sim_products on commit drop as
    select product_id, (row_number() over (order by product_id))::int as pid
    from (select distinct product_id from sim_session_items) d`,
  );
  await tx.execute(sql`create unique index on sim_products (product_id)`);
  await tx.execute(sql`analyze sim_products`);
  // Each session as two parallel arrays (product numbers, weights), its most recent products first, cut at
  // MAX_ITEMS_PER_SESSION.
  steps.counts.sessions = await steps.run(
    tx,
    "sessions",
    sql`
    create temp table sim_sessions on commit drop as
    select (array_agg(d.pid order by s.last_at desc, d.pid))[1:${count(p.maxItemsPerSession)}] as pids,
           (array_agg(s.w order by s.last_at desc, d.pid))[1:${count(p.maxItemsPerSession)}] as ws
    from sim_session_items s join sim_products d using (product_id)
    group by s.visitor, s.session_no
    having count(*) >= 2`,
  );
  await steps.run(
    tx,
    "norms",
    sql`
    create temp table sim_norms on commit drop as
    select x.pid, sum(x.w * x.w) as norm2
    from sim_sessions s cross join lateral unnest(s.pids, s.ws) as x(pid, w)
    group by x.pid`,
  );
  // Pairs i < j of each session's array, as (smaller number, larger number): no pair is counted twice. (Not one
  // bigint a·2^32 + b: Postgres hashes an int8 as hi XOR lo, so such keys collide by the thousand.)
  await steps.run(
    tx,
    "pairs",
    sql`
    create temp table sim_pairs on commit drop as
    select least(s.pids[i], s.pids[j]) as a, greatest(s.pids[i], s.pids[j]) as b, sum(s.ws[i] * s.ws[j]) as dot
    from sim_sessions s,
      generate_series(1, cardinality(s.pids) - 1) as i,
      generate_series(i + 1, cardinality(s.pids)) as j
    group by 1, 2
    having count(*) >= ${count(p.minSessions)}`,
  );
  // The swap: this transaction removes the previous version's rows and writes the new ones; readers see one or
  // the other, never a mix.
  await steps.run(tx, "delete", sql`delete from ${itemNeighbors} where kind = 'similar'`);
  // A product's neighbours are both directions of its pairs; ranked on numbers, named only for the TOP_K kept.
  const written = await steps.run(
    tx,
    "write",
    sql`
    insert into ${itemNeighbors} (kind, product_id, neighbor_id, score, rank, model_version)
    with scored as (
      select x.a, x.b, x.dot / sqrt(na.norm2 * nb.norm2) as score
      from sim_pairs x
        join sim_norms na on na.pid = x.a
        join sim_norms nb on nb.pid = x.b
    ),
    both_ways as (
      select a as pid, b as neighbor, score from scored
      union all
      select b, a, score from scored
    ),
    ranked as (
      select pid, neighbor, score,
             row_number() over (partition by pid order by score desc, neighbor) as rank
      from both_ways
    )
    select 'similar', pa.product_id, pb.product_id, r.score, r.rank, ${num(modelVersion)}
    from ranked r
      join sim_products pa on pa.pid = r.pid
      join sim_products pb on pb.pid = r.neighbor
    where r.rank <= ${count(p.topK)}`,
  );
  return steps.result(written);
}
