// The publisher: moves a snapshot of the recommender outputs from Postgres into Workers KV in bounded steps, for
// the PublishCoordinator Durable Object (coordinator.ts) to drive from its alarms. docs/publishing.md.
//
// One publish = one job with a new version number V:
//   users → items → user_tombstones → item_tombstones   stable keys whose content changed (sources.ts), at most
//                                                       KV_BULK_GET_MAX per step: one bulk get of their current
//                                                       values, one put each (codec.mergeStable keeps history),
//                                                       then their hashes into published_keys
//   settle                                              if stable keys were written: wait one KV propagation
//                                                       interval so edge caches hold V's entries before readers
//                                                       are told about V
//   shared                                              catalog shards and popular/trending lists, only when their
//                                                       content changed (new immutable keys under V), then the
//                                                       pointer — the one write that makes V visible
// A users or user_tombstones step records its keys under the shared erasure lock, leaving out (and deleting from KV
// again) every user erased after the step read its list (docs/privacy.md).
// Nothing changed anywhere → no key and no pointer is written, and V is not used (unless a pointer is owed: an
// earlier publish was given up after recording keys, before its pointer).
// A step whose puts partly failed records the keys that were written, then fails (the alarm is retried).
// Every step is idempotent: an alarm re-run after a crash rewrites V's entries with the same content.
import { sql } from "drizzle-orm";
import type { Executor } from "../batch/bulk.ts";
import type { Database } from "../stores/db.ts";
import { syncState } from "../stores/schema.ts";
import {
  type CatalogManifest,
  type CatalogRow,
  CODEC_FORMAT,
  catalogShardContent,
  encodePointer,
  listsVersion,
  mergeStable,
  type Pointer,
} from "./codec.ts";
import {
  catalogShardKey,
  catalogShardOf,
  POINTER_KEY,
  POPULAR_KEY_LISTS,
  type PopularKeyList,
  popularListKey,
} from "./keys.ts";
import { KV_BULK_GET_MAX, KV_MIN_WRITE_INTERVAL_MS, type KvBudget } from "./kv-budget.ts";
import {
  type CatalogWatermark,
  catalogOrderStat,
  catalogRows,
  catalogWatermark,
  currentModelVersions,
  erasedUnpublishedUserKeys,
  popularLists,
  publishedHashes,
  readChanges,
  recordPublished,
  recordPublishedUsers,
  STABLE_PHASES,
  type StablePhase,
  saveErasureSweep,
  TOMBSTONE_HASH,
} from "./sources.ts";

/**
 * Items per catalog shard. ~25 bytes an item: 20,000 items ≈ 500 KB of JSON, parsed once per version per isolate
 * by the ranking path; the UCI demo catalogue (~4,000 items) is one shard. Far below KV's 25 MiB per value.
 */
export const CATALOG_ITEMS_PER_SHARD = 20_000;
/** Shards at most: the shared phase must fit one invocation's KV budget next to the pointer and popular lists. */
export const CATALOG_MAX_SHARDS = 200;
/** Wall time after which an alarm starts no new step (an alarm, like any invocation, should stay short). */
export const ALARM_WALL_BUDGET_MS = 25_000;

export const PHASES = [...STABLE_PHASES, "settle", "shared"] as const;
export type Phase = (typeof PHASES)[number];

/** Logical names under which the shared keys' hashes are kept in published_keys (not KV keys themselves). */
export const CATALOG_RECORD = "catalog";
export const popularRecord = (list: PopularKeyList) => `pop:${list}`;
/** sync_state row with the catalogue watermark of the last catalogue publish. */
export const CATALOG_WATERMARK_STATE = "publish.catalog_watermark";

