// A Jepsen-style history of event collection, and its checker. Pure: no I/O, no clock.
//
// The load generator records every attempt to send an event (HistoryRecorder) with what the client learnt from it:
//   acknowledged  a 2xx answer that did not list the event as rejected: the event must reach the warehouse
//   rejected      a 4xx answer, or a 2xx that listed it as rejected: it must reach nothing
//   unknown       a 5xx, a timeout, a connection error, a lost response: it may or may not have been stored
// An event sent several times (client retries, re-sent batches) counts once, with the best outcome of its
// attempts: acknowledged > listed as rejected > unknown > refused by a 4xx. A 2xx listing the event as rejected is
// the server's verdict on its content (it failed validation), so it settles an attempt whose answer was lost; a
// whole-request 4xx (a rate limit, say) says nothing about the other attempts.
//
// After the run (the pipeline drained) `check` compares the history with what the stores hold:
//   lost        acknowledged ids missing from Postgres `events`; interactions of a loaded acknowledged event missing
//               from `interactions`; and a session object counting fewer events than it acknowledged
//   duplicated  an id in the Redis stream more than once, or in `events` more than once; an `interactions` row
//               repeated or beyond the positions its event makes; a session object counting more events than it
//               could have accepted (its acknowledged + unknown ids)
//   unexpected  rows and entries of ids never sent, or only ever rejected; events counted by an object no event
//               was sent to
// Unknown-outcome ids may be present or absent: they are counted apart (`unknown`, and `unknownDelivered` of them
// found in the warehouse). The observation must be scoped to the run (e.g. by its messageId prefix): everything
// in it is compared with this history.

import { readRange } from "../../src/batch/consumer.ts";
import { warehouseRows } from "../../src/batch/warehouse.ts";
import type { CollectedEvent } from "../../src/collect/event.ts";
import { userKey as userKeyOf } from "../../src/collect/event.ts";
import { EVENT_STREAM, STREAM_FIELDS } from "../../src/session/stream.ts";
import type { Redis } from "../../src/stores/redis.ts";

export type Outcome = "acknowledged" | "rejected" | "unknown";

/** One event as the load generator knows it. */
export interface SentEvent {
  messageId: string;
  /** Its session object's key (`u:<userId>` / `a:<anonymousId>`). */
  userKey: string;
  /** The `interactions` positions its warehouse rows have (src/batch/warehouse.ts). */
  positions: readonly number[];
}

/** What one request taught the client. */
export interface AttemptResult {
  /** The HTTP status; undefined when no answer arrived (timeout, connection error, lost response). */
  status?: number | undefined;
  /** Indexes (in the request) a 2xx answer listed as rejected. */
  rejected?: readonly number[] | undefined;
}

/** The outcome of each event of a request, by its index. */
export function attemptOutcomes(count: number, result: AttemptResult): Outcome[] {
  const { status } = result;
  if (status === undefined || status >= 500 || status < 200) return Array.from({ length: count }, () => "unknown");
  if (status >= 400) return Array.from({ length: count }, () => "rejected");
  if (status >= 300) return Array.from({ length: count }, () => "unknown");
  const listed = new Set(result.rejected ?? []);
  return Array.from({ length: count }, (_, i) => (listed.has(i) ? "rejected" : "acknowledged"));
}

/** What an attempt taught, best last: a 4xx, no answer, a 2xx listing the event as rejected, an acknowledgement. */
const LEARNT = ["refused", "unknown", "listed", "acknowledged"] as const;
type Learnt = (typeof LEARNT)[number];
const OUTCOME: Record<Learnt, Outcome> = {
  refused: "rejected",
  unknown: "unknown",
  listed: "rejected",
  acknowledged: "acknowledged",
};

interface Entry {
  event: SentEvent;
  outcome: Outcome;
  attempts: number;
  learnt: Learnt;
}

