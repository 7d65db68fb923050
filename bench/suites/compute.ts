// Suite `compute`: the SQL recommenders (src/batch/compute.ts) over 1M and 5M simulated interactions on the real
// UCI catalogue, in a database of their own (lastmile_bench_compute), through the Neon driver as the Worker runs
// them. Postgres only: no Worker, so no floor; the baseline measured in the same run is a naive co-visitation
// self-join (every pair of the same user's events within 30 minutes, no caps, no pre-aggregation) on the 1M set.
//
//   npm run bench -- compute [--json]
//   BENCH_COMPUTE_SIZES=1000000 npm run bench -- compute     (sizes to run, comma-separated; default 1M and 5M)
import { ensureDatabase, migrateDatabase } from "../../scripts/lib/migrate.ts";
import { readLines, UCI_RETAIL_FILE } from "../../scripts/lib/seed.ts";
import { CatalogBuilder } from "../../scripts/lib/uci-retail.ts";
import { upsertCatalog } from "../../src/batch/catalog.ts";
import { COMPUTE_DEFAULTS, COMPUTE_LANES, COMPUTE_WORK_MEM, computeRecommendations } from "../../src/batch/compute.ts";
import { type DbSettings, drizzleOn, openPool } from "../../src/stores/db.ts";
import { simulateSessions } from "../lib/simulate.ts";
import type { Suite } from "../lib/suite.ts";

const DATABASE = "lastmile_bench_compute";
const NOW = new Date("2026-11-26T12:00:00.000Z");
const DEFAULT_SIZES = [1_000_000, 5_000_000];
/** The naive baseline runs on this size only (it takes ~18 s per 1M events). */
const BASELINE_SIZE = 1_000_000;

function sizes(): number[] {
  const raw = process.env.BENCH_COMPUTE_SIZES;
  if (!raw) return DEFAULT_SIZES;
  const list = raw.split(",").map((s) => Number(s.trim()));
  if (list.some((n) => !Number.isInteger(n) || n <= 0)) throw new Error(`BENCH_COMPUTE_SIZES: bad list "${raw}"`);
  return list;
}

/** The real UCI catalogue, built exactly as the seed builds it. */
function catalogueItems() {
  const builder = new CatalogBuilder();
  for (const line of readLines(UCI_RETAIL_FILE).lines) builder.add(line);
  return builder.items();
}

/** The naive co-visitation: a self-join of every event with every event of the same user within 30 minutes. */
function naiveCoVisitation(asOf: Date): string {
  const p = COMPUTE_DEFAULTS.similar;
  const window = `'${asOf.toISOString()}'::timestamptz - ${p.windowDays} * interval '1 day'`;
  return `
    select count(*) as rows from (
      select product_id, neighbor_id, row_number() over (partition by product_id order by score desc) as rank
      from (
        select a.product_id, b.product_id as neighbor_id, sum(a.weight * b.weight) as score
        from interactions a
          join interactions b on b.user_key = a.user_key and b.product_id <> a.product_id
            and b.event_time between a.event_time - interval '${p.sessionGapMinutes} minutes'
                                 and a.event_time + interval '${p.sessionGapMinutes} minutes'
        where a.event_time > ${window} and b.event_time > ${window} and a.weight > 0 and b.weight > 0
        group by 1, 2
      ) pairs
    ) ranked where rank <= ${p.topK}`;
}

