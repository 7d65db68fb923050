// Helpers of the history tests (test/workers/history-*.test.ts): a few hundred events of many users sent through the
// real collection API with the history recorder (scripts/lib/history.ts), one fault injected, the pipeline drained
// (the session objects' alarms flush their outboxes to the Redis stream; the loader loads the stream into
// Postgres), then the checker compares the acknowledged messageIds with the Postgres rows, the stream entries and
// the objects' counters.
//
// Test files run in parallel against one Redis and one database, so each run has its own: messageId prefix, Postgres
// schema (publish-helpers.ts), consumer group on the production stream (created at its current end, so the run
// loads only what was appended after it started), loader lease and consumer names.
import { runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { env, exports } from "cloudflare:workers";
import { afterEach, expect } from "vitest";
import {
  check,
  formatVerdict,
  HistoryRecorder,
  type Observation,
  streamMessageIds,
  type Verdict,
} from "../../scripts/lib/history.ts";
import { type Batch, type Post, sendBatch, type WorkloadOptions, workload } from "../../scripts/lib/history-load.ts";
import { LOCAL_KEYS } from "../../scripts/lib/local-keys.ts";
import { createApp } from "../../src/app.ts";
import { type LoaderOptions, type LoadReport, runLoader } from "../../src/batch/loader.ts";
import { eachLimit } from "../../src/concurrency.ts";
import { openDb } from "../../src/publish/db.ts";
import type { SessionState } from "../../src/session/session-state.ts";
import { EVENT_STREAM } from "../../src/session/stream.ts";
import type { Redis, RedisSettings } from "../../src/stores/redis.ts";
import { loaderRedis } from "./batch-helpers.ts";
import { createSchema, dbSettings, dropSchema, type Query } from "./publish-helpers.ts";

export interface HistoryRun {
  prefix: string;
  history: HistoryRecorder;
  batches: Batch[];
  schema: string;
  q: Query;
  group: string;
  consumer: string;
  leaseName: string;
  /** The stream's last entry id when the run began: the run's entries come after it. */
  streamStart: string;
}

/** A run: its workload, its schema and its consumer group. End it with `endRun`. */
export async function beginRun(label: string, options: Omit<WorkloadOptions, "prefix">): Promise<HistoryRun> {
  const id = crypto.randomUUID().slice(0, 8);
  const prefix = `h${label}-${id}`;
  const { schema, q } = await createSchema(`h_${label.replaceAll("-", "_")}`);
  const redis = loaderRedis();
  const last = await redis.exec<unknown>(["XREVRANGE", EVENT_STREAM, "+", "-", "COUNT", 1]);
  const first = Array.isArray(last) ? last[0] : undefined;
  const streamStart = Array.isArray(first) ? String(first[0]) : "0-0";
  const group = `history-${prefix}`;
  await redis.exec(["XGROUP", "CREATE", EVENT_STREAM, group, streamStart, "MKSTREAM"]);
  return {
    prefix,
    history: new HistoryRecorder(),
    batches: workload({ prefix, ...options }),
    schema,
    q,
    group,
    consumer: `c-${id}`,
    leaseName: `loader-${prefix}`,
    streamStart,
  };
}

export async function endRun(run: HistoryRun): Promise<void> {
  await loaderRedis().exec(["XGROUP", "DESTROY", EVENT_STREAM, run.group]);
  await dropSchema(run.schema);
}

/** `beginRun` for a test file: each run it begins is ended after its test. */
export function runsEndedAfterEach(): typeof beginRun {
  const begun: HistoryRun[] = [];
  afterEach(async () => {
    for (const run of begun.splice(0)) await endRun(run);
  });
  return async (label, options) => {
    const run = await beginRun(label, options);
    begun.push(run);
    return run;
  };
}

const authorization = `Basic ${btoa(`${LOCAL_KEYS.writeKey}:`)}`;

/** Posts a batch to the Worker's own entry point (or through `fetcher`, a fault-injecting wrapper of it). */
export function postTo(fetcher: (request: Request) => Promise<Response> = (r) => exports.default.fetch(r)): Post {
  return async (body) => {
    const request = new Request("http://lastmile.test/v1/batch", {
      method: "POST",
      headers: { "content-type": "application/json", authorization },
      body,
    });
    const res = await fetcher(request);
    return { status: res.status, text: await res.text() };
  };
}

/** Posts through the app with another env (e.g. a wrapped SESSION_STATE namespace). */
export const postWithEnv = (testEnv: Env): Post => postTo(async (request) => createApp().request(request, {}, testEnv));

export interface SendOptions {
  concurrency?: number;
  /** Re-sends of a batch whose answer was a 5xx or never came, as Segment's and RudderStack's clients do. */
  retries?: number;
}

/** Sends batches, `concurrency` at a time; returns how many requests did not get a 2xx/4xx answer. */
export async function sendAll(
  run: HistoryRun,
  batches: readonly Batch[],
  post: Post = postTo(),
  options: SendOptions = {},
): Promise<{ requests: number; failed: number }> {
  let requests = 0;
  let failed = 0;
  await eachLimit(batches, options.concurrency ?? 4, async (batch) => {
    for (let attempt = 0; ; attempt++) {
      const result = await sendBatch(post, batch, run.history);
      requests++;
      const answered = result.status !== undefined && result.status < 500;
      if (!answered) failed++;
      if (answered || attempt >= (options.retries ?? 0)) return;
    }
  });
  return { requests, failed };
}

/** The session object keys of a run's sends (events without a user id belong to none). */
export const userKeys = (run: HistoryRun, batches: readonly Batch[] = run.batches) => [
  ...new Set(batches.flatMap((b) => b.sent.map((s) => s.userKey)).filter((k) => k !== "")),
];

export const sessionStub = (key: string) => env.SESSION_STATE.getByName(key);

/** Points each object's outbox at `settings` (a closed port: a Redis outage), or back at the real Redis. */
export async function setRedis(keys: readonly string[], settings: RedisSettings | "real"): Promise<void> {
  const real = { url: env.UPSTASH_REDIS_REST_URL, token: env.UPSTASH_REDIS_REST_TOKEN };
  await eachLimit(keys, 8, async (key) => {
    await runInDurableObject(sessionStub(key), (o: SessionState) => {
      o.redisSettings = () => (settings === "real" ? real : settings);
    });
  });
}

/** A Redis URL where nothing listens. */
export const CLOSED_REDIS: RedisSettings = { url: "http://127.0.0.1:9", token: "nope" };

/**
 * Arms a one-shot abort of an object (`ctx.abort()`: its instance is reset, every write not yet durable is dropped
 * and its callers get an error) at its `nth` SQL statement whose text `matches` from now on: inside a `record`
 * transaction, in the alarm's flush after Redis took the events, wherever that statement runs. `onAbort` is
 * called when it fires. The reset instance comes back without the trap.
 */
export async function armAbort(
  key: string,
  nth: number,
  options: { matches?: (query: string) => boolean; onAbort?: () => void } = {},
): Promise<void> {
  await runInDurableObject(sessionStub(key), (_o: SessionState, state) => {
    const storage = state.storage.sql;
    const exec = storage.exec.bind(storage);
    let seen = 0;
    const trap = (query: string, ...bindings: unknown[]) => {
      if ((options.matches?.(query) ?? true) && ++seen === nth) {
        options.onAbort?.();
        state.abort("injected abort");
      }
      return exec(query, ...bindings);
    };
    Object.assign(storage, { exec: trap });
  });
}

/**
 * Runs each object's alarm until its outbox is empty (the drain the alarm does 30 s after a write, now). The runtime
 * retries an alarm whose handler failed (an injected abort); the test harness has already removed it by then, so
 * after a failed run the handler is run again directly. Rows pending with no alarm and no failure are a bug: that
 * fails the drain once it has lasted `stuckMs`.
 */
export async function flushSessions(keys: readonly string[], timeoutMs = 60_000, stuckMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  await eachLimit(keys, 4, async (key) => {
    let failed = false;
    let noAlarmSince: number | null = null;
    for (;;) {
      // A call that fails (an injected abort resets the object) changes nothing: the loop asks again, on a new stub
      // (a stub whose object was reset stays broken).
      const pending = await sessionStub(key)
        .snapshot(key)
        .then(
          (s) => s.outbox.pending,
          () => -1,
        );
      if (pending === 0) return;
      if (Date.now() > deadline) throw new Error(`the outbox of ${key} still holds ${pending} events`);
      const ran = await runDurableObjectAlarm(sessionStub(key)).then(
        (r) => (r ? "ran" : "none"),
        () => "failed",
      );
      if (ran === "failed") failed = true;
      if (ran !== "none") {
        noAlarmSince = null;
        continue;
      }
      if (failed) {
        failed = await runInDurableObject(sessionStub(key), (o: SessionState) => o.alarm()).then(
          () => false,
          () => true,
        );
        continue;
      }
      noAlarmSince ??= Date.now();
      if (Date.now() - noAlarmSince > stuckMs) throw new Error(`${key}: ${pending} events in the outbox, no alarm`);
      await new Promise((r) => setTimeout(r, 20));
    }
  });
}

/** No pauses between the loader's retries (its policy is unit-tested). */
export const noSleep = async () => {};

/**
 * One loader run of the run's group into its schema. `databaseUrl` replaces the database (a dead one: an outage),
 * `redis` the loader's Redis client (a fault-injecting wrapper).
 */
export async function load(
  run: HistoryRun,
  options: LoaderOptions & { databaseUrl?: string; redis?: Redis } = {},
): Promise<LoadReport> {
  const { databaseUrl, redis, ...loader } = options;
  const { db, end } = openDb({ ...dbSettings(), ...(databaseUrl ? { databaseUrl } : {}) }, run.schema);
  try {
    return await runLoader({ db, redis: redis ?? loaderRedis() }, { ...loaderNames(run), sleep: noSleep, ...loader });
  } finally {
    await end().catch(() => {});
  }
}

/** The loader options that scope it to the run (stream, group, consumer, lease). */
export const loaderNames = (run: HistoryRun) => ({
  stream: EVENT_STREAM,
  group: run.group,
  consumer: run.consumer,
  leaseName: run.leaseName,
});

/** Loader runs until one finds nothing left to read. */
export async function loadUntilDrained(run: HistoryRun, options: LoaderOptions = {}, maxRuns = 20) {
  const reports: LoadReport[] = [];
  for (let i = 0; i < maxRuns; i++) {
    const report = await load(run, options);
    reports.push(report);
    if (report.status === "ok" && report.stoppedBy === "drained") return reports;
  }
  throw new Error(`the loader did not drain in ${maxRuns} runs: ${JSON.stringify(reports.at(-1))}`);
}

/** The stream entries appended since the run began whose messageId has the run's prefix (one per entry). */
export const streamIds = (run: HistoryRun): Promise<string[]> =>
  streamMessageIds(loaderRedis(), `(${run.streamStart}`, run.prefix);

/** What the stores hold for the run: its schema's events and interactions, the stream, its objects' counters. */
export async function observe(run: HistoryRun): Promise<Observation> {
  const like = `${run.prefix}-%`;
  const events = await run.q<{ message_id: string }>("select message_id from events where message_id like $1", [like]);
  const interactions = await run.q<{ message_id: string; position: number }>(
    "select message_id, position from interactions where message_id like $1",
    [like],
  );
  const sessions: { userKey: string; events: number }[] = [];
  await eachLimit(run.history.userKeys(), 8, async (key) => {
    if (key === "") return;
    const s = await sessionStub(key).snapshot(key);
    sessions.push({ userKey: key, events: s.counters.events });
  });
  return {
    warehouse: events.map((r) => r.message_id),
    interactions: interactions.map((r) => ({ messageId: r.message_id, position: r.position })),
    stream: await streamIds(run),
    sessions,
  };
}

/** Drains the pipeline (every object's outbox, then the loader) and checks the history. */
export async function drainAndCheck(run: HistoryRun, loader: LoaderOptions = {}): Promise<Verdict> {
  await flushSessions(run.history.userKeys().filter((k) => k !== ""));
  await loadUntilDrained(run, loader);
  return check(run.history, await observe(run));
}

/** lost = duplicated = unexpected = 0, with the counts (and the first findings) in the failure message. */
export function expectClean(v: Verdict): void {
  console.log(formatVerdict(v));
  expect(
    { lost: v.lost, duplicated: v.duplicated, unexpected: v.unexpected },
    `${formatVerdict(v)}\n${JSON.stringify(v.findings)}`,
  ).toEqual({ lost: 0, duplicated: 0, unexpected: 0 });
  expect(v.acknowledged).toBeGreaterThan(0);
}
