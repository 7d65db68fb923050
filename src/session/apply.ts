// Applies one `record` call's events to the store: dedupe, session, interactions, affinities, recent sets,
// counters and the outbox. Runs inside one `transactionSync`, so a call's effects land together or not at all.
import type { CollectedEvent, RecordResult } from "../collect/event.ts";
import { addScore } from "./decay.ts";
import { type Interaction, interpret, type RecentEffect, recentEffects } from "./ecommerce.ts";
import { OUTBOX_MAX_ROWS, type RecentKind, SEEN_WINDOW_MS } from "./limits.ts";
import type { AffinityRow, StoredInteraction } from "./model.ts";
import { affinityKey, type OutboxRow, type Profile, recentKey, type SessionStore } from "./store.ts";
import { place } from "./visit.ts";
import { AFFINITY_WEIGHTS, HALF_LIFE_MS, HORIZONS, type Horizon } from "./weights.ts";

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
  /** The stored profile as the caller just read it in the same turn (null: none); undefined: read it here. */
  profile?: Profile | null;
  /**
   * The caller checked the outbox's room (`assertOutboxRoom`) before the call applied anything else (an identity
   * merge): it is not refused now that part of it is applied.
   */
  outboxChecked?: boolean;
  /** The call's hand-off token (RecordOptions.attempt), stored with each id it records; null: none. */
  attempt?: string | null;
}

/** Throws OutboxFullError when `count` more events would take the outbox past OUTBOX_MAX_ROWS. */
export function assertOutboxRoom(store: SessionStore, count: number): void {
  const { pending } = store.outboxStats();
  if (pending + count > OUTBOX_MAX_ROWS) {
    throw new OutboxFullError(`outbox full (${pending} events waiting for Redis): retry later`);
  }
}

/** What a call changed, for the caller's alarm bookkeeping (no second read of the profile and the outbox). */
export interface Applied {
  result: RecordResult;
  /** Events this call applied (`result.accepted` less those an earlier call under the same attempt applied). */
  newEvents: number;
  profile: Profile;
  outbox: { pending: number; oldestAt: number | null };
}

export function applyEvents(
  store: SessionStore,
  userKey: string,
  events: readonly CollectedEvent[],
  deps: ApplyDeps,
): Applied {
  const { now } = deps;
  store.ensureSchema();
  if (deps.outboxChecked !== true) assertOutboxRoom(store, events.length);
  const before = store.outboxStats();
  const stored = deps.profile === undefined ? store.profile() : deps.profile;
  const profile = stored ? { ...stored } : newProfile(userKey, now);
  // In event-time order (stable), so sessions split where the gaps really are.
  const ordered = events
    .map((event, i) => ({ event, at: eventTime(event, now), i }))
    .sort((a, b) => a.at - b.at || a.i - b.i);
  let accepted = 0;
  let newEvents = 0;
  let duplicates = 0;
  // One insert for the whole batch tells which ids are new; an id repeated inside the batch is new once.
  const attempt = deps.attempt ?? null;
  const ids = ordered.map((o) => o.event.messageId);
  const fresh = store.claimSeen(ids, now, attempt);
  // Ids already seen under this call's attempt were stored by an earlier call of the same hand-off whose answer was
  // lost: counted as accepted again (once per id, as that call counted them), applied nothing. Read only when some id
  // was not new, so a call without duplicates runs no statement for it.
  const again =
    attempt !== null && fresh.size < ids.length
      ? store.seenUnder(attempt, [...new Set(ids.filter((id) => !fresh.has(id)))])
      : new Set<string>();
  const interpreted = ordered.map(({ event }) => interpret(event));
  // Every affinity row and recent item the batch may touch is read up front (one statement per chunk of keys),
  // changed in memory, and written back at the end (one multi-row statement per chunk), however many events touch
  // them.
  const interactions = interpreted.flat();
  const scores = new AffinityBuffer(store, interactions);
  const recent = new RecentBuffer(store, interactions);
  // Rows go in with one multi-row statement per table at the end.
  const newInteractions: StoredInteraction[] = [];
  const outbox: Omit<OutboxRow, "seq">[] = [];
  for (const [index, { event, at }] of ordered.entries()) {
    if (!fresh.delete(event.messageId)) {
      if (again.delete(event.messageId)) accepted++;
      else duplicates++;
      continue;
    }
    accepted++;
    newEvents++;

    const placement = place(profile.session, at, deps.newSessionId);
    if (placement.kind === "started") scores.clear("session");
    profile.session = placement.session;
    const inSession = placement.kind !== "past";
    const horizons: Horizon[] = inSession ? ["session", "longTerm"] : ["longTerm"];

    for (const interaction of interpreted[index] ?? []) {
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
      for (const effect of recentEffects(interaction)) recent.apply(effect, at);
    }

    outbox.push({ at: now, messageId: event.messageId, userKey, event: JSON.stringify(event) });
    profile.events++;
    profile.lastEventAt = profile.lastEventAt === null ? at : Math.max(profile.lastEventAt, at);
  }
  store.insertInteractions(newInteractions);
  store.enqueue(outbox);
  scores.write();
  recent.write();
  profile.duplicates += duplicates;
  if (newEvents > 0) profile.lastActiveAt = now;
  store.saveProfile(profile);
  store.pruneSeen(now - SEEN_WINDOW_MS);
  store.compact();
  return {
    result: { accepted, duplicates },
    newEvents,
    profile,
    outbox: { pending: before.pending + outbox.length, oldestAt: before.oldestAt ?? (outbox.length > 0 ? now : null) },
  };
}

