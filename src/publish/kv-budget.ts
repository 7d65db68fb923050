// Every Workers KV operation of a publish goes through a KvBudget: it counts operations and refuses the one that
// would exceed the invocation's budget, so a bug can never push an invocation past the platform's limit (the
// coordinator then simply continues in its next alarm).
import { eachLimit } from "../concurrency.ts";

/** Workers: at most 1,000 KV operations per invocation through the binding (a bulk get counts once). */
export const KV_OPS_PER_INVOCATION = 1_000;
/** Workers KV bulk reads: at most 100 keys per `get([...])`. */
export const KV_BULK_GET_MAX = 100;
/** Workers KV: at most one write per second to the same key (the pointer is the only key written that often). */
export const KV_MIN_WRITE_INTERVAL_MS = 1_000;
/**
 * Puts in flight at once. A Worker has 6 simultaneous outgoing connections; the runtime queues the rest, so a
 * small pool keeps memory flat without slowing the binding down.
 */
export const KV_PUT_CONCURRENCY = 16;

export class KvBudgetExceeded extends Error {
  override name = "KvBudgetExceeded";
}

export class KvBudget {
  #used = 0;
  readonly kv: KVNamespace;
  readonly limit: number;
  constructor(kv: KVNamespace, limit: number) {
    this.kv = kv;
    this.limit = limit;
  }

  get used(): number {
    return this.#used;
  }

  get left(): number {
    return this.limit - this.#used;
  }

  #take(n: number): void {
    if (this.#used + n > this.limit) {
      throw new KvBudgetExceeded(`KV budget: ${this.#used} + ${n} operations would exceed ${this.limit}`);
    }
    this.#used += n;
  }

  /** Values of up to KV_BULK_GET_MAX keys in one operation. */
  async getMany(keys: readonly string[]): Promise<Map<string, string | null>> {
    if (keys.length === 0) return new Map();
    if (keys.length > KV_BULK_GET_MAX) throw new Error(`getMany: at most ${KV_BULK_GET_MAX} keys`);
    this.#take(1);
    return this.kv.get([...keys], "text");
  }

  async get(key: string): Promise<string | null> {
    this.#take(1);
    return this.kv.get(key, "text");
  }

  async put(key: string, value: string): Promise<void> {
    this.#take(1);
    await this.kv.put(key, value);
  }

  async delete(key: string): Promise<void> {
    this.#take(1);
    await this.kv.delete(key);
  }

  /** Puts all pairs, KV_PUT_CONCURRENCY at a time; the budget is taken for all of them first. */
  async putAll(pairs: ReadonlyArray<readonly [string, string]>): Promise<void> {
    this.#take(pairs.length);
    await eachLimit(pairs, KV_PUT_CONCURRENCY, ([key, value]) => this.kv.put(key, value));
  }

  /**
   * Puts all pairs as `putAll` does, a failed put stopping none of the others. Returns null when every put succeeded,
   * otherwise the keys whose put failed (their value in KV is unknown) and the first error.
   */
  async putAllSettled(
    pairs: ReadonlyArray<readonly [string, string]>,
  ): Promise<{ failed: Set<string>; error: unknown } | null> {
    this.#take(pairs.length);
    const failed = new Set<string>();
    let first: unknown = null;
    await eachLimit(pairs, KV_PUT_CONCURRENCY, async ([key, value]) => {
      try {
        await this.kv.put(key, value);
      } catch (error) {
        if (failed.size === 0) first = error;
        failed.add(key);
      }
    });
    return failed.size > 0 ? { failed, error: first } : null;
  }
}
