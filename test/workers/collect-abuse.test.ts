// Abuse controls of the collection API: CORS per source, and the rate limits per client IP and per source through
// the Workers Rate Limiting bindings (miniflare enforces them locally).
import { env, exports } from "cloudflare:workers";
import { afterEach, describe, expect, it, vi } from "vitest";
import { createApp } from "../../src/app.ts";
import { RATE_LIMIT_PERIOD_SECONDS } from "../../src/collect/rate-limit.ts";
import { ADMIN_KEY, BASE, basic, collect, envWithSources, post, refused, uid, WRITE_KEY } from "./collect-helpers.ts";

const SHOP = "https://shop.example";
const OTHER = "https://other.example";
const OLD = "https://old.example";
const EVIL = "https://evil.example";

const corsEnv = envWithSources([
  { id: "web", writeKey: "wk-web", allowedOrigins: [SHOP] },
  { id: "app", writeKey: "wk-app", allowedOrigins: [OTHER] },
  { id: "old", writeKey: "wk-old", enabled: false, allowedOrigins: [OLD] },
]);

const event = () => ({ type: "track", event: "Product Viewed", userId: uid("u"), messageId: uid("m") });

async function preflight(path: string, origin: string, testEnv: Env = corsEnv): Promise<Response> {
  return await createApp().request(
    path,
    {
      method: "OPTIONS",
      headers: {
        origin,
        "access-control-request-method": "POST",
        "access-control-request-headers": "content-type, authorization, content-encoding, anonymousid",
      },
    },
    testEnv,
  );
}

