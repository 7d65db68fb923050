// SessionState: one Durable Object per user (`u:<userId>`) or visitor (`a:<anonymousId>`), with SQLite storage. It
// holds the live session and is the durable write-ahead point of collection: `record` returns only once the
// events are stored (output gates hold the reply until the writes are durable), and the outbox forwards them to
// the Redis stream afterwards, off the acknowledgement path. Callers use RPC methods, never fetch routing.
// docs/session.md describes the state, its bounds, the merge semantics and the stream format.
import { DurableObject } from "cloudflare:workers";
import type { CollectedEvent, RecordOptions, RecordResult } from "../collect/event.ts";
import { loadConfig } from "../config.ts";
import { describeError, log } from "../log.ts";
import { type RedisSettings, withRedisDeadline } from "../stores/redis.ts";
import { type Applied, applyEvents, assertOutboxRoom, newProfile } from "./apply.ts";
import { isUserKey, type StitchTarget, stitchTargets } from "./identity.ts";
import {
  ATTEMPT_MAX_CHARS,
  FORWARD_MAX_HOPS,
  FORWARD_MAX_ROUNDS,
  MERGE_BUSY_ATTEMPTS,
  MERGE_BUSY_WAIT_MS,
  MERGE_BUSY_WAIT_RATIO,
  MERGE_REFRESH_MS,
  MERGED_MAX,
  type RECENT_KINDS,
  RECENT_MAX,
  SEEN_WINDOW_MS,
  SNAPSHOT_AFFINITIES,
  SNAPSHOT_INTERACTIONS,
  SNAPSHOT_MERGED,
} from "./limits.ts";
import { mergeStates } from "./merge.ts";
import type { HandOver } from "./model.ts";
import {
  backoffMs,
  FLUSH_MAX_BYTES,
  FLUSH_MAX_EVENTS,
  FLUSH_MAX_ROUNDS,
  FLUSH_TIMEOUT_MS,
  isExpired,
  nextAlarmAt,
  OUTBOX_FLUSH_DELAY_MS,
} from "./outbox.ts";
import { emptySnapshot, type SessionSnapshot } from "./snapshot.ts";
import { decayedAffinities, type Profile, SessionStore } from "./store.ts";
import { pushToStream } from "./stream.ts";
import { type CurrentSession, isActive } from "./visit.ts";

export type { SessionSnapshot } from "./snapshot.ts";

/**
 * Keys of the object's synchronous KV storage: what keeps the user's wishes, kept through the object's own erasure
 * and expiry (#erase), none of it data about their behaviour.
 */
const SUPPRESSED_SINCE = "suppressed";
const SUPPRESSED_CHASED = "suppressed-keys";
/** Merged objects an erasure could not reach: every later erasure calls them again until they answer. */
const ERASE_PENDING = "erase-pending";
/** Anonymous ids a suppressed user's events named whose objects were erased and suppressed too (bound). */
export const SUPPRESSED_CHASED_MAX = 1_000;
/** Bound of ERASE_PENDING (the newest are kept; an erasure also records them in the warehouse's erased_users). */
export const ERASE_PENDING_MAX = 1_000;
/**
 * When each merged key was last asked for a hand-over again (MERGE_REFRESH_MS), by key; erased with the data. Entries
 * older than MERGE_REFRESH_MS are dropped on every write (they no longer hold anything back).
 */
const MERGE_REFRESHED = "merge-refreshed";
/**
 * A merged object's stamp: drawn when it marks itself merged, handed over with its state (every time it is asked), so
 * that its target can tell a state it merged from one it never received. Erased with the data.
 */
const HANDED_OVER_STAMP = "handed-over-stamp";
/**
 * The stamps of the states merged here whose objects have not confirmed their release yet, by key (at most
 * MERGED_MAX, the newest); erased with the data.
 */
const MERGE_TAKEN = "merge-taken";
/**
 * Hand-overs asked for whose answer never came, by key (the value: `claim`), at most MERGED_MAX, the newest; erased
 * with the data. The other object may have marked itself merged into this one and be holding its data for it: every
 * later record asks it again and every erasure reaches it, until an answer comes.
 */
const MERGE_UNANSWERED = "merge-unanswered";

export interface EraseResult {
  /** Keys whose objects were erased (this one first). */
  erased: string[];
  /** False when some object (merged into this one, or further down) did not answer: see `unreached`. */
  complete: boolean;
  /** Keys of objects that belong to the user but could not be erased now; the next erasure calls them again. */
  unreached: string[];
}

/**
 * What `relay` answers: the events' result and the key of the object that recorded them, so every merged object on
 * the way points at it from then on (path compression). With `unfinished` nothing was recorded: the call reached its
 * hop limit at a merged object, and `owner` is where it was to go next.
 */
export interface Relayed extends RecordResult {
  owner: string;
  unfinished?: true;
}

export interface Suppression {
  suppressed: boolean;
  /** Epoch ms the suppression started; null when not suppressed. */
  since: number | null;
}

export class SessionState extends DurableObject<Env> {
  /**
   * The object's time source (epoch ms). Tests replace it through `runInDurableObject` to drive session gaps,
   * decay and expiry; nothing else should. (Instance fields are not part of the RPC surface.)
   */
  clock: () => number = () => Date.now();
  /** Where the outbox goes; tests point it at a closed port to inject a Redis outage. */
  redisSettings: () => RedisSettings | undefined = () => this.#configuredRedis();

