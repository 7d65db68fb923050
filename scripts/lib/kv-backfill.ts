// The KV backfill (scripts/kv-backfill.ts): every per-user and per-item list from Postgres as Workers KV bulk
// writes, for an initial fill of millions of keys that the coordinator's alarms (~900 keys per invocation) would
// take hours to write. Reads through the same Neon driver path as the Worker (src/publish/db.ts) and the same
// queries as the publisher (src/publish/sources.ts), so values are byte-identical to what a publish writes.
//
// Output: JSON files of ≤ 10,000 { key, value } pairs for `wrangler kv bulk put`, or — with a Cloudflare account id,
// API token and namespace id — the same bodies PUT to the KV bulk REST endpoint. Entries are written with version
// 0 (src/publish/bulk-files.ts). `record` stores the content hashes in published_keys afterwards, so the next
// publish writes only what changed after the backfill; use it once the files are uploaded (the REST path records
// the pairs KV stored after each request by itself, retrying those it did not: scripts/lib/kv-bulk-rest.ts). User
// keys are recorded as the publisher records them: not those of users erased since the read.
import { mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { RetryPolicy } from "../../src/batch/retry.ts";
import {
  BACKFILL_VERSION,
  BulkChunker,
  type BulkPair,
  backfillValue,
  bulkJson,
  KV_BULK_MAX_PAIRS,
} from "../../src/publish/bulk-files.ts";
import { openDb } from "../../src/publish/db.ts";
import { USER_PREFIX } from "../../src/publish/keys.ts";
import { readChanges, recordPublished, recordPublishedUsers, type StablePhase } from "../../src/publish/sources.ts";
import type { Database, DbSettings } from "../../src/stores/db.ts";
import { KvBulkApi, type RestTarget } from "./kv-bulk-rest.ts";

/** Rows per query: large enough to amortise round trips, small enough to keep memory flat. */
export const BACKFILL_READ_BATCH = 5_000;

export type { RestTarget } from "./kv-bulk-rest.ts";

export interface BackfillOptions {
  settings: DbSettings;
  schema?: string;
  /** Folder for the files (file mode). */
  outDir?: string;
  /** Upload through the REST API instead of writing files. */
  rest?: RestTarget;
  /** REST: how keys the API did not store are sent again (BULK_RETRY by default). */
  retry?: RetryPolicy;
  /** Every list, not only those whose hash differs from published_keys. */
  all?: boolean;
  /** Record hashes in published_keys (file mode: only after the files were uploaded). */
  record?: boolean;
  /** Pairs per file / request (≤ 10,000). */
  pairsPerFile?: number;
  generatedAt?: number;
  log?: (line: string) => void;
}

export interface BackfillReport {
  keys: number;
  files: string[];
  requests: number;
  skipped: number;
  /** Users erased after their list was read: not recorded (REST: their keys deleted again). */
  erased: number;
  durationMs: number;
}

const PHASES: StablePhase[] = ["users", "items"];

/** The output folder holds something already: the upload loop, taking every file in it, would send that too. */
export class OutDirNotEmptyError extends Error {
  override name = "OutDirNotEmptyError";
}

/** Creates the output folder, or takes an empty one. */
function createOutDir(dir: string): void {
  mkdirSync(dir, { recursive: true });
  const entries = readdirSync(dir).length;
  if (entries > 0) {
    throw new OutDirNotEmptyError(
      `${dir} is not empty (${entries} entries): give a new or empty folder, so that it holds only this run's files`,
    );
  }
}

/** What the backfill read of a key: its content hash, and the snapshot its read saw (for the erasure check). */
interface ReadKey {
  hash: string;
  snapshot: string;
}

/**
 * Records pairs written to KV in published_keys, user keys as the publisher records them (recordPublishedUsers): a
 * user whose erasure the read's snapshot did not see is left out. Answers those users' keys.
 */
async function recordWritten(db: Database, pairs: readonly BulkPair[], read: ReadonlyMap<string, ReadKey>) {
  const items: Array<{ key: string; hash: string }> = [];
  const users = new Map<string, Array<{ key: string; hash: string }>>();
  for (const { key } of pairs) {
    const { hash, snapshot } = read.get(key) ?? { hash: "", snapshot: "" };
    if (!key.startsWith(USER_PREFIX)) {
      items.push({ key, hash });
      continue;
    }
    const group = users.get(snapshot) ?? [];
    users.set(snapshot, group);
    group.push({ key, hash });
  }
  await recordPublished(db, items, BACKFILL_VERSION);
  const erased: string[] = [];
  for (const [snapshot, entries] of users) {
    erased.push(...(await recordPublishedUsers(db, entries, BACKFILL_VERSION, snapshot)));
  }
  return erased;
}

/**
 * REST: writes the pairs, records those KV stored, and deletes again the keys of users erased since the read, as
 * the publisher does (docs/privacy.md#order-and-races); answers how many those were. Pairs still refused after the
 * retries fail the run, unrecorded, so a later run writes them.
 */
async function upload(kv: KvBulkApi, db: Database, pairs: BulkPair[], read: ReadonlyMap<string, ReadKey>) {
  const refused = await kv.put(pairs);
  const failed = new Set(refused.map((p) => p.key));
  const erased = await recordWritten(
    db,
    pairs.filter((p) => !failed.has(p.key)),
    read,
  );
  const undeleted = erased.length > 0 ? await kv.delete(erased) : [];
  if (undeleted.length > 0) {
    throw new Error(`KV bulk delete: ${undeleted.length} keys of erased users left after ${kv.attempts} attempts`);
  }
  if (refused.length > 0) {
    throw new Error(
      `KV bulk write: ${refused.length} of ${pairs.length} keys not stored after ${kv.attempts} attempts ` +
        `(not recorded: a later run writes them; last answer: ${kv.lastRefusal})`,
    );
  }
  return erased.length;
}

export async function runBackfill(options: BackfillOptions): Promise<BackfillReport> {
  const started = Date.now();
  const generatedAt = options.generatedAt ?? started;
  const report: BackfillReport = { keys: 0, files: [], requests: 0, skipped: 0, erased: 0, durationMs: 0 };
  if (!options.rest && !options.outDir) throw new Error("give an output folder or a REST target");
  if (options.outDir) createOutDir(options.outDir);
  const { db, end } = openDb(options.settings, options.schema);
  const api = options.rest ? new KvBulkApi(options.rest, options.retry) : undefined;
  const read = new Map<string, ReadKey>();

  const flush = async (pairs: BulkPair[]) => {
    if (api) report.erased += await upload(api, db, pairs, read);
    else if (options.outDir) {
      const file = join(options.outDir, `kv-bulk-${String(report.files.length + 1).padStart(5, "0")}.json`);
      writeFileSync(file, bulkJson(pairs));
      report.files.push(file);
      // Users erased since the read are not recorded; the erasure sweep of the first publish after the upload
      // deletes their keys (docs/privacy.md).
      if (options.record) report.erased += (await recordWritten(db, pairs, read)).length;
    }
    for (const p of pairs) read.delete(p.key);
    options.log?.(`${report.keys} keys so far`);
  };

  const chunker = new BulkChunker(flush, options.pairsPerFile ?? KV_BULK_MAX_PAIRS);
  try {
    for (const phase of PHASES) {
      let cursor = "";
      for (;;) {
        const batch = await readChanges(db, phase, cursor, BACKFILL_READ_BATCH, { all: options.all ?? false });
        report.skipped += batch.skipped;
        for (const change of batch.changes) {
          read.set(change.key, { hash: change.hash, snapshot: batch.snapshot });
          await chunker.add({ key: change.key, value: backfillValue(change.list, generatedAt) });
          report.keys++;
        }
        cursor = batch.cursor;
        if (batch.done) break;
      }
    }
    await chunker.end();
  } finally {
    report.requests = api?.requests ?? 0;
    await end();
  }
  report.durationMs = Date.now() - started;
  return report;
}
