// What the publisher reads from Postgres: the stable keys (per user, per item) whose content changed since they
// were last written, the stable keys whose list disappeared (tombstones), and the shared hot keys' content.
// Postgres builds every list as compact JSON itself (codec.ts) and hashes it (md5, enough to detect change; not a
// security boundary), and the join with published_keys drops unchanged keys inside the database: the Worker only
// ever receives rows it has to write. Each read is bounded twice, in the keys it returns (LIMIT) and in the keys it
// examines (SCAN_MAX), and resumes from a cursor in key order, so a publish of millions of keys is worked off in
// small steps across many invocations, each costing the same wherever the cursor stands.
import { sql } from "drizzle-orm";
import type { Executor } from "../batch/bulk.ts";
import { holdErasureLockShared } from "../privacy/warehouse.ts";
import { ADJACENT_SPAN, ORDER_TOP_NEIGHBOURS } from "../rank/catalog.ts";
import { type Database, transaction } from "../stores/db.ts";
import {
  catalog,
  erasedUsers,
  itemNeighbors,
  modelVersions,
  popularItems,
  publishedKeys,
  syncState,
  userCandidates,
} from "../stores/schema.ts";
import { CATALOG_ROW_COLUMNS, type CatalogOrderStat, catalogRowOf } from "./codec.ts";
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
  /** The snapshot the read saw the warehouse in (pg_current_snapshot() as text; "" when nothing was read). */
  snapshot: string;
}

type Row = Record<string, unknown>;
const rows = async (db: Executor, query: ReturnType<typeof sql>): Promise<Row[]> =>
  (await db.execute(query)).rows as Row[];

/**
 * Keys a step examines at most, changed or not. Bounds one step's work whatever the number of keys after the
 * cursor: a publish where almost nothing changed walks the keys in windows of this size, and the list-building
 * work of a step is at most this many lists.
 */
export const SCAN_MAX = 5_000;
/** The items phase's window: an item key is up to ITEM_LIST_MAX rows of item_neighbors to walk, not one. */
export const ITEM_SCAN_MAX = 1_000;

export interface ReadOptions {
  /** Every key of the users and items phases, changed or not (the backfill of an empty namespace). */
  all?: boolean;
  /** Keys examined at most (default SCAN_MAX, ITEM_SCAN_MAX in the items phase). */
  scan?: number;
}

const changedOnly = (all: boolean, key: ReturnType<typeof sql>, list: ReturnType<typeof sql>) =>
  all
    ? sql`true`
    : sql`(select p.content_hash from ${publishedKeys} p where p.key = ${key}) is distinct from md5(${list})`;

/**
 * Every read below has the same shape: one row per change in key order (`key`, `cursor`, `hash`, `list`), each
 * carrying the scan window's size (`scanned`) and the cursor of its last key (`last`), and one row with null change
 * columns when the window holds no change. The next cursor is the last change's when the read filled `limit`,
 * otherwise the window's end.
 */
function batchOf(result: Row[], cursor: string, limit: number, scan: number): ChangeBatch {
  const batch: ChangeBatch = {
    changes: [],
    cursor,
    done: true,
    skipped: 0,
    snapshot: String(result[0]?.snapshot ?? ""),
  };
  const scanned = Number(result[0]?.scanned ?? 0);
  if (scanned === 0) return batch;
  let found = 0;
  for (const r of result) {
    if (r.key === null) continue;
    found++;
    const key = String(r.key);
    batch.cursor = String(r.cursor);
    if (!fitsKvKey(key)) batch.skipped++;
    else batch.changes.push({ key, hash: String(r.hash), list: String(r.list) });
  }
  if (found < limit) {
    batch.cursor = String(result[0]?.last);
    batch.done = scanned < scan;
  } else batch.done = false;
  return batch;
}

/**
 * Whether the user_candidates row `c` may be published: not when its user was erased (`erased_users`) at or after
 * its model version was created, since the list may then hold what the erasure deleted — an external writer's list
 * built from data read before the erasure (docs/recommenders.md, the external contract), for one. A version's
 * `created_at` is taken before its lists read the warehouse (an external writer sets it to when its input was
 * read), so a list built after the erasure has a later one. A row whose version is unknown is withheld too. One
 * probe of erased_users' primary key per row, and one of model_versions' for the rare erased user: the `offset 0`
 * keeps the planner from turning it into an anti-join, which walks erased_users from its first key on every step.
 */
