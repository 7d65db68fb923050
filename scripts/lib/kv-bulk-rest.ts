// The Workers KV bulk endpoints of the Cloudflare REST API, as the backfill's REST mode uses them: write pairs
// (PUT …/bulk) and delete keys (POST …/bulk/delete). A request can succeed in part: the answer is HTTP 200 with the
// keys that were not stored in `result.unsuccessful_keys` ("should be retried"), or `success: false` for a request
// that stored nothing. So each call sends what is left until the API has taken everything, re-sending only the keys
// it refused after a jittered, growing pause, and answers what is still left when the attempts run out.
import { backoffDelay, type RetryPolicy } from "../../src/batch/retry.ts";
import { type BulkPair, bulkJson } from "../../src/publish/bulk-files.ts";

export interface RestTarget {
  accountId: string;
  apiToken: string;
  namespaceId: string;
  /** Default https://api.cloudflare.com/client/v4 */
  baseUrl?: string;
}

/** 5 attempts, pauses drawn from [0, 1 s], [0, 2 s], [0, 4 s], [0, 8 s]: time for a failed storage write to pass. */
export const BULK_RETRY: RetryPolicy = { attempts: 5, baseDelayMs: 1_000, maxDelayMs: 30_000 };

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export class KvBulkApi {
  /** Requests sent, retries included. */
  requests = 0;
  /** The last answer that refused keys (up to 300 characters): what the API said about them. */
  lastRefusal = "";
  readonly #target: RestTarget;
  readonly #policy: RetryPolicy;

  constructor(target: RestTarget, policy: RetryPolicy = BULK_RETRY) {
    this.#target = target;
    this.#policy = policy;
  }

  get attempts(): number {
    return this.#policy.attempts;
  }

  /** Writes the pairs; answers those not stored after the policy's attempts. */
  put(pairs: readonly BulkPair[]): Promise<BulkPair[]> {
    return this.#untilTaken(
      pairs,
      (p) => p.key,
      (left) => this.#request("PUT", "bulk", bulkJson(left)),
    );
  }

  /** Deletes the keys; answers those not deleted after the policy's attempts. */
  delete(keys: readonly string[]): Promise<string[]> {
    return this.#untilTaken(
      keys,
      (k) => k,
      (left) => this.#request("POST", "bulk/delete", JSON.stringify(left)),
    );
  }

  async #untilTaken<T>(
    items: readonly T[],
    keyOf: (item: T) => string,
    send: (left: T[]) => Promise<Set<string> | "all">,
  ): Promise<T[]> {
    let left = [...items];
    for (let attempt = 1; left.length > 0; attempt++) {
      const refused = await send(left);
      if (refused !== "all") left = left.filter((item) => refused.has(keyOf(item)));
      if (left.length === 0 || attempt >= this.#policy.attempts) break;
      await sleep(backoffDelay(this.#policy, attempt - 1));
    }
    return left;
  }

  /** One request: the keys it did not take, or "all" (a `success: false` answer, or one that is not JSON). */
  async #request(method: string, path: string, body: string): Promise<Set<string> | "all"> {
    const { accountId, apiToken, namespaceId, baseUrl = "https://api.cloudflare.com/client/v4" } = this.#target;
    this.requests++;
    const res = await fetch(`${baseUrl}/accounts/${accountId}/storage/kv/namespaces/${namespaceId}/${path}`, {
      method,
      headers: { authorization: `Bearer ${apiToken}`, "content-type": "application/json" },
      body,
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`KV ${path} failed: ${res.status} ${text.slice(0, 300)}`);
    const answer = parseAnswer(text);
    const refused = answer?.success !== true ? "all" : answer.result?.unsuccessful_keys;
    if (refused === undefined || (Array.isArray(refused) && refused.length === 0)) return new Set();
    this.lastRefusal = text.slice(0, 300);
    return Array.isArray(refused) ? new Set(refused.map(String)) : "all";
  }
}

interface BulkAnswer {
  success?: unknown;
  result?: { unsuccessful_keys?: unknown } | null;
}

function parseAnswer(text: string): BulkAnswer | null {
  try {
    const answer = JSON.parse(text) as unknown;
    return typeof answer === "object" && answer !== null ? (answer as BulkAnswer) : null;
  } catch {
    return null;
  }
}
