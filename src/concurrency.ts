// Bounded concurrency: one worker pool for everything that runs a list of async steps a few at a time (KV puts
// within an invocation's budget, the refresh's compute lanes, the load scripts' clients).

/**
 * Runs `fn` over `items`, at most `limit` at a time (at least one, whatever `limit` says: 0, a fraction, NaN),
 * each worker taking the next item when its current one ends, in the items' order. Rejects as soon as one call
 * rejects, and starts no call after that (the calls already started keep running); use `settleAll` for "run
 * everything, then report".
 */
export async function eachLimit<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  let failed = false;
  const worker = async () => {
    // After a rejection no worker takes another item: the caller has been told the whole run failed.
    while (!failed && next < items.length) {
      try {
        await fn(items[next++] as T);
      } catch (error) {
        failed = true;
        throw error;
      }
    }
  };
  const workers = Math.max(1, Math.min(Number.isFinite(limit) ? Math.floor(limit) : 1, items.length));
  await Promise.all(Array.from({ length: workers }, worker));
}

/**
 * Runs every job, at most `limit` at a time (as `eachLimit`), a failure stopping none of the others; once all have
 * ended, throws the first failure in job order.
 */
export async function settleAll(jobs: ReadonlyArray<() => Promise<void>>, limit: number): Promise<void> {
  const failures: Array<{ at: number; error: unknown }> = [];
  await eachLimit(
    jobs.map((job, at) => ({ job, at })),
    limit,
    async ({ job, at }) => {
      try {
        await job();
      } catch (error) {
        failures.push({ at, error });
      }
    },
  );
  if (failures.length > 0) throw failures.sort((a, b) => a.at - b.at)[0]?.error;
}
