// What the publisher reads from Postgres: the stable keys (per user, per item) whose content changed since they
// were last written, the stable keys whose list disappeared (tombstones), and the shared hot keys' content.
// Postgres builds every list as compact JSON itself (codec.ts) and hashes it (md5, enough to detect change; not a
// security boundary), and the join with published_keys drops unchanged keys inside the database: the Worker only
// ever receives rows it has to write. Each read is bounded (LIMIT) and resumes from a cursor in key order, so a
// publish of millions of keys is worked off in small steps across many invocations.
import { sql } from "drizzle-orm";
import type { Executor } from "../batch/bulk.ts";
import {
  catalog,
  itemNeighbors,
  modelVersions,
  popularItems,
  publishedKeys,
  userCandidates,
} from "../stores/schema.ts";
import { CATALOG_ROW_COLUMNS, catalogRowOf } from "./codec.ts";
import { fitsKvKey, ITEM_PREFIX, NEIGHBOR_KEY_KINDS, USER_PREFIX } from "./keys.ts";

/** Candidates per user list in KV: what the ranking path can use, bounded so a value stays a few KB. */
export const USER_LIST_MAX = 100;
/** Neighbours per item list. */
export const ITEM_LIST_MAX = 50;
/** Items per popular / trending list of a segment. */
export const POPULAR_LIST_MAX = 100;
/** content_hash of a key whose list was removed (its value holds a tombstone entry). */
export const TOMBSTONE_HASH = "tombstone";

export const STABLE_PHASES = ["users", "items", "user_tombstones", "item_tombstones"] as const;
export type StablePhase = (typeof STABLE_PHASES)[number];

export interface StableChange {
  key: string;
  hash: string;
  /** The list as JSON, or "null" for a tombstone. */
  list: string;
}

export interface ChangeBatch {
  changes: StableChange[];
  /** Resume after this (opaque). */
  cursor: string;
  /** Nothing after the cursor. */
  done: boolean;
  /** Ids skipped because their key would exceed KV's key length limit. */
  skipped: number;
}

type Row = Record<string, unknown>;
const rows = async (db: Executor, query: ReturnType<typeof sql>): Promise<Row[]> =>
  (await db.execute(query)).rows as Row[];

/** `all`: every key, changed or not (the backfill of an empty namespace). */
const changedOnly = (all: boolean, list: ReturnType<typeof sql>) =>
  all ? sql`true` : sql`p.content_hash is distinct from md5(${list})`;

async function userChanges(db: Executor, cursor: string, limit: number, all = false): Promise<ChangeBatch> {
  const result = await rows(
    db,
    sql`
    select u.user_key as id, u.list, md5(u.list) as hash
    from (
      select c.user_key,
             (select json_agg(json_build_array(x.product_id, x.score::real, x.reason) order by x.rank)
              from unnest(c.product_ids, c.scores, c.reasons) with ordinality as x(product_id, score, reason, rank)
              where x.rank <= ${USER_LIST_MAX})::text as list
      from ${userCandidates} c
      where c.user_key > ${cursor}
      order by c.user_key
    ) u
    left join ${publishedKeys} p on p.key = ${USER_PREFIX} || u.user_key
    where ${changedOnly(all, sql`u.list`)}
    order by u.user_key
    limit ${limit}`,
  );
  const batch: ChangeBatch = { changes: [], cursor, done: result.length < limit, skipped: 0 };
  for (const r of result) {
    const key = `${USER_PREFIX}${String(r.id)}`;
    batch.cursor = String(r.id);
    if (!fitsKvKey(key)) batch.skipped++;
    else batch.changes.push({ key, hash: String(r.hash), list: String(r.list) });
  }
  return batch;
}

async function itemChanges(db: Executor, cursor: string, limit: number, all = false): Promise<ChangeBatch> {
  const [kind, productId] = cursor === "" ? ["", ""] : (JSON.parse(cursor) as [string, string]);
  const result = await rows(
    db,
    sql`
    select n.kind, n.product_id as id, n.list, md5(n.list) as hash
    from (
      select x.kind, x.product_id,
             json_agg(json_build_array(x.neighbor_id, x.score::real) order by x.rank, x.neighbor_id)::text as list
      from ${itemNeighbors} x
      where (x.kind, x.product_id) > (${kind}, ${productId}) and x.rank <= ${ITEM_LIST_MAX}
      group by x.kind, x.product_id
      order by x.kind, x.product_id
    ) n
    left join ${publishedKeys} p on p.key = ${ITEM_PREFIX} || n.kind || ':' || n.product_id
    where ${changedOnly(all, sql`n.list`)}
    order by n.kind, n.product_id
    limit ${limit}`,
  );
  const batch: ChangeBatch = { changes: [], cursor, done: result.length < limit, skipped: 0 };
  for (const r of result) {
    const key = `${ITEM_PREFIX}${String(r.kind)}:${String(r.id)}`;
    batch.cursor = JSON.stringify([String(r.kind), String(r.id)]);
    if (!fitsKvKey(key)) batch.skipped++;
    else batch.changes.push({ key, hash: String(r.hash), list: String(r.list) });
  }
  return batch;
}

/**
 * Published stable keys whose list is gone (the user or product left the outputs): each gets a tombstone entry. Keys are scanned in primary-key order from the cursor, so each step reads a bounded slice of the index.
 */
