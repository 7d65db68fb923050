// Applies one `record` call's events to the store: dedupe, session, interactions, affinities, recent sets,
// counters and the outbox. Runs inside one `transactionSync`, so a call's effects land together or not at all.
import type { CollectedEvent, RecordResult } from "../collect/event.ts";
import { addScore } from "./decay.ts";
import { interpret, recentEffects } from "./ecommerce.ts";
import { OUTBOX_MAX_ROWS, SEEN_WINDOW_MS } from "./limits.ts";
import type { Profile, SessionStore } from "./store.ts";
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
  for (const { event, at } of ordered) {
    if (store.isSeen(event.messageId)) {
      duplicates++;
      continue;
    }
    store.markSeen([{ messageId: event.messageId, at: now }]);
    accepted++;

    const placement = place(profile.session, at, deps.newSessionId);
    if (placement.kind === "started") store.clearAffinities("session");
    profile.session = placement.session;
    const inSession = placement.kind !== "past";
    const horizons: Horizon[] = inSession ? ["session", "longTerm"] : ["longTerm"];

    for (const interaction of interpret(event)) {
      store.insertInteraction({
        ...interaction,
        at,
        messageId: event.messageId,
        sessionId: inSession ? placement.session.id : null,
      });
      const weight = AFFINITY_WEIGHTS[interaction.kind];
      if (weight !== 0) {
        for (const token of interaction.tokens) {
          for (const horizon of horizons) {
            const prev = store.affinity(horizon, token);
            const next = addScore(prev, weight, at, HALF_LIFE_MS[horizon]);
            store.putAffinity({ horizon, token, ...next }, prev !== null);
          }
        }
      }
      for (const effect of recentEffects(interaction)) {
        if (effect.op === "add") store.touchRecent(effect.kind, effect.value, at);
        else store.removeRecent(effect.kind, effect.value);
      }
    }

    store.enqueue({ at: now, messageId: event.messageId, userKey, event: JSON.stringify(event) });
    profile.events++;
    profile.lastEventAt = profile.lastEventAt === null ? at : Math.max(profile.lastEventAt, at);
  }
  profile.duplicates += duplicates;
  if (accepted > 0) profile.lastActiveAt = now;
  store.saveProfile(profile);
  store.pruneSeen(now - SEEN_WINDOW_MS);
  store.compact();
  return { accepted, duplicates };
}