/** Affinity updates of one `record` call, in memory: the touched rows read in one go, written in one go. */
class AffinityBuffer {
  readonly #store: SessionStore;
  /** The rows as stored before this call (absent: none; null: cleared by a new session during this call). */
  readonly #stored: Map<string, AffinityRow | null>;
  /** The rows as this call leaves them, and whether each was stored before. */
  readonly #rows = new Map<string, { existed: boolean; row: AffinityRow }>();

  constructor(store: SessionStore, interactions: readonly Interaction[]) {
    this.#store = store;
    const keys: Array<{ horizon: Horizon; token: string }> = [];
    for (const interaction of interactions) {
      if (AFFINITY_WEIGHTS[interaction.kind] === 0) continue;
      for (const token of interaction.tokens) for (const horizon of HORIZONS) keys.push({ horizon, token });
    }
    this.#stored = keys.length > 0 ? store.affinitiesAmong(keys) : new Map();
  }

  add(horizon: Horizon, token: string, weight: number, at: number): void {
    const key = affinityKey(horizon, token);
    const pending = this.#rows.get(key);
    const stored = this.#stored.get(key) ?? null;
    const existed = pending ? pending.existed : stored !== null;
    const next = addScore(pending ? pending.row : stored, weight, at, HALF_LIFE_MS[horizon]);
    this.#rows.set(key, { existed, row: { horizon, token, ...next } });
  }

  /** A new session: the session horizon starts empty (stored rows go now; buffered ones are dropped). */
  clear(horizon: Horizon): void {
    this.#store.clearAffinities(horizon);
    for (const [key, row] of this.#stored) if (row?.horizon === horizon) this.#stored.set(key, null);
    for (const [key, entry] of this.#rows) if (entry.row.horizon === horizon) this.#rows.delete(key);
  }

  write(): void {
    this.#store.putAffinities([...this.#rows.values()]);
    this.#rows.clear();
  }
}

/** Recent-set changes of one `record` call, in memory: the touched items read in one go, written in one go. */
class RecentBuffer {
  readonly #store: SessionStore;
  /** Stored times before this call. */
  readonly #stored: Map<string, number>;
  /** State after this call's effects so far: `at` null = removed. */
  readonly #items = new Map<string, { kind: RecentKind; value: string; at: number | null }>();

  constructor(store: SessionStore, interactions: readonly Interaction[]) {
    this.#store = store;
    const keys = interactions.flatMap((i) => recentEffects(i)).map((e) => ({ kind: e.kind, value: e.value }));
    // A cart add also reads when the product was purchased: an add from before that purchase does not cart it.
    for (const key of [...keys]) if (key.kind === "carted") keys.push({ kind: "purchased", value: key.value });
    this.#stored = keys.length > 0 ? store.recentAmong(keys) : new Map();
  }

  /**
   * By event time, whatever order the events arrive in (as the merge unites the sets): an add keeps the later time (as a
   * stored item does), and a cart add from before the product's purchase is none; a remove drops the item unless it
   * was added after the remove happened (a late removal or purchase does not take out a later add).
   */
  apply(effect: RecentEffect, at: number): void {
    const item = this.#item(effect.kind, effect.value);
    if (effect.op === "remove") {
      if (item.at !== null && item.at <= at) item.at = null;
      return;
    }
    if (effect.kind === "carted") {
      const purchased = recentKey("purchased", effect.value);
      const purchasedAt = this.#items.get(purchased)?.at ?? this.#stored.get(purchased) ?? null;
      if (purchasedAt !== null && purchasedAt >= at) return;
    }
    item.at = item.at === null ? at : Math.max(item.at, at);
  }

  /** The item as this call has left it so far (`at` null: not in the set). */
  #item(kind: RecentKind, value: string): { kind: RecentKind; value: string; at: number | null } {
    const key = recentKey(kind, value);
    let item = this.#items.get(key);
    if (!item) {
      item = { kind, value, at: this.#stored.get(key) ?? null };
      this.#items.set(key, item);
    }
    return item;
  }

  write(): void {
    this.#store.putRecent(
      [...this.#items.entries()].map(([key, item]) => ({ ...item, existed: this.#stored.has(key) })),
    );
    this.#items.clear();
  }
}
