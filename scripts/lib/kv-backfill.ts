// The KV backfill (scripts/kv-backfill.ts): every per-user and per-item list from Postgres as Workers KV bulk
// writes, for an initial fill of millions of keys that the coordinator's alarms (~900 keys per invocation) would
// take hours to write. Reads through the same Neon driver path as the Worker (src/publish/db.ts) and the same
// queries as the publisher (src/publish/sources.ts), so values are byte-identical to what a publish writes.
//
// Output: JSON files of ≤ 10,000 { key, value } pairs for `wrangler kv bulk put`, or — with a Cloudflare account id,
// API token and namespace id — the same bodies PUT to the KV bulk REST endpoint. Entries are written with version
// 0 (src/publish/bulk-files.ts). `record` stores the content hashes in published_keys afterwards, so the next
// publish writes only what changed after the backfill; use it once the files are uploaded (the REST path records
// after each successful request by itself).
import { mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import {
  BulkChunker,
  type BulkPair,
  backfillValue,
  bulkJson,
  KV_BULK_MAX_PAIRS,
} from "../../src/publish/bulk-files.ts";
import { openDb } from "../../src/publish/db.ts";
import { readChanges, recordPublished, type StablePhase } from "../../src/publish/sources.ts";
import type { DbSettings } from "../../src/stores/db.ts";

/** Rows per query: large enough to amortise round trips, small enough to keep memory flat. */
export const BACKFILL_READ_BATCH = 5_000;

export interface RestTarget {
  accountId: string;
  apiToken: string;
  namespaceId: string;
  /** Default https://api.cloudflare.com/client/v4 */
  baseUrl?: string;
}

export interface BackfillOptions {
  settings: DbSettings;
  schema?: string;
  /** Folder for the files (file mode). */
  outDir?: string;
  /** Upload through the REST API instead of writing files. */
  rest?: RestTarget;
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

export async function runBackfill(options: BackfillOptions): Promise<BackfillReport> {
  const started = Date.now();
  const generatedAt = options.generatedAt ?? started;
  const report: BackfillReport = { keys: 0, files: [], requests: 0, skipped: 0, durationMs: 0 };
  if (!options.rest && !options.outDir) throw new Error("give an output folder or a REST target");
  if (options.outDir) createOutDir(options.outDir);
  const { db, end } = openDb(options.settings, options.schema);
  const hashes = new Map<string, string>();

  const flush = async (pairs: BulkPair[]) => {
    const body = bulkJson(pairs);
    if (options.rest) {
      const { accountId, apiToken, namespaceId, baseUrl = "https://api.cloudflare.com/client/v4" } = options.rest;
      const url = `${baseUrl}/accounts/${accountId}/storage/kv/namespaces/${namespaceId}/bulk`;
      const res = await fetch(url, {
        method: "PUT",
        headers: { authorization: `Bearer ${apiToken}`, "content-type": "application/json" },
        body,
      });
      if (!res.ok) throw new Error(`KV bulk write failed: ${res.status} ${(await res.text()).slice(0, 300)}`);
      report.requests++;
      await recordPublished(
        db,
        pairs.map((p) => ({ key: p.key, hash: hashes.get(p.key) ?? "" })),
        0,
      );
    } else if (options.outDir) {
      const file = join(options.outDir, `kv-bulk-${String(report.files.length + 1).padStart(5, "0")}.json`);
      writeFileSync(file, body);
      report.files.push(file);
      if (options.record) {
        await recordPublished(
          db,
          pairs.map((p) => ({ key: p.key, hash: hashes.get(p.key) ?? "" })),
          0,
        );
      }
    }
    for (const p of pairs) hashes.delete(p.key);
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
          hashes.set(change.key, change.hash);
          await chunker.add({ key: change.key, value: backfillValue(change.list, generatedAt) });
          report.keys++;
        }
        cursor = batch.cursor;
        if (batch.done) break;
      }
    }
    await chunker.end();
  } finally {
    await end();
  }
  report.durationMs = Date.now() - started;
  return report;
}
