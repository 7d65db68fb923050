// The load generator of the history checks (scripts/lib/history.ts): seeded batches of Segment-format events for
// many users — views, cart adds, orders with several products, product pages, searches, identifies and a few
// invalid events — and the one way to send a batch and record what the client learnt. Pure apart from the `post`
// function it is given: the Worker tests post through the Worker's own fetch, scripts/chaos.ts over HTTP.
import type { HistoryRecorder, Outcome, RawEvent, SentEvent } from "./history.ts";
import { sentEvent } from "./history.ts";
import { mulberry32 } from "./prng.ts";

export interface WorkloadOptions {
  /** Every messageId, user id and product id starts with it: the run's scope in shared stores. */
  prefix: string;
  users: number;
  events: number;
  seed: number;
  /** Events per batch at most (at least 1). */
  maxBatch?: number;
  /** Products to draw from. */
  products?: number;
  /** Share of events that are invalid (a track without a name: rejected, listed by index). */
  invalidRate?: number;
}

export interface Batch {
  /** Wire-format events, in request order. */
  events: Record<string, unknown>[];
  /** The same events as the history knows them. */
  sent: SentEvent[];
}

/** The user ids of a workload: even ones are logged-in users (`userId`), odd ones anonymous visitors. */
export function workloadUser(prefix: string, i: number): { userId?: string; anonymousId?: string } {
  return i % 2 === 0 ? { userId: `${prefix}-u${i}` } : { anonymousId: `${prefix}-v${i}` };
}

export function productId(prefix: string, n: number): string {
  return `${prefix}-p${n}`;
}

const CATEGORIES = ["Candles & Lights", "Mugs", "Bags", "Garden", "Toys & Games"];

/** The workload's batches (deterministic for a seed). */
export function workload(options: WorkloadOptions): Batch[] {
  const random = mulberry32(options.seed);
  const pick = (n: number) => Math.floor(random() * n);
  const products = options.products ?? 30;
  const maxBatch = Math.max(1, options.maxBatch ?? 20);
  const invalidRate = options.invalidRate ?? 0.02;
  const product = () => {
    const n = pick(products);
    return { product_id: productId(options.prefix, n), category: CATEGORIES[n % CATEGORIES.length], price: 1 + n };
  };
  const batches: Batch[] = [];
  let current: Batch = { events: [], sent: [] };
  let size = 1 + pick(maxBatch);
  for (let k = 0; k < options.events; k++) {
    const who = workloadUser(options.prefix, pick(options.users));
    const messageId = `${options.prefix}-m${k}`;
    const roll = random();
    let raw: RawEvent;
    if (random() < invalidRate) raw = { messageId, type: "track", ...who, properties: product() };
    else if (roll < 0.45) raw = { messageId, type: "track", ...who, event: "Product Viewed", properties: product() };
    else if (roll < 0.6) raw = { messageId, type: "track", ...who, event: "Product Added", properties: product() };
    else if (roll < 0.72) {
      const lines = Array.from({ length: 1 + pick(3) }, () => ({ ...product(), quantity: 1 + pick(3) }));
      raw = {
        messageId,
        type: "track",
        ...who,
        event: "Order Completed",
        properties: { order_id: `${options.prefix}-o${k}`, revenue: lines.length * 10, products: lines },
      };
    } else if (roll < 0.84) raw = { messageId, type: "page", ...who, name: "Product", properties: product() };
    else if (roll < 0.94) {
      raw = { messageId, type: "track", ...who, event: "Products Searched", properties: { query: `q${pick(9)}` } };
    } else raw = { messageId, type: "identify", ...who };
    const wire: Record<string, unknown> = { ...raw };
    if (raw.type === "identify") wire.traits = { plan: `p${pick(3)}` };
    current.events.push(wire);
    current.sent.push(sentEvent(raw));
    if (current.events.length >= size) {
      batches.push(current);
      current = { events: [], sent: [] };
      size = 1 + pick(maxBatch);
    }
  }
  if (current.events.length > 0) batches.push(current);
  return batches;
}

/** What a `post` returns: the status and body text, or throws when no answer arrived. */
export type Post = (body: string) => Promise<{ status: number; text: string }>;

/** The indexes a 200 answer of the collection API listed as rejected (docs/collection.md#response). */
export function rejectedIndexes(text: string): number[] | undefined {
  try {
    const body = JSON.parse(text) as { rejected?: Array<{ index?: unknown }> };
    if (!Array.isArray(body.rejected)) return undefined;
    return body.rejected.map((r) => Number(r.index)).filter((i) => Number.isInteger(i));
  } catch {
    return undefined;
  }
}

export interface SendResult {
  status: number | undefined;
  outcomes: Outcome[];
  error?: string;
}

/**
 * Sends one batch to /v1/batch through `post` and records it. A 200 whose body cannot be read is recorded as unknown
 * (the client cannot tell which events were rejected).
 */
export async function sendBatch(post: Post, batch: Batch, history: HistoryRecorder): Promise<SendResult> {
  let status: number | undefined;
  let rejected: number[] | undefined;
  let error: string | undefined;
  try {
    const res = await post(JSON.stringify({ batch: batch.events }));
    status = res.status;
    if (status >= 200 && status < 300) {
      rejected = rejectedIndexes(res.text);
      if (rejected === undefined) status = undefined;
    }
  } catch (e) {
    error = e instanceof Error ? e.message : String(e);
  }
  const outcomes = history.attempt(batch.sent, { status, rejected });
  return { status, outcomes, ...(error === undefined ? {} : { error }) };
}