export interface JobStats {
  /** Stable keys written with a list. */
  written: number;
  /** Stable keys written with a tombstone. */
  tombstones: number;
  /** Shared keys written (catalog shards, popular lists). */
  sharedWritten: number;
  /** Ids whose key would exceed KV's key length limit. */
  skipped: number;
  /** User keys written and deleted again because the user was erased while the step wrote them. */
  erased?: number;
  /** Keys of users erased since the last sweep, with no published record, deleted again (advance). */
  swept?: number;
  steps: number;
  invocations: number;
  opsTotal: number;
  maxOpsPerInvocation: number;
  pointerWritten: boolean;
}

export interface PublishJob {
  version: number;
  generatedAt: number;
  startedAt: number;
  trigger: "cron" | "admin";
  runId: number | null;
  parentRunId: number | null;
  /** Postgres schema (tests); undefined = public. */
  schema?: string | undefined;
  phase: Phase;
  cursor: string;
  settleMs: number;
  opsPerAlarm: number;
  settled: boolean;
  failures: number;
  stats: JobStats;
  /** `u:<userKey>` keys of users erased while a step wrote them, still to delete (the KV budget ran out). */
  erasedKeys?: string[];
  /**
   * The erasure sweep after the stable phases: the snapshot of its first page, saved once every page's keys are
   * deleted; `next`: the cursor of the page still to read (absent once the last page was read).
   */
  erasureSweep?: { snapshot: string; saved: boolean; next?: string };
  /** A stable step put keys (some may have been written, recorded or not): set, and saved, before its puts. */
  stableWritesAttempted?: boolean;
  /**
   * The shared step put its keys or the pointer (which may have landed, the pointer naming this version): set, and
   * saved, before the first of those puts, so a job given up after an alarm that died past them spends its version.
   */
  sharedWritesAttempted?: boolean;
}

export function newStats(): JobStats {
  return {
    written: 0,
    tombstones: 0,
    sharedWritten: 0,
    skipped: 0,
    steps: 0,
    invocations: 0,
    opsTotal: 0,
    maxOpsPerInvocation: 0,
    pointerWritten: false,
  };
}

export interface Step {
  db: Pick<Database, "execute" | "$client">;
  kv: KvBudget;
  job: PublishJob;
  /** The pointer currently served (null: never published). */
  current: Pointer | null;
  /** Epoch ms of the last pointer write (KV: 1 write/s per key). */
  lastPointerWriteAt: number;
  now: () => number;
  /**
   * A pointer is owed: an earlier publish recorded keys and was given up before its pointer was written, so this one
   * writes a pointer even when nothing else changed (the coordinator's state; cleared by a pointer or a rollback).
   */
  pointerOwed?: boolean;
  /** Persist the job after each step (the cursor survives a crash). */
  onProgress?: (job: PublishJob) => Promise<void>;
}

export type Outcome = { kind: "continue"; delayMs: number } | { kind: "done"; pointer: Pointer | null };

const isStable = (phase: Phase): phase is StablePhase => (STABLE_PHASES as readonly string[]).includes(phase);