  readonly #store: SessionStore;
  /** Bumped by every erase: work that awaited across one must not touch the new, empty state. */
  #epoch = 0;
  /** Merges of another object into this one in flight (`#stitch`): while any is, `handOver` answers `busy`. */
  #absorbing = 0;
  /** `record` and `relay` calls in flight: while any is, the user is active and the alarm does not expire the object. */
  #recording = 0;
  #flushing: Promise<void> | null = null;
  /** The alarm time as last read or set (null: none); undefined until read in this activation. */
  #alarmAt: number | null | undefined = undefined;
  #warnedNoRedis = false;
  /** The suppression flag's value in storage (epoch ms or null); undefined until read in this activation. */
  #suppressed: number | null | undefined = undefined;
  /** MERGE_UNANSWERED as stored (undefined: not read since the activation or the last change). */
  #unansweredKeys: Record<string, boolean> | undefined = undefined;
  /**
   * The lean snapshot's time-independent parts, kept in memory between writes: the ranking path reads a visitor on
   * every page, and this saves its SQL reads. Dropped by every method that can change the state (#mutating).
   */
  #lean: LeanModel | null = null;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.#store = new SessionStore(ctx.storage.sql);
    // Migrates an existing database; a never-written object stays without tables, so that reading a visitor
    // that never sent an event (the ranking path does it on every page) leaves nothing behind in storage.
    void ctx.blockConcurrencyWhile(async () => this.#store.openExisting());
  }

  /** Liveness probe for GET /health: one round trip into an object, touching no storage. */
  async ping(): Promise<{ ok: true }> {
    return { ok: true };
  }

  /**
   * The collect benchmark's second floor (POST /__bench/collect-floor?write=1): the events it is given stored in one
   * durable write, the least that a design acknowledging only what the user's object has stored must do. Refused
   * unless the bench routes are on (BENCH_ROUTES, src/bench/routes.ts).
   */
  async benchWrite(events: unknown[]): Promise<{ stored: number }> {
    if (this.env.BENCH_ROUTES !== "true") throw new Error("benchWrite: the bench routes are off");
    await this.ctx.storage.put("bench:events", events);
    return { stored: events.length };
  }

  /**
   * Records one user's events of an incoming batch (call it once per distinct `userKey(event)` per batch).
   * Durable when it returns. Throws on a bad key, on a key that does not match this object, and with
   * `OutboxFullError` when Redis has been unreachable so long that the outbox is full (retry later). `attempt`: the
   * hand-off's token, the same on its retry; ids a call under it stored count as accepted again (RecordOptions).
   */
  async record(userKey: string, events: CollectedEvent[], options?: RecordOptions): Promise<RecordResult> {
    const attempt = attemptOf(options?.attempt);
    const {
      owner: _owner,
      unfinished: _unfinished,
      ...result
    } = await this.#mutating(() => this.#record(userKey, events, 0, false, attempt));
    return result;
  }

  /**
   * Internal: `record` forwarded from an object that was merged into this one, `hops` objects down the chain. With
   * `resumable` (callers that understand `unfinished`) an object that would forward past FORWARD_MAX_HOPS answers
   * `unfinished` instead of failing, and the first object of the chain relays again from there. `attempt`: the
   * record's hand-off token (absent from an object of an older version: the events are recorded without one).
   */
  async relay(
    userKey: string,
    events: CollectedEvent[],
    hops: number,
    resumable = false,
    attempt?: string,
  ): Promise<Relayed> {
    const token = attemptOf(attempt);
    return this.#mutating(() => this.#record(userKey, events, hops, resumable === true, token));
  }

