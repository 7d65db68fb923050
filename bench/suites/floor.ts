// Suite `floor`: what the platform costs before Lastmile's own code does any work, measured through the local
// `wrangler dev`: an empty endpoint, Durable Object round trips (one object, and 50 objects per request), and
// GET /health (its four real dependency probes) relative to the empty endpoint.
import {
  FLOOR_PATH,
  type Floor,
  type Measurement,
  type Relative,
  relativeTo,
  type Suite,
  type SuiteContext,
  warnings,
} from "../lib/suite.ts";

const DO_FAN_OUT = 50;
const PROBE_SAMPLES = 20;

/** Median of each probe's own latencyMs over sequential GET /health answers: where the endpoint's time goes. */
async function probeMedians(ctx: SuiteContext): Promise<Record<string, number>> {
  const samples: Record<string, number[]> = {};
  for (let i = 0; i < PROBE_SAMPLES; i++) {
    const res = await fetch(`${ctx.url}/health`, { signal: AbortSignal.timeout(10_000) });
    const body = (await res.json()) as { checks: Record<string, { latencyMs: number }> };
    for (const [name, check] of Object.entries(body.checks)) {
      samples[name] = [...(samples[name] ?? []), check.latencyMs];
    }
  }
  const median = (values: number[]) => {
    const sorted = [...values].sort((a, b) => a - b);
    return sorted[Math.floor((sorted.length - 1) / 2)] ?? Number.NaN;
  };
  return Object.fromEntries(Object.entries(samples).map(([name, values]) => [`${name}P50Ms`, median(values)]));
}

async function expectJson(ctx: SuiteContext, path: string, check: (body: unknown) => boolean): Promise<void> {
  const res = await fetch(`${ctx.url}${path}`, { signal: AbortSignal.timeout(10_000) });
  const body = (await res.json().catch(() => undefined)) as unknown;
  if (res.status !== 200 || !check(body)) {
    throw new Error(`GET ${path} answered ${res.status} ${JSON.stringify(body)}: the Worker is not ready to measure`);
  }
}

function need(floor: Floor, key: "c1" | "c10"): Measurement {
  const m = floor[key];
  if (!m) throw new Error(`floor.${key} was not measured`);
  return m;
}

const suite: Suite = {
  name: "floor",
  description:
    "platform floor through wrangler dev: empty endpoint, Durable Object ping (1 and 50 objects), GET /health",
  async run(ctx) {
    // Each endpoint must answer correctly before its speed means anything; /health must find all four probes ok.
    await expectJson(ctx, FLOOR_PATH, (b) => (b as { ok?: unknown })?.ok === true);
    await expectJson(ctx, `/__bench/do?users=${DO_FAN_OUT}`, (b) => (b as { calls?: unknown })?.calls === DO_FAN_OUT);
    await expectJson(ctx, "/health", (b) => (b as { status?: unknown })?.status === "ok");

    const floor = await ctx.measureFloor([1, 10]);
    const emptyC1 = need(floor, "c1");
    const emptyC10 = need(floor, "c10");

    const do1C1 = await ctx.measure("durableObject.users1C1", { path: "/__bench/do?users=1", connections: 1 });
    const do1C10 = await ctx.measure("durableObject.users1C10", { path: "/__bench/do?users=1", connections: 10 });
    const do50C1 = await ctx.measure("durableObject.users50C1", {
      path: `/__bench/do?users=${DO_FAN_OUT}`,
      connections: 1,
    });
    // strict=1: the same work as GET /health, but a degraded answer is a 503 and shows up as non2xx.
    const healthC1 = await ctx.measure("health.c1", { path: "/health?strict=1", connections: 1 });
    ctx.log(`health.probes: ${PROBE_SAMPLES} sequential GET /health, each probe's own latencyMs`);
    const probes = await probeMedians(ctx);
    // The empty endpoint once more at the end: how far the floor itself moved during the run (noise and drift).
    const emptyC1Repeat = await ctx.measure("empty.c1Repeat", { path: FLOOR_PATH, connections: 1 });

    const perCall = (m: Measurement, calls: number) => ({ ...m, doCallsPerS: Math.round(m.rps * calls) });
    const results = {
      empty: { c1: emptyC1, c10: emptyC10, c1Repeat: emptyC1Repeat },
      durableObject: {
        users1C1: perCall(do1C1, 1),
        users1C10: perCall(do1C10, 1),
        users50C1: perCall(do50C1, DO_FAN_OUT),
      },
      health: { c1: healthC1, probes: { samples: PROBE_SAMPLES, ...probes } },
    };
    const relative: Record<string, Record<string, Relative>> = {
      empty: {
        c10: relativeTo(emptyC10, emptyC1, "floor.c1"),
        c1Repeat: relativeTo(emptyC1Repeat, emptyC1, "floor.c1"),
      },
      durableObject: {
        users1C1: relativeTo(do1C1, emptyC1, "floor.c1"),
        users1C10: relativeTo(do1C10, emptyC10, "floor.c10"),
        users50C1: relativeTo(do50C1, emptyC1, "floor.c1"),
      },
      health: { c1: relativeTo(healthC1, emptyC1, "floor.c1") },
    };

    const notes = [
      "floor.c1 and floor.c10 are the empty-endpoint measurements results.empty.c1 and results.empty.c10 " +
        "(one measurement each, reported in both places).",
      "empty.c1Repeat is the empty endpoint measured again after everything else: its distance from floor.c1 " +
        "is the run's own noise; smaller differences elsewhere mean nothing.",
      "relative: addedP50Ms = p50Ms - floor p50Ms, addedP99Ms likewise, rpsRatio = rps / floor rps, against the " +
        "floor at the same connection count.",
      "durableObject: one SessionState ping() RPC per user, concurrently; users1 hits one object, users50 hits " +
        `objects bench:0..bench:${DO_FAN_OUT - 1} per request; doCallsPerS = rps x users.`,
      "health: GET /health?strict=1 (Postgres via the Neon driver + WebSocket proxy, Redis via the Upstash REST " +
        "gateway, KV, Durable Object, probed in parallel); strict=1 only turns a degraded answer into a 503. " +
        `health.probes: median of each probe's own latencyMs over ${PROBE_SAMPLES} sequential GET /health (lower-median).`,
      "The load generator (autocannon, in the harness's Node process) shares the machine with workerd, wrangler, " +
        "Postgres and redis: these are local-simulator figures, not production latencies.",
    ];
    for (const [label, m] of [
      ["empty.c1", emptyC1],
      ["empty.c10", emptyC10],
      ["durableObject.users1C1", do1C1],
      ["durableObject.users1C10", do1C10],
      ["durableObject.users50C1", do50C1],
      ["health.c1", healthC1],
      ["empty.c1Repeat", emptyC1Repeat],
    ] as const) {
      notes.push(...warnings(label, m));
    }
    return { floor, results, relative, notes };
  },
};

export default suite;
