// Suite `collect`: events through POST /v1/batch on the local stack, for two mixes — server batches (100 events
// across 50 users) and browser batches (one visitor, 10 events) — side by side with the floor: the same batches
// sent to an endpoint that only parses them and makes one empty Durable Object call per distinct user. A second
// floor, the write floor, has each of those calls carry the user's events and store them in one durable write:
// the least a design must do that acknowledges only what the user's object has stored. A third, the log floor, has
// the empty calls plus one durable write of the whole batch in one intake object (a write-ahead log per batch).
// Every request carries fresh message ids, so nothing is a duplicate.
import { LOCAL_KEYS } from "../../scripts/lib/local-keys.ts";
import {
  type Measurement,
  type PairedMeasurement,
  type Relative,
  relativeTo,
  type Suite,
  type SuiteContext,
  warnings,
} from "../lib/suite.ts";

const SERVER_EVENTS = 100;
const SERVER_USERS = 50;
const BROWSER_EVENTS = 10;
/**
 * Distinct users/visitors the generators draw from. Every one of them is recorded once before measuring, so the
 * figures are for returning users (an object that already has its tables), as on a store in steady state.
 */
const USER_POOL = 1_000;
const PRODUCTS = 2_000;
const CATEGORIES = ["Mugs", "Candles & Lights", "Bags", "Christmas", "Cards & Wrap", "Kitchen", "Garden", "Toys"];

const FLOOR_ENDPOINT = "/__bench/collect-floor";
const WRITE_FLOOR_ENDPOINT = "/__bench/collect-floor?write=1";
const LOG_FLOOR_ENDPOINT = "/__bench/collect-floor?log=1";
const COLLECT_ENDPOINT = "/v1/batch";

type Mix = "server" | "browser";

function product(n: number) {
  const id = n % PRODUCTS;
  return {
    product_id: `p${id}`,
    category: CATEGORIES[id % CATEGORIES.length],
    brand: `brand${id % 40}`,
    price: 1 + (id % 97),
  };
}

/** A batch body with message ids unique to this run and request. */
function batchBody(mix: Mix, run: string, i: number): string {
  const now = new Date().toISOString();
  if (mix === "server") {
    const batch = Array.from({ length: SERVER_EVENTS }, (_, j) => {
      const user = (i * SERVER_USERS + (j % SERVER_USERS)) % USER_POOL;
      return {
        type: "track",
        userId: `bench-user-${user}`,
        event: j % 10 === 9 ? "Product Added" : "Product Viewed",
        messageId: `${run}-s${i}-${j}`,
        timestamp: now,
        properties: product(i * 7 + j),
      };
    });
    return JSON.stringify({ batch, sentAt: now });
  }
  const anonymousId = `bench-visitor-${i % USER_POOL}`;
  const events: Array<Record<string, unknown>> = [
    { type: "page", name: "Home", properties: { path: "/" } },
    { type: "track", event: "Products Searched", properties: { query: "red mug" } },
    ...Array.from({ length: 6 }, (_, k) => ({ type: "track", event: "Product Viewed", properties: product(i + k) })),
    { type: "track", event: "Product Clicked", properties: product(i + 7) },
    { type: "track", event: "Product Added", properties: product(i + 2) },
  ];
  const batch = events
    .slice(0, BROWSER_EVENTS)
    .map((e, j) => ({ ...e, anonymousId, messageId: `${run}-b${i}-${j}`, timestamp: now }));
  return JSON.stringify({ batch, sentAt: now });
}

const eventsPerBatch: Record<Mix, number> = { server: SERVER_EVENTS, browser: BROWSER_EVENTS };

/** Records one event for every user and visitor of the pool, SERVER_USERS per request. */
async function warmPool(ctx: SuiteContext, headers: Record<string, string>, run: string): Promise<void> {
  ctx.log(`collect: recording one event for each of ${USER_POOL} users and ${USER_POOL} visitors first`);
  for (const field of ["userId", "anonymousId"] as const) {
    const prefix = field === "userId" ? "bench-user-" : "bench-visitor-";
    for (let start = 0; start < USER_POOL; start += SERVER_USERS) {
      const batch = Array.from({ length: Math.min(SERVER_USERS, USER_POOL - start) }, (_, k) => ({
        type: "track",
        [field]: `${prefix}${start + k}`,
        event: "Product Viewed",
        messageId: `${run}-warm-${field}-${start + k}`,
        properties: product(start + k),
      }));
      // Retried like a Segment client would: a reload of the Worker under wrangler dev answers 503 for a moment.
      for (let attempt = 1; ; attempt++) {
        const res = await fetch(`${ctx.url}${COLLECT_ENDPOINT}`, {
          method: "POST",
          headers,
          body: JSON.stringify({ batch }),
        });
        const text = await res.text();
        if (res.status === 200) break;
        if (attempt >= 5) throw new Error(`warming the user pool: POST /v1/batch answered ${res.status} ${text}`);
        await new Promise((r) => setTimeout(r, 1000 * attempt));
      }
    }
  }
}