const publishable = (c: ReturnType<typeof sql>) => sql`not exists (
  select 1 from ${erasedUsers} e
  where e.user_key = ${c}.user_key
    and e.erased_at >= coalesce((select v.created_at from ${modelVersions} v where v.id = ${c}.model_version), '-infinity')
  offset 0)`;

async function userChanges(db: Executor, cursor: string, limit: number, all: boolean, scan: number) {
  // The window: the next `scan` user keys, from the primary key alone. Lists are built only inside it, and the
  // `offset 0` keeps each one built once per user (not once per use).
  const result = await rows(
    db,
    sql`
    with bound as (
      select count(*)::int as scanned, max(k.user_key) as last, pg_current_snapshot()::text as snapshot
      from (select c.user_key from ${userCandidates} c where c.user_key > ${cursor} order by c.user_key limit ${scan}) k
    )
    select b.scanned, b.last, b.snapshot, ${USER_PREFIX} || ch.id as key, ch.id as cursor, ch.list, md5(ch.list) as hash
    from bound b
    left join lateral (
      select c.user_key as id, l.list
      from ${userCandidates} c
      cross join lateral (
        select (select json_agg(json_build_array(x.product_id, x.score::real, x.reason) order by x.rank)
                from unnest(c.product_ids, c.scores, c.reasons) with ordinality as x(product_id, score, reason, rank)
                where x.rank <= ${USER_LIST_MAX})::text as list
        offset 0
      ) l
      where c.user_key > ${cursor} and c.user_key <= b.last and ${publishable(sql`c`)}
        and ${changedOnly(all, sql`${USER_PREFIX} || c.user_key`, sql`l.list`)}
      order by c.user_key
      limit ${limit}
    ) ch on true
    order by ch.id`,
  );
  return batchOf(result, cursor, limit, scan);
}

async function itemChanges(db: Executor, cursor: string, limit: number, all: boolean, scan: number) {
  const [kind, productId] = cursor === "" ? ["", ""] : (JSON.parse(cursor) as [string, string]);
  // The window: the next `scan` (kind, product) pairs in primary-key order; each list is one index probe, and the
  // window is sorted before the lists are built, so that the limit stops the building. Cursor: [kind, product] as
  // JSON.
  const result = await rows(
    db,
    sql`
    with keys as (
      select distinct x.kind, x.product_id from ${itemNeighbors} x
      where (x.kind, x.product_id) > (${kind}, ${productId})
      order by x.kind, x.product_id
      limit ${scan}
    ), bound as (
      select (select count(*)::int from keys) as scanned,
             (select json_build_array(k.kind, k.product_id)::text from keys k
              order by k.kind desc, k.product_id desc limit 1) as last,
             pg_current_snapshot()::text as snapshot
    )
    select b.scanned, b.last, b.snapshot, ${ITEM_PREFIX} || ch.kind || ':' || ch.id as key,
           json_build_array(ch.kind, ch.id)::text as cursor, ch.list, md5(ch.list) as hash
    from bound b
    left join lateral (
      select k.kind, k.product_id as id, l.list
      from (select * from keys order by kind, product_id) k
      cross join lateral (
        select json_agg(json_build_array(n.neighbor_id, n.score::real) order by n.rank, n.neighbor_id)::text as list
        from ${itemNeighbors} n
        where n.kind = k.kind and n.product_id = k.product_id and n.rank <= ${ITEM_LIST_MAX}
      ) l
      where l.list is not null
        and ${changedOnly(all, sql`${ITEM_PREFIX} || k.kind || ':' || k.product_id`, sql`l.list`)}
      order by k.kind, k.product_id
      limit ${limit}
    ) ch on true
    order by ch.kind, ch.id`,
  );
  return batchOf(result, cursor, limit, scan);
}

/**
 * Published stable keys whose list is gone (the user or product left the outputs): each gets a tombstone entry.
 * The window is the next `scan` published keys of the phase's prefixes, in primary-key order.
 */
