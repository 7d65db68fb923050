// Per-user candidates: the batch half of a user's ranking, one list per user active in the last WINDOW_DAYS with at
// least MIN_HISTORY_ITEMS distinct products there, followed by the user's buy-again entries. Method:
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
//   buy again for every user with a purchase in the last BUY_AGAIN_WINDOW_DAYS (active in WINDOW_DAYS or not): the
//             products they bought there, scored Σ over their purchase interactions of
//             0.5^(age in days / BUY_AGAIN_HALF_LIFE_DAYS) (added smallest term first, so equal purchase histories
//             score exactly the same), the BUY_AGAIN_ITEMS best (ties: product id), reason `bought_before`;
//             APPENDED after the candidates above, with their own scores (not comparable with the candidates':
//             the ranking path tells them apart by the reason). A user with purchases but no candidates (inactive
//             in WINDOW_DAYS, too thin a history) gets a row of buy-again entries only.
// Storage: one user_candidates row per user, the list as parallel arrays (product_ids, scores, reasons): the
// candidates best first, then the buy-again entries best first; at most TOP_N + BUY_AGAIN_ITEMS ≤ USER_LIST_MAX
// (what the publisher ships per user), each product once (the candidates never hold a purchased product).
// Staging and the swap: the lists are computed in PARTS parts at once (users split by a hash of user_key), each in a
// repeatable-read transaction of its own on its own connection, into an unlogged staging table (uc_stage_<version>)
// that every connection sees. None of them holds the erasure lock. Then one short transaction takes it, replaces the
// output's rows with the staged lists and leaves out every user whose erasure a part's snapshot did not see
// (`erased_users.erased_xid`): that part read the user's rows before the erasure deleted them (docs/privacy.md).
// Incremental: only users with interactions after the previous version's reference time (or events loaded since
// that version was built), and users whose data has just left one of the two windows entirely, are recomputed —
// the latter lose their row when nothing is left in either window; every other list is kept as it is (compute.ts
// decides, docs/recommenders.md explains). A kept row's buy-again scores are those of its own asOf: the decay
// since then is the same factor for all of them, so their order still holds.
import { type SQL, sql } from "drizzle-orm";
import { holdErasureLockShared } from "../../privacy/warehouse.ts";
import { USER_LIST_MAX } from "../../publish/sources.ts";
import {
  catalog,
  erasedUsers,
  events,
  interactions,
  itemNeighbors,
  popularItems,
  userCandidates,
} from "../../stores/schema.ts";
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
  buyAgainWindowDays: number;
  buyAgainHalfLifeDays: number;
  buyAgainItems: number;
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
   * (~2 KB). A list is one row of arrays, so its length costs little compute (docs/benchmarks.md#compute).
   */
  topN: 50,
  /**
   * A year of purchases: the replenishment cycles of most consumables (a candle, a refill, a pack of cards) are
   * weeks to months; a year also covers the seasonal ones (gift wrap, decorations) that come back once a year.
   */
  buyAgainWindowDays: 365,
  /**
   * Half a year: a product bought last month still counts nearly in full (0.89), one bought a year ago a quarter;
   * two purchases six months ago weigh as much as one today, so how often and how recently both count.
   */
  buyAgainHalfLifeDays: 180,
  /**
   * 20 of a user's purchased products: what a "buy it again" row shows, and TOP_N + 20 = 70 stays within the 100
   * entries the publisher ships per user (USER_LIST_MAX), so an appended entry is never cut.
   */
  buyAgainItems: 20,
};

export function checkUserCandidatesParams(p: UserCandidatesParams): void {
  if (p.topN + p.buyAgainItems > USER_LIST_MAX) {
    throw new Error(
      `user_candidates: topN + buyAgainItems (${p.topN + p.buyAgainItems}) exceeds the ${USER_LIST_MAX} entries the publisher ships per user`,
    );
  }
}

