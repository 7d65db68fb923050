// The refresh and the admin API of the batch loop in workerd: POST /v1/admin/refresh (load → compute → publish
// started) against a Postgres schema of this test's own, the coordinator's alarms run to the end, then runs,
// versions, rollback and the catalogue push over HTTP, and the admin key on every route.
import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LOCAL_KEYS } from "../../scripts/lib/local-keys.ts";
import { ROLLBACK_BODY_LIMIT } from "../../src/admin/batch.ts";
import { createApp } from "../../src/app.ts";
import { decodePointer, decodeUserList } from "../../src/publish/codec.ts";
import { COORDINATOR_NAME, type PublishCoordinator } from "../../src/publish/coordinator.ts";
import { POINTER_KEY, userListKey } from "../../src/publish/keys.ts";
import { countingKv, createSchema, drain, dropSchema, type OpLog, puts, type Query } from "./publish-helpers.ts";

const app = createApp();
const ADMIN = { authorization: `Bearer ${LOCAL_KEYS.adminKey}` };
let schema = "";
let q: Query;
let testEnv: Env;
const log: OpLog = [];
const stub = () => env.PUBLISH_COORDINATOR.getByName(COORDINATOR_NAME);
const tag = crypto.randomUUID().slice(0, 8);

const call = (method: string, path: string, body?: unknown, headers: Record<string, string> = ADMIN) =>
  app.request(
    path,
    {
      method,
      headers: { ...headers, ...(body === undefined ? {} : { "content-type": "application/json" }) },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    },
    testEnv,
  );

beforeAll(async () => {
  ({ schema, q } = await createSchema("refresh"));
  // Redis left out: the load step reports not_configured, so this test never drains the shared event stream.
  testEnv = { ...env, DATABASE_SCHEMA: schema, UPSTASH_REDIS_REST_URL: "" };
  await runInDurableObject(stub(), (instance: PublishCoordinator) => {
    instance.wrapKv = countingKv(log);
  });
  await q(
    `insert into catalog (id, title, category, price) select $1 || '-p' || g, 'item ' || g, 'cat' || (g % 2), g
     from generate_series(1, 6) g`,
    [tag],
  );
  // Six users, each viewing three products within the last day: co-visitation, popularity and candidates.
  await q(
    `insert into interactions (message_id, position, user_key, product_id, kind, weight, event_time)
     select $1 || '-m' || u || '-' || i, 0, 'u:' || $1 || '-user' || u, $1 || '-p' || (((u + i) % 6) + 1), 'view', 1,
            now() - interval '1 hour' * (u + i)
     from generate_series(1, 6) u, generate_series(0, 2) i`,
    [tag],
  );
});

afterAll(async () => {
  await dropSchema(schema);
});

describe("admin API auth", () => {
  it("answers 401 without or with a wrong admin key on every batch route", async () => {
    for (const [method, path] of [
      ["POST", "/v1/admin/refresh"],
      ["GET", "/v1/admin/runs"],
      ["GET", "/v1/admin/versions"],
      ["POST", "/v1/admin/rollback"],
      ["POST", "/v1/admin/catalog/push"],
    ] as const) {
      expect((await call(method, path, undefined, {})).status, `${method} ${path}`).toBe(401);
      const wrong = await call(method, path, undefined, { authorization: "Bearer nope" });
      expect(wrong.status, `${method} ${path}`).toBe(401);
      expect(((await wrong.json()) as { error: { code: string } }).error.code).toBe("unauthorized");
    }
  });
});