export async function sha256Hex(text: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** Deletes the keys of users erased during a step, as far as the KV budget goes; true when none is left. */
async function deleteErasedKeys(s: Step): Promise<boolean> {
  const pending = s.job.erasedKeys ?? [];
  while (pending.length > 0 && s.kv.left > 0) {
    await s.kv.delete(pending[0] as string);
    pending.shift();
  }
  if (pending.length > 0) return false;
  delete s.job.erasedKeys;
  return true;
}

/**
 * Stable keys of one phase step: read the changed ones, merge with their current values, write, record. A user
 * erased after the read (its erasure may have deleted the key before this step wrote it back) is not recorded, and
 * its key is deleted again; an erasure that commits after the record waits for it and deletes the key itself.
 */
async function stableStep(s: Step, phase: StablePhase, limit: number): Promise<boolean> {
  const { job, kv, db } = s;
  const batch = await readChanges(db, phase, job.cursor, limit);
  if (batch.changes.length > 0) {
    const previous = await kv.getMany(batch.changes.map((c) => c.key));
    // The served pointer's entry stays in each key until this version's pointer replaces it (after a rollback it
    // may be older than HISTORY_DEPTH − 1 entries).
    const served = s.current ? listsVersion(s.current) : null;
    const pairs = batch.changes.map(
      (c) => [c.key, mergeStable(previous.get(c.key) ?? null, job.version, job.generatedAt, c.list, served)] as const,
    );
    // From here on keys may hold entries of this version, recorded or not: saved before the first put, so that
    // neither a failed step nor an alarm cut off before the step's end loses it (stableWrites).
    if (!job.stableWritesAttempted) {
      job.stableWritesAttempted = true;
      await s.onProgress?.(job);
    }
    // Puts that succeeded are recorded even when others failed: an unrecorded entry of this version would stay in
    // its key while the diff, comparing with the older record, took the key for unchanged.
    const refused = await kv.putAllSettled(pairs);
    const stored = refused ? batch.changes.filter((c) => !refused.failed.has(c.key)) : batch.changes;
    const users = phase === "users" || phase === "user_tombstones";
    const erased = new Set(
      users && stored.length > 0 ? await recordPublishedUsers(db, stored, job.version, batch.snapshot) : [],
    );
    if (!users && stored.length > 0) await recordPublished(db, stored, job.version);
    // Counted as soon as recorded: the step's retry no longer sees these keys, whatever fails next.
    for (const c of stored) {
      if (erased.has(c.key)) continue;
      if (c.hash === TOMBSTONE_HASH) job.stats.tombstones++;
      else job.stats.written++;
    }
    if (erased.size > 0) {
      job.erasedKeys = [...(job.erasedKeys ?? []), ...erased];
      job.stats.erased = (job.stats.erased ?? 0) + erased.size;
      await deleteErasedKeys(s);
    }
    // The step is not done: its retry reads the same window again, where the recorded keys no longer show.
    if (refused) throw refused.error;
  }
  job.stats.skipped += batch.skipped;
  job.stats.steps++;
  job.cursor = batch.cursor;
  return batch.done;
}

export interface BuiltCatalog {
  manifestItems: number;
  shards: number;
  contents: ReturnType<typeof catalogShardContent>[];
  hash: string;
}

export async function buildCatalog(rows: readonly CatalogRow[]): Promise<BuiltCatalog> {
  const shards = Math.min(CATALOG_MAX_SHARDS, Math.max(1, Math.ceil(rows.length / CATALOG_ITEMS_PER_SHARD)));
  const parts: CatalogRow[][] = Array.from({ length: shards }, () => []);
  for (const row of rows) parts[catalogShardOf(row.id, shards)]?.push(row);
  const contents = parts.map((p) => catalogShardContent(p));
  return { manifestItems: rows.length, shards, contents, hash: await sha256Hex(JSON.stringify(contents)) };
}

export function catalogPairs(built: BuiltCatalog, version: number, generatedAt: number): Array<[string, string]> {
  return built.contents.map((content, shard) => [
    catalogShardKey(version, shard),
    JSON.stringify({ f: CODEC_FORMAT, version, generatedAt, shard, shards: built.shards, ...content }),
  ]);
}

export async function saveCatalogWatermark(db: Executor, watermark: CatalogWatermark): Promise<void> {
  await db.execute(sql`
    insert into ${syncState} (name, value, updated_at) values (${CATALOG_WATERMARK_STATE}, ${JSON.stringify(watermark)}::jsonb, now())
    on conflict (name) do update set value = excluded.value, updated_at = now()`);
}

async function savedCatalogWatermark(db: Executor): Promise<CatalogWatermark | null> {
  const result = await db.execute(sql`select value from ${syncState} where name = ${CATALOG_WATERMARK_STATE}`);
  const row = (result.rows as Array<{ value: CatalogWatermark }>)[0];
  return row?.value ?? null;
}

/**
 * Stable keys the job counts as written: its count, and at least 1 once it attempted a stable put (a put that
 * failed, or whose alarm died before the count, may have landed). It settles, writes a pointer and counts against
 * the keys' history in rollbacks (coordinator.ts) by this number.
 */
export function stableWrites(job: PublishJob): number {
  return Math.max(job.stats.written + job.stats.tombstones, job.stableWritesAttempted ? 1 : 0);
}

/**
 * The shared phase and the pointer. Returns null (and writes nothing) when nothing changed in the whole job and no
 * pointer is owed;
 * "budget" when the invocation has too few KV operations left for it (the next alarm does it).
 */
async function sharedAndPointer(s: Step): Promise<Pointer | null | "budget"> {
  const { db, kv, job, current } = s;
  const writes: Array<[string, string]> = [];
  const records: Array<{ key: string; hash: string }> = [];

  // Catalog: rebuilt when its watermark moved (or it was never published), or when the pointer does not serve the
  // last build recorded; written when its content hash differs from that build's.
  let catalog: CatalogManifest | null = current?.catalog ?? null;
  const watermark = await catalogWatermark(db);
  const saved = await savedCatalogWatermark(db);
  const recorded = (await publishedHashes(db, [CATALOG_RECORD])).get(CATALOG_RECORD);
  const watermarkMoved =
    !saved || saved.count !== watermark.count || saved.maxUpdatedAt !== watermark.maxUpdatedAt || !catalog;
  // Keys this very job wrote and recorded before a failure: its retry serves them (they count as a change).
  let ownEarlierWrites = false;
  // Shared keys newer than the ones the pointer serves (after a rollback): shipped again under this version if it
  // writes a pointer anyway, so a new version never serves an older catalogue or popular list than the last built.
  const behind: Array<() => void> = [];
  const ship = (pairs: Array<[string, string]>, record: { key: string; hash: string }) => {
    writes.push(...pairs);
    records.push(record);
  };
  if (watermarkMoved || recorded?.version !== catalog?.version) {
    const built = await buildCatalog(await catalogRows(db));
    const manifest = { version: job.version, shards: built.shards, items: built.manifestItems };
    const shipCatalog = () => {
      ship(catalogPairs(built, job.version, job.generatedAt), { key: CATALOG_RECORD, hash: built.hash });
      catalog = manifest;
    };
    if (!catalog || recorded?.hash !== built.hash) shipCatalog();
    else if (recorded.version === job.version) {
      catalog = manifest;
      ownEarlierWrites = true;
    } else behind.push(shipCatalog);
  }

  const popular: Pointer["popular"] = {
    popular: current?.popular.popular ?? null,
    trending: current?.popular.trending ?? null,
  };
  const lists = await popularLists(db);
  const names = POPULAR_KEY_LISTS.map(popularRecord);
  const hashes = await publishedHashes(db, names);
  for (const list of POPULAR_KEY_LISTS) {
    const segments = lists.get(list) ?? {};
    const hash = await sha256Hex(JSON.stringify(segments));
    const last = hashes.get(popularRecord(list));
    const shipList = () => {
      const value = { f: CODEC_FORMAT, version: job.version, generatedAt: job.generatedAt, list, segments };
      ship([[popularListKey(job.version, list), JSON.stringify(value)]], { key: popularRecord(list), hash });
      popular[list] = job.version;
    };
    if (popular[list] === null || last?.hash !== hash) shipList();
    else if (last.version === job.version) {
      popular[list] = job.version;
      ownEarlierWrites = true;
    } else if (last.version !== popular[list]) behind.push(shipList);
  }

  if (writes.length === 0 && !ownEarlierWrites && !s.pointerOwed && stableWrites(job) === 0) {
    if (watermarkMoved) await saveCatalogWatermark(db, watermark);
    return null;
  }
  for (const shipBehind of behind) shipBehind();
  if (kv.left < writes.length + 1) return "budget";

  // An alarm that dies after these puts saves no count of its operations: the job remembers them first.
  if (!job.sharedWritesAttempted) {
    job.sharedWritesAttempted = true;
    await s.onProgress?.(job);
  }
  await kv.putAll(writes);
  await recordPublished(db, records, job.version);
  job.stats.sharedWritten += writes.length;

  const modelVersions = await currentModelVersions(db);
  const ids = Object.values(modelVersions);
  const catalogOrder = await catalogOrderStat(db);
  // Saved before the pointer, so that the pointer is the job's last write: it commits the job (coordinator.ts).
  await saveCatalogWatermark(db, watermark);
  const pointer: Pointer = {
    f: CODEC_FORMAT,
    version: job.version,
    generatedAt: job.generatedAt,
    // Taken after every query, right before the write: the next pointer write waits KV_MIN_WRITE_INTERVAL_MS from it.
    publishedAt: s.now(),
    modelVersion: ids.length ? Math.max(...ids) : null,
    modelVersions,
    catalog,
    popular,
    catalogOrder,
  };
  await kv.put(POINTER_KEY, encodePointer(pointer));
  job.stats.pointerWritten = true;
  return pointer;
}

/** Works on the job until its invocation budget (KV operations, wall time) is spent or the job is done. */
export async function advance(s: Step): Promise<Outcome> {
  const { job, kv } = s;
  const deadline = s.now() + ALARM_WALL_BUDGET_MS;
  if (!(await deleteErasedKeys(s))) return { kind: "continue", delayMs: 0 };
  while (isStable(job.phase)) {
    const limit = Math.min(KV_BULK_GET_MAX, kv.left - 1);
    if (limit < 1 || s.now() > deadline) return { kind: "continue", delayMs: 0 };
    const done = await stableStep(s, job.phase, limit);
    if (done) {
      job.phase = PHASES[PHASES.indexOf(job.phase) + 1] ?? "settle";
      job.cursor = "";
    }
    await s.onProgress?.(job);
  }
  // Keys a step of this or an earlier job wrote for a user erased meanwhile, if the step died before it deleted
  // them again: found through erased_users, since nothing else records them. One page of users at a time, each
  // page's keys deleted before the next is read: the job (saved after each step) holds at most a page of keys,
  // however many users were erased since the last sweep.
  while (!job.erasureSweep || job.erasureSweep.next !== undefined) {
    if (s.now() > deadline) return { kind: "continue", delayMs: 0 };
    const page = await erasedUnpublishedUserKeys(s.db, job.erasureSweep?.next ?? null);
    job.erasureSweep = {
      snapshot: job.erasureSweep?.snapshot ?? page.snapshot,
      saved: false,
      ...(page.next === null ? {} : { next: page.next }),
    };
    job.erasedKeys = [...(job.erasedKeys ?? []), ...page.keys];
    job.stats.swept = (job.stats.swept ?? 0) + page.keys.length;
    await s.onProgress?.(job);
    // Erased users' keys the KV budget left: the next alarm deletes them, then reads the next page.
    if (!(await deleteErasedKeys(s))) return { kind: "continue", delayMs: 0 };
  }
  if (job.erasedKeys?.length) return { kind: "continue", delayMs: 0 };
  if (!job.erasureSweep.saved) {
    await saveErasureSweep(s.db, job.erasureSweep.snapshot);
    job.erasureSweep.saved = true;
  }
  if (job.phase === "settle") {
    job.phase = "shared";
    if (job.settleMs > 0 && !job.settled && stableWrites(job) > 0) {
      job.settled = true;
      await s.onProgress?.(job);
      return { kind: "continue", delayMs: job.settleMs };
    }
  }
  const wait = s.lastPointerWriteAt + KV_MIN_WRITE_INTERVAL_MS - s.now();
  if (wait > 0) return { kind: "continue", delayMs: wait };
  const pointer = await sharedAndPointer(s);
  if (pointer === "budget") return { kind: "continue", delayMs: 0 };
  return { kind: "done", pointer };
}
