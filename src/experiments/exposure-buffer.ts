// Exposures buffered in the isolate and pushed to the event stream in batches (docs/experiments.md#exposures):
// one Redis call per EXPOSURE_FLUSH_MS per isolate instead of one Durable Object write, alarm and Redis call per
// answer. Best effort by design: a flush that fails is logged with its count and dropped, never retried on a
// shopper's request, and a full buffer refuses new exposures (counted) instead of growing.
//
// A batch belongs to the request that opened it: its timer, its Redis call and the promise that settles after it all
// live in that request's context, which keeps itself alive with waitUntil until the batch is sent. Requests that
// join an open batch only add an item: a Worker may not wait on, or resolve, another request's I/O ("Cannot perform
// I/O on behalf of a different request"), so a full batch is not sent early by whoever filled it; the next exposure
// opens a new batch instead, and each goes when its own timer fires.

import type { StreamItem } from "../session/stream.ts";

/** How long an exposure waits for others to share its Redis call. */
export const EXPOSURE_FLUSH_MS = 50;
/** Exposures per batch (one Redis call) at most: the call's body stays well under Upstash's 1 MB request limit. */
export const EXPOSURE_BATCH_MAX = 100;
/** A push to Redis is abandoned (its exposures dropped and released) after this long. */
export const EXPOSURE_PUSH_TIMEOUT_MS = 5_000;
/** Exposures held at once at most (a flush in flight included); beyond it new ones are refused. */
export const EXPOSURE_BUFFER_MAX = 1_000;

export interface ExposureFlushReport {
  sent: number;
  /** Exposures of this flush that were lost: the push failed. */
  failed: number;
  error?: unknown;
}

export interface ExposureBufferOptions {
  push(items: StreamItem[]): Promise<void>;
  /** Called after each flush (logging). */
  report?(report: ExposureFlushReport): void;
  flushMs?: number;
  batchMax?: number;
  bufferMax?: number;
  sleep?(ms: number): Promise<void>;
}

interface Batch {
  items: StreamItem[];
  /** Settles once the batch was pushed (or its push failed). */
  sent: Promise<void>;
  settle(): void;
}

export class ExposureBuffer {
  readonly #options: Required<Omit<ExposureBufferOptions, "report">> & Pick<ExposureBufferOptions, "report">;
  /** The batch new exposures join until it is full; sent when its timer fires. */
  #open: Batch | null = null;
  /** Exposures added and not yet through their push (waiting for their timer or being sent). */
  #held = 0;
  /** Exposures refused because the buffer was full, since the isolate started. */
  refused = 0;

  constructor(options: ExposureBufferOptions) {
    this.#options = {
      flushMs: EXPOSURE_FLUSH_MS,
      batchMax: EXPOSURE_BATCH_MAX,
      bufferMax: EXPOSURE_BUFFER_MAX,
      sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
      ...options,
    };
  }

  /** Exposures waiting or being sent. */
  get pending(): number {
    return this.#held;
  }

  /**
   * Queues one exposure. `opened`: the caller opened a batch and must hand `sent` to its `waitUntil` (it settles once
   * the batch was sent, never rejects); `joined`: the item rides on a batch another request owns; `refused`: the
   * buffer is full.
   */
  add(item: StreamItem): { status: "opened"; sent: Promise<void> } | { status: "joined" } | { status: "refused" } {
    if (this.pending >= this.#options.bufferMax) {
      this.refused++;
      return { status: "refused" };
    }
    this.#held++;
    const open = this.#open;
    if (open && open.items.length < this.#options.batchMax) {
      open.items.push(item);
      return { status: "joined" };
    }
    const batch = this.#openBatch();
    batch.items.push(item);
    return { status: "opened", sent: batch.sent };
  }

  #openBatch(): Batch {
    let settle = () => {};
    const sent = new Promise<void>((resolve) => {
      settle = resolve;
    });
    const batch: Batch = { items: [], sent, settle };
    this.#open = batch;
    void this.#options.sleep(this.#options.flushMs).then(() => this.#send(batch));
    return batch;
  }

  /** Sends the batch (from its own timer, in the context of the request that opened it). */
  #send(batch: Batch): void {
    if (this.#open === batch) this.#open = null;
    const count = batch.items.length;
    this.#options
      .push(batch.items)
      .then(
        () => ({ sent: count, failed: 0 }),
        (error: unknown) => ({ sent: 0, failed: count, error }),
      )
      .then((report: ExposureFlushReport) => {
        this.#held -= count;
        try {
          this.#options.report?.(report);
        } finally {
          batch.settle();
        }
      });
  }
}
