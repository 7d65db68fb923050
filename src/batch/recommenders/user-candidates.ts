// Per-user candidates: the batch half of a user's ranking, one list per user active in the last WINDOW_DAYS with at
// least MIN_HISTORY_ITEMS distinct products there. Method:
//   history   the user's HISTORY_ITEMS most recent distinct products in the window, each weighted by its strongest
//             interaction (view 1, cart 3, purchase 5, …) × 0.5^(age / HALF_LIFE_DAYS);
//   neighbours each history item's NEIGHBORS_PER_ITEM best `similar` and `bought_together` neighbours
//             (item_neighbors, as written just before, or by an external model): history weight × neighbour score ×
//             SIMILAR_WEIGHT / BOUGHT_TOGETHER_WEIGHT; reason `similar_to:<history item>` / `bought_together:<…>`;
//   category  the user's TOP_CATEGORIES categories (share of history weight) × the CATEGORY_ITEMS most popular
//             products of each (popular_items, scores scaled to the segment's best = 1) × CATEGORY_WEIGHT;
//             reason `category:<c>`;
//   popular   the POPULAR_ITEMS most popular products overall (scaled to the best = 1) × POPULAR_WEIGHT, small
//             enough to rank after any personal evidence: the fallback for a thin history, kept only within the
//             first FILL_TO places of a list; reason `popular`;
//   combined  a product's score is the sum of its contributions; its reason is the biggest contribution's;
//             products the user ever purchased are left out; the TOP_N per user.
// Incremental: only users with interactions after the previous version's reference time (or events loaded since
// that version was built) are recomputed; users whose whole history left the window lose their list; every other
// list is kept as it is (compute.ts decides, docs/recommenders.md explains).
import { sql } from "drizzle-orm";
import { catalog, events, interactions, itemNeighbors, popularItems, userCandidates } from "../../stores/schema.ts";
import { at, categorySegment, count, days, type Executor, num, type RecommenderResult, rows, Steps } from "./sql.ts";

export interface UserCandidatesParams {
  windowDays: number;
  minHistoryItems: number;
  historyItems: number;
  halfLifeDays: number;
  neighborsPerItem: number;
  similarWeight: number;
  boughtTogetherWeight: number;
  topCategories: number;
  categoryItems: number;
  categoryWeight: number;
  popularItems: number;
  popularWeight: number;
  fillTo: number;
  topN: number;
}

export const USER_CANDIDATES_DEFAULTS: UserCandidatesParams = {
  windowDays: 30,
  /**
   * Users with fewer distinct products in the window get no batch list: the ranking path serves them from their
   * live session (item neighbours of what they just did) and the popular lists, which say as much for one product.
   */
  minHistoryItems: 2,
  historyItems: 10,
  /** Matches the live session's long-term horizon order of magnitude, shorter: a batch list should lean recent. */
  halfLifeDays: 14,
  neighborsPerItem: 10,
  similarWeight: 1,
  boughtTogetherWeight: 1,
  topCategories: 3,
  categoryItems: 20,
  categoryWeight: 0.5,
  popularItems: 20,
  popularWeight: 0.01,
  /** Popular products only fill a list up to this length (the ranking path has the popular lists anyway). */
  fillTo: 20,
  /**
   * The ranking path reranks these together with the session's own candidates; 50 per user keeps a KV value small
   * and the full rebuild within the compute budget (rows written dominate its time: docs/benchmarks.md#compute).
   */
  topN: 50,
};

/** What to recompute: everyone active, or only who changed since a previous version. */
export type CandidateScope = { mode: "full" } | { mode: "incremental"; previousAsOf: Date; previousBuiltAt: Date };