/** What to recompute: everyone active, or only who changed since a previous version. */
export type CandidateScope = { mode: "full" } | { mode: "incremental"; previousAsOf: Date; previousBuiltAt: Date };

/** Part `index` (0-based) of `of` parts of the users, split by a hash of user_key. */
export interface CandidatePart {
  index: number;
  of: number;
}

/** The names of the staging tables (stageTable below), as a regular expression. */
export const STAGE_TABLE_PATTERN = "^uc_stage_[0-9]+$";

/** The staging tables that exist now in the current schema: a compute's, or one a compute left when it died. */
export async function candidateStages(db: Executor): Promise<string[]> {
  const found = await rows<{ name: string }>(
    db,
    sql`select c.relname as name from pg_class c join pg_namespace n on n.oid = c.relnamespace
        where n.nspname = current_schema() and c.relkind = 'r' and c.relname ~ ${STAGE_TABLE_PATTERN}`,
  );
  return found.map((r) => r.name);
}

/** The staging table of one version's lists (unlogged: it lives only for one compute). */
export function stageTable(modelVersion: number): SQL {
  if (!Number.isSafeInteger(modelVersion) || modelVersion < 0) throw new Error(`not a version id: ${modelVersion}`);
  return sql.raw(`uc_stage_${modelVersion}`);
}

/**
 * Creates the staging table (outside any transaction: every part's connection must see it). `if not exists`: a retry
 * after a lost answer finds it there, empty (the id is this run's own).
 */
export async function createCandidateStage(db: Executor, modelVersion: number): Promise<void> {
  await db.execute(sql`
    create unlogged table if not exists ${stageTable(modelVersion)} (
      part int not null,
      user_key text not null,
      product_ids text[],
      scores float8[],
      reasons text[]
    )`);
}

export async function dropCandidateStage(db: Executor, modelVersion: number): Promise<void> {
  await db.execute(sql`drop table if exists ${stageTable(modelVersion)}`);
}

/**
 * Drops staging tables a compute left behind when it died before its own cleanup (a Worker evicted mid-run, a lost
 * connection): those of versions no longer building, and of versions building for over a day (refreshes never
 * overlap, and none runs that long).
 */
export async function dropStaleCandidateStages(db: Executor): Promise<number> {
  const stale = await rows<{ id: string }>(
    db,
    sql`
    select substr(c.relname, 10) as id
    from pg_class c join pg_namespace n on n.oid = c.relnamespace
    where n.nspname = current_schema() and c.relkind = 'r' and c.relname ~ ${STAGE_TABLE_PATTERN}
      and not exists (
        select 1 from model_versions v
        where v.id = substr(c.relname, 10)::bigint and v.status = 'building' and v.created_at > now() - interval '1 day'
      )`,
  );
  for (const { id } of stale) await dropCandidateStage(db, Number(id));
  return stale.length;
}

/** `pg_snapshot` as text (xmin:xmax:xip,…): checked before it is written into the swap's SQL as a literal. */
const SNAPSHOT_TEXT = /^\d+:\d+:[\d,]*$/;

/** What one part staged, and the snapshot it read the warehouse in (pg_current_snapshot() as text). */
export interface StagedPart extends RecommenderResult {
  snapshot: string;
}

/**
 * Computes one part's lists into the staging table. Run it in a REPEATABLE READ transaction: every statement then
 * reads the snapshot returned, which the swap checks erasures against.
 */