/**
 * A session object drains its outbox to Redis from its alarm 30 s after its first pending write. Every series block
 * writes to hundreds of objects; their drains (one EVAL each, through the Upstash gateway) would land in whichever
 * series runs 30 s later and slow it, the floors included. So each block starts after the previous one's drains.
 */
const QUIET_MS = 40_000;
/** A paired series runs this many times the run's duration (a server pair takes ~0.2 s at one connection). */
const PAIRED_DURATION_FACTOR = 3;

async function quiet(ctx: SuiteContext): Promise<void> {
  ctx.log(`collect: ${QUIET_MS / 1000} s for the outbox drains of the writes so far`);
  await new Promise((resolve) => setTimeout(resolve, QUIET_MS));
}

/** Checks that both endpoints take the batch as intended before their speed means anything. */
async function check(ctx: SuiteContext, headers: Record<string, string>, run: string): Promise<void> {
  for (const mix of ["server", "browser"] as const) {
    const body = batchBody(mix, `${run}-check`, 0);
    const res = await fetch(`${ctx.url}${COLLECT_ENDPOINT}`, { method: "POST", headers, body });
    const answer = (await res.json()) as { accepted?: number; rejected?: unknown[] };
    if (res.status !== 200 || answer.accepted !== eventsPerBatch[mix] || answer.rejected?.length) {
      throw new Error(`POST /v1/batch (${mix}) answered ${res.status} ${JSON.stringify(answer)}`);
    }
    const users = mix === "server" ? SERVER_USERS : 1;
    for (const endpoint of [FLOOR_ENDPOINT, WRITE_FLOOR_ENDPOINT, LOG_FLOOR_ENDPOINT]) {
      const floor = await fetch(`${ctx.url}${endpoint}`, { method: "POST", headers, body });
      const floorAnswer = (await floor.json()) as { users?: number };
      if (floor.status !== 200 || floorAnswer.users !== users) {
        throw new Error(`POST ${endpoint} (${mix}) answered ${floor.status} ${JSON.stringify(floorAnswer)}`);
      }
    }
  }
}