describe("CORS", () => {
  it("answers a preflight from an origin some enabled source allows", async () => {
    for (const path of ["/v1/batch", "/v1/t", "/v1/identify", "/v1/webhook"]) {
      const res = await preflight(path, SHOP);
      expect(res.status, path).toBe(204);
      expect(res.headers.get("access-control-allow-origin")).toBe(SHOP);
      expect(res.headers.get("access-control-allow-methods")).toBe("POST, OPTIONS");
      expect(res.headers.get("access-control-allow-headers")).toBe(
        "Content-Type, Authorization, Content-Encoding, AnonymousId, *",
      );
      expect(res.headers.get("access-control-max-age")).toBe("86400");
      expect(res.headers.get("vary")).toBe("Origin");
      expect(res.headers.has("access-control-allow-credentials")).toBe(false);
    }
    expect((await preflight("/v1/batch", OTHER)).headers.get("access-control-allow-origin")).toBe(OTHER);
  });

  it("lets a page send the extra headers analytics.js is configured with (deliveryStrategy.config.headers)", async () => {
    // analytics-next sends `headers` of its delivery config on every request, and headers of its own: recent
    // versions X-Retry-Count with every batch, some a `Trace` header. A preflight that refuses one blocks every
    // event of the page.
    const res = await createApp().request(
      "/v1/t",
      {
        method: "OPTIONS",
        headers: {
          origin: SHOP,
          "access-control-request-method": "POST",
          "access-control-request-headers": "authorization, content-type, trace, x-retry-count, x-shop-tenant",
        },
      },
      corsEnv,
    );
    const allowed = (res.headers.get("access-control-allow-headers") ?? "").split(",").map((h) => h.trim());
    for (const header of ["trace", "x-retry-count", "x-shop-tenant"]) {
      expect(allowed.includes("*") || allowed.some((h) => h.toLowerCase() === header), header).toBe(true);
    }
    // The wildcard does not cover Authorization (Fetch spec): it stays named.
    expect(allowed).toContain("Authorization");
    expect(res.headers.has("access-control-allow-credentials")).toBe(false);
  });

  it("gives no CORS grant to a preflight from an unknown origin or one only a disabled source allows", async () => {
    for (const origin of [EVIL, OLD, "null"]) {
      const res = await preflight("/v1/batch", origin);
      expect(res.status).toBe(204);
      expect(res.headers.has("access-control-allow-origin"), origin).toBe(false);
      expect(res.headers.has("access-control-allow-methods"), origin).toBe(false);
      expect(res.headers.get("vary")).toBe("Origin");
    }
  });

  it("reflects the origin on actual responses only when the request's own source allows it", async () => {
    const send = (writeKey: string, origin: string) =>
      post("/v1/batch", { batch: [event()] }, { headers: { authorization: basic(writeKey), origin }, env: corsEnv });
    const allowed = await send("wk-web", SHOP);
    expect(allowed.status).toBe(200);
    expect(allowed.headers.get("access-control-allow-origin")).toBe(SHOP);
    expect(allowed.headers.get("access-control-expose-headers")).toBe("Retry-After, X-Request-Id");
    expect(allowed.headers.get("vary")).toBe("Origin");
    expect(allowed.headers.has("access-control-allow-credentials")).toBe(false);
  });

  it("refuses events from pages of an origin the key's source does not allow, storing nothing", async () => {
    // OTHER is allowed by source "app", not by "web": a page on OTHER cannot use web's key. A text/plain beacon needs
    // no preflight, so the refusal is the server's, not only the browser's.
    for (const [origin, path] of [
      [OTHER, "/v1/batch"],
      [EVIL, "/v1/t"],
      ["null", "/v1/t"],
    ] as const) {
      const e = event();
      const body = path === "/v1/batch" ? { batch: [e] } : e;
      const res = await post(path, body, {
        headers: { authorization: basic("wk-web"), origin, "content-type": "text/plain" },
        env: corsEnv,
      });
      const refusal = await refused(res, 403, "forbidden");
      expect(refusal.error).toMatchObject({ reason: "origin_not_allowed", origin });
      expect(res.headers.has("access-control-allow-origin")).toBe(false);
      const key = `u:${e.userId}`;
      expect((await env.SESSION_STATE.getByName(key).snapshot(key)).exists).toBe(false);
    }
    // Without an Origin (a server library), the same key is accepted.
    expect((await post("/v1/t", event(), { headers: { authorization: basic("wk-web") }, env: corsEnv })).status).toBe(
      200,
    );
  });

  it("lets a page read errors: the any-source rule when the source is unknown, its source's otherwise", async () => {
    const unknownKey = await post("/v1/t", event(), {
      headers: { authorization: basic("nope"), origin: SHOP },
      env: corsEnv,
    });
    expect(unknownKey.status).toBe(401);
    expect(unknownKey.headers.get("access-control-allow-origin")).toBe(SHOP);
    const badJson = await post("/v1/t", null, { raw: "{", headers: { origin: EVIL }, env: corsEnv });
    expect(badJson.status).toBe(400);
    expect(badJson.headers.has("access-control-allow-origin")).toBe(false);
    const disabled = await post("/v1/t", event(), {
      headers: { authorization: basic("wk-old"), origin: OLD },
      env: corsEnv,
    });
    expect(disabled.status).toBe(403);
    expect(disabled.headers.has("access-control-allow-origin")).toBe(false);
  });

  it("allows every origin for a source with '*' (the local source), still without credentials", async () => {
    const res = await post(
      "/v1/t",
      { ...event(), writeKey: WRITE_KEY },
      { headers: { origin: "http://localhost:3000" } },
    );
    expect(res.status).toBe(200);
    expect(res.headers.get("access-control-allow-origin")).toBe("http://localhost:3000");
    expect(res.headers.has("access-control-allow-credentials")).toBe(false);
  });

  it("sends no CORS headers on /health or the admin API", async () => {
    const health = await exports.default.fetch(`${BASE}/health`, { headers: { origin: SHOP } });
    expect(health.status).toBe(200);
    expect(health.headers.has("access-control-allow-origin")).toBe(false);
    const admin = await exports.default.fetch(`${BASE}/v1/admin/dead-letters?source=local`, {
      headers: { origin: SHOP, authorization: `Bearer ${ADMIN_KEY}` },
    });
    expect(admin.status).toBe(200);
    expect(admin.headers.has("access-control-allow-origin")).toBe(false);
    const healthPreflight = await preflight("/health", SHOP, env);
    expect(healthPreflight.headers.has("access-control-allow-origin")).toBe(false);
    const adminPreflight = await preflight("/v1/admin/dead-letters", SHOP, env);
    expect(adminPreflight.headers.has("access-control-allow-origin")).toBe(false);
  });
});

/** Waits for the start of a rate-limit window (windows are aligned to the wall clock). */
async function windowStart(): Promise<void> {
  const periodMs = RATE_LIMIT_PERIOD_SECONDS * 1000;
  const into = Date.now() % periodMs;
  if (into > 100) await new Promise((r) => setTimeout(r, periodMs - into + 20));
}

