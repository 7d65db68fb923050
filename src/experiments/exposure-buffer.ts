// Exposures buffered in the isolate and pushed to the event stream in batches (docs/experiments.md#exposures):
// one Redis call per EXPOSURE_FLUSH_MS per isolate instead of one Durable Object write, alarm and Redis call per
// answer. Every answer's waitUntil covers the flush that carries its exposure, so the runtime keeps the isolate
// alive until it is sent. Best effort by design: a flush that fails is logged with its count and dropped, never
// retried on a shopper's request, and a full buffer refuses new exposures (counted) instead of growing.

import type { StreamItem } from "../session/stream.ts";

/** How long an exposure waits for others to share its Redis call. */
export const EXPOSURE_FLUSH_MS = 50;
/** Exposures per Redis call at most (the call's body stays well under Upstash's 1 MB request limit). */
export const EXPOSURE_BATCH_MAX = 100;
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
  /** The batch new exposures join; sent when its timer fires or it is full. */
  #open: Batch | null = null;
  #inFlight = 0;
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
    return (this.#open?.items.length ?? 0) + this.#inFlight;
  }

  /**
   * Queues one exposure; returns the promise that settles once its batch was sent (hand it to `waitUntil`; it
   * never rejects), or null when the buffer is full and the exposure was refused.
   */
  add(item: StreamItem): Promise<void> | null {
    if (this.pending >= this.#options.bufferMax) {
      this.refused++;
      return null;
    }
    const batch = this.#open ?? this.#openBatch();
    batch.items.push(item);
    if (batch.items.length >= this.#options.batchMax) this.#send(batch);
    return batch.sent;
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

  /** Sends the batch unless it already went (a full batch goes at once; its timer then finds nothing to do). */
  #send(batch: Batch): void {
    if (this.#open !== batch) return;
    this.#open = null;
    const count = batch.items.length;
    this.#inFlight += count;
    this.#options
      .push(batch.items)
      .then(
        () => ({ sent: count, failed: 0 }),
        (error: unknown) => ({ sent: 0, failed: count, error }),
      )
      .then((report: ExposureFlushReport) => {
        this.#inFlight -= count;
        try {
          this.#options.report?.(report);
        } finally {
          batch.settle();
        }
      });
  }
}
