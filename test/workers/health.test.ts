import { createExecutionContext, createScheduledController, waitOnExecutionContext } from "cloudflare:test";
import { env, exports } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { createApp } from "../../src/app.ts";
import { CRON_RUN_STATE } from "../../src/batch/cron.ts";
import { checkHealth, type HealthReport } from "../../src/health.ts";
import worker from "../../src/index.ts";
import { openClient } from "../../src/stores/db.ts";
import { openRedis } from "../../src/stores/redis.ts";

const dbSettings = () => ({ databaseUrl: env.DATABASE_URL, localWsProxy: env.NEON_LOCAL_WS_PROXY });

async function sql<T>(text: string, params: unknown[] = []): Promise<T[]> {
  const client = openClient(dbSettings());
  await client.connect();
  try {
    return (await client.query(text, params)).rows as T[];
  } finally {
    await client.end();
  }
}

describe("GET /health", () => {
  it("reports every dependency ok with a latency", async () => {
    const res = await exports.default.fetch("http://lastmile.test/health");
    expect(res.status).toBe(200);
    expect(res.headers.get("x-request-id")).toMatch(/[0-9a-f-]{36}/);
    const body = (await res.json()) as HealthReport;
    expect(body.status).toBe("ok");
    for (const name of ["postgres", "redis", "kv", "durableObjects"] as const) {
      expect(body.checks[name].status, name).toBe("ok");
      expect(body.checks[name].latencyMs, name).toBeGreaterThanOrEqual(0);
    }
  });

  it("turns a stopped Redis into an error entry and still answers", async () => {
    const report = await checkHealth({ ...env, UPSTASH_REDIS_REST_URL: "http://127.0.0.1:9" });
    expect(report.status).toBe("degraded");
    expect(report.checks.redis.status).toBe("error");
    expect(report.checks.redis.error?.code).toBe("failed");
    expect(report.checks.postgres.status).toBe("ok");
  });

  it("turns an unreachable Postgres into an error entry without leaking the password", async () => {
    const report = await checkHealth({
      ...env,
      DATABASE_URL: "postgres://lastmile:s3cret@127.0.0.1:9/lastmile",
      NEON_LOCAL_WS_PROXY: "127.0.0.1:9/v2",
    });
    expect(report.checks.postgres.status).toBe("error");
    expect(JSON.stringify(report)).not.toContain("s3cret");
    expect(report.checks.redis.status).toBe("ok");
  });

  it("reports a database setting the driver refuses as the postgres check's error, and still answers 200", async () => {
    // A local DATABASE_URL needs the WebSocket proxy: without it the driver cannot even be configured.
    const res = await createApp().request("/health", {}, { ...env, NEON_LOCAL_WS_PROXY: "" });
    expect(res.status).toBe(200);
    const body = (await res.json()) as HealthReport;
    expect(body.status).toBe("degraded");
    expect(body.checks.postgres.status).toBe("error");
    expect(body.checks.postgres.error?.message).toContain("NEON_LOCAL_WS_PROXY");
    // The other probes ran as usual.
    expect(body.checks.redis.status).toBe("ok");
    expect(body.checks.kv.status).toBe("ok");
  });

  it("answers 503 with ?strict=1 when degraded, 200 otherwise", async () => {
    const broken = { ...env, UPSTASH_REDIS_REST_URL: "http://127.0.0.1:9" };
    const app = createApp();
    expect((await app.request("/health?strict=1", {}, broken)).status).toBe(503);
    expect((await app.request("/health", {}, broken)).status).toBe(200);
    expect((await app.request("/health?strict=1", {}, env)).status).toBe(200);
  });

  it("reports a malformed setting as a degraded report (200, 503 with ?strict=1), without its value", async () => {
    const app = createApp();
    const broken = { ...env, SOURCES: '[{"id":"shop","writeKey":"wk-secret-1",' };
    const res = await app.request("/health", {}, broken);
    expect(res.status).toBe(200);
    const body = (await res.json()) as HealthReport;
    expect(body.status).toBe("degraded");
    for (const name of ["postgres", "redis", "kv", "durableObjects"] as const) {
      expect(body.checks[name].error?.code, name).toBe("config");
    }
    expect(JSON.stringify(body)).not.toContain("wk-secret-1");
    expect((await app.request("/health?strict=1", {}, broken)).status).toBe(503);
  });

  it("reports a probe that outlives its deadline as a timeout", async () => {
    // A TCP listener that never answers HTTP: the Redis probe must give up at the deadline.
    const report = await checkHealth({
      ...env,
      HEALTH_TIMEOUT_MS: "300",
      UPSTASH_REDIS_REST_URL: `http://${env.NEON_LOCAL_WS_PROXY.split("/")[0]}/never`,
    });
    expect(["timeout", "failed"]).toContain(report.checks.redis.error?.code);
    expect(report.checks.redis.latencyMs).toBeLessThan(2000);
  });
});