describe("rate limits", () => {
  afterEach(() => {
    vi.restoreAllMocks();
  });

  const limitedEnv = envWithSources([
    { id: "browser", writeKey: "wk-browser", allowedOrigins: ["*"] },
    { id: "server", writeKey: "wk-server", trustedServer: true },
  ]);
  // An empty batch is refused (400) after the limits: the cheapest request that still counts.
  const cheap = (writeKey: string, ip: string) =>
    post(
      "/v1/batch",
      { batch: [] },
      { headers: { authorization: basic(writeKey), "cf-connecting-ip": ip }, env: limitedEnv },
    );

  it("refuses the 1,001st request from one IP within 10 s with 429 and Retry-After (miniflare enforces it)", async () => {
    const periodMs = RATE_LIMIT_PERIOD_SECONDS * 1000;
    // Each refused empty batch logs a warning: 1,000 of them only bury the test output.
    vi.spyOn(console, "warn").mockImplementation(() => {});
    // Windows are aligned to the wall clock: a run that straddles a boundary (a loaded machine) is not a
    // verdict, so it is repeated on a fresh address.
    for (let attempt = 1; ; attempt++) {
      const ip = `203.0.113.${attempt}`;
      await windowStart();
      const window = Math.floor(Date.now() / periodMs);
      const statuses: number[] = [];
      // Concurrent waves of 50 keep the whole run well inside one 10-second window.
      for (let sent = 0; sent < 1000; sent += 50) {
        const wave = await Promise.all(Array.from({ length: 50 }, () => cheap("wk-browser", ip)));
        statuses.push(...wave.map((r) => r.status));
      }
      const limited = await cheap("wk-browser", ip);
      if (Math.floor(Date.now() / periodMs) !== window && attempt < 6) continue;
      expect(statuses.filter((s) => s === 400)).toHaveLength(1000);
      const body = await refused(limited, 429, "rate_limited");
      expect(limited.headers.get("retry-after")).toBe(String(RATE_LIMIT_PERIOD_SECONDS));
      expect(body.error.scope).toBe("ip");
      // Another IP is not affected, and a trustedServer source skips the per-IP limit on the same IP.
      expect((await cheap("wk-browser", "192.0.2.200")).status).toBe(400);
      expect((await cheap("wk-server", ip)).status).toBe(400);
      // A real request is refused just the same.
      const refusedEvent = await post("/v1/track", event(), {
        headers: { authorization: basic("wk-browser"), "cf-connecting-ip": ip },
        env: limitedEnv,
      });
      expect(refusedEvent.status).toBe(429);
      return;
    }
    // Each attempt waits up to one window for a fresh one and takes ~4–6 s; six fit with room.
  }, 150_000);

  it("refuses a source over its budget with 429 scope source (limiter fault injected)", async () => {
    const seen: string[] = [];
    const limiter = (success: boolean) => ({
      async limit({ key }: { key: string }) {
        seen.push(key);
        return { success };
      },
    });
    const testEnv = { ...limitedEnv, RATE_LIMIT_IP: limiter(true), RATE_LIMIT_SOURCE: limiter(false) } as Env;
    const res = await post("/v1/t", event(), {
      headers: { authorization: basic("wk-browser"), "cf-connecting-ip": "198.51.100.1" },
      env: testEnv,
    });
    const body = await refused(res, 429, "rate_limited");
    expect(body.error.scope).toBe("source");
    expect(res.headers.get("retry-after")).toBe("10");
    expect(seen).toEqual(["ip:198.51.100.1", "source:browser"]);
  });

  it("does not spend the source's budget on requests the IP limit refused", async () => {
    const seen: string[] = [];
    const testEnv = {
      ...limitedEnv,
      RATE_LIMIT_IP: {
        async limit({ key }: { key: string }) {
          seen.push(key);
          return { success: false };
        },
      },
      RATE_LIMIT_SOURCE: {
        async limit({ key }: { key: string }) {
          seen.push(key);
          return { success: true };
        },
      },
    } as unknown as Env;
    const res = post("/v1/t", event(), {
      headers: { authorization: basic("wk-browser"), "cf-connecting-ip": "198.51.100.2" },
      env: testEnv,
    });
    await refused(res, 429, "rate_limited");
    expect(seen).toEqual(["ip:198.51.100.2"]);
  });

  it("fails open when the limiter itself fails", async () => {
    const broken = {
      async limit(): Promise<{ success: boolean }> {
        throw new Error("limiter down");
      },
    };
    const testEnv = { ...limitedEnv, RATE_LIMIT_IP: broken, RATE_LIMIT_SOURCE: broken } as Env;
    const result = await collect("/v1/t", event(), {
      headers: { authorization: basic("wk-browser"), "cf-connecting-ip": "198.51.100.3" },
      env: testEnv,
    });
    expect(result.accepted).toBe(1);
  });
});