const suite: Suite = {
  name: "compute",
  description: "SQL recommenders over 1M and 5M simulated interactions (Postgres only), vs a naive self-join",
  needsWorker: false,
  async run(ctx) {
    const server: DbSettings = {
      databaseUrl: ctx.vars.DATABASE_URL ?? "",
      localWsProxy: ctx.vars.NEON_LOCAL_WS_PROXY,
    };
    const settings: DbSettings = {
      ...server,
      databaseUrl: Object.assign(new URL(server.databaseUrl), { pathname: `/${DATABASE}` }).toString(),
    };
    await ensureDatabase(server, DATABASE);
    await migrateDatabase(settings);
    const pool = openPool(settings);
    const results: Record<string, unknown> = {};
    const relative: Record<string, unknown> = {};
    const notes: string[] = [];
    try {
      const db = drizzleOn(pool);
      const items = catalogueItems();
      await upsertCatalog(db, items);
      ctx.log(`catalogue: ${items.length} UCI products`);

      for (const size of sizes()) {
        const label = size % 1_000_000 === 0 ? `${size / 1_000_000}M` : String(size);
        await pool.query(
          "truncate item_neighbors, user_candidates, popular_items, model_versions, interactions, events restart identity",
        );
        const client = await pool.connect();
        let simulated: Awaited<ReturnType<typeof simulateSessions>>;
        try {
          ctx.log(`${label}: simulating ${size} events`);
          simulated = await simulateSessions(client, { events: size, now: NOW });
        } finally {
          client.release();
        }
        await pool.query("vacuum analyze events");
        await pool.query("vacuum analyze interactions");
        ctx.log(`${label}: ${JSON.stringify(simulated)}; computing`);

        const full = await computeRecommendations(db, { asOf: NOW, log: (l) => ctx.log(`${label}: ${l}`) });
        const outputs = Object.fromEntries(
          Object.entries(full.outputs).map(([model, o]) => [model, { rows: o.rows, ms: o.durationMs, steps: o.steps }]),
        );
        const entry: Record<string, unknown> = {
          data: simulated,
          totalMs: full.durationMs,
          outputs,
          activeUsers: full.outputs.user_candidates?.counts.users,
          // user_candidates rows are lists (one per user); this is the candidates in them.
          candidates: full.outputs.user_candidates?.counts.candidates,
        };

        // The same compute with one lane (the outputs one after the other, as before lanes), on the same data right
        // after: what running the independent outputs at once gains.
        if (size === BASELINE_SIZE) {
          const sequential = await computeRecommendations(db, { asOf: NOW, lanes: 1, full: true });
          entry.oneLane = {
            totalMs: sequential.durationMs,
            outputs: Object.fromEntries(Object.entries(sequential.outputs).map(([m, o]) => [m, o.durationMs])),
          };
          relative[`${label}.lanes`] = {
            against: `${label}.oneLane.totalMs`,
            lanes: COMPUTE_LANES,
            ms: full.durationMs,
            speedup: Math.round((sequential.durationMs / full.durationMs) * 100) / 100,
          };
          ctx.log(`${label}: one lane ${sequential.durationMs} ms against ${full.durationMs} ms with ${COMPUTE_LANES}`);
        }

        // The next refresh after 1% more events in the last hour: user_candidates recomputes only their users.
        const extra = Math.round(size / 100);
        const client2 = await pool.connect();
        try {
          await simulateSessions(client2, {
            events: extra,
            now: new Date(NOW.getTime() + 3_600_000),
            days: 1 / 24,
            prefix: "later",
            seed: 7,
          });
        } finally {
          client2.release();
        }
        const next = await computeRecommendations(db, { asOf: new Date(NOW.getTime() + 3_600_000) });
        entry.nextRefresh = {
          newEvents: extra,
          totalMs: next.durationMs,
          userCandidates: {
            mode: next.outputs.user_candidates?.mode,
            users: next.outputs.user_candidates?.counts.users,
            rows: next.outputs.user_candidates?.rows,
            ms: next.outputs.user_candidates?.durationMs,
          },
        };
        results[label] = entry;
        ctx.log(`${label}: full ${full.durationMs} ms, next refresh ${next.durationMs} ms`);

        if (size === BASELINE_SIZE) {
          ctx.log(`${label}: naive co-visitation baseline`);
          const client3 = await pool.connect();
          try {
            await client3.query("begin");
            await client3.query(`set local work_mem = '${COMPUTE_WORK_MEM}'`);
            const started = performance.now();
            const { rows } = await client3.query(naiveCoVisitation(NOW));
            const naiveMs = Math.round(performance.now() - started);
            await client3.query("rollback");
            const similarMs = full.outputs.similar?.durationMs ?? Number.NaN;
            results.baseline = {
              naiveCoVisitationMs: naiveMs,
              rows: Number((rows[0] as { rows: string }).rows),
              events: size,
            };
            relative[`${label}.similar`] = {
              against: "baseline.naiveCoVisitationMs",
              ms: similarMs,
              speedup: Math.round((naiveMs / similarMs) * 10) / 10,
            };
            relative[`${label}.allRecommenders`] = {
              against: "baseline.naiveCoVisitationMs",
              ms: full.durationMs,
              speedup: Math.round((naiveMs / full.durationMs) * 10) / 10,
            };
          } finally {
            client3.release();
          }
        }
      }
    } finally {
      await pool.end();
    }
    notes.push(
      "Times are wall-clock through the Neon driver (WebSocket proxy → local Postgres 15), one transaction per output, " +
        `${COMPUTE_LANES} outputs at once (oneLane: the same compute one output at a time, on the same data right after); ` +
        "totalMs covers all six outputs (similar, bought_together, next_items, popular, trending, user_candidates) " +
        "including the version bookkeeping.",
    );
    return { floor: { path: "(none: Postgres only)" }, results, relative, notes };
  },
};

export default suite;