describe("refresh → runs → versions → rollback → push", () => {
  it("runs a refresh now and returns its run record with its steps", async () => {
    const res = await call("POST", "/v1/admin/refresh");
    const body = (await res.json()) as {
      run: { id: number; kind: string; status: string; steps: Array<{ kind: string; status: string }> };
      report: { load: { status: string }; compute: { status: string; rows: number }; publish: { status: string } };
    };
    expect(res.status, JSON.stringify(body)).toBe(200);
    expect(body.run.kind).toBe("refresh");
    expect(body.run.status).toBe("ok");
    expect(body.report.load.status).toBe("not_configured");
    expect(body.report.compute.status).toBe("ok");
    expect(body.report.compute.rows).toBeGreaterThan(0);
    expect(body.report.publish.status).toBe("started");
    expect(body.run.steps.map((s) => s.kind)).toEqual(["compute", "publish"]);

    await drain(stub());
    const pointer = decodePointer(await env.ONLINE_STORE.get(POINTER_KEY));
    expect(pointer?.version).toBe(1);
    const [users] = await q<{ n: number }>("select count(*)::int as n from user_candidates");
    expect(users?.n).toBeGreaterThan(0);
    expect(puts(log).filter((k) => k.startsWith("u:"))).toHaveLength(users?.n ?? -1);
    const [first] = await q<{ user_key: string }>("select user_key from user_candidates order by user_key limit 1");
    const list = decodeUserList(await env.ONLINE_STORE.get(userListKey(first?.user_key ?? "")), 1);
    expect(list?.items.length).toBeGreaterThan(0);
    // Every invocation of the coordinator stayed within the platform's KV budget.
    expect(Math.max(...log.map((ops) => ops.length))).toBeLessThanOrEqual(1000);
  });

  it("lists runs newest first with keys written, duration and status", async () => {
    const res = await call("GET", "/v1/admin/runs?limit=10");
    expect(res.status).toBe(200);
    const { runs } = (await res.json()) as {
      runs: Array<{
        id: number;
        kind: string;
        status: string;
        keysWritten: number | null;
        durationMs: number | null;
        lagMs: number | null;
        parentId: number | null;
      }>;
    };
    const publish = runs.find((r) => r.kind === "publish");
    expect(publish?.status).toBe("ok");
    expect(publish?.keysWritten).toBeGreaterThan(0);
    expect(publish?.durationMs).toBeGreaterThanOrEqual(0);
    expect(publish?.lagMs).toBeGreaterThanOrEqual(0);
    expect(publish?.parentId).toBe(runs.find((r) => r.kind === "refresh")?.id);
    expect(runs.map((r) => r.id)).toEqual([...runs.map((r) => r.id)].sort((a, b) => b - a));
    expect((await call("GET", "/v1/admin/runs?limit=0")).status).toBe(400);
    expect((await call("GET", "/v1/admin/runs?kind=nope")).status).toBe(400);
  });

  it("shows versions, rolls back, and refuses impossible rollbacks with clear codes", async () => {
    // A second version: one user's list changes.
    const [first] = await q<{ user_key: string }>("select user_key from user_candidates order by user_key limit 1");
    await q("update user_candidates set scores[1] = scores[1] + 10 where user_key = $1", [first?.user_key]);
    const started = await stub().start({ trigger: "admin", schema });
    expect(started.status).toBe("started");
    await drain(stub());

    const versions = (await (await call("GET", "/v1/admin/versions")).json()) as {
      current: { version: number };
      published: Array<{ version: number; current: boolean }>;
      rollbackTargets: number[];
      models: Array<{ model: string; status: string }>;
      publishing: unknown;
    };
    expect(versions.current.version).toBe(2);
    expect(versions.published.map((v) => [v.version, v.current])).toEqual([
      [2, true],
      [1, false],
    ]);
    expect(versions.rollbackTargets).toEqual([2, 1]);
    expect(versions.publishing).toBeNull();
    expect(versions.models.some((m) => m.status === "published")).toBe(true);

    const back = await call("POST", "/v1/admin/rollback", { version: 1 });
    expect(back.status).toBe(200);
    expect(await back.json()).toMatchObject({ version: 1, previous: 2 });
    expect(decodePointer(await env.ONLINE_STORE.get(POINTER_KEY))?.version).toBe(1);

    const missing = await call("POST", "/v1/admin/rollback", { version: 42 });
    expect(missing.status).toBe(404);
    expect(((await missing.json()) as { error: { code: string } }).error.code).toBe("version_not_found");
    expect((await call("POST", "/v1/admin/rollback", { version: "1" })).status).toBe(400);
    // The body is capped and must be JSON; neither refusal moves the pointer.
    const codeOf = async (r: Response) => ((await r.json()) as { error: { code: string } }).error.code;
    const rollback = (body: string, type: string) =>
      app.request("/v1/admin/rollback", { method: "POST", headers: { ...ADMIN, "content-type": type }, body }, testEnv);
    const padded = JSON.stringify({ version: 2, pad: "x".repeat(ROLLBACK_BODY_LIMIT) });
    const big = await rollback(padded, "application/json");
    expect([big.status, await codeOf(big)]).toEqual([413, "payload_too_large"]);
    const plain = await rollback(JSON.stringify({ version: 2 }), "text/plain");
    expect([plain.status, await codeOf(plain)]).toEqual([415, "unsupported_media_type"]);
    expect(decodePointer(await env.ONLINE_STORE.get(POINTER_KEY))?.version).toBe(1);

    // While a publish runs, a rollback is refused with 409.
    await q("update user_candidates set scores[1] = scores[1] + 10 where user_key = $1", [first?.user_key]);
    expect((await stub().start({ trigger: "admin", schema })).status).toBe("started");
    const busy = await call("POST", "/v1/admin/rollback", { version: 2 });
    expect(busy.status).toBe(409);
    expect(((await busy.json()) as { error: { code: string } }).error.code).toBe("publish_in_progress");
    await drain(stub());
  });

  it("pushes a stock change to the edge at once", async () => {
    await q("update catalog set in_stock = false, updated_at = now() where id = $1", [`${tag}-p1`]);
    const res = await call("POST", "/v1/admin/catalog/push");
    expect(res.status).toBe(200);
    const body = (await res.json()) as { status: string; version: number };
    expect(body.status).toBe("published");
    const pointer = decodePointer(await env.ONLINE_STORE.get(POINTER_KEY));
    expect(pointer?.version).toBe(body.version);
    expect(pointer?.catalog?.version).toBe(body.version);
    const again = await call("POST", "/v1/admin/catalog/push");
    expect(((await again.json()) as { status: string }).status).toBe("unchanged");
  });
});