const suite: Suite = {
  name: "collect",
  description:
    "POST /v1/batch: server batches (100 events / 50 users) and browser batches (1 visitor / 10 events) vs one empty object call per user",
  async run(ctx) {
    const run = `bench-${Date.now().toString(36)}`;
    const headers = {
      "content-type": "application/json",
      authorization: `Basic ${btoa(`${LOCAL_KEYS.writeKey}:`)}`,
    };
    await check(ctx, headers, run);
    await warmPool(ctx, headers, run);
    await quiet(ctx);
    const floor = await ctx.measureFloor([1, 10]);

    const results: Record<string, Record<string, Measurement & { eventsPerS: number }>> = {};
    const relative: Record<string, Record<string, Relative>> = {};
    const paired: Partial<Record<Mix, PairedMeasurement>> = {};
    const notes: string[] = [];
    let series = 0;
    for (const mix of ["server", "browser"] as const) {
      for (const connections of [1, 10] as const) {
        // The previous block's writes drain from their objects' alarms 30 s later: not inside this block's series.
        if (series > 0) await quiet(ctx);
        for (const [name, endpoint] of [
          ["floor", FLOOR_ENDPOINT],
          ["writeFloor", WRITE_FLOOR_ENDPOINT],
          ["logFloor", LOG_FLOOR_ENDPOINT],
          ["collect", COLLECT_ENDPOINT],
        ] as const) {
          const tag = `${run}-${series++}`;
          const label = `${mix}.${name}.c${connections}`;
          const m = await ctx.measure(label, {
            path: `POST ${endpoint} (${mix} batches)`,
            method: "POST",
            headers,
            next: (i) => ({ path: endpoint, body: batchBody(mix, tag, i) }),
            connections,
          });
          results[mix] ??= {};
          const bucket = results[mix];
          bucket[`${name}C${connections}`] = { ...m, eventsPerS: Math.round(m.rps * eventsPerBatch[mix]) };
          notes.push(...warnings(label, m));
        }
        const collectM = results[mix]?.[`collectC${connections}`];
        const floorM = results[mix]?.[`floorC${connections}`];
        const writeFloorM = results[mix]?.[`writeFloorC${connections}`];
        const logFloorM = results[mix]?.[`logFloorC${connections}`];
        if (collectM && floorM && writeFloorM && logFloorM) {
          relative[mix] ??= {};
          const rel = relative[mix];
          rel[`collectC${connections}`] = relativeTo(collectM, floorM, `${mix}.floorC${connections}`);
          rel[`writeFloorC${connections}`] = relativeTo(writeFloorM, floorM, `${mix}.floorC${connections}`);
          rel[`logFloorC${connections}`] = relativeTo(logFloorM, floorM, `${mix}.floorC${connections}`);
          rel[`collectVsWriteFloorC${connections}`] = relativeTo(
            collectM,
            writeFloorM,
            `${mix}.writeFloorC${connections}`,
          );
        }
      }
    }
    // Last, in a block of their own: each mix's floor and POST /v1/batch interleaved on one connection, so the
    // comparison carries no drift between two series (and the series above run exactly as without it).
    for (const mix of ["server", "browser"] as const) {
      await quiet(ctx);
      const tag = `${run}-${series++}`;
      const label = `${mix}.paired.c1`;
      const m = await ctx.measurePaired(label, {
        a: {
          path: `POST ${FLOOR_ENDPOINT} (${mix} batches)`,
          method: "POST",
          headers,
          next: (i) => ({ path: FLOOR_ENDPOINT, body: batchBody(mix, `${tag}f`, i) }),
        },
        b: {
          path: `POST ${COLLECT_ENDPOINT} (${mix} batches)`,
          method: "POST",
          headers,
          next: (i) => ({ path: COLLECT_ENDPOINT, body: batchBody(mix, `${tag}c`, i) }),
        },
        durationS: PAIRED_DURATION_FACTOR * ctx.durationS,
      });
      paired[mix] = m;
      notes.push(...warnings(`${label}.floor`, m.a), ...warnings(label, m.b));
    }
    notes.push(
      "floor for collection: POST /__bench/collect-floor with the same bodies — parse the batch and make one empty " +
        "SessionState ping() per distinct user, concurrently; relative.* compares /v1/batch with it at the same " +
        "connection count (bars: rpsRatio >= 0.7 at 10 connections; addedP50Ms <= 3 at 1 connection).",
      "write floor: POST /__bench/collect-floor?write=1 — the same, but each call carries the user's events and the " +
        "object stores them with one storage.put (durable before the call returns); relative.*.writeFloorC* compares " +
        "it with the empty floor, relative.*.collectVsWriteFloorC* compares /v1/batch with it.",
      "log floor: POST /__bench/collect-floor?log=1 — the empty calls, plus the whole batch stored with one " +
        "storage.put in one of 8 intake objects: the cost of a write-ahead log written once per batch.",
      `server batches: ${SERVER_EVENTS} events across ${SERVER_USERS} users drawn from ${USER_POOL}; browser batches: ` +
        `one visitor of ${USER_POOL}, ${BROWSER_EVENTS} events (page, search, views, click, add); every message id is new.`,
      `Every user and visitor of the pool is recorded once before measuring: figures are for returning users.`,
      "paired (1 connection): the floor and POST /v1/batch interleaved on one connection (floor, batch, floor, …) " +
        "with the same kind of bodies: addedP50Ms = the batch's p50 minus the floor's from the same series; " +
        "pairDifferenceP50Ms = the median of each batch's latency minus that of the floor request just before it.",
      "Each object drains its outbox to Redis (stream + trending counters) from its alarm 30 s after the " +
        "first pending write, one EVAL per object per drain: not on the ack path, but it shares the machine's CPU. " +
        `The empty floor and every block of series (a mix at a connection count) start ${QUIET_MS / 1000} s after ` +
        "the writes before them, so those drains land between blocks.",
    );
    return { floor, results: { ...results, paired }, relative, notes };
  },
};

export default suite;
