// Admin routes with the warehouse unreachable (Postgres on a port where nothing listens) or not configured: every
// one answers 503 dependency_unavailable with Retry-After — a fault of a dependency, for the client to retry —
// never 500, and no uncaught error escapes the Neon driver (the test run would fail on one).
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { RANKING_CONFIG_KEY } from "../../src/rank/config.ts";
import { ADMIN_KEY } from "./collect-helpers.ts";
import { appFetch } from "./rank-helpers.ts";

const down = (): Env => ({
  ...env,
  DATABASE_URL: "postgres://lastmile@127.0.0.1:9/lastmile",
  NEON_LOCAL_WS_PROXY: "127.0.0.1:9/v2",
});
const auth = { authorization: `Bearer ${ADMIN_KEY}` };

describe("admin routes with Postgres down", () => {
  it("answer 503 dependency_unavailable with Retry-After", async () => {
    // An experiment to report on (the document lives in KV, which is up).
    const put = await appFetch(env, "/v1/admin/experiments", {
      method: "PUT",
      headers: { ...auth, "content-type": "application/json" },
      body: JSON.stringify({
        experiments: [
          {
            id: "faults-report",
            placement: "post_purchase",
            variants: [
              { id: "a", ranker: { kind: "popular" } },
              { id: "b", ranker: { kind: "ranker" } },
            ],
          },
        ],
      }),
    });
    expect(put.status, await put.text()).toBe(200);
    for (const [method, path] of [
      ["GET", "/v1/admin/experiments/faults-report/report"],
      ["DELETE", "/v1/admin/users/faults-user?kind=user"],
      ["GET", "/v1/admin/users/faults-user/erasure?kind=user"],
      ["GET", "/v1/admin/runs"],
      ["GET", "/v1/admin/versions"],
    ] as const) {
      const res = await appFetch(down(), path, { method, headers: auth });
      const text = await res.text();
      expect(res.status, `${method} ${path}: ${text}`).toBe(503);
      expect((JSON.parse(text) as { error: { code: string } }).error.code).toBe("dependency_unavailable");
      expect(res.headers.get("retry-after"), path).toMatch(/^\d+$/);
    }
  });

  it("answer 503 with Retry-After when a route itself finds the warehouse missing or failing", async () => {
    const item = JSON.stringify({ items: [{ id: "faults-p1", title: "A product" }] });
    const json = { ...auth, "content-type": "application/json" };
    const noDatabase: Env = { ...env, DATABASE_URL: "" };
    for (const [name, testEnv, method, path, body] of [
      // The catalogue write fails (Postgres down) / there is no database at all.
      ["down", down(), "PUT", "/v1/admin/catalog", item],
      ["unset", noDatabase, "PUT", "/v1/admin/catalog", item],
      ["unset", noDatabase, "POST", "/v1/admin/refresh", undefined],
      ["unset", noDatabase, "GET", "/v1/admin/runs", undefined],
      ["unset", noDatabase, "POST", "/v1/admin/catalog/push", undefined],
    ] as const) {
      const res = await appFetch(testEnv, path, { method, headers: json, ...(body ? { body } : {}) });
      const text = await res.text();
      const what = `${name}: ${method} ${path}: ${text}`;
      expect(res.status, what).toBe(503);
      expect((JSON.parse(text) as { error: { code: string } }).error.code, what).toBe("dependency_unavailable");
      expect(res.headers.get("retry-after"), what).toMatch(/^\d+$/);
    }
  });

  it("answer 503 with Retry-After to a document PUT when the version counter does not answer, and store nothing", async () => {
    const broken = {
      getByName: () => ({
        nextDocVersion: () => Promise.reject(new Error("Durable Object reset because its code was updated")),
      }),
    } as unknown as Env["PUBLISH_COORDINATOR"];
    const before = await env.ONLINE_STORE.get(RANKING_CONFIG_KEY);
    const res = await appFetch({ ...env, PUBLISH_COORDINATOR: broken }, "/v1/admin/ranking-config", {
      method: "PUT",
      headers: { ...auth, "content-type": "application/json" },
      body: JSON.stringify({ maxLimit: 40 }),
    });
    const text = await res.text();
    expect(res.status, text).toBe(503);
    expect((JSON.parse(text) as { error: { code: string } }).error.code).toBe("dependency_unavailable");
    expect(res.headers.get("retry-after")).toMatch(/^\d+$/);
    expect(await env.ONLINE_STORE.get(RANKING_CONFIG_KEY)).toBe(before);
  });
});
