// The stream/trending command layout (src/session/stream.ts) and the outbox/alarm policy (src/session/outbox.ts).
import { describe, expect, it } from "vitest";
import type { CollectedEvent } from "../../src/collect/event.ts";
import { DAY_MS, EXPIRY_MS, HOUR_MS, SEEN_WINDOW_MS } from "../../src/session/limits.ts";
import {
  ACTIVE_WINDOW_MS,
  BACKOFF_CAP_MS,
  backoffMs,
  isExpired,
  nextAlarmAt,
  OUTBOX_FLUSH_DELAY_MS,
} from "../../src/session/outbox.ts";
import {
  EVENT_STREAM,
  flushCommand,
  SEEN_KEY_PREFIX,
  TREND_CATEGORY_PREFIX,
  TREND_PRODUCT_PREFIX,
  trendBucket,
  trendIncrements,
} from "../../src/session/stream.ts";
import { collectedEvent } from "../support/events.ts";

const T = Date.parse("2026-11-20T10:02:00.000Z");

function track(messageId: string, event: string, properties: Record<string, unknown>, at = T): CollectedEvent {
  const ts = new Date(at).toISOString();
  return collectedEvent({
    messageId,
    event,
    properties,
    timestamp: ts,
    originalTimestamp: ts,
    sentAt: ts,
    receivedAt: ts,
  });
}

describe("trendIncrements", () => {
  it("counts products and categories in the event's 5-minute bucket, by TREND_WEIGHTS", () => {
    const b = trendBucket(T);
    expect(b).toBe(Math.floor(T / 300_000));
    expect(trendIncrements(track("m", "Product Added", { product_id: "p", category: "Shoes" }), T)).toEqual([
      { key: `${TREND_PRODUCT_PREFIX}${b}`, member: "p", weight: 3 },
      { key: `${TREND_CATEGORY_PREFIX}${b}`, member: "shoes", weight: 3 },
    ]);
  });

  it("sums repeated products of one order and ignores what carries no weight", () => {
    const order = track("m", "Order Completed", {
      products: [
        { product_id: "p", category: "A" },
        { product_id: "p", category: "A" },
      ],
    });
    expect(trendIncrements(order, T).map((i) => i.weight)).toEqual([10, 10]);
    expect(trendIncrements(track("m", "Product Removed", { product_id: "p" }), T)).toEqual([]);
    expect(trendIncrements(track("m", "Signed Up", {}), T)).toEqual([]);
  });

  it("skips events older than a day", () => {
    expect(trendIncrements(track("m", "Product Viewed", { product_id: "p" }, T - 25 * HOUR_MS), T)).toEqual([]);
  });
});

describe("flushCommand", () => {
  it("declares every key and lays out one record per event", () => {
    const e1 = track("m1", "Product Viewed", { product_id: "p1", category: "C" });
    const e2 = track("m2", "Signed Up", {});
    const e3 = track("m3", "Product Viewed", { product_id: "p2", category: "C" });
    const items = [e1, e2, e3].map((e) => ({ messageId: e.messageId, userKey: "a:x", event: JSON.stringify(e) }));
    const { keys, args } = flushCommand(items, T);
    const b = trendBucket(T);
    expect(keys).toEqual([
      EVENT_STREAM,
      `${SEEN_KEY_PREFIX}m1`,
      `${SEEN_KEY_PREFIX}m2`,
      `${SEEN_KEY_PREFIX}m3`,
      `${TREND_PRODUCT_PREFIX}${b}`,
      `${TREND_CATEGORY_PREFIX}${b}`,
    ]);
    expect(args.slice(0, 3)).toEqual(["172800", "93600", "3"]);
    expect(args.slice(3)).toEqual([
      "m1",
      "a:x",
      items[0]?.event,
      "2",
      "5",
      "p1",
      "1",
      "6",
      "c",
      "1",
      "m2",
      "a:x",
      items[1]?.event,
      "0",
      "m3",
      "a:x",
      items[2]?.event,
      "2",
      "5",
      "p2",
      "1",
      "6",
      "c",
      "1",
    ]);
  });

  it("with trending off (exposures) declares no trend key and counts nothing", () => {
    const e = track("m1", "Product Viewed", { product_id: "p1", category: "C" });
    const items = [{ messageId: e.messageId, userKey: "a:x", event: JSON.stringify(e) }];
    const { keys, args } = flushCommand(items, T, { trending: false });
    expect(keys).toEqual([EVENT_STREAM, `${SEEN_KEY_PREFIX}m1`]);
    expect(args.slice(3)).toEqual(["m1", "a:x", items[0]?.event, "0"]);
  });
});