async function tombstones(db: Executor, phase: StablePhase, cursor: string, limit: number): Promise<ChangeBatch> {
  const scopes =
    phase === "user_tombstones"
      ? [
          {
            prefix: USER_PREFIX,
            exists: (id: ReturnType<typeof sql>) =>
              sql`exists (select 1 from ${userCandidates} c where c.user_key = ${id})`,
          },
        ]
      : NEIGHBOR_KEY_KINDS.map((kind) => ({
          prefix: `${ITEM_PREFIX}${kind}:`,
          exists: (id: ReturnType<typeof sql>) =>
            sql`exists (select 1 from ${itemNeighbors} x where x.kind = ${kind} and x.product_id = ${id} and x.rank <= ${ITEM_LIST_MAX})`,
        }));
  // One query over the union of the scopes' ranges, in key order.
  const parts = scopes.map((s) => {
    const id = sql`substr(p.key, ${s.prefix.length + 1})`;
    return sql`(starts_with(p.key, ${s.prefix}) and not ${s.exists(id)})`;
  });
  const result = await rows(
    db,
    sql`
    select p.key from ${publishedKeys} p
    where p.key > ${cursor} and p.content_hash <> ${TOMBSTONE_HASH} and (${sql.join(parts, sql` or `)})
    order by p.key
    limit ${limit}`,
  );
  const batch: ChangeBatch = { changes: [], cursor, done: result.length < limit, skipped: 0 };
  for (const r of result) {
    batch.cursor = String(r.key);
    batch.changes.push({ key: String(r.key), hash: TOMBSTONE_HASH, list: "null" });
  }
  return batch;
}

/**
 * The next `limit` changed stable keys of `phase` after `cursor` (cursor "" = from the start); with `all`, every
 * key of the users and items phases whether changed or not.
 */
export function readChanges(
  db: Executor,
  phase: StablePhase,
  cursor: string,
  limit: number,
  all = false,
): Promise<ChangeBatch> {
  switch (phase) {
    case "users":
      return userChanges(db, cursor, limit, all);
    case "items":
      return itemChanges(db, cursor, limit, all);
    default:
      return tombstones(db, phase, cursor, limit);
  }
}

/** Records what was written: one statement for the batch. */
export async function recordPublished(
  db: Executor,
  entries: ReadonlyArray<{ key: string; hash: string }>,
  version: number,
): Promise<void> {
  if (entries.length === 0) return;
  await db.execute(sql`
    insert into ${publishedKeys} (key, content_hash, version, published_at)
    select r.key, r.hash, ${String(version)}, now() from json_to_recordset(${JSON.stringify(entries)}::json) as r(key text, hash text)
    on conflict (key) do update
      set content_hash = excluded.content_hash, version = excluded.version, published_at = excluded.published_at`);
}

/** content_hash and version of published keys (shared keys are recorded under their logical names). */
export async function publishedHashes(
  db: Executor,
  keys: readonly string[],
): Promise<Map<string, { hash: string; version: number }>> {
  const result = await rows(
    db,
    sql`select key, content_hash, version from ${publishedKeys}
        where key in (select json_array_elements_text(${JSON.stringify(keys)}::json))`,
  );
  return new Map(result.map((r) => [String(r.key), { hash: String(r.content_hash), version: Number(r.version) }]));
}

// ───────────────────────────── shared keys ─────────────────────────────

export interface CatalogWatermark {
  count: number;
  maxUpdatedAt: string | null;
}

/** Cheap change detection: the catalogue changed iff its row count or newest updated_at moved. */
export async function catalogWatermark(db: Executor): Promise<CatalogWatermark> {
  const [r] = await rows(db, sql`select count(*)::int as count, max(${catalog.updatedAt})::text as at from ${catalog}`);
  return { count: Number(r?.count ?? 0), maxUpdatedAt: r?.at === null || r?.at === undefined ? null : String(r.at) };
}

export async function catalogRows(db: Executor) {
  const result = await rows(db, sql`select ${sql.raw(CATALOG_ROW_COLUMNS)} from ${catalog} order by id collate "C"`);
  return result.map((r) => catalogRowOf(r));
}

/** popular_items as list → segment → [productId, score] best first. */
export async function popularLists(db: Executor): Promise<Map<string, Record<string, [string, number][]>>> {
  const result = await rows(
    db,
    sql`select list, segment, product_id, score::real as score from ${popularItems}
        where rank <= ${POPULAR_LIST_MAX} order by list, segment collate "C", rank, product_id`,
  );
  const out = new Map<string, Record<string, [string, number][]>>();
  for (const r of result) {
    const list = String(r.list);
    const segments = out.get(list) ?? {};
    out.set(list, segments);
    const segment = String(r.segment);
    const items = segments[segment] ?? [];
    segments[segment] = items;
    items.push([String(r.product_id), Number(r.score)]);
  }
  return out;
}

/** The newest ready or published version of each model: what the snapshot is made of. */
export async function currentModelVersions(db: Executor): Promise<Record<string, number>> {
  const result = await rows(
    db,
    sql`select model, max(id)::bigint as id from ${modelVersions}
        where status in ('ready', 'published') group by model`,
  );
  return Object.fromEntries(result.map((r) => [String(r.model), Number(r.id)]));
}

/** Marks the snapshot's ready model versions as published. */
export async function markModelsPublished(db: Executor, ids: readonly number[]): Promise<void> {
  if (ids.length === 0) return;
  await db.execute(sql`
    update ${modelVersions} set status = 'published', finished_at = coalesce(finished_at, now())
    where id in (select (json_array_elements_text(${JSON.stringify(ids)}::json))::bigint) and status = 'ready'`);
}
