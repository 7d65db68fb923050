// Popular and trending products per segment — the cold-start and fallback lists of the ranking path. Method:
//   weight  each interaction counts with TREND_WEIGHTS[kind] (src/session/weights.ts: view 1, click 0.5, cart 3,
//           wishlist 2, purchase 5), the same weights as the live trending counters in Redis;
//   segments `global`; `category:<c>` from the catalogue (c normalised like the session's category tokens);
//           `country:<CC>` from the event's country (events.country, ISO alpha-2);
//   popular  Σ weight over the last POPULAR_DAYS; the TOP_K per segment;
//   trending recent = Σ weight over the last RECENT_HOURS, baseline = Σ weight over the BASELINE_DAYS before that,
//           scaled to the same length as the recent window; trend = (recent + PRIOR) / (baseline + PRIOR). The
//           prior (a pseudo-weight added to both sides) keeps a product going from 0 to 1 view from ranking
//           first; products need recent ≥ MIN_RECENT and trend > 1; the TOP_K per segment by trend.
// Hidden and out-of-stock products stay in these lists: stock and visibility change by the minute and are
// enforced when a request is ranked, against the catalogue at the edge, so a batch list never hides a product
// that is back in stock. Full recompute (both lists are small: segments × TOP_K).
import { sql } from "drizzle-orm";
import { TREND_WEIGHTS } from "../../session/weights.ts";
import { catalog, events, interactions, popularItems } from "../../stores/schema.ts";
import { at, categorySegment, count, days, type Executor, hours, num, type RecommenderResult, Steps } from "./sql.ts";

export interface PopularParams {
  popularDays: number;
  recentHours: number;
  baselineDays: number;
  prior: number;
  minRecent: number;
  topK: number;
}

export const POPULAR_DEFAULTS: PopularParams = {
  popularDays: 30,
  recentHours: 24,
  /** A week: every weekday once, so a product that sells every Monday is not "trending" every Monday. */
  baselineDays: 7,
  /** About five views' worth of evidence before a ratio means much. */
  prior: 5,
  minRecent: 3,
  topK: 50,
};

/** `case kind when 'view' then 1 … else 0 end`, from TREND_WEIGHTS. */
function trendWeight() {
  const arms = Object.entries(TREND_WEIGHTS)
    .filter(([, w]) => w !== 0)
    .map(([kind, w]) => sql`when ${sql.raw(`'${kind}'`)} then ${num(w)}`);
  return sql`(case kind ${sql.join(arms, sql` `)} else 0 end)`;
}

export async function computePopular(
  tx: Executor,
  asOf: Date,
  /** The version to write each list under; a list without one is left as it is (an external model owns it). */
  versions: { popular?: number | undefined; trending?: number | undefined },
  p: PopularParams,
): Promise<{ popular?: RecommenderResult; trending?: RecommenderResult }> {
  const steps = new Steps();
  const since = Math.max(p.popularDays, p.baselineDays + p.recentHours / 24);
  const recentFrom = sql`${at(asOf)} - ${hours(p.recentHours)}`;
  // One scan of the longest window: weight, category segment, country, and which windows the row belongs to.
  await steps.run(
    tx,
    "base",
    sql`
    create temp table pop_base on commit drop as
    -- Each catalogue row's segment once (not once per event: the normalisation runs regular expressions).
    with segments as materialized (select id, ${categorySegment(sql`category`)} as category from ${catalog})
    select i.product_id,
           c.category,
           'country:' || e.country as country,
           ${trendWeight()} * (i.event_time > ${at(asOf)} - ${days(p.popularDays)})::int as popular,
           ${trendWeight()} * (i.event_time > ${recentFrom})::int as recent,
           ${trendWeight()} * (i.event_time <= ${recentFrom}
                               and i.event_time > ${recentFrom} - ${days(p.baselineDays)})::int as baseline
    from ${interactions} i
      left join segments c on c.id = i.product_id
      left join ${events} e on e.message_id = i.message_id
    where i.event_time > ${at(asOf)} - ${days(since)} and i.event_time <= ${at(asOf)}
      and i.kind in (${sql.join(
        Object.entries(TREND_WEIGHTS)
          .filter(([, w]) => w > 0)
          .map(([kind]) => sql.raw(`'${kind}'`)),
        sql`, `,
      )})`,
  );
  await steps.run(
    tx,
    "segments",
    sql`
    create temp table pop_segments on commit drop as
    select case when grouping(category) = 0 then category
                when grouping(country) = 0 then country
                else 'global' end as segment,
           product_id, sum(popular) as popular, sum(recent) as recent, sum(baseline) as baseline
    from pop_base
    group by grouping sets ((product_id), (product_id, category), (product_id, country))`,
  );
  await tx.execute(sql`delete from pop_segments where segment is null`);
  const out: { popular?: RecommenderResult; trending?: RecommenderResult } = {};
  if (versions.popular !== undefined) {
    await steps.run(tx, "deletePopular", sql`delete from ${popularItems} where list = 'popular'`);
    const popular = await steps.run(
      tx,
      "writePopular",
      sql`
    insert into ${popularItems} (list, segment, product_id, score, rank, model_version)
    select 'popular', segment, product_id, popular, rank, ${num(versions.popular)}
    from (
      select segment, product_id, popular,
             row_number() over (partition by segment order by popular desc, product_id) as rank
      from pop_segments where popular > 0
    ) r
    where rank <= ${count(p.topK)}`,
    );
    out.popular = { rows: popular, steps: { ...steps.steps }, counts: { ...steps.counts } };
  }
  // baseline scaled to the recent window's length: a week of baseline against 24 h is baseline × 24 / 168.
  const scale = p.recentHours / (p.baselineDays * 24);
  if (versions.trending === undefined) return out;
  const shared = { ...steps.steps };
  await steps.run(tx, "deleteTrending", sql`delete from ${popularItems} where list = 'trending'`);
  const trending = await steps.run(
    tx,
    "writeTrending",
    sql`
    insert into ${popularItems} (list, segment, product_id, score, rank, model_version)
    select 'trending', segment, product_id, trend, rank, ${num(versions.trending)}
    from (
      select segment, product_id, trend,
             row_number() over (partition by segment order by trend desc, recent desc, product_id) as rank
      from (
        select segment, product_id, recent,
               (recent + ${num(p.prior)}) / (baseline * ${num(scale)} + ${num(p.prior)}) as trend
        from pop_segments where recent >= ${num(p.minRecent)}
      ) t
      where trend > 1
    ) r
    where rank <= ${count(p.topK)}`,
  );
  out.trending = {
    rows: trending,
    steps: {
      base: shared.base ?? 0,
      segments: shared.segments ?? 0,
      delete: steps.steps.deleteTrending ?? 0,
      write: steps.steps.writeTrending ?? 0,
    },
    counts: { segmentRows: steps.counts.segments ?? 0 },
  };
  return out;
}