export async function computeUserCandidates(
  tx: Executor,
  asOf: Date,
  modelVersion: number,
  p: UserCandidatesParams,
  scope: CandidateScope,
): Promise<RecommenderResult> {
  const steps = new Steps();
  const inWindow = (column: string) =>
    sql`${sql.raw(column)} > ${at(asOf)} - ${days(p.windowDays)} and ${sql.raw(column)} <= ${at(asOf)}`;
  const users =
    scope.mode === "full"
      ? sql`select distinct user_key from ${interactions} where ${inWindow("event_time")}`
      : sql`
        select user_key from ${interactions}
        where event_time > ${at(scope.previousAsOf)} and ${inWindow("event_time")}
        union
        select user_key from ${events}
        where loaded_at > ${at(scope.previousBuiltAt)} and ${inWindow("event_time")}`;
  steps.counts.users = await steps.run(tx, "users", sql`create temp table uc_users on commit drop as ${users}`);
  await tx.execute(sql`analyze uc_users`);

  await steps.run(
    tx,
    "history",
    sql`
    create temp table uc_history on commit drop as
    select user_key, product_id, w from (
      select i.user_key, i.product_id,
             max(i.weight) * power(0.5, extract(epoch from ${at(asOf)} - max(i.event_time)) / ${num(p.halfLifeDays * 86_400)}) as w,
             row_number() over (partition by i.user_key order by max(i.event_time) desc, i.product_id) as recency
      from ${interactions} i join uc_users u using (user_key)
      where ${inWindow("i.event_time")} and i.weight > 0
      group by i.user_key, i.product_id
    ) h
    where recency <= ${count(p.historyItems)}`,
  );
  // Users with too thin a history keep no list (and lose an old one: they are in uc_users).
  await tx.execute(sql`
    create temp table uc_listed on commit drop as
    select user_key from uc_history group by user_key having count(*) >= ${count(p.minHistoryItems)}`);
  await tx.execute(
    sql`delete from uc_history h where not exists (select 1 from uc_listed l where l.user_key = h.user_key)`,
  );
  const [listed] = await rows<{ n: number }>(tx, sql`select count(*)::int as n from uc_listed`);
  steps.counts.listedUsers = listed?.n ?? 0;
  await tx.execute(sql`analyze uc_history`);
  await steps.run(
    tx,
    "purchased",
    sql`
    create temp table uc_purchased on commit drop as
    select distinct i.user_key, i.product_id
    from ${interactions} i join uc_listed u using (user_key)
    where i.kind = 'purchase' and i.event_time <= ${at(asOf)}`,
  );
  await tx.execute(sql`analyze uc_purchased`);
  await steps.run(
    tx,
    "hits",
    sql`
    create temp table uc_hits on commit drop as
    select h.user_key, n.neighbor_id as product_id,
           h.w * n.score * (case n.kind when 'similar' then ${num(p.similarWeight)} else ${num(p.boughtTogetherWeight)} end) as s,
           (case n.kind when 'similar' then 'similar_to:' else 'bought_together:' end) || h.product_id as reason
    from uc_history h join ${itemNeighbors} n on n.product_id = h.product_id and n.rank <= ${count(p.neighborsPerItem)}
    union all
    select c.user_key, t.product_id, ${num(p.categoryWeight)} * c.share * t.score / t.best, c.segment
    from (
      select user_key, segment, share from (
        select h.user_key, ${categorySegment(sql`k.category`)} as segment,
               sum(h.w) / sum(sum(h.w)) over (partition by h.user_key) as share,
               row_number() over (partition by h.user_key order by sum(h.w) desc, ${categorySegment(sql`k.category`)}) as r
        from uc_history h join ${catalog} k on k.id = h.product_id
        where k.category is not null
        group by 1, 2
      ) ranked where r <= ${count(p.topCategories)}
    ) c
    join (
      select segment, product_id, score, max(score) over (partition by segment) as best
      from ${popularItems} where list = 'popular' and segment like 'category:%' and rank <= ${count(p.categoryItems)}
    ) t using (segment)
    union all
    select u.user_key, t.product_id, ${num(p.popularWeight)} * t.score / t.best, 'popular'
    from uc_listed u cross join (
      select product_id, score, max(score) over () as best
      from ${popularItems} where list = 'popular' and segment = 'global' and rank <= ${count(p.popularItems)}
    ) t`,
  );

  if (scope.mode === "full") {
    await steps.run(tx, "delete", sql`delete from ${userCandidates}`);
  } else {
    await steps.run(tx, "delete", sql`delete from ${userCandidates} c using uc_users u where c.user_key = u.user_key`);
    // Users active at the previous version whose history has now left the window entirely.
    steps.counts.expiredUsers = await steps.run(
      tx,
      "expire",
      sql`
      delete from ${userCandidates} where user_key in (
        select user_key from ${interactions}
        where event_time > ${at(scope.previousAsOf)} - ${days(p.windowDays)} and event_time <= ${at(asOf)} - ${days(p.windowDays)}
        except
        select user_key from ${interactions} where ${inWindow("event_time")}
      )`,
    );
  }
  const written = await steps.run(
    tx,
    "write",
    sql`
    insert into ${userCandidates} (user_key, product_id, score, rank, reason, model_version)
    select user_key, product_id, score, rank, reason, ${num(modelVersion)}
    from (
      select user_key, product_id, score, reason,
             row_number() over (partition by user_key order by score desc, product_id) as rank
      from (
        select user_key, product_id, sum(s) as score, (array_agg(reason order by s desc, reason))[1] as reason
        from uc_hits h
        where not exists (select 1 from uc_purchased b where b.user_key = h.user_key and b.product_id = h.product_id)
        group by user_key, product_id
      ) combined
    ) ranked
    where rank <= ${count(p.topN)} and (reason <> 'popular' or rank <= ${count(p.fillTo)})`,
  );
  return steps.result(written);
}
