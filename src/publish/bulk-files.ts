// The bulk-write format of Workers KV, shared by the backfill script (scripts/kv-backfill.ts): `wrangler kv bulk
// put <file>` and the REST API's bulk endpoint both take a JSON array of { key, value } pairs, at most 10,000 per
// file / call. Pure functions, so they are unit-tested without a file system.
import { jsonSize } from "../collect/json.ts";
import { mergeStable } from "./codec.ts";

/** Workers KV REST API and `wrangler kv bulk put`: at most 10,000 pairs per request / file. */
export const KV_BULK_MAX_PAIRS = 10_000;
/** …and at most 100 MB per request (UTF-8 bytes): files are cut earlier when values are large. */
export const KV_BULK_MAX_BYTES = 95 * 1024 * 1024;
/**
 * The version of backfilled entries. 0 is older than every published version, so a reader of any snapshot takes
 * it unless that key has a newer entry: a backfill never shows through a pointer as something it is not.
 */
export const BACKFILL_VERSION = 0;

export interface BulkPair {
  key: string;
  value: string;
}

/** A stable key's value as the backfill writes it: one entry, version 0 (history starts afresh). */
export function backfillValue(listJson: string, generatedAt: number): string {
  return mergeStable(null, BACKFILL_VERSION, generatedAt, listJson);
}

/** Cuts a stream of pairs into files of at most KV_BULK_MAX_PAIRS pairs and KV_BULK_MAX_BYTES bytes. */
export class BulkChunker {
  #pairs: BulkPair[] = [];
  #bytes = 2;
  readonly #maxPairs: number;
  readonly #flush: (pairs: BulkPair[]) => Promise<void>;

  constructor(flush: (pairs: BulkPair[]) => Promise<void>, maxPairs = KV_BULK_MAX_PAIRS) {
    this.#flush = flush;
    this.#maxPairs = Math.min(maxPairs, KV_BULK_MAX_PAIRS);
  }

  async add(pair: BulkPair): Promise<void> {
    // The pair as bulkJson writes it, in UTF-8 bytes (a non-ASCII id is up to 3 bytes a character), and its comma.
    const size = jsonSize({ key: pair.key, value: pair.value }) + 1;
    if (this.#pairs.length >= this.#maxPairs || (this.#pairs.length > 0 && this.#bytes + size > KV_BULK_MAX_BYTES)) {
      await this.end();
    }
    this.#pairs.push(pair);
    this.#bytes += size;
  }

  /** Flushes what is left. */
  async end(): Promise<void> {
    if (this.#pairs.length === 0) return;
    const pairs = this.#pairs;
    this.#pairs = [];
    this.#bytes = 2;
    await this.#flush(pairs);
  }
}

/** The body of one file / request. */
export function bulkJson(pairs: readonly BulkPair[]): string {
  return JSON.stringify(pairs.map(({ key, value }) => ({ key, value })));
}