export async function stageUserCandidates(
  tx: Executor,
  asOf: Date,
  modelVersion: number,
  p: UserCandidatesParams,
  scope: CandidateScope,
  part: CandidatePart,
): Promise<StagedPart> {
  checkUserCandidatesParams(p);
  if (
    !Number.isInteger(part.of) ||
    part.of < 1 ||
    !Number.isInteger(part.index) ||
    part.index < 0 ||
    part.index >= part.of
  ) {
    throw new Error(`user_candidates: not a part: ${part.index} of ${part.of}`);
  }
  // The transaction's first query takes its snapshot; this is it.
  const [snap] = await rows<{ snapshot: string; isolation: string }>(
    tx,
    sql`select pg_current_snapshot()::text as snapshot, current_setting('transaction_isolation') as isolation`,
  );
  // Under READ COMMITTED each statement would read a newer snapshot than the one the swap checks erasures against.
  if (snap?.isolation !== "repeatable read" && snap?.isolation !== "serializable") {
    throw new Error(`user_candidates: a part must run in a repeatable-read transaction, not ${snap?.isolation}`);
  }
  const snapshot = snap.snapshot;
  if (!SNAPSHOT_TEXT.test(snapshot)) throw new Error(`user_candidates: unexpected snapshot text: ${snapshot}`);
  const inPart = (column = "user_key") =>
    sql`abs(hashtext(${sql.raw(column)}) % ${count(part.of)}) = ${count(part.index)}`;
  const steps = new Steps();
  // A retry of this part (its COMMIT's answer lost, say) finds what the first attempt staged: replaced, not added
  // to, or the swap would meet each of its users twice.
  await tx.execute(sql`delete from ${stageTable(modelVersion)} where part = ${count(part.index)}`);
  const between = (column: string, windowDays: number) =>
    sql`${sql.raw(column)} > ${at(asOf)} - ${days(windowDays)} and ${sql.raw(column)} <= ${at(asOf)}`;
  const inWindow = (column: string) => between(column, p.windowDays);
  const inBuyAgainWindow = (column: string) => between(column, p.buyAgainWindowDays);
  const inEitherWindow = (column: string) => between(column, Math.max(p.windowDays, p.buyAgainWindowDays));
  let users: SQL;
  if (scope.mode === "full") {
    users = sql`
      select distinct user_key from ${interactions}
      where ${inWindow("event_time")} or (kind = 'purchase' and ${inBuyAgainWindow("event_time")})`;
  } else {
    // Users whose data has left a window entirely since the previous version: all of their interactions of the
    // list window, or all of their purchases of the buy-again window. Recomputed like the active users: the part
    // that left goes, what is left (the other part) is written again, and a user with nothing left loses the row.
    // The users of the slice that just left each window, then one index probe each (user_key, event_time).
    const previous = at(scope.previousAsOf);
    steps.counts.leftWindowUsers = await steps.run(
      tx,
      "leftWindow",
      sql`
      create temp table uc_left on commit drop as
      select distinct e.user_key from ${interactions} e
      where e.event_time > ${previous} - ${days(p.windowDays)} and e.event_time <= ${at(asOf)} - ${days(p.windowDays)}
        and ${inPart("e.user_key")}
        and not exists (select 1 from ${interactions} i where i.user_key = e.user_key and ${inWindow("i.event_time")})
      union
      select distinct e.user_key from ${interactions} e
      where e.kind = 'purchase' and e.event_time > ${previous} - ${days(p.buyAgainWindowDays)}
        and e.event_time <= ${at(asOf)} - ${days(p.buyAgainWindowDays)}
        and ${inPart("e.user_key")}
        and not exists (
          select 1 from ${interactions} i
          where i.user_key = e.user_key and i.kind = 'purchase' and ${inBuyAgainWindow("i.event_time")}
        )`,
    );
    users = sql`
      select user_key from ${interactions}
      where event_time > ${previous} and ${inEitherWindow("event_time")}
      union
      select user_key from ${events}
      where loaded_at > ${at(scope.previousBuiltAt)} and ${inEitherWindow("event_time")}
      union
      select user_key from uc_left`;
  }
  // Users are numbered (uid): the per-user steps below look them up by an int.
  steps.counts.users = await steps.run(
    tx,
    "users",
    sql`create temp table uc_users on commit drop as
        select user_key, (row_number() over (order by user_key))::int as uid from (${users}) u where ${inPart()}`,
  );
  await tx.execute(sql`create unique index on uc_users (user_key)`);
  await tx.execute(sql`analyze uc_users`);

  // The decay is float8 arithmetic: extract() returns numeric, and numeric power() over a few hundred thousand
  // rows costs seconds.
  await steps.run(
    tx,
    "history",
    sql`
    create temp table uc_history on commit drop as
    select uid, product_id,
           strongest * power(0.5::float8, extract(epoch from ${at(asOf)} - last_at)::float8 / ${num(p.halfLifeDays * 86_400)}) as w
    from (
      select u.uid, i.product_id, max(i.weight) as strongest, max(i.event_time) as last_at,
             row_number() over (partition by u.uid order by max(i.event_time) desc, i.product_id) as recency
      from ${interactions} i join uc_users u using (user_key)
      where ${inWindow("i.event_time")} and i.weight > 0
      group by u.uid, i.product_id
    ) h
    where recency <= ${count(p.historyItems)}`,
  );
  // Users with too thin a history get no candidates (and lose old ones: they are in uc_users); their buy-again
  // entries, if any, still make a row.
  await tx.execute(sql`
    create temp table uc_listed on commit drop as
    select uid from uc_history group by uid having count(*) >= ${count(p.minHistoryItems)}`);
  await tx.execute(sql`delete from uc_history h where not exists (select 1 from uc_listed l where l.uid = h.uid)`);
  const [listed] = await rows<{ n: number }>(tx, sql`select count(*)::int as n from uc_listed`);
  steps.counts.listedUsers = listed?.n ?? 0;
  await tx.execute(sql`create index on uc_history (uid)`);
  await tx.execute(sql`analyze uc_history`);
  await steps.run(
    tx,
    "purchased",
    sql`
    create temp table uc_purchased on commit drop as
    select distinct l.uid, i.product_id
    from ${interactions} i join uc_users u using (user_key) join uc_listed l using (uid)
    where i.kind = 'purchase' and i.event_time <= ${at(asOf)}`,
  );
  await tx.execute(sql`create index on uc_purchased (uid)`);
  await tx.execute(sql`analyze uc_purchased`);
  // Buy again: every recomputed user's purchases of the buy-again window, per product Σ 0.5^(age / half-life),
  // the terms added smallest first (an ordered aggregate: the same purchase times give the same float sum in any
  // order), the BUY_AGAIN_ITEMS best. float8 decay, as for the history.
  steps.counts.buyAgainUsers = await steps.run(
    tx,
    "buyAgain",
    sql`
    create temp table uc_buy_again on commit drop as
    select uid, array_agg(product_id order by rank) as product_ids, array_agg(score order by rank) as scores
    from (
      select uid, product_id, score, row_number() over (partition by uid order by score desc, product_id) as rank
      from (
        select uid, product_id, sum(d order by d) as score
        from (
          select u.uid, i.product_id,
                 power(0.5::float8, extract(epoch from ${at(asOf)} - i.event_time)::float8 / ${num(p.buyAgainHalfLifeDays * 86_400)}) as d
          from ${interactions} i join uc_users u using (user_key)
          where i.kind = 'purchase' and ${inBuyAgainWindow("i.event_time")}
        ) terms
        group by uid, product_id
      ) scored
    ) ranked
    where rank <= ${count(p.buyAgainItems)}
    group by uid`,
  );
  await tx.execute(sql`create unique index on uc_buy_again (uid)`);
  await tx.execute(sql`analyze uc_buy_again`);

  // The lists every user's candidates come from, each small: the neighbours of the products in some history,
  // the users' top categories, the category and global popular lists. A category's popular list is one row of
  // arrays, so a user's two or three categories are two or three index probes rather than a scan of every
  // category's rows.
  await steps.run(
    tx,
    "sources",
    sql`
    create temp table uc_neighbors on commit drop as
    select n.product_id as source, n.neighbor_id as product_id, n.score,
           (case n.kind when 'similar' then ${num(p.similarWeight)} else ${num(p.boughtTogetherWeight)} end) as kind_weight,
           (case n.kind when 'similar' then 'similar_to:' else 'bought_together:' end) || n.product_id as reason
    from ${itemNeighbors} n
    where n.kind in ('similar', 'bought_together') and n.rank <= ${count(p.neighborsPerItem)}
      and n.product_id in (select product_id from uc_history)`,
  );
  await tx.execute(sql`create index on uc_neighbors (source)`);
  await tx.execute(sql`
    create temp table uc_categories on commit drop as
    select uid, segment, share from (
      -- A category's share is of the user's whole history weight, products without a category (or not in the
      -- catalogue) included: one categorised product among ten weighs a tenth, not all.
      select h.uid, k.segment, sum(h.w) / min(t.total) as share,
             row_number() over (partition by h.uid order by sum(h.w) desc, k.segment) as r
      from uc_history h
        join (select id, ${categorySegment(sql`category`)} as segment from ${catalog} where category is not null
              offset 0) k on k.id = h.product_id
        join (select uid, sum(w) as total from uc_history group by uid) t on t.uid = h.uid
      group by 1, 2
    ) ranked where r <= ${count(p.topCategories)}`);
  await tx.execute(sql`create index on uc_categories (uid)`);
  await tx.execute(sql`
    create temp table uc_category_items on commit drop as
    select segment, max(best) as best, array_agg(product_id order by rank) as product_ids,
           array_agg(score order by rank) as scores
    from (
      select segment, product_id, rank, score, max(score) over (partition by segment) as best
      from ${popularItems} where list = 'popular' and segment like 'category:%' and rank <= ${count(p.categoryItems)}
    ) t
    group by segment`);
  await tx.execute(sql`create unique index on uc_category_items (segment)`);
  await tx.execute(sql`
    create temp table uc_popular on commit drop as
    select product_id, score, max(score) over () as best
    from ${popularItems} where list = 'popular' and segment = 'global' and rank <= ${count(p.popularItems)}`);
  for (const table of ["uc_neighbors", "uc_categories", "uc_category_items", "uc_popular"]) {
    await tx.execute(sql.raw(`analyze ${table}`));
  }

  // One list per user, computed user by user (a lateral subquery over a few hundred small rows each): the
  // contributions, summed per product with the biggest one's reason (the smallest reason among the product's
  // largest contributions: a window max and a filtered min, no sort per product), purchases left out, the TOP_N
  // best, popular products only within the first FILL_TO places; then the user's buy-again entries appended;
  // staged as one row of arrays. Every user of the part gets a staging row, a user without a list one with null
  // arrays: the swap of an incremental run deletes those users' previous rows.
  const [written] = await steps.time("write", () =>
    rows<{ lists: number; candidates: number; buy_again: number }>(
      tx,
      sql`
    with candidates as (
      select x.uid, l.product_ids, l.scores, l.reasons
      from uc_listed x
        cross join lateral (
          select array_agg(product_id order by rank) as product_ids,
                 array_agg(score order by rank) as scores,
                 array_agg(reason order by rank) as reasons
          from (
            select product_id, score, reason,
                   row_number() over (order by score desc, product_id) as rank
            from (
              select c.product_id, c.score, min(c.reason) filter (where c.s = c.top) as reason
              from (
                select c.*, max(c.s) over w as top, sum(c.s) over w as score
                from (
                  select n.product_id, h.w * n.score * n.kind_weight as s, n.reason
                  from uc_history h join uc_neighbors n on n.source = h.product_id
                  where h.uid = x.uid
                  union all
                  select i.product_id, ${num(p.categoryWeight)} * k.share * i.score / t.best, k.segment
                  from uc_categories k join uc_category_items t using (segment)
                    cross join unnest(t.product_ids, t.scores) as i(product_id, score)
                  where k.uid = x.uid
                  union all
                  select t.product_id, ${num(p.popularWeight)} * t.score / t.best, 'popular'
                  from uc_popular t
                ) c
                -- Summed in one fixed order, so a recompute over the same data gives the same bits (and the
                -- publisher ships nothing); the whole partition is the frame.
                window w as (partition by c.product_id order by c.s, c.reason
                             rows between unbounded preceding and unbounded following)
              ) c
              where not exists (select 1 from uc_purchased b where b.uid = x.uid and b.product_id = c.product_id)
              group by c.product_id, c.score
            ) combined
            order by score desc, product_id
            limit ${count(p.topN)}
          ) ranked
          where reason <> 'popular' or rank <= ${count(p.fillTo)}
        ) l
      where l.product_ids is not null
    ),
    staged as (
      insert into ${stageTable(modelVersion)} (part, user_key, product_ids, scores, reasons)
      select ${count(part.index)}, u.user_key, l.product_ids, l.scores, l.reasons
      from uc_users u
        left join (
          select uid,
                 coalesce(c.product_ids, '{}') || coalesce(b.product_ids, '{}') as product_ids,
                 coalesce(c.scores, '{}') || coalesce(b.scores, '{}') as scores,
                 coalesce(c.reasons, '{}') || array_fill('bought_before'::text, array[coalesce(cardinality(b.product_ids), 0)]) as reasons
          from candidates c full join uc_buy_again b using (uid)
        ) l using (uid)
      returning cardinality(product_ids) as n, cardinality(array_positions(reasons, 'bought_before')) as buy_again
    )
    select count(n)::int as lists, coalesce(sum(n - buy_again), 0)::int as candidates,
           coalesce(sum(buy_again), 0)::int as buy_again
    from staged`,
    ),
  );
  steps.counts.write = written?.lists ?? 0;
  steps.counts.candidates = written?.candidates ?? 0;
  steps.counts.buyAgain = written?.buy_again ?? 0;
  return { ...steps.result(written?.lists ?? 0), snapshot };
}