  /** Runs a method that may change the state: the in-memory read model is dropped before and after it. */
  async #mutating<T>(fn: () => Promise<T>): Promise<T> {
    this.#lean = null;
    try {
      return await fn();
    } finally {
      this.#lean = null;
    }
  }

  /**
   * Internal (identity merge): hands this object's state to `intoKey` and marks this object as merged into it;
   * from then on `record` here forwards to `intoKey`. Repeatable: the same caller gets the same state again until
   * it confirms with `release`. With `claim`, a never-seen object is marked as merged too. `via`: a key merged into
   * `intoKey`; an object merged into it answers `intoKey` as its target, and points at it from then on.
   */
  async handOver(fromKey: string, intoKey: string, claim: boolean, via?: string): Promise<HandOver> {
    return this.#mutating(() => this.#handOver(fromKey, intoKey, claim, via));
  }

  async #handOver(fromKey: string, intoKey: string, claim: boolean, via: string | undefined): Promise<HandOver> {
    assertKey(fromKey);
    assertKey(intoKey);
    if (via !== undefined) assertKey(via);
    if (fromKey === intoKey) return { status: "refused" };
    if (this.#absorbing > 0) return { status: "busy" };
    const now = this.clock();
    const profile = this.#store.profile();
    if (!profile) {
      if (!claim) return { status: "empty" };
      this.ctx.storage.transactionSync(() => {
        this.#store.ensureSchema();
        this.#store.saveProfile({ ...newProfile(fromKey, now), mergedInto: intoKey, released: true });
      });
      await this.#schedule(false);
      return { status: "empty" };
    }
    this.#assertOwnKey(profile.userKey, fromKey);
    if (profile.mergedInto) {
      if (profile.mergedInto !== intoKey && profile.mergedInto !== via)
        return { status: "elsewhere", mergedInto: profile.mergedInto };
      // Our target asking again (a retried merge, or a refresh: the id is in use there) keeps the pointer alive. So
      // does the owner of our target, which becomes our target (path compression, as in #forward).
      const current = { ...profile, mergedInto: intoKey, lastActiveAt: now };
      this.#store.saveProfile(current);
      if (profile.released) return { status: "released" };
      return { ...this.#handedOver(current, this.ctx.storage.kv.get<string>(HANDED_OVER_STAMP)), again: true };
    }
    const status = this.#store.mergedStatus(intoKey);
    if (status === "merged" || status === "claimed") return { status: "refused" };
    const merged = { ...profile, mergedInto: intoKey, lastActiveAt: now };
    const stamp = crypto.randomUUID();
    this.#store.saveProfile(merged);
    this.ctx.storage.kv.put(HANDED_OVER_STAMP, stamp);
    return this.#handedOver(merged, stamp);
  }

  /**
   * This object's state as handed over, with its merges still open (MERGE_UNANSWERED, MERGE_TAKEN): this object
   * records nothing more, so its target takes them over (#takeOver).
   */
  #handedOver(profile: Profile, stamp: string | undefined): HandedOver {
    return {
      status: "handed-over",
      state: this.#store.exportState(profile),
      stamp,
      unanswered: this.#unanswered(),
      taken: this.#taken(),
    };
  }

  /** Internal (identity merge): `intoKey` has merged our state; drop our copy (the outbox still drains). */
  async release(intoKey: string): Promise<{ released: boolean }> {
    this.#lean = null;
    const profile = this.#store.profile();
    if (!profile || profile.mergedInto !== intoKey || profile.released) return { released: false };
    this.ctx.storage.transactionSync(() => {
      this.#store.releaseData();
      this.#store.saveProfile({ ...profile, released: true, session: null });
    });
    return { released: true };
  }

  /**
   * The user's state for ranking. Strictly read-only: no storage write, no alarm, even for a never-seen user.
   * `lean` (the ranking path) leaves out what ranking does not use: `interactions`, `mergedKeys` and the outbox
   * figures come back empty, and `anonymousIds` holds only the first anonymous id merged in (an experiment's
   * assignment unit: docs/experiments.md#serving).
   */
  async snapshot(userKey?: string, options: { lean?: boolean } = {}): Promise<SessionSnapshot> {
    const snapshot = this.#readSnapshot(userKey, options);
    // A suppressed visitor's answers record nothing, exposures included (docs/privacy.md#suppression).
    return this.#suppressedSince() === null ? snapshot : { ...snapshot, suppressed: true };
  }

  #readSnapshot(userKey: string | undefined, options: { lean?: boolean }): SessionSnapshot {
    const now = this.clock();
    if (options.lean === true && this.#lean) {
      if (userKey !== undefined) this.#assertOwnKey(this.#lean.base.userKey, userKey);
      return leanSnapshot(this.#lean, now);
    }
    const profile = this.#store.profile();
    if (!profile) return emptySnapshot(userKey ?? "", now);
    if (userKey !== undefined) this.#assertOwnKey(profile.userKey, userKey);
    const store = this.#store;
    const recent = (kind: (typeof RECENT_KINDS)[number]) => store.recent(kind, RECENT_MAX[kind]);
    const lean = options.lean === true;
    if (lean) {
      this.#lean = {
        base: {
          exists: true,
          userKey: profile.userKey,
          userId: profile.userId,
          anonymousIds: ((first) => (first ? [first] : []))(store.firstMergedAnonymousId()),
          mergedKeys: [],
          mergedInto: profile.mergedInto,
          createdAt: profile.createdAt,
          lastEventAt: profile.lastEventAt,
          interactions: [],
          viewed: recent("viewed"),
          carted: recent("carted"),
          purchased: recent("purchased"),
          wishlisted: recent("wishlisted"),
          searches: recent("search"),
          outbox: { pending: 0, oldestAt: null },
          counters: { events: profile.events, duplicates: profile.duplicates },
        },
        session: profile.session,
        sessionAffinities: store.topAffinityRows("session", SNAPSHOT_AFFINITIES),
        longTermAffinities: store.topAffinityRows("longTerm", SNAPSHOT_AFFINITIES),
      };
      return leanSnapshot(this.#lean, now);
    }
    const mergedKeys = store.mergedKeys(SNAPSHOT_MERGED);
    return {
      exists: true,
      userKey: profile.userKey,
      userId: profile.userId,
      anonymousIds: mergedKeys.filter((k) => k.startsWith("a:")).map((k) => k.slice(2)),
      mergedKeys,
      mergedInto: profile.mergedInto,
      asOf: now,
      createdAt: profile.createdAt,
      lastEventAt: profile.lastEventAt,
      session: profile.session ? { ...profile.session, active: isActive(profile.session, now) } : null,
      interactions: store.interactions(SNAPSHOT_INTERACTIONS).map(({ tokens: _tokens, ...i }) => i),
      viewed: recent("viewed"),
      carted: recent("carted"),
      purchased: recent("purchased"),
      wishlisted: recent("wishlisted"),
      searches: recent("search"),
      affinities: {
        session:
          profile.session && isActive(profile.session, now)
            ? store.topAffinities("session", SNAPSHOT_AFFINITIES, now)
            : [],
        longTerm: store.topAffinities("longTerm", SNAPSHOT_AFFINITIES, now),
      },
      outbox: store.outboxStats(),
      counters: { events: profile.events, duplicates: profile.duplicates },
    };
  }

  /** Erases everything this object holds, and (best effort) the objects merged into it. */
  async delete(): Promise<{ deleted: true }> {
    await this.erase({ suppress: false });
    return { deleted: true };
  }

  /**
   * Erasure (docs/privacy.md): everything this object holds goes, outbox included, and so do the objects merged
   * into it (each erased the same way). With `suppress`, the object then keeps only a flag: every later `record`
   * answers its events as `suppressed` without storing them, and anonymous ids such events name are erased and
   * suppressed too. Returns the keys erased (this one first), and those that did not answer: they stay recorded
   * here (outside the erased data) and every later erasure calls them again until they do.
   */
  async erase(options: { suppress: boolean }): Promise<EraseResult> {
    return this.#mutating(() => this.#eraseAll(options.suppress === true));
  }

  async #eraseAll(suppress: boolean): Promise<EraseResult> {
    const profile = this.#store.profile();
    const self = profile?.userKey;
    // Read before our storage goes.
    const merged = this.#ownedKeys().filter((key) => key !== self);
    // Remembered before anything is deleted (#erase keeps the list): if a call below fails, or this object is
    // interrupted, the next erasure still knows whom to call.
    this.#setErasePending(merged);
    await this.#erase();
    if (suppress && this.#suppressedSince() === null) this.#setSuppressed(this.clock());
    const results = await Promise.allSettled(
      merged.map((key) => this.env.SESSION_STATE.getByName(key).erase({ suppress })),
    );
    const erased = self ? [self] : [];
    const unreached: string[] = [];
    let complete = true;
    results.forEach((r, i) => {
      if (r.status === "fulfilled") {
        erased.push(...r.value.erased);
        unreached.push(...(r.value.unreached ?? []));
        complete &&= r.value.complete;
      } else {
        unreached.push(merged[i] as string);
        complete = false;
      }
    });
    // An object that answered but left some of its own merged objects unreached is called again next time too.
    this.#setErasePending(
      merged.filter((_, i) => {
        const r = results[i];
        return r?.status !== "fulfilled" || !r.value.complete;
      }),
    );
    if (!complete) {
      log("warn", "session erase: some merged objects were not erased", {
        merged: merged.length,
        unreached: unreached.length,
      });
    }
    return { erased, complete, unreached: [...new Set(unreached)] };
  }

  #setErasePending(keys: readonly string[]): void {
    if (keys.length === 0) this.ctx.storage.kv.delete(ERASE_PENDING);
    else this.ctx.storage.kv.put(ERASE_PENDING, keys.slice(-ERASE_PENDING_MAX));
  }

  /**
   * Every other key of this user the object knows of, for the suppression routes (docs/privacy.md#suppression): those
   * an erasure calls (#ownedKeys) and the devices it erased and suppressed while suppressed. Read-only.
   */
  async linkedKeys(): Promise<string[]> {
    const chased = this.ctx.storage.kv.get<string[]>(SUPPRESSED_CHASED) ?? [];
    return [...new Set([...this.#ownedKeys(), ...chased])];
  }

  /**
   * The keys an erasure of this object calls: every object merged into it, those asked for a hand-over that never
   * answered, and those an earlier erasure could not reach.
   */
  #ownedKeys(): string[] {
    const merged = this.#store.profile() ? this.#store.mergedKeys(Number.MAX_SAFE_INTEGER) : [];
    const unanswered = Object.keys(this.#unanswered());
    const pending = this.ctx.storage.kv.get<string[]>(ERASE_PENDING) ?? [];
    return [...new Set([...merged, ...unanswered, ...pending])];
  }

  /** Suppression without erasure: the data stays (and expires as usual), later events are answered, not stored. */
  async suppress(): Promise<Suppression> {
    this.#lean = null;
    if (this.#suppressedSince() === null) this.#setSuppressed(this.clock());
    return this.suppression();
  }

  /** Lifts a suppression: later events are recorded again (the erased data does not come back). */
  async unsuppress(): Promise<Suppression> {
    this.#setSuppressed(null);
    this.ctx.storage.kv.delete(SUPPRESSED_CHASED);
    return { suppressed: false, since: null };
  }

  /** Whether this object refuses events (a suppressed user), and since when. */
  async suppression(): Promise<Suppression> {
    const since = this.#suppressedSince();
    return { suppressed: since !== null, since };
  }

  /** Read once per activation (every `record` asks), then kept in step by #setSuppressed. */
  #suppressedSince(): number | null {
    if (this.#suppressed === undefined) {
      const since = this.ctx.storage.kv.get<number>(SUPPRESSED_SINCE);
      this.#suppressed = typeof since === "number" ? since : null;
    }
    return this.#suppressed;
  }

  #setSuppressed(since: number | null): void {
    if (since === null) this.ctx.storage.kv.delete(SUPPRESSED_SINCE);
    else this.ctx.storage.kv.put(SUPPRESSED_SINCE, since);
    this.#suppressed = since;
  }

  /**
   * A suppressed user's events: nothing is stored. An anonymous id they carry (login, alias) is the same person's
   * device: its object is erased and suppressed once, so its pre-login history goes too and it records nothing more.
   */
  async #suppress(userKey: string, events: CollectedEvent[]): Promise<RecordResult> {
    const chased = new Set(this.ctx.storage.kv.get<string[]>(SUPPRESSED_CHASED) ?? []);
    const targets = stitchTargets(userKey, events).filter((t) => t.claim && !chased.has(t.key));
    if (targets.length > 0) {
      const results = await Promise.allSettled(
        targets.map((t) => this.env.SESSION_STATE.getByName(t.key).erase({ suppress: true })),
      );
      targets.forEach((t, i) => {
        if (results[i]?.status === "fulfilled") chased.add(t.key);
      });
      if (results.some((r) => r.status === "rejected")) {
        log("warn", "suppressed user: an anonymous object was not erased; retried with its next event", {});
      }
      this.ctx.storage.kv.put(SUPPRESSED_CHASED, [...chased].slice(-SUPPRESSED_CHASED_MAX));
    }
    return { accepted: 0, duplicates: 0, suppressed: events.length };
  }

  /** The one alarm: outbox retry, pruning of the dedupe window, expiry. Idempotent (alarms are at-least-once). */
  override async alarm(): Promise<void> {
    return this.#mutating(() => this.#alarm());
  }

  async #alarm(): Promise<void> {
    // The alarm that fired is spent; `#schedule(true)` below sets the next one.
    this.#alarmAt = null;
    const profile = this.#store.profile();
    if (!profile) return;
    // After a failed flush the rows wait for their retry time: an alarm that runs before it (the active beat, the seen
    // ids' prune) leaves them, or the backoff would not hold while the user is active.
    const retryAt = profile.outboxRetryAt;
    if (this.#store.outboxStats().pending > 0 && (retryAt === null || retryAt <= this.clock())) await this.#flush();
    const now = this.clock();
    const latest = this.#store.profile();
    if (!latest) return;
    const expired = isExpired(latest.lastActiveAt, this.#store.outboxStats().pending, now);
    if (expired && this.#recording === 0) {
      await this.#erase();
      return;
    }
    this.ctx.storage.transactionSync(() => this.#store.pruneSeen(now - SEEN_WINDOW_MS));
    if (expired) {
      // A record is in flight (awaiting a hand-over, say a login's): the user is active right now, and erasing under
      // it would drop the state it is merging in. Its write moves the expiry; look again one beat later (not at the
      // past expiry time, which would run the alarm again at once for as long as the record waits).
      const at = now + OUTBOX_FLUSH_DELAY_MS;
      await this.ctx.storage.setAlarm(at);
      this.#alarmAt = at;
      return;
    }
    await this.#schedule(true);
  }

  // ---- record -------------------------------------------------------------------------------------------------

  async #record(
    userKey: string,
    events: CollectedEvent[],
    hops: number,
    resumable: boolean,
    attempt: string | null,
  ): Promise<Relayed> {
    this.#recording++;
    try {
      const result = await this.#recordEvents(userKey, events, hops, resumable, attempt);
      return "owner" in result ? result : { ...result, owner: userKey };
    } finally {
      this.#recording--;
    }
  }

  async #recordEvents(
    userKey: string,
    events: CollectedEvent[],
    hops: number,
    resumable: boolean,
    attempt: string | null,
  ): Promise<RecordResult | Relayed> {
    assertKey(userKey);
    if (!Array.isArray(events)) throw new TypeError("record: events must be an array");
    for (const e of events) {
      if (typeof e?.messageId !== "string" || e.messageId === "")
        throw new TypeError("record: every event needs a messageId");
    }
    const existing = this.#store.profile();
    if (existing) this.#assertOwnKey(existing.userKey, userKey);
    if (events.length === 0) return { accepted: 0, duplicates: 0 };
    if (this.#suppressedSince() !== null) return this.#suppress(userKey, events);
    if (existing?.mergedInto) return this.#forward(existing.mergedInto, events, hops, resumable, attempt);

    // Every hand-over of this call belongs to the state as it was now: an erasure meanwhile ends them (#absorb).
    const epoch = this.#epoch;
    const asOf = this.clock();
    const targets = this.#askTargets(userKey, events).filter((target) => this.#shouldAsk(target.key, asOf));
    // A call either applies entirely or not at all: a full outbox refuses it before any merge is applied.
    if (targets.length > 0) assertOutboxRoom(this.#store, events.length);
    let stitched = false;
    for (const target of targets) {
      // Another call may have merged (or refreshed) it while we awaited an earlier one.
      if (!this.#shouldAsk(target.key, asOf)) continue;
      await this.#stitch(userKey, target.key, target.claim, epoch);
      stitched = true;
    }
    // While we awaited a hand-over, the user may have been erased and suppressed: nothing of theirs may be stored.
    if (stitched && this.#suppressedSince() !== null) return this.#suppress(userKey, events);
    // A merge of *this* object into another may have happened while we awaited.
    const current = stitched ? this.#store.profile() : existing;
    if (current?.mergedInto) return this.#forward(current.mergedInto, events, hops, resumable, attempt);

    const now = this.clock();
    const applied = this.ctx.storage.transactionSync(() => {
      try {
        return applyEvents(this.#store, userKey, events, {
          now,
          newSessionId: () => crypto.randomUUID(),
          profile: current,
          // Checked before the merge: refusing the events now would leave the merge applied without them.
          outboxChecked: stitched,
          attempt,
        });
      } catch (error) {
        this.#store.invalidateCounts();
        throw error;
      }
    });
    // The alarm drains the outbox shortly after (OUTBOX_FLUSH_DELAY_MS), or at the retry time after a failure.
    if (applied.newEvents > 0) await this.#schedule(false, applied);
    return applied.result;
  }

  /**
   * Sends the events of a merged object to its target (`relay`), `hops` objects down the chain so far. The answer
   * names the object that recorded them, and this object points at it from then on (path compression, as in
   * union-find): a chain of merges (a visitor merged into a user, that user aliased into another, …) shortens with
   * use. A call that reaches FORWARD_MAX_HOPS at a merged object is resumed by the first object of the chain from
   * where it stopped, at most FORWARD_MAX_ROUNDS times. A cycle (corruption: an object that is merged absorbs
   * nothing) fails the call: an answer naming this object as the owner means the chain came back here.
   */
  async #forward(
    target: string,
    events: CollectedEvent[],
    hops: number,
    resumable: boolean,
    attempt: string | null,
  ): Promise<Relayed> {
    if (hops >= FORWARD_MAX_HOPS) {
      if (resumable) return { accepted: 0, duplicates: 0, owner: target, unfinished: true };
      throw forwardingLoop();
    }
    const profile = this.#store.profile();
    const self = profile?.userKey;
    if (profile) {
      // Forwarding keeps the pointer alive: expiry counts from the last event under this key too.
      this.#store.saveProfile({ ...profile, lastActiveAt: this.clock() });
      await this.#schedule(false);
    }
    let next = target;
    const reached = new Set<string>();
    for (let round = 1; ; round++) {
      reached.add(next);
      const result = await this.env.SESSION_STATE.getByName(next).relay(
        next,
        events,
        hops + 1,
        true,
        attempt ?? undefined,
      );
      // An object of an older version answers no owner: it recorded or forwarded the events itself.
      const owner = typeof result.owner === "string" ? result.owner : next;
      if (owner === self) throw forwardingLoop();
      this.#repoint(next, owner);
      if (result.unfinished !== true) return { ...result, owner };
      // Only the first object of the chain resumes; the others pass `unfinished` back to it.
      if (hops > 0) return { accepted: 0, duplicates: 0, owner, unfinished: true };
      if (round >= FORWARD_MAX_ROUNDS || reached.has(owner)) throw forwardingLoop();
      next = owner;
    }
  }

  /** Points this merged object at `owner`, found down its chain, if it still points at `via` (path compression). */
  #repoint(via: string, owner: string): void {
    if (owner === via) return;
    const profile = this.#store.profile();
    if (!profile || profile.mergedInto !== via || owner === profile.userKey) return;
    this.#store.saveProfile({ ...profile, mergedInto: owner });
  }

  // ---- identity merge -----------------------------------------------------------------------------------------

  /** The keys the events name (identity.ts), then those asked before that never answered (MERGE_UNANSWERED). */
  #askTargets(userKey: string, events: CollectedEvent[]): StitchTarget[] {
    const named = stitchTargets(userKey, events);
    const unanswered = Object.entries(this.#unanswered())
      .filter(([key]) => !named.some((target) => target.key === key))
      .map(([key, claim]) => ({ key, claim }));
    return [...named, ...unanswered];
  }

  async #stitch(selfKey: string, otherKey: string, claim: boolean, epoch: number): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      this.#absorbing++;
      let busy: boolean;
      try {
        busy = await this.#absorb(selfKey, otherKey, claim, epoch);
      } finally {
        this.#absorbing--;
      }
      if (!busy || attempt >= MERGE_BUSY_ATTEMPTS || this.#store.profile()?.mergedInto) return;
      // Two objects asking each other at once both hear `busy`. The one whose key sorts first asks again sooner, while
      // the other is waiting and not asking, so it gets through (a random wait would not do: workerd's timers are
      // coarse enough that two of them often fire together).
      const wait = selfKey < otherKey ? MERGE_BUSY_WAIT_MS : MERGE_BUSY_WAIT_MS * MERGE_BUSY_WAIT_RATIO;
      await new Promise((resolve) => setTimeout(resolve, wait));
    }
  }

  /**
   * One hand-over of `otherKey` into this object, applied; true when the other object answered `busy`. `epoch` is the
   * record's, read before its first hand-over.
   */
  async #absorb(selfKey: string, otherKey: string, claim: boolean, epoch: number): Promise<boolean> {
    // Merged away while waiting to ask again after `busy`: asking now would mark the other object merged into us, and
    // we could only drop what it hands over. The call is forwarded to our target, which stitches the id itself.
    if (this.#store.profile()?.mergedInto) return false;
    // Erased or suppressed since the record began: it asks for nothing more (the erasure did not know of this object,
    // and the emptied or suppressed state must not take its data).
    if (epoch !== this.#epoch || this.#suppressedSince() !== null) return false;
    // A key merged in before is asked again only to refresh it (#shouldAsk); remember what we knew when asking.
    const known = this.#store.hasSchema() ? this.#store.mergedRow(otherKey) : null;
    const refreshedBefore = this.#mergeRefreshed()[otherKey] ?? null;
    const other = this.env.SESSION_STATE.getByName(otherKey);
    this.#setEntry(MERGE_UNANSWERED, otherKey, claim);
    let answer: HandOver;
    try {
      answer = await other.handOver(otherKey, selfKey, claim);
      // Merged into a user merged here since (a hand-over that user asked for, its answer lost, taken over by #takeOver;
      // or a pointer not shortened yet): the object is ours, and asked again as the owner of that key.
      if (answer.status === "elsewhere" && this.#hasMerged(answer.mergedInto))
        answer = await other.handOver(otherKey, selfKey, claim, answer.mergedInto);
    } catch (error) {
      // Not fatal: the events are still recorded, and the next record of this user asks again (MERGE_UNANSWERED).
      log("warn", "session merge: hand-over failed", { into: selfKey, from: otherKey, error: describeError(error) });
      return false;
    }
    this.#setEntry(MERGE_UNANSWERED, otherKey, undefined);
    if (answer.status === "busy") return true;
    if (epoch !== this.#epoch) {
      // Erased while we awaited the hand-over. The other object has marked itself merged into us and kept its data
      // for us to take: that data is this user's (the event links the two), and the erasure did not know of it.
      if (answer.status === "handed-over") await this.#eraseHandedOver(otherKey);
      return false;
    }
    const now = this.clock();
    const applied = this.ctx.storage.transactionSync((): boolean | "release" => {
      const store = this.#store;
      store.ensureSchema();
      const profile = store.profile() ?? newProfile(selfKey, now);
      if (profile.mergedInto) return false;
      const row = store.mergedRow(otherKey);
      if (known === null) {
        // Another call merged it while we awaited.
        if (row !== null) return false;
      } else {
        // A refresh: applied once (another call may have refreshed it while we awaited).
        if (row === null || (this.#mergeRefreshed()[otherKey] ?? null) !== refreshedBefore) return false;
        this.#setMergeRefreshed(otherKey, now);
        if (answer.status !== "handed-over") return false;
        // A state merged here before (its stamp says so): only its release was lost. Any other state was never merged
        // here, even when handed over before: the reply carrying it was lost, or is still on its way to another call.
        // (An object marked merged before stamps existed answers none, and nothing is taken under its key.)
        if (answer.again === true && answer.stamp === this.#taken()[otherKey]) return "release";
      }
      switch (answer.status) {
        case "handed-over": {
          const result = mergeStates(store.exportState(profile, false), answer.state, (id) => store.isSeen(id), now);
          store.replaceData(result);
          store.markSeen(result.seen);
          // A key merged again (its pointer had expired, and the id recorded anew) keeps its first merge time.
          for (const merged of result.merged)
            store.putMerged(merged.key === row?.key ? { ...merged, at: row.at } : merged);
          store.saveProfile({
            ...profile,
            createdAt: result.createdAt,
            lastEventAt: result.lastEventAt,
            lastActiveAt: now,
            session: result.session,
            events: result.events,
            duplicates: result.duplicates,
          });
          store.compact();
          if (answer.stamp !== undefined) this.#setEntry(MERGE_TAKEN, otherKey, answer.stamp);
          this.#takeOver(selfKey, answer);
          return true;
        }
        case "empty":
          if (claim) store.putMerged({ key: otherKey, status: "claimed", at: now });
          else if (!store.profile()) return false;
          break;
        case "released":
          store.putMerged({ key: otherKey, status: "merged", at: now });
          break;
        case "elsewhere":
          store.putMerged({ key: otherKey, status: "elsewhere", at: now });
          break;
        case "refused":
          store.putMerged({ key: otherKey, status: "refused", at: now });
          break;
      }
      if (!store.profile()) store.saveProfile(profile);
      return false;
    });
    if (applied) {
      if (applied === true) log("info", "session merge", { into: selfKey, from: otherKey });
      const stamp = answer.status === "handed-over" ? answer.stamp : undefined;
      this.ctx.waitUntil(
        other.release(selfKey).then(
          () => this.#untake(otherKey, stamp),
          (error: unknown) =>
            log("warn", "session merge: release failed", { from: otherKey, error: describeError(error) }),
        ),
      );
      await this.#schedule(false);
    }
    return false;
  }

  /**
   * Whether to ask `key` for a hand-over: never asked, or merged in (or claimed) at least MERGE_REFRESH_MS ago and
   * not asked again for as long. The refresh keeps the key's pointer alive while the id is in use here, and merges
   * what it recorded if the pointer expired all the same (the id unused for EXPIRY_MS, then back as a visitor).
   */
  #shouldAsk(key: string, now: number): boolean {
    if (!this.#store.hasSchema()) return true;
    const row = this.#store.mergedRow(key);
    if (row === null) return true;
    if (row.status !== "merged" && row.status !== "claimed") return false;
    if (now - row.at < MERGE_REFRESH_MS) return false;
    const refreshed = this.#mergeRefreshed()[key];
    return refreshed === undefined || now - refreshed >= MERGE_REFRESH_MS;
  }

  #mergeRefreshed(): Record<string, number> {
    return this.ctx.storage.kv.get<Record<string, number>>(MERGE_REFRESHED) ?? {};
  }

  #setMergeRefreshed(key: string, now: number): void {
    const kept = Object.entries({ ...this.#mergeRefreshed(), [key]: now })
      .filter(([, at]) => now - at < MERGE_REFRESH_MS)
      .sort((x, y) => x[1] - y[1])
      .slice(-MERGED_MAX);
    this.ctx.storage.kv.put(MERGE_REFRESHED, Object.fromEntries(kept));
  }

  #hasMerged(key: string): boolean {
    return this.#store.hasSchema() && this.#store.mergedStatus(key) === "merged";
  }

  /**
   * Takes over the merges a merged object left open: the stamps it took (so a refresh here does not merge those states
   * twice), and its unanswered hand-overs, except those of keys this object has an answer of its own for (asked by the
   * next record here, whatever its events name). Called in the merge's transaction, after its merged keys are stored.
   */
  #takeOver(selfKey: string, answer: HandedOver): void {
    const unanswered = Object.entries(answer.unanswered ?? {}).filter(
      ([key]) => key !== selfKey && this.#store.mergedRow(key) === null,
    );
    const taken = Object.entries(answer.taken ?? {});
    // Ours last (the bound keeps the last ones), and over theirs.
    if (unanswered.length > 0)
      this.#putEntries(MERGE_UNANSWERED, { ...Object.fromEntries(unanswered), ...this.#unanswered() });
    if (taken.length > 0) this.#putEntries(MERGE_TAKEN, { ...Object.fromEntries(taken), ...this.#taken() });
  }

  /** Read once per activation and after each change: every record asks for it. */
  #unanswered(): Record<string, boolean> {
    this.#unansweredKeys ??= this.ctx.storage.kv.get<Record<string, boolean>>(MERGE_UNANSWERED) ?? {};
    return this.#unansweredKeys;
  }

  #taken(): Record<string, string> {
    return this.ctx.storage.kv.get<Record<string, string>>(MERGE_TAKEN) ?? {};
  }

  /** The object under `key` confirmed its release: its stamp, if still the one taken, is no longer needed. */
  #untake(key: string, stamp: string | undefined): void {
    if (stamp !== undefined && this.#taken()[key] === stamp) this.#setEntry(MERGE_TAKEN, key, undefined);
  }

  /**
   * Sets `key` in the map kept under `name` in the synchronous KV storage, or removes it (`undefined`; no write when
   * it is not there, so an erased object stays empty). The map keeps the MERGED_MAX newest entries.
   */
  #setEntry(name: string, key: string, value: string | boolean | undefined): void {
    const { [key]: old, ...others } = this.ctx.storage.kv.get<Record<string, string | boolean>>(name) ?? {};
    if (value === undefined && old === undefined) return;
    this.#putEntries(name, value === undefined ? others : { ...others, [key]: value });
  }

  /** Stores `entries` as the map under `name`: the MERGED_MAX last ones (the newest); none deletes the map. */
  #putEntries(name: string, entries: Record<string, string | boolean>): void {
    const kept = Object.entries(entries).slice(-MERGED_MAX);
    if (kept.length === 0) this.ctx.storage.kv.delete(name);
    else this.ctx.storage.kv.put(name, Object.fromEntries(kept));
    if (name === MERGE_UNANSWERED) this.#unansweredKeys = undefined;
  }

  /** A hand-over that an erasure overtook: the other object is erased too (and suppressed if this one now is). */
  async #eraseHandedOver(otherKey: string): Promise<void> {
    const suppress = this.#suppressedSince() !== null;
    try {
      await this.env.SESSION_STATE.getByName(otherKey).erase({ suppress });
    } catch (error) {
      // Left for the next erasure of this user, which calls it again.
      const pending = this.ctx.storage.kv.get<string[]>(ERASE_PENDING) ?? [];
      this.#setErasePending([...pending.filter((key) => key !== otherKey), otherKey]);
      log("error", "session merge: an object handed over during an erasure could not be erased", {
        from: otherKey,
        error: describeError(error),
      });
      return;
    }
    log("info", "session merge: handed-over object erased (an erasure landed during the hand-over)", {
      from: otherKey,
    });
  }

  // ---- outbox -------------------------------------------------------------------------------------------------

  /** Drains the outbox to Redis; single-flight (a flush in progress picks up rows added meanwhile). */
  #flush(): Promise<void> {
    if (!this.#flushing) {
      this.#flushing = this.#drain().finally(() => {
        this.#flushing = null;
      });
    }
    return this.#flushing;
  }

  async #drain(): Promise<void> {
    for (let round = 0; round < FLUSH_MAX_ROUNDS; round++) {
      if (!this.#store.hasSchema()) return;
      const epoch = this.#epoch;
      const rows = this.#store.outboxBatch(FLUSH_MAX_EVENTS, FLUSH_MAX_BYTES);
      const last = rows.at(-1);
      if (!last) {
        this.#flushSucceeded();
        // Drained: move the outbox safety alarm out of the way (saves an empty alarm invocation).
        if (round > 0) await this.#schedule(true);
        return;
      }
      const settings = this.redisSettings();
      if (!settings) {
        if (!this.#warnedNoRedis) log("warn", "session outbox: Redis is not configured; events stay in the outbox");
        this.#warnedNoRedis = true;
        await this.#flushFailed("redis not configured", epoch);
        return;
      }
      try {
        await withRedisDeadline(settings, FLUSH_TIMEOUT_MS, (redis) => pushToStream(redis, rows, this.clock()));
      } catch (error) {
        await this.#flushFailed(describeError(error), epoch);
        return;
      }
      // Erased while we waited: the rows we sent no longer exist (and seqs may name new rows).
      if (epoch !== this.#epoch) return;
      this.ctx.storage.transactionSync(() => {
        this.#store.deleteOutboxThrough(last.seq);
        this.#flushSucceeded();
      });
    }
    // More than one flush's worth: let the alarm continue soon.
    await this.#schedule(false);
  }

  #flushSucceeded(): void {
    const profile = this.#store.profile();
    if (profile && (profile.outboxAttempts !== 0 || profile.outboxRetryAt !== null)) {
      this.#store.saveProfile({ ...profile, outboxAttempts: 0, outboxRetryAt: null });
    }
  }

  async #flushFailed(reason: string, epoch: number): Promise<void> {
    if (epoch !== this.#epoch) return;
    const profile = this.#store.profile();
    if (!profile) return;
    const attempts = profile.outboxAttempts + 1;
    const retryAt = this.clock() + backoffMs(attempts, Math.random());
    this.#store.saveProfile({ ...profile, outboxAttempts: attempts, outboxRetryAt: retryAt });
    log("warn", "session outbox: flush failed, will retry", { attempts, retryAt, error: reason });
    await this.#schedule(false);
  }

  #configuredRedis(): RedisSettings | undefined {
    try {
      return loadConfig(this.env).redis;
    } catch (error) {
      if (!this.#warnedNoRedis)
        log("error", "session outbox: bad Redis configuration", { error: describeError(error) });
      this.#warnedNoRedis = true;
      return undefined;
    }
  }

  // ---- alarm & erase ------------------------------------------------------------------------------------------

  /**
   * Keeps the alarm at or before the earliest due duty. Unforced, it only moves the alarm earlier (one `getAlarm`,
   * rarely a write); an alarm that fires early finds nothing due and re-arms itself. `force` sets it exactly.
   */
  /** `known`: the profile and outbox figures a write just left (saves reading them back). */
  async #schedule(force: boolean, known?: Pick<Applied, "profile" | "outbox">): Promise<void> {
    const profile = known ? known.profile : this.#store.profile();
    if (!profile) return;
    const outbox = known ? known.outbox : this.#store.outboxStats();
    const next = nextAlarmAt({
      now: this.clock(),
      lastActiveAt: profile.lastActiveAt,
      oldestSeenAt: this.#store.oldestSeenAt(),
      outboxPending: outbox.pending,
      oldestOutboxAt: outbox.oldestAt,
      outboxRetryAt: profile.outboxRetryAt,
    });
    // The alarm time is remembered in memory (read once per activation): most records find it early enough.
    if (this.#alarmAt === undefined) this.#alarmAt = await this.ctx.storage.getAlarm();
    const current = this.#alarmAt;
    if (force || current === null || next < current) {
      await this.ctx.storage.setAlarm(next);
      this.#alarmAt = next;
    }
  }

  /**
   * Deletes all storage. What keeps the user's wishes survives, none of it data about their behaviour: the
   * suppression flag, the devices chased while suppressed (so lifting the flag reaches them), and the merged objects
   * an erasure has still to reach.
   */
  async #erase(): Promise<void> {
    this.#epoch++;
    const suppressedSince = this.#suppressedSince();
    const kept = [SUPPRESSED_CHASED, ERASE_PENDING].map(
      (key) => [key, this.ctx.storage.kv.get<string[]>(key)] as const,
    );
    await this.ctx.storage.deleteAlarm();
    this.#alarmAt = null;
    await this.ctx.storage.deleteAll();
    this.#store.forget();
    this.#unansweredKeys = undefined;
    if (suppressedSince === null) this.#suppressed = null;
    else this.#setSuppressed(suppressedSince);
    for (const [key, value] of kept) if (value !== undefined && value.length > 0) this.ctx.storage.kv.put(key, value);
  }

  #assertOwnKey(stored: string, given: string): void {
    if (stored !== given) throw new Error(`SessionState: this object belongs to ${stored}, not ${given}`);
  }
}

