// Collection events for the property-based tests (test/unit/fuzz-collect.test.ts, test/workers/fuzz-collect.test.ts):
// valid events of every type with hostile content, and invalid ones made from them by one mutation each, tagged
// with the rejection code the collection API must give them (docs/collection.md#validation).
import fc from "fast-check";
import { EVENT_TYPES, type EventType } from "../../src/collect/event.ts";
import { MAX_EVENT_BYTES, MAX_ID_LENGTH } from "../../src/collect/limits.ts";
import type { RejectionCode } from "../../src/collect/normalize.ts";
import { compactJson, hostileKey } from "./fuzz.ts";

export type WireEvent = Record<string, unknown>;

/** Mutations that make a valid event invalid on the batch path, with the rejection code each must get. */
export const INVALIDATE: ReadonlyArray<readonly [RejectionCode, (e: WireEvent) => unknown]> = [
  ["invalid_event", () => "not an event"],
  ["invalid_event", (e) => [e]],
  ["invalid_event", () => null],
  ["invalid_type", (e) => ({ ...e, type: "click" })],
  ["invalid_type", (e) => ({ ...e, type: 7 })],
  ["invalid_type", ({ type: _, ...e }) => e],
  ["invalid_id", (e) => ({ ...e, userId: { id: 1 } })],
  ["invalid_id", (e) => ({ ...e, userId: true })],
  ["invalid_id", (e) => ({ ...e, userId: "x".repeat(MAX_ID_LENGTH + 1) })],
  ["invalid_id", (e) => ({ ...e, messageId: ["m"] })],
  ["invalid_id", (e) => ({ ...e, userId: `${e.userId}\ud800` })],
  ["invalid_id", (e) => ({ ...e, anonymousId: "\udc00a" })],
  ["missing_identity", ({ userId: _, anonymousId: __, ...e }) => e],
  ["invalid_field", (e) => ({ ...e, properties: [1, 2] })],
  ["invalid_field", (e) => ({ ...e, traits: "vip" })],
  ["invalid_field", (e) => ({ ...e, context: 5 })],
  ["invalid_timestamp", (e) => ({ ...e, timestamp: "last tuesday" })],
  ["invalid_timestamp", (e) => ({ ...e, sentAt: 1764180000000 })],
  ["event_too_large", (e) => ({ ...e, properties: { pad: "é".repeat(MAX_EVENT_BYTES / 2) } })],
];

export interface EventOptions {
  /** The userId of every valid event. */
  userId: fc.Arbitrary<string>;
  /** Ids for the other id fields. */
  id: fc.Arbitrary<string>;
  /** Types the valid events may have. */
  types?: readonly EventType[];
  /** Event times are drawn around this instant (± 400 days: some get clamped). */
  now: number;
}

export function eventArbitraries(options: EventOptions): {
  validEvent: fc.Arbitrary<WireEvent>;
  invalidEvent: fc.Arbitrary<{ raw: unknown; code: RejectionCode }>;
} {
  const { id, now } = options;
  const isoTime = fc
    .integer({ min: now - 400 * 86_400_000, max: now + 400 * 86_400_000 })
    .map((ms) => new Date(ms).toISOString());
  const content = (maxKeys: number) =>
    fc.option(fc.dictionary(hostileKey, compactJson, { maxKeys }), { nil: undefined });
  const validEvent = fc
    .record(
      {
        type: fc.constantFrom(...(options.types ?? EVENT_TYPES)),
        userId: options.userId,
        anonymousId: fc.option(id, { nil: undefined }),
        messageId: fc.option(fc.oneof(id, fc.integer()), { nil: undefined }),
        event: fc.string({ minLength: 1, maxLength: 30 }),
        name: fc.option(fc.string(), { nil: undefined }),
        previousId: id,
        groupId: id,
        properties: content(5),
        traits: content(3),
        context: content(3),
        timestamp: fc.option(isoTime, { nil: undefined }),
        originalTimestamp: fc.option(isoTime, { nil: undefined }),
        sentAt: fc.option(isoTime, { nil: undefined }),
      },
      { requiredKeys: ["type", "userId", "event", "previousId", "groupId"] },
    )
    .map((e) => {
      const out: WireEvent = {};
      for (const [k, v] of Object.entries(e)) if (v !== undefined) out[k] = v;
      if (e.type !== "track") delete out.event;
      if (e.type !== "alias") delete out.previousId;
      if (e.type !== "group") delete out.groupId;
      return out;
    });
  const invalidEvent = fc.tuple(validEvent, fc.integer({ min: 0, max: INVALIDATE.length - 1 })).map(([event, i]) => {
    const [code, mutate] = INVALIDATE[i] as (typeof INVALIDATE)[number];
    return { raw: mutate(event), code };
  });
  return { validEvent, invalidEvent };
}