async function tombstones(db: Executor, phase: StablePhase, cursor: string, limit: number, scan: number) {
  const scopes =
    phase === "user_tombstones"
      ? [
          {
            prefix: USER_PREFIX,
            exists: (id: ReturnType<typeof sql>) =>
              sql`exists (select 1 from ${userCandidates} c where c.user_key = ${id} and ${publishable(sql`c`)})`,
          },
        ]
      : NEIGHBOR_KEY_KINDS.map((kind) => ({
          prefix: `${ITEM_PREFIX}${kind}:`,
          exists: (id: ReturnType<typeof sql>) =>
            sql`exists (select 1 from ${itemNeighbors} x where x.kind = ${kind} and x.product_id = ${id} and x.rank <= ${ITEM_LIST_MAX})`,
        }));
  const inScope = scopes.map((s) => sql`starts_with(p.key, ${s.prefix})`);
  const gone = scopes.map((s) => {
    const id = sql`substr(k.key, ${s.prefix.length + 1})`;
    return sql`(starts_with(k.key, ${s.prefix}) and not ${s.exists(id)})`;
  });
  const result = await rows(
    db,
    sql`
    with keys as (
      select p.key, p.content_hash from ${publishedKeys} p
      where p.key > ${cursor} and (${sql.join(inScope, sql` or `)})
      order by p.key
      limit ${scan}
    ), bound as (
      select count(*)::int as scanned, max(k.key) as last, pg_current_snapshot()::text as snapshot from keys k
    )
    select b.scanned, b.last, b.snapshot, ch.key, ch.key as cursor, ${TOMBSTONE_HASH}::text as hash, 'null' as list
    from bound b
    left join lateral (
      select k.key from (select * from keys order by key) k
      where k.content_hash <> ${TOMBSTONE_HASH} and (${sql.join(gone, sql` or `)})
      order by k.key
      limit ${limit}
    ) ch on true
    order by ch.key`,
  );
  return batchOf(result, cursor, limit, scan);
}

/**
 * The next `limit` changed stable keys of `phase` after `cursor` (cursor "" = from the start), found among the next
 * `scan` keys at most: a batch may hold fewer than `limit` changes and still not be `done`. With `all`, every key of
 * the users and items phases whether changed or not.
 */
