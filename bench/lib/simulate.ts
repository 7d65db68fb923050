// A session simulator for the compute benchmark, in SQL (generating millions of rows in Postgres beats sending
// them): visitors browse sessions of product views with category locality, with some carts and purchases, over a
// product catalogue already in `catalog`. Deterministic: every random draw is `hashint8extended(draw id, seed)`,
// so the same options give the same rows on any machine (no setseed, no dependence on scan order or parallelism).
//
// The distribution, per session:
//   user       U · r^1.5              (a few visitors come back often, most rarely) over U = events / eventsPerUser
//                                     ids; at ~2.7 sessions per id, ~10 % of the ids draw none, so an active user
//                                     has ~1.1 × eventsPerUser events (1M events: 45,236 users, 22.1 each)
//   start      now − DAYS · r         (uniform over the period)
//   category   C · r²                 over categories by size (big categories draw more visits)
//   length     1 + ⌊−ln(1−r) · (L−1)⌋, at most 40 (geometric-like: the floor of an exponential of mean L − 1, so
//                                     the mean is 1 + 1/(e^(1/(L−1)) − 1) ≈ L − 0.5, 7.5 for L = 8; 1M events:
//                                     133,769 sessions, 7.5 each)
// per event i of the session (one event = one message = one interaction row):
//   time       start + i · 90 s + r · 60 s
//   product    80%: the session's category, rank ⌊n_c · r³⌋ in it (popular products first); 20%: anywhere, ⌊P · r³⌋
//   kind       5% purchase (order id = the session), 10% add_to_cart, otherwise view
//   country    per user: GB 60%, DE 15%, FR 10%, NL 5%, US 10%
import type { PoolClient } from "@neondatabase/serverless";
import { AFFINITY_WEIGHTS } from "../../src/session/weights.ts";

export interface SimulationOptions {
  /** Interaction rows (= events) to generate. */
  events: number;
  /** The simulated "now": sessions start within `days` before it. */
  now: Date;
  days?: number;
  /** L of the session length (default 8): sessions have 7.5 events on average for 8 (≈ L − 0.5). */
  meanSessionLength?: number;
  /** Events per user id (default 20): ~10 % of the ids draw no session, so active users have ~22 events each. */
  eventsPerUser?: number;
  seed?: number;
  /** Message ids start with this (several simulations can share a database). */
  prefix?: string;
}

export interface SimulationReport {
  events: number;
  sessions: number;
  users: number;
  generateMs: number;
  insertMs: number;
}