describe("an external model's output", () => {
  it("is left out of the refresh's compute when EXTERNAL_OUTPUTS names it, and published as it is", async () => {
    // The contract of docs/recommenders.md: an external version and its rows, written in one transaction.
    const [external] = await q<{ id: number }>(
      `insert into model_versions (model, version, source, status, params, finished_at)
       values ('similar', $1, 'external', 'ready', '{"method": "embeddings"}', now()) returning id::int as id`,
      [`dbt-${tag}`],
    );
    await q("delete from item_neighbors where kind = 'similar'");
    await q(
      `insert into item_neighbors (kind, product_id, neighbor_id, score, rank, model_version)
       values ('similar', $1, $2, 0.9, 1, $3)`,
      [`${tag}-p1`, `${tag}-p6`, external?.id],
    );
    const [before] = await q<{ id: number }>("select max(id)::int as id from model_versions");
    const owned = { ...testEnv, EXTERNAL_OUTPUTS: "similar" };
    const res = await app.request("/v1/admin/refresh", { method: "POST", headers: ADMIN }, owned);
    const body = (await res.json()) as { report: { compute: { status: string } } };
    expect(res.status, JSON.stringify(body)).toBe(200);
    expect(body.report.compute.status).toBe("ok");
    await drain(stub());
    // The external rows stand; every other output was recomputed.
    const similar = await q<{ product_id: string; model_version: number }>(
      "select product_id, model_version::int as model_version from item_neighbors where kind = 'similar'",
    );
    expect(similar).toEqual([{ product_id: `${tag}-p1`, model_version: external?.id }]);
    const versions = await q<{ model: string }>("select model from model_versions where id > $1 order by model", [
      before?.id,
    ]);
    expect(versions.map((v) => v.model)).toEqual([
      "bought_together",
      "next_items",
      "popular",
      "trending",
      "user_candidates",
    ]);
    const pointer = decodePointer(await env.ONLINE_STORE.get(POINTER_KEY));
    expect(pointer?.modelVersions.similar).toBe(external?.id);
  });
});
