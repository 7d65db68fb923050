// Suite `load`: stream → Postgres, the warehouse loader (src/batch/loader.ts) run inside the local Worker through
// the production driver path (Neon driver → WebSocket proxy → Postgres 15), over EVENTS entries appended to a
// stream of its own (default 50,000; BENCH_LOAD_EVENTS overrides). Baseline in the same run: the naive loader, one
// INSERT per event over the same connection path (events rows only, no interactions: it does less work). Bar:
// ≥ 10,000 events/s.
import { STREAM_FIELDS } from "../../src/session/stream.ts";
import type { Suite, SuiteContext } from "../lib/suite.ts";

const DEFAULT_EVENTS = 50_000;
const BASELINE_EVENTS = 2_000;
const PIPELINE = 1_000;

async function json<T>(ctx: SuiteContext, method: string, path: string): Promise<T> {
  const res = await fetch(`${ctx.url}${path}`, { method, signal: AbortSignal.timeout(300_000) });
  const body = (await res.json()) as T;
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${JSON.stringify(body)}`);
  return body;
}

function event(run: string, i: number) {
  const time = new Date(Date.now() - (i % 86_400) * 1000).toISOString();
  const viewed = i % 4 !== 3;
  return {
    messageId: `${run}-${i}`,
    type: "track",
    userId: i % 3 === 0 ? `user${i % 5000}` : null,
    anonymousId: `anon${i % 8000}`,
    previousId: null,
    groupId: null,
    event: viewed ? "Product Viewed" : "Product Added",
    name: null,
    properties: { product_id: `p${i % 4000}`, price: 1 + (i % 97), category: `c${i % 20}`, quantity: 1 },
    traits: {},
    context: { location: { country: ["GB", "FR", "DE"][i % 3] } },
    timestamp: time,
    originalTimestamp: time,
    sentAt: time,
    receivedAt: time,
    sourceId: "bench",
  };
}

/** XADDs `count` events through the Upstash REST gateway's pipeline, PIPELINE commands per request. */
async function append(ctx: SuiteContext, stream: string, run: string, count: number): Promise<void> {
  for (let start = 0; start < count; start += PIPELINE) {
    const commands = [];
    for (let i = start; i < Math.min(count, start + PIPELINE); i++) {
      const e = event(run, i);
      const user = e.userId ? `u:${e.userId}` : `a:${e.anonymousId}`;
      commands.push([
        "xadd",
        stream,
        "*",
        STREAM_FIELDS.messageId,
        e.messageId,
        STREAM_FIELDS.userKey,
        user,
        STREAM_FIELDS.event,
        JSON.stringify(e),
      ]);
    }
    const res = await fetch(`${ctx.vars.UPSTASH_REDIS_REST_URL}/pipeline`, {
      method: "POST",
      headers: { authorization: `Bearer ${ctx.vars.UPSTASH_REDIS_REST_TOKEN}`, "content-type": "application/json" },
      body: JSON.stringify(commands),
    });
    if (!res.ok) throw new Error(`XADD pipeline: ${res.status} ${await res.text()}`);
  }
}

interface LoadReport {
  status: string;
  events: number;
  interactions: number;
  identities: number;
  batches: number;
  durationMs: number;
  eventsPerSecond: number;
  timings: Record<string, number>;
}

const suite: Suite = {
  name: "load",
  description:
    "stream -> Postgres events/s through the loader in the Worker (Neon driver path) vs one INSERT per event",
  async run(ctx) {
    const count = Number(process.env.BENCH_LOAD_EVENTS ?? DEFAULT_EVENTS);
    const run = `bench${Date.now()}`;
    const stream = `bench:load:${run}`;
    ctx.log(`load: appending ${count} events to ${stream}`);
    await append(ctx, stream, run, count);

    ctx.log(`baseline: one INSERT per event, first ${BASELINE_EVENTS} entries`);
    const baseline = await json<{ events: number; durationMs: number; eventsPerSecond: number }>(
      ctx,
      "POST",
      `/__bench/load/baseline?stream=${encodeURIComponent(stream)}&n=${BASELINE_EVENTS}`,
    );
    ctx.log(`baseline: ${baseline.eventsPerSecond} events/s`);

    ctx.log("loader: one run over the whole stream (batch 1,000, 2 writers: the production defaults)");
    const w0 = performance.now();
    const loader = await json<LoadReport>(ctx, "POST", `/__bench/load/run?stream=${encodeURIComponent(stream)}`);
    const wallS = (performance.now() - w0) / 1000;
    ctx.log(`loader: ${loader.eventsPerSecond} events/s`);

    const results = {
      events: count,
      loader: {
        status: loader.status,
        events: loader.events,
        interactions: loader.interactions,
        identities: loader.identities,
        batches: loader.batches,
        durationMs: loader.durationMs,
        eventsPerSecond: loader.eventsPerSecond,
        requestWallS: Math.round(wallS * 10) / 10,
        timings: loader.timings,
      },
      baseline,
    };
    const relative = {
      loader: {
        against: "baseline.eventsPerSecond",
        speedup: Math.round((loader.eventsPerSecond / Math.max(1, baseline.eventsPerSecond)) * 10) / 10,
      },
    };
    const notes = [
      "loader: runLoader inside the Worker (wrangler dev), XREADGROUP from the Upstash-compatible gateway, one " +
        "transaction per 1,000 entries writing events + interactions + identities (one JSON parameter per table), " +
        "XACK after COMMIT; eventsPerSecond = events inserted / run duration measured inside the Worker.",
      "baseline: the same entries parsed the same way, then one INSERT ... ON CONFLICT DO NOTHING per event (events " +
        "table only) through the same Neon driver pool: the naive loader, doing less work per event than the loader.",
    ];
    if (loader.events !== count) notes.push(`WARNING loader: ${loader.events} of ${count} events inserted`);
    return { floor: { path: "/__bench/load/baseline" }, results, relative, notes };
  },
};

export default suite;