describe("outbox policy", () => {
  it("backs off exponentially from 1 s to a 5-minute cap with ±25 % jitter", () => {
    expect(backoffMs(1, 0.5)).toBe(1000);
    expect(backoffMs(2, 0.5)).toBe(2000);
    expect(backoffMs(5, 0.5)).toBe(16_000);
    expect(backoffMs(40, 0.5)).toBe(BACKOFF_CAP_MS);
    expect(backoffMs(1, 0)).toBe(750);
    expect(backoffMs(1, 0.999_999)).toBe(1250);
  });

  it("sets the alarm to the earliest duty", () => {
    const base = {
      now: T + ACTIVE_WINDOW_MS,
      lastActiveAt: T,
      oldestSeenAt: null,
      outboxPending: 0,
      oldestOutboxAt: null,
      outboxRetryAt: null,
    };
    expect(nextAlarmAt(base)).toBe(T + EXPIRY_MS);
    expect(nextAlarmAt({ ...base, oldestSeenAt: T })).toBe(T + SEEN_WINDOW_MS);
    expect(nextAlarmAt({ ...base, oldestSeenAt: T, outboxPending: 1, oldestOutboxAt: T })).toBe(
      T + OUTBOX_FLUSH_DELAY_MS,
    );
    expect(nextAlarmAt({ ...base, outboxPending: 1, oldestOutboxAt: T, outboxRetryAt: T + 5 })).toBe(T + 5);
  });

  it("past the expiry time with rows still pending, waits for the flush retry, not for the expiry gone by", () => {
    const now = T + EXPIRY_MS + DAY_MS;
    const pending = {
      now,
      lastActiveAt: T,
      oldestSeenAt: null,
      outboxPending: 3,
      oldestOutboxAt: T,
      outboxRetryAt: now + 4_000,
    };
    expect(nextAlarmAt(pending)).toBe(now + 4_000);
    // Delivered: the expiry is due (in the past: at once).
    expect(nextAlarmAt({ ...pending, outboxPending: 0, oldestOutboxAt: null, outboxRetryAt: null })).toBe(
      T + EXPIRY_MS,
    );
  });

  it("keeps beating every drain delay while the user is active, so record need not set the alarm", () => {
    const base = {
      now: T,
      lastActiveAt: T,
      oldestSeenAt: T,
      outboxPending: 0,
      oldestOutboxAt: null,
      outboxRetryAt: null,
    };
    expect(nextAlarmAt(base)).toBe(T + OUTBOX_FLUSH_DELAY_MS);
    // A row written 10 s after that beat was scheduled is drained by it: no earlier alarm is needed.
    expect(nextAlarmAt({ ...base, outboxPending: 1, oldestOutboxAt: T + 10_000 })).toBe(T + OUTBOX_FLUSH_DELAY_MS);
    // Quiet for the active window: back to the far duties.
    expect(nextAlarmAt({ ...base, now: T + ACTIVE_WINDOW_MS })).toBe(T + SEEN_WINDOW_MS);
  });

  it("expires only after 90 days and with nothing left to deliver", () => {
    expect(isExpired(T, 0, T + 90 * DAY_MS)).toBe(true);
    expect(isExpired(T, 0, T + 89 * DAY_MS)).toBe(false);
    expect(isExpired(T, 1, T + 200 * DAY_MS)).toBe(false);
  });
});
