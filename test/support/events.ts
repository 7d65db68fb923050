// A canonical event for tests: every field of CollectedEvent with a neutral default, overridden per test.
import type { CollectedEvent } from "../../src/collect/event.ts";

export const TEST_EVENT_TIME = "2026-11-20T10:00:00.000Z";

export function collectedEvent(fields: Partial<CollectedEvent> = {}): CollectedEvent {
  return {
    messageId: "m",
    type: "track",
    userId: null,
    anonymousId: "a",
    previousId: null,
    groupId: null,
    event: null,
    name: null,
    properties: {},
    traits: {},
    context: {},
    timestamp: TEST_EVENT_TIME,
    originalTimestamp: null,
    sentAt: null,
    receivedAt: TEST_EVENT_TIME,
    sourceId: "s",
    ...fields,
  };
}
