// The batch lists from the deployed SQL (`computeRecommendations`, src/batch/compute.ts) instead of their
// TypeScript computation: a throwaway local Postgres (the launcher `npm run dev` and the tests use), the training
// events loaded as warehouse interactions, the recommenders run as of the training data's end, their output tables
// read back. `--sql` on the UCI suites (docs/relevance.md#our-methods).
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { LOCAL_KEYS } from "../scripts/lib/local-keys.ts";
import { migrateDatabase } from "../scripts/lib/migrate.ts";
import { startStack } from "../scripts/lib/stack.ts";
import { type CatalogItem, upsertCatalog } from "../src/batch/catalog.ts";
import { computeRecommendations } from "../src/batch/compute.ts";
import type { Scored } from "../src/rank/core.ts";
import { drizzleOn, openPool } from "../src/stores/db.ts";
import type { Session } from "./data.ts";
import type { TrainData } from "./method.ts";
import { type BatchModels, type Candidate, KIND_OF, weightOf } from "./methods/batch.ts";

export interface SqlOutputs {
  models: BatchModels;
  /**
   * user key → the user's list as stored: the candidates best first, then the buy-again entries (reason
   * `bought_before`) best first; each with its reason, which is how a reader tells the two apart.
   */
  candidates: Map<string, Candidate[]>;
  timings: {
    startMs: number;
    loadMs: number;
    computeMs: number;
    readMs: number;
    /** Per output: its transaction's ms and the ms of each SQL step (the version's stats.steps). */
    outputs: Record<string, { ms: number; steps: Record<string, number> }>;
  };
}

const CHUNK = 20_000;

/**
 * Loads `train` (one interaction per event; user key from `userKey`; a session's purchases are one order) and runs
 * every recommender with its default parameters as of `train.asOf`. An event's message id is its session's id and
 * its index, zero-padded: events at the same time (an invoice's lines) keep the session's order in the warehouse's
 * (event_time, message_id) order, which the next-items visits follow.
 */
export async function sqlModels(train: TrainData, userKey: (s: Session) => string): Promise<SqlOutputs> {
  const t0 = performance.now();
  const stateDir = mkdtempSync(join(tmpdir(), "lastmile-eval-"));
  const stack = await startStack({
    stateDir,
    database: "lastmile_eval",
    redisToken: LOCAL_KEYS.redisToken,
    persistRedis: false,
  });
  const settings = { databaseUrl: stack.vars.DATABASE_URL, localWsProxy: stack.vars.NEON_LOCAL_WS_PROXY };
  try {
    await migrateDatabase(settings);
    const pool = openPool(settings);
    try {
      const db = drizzleOn(pool);
      const startMs = Math.round(performance.now() - t0);
      const t1 = performance.now();
      const items = new Set<string>();
      for (const s of train.sessions) for (const e of s.events) items.add(e.item);
      const catalogRows: CatalogItem[] = [...items].map((id) => {
        const info = train.catalog.get(id);
        return {
          id,
          title: info?.title ?? id,
          category: info?.category ?? null,
          brand: null,
          tags: [],
          price: info?.price ?? null,
          currency: null,
          inStock: true,
          visible: true,
          attributes: {},
        };
      });
      await upsertCatalog(db, catalogRows);
      const cols: Array<Array<string | number | null>> = [[], [], [], [], [], [], [], []];
      const flush = async () => {
        if ((cols[0] as unknown[]).length === 0) return;
        await pool.query(
          `insert into interactions (message_id, position, user_key, product_id, kind, weight, order_id, event_time)
           select * from unnest($1::text[], $2::int[], $3::text[], $4::text[], $5::text[], $6::float8[], $7::text[],
                                $8::timestamptz[])`,
          cols,
        );
        for (const c of cols) c.length = 0;
      };
      for (const s of train.sessions) {
        const key = userKey(s);
        for (const [i, e] of s.events.entries()) {
          const row = [
            `${s.id}-${String(i).padStart(6, "0")}`,
            0,
            key,
            e.item,
            KIND_OF[e.type],
            weightOf(e),
            e.type === "purchase" ? s.id : null,
            new Date(e.time * 1000).toISOString(),
          ];
          row.forEach((v, k) => {
            (cols[k] as Array<string | number | null>).push(v);
          });
          if ((cols[0] as unknown[]).length >= CHUNK) await flush();
        }
      }
      await flush();
      await pool.query("vacuum analyze interactions");
      const loadMs = Math.round(performance.now() - t1);
      const t2 = performance.now();
      const report = await computeRecommendations(db, { asOf: new Date(train.asOf * 1000) });
      const computeMs = Math.round(performance.now() - t2);
      const outputs = Object.fromEntries(
        Object.entries(report.outputs).map(([model, o]) => [model, { ms: o.durationMs, steps: o.steps }]),
      );
      const t3 = performance.now();
      const neighbours = async (kind: string) => {
        const { rows } = await pool.query(
          "select product_id, neighbor_id, score from item_neighbors where kind = $1 order by product_id, rank",
          [kind],
        );
        const out = new Map<string, Scored[]>();
        for (const r of rows as Array<{ product_id: string; neighbor_id: string; score: number }>) {
          let list = out.get(r.product_id);
          if (!list) {
            list = [];
            out.set(r.product_id, list);
          }
          list.push([r.neighbor_id, Number(r.score)]);
        }
        return out;
      };
      const { rows: popularRows } = await pool.query(
        "select list, segment, product_id, score from popular_items where segment = 'global' or segment like 'category:%' order by list, segment, rank",
      );
      const popular: Scored[] = [];
      const trending: Scored[] = [];
      const popularByCategory = new Map<string, Scored[]>();
      for (const r of popularRows as Array<{ list: string; segment: string; product_id: string; score: number }>) {
        const entry = [r.product_id, Number(r.score)] as const;
        if (r.segment === "global") (r.list === "popular" ? popular : trending).push(entry);
        else if (r.list === "popular") {
          const c = r.segment.slice("category:".length);
          const list = popularByCategory.get(c) ?? [];
          list.push(entry);
          popularByCategory.set(c, list);
        }
      }
      const { rows: candidateRows } = await pool.query(
        `select c.user_key, u.product_id, u.score, u.reason from user_candidates c
         cross join lateral unnest(c.product_ids, c.scores, c.reasons) with ordinality as u(product_id, score, reason, rank)
         order by c.user_key, u.rank`,
      );
      const candidates = new Map<string, Candidate[]>();
      for (const r of candidateRows as Array<{
        user_key: string;
        product_id: string;
        score: number;
        reason: string | null;
      }>) {
        const list = candidates.get(r.user_key) ?? [];
        list.push({ productId: r.product_id, score: Number(r.score), reason: r.reason });
        candidates.set(r.user_key, list);
      }
      const models: BatchModels = {
        similar: await neighbours("similar"),
        boughtTogether: await neighbours("bought_together"),
        next: await neighbours("next"),
        popular,
        popularByCategory,
        trending,
      };
      return {
        models,
        candidates,
        timings: { startMs, loadMs, computeMs, readMs: Math.round(performance.now() - t3), outputs },
      };
    } finally {
      await pool.end();
    }
  } finally {
    await stack.stop();
    rmSync(stateDir, { recursive: true, force: true });
  }
}