/**
 * The swap, in one transaction under the shared erasure lock: the output's previous rows go (all of them in a full
 * run, the staged users' in an incremental one) and the staged lists come in, except those of users whose erasure
 * committed after their part's snapshot was taken. `snapshots[k]` is part k's.
 */
export async function swapUserCandidates(
  tx: Executor,
  modelVersion: number,
  scope: CandidateScope,
  snapshots: readonly string[],
): Promise<RecommenderResult> {
  await holdErasureLockShared(tx);
  const steps = new Steps();
  const stage = stageTable(modelVersion);
  const parts = snapshots.map((snapshot, k) => {
    if (!SNAPSHOT_TEXT.test(snapshot)) throw new Error(`user_candidates: not a snapshot: ${snapshot}`);
    return sql`(${count(k)}, ${sql.raw(`'${snapshot}'`)}::pg_snapshot)`;
  });
  if (scope.mode === "full") {
    await steps.run(tx, "delete", sql`delete from ${userCandidates}`);
  } else {
    // Every recomputed user's row goes (users whose data left both windows get no new one).
    await steps.run(tx, "delete", sql`delete from ${userCandidates} c using ${stage} s where c.user_key = s.user_key`);
  }
  const written = await steps.run(
    tx,
    "swap",
    sql`
    insert into ${userCandidates} (user_key, product_ids, scores, reasons, model_version)
    select s.user_key, s.product_ids, s.scores, s.reasons, ${num(modelVersion)}
    from ${stage} s
    where s.product_ids is not null
      and not exists (
        select 1 from ${erasedUsers} e join (values ${sql.join(parts, sql`, `)}) as p(part, snapshot) on p.part = s.part
        where e.user_key = s.user_key and not pg_visible_in_snapshot(e.erased_xid, p.snapshot)
      )`,
  );
  const [staged] = await rows<{ n: number }>(
    tx,
    sql`select count(*)::int as n from ${stage} where product_ids is not null`,
  );
  steps.counts.erasedWhileStaging = (staged?.n ?? 0) - written;
  return steps.result(written);
}