/** Generates the rows on `client` (one connection: the temporary table lives in its session). */
export async function simulateSessions(client: PoolClient, options: SimulationOptions): Promise<SimulationReport> {
  const days = options.days ?? 60;
  const meanLength = options.meanSessionLength ?? 8;
  const users = Math.max(1, Math.round(options.events / (options.eventsPerUser ?? 20)));
  const sessions = Math.ceil((options.events / meanLength) * 1.2);
  const seed = options.seed ?? 42;
  const prefix = options.prefix ?? "sim";
  if (!/^[a-z0-9_]+$/.test(prefix)) throw new Error(`unsafe prefix ${prefix}`);
  const r = (x: string, salt: number) =>
    `((hashint8extended(${x}, ${seed * 100 + salt}) & 4503599627370495)::float8 / 4503599627370496.0)`;
  const weight = (kind: keyof typeof AFFINITY_WEIGHTS) => String(AFFINITY_WEIGHTS[kind]);

  const t0 = performance.now();
  await client.query("drop table if exists sim_products, sim_categories, sim_rows");
  await client.query(`
    create temp table sim_categories as
    select coalesce(category, '') as category, (row_number() over (order by count(*) desc, coalesce(category, '')) - 1)::int as c,
           count(*)::int as n
    from catalog group by 1`);
  await client.query(`
    create temp table sim_products as
    select p.id, s.c, s.n,
           (row_number() over (partition by s.c order by md5(p.id)) - 1)::int as k,
           (row_number() over (order by md5(p.id)) - 1)::int as g
    from catalog p join sim_categories s on s.category = coalesce(p.category, '')`);
  await client.query("create index on sim_products (c, k)");
  await client.query("create index on sim_products (g)");
  await client.query("analyze sim_products");
  const { rows } = await client.query(
    "select (select count(*) from sim_categories)::int as categories, (select count(*) from sim_products)::int as products",
  );
  const { categories, products } = rows[0] as { categories: number; products: number };
  if (products === 0) throw new Error("the catalogue is empty: load it first");

  await client.query(`
    create temp table sim_rows as
    with sessions as (
      select s,
             floor(${users} * ${r("s", 1)} ^ 1.5)::bigint as u,
             to_timestamp(${options.now.getTime() / 1000}) - ${days} * interval '1 day' * ${r("s", 2)} as started,
             floor(${categories} * ${r("s", 3)} ^ 2)::int as c,
             least(40, 1 + floor(-ln(1 - ${r("s", 4)}) * ${meanLength - 1}))::int as len
      from generate_series(1::bigint, ${sessions}::bigint) s
    ),
    draws as (
      select s.s, s.u, s.c, i, s.s * 64 + i as x,
             s.started + i * interval '90 seconds' + ${r("s.s * 64 + i", 5)} * interval '60 seconds' as at
      from sessions s cross join lateral generate_series(1, s.len) i
      limit ${options.events}
    ),
    picked as (
      select d.*, ${r("d.x", 6)} < 0.8 as local, ${r("d.x", 7)} as rp, ${r("d.x", 8)} as rk from draws d
    )
    select '${prefix}-' || p.s || '-' || p.i as message_id, 'u:${prefix}-' || p.u as user_key,
           coalesce(lp.id, gp.id) as product_id,
           case when p.rk < 0.05 then 'purchase' when p.rk < 0.15 then 'add_to_cart' else 'view' end as kind,
           case when p.rk < 0.05 then '${prefix}-o' || p.s end as order_id,
           least(p.at, to_timestamp(${options.now.getTime() / 1000})) as event_time,
           (array['GB','GB','GB','GB','GB','GB','GB','GB','GB','GB','GB','GB','DE','DE','DE','FR','FR','NL','US','US'])
             [1 + floor(20 * ${r("p.u", 9)})::int] as country
    from picked p
      left join sim_categories sc on sc.c = p.c
      left join sim_products lp on p.local and lp.c = p.c and lp.k = floor(sc.n * p.rp ^ 3)::int
      left join sim_products gp on not p.local and gp.g = floor(${products} * p.rp ^ 3)::int`);
  const generateMs = Math.round(performance.now() - t0);

  const t1 = performance.now();
  await client.query(`
    insert into events (message_id, user_key, user_id, type, event, product_id, country, source_id, event_time, received_at, loaded_at)
    select message_id, user_key, substr(user_key, 3), 'track',
           case kind when 'purchase' then 'Order Completed' when 'add_to_cart' then 'Product Added' else 'Product Viewed' end,
           product_id, country, 'bench', event_time, event_time, event_time
    from sim_rows`);
  await client.query(`
    insert into interactions (message_id, position, user_key, product_id, kind, weight, quantity, order_id, event_time)
    select message_id, 0, user_key, product_id, kind,
           case kind when 'purchase' then ${weight("purchase")} when 'add_to_cart' then ${weight("add_to_cart")} else ${weight("view")} end,
           case when kind = 'view' then null else 1 end, order_id, event_time
    from sim_rows`);
  const { rows: counted } = await client.query(
    "select count(*)::int as events, count(distinct user_key)::int as users, count(distinct split_part(message_id, '-', 2))::int as sessions from sim_rows",
  );
  await client.query("drop table sim_rows, sim_products, sim_categories");
  const c = counted[0] as { events: number; users: number; sessions: number };
  return { ...c, generateMs, insertMs: Math.round(performance.now() - t1) };
}