export function readChanges(
  db: Executor,
  phase: StablePhase,
  cursor: string,
  limit: number,
  options: ReadOptions = {},
): Promise<ChangeBatch> {
  const scan = Math.max(limit, options.scan ?? (phase === "items" ? ITEM_SCAN_MAX : SCAN_MAX));
  switch (phase) {
    case "users":
      return userChanges(db, cursor, limit, options.all ?? false, scan);
    case "items":
      return itemChanges(db, cursor, limit, options.all ?? false, scan);
    default:
      return tombstones(db, phase, cursor, limit, scan);
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

/**
 * Records a step of `u:<userKey>` keys just written to KV, except those whose user was erased after the step read
 * them (an erasure its snapshot did not see), and returns those KV keys: the caller deletes them again, as the
 * erasure did (the erasure may have deleted the key before the step wrote it back). One transaction under the
 * shared erasure lock: an erasure that commits later waits for it, then deletes the record and the key itself.
 */
export async function recordPublishedUsers(
  db: Pick<Database, "$client">,
  entries: ReadonlyArray<{ key: string; hash: string }>,
  version: number,
  snapshot: string,
): Promise<string[]> {
  if (entries.length === 0) return [];
  const userKeys = entries.map((e) => e.key.slice(USER_PREFIX.length));
  return transaction(db, async (tx) => {
    await holdErasureLockShared(tx);
    const erased = await rows(
      tx,
      sql`
      with erased as (
        select ${USER_PREFIX} || e.user_key as key from ${erasedUsers} e
        where e.user_key in (select jsonb_array_elements_text(${JSON.stringify(userKeys)}::jsonb))
          and not pg_visible_in_snapshot(e.erased_xid, ${snapshot}::pg_snapshot)
      ), recorded as (
        insert into ${publishedKeys} (key, content_hash, version, published_at)
        select r.key, r.hash, ${String(version)}, now()
        from json_to_recordset(${JSON.stringify(entries)}::json) as r(key text, hash text)
        where r.key not in (select key from erased)
        on conflict (key) do update
          set content_hash = excluded.content_hash, version = excluded.version, published_at = excluded.published_at
        returning 1
      )
      select key from erased`,
    );
    return erased.map((r) => String(r.key));
  });
}

/** sync_state row with the snapshot of the last completed erasure sweep (erasedUnpublishedUserKeys). */
export const ERASURE_SWEEP_STATE = "publish.erasure_sweep";

/** Erased users read per page of the sweep: a page's keys are kept in the job until deleted (a bounded value). */
export const ERASURE_SWEEP_PAGE = 1000;

/**
 * `u:<userKey>` KV keys to delete again: those of users whose erasure committed after the last completed sweep
 * (the day before, when none is recorded) and who have no published-key record. A step that wrote such a key and
 * was cut off before it deleted it (the alarm died between its record transaction and its deletes) left the key
 * behind with nothing in Postgres to find it by; a user erased and published again since has a record and keeps
 * the key. One page of at most `limit` users in user_key order after `after`: `next` is the cursor of the next page
 * (null after the last one), `snapshot` the one to save once every page's keys are deleted (saveErasureSweep).
 */
export async function erasedUnpublishedUserKeys(
  db: Executor,
  after: string | null = null,
  limit = ERASURE_SWEEP_PAGE,
): Promise<{ keys: string[]; snapshot: string; next: string | null }> {
  const [row] = await rows(
    db,
    sql`
    with previous as (select value ->> 'snapshot' as snapshot from ${syncState} where name = ${ERASURE_SWEEP_STATE}),
    page as (
      select e.user_key from ${erasedUsers} e
      where case when (select snapshot from previous) is null then e.erased_at > now() - interval '1 day'
                 else not pg_visible_in_snapshot(e.erased_xid, (select snapshot from previous)::pg_snapshot) end
        and not exists (select 1 from ${publishedKeys} p where p.key = ${USER_PREFIX} || e.user_key)
        and (${after}::text is null or e.user_key > ${after}::text)
      order by e.user_key
      limit ${limit})
    select pg_current_snapshot()::text as snapshot,
      array(select user_key from page order by user_key) as user_keys`,
  );
  const userKeys = (row?.user_keys as string[] | undefined) ?? [];
  const keys = userKeys.map((k) => `${USER_PREFIX}${k}`).filter(fitsKvKey);
  const next = userKeys.length >= limit ? (userKeys.at(-1) ?? null) : null;
  return { keys, snapshot: String(row?.snapshot), next };
}

export async function saveErasureSweep(db: Executor, snapshot: string): Promise<void> {
  await db.execute(sql`
    insert into ${syncState} (name, value, updated_at) values (${ERASURE_SWEEP_STATE}, ${JSON.stringify({ snapshot })}::jsonb, now())
    on conflict (name) do update set value = excluded.value, updated_at = now()`);
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

/**
 * The catalogue's order against the "next items" lists (CatalogOrderStat): of every product's `top` neighbours,
 * how many lie within `span` places of it in the catalogue sorted by id (code-unit order, as the Worker sorts it).
 * One statement; CatalogueOrder.measure (src/rank/catalog.ts) computes the same in TypeScript.
 */
export async function catalogOrderStat(
  db: Executor,
  span = ADJACENT_SPAN,
  top = ORDER_TOP_NEIGHBOURS,
): Promise<CatalogOrderStat> {
  const [r] = await rows(
    db,
    sql`
    with pos as (select id, (row_number() over (order by id collate "C"))::int as p from ${catalog})
    select (select count(*) from pos)::int as products, count(*)::int as pairs,
           (count(*) filter (where abs(a.p - b.p) <= ${span}))::int as near
    from ${itemNeighbors} n
      join pos a on a.id = n.product_id
      join pos b on b.id = n.neighbor_id
    where n.kind = 'next' and n.rank <= ${top} and n.neighbor_id <> n.product_id`,
  );
  return { pairs: Number(r?.pairs ?? 0), near: Number(r?.near ?? 0), products: Number(r?.products ?? 0), span };
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
