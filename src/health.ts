// GET /health: each dependency probed in parallel under its own deadline, with status and latency. The
// endpoint itself always answers (200) while the Worker runs; `?strict=1` answers 503 when anything is not ok,
// for monitors that only read the status code. A malformed setting is a degraded report too (no probe runs without
// a valid configuration): the page an operator opens first must not be a bare 500.

import type { Client } from "@neondatabase/serverless";
import type { Context } from "hono";
import type { AppEnv } from "./app.ts";
import { ConfigError, loadConfig } from "./config.ts";
import type { HealthReport, ProbeResult } from "./health-report.ts";
import { describeError, log } from "./log.ts";
import { openClient } from "./stores/db.ts";
import { openRedis } from "./stores/redis.ts";

export type { HealthReport, ProbeResult, ProbeStatus } from "./health-report.ts";

/** The Durable Object name the health probe calls; never a real user's id (those are prefixed). */
export const HEALTH_OBJECT_NAME = "health:probe";
export const HEALTH_KV_KEY = "health:probe";

class ProbeTimeout extends Error {}

async function probe(
  timeoutMs: number,
  work: (signal: AbortSignal) => Promise<unknown>,
  cleanup?: () => Promise<unknown>,
): Promise<ProbeResult> {
  const started = performance.now();
  const controller = new AbortController();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      controller.abort();
      reject(new ProbeTimeout());
    }, timeoutMs);
  });
  try {
    await Promise.race([work(controller.signal), deadline]);
    return { status: "ok", latencyMs: elapsed(started) };
  } catch (error) {
    return {
      status: "error",
      latencyMs: elapsed(started),
      error:
        error instanceof ProbeTimeout
          ? { code: "timeout", message: `no answer within ${timeoutMs} ms` }
          : { code: "failed", message: describeError(error) },
    };
  } finally {
    if (timer !== undefined) clearTimeout(timer);
    // Not awaited: closing a connection that never opened can hang, and the answer must not wait for it.
    cleanup?.().catch(() => {});
  }
}

function elapsed(started: number): number {
  return Math.round((performance.now() - started) * 100) / 100;
}

const notConfigured: ProbeResult = { status: "not_configured", latencyMs: 0 };

/** Throws ConfigError when a setting is malformed (healthRoute reports that instead of probing). */
export async function checkHealth(env: Env): Promise<HealthReport> {
  const config = loadConfig(env);
  const timeoutMs = config.healthTimeoutMs;

  const postgres = async (): Promise<ProbeResult> => {
    const settings = config.database;
    if (!settings) return notConfigured;
    // Opened inside the probe: a setting the driver refuses (a local DATABASE_URL without NEON_LOCAL_WS_PROXY, say)
    // is this check's error, not a failed /health.
    let client: Client | undefined;
    return probe(
      timeoutMs,
      async () => {
        client = openClient(settings);
        await client.connect();
        await client.query("select 1");
      },
      async () => client?.end(),
    );
  };

  const redis = async (): Promise<ProbeResult> => {
    if (!config.redis) return notConfigured;
    const settings = config.redis;
    return probe(timeoutMs, async (signal) => {
      const pong = await openRedis({ ...settings, signal }).ping();
      if (pong !== "PONG") throw new Error(`unexpected PING reply: ${String(pong)}`);
    });
  };

  const kv = () => probe(timeoutMs, () => env.ONLINE_STORE.get(HEALTH_KV_KEY));
  const durableObjects = () => probe(timeoutMs, () => env.SESSION_STATE.getByName(HEALTH_OBJECT_NAME).ping());

  const [pg, rd, k, dos] = await Promise.all([postgres(), redis(), kv(), durableObjects()]);
  const checks = { postgres: pg, redis: rd, kv: k, durableObjects: dos };
  return {
    status: Object.values(checks).every((c) => c.status === "ok") ? "ok" : "degraded",
    service: "lastmile",
    environment: config.environment,
    time: new Date().toISOString(),
    checks,
  };
}

/** The report when the configuration itself is refused: every check in error, the details only in the log. */
function configErrorReport(env: Env, error: ConfigError): HealthReport {
  log("error", "health: the configuration is invalid", { error: error.message });
  const failed: ProbeResult = {
    status: "error",
    latencyMs: 0,
    error: { code: "config", message: "a setting is malformed, so nothing was probed (details in the Worker's log)" },
  };
  return {
    status: "degraded",
    service: "lastmile",
    environment: env.LASTMILE_ENV || "production",
    time: new Date().toISOString(),
    checks: { postgres: failed, redis: failed, kv: failed, durableObjects: failed },
  };
}

export async function healthRoute(c: Context<AppEnv>): Promise<Response> {
  const report = await checkHealth(c.env).catch((error: unknown) => {
    if (error instanceof ConfigError) return configErrorReport(c.env, error);
    throw error;
  });
  const strict = c.req.query("strict");
  const status = strict !== undefined && strict !== "0" && report.status !== "ok" ? 503 : 200;
  c.header("cache-control", "no-store");
  return c.json(report, status);
}