export interface HistorySummary {
  /** Distinct messageIds sent. */
  sent: number;
  /** Event sends, retries and re-sends included. */
  attempts: number;
  acknowledged: number;
  rejected: number;
  unknown: number;
}

export class HistoryRecorder {
  readonly #events = new Map<string, Entry>();
  #attempts = 0;

  /** Records one request carrying `events` (in request order) and what came back; returns each event's outcome. */
  attempt(events: readonly SentEvent[], result: AttemptResult): Outcome[] {
    const outcomes = attemptOutcomes(events.length, result);
    const answered = result.status !== undefined && result.status >= 200 && result.status < 300;
    for (const [i, event] of events.entries()) {
      const outcome = outcomes[i] ?? "unknown";
      this.#record(event, outcome === "rejected" ? (answered ? "listed" : "refused") : outcome);
    }
    return outcomes;
  }

  #record(event: SentEvent, learnt: Learnt): void {
    this.#attempts++;
    const entry = this.#events.get(event.messageId);
    if (!entry) {
      this.#events.set(event.messageId, { event, outcome: OUTCOME[learnt], attempts: 1, learnt });
      return;
    }
    entry.attempts++;
    if (LEARNT.indexOf(learnt) > LEARNT.indexOf(entry.learnt)) {
      entry.learnt = learnt;
      entry.outcome = OUTCOME[learnt];
    }
  }

  /** The outcome of an id over all its attempts (undefined: never sent). */
  outcome(messageId: string): Outcome | undefined {
    return this.#events.get(messageId)?.outcome;
  }

  event(messageId: string): SentEvent | undefined {
    return this.#events.get(messageId)?.event;
  }

  ids(outcome?: Outcome): string[] {
    return [...this.#events.values()]
      .filter((e) => outcome === undefined || e.outcome === outcome)
      .map((e) => e.event.messageId);
  }

  *entries(): IterableIterator<Readonly<Entry>> {
    yield* this.#events.values();
  }

  /** The session object keys events were sent to. */
  userKeys(): string[] {
    return [...new Set([...this.#events.values()].map((e) => e.event.userKey))];
  }

  summary(): HistorySummary {
    const out: HistorySummary = { sent: 0, attempts: this.#attempts, acknowledged: 0, rejected: 0, unknown: 0 };
    for (const e of this.#events.values()) {
      out.sent++;
      out[e.outcome]++;
    }
    return out;
  }
}

/** What the stores hold after the run, scoped to it. Leave a place out (undefined) when it was not read. */
export interface Observation {
  /** `events.message_id`, one per row. */
  warehouse: Iterable<string>;
  /** `interactions` (message_id, position), one per row. */
  interactions?: Iterable<{ messageId: string; position: number }>;
  /** The messageId field of each stream entry, one per entry. */
  stream?: Iterable<string>;
  /** The session objects' event counters (`snapshot().counters.events`). */
  sessions?: Iterable<{ userKey: string; events: number }>;
}

export type Place = "warehouse" | "interactions" | "stream" | "session";

export interface Finding {
  place: Place;
  /** messageId (a session finding: the object's key). */
  id: string;
  /** How many units it adds to its count. */
  count: number;
  note: string;
}

export interface Verdict extends HistorySummary {
  /** Unknown-outcome ids found in the warehouse (may be present or absent). */
  unknownDelivered: number;
  lost: number;
  duplicated: number;
  unexpected: number;
  /** Counts per place (lost / duplicated / unexpected). */
  places: Record<Place, { lost: number; duplicated: number; unexpected: number }>;
  /** The first findings of each kind (at most `MAX_FINDINGS` each), for diagnosis. */
  findings: { lost: Finding[]; duplicated: Finding[]; unexpected: Finding[] };
}

export const MAX_FINDINGS = 20;

function tally(ids: Iterable<string>): Map<string, number> {
  const counts = new Map<string, number>();
  for (const id of ids) counts.set(id, (counts.get(id) ?? 0) + 1);
  return counts;
}

/** Compares the history with what the stores hold. */
export function check(history: HistoryRecorder, observed: Observation): Verdict {
  const places = Object.fromEntries(
    (["warehouse", "interactions", "stream", "session"] as const).map((p) => [
      p,
      { lost: 0, duplicated: 0, unexpected: 0 },
    ]),
  ) as Verdict["places"];
  const findings: Verdict["findings"] = { lost: [], duplicated: [], unexpected: [] };
  const found = (kind: keyof Verdict["findings"], finding: Finding) => {
    if (finding.count <= 0) return;
    places[finding.place][kind] += finding.count;
    if (findings[kind].length < MAX_FINDINGS) findings[kind].push(finding);
  };
  /** Present where only delivered events may be: never sent, or only ever rejected. */
  const stray = (id: string) => {
    const outcome = history.outcome(id);
    return outcome === undefined || outcome === "rejected";
  };
  const strayNote = (id: string) => (history.outcome(id) === undefined ? "never sent" : "only ever rejected");

  // Postgres events: every acknowledged id once; nothing else but unknown-outcome ids.
  const warehouse = tally(observed.warehouse);
  let unknownDelivered = 0;
  for (const [id, n] of warehouse) {
    if (stray(id)) found("unexpected", { place: "warehouse", id, count: n, note: strayNote(id) });
    else found("duplicated", { place: "warehouse", id, count: n - 1, note: `${n} rows` });
    if (history.outcome(id) === "unknown") unknownDelivered++;
  }
  for (const id of history.ids("acknowledged")) {
    if (!warehouse.has(id)) found("lost", { place: "warehouse", id, count: 1, note: "acknowledged, not in events" });
  }

  // Interactions: each loaded event's positions exactly once.
  if (observed.interactions) {
    const rows = new Map<string, Map<number, number>>();
    for (const { messageId, position } of observed.interactions) {
      const byPosition = rows.get(messageId) ?? new Map<number, number>();
      rows.set(messageId, byPosition);
      byPosition.set(position, (byPosition.get(position) ?? 0) + 1);
    }
    for (const [id, byPosition] of rows) {
      const total = [...byPosition.values()].reduce((a, b) => a + b, 0);
      if (stray(id)) {
        found("unexpected", { place: "interactions", id, count: total, note: strayNote(id) });
        continue;
      }
      const expected = new Set(history.event(id)?.positions ?? []);
      for (const [position, n] of byPosition) {
        const extra = expected.has(position) ? n - 1 : n;
        found("duplicated", { place: "interactions", id, count: extra, note: `position ${position}: ${n} rows` });
      }
    }
    for (const id of history.ids()) {
      const event = history.event(id);
      if (!event || !warehouse.has(id) || history.outcome(id) === "rejected") continue;
      const have = rows.get(id);
      const missing = event.positions.filter((p) => !have?.has(p)).length;
      found("lost", { place: "interactions", id, count: missing, note: `${missing} of ${event.positions.length}` });
    }
  }

  // The stream: at most once per id (the delivery guard), nothing stray.
  if (observed.stream) {
    for (const [id, n] of tally(observed.stream)) {
      if (stray(id)) found("unexpected", { place: "stream", id, count: n, note: strayNote(id) });
      else found("duplicated", { place: "stream", id, count: n - 1, note: `${n} entries` });
    }
  }

  // Session objects: counted = distinct accepted ids, between the acknowledged ones and those plus the unknown.
  if (observed.sessions) {
    const bounds = new Map<string, { min: number; max: number }>();
    for (const e of history.entries()) {
      if (e.outcome === "rejected") continue;
      const b = bounds.get(e.event.userKey) ?? { min: 0, max: 0 };
      if (e.outcome === "acknowledged") b.min++;
      b.max++;
      bounds.set(e.event.userKey, b);
    }
    const seen = new Set<string>();
    for (const { userKey, events } of observed.sessions) {
      seen.add(userKey);
      const b = bounds.get(userKey);
      if (!b) {
        found("unexpected", { place: "session", id: userKey, count: events, note: "no event was sent to it" });
        continue;
      }
      found("lost", { place: "session", id: userKey, count: b.min - events, note: `counts ${events} < ${b.min}` });
      found("duplicated", {
        place: "session",
        id: userKey,
        count: events - b.max,
        note: `counts ${events} > ${b.max}`,
      });
    }
    for (const [userKey, b] of bounds) {
      if (!seen.has(userKey)) found("lost", { place: "session", id: userKey, count: b.min, note: "not observed" });
    }
  }

  const sum = (kind: "lost" | "duplicated" | "unexpected") =>
    Object.values(places).reduce((total, p) => total + p[kind], 0);
  return {
    ...history.summary(),
    unknownDelivered,
    lost: sum("lost"),
    duplicated: sum("duplicated"),
    unexpected: sum("unexpected"),
    places,
    findings,
  };
}

/** One line of counts, for logs and test output. */
export function formatVerdict(v: Verdict): string {
  return (
    `sent ${v.sent} (attempts ${v.attempts}): acknowledged ${v.acknowledged}, rejected ${v.rejected}, ` +
    `unknown ${v.unknown} (${v.unknownDelivered} delivered) → lost ${v.lost}, duplicated ${v.duplicated}, ` +
    `unexpected ${v.unexpected}`
  );
}

/** The JSON summary line of a scenario (scripts/chaos.ts prints one per scenario). */
export function summaryLine(scenario: string, durationMs: number, v: Verdict) {
  return {
    scenario,
    durationMs,
    sent: v.sent,
    acknowledged: v.acknowledged,
    rejected: v.rejected,
    unknown: v.unknown,
    lost: v.lost,
    duplicated: v.duplicated,
    unexpected: v.unexpected,
  };
}

/** The fields of a raw (wire-format) event the warehouse rows depend on. */
export interface RawEvent {
  messageId: string;
  type: CollectedEvent["type"];
  userId?: string | undefined;
  anonymousId?: string | undefined;
  event?: string | undefined;
  name?: string | undefined;
  properties?: Record<string, unknown> | undefined;
  timestamp?: string | undefined;
}

/** A raw event as the history knows it: its object's key and the interaction positions its rows will have. */
export function sentEvent(raw: RawEvent): SentEvent {
  const time = raw.timestamp ?? new Date(0).toISOString();
  const collected: CollectedEvent = {
    messageId: raw.messageId,
    type: raw.type,
    userId: raw.userId ?? null,
    anonymousId: raw.anonymousId ?? null,
    previousId: null,
    groupId: null,
    event: raw.event ?? null,
    name: raw.name ?? null,
    properties: raw.properties ?? {},
    traits: {},
    context: {},
    timestamp: time,
    originalTimestamp: null,
    sentAt: null,
    receivedAt: time,
    sourceId: "history",
  };
  return {
    messageId: raw.messageId,
    // An event without either id is rejected by collection; it belongs to no object.
    userKey: collected.userId || collected.anonymousId ? userKeyOf(collected) : "",
    positions: warehouseRows(collected).interactions.map((i) => i.position),
  };
}

/**
 * The messageIds with a run's prefix in the event stream from `start` on (`-`, or `(id` for after an entry), one per
 * entry and in stream order: what the history check observes in the stream.
 */
export async function streamMessageIds(redis: Redis, start: string, prefix: string): Promise<string[]> {
  const ids: string[] = [];
  for (let cursor = start; ; ) {
    const page = await readRange(redis, EVENT_STREAM, cursor, 2000);
    if (page.length === 0) return ids;
    for (const { fields } of page) {
      const id = fields?.[STREAM_FIELDS.messageId];
      if (id?.startsWith(`${prefix}-`)) ids.push(id);
    }
    cursor = `(${page.at(-1)?.id}`;
  }
}