describe("the error model", () => {
  it("answers unknown routes with a machine-readable 404", async () => {
    const res = await exports.default.fetch("http://lastmile.test/nope");
    expect(res.status).toBe(404);
    const body = (await res.json()) as { error: { code: string; message: string; requestId: string } };
    expect(body.error.code).toBe("not_found");
    expect(body.error.requestId).toBe(res.headers.get("x-request-id"));
  });

  it("hides internal errors behind internal_error with no stack trace", async () => {
    const app = createApp();
    app.get("/boom", () => {
      throw new Error("database password is hunter2");
    });
    const res = await app.request("/boom", {}, env);
    expect(res.status).toBe(500);
    const text = await res.text();
    expect(JSON.parse(text).error.code).toBe("internal_error");
    expect(text).not.toContain("hunter2");
    expect(text).not.toContain("at ");
  });
});

describe("real services from inside workerd", () => {
  it("reaches the real local Postgres through the Neon driver", async () => {
    const [row] = await sql<{ db: string; version: string }>("select current_database() as db, version()");
    expect(row?.db).toBe("lastmile_test");
    expect(row?.version).toMatch(/^PostgreSQL \d+/);
    // The migrations from migrations/ were applied.
    const tables = await sql<{ table_name: string }>(
      "select table_name from information_schema.tables where table_schema = 'public'",
    );
    expect(tables.map((t) => t.table_name)).toContain("sync_state");
  });

  it("reaches the real local Redis through @upstash/redis", async () => {
    const redis = openRedis({ url: env.UPSTASH_REDIS_REST_URL, token: env.UPSTASH_REDIS_REST_TOKEN });
    const key = `test:${crypto.randomUUID()}`;
    await redis.set(key, { views: 3 });
    // A second client, so the value comes back from the server, not from anything the first one holds.
    const other = openRedis({ url: env.UPSTASH_REDIS_REST_URL, token: env.UPSTASH_REDIS_REST_TOKEN });
    expect(await other.get(key)).toEqual({ views: 3 });
    const info = await other.exec<string>(["INFO", "server"]);
    expect(info).toMatch(/redis_version:\d+\.\d+/);
    await other.del(key);
  });
});

describe("scheduled()", () => {
  it("records each cron run in sync_state", async () => {
    const scheduledTime = Date.UTC(2026, 10, 26, 12, 15);
    const controller = createScheduledController({ scheduledTime, cron: "*/15 * * * *" });
    const ctx = createExecutionContext();
    await worker.scheduled(controller, env, ctx);
    await waitOnExecutionContext(ctx);
    const [row] = await sql<{ value: { cron: string; scheduledTime: string } }>(
      "select value from sync_state where name = $1",
      [CRON_RUN_STATE],
    );
    expect(row?.value.cron).toBe("*/15 * * * *");
    expect(row?.value.scheduledTime).toBe(new Date(scheduledTime).toISOString());
  });
});