type HandedOver = Extract<HandOver, { status: "handed-over" }>;

function forwardingLoop(): Error {
  return new Error(
    `record: forwarding loop (the merged objects point at each other, or more than ${FORWARD_MAX_HOPS * FORWARD_MAX_ROUNDS} in a row)`,
  );
}

/** A `record`'s hand-off token as given (RecordOptions.attempt): null when absent; anything but a short string throws. */
function attemptOf(attempt: unknown): string | null {
  if (attempt === undefined || attempt === null) return null;
  if (typeof attempt !== "string" || attempt === "" || attempt.length > ATTEMPT_MAX_CHARS)
    throw new TypeError(`record: an attempt is a string of 1 to ${ATTEMPT_MAX_CHARS} characters`);
  return attempt;
}

function assertKey(key: string): void {
  if (!isUserKey(key)) throw new TypeError("SessionState: a user key is `u:<userId>` or `a:<anonymousId>`");
}

/** What a lean snapshot is made of, minus what depends on the time it is taken at. */
interface LeanModel {
  base: Omit<SessionSnapshot, "asOf" | "session" | "affinities">;
  session: CurrentSession | null;
  sessionAffinities: { token: string; value: number; at: number }[];
  longTermAffinities: { token: string; value: number; at: number }[];
}

/** The lean snapshot at `now`: the session's activity and the affinities' decay are computed for that time. */
function leanSnapshot(model: LeanModel, now: number): SessionSnapshot {
  const active = model.session !== null && isActive(model.session, now);
  return {
    ...model.base,
    asOf: now,
    session: model.session ? { ...model.session, active } : null,
    affinities: {
      session: active ? decayedAffinities("session", model.sessionAffinities, now) : [],
      longTerm: decayedAffinities("longTerm", model.longTermAffinities, now),
    },
  };
}
