// Applies one `record` call's events to the store: dedupe, session, interactions, affinities, recent sets,
// counters and the outbox. Runs inside one `transactionSync`, so a call's effects land together or not at all.
import type { CollectedEvent, RecordResult } from "../collect/event.ts";
import { addScore } from "./decay.ts";
import { interpret, recentEffects } from "./ecommerce.ts";
import { OUTBOX_MAX_ROWS, SEEN_WINDOW_MS } from "./limits.ts";
import type { AffinityRow, SeenRow, StoredInteraction } from "./model.ts";
import type { OutboxRow, Profile, SessionStore } from "./store.ts";
import { place } from "./visit.ts";
import { AFFINITY_WEIGHTS, HALF_LIFE_MS, type Horizon } from "./weights.ts";

export class OutboxFullError extends Error {
  override name = "OutboxFullError";
}

export function newProfile(userKey: string, now: number): Profile {
  return {
    userKey,
    userId: userKey.startsWith("u:") ? userKey.slice(2) : null,
    createdAt: now,
    lastEventAt: null,
    lastActiveAt: now,
    mergedInto: null,
    released: false,
    session: null,
    events: 0,
    duplicates: 0,
    outboxAttempts: 0,
    outboxRetryAt: null,
  };
}

/** Event time in epoch ms: the (skew-corrected) timestamp, else when it was received, else now. */
export function eventTime(event: CollectedEvent, now: number): number {
  const at = Date.parse(event.timestamp);
  if (Number.isFinite(at)) return at;
  const received = Date.parse(event.receivedAt);
  return Number.isFinite(received) ? received : now;
}

export interface ApplyDeps {
  now: number;
  newSessionId: () => string;
}

export function applyEvents(
  store: SessionStore,
  userKey: string,
  events: readonly CollectedEvent[],
  deps: ApplyDeps,
): RecordResult {
  const { now } = deps;
  store.ensureSchema();
  const pending = store.outboxStats().pending;
  if (pending + events.length > OUTBOX_MAX_ROWS) {
    throw new OutboxFullError(`outbox full (${pending} events waiting for Redis): retry later`);
  }
  const profile = store.profile() ?? newProfile(userKey, now);
  // In event-time order (stable), so sessions split where the gaps really are.
  const ordered = events
    .map((event, i) => ({ event, at: eventTime(event, now), i }))
    .sort((a, b) => a.at - b.at || a.i - b.i);
  let accepted = 0;
  let duplicates = 0;
  // One lookup for the whole batch; ids repeated inside the batch count as duplicates too.
  const seen = store.seenAmong(ordered.map((o) => o.event.messageId));
  // Affinity scores are read once per token and written once per token at the end, however many events touch them.
  const scores = new AffinityBuffer(store);
  // Rows go in with one multi-row statement per table at the end.
  const newSeen: SeenRow[] = [];
  const newInteractions: StoredInteraction[] = [];
  const outbox: Omit<OutboxRow, "seq">[] = [];
  for (const { event, at } of ordered) {
    if (seen.has(event.messageId)) {
      duplicates++;
      continue;
    }
    seen.add(event.messageId);
    newSeen.push({ messageId: event.messageId, at: now });
    accepted++;

    const placement = place(profile.session, at, deps.newSessionId);
    if (placement.kind === "started") scores.clear("session");
    profile.session = placement.session;
    const inSession = placement.kind !== "past";
    const horizons: Horizon[] = inSession ? ["session", "longTerm"] : ["longTerm"];

    for (const interaction of interpret(event)) {
      newInteractions.push({
        ...interaction,
        at,
        messageId: event.messageId,
        sessionId: inSession ? placement.session.id : null,
      });
      const weight = AFFINITY_WEIGHTS[interaction.kind];
      if (weight !== 0) {
        for (const token of interaction.tokens) {
          for (const horizon of horizons) scores.add(horizon, token, weight, at);
        }
      }
      for (const effect of recentEffects(interaction)) {
        if (effect.op === "add") store.touchRecent(effect.kind, effect.value, at);
        else store.removeRecent(effect.kind, effect.value);
      }
    }

    outbox.push({ at: now, messageId: event.messageId, userKey, event: JSON.stringify(event) });
    profile.events++;
    profile.lastEventAt = profile.lastEventAt === null ? at : Math.max(profile.lastEventAt, at);
  }
  store.markSeen(newSeen);
  store.insertInteractions(newInteractions);
  store.enqueue(outbox);
  scores.write();
  profile.duplicates += duplicates;
  if (accepted > 0) profile.lastActiveAt = now;
  store.saveProfile(profile);
  store.pruneSeen(now - SEEN_WINDOW_MS);
  store.compact();
  return { accepted, duplicates };
}

/** Affinity updates of one `record` call, accumulated in memory: one read and one write per touched token. */
class AffinityBuffer {
  readonly #store: SessionStore;
  /** `${horizon}\u0000${token}` → the row before this call (null: none) and the row after it. */
  readonly #rows = new Map<string, { existed: boolean; row: AffinityRow }>();

  constructor(store: SessionStore) {
    this.#store = store;
  }

  add(horizon: Horizon, token: string, weight: number, at: number): void {
    const key = `${horizon}\u0000${token}`;
    const pending = this.#rows.get(key);
    const stored = pending ? undefined : this.#store.affinity(horizon, token);
    const current = pending ? pending.row : (stored ?? null);
    const next = addScore(current, weight, at, HALF_LIFE_MS[horizon]);
    this.#rows.set(key, { existed: pending ? pending.existed : stored !== null, row: { horizon, token, ...next } });
  }

  /** A new session: the session horizon starts empty (stored rows go now; buffered ones are dropped). */
  clear(horizon: Horizon): void {
    this.#store.clearAffinities(horizon);
    for (const [key, entry] of this.#rows) if (entry.row.horizon === horizon) this.#rows.delete(key);
  }

  write(): void {
    for (const { existed, row } of this.#rows.values()) this.#store.putAffinity(row, existed);
    this.#rows.clear();
  }
}
