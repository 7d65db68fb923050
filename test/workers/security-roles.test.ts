// The role matrix: every route the app mounts (read from the Hono app itself, so a new route cannot escape) ×
// every kind of credential, with the answer each role must get. Write keys only collect; server keys read and mint
// tokens but never administer; user tokens only read; admin routes need the admin key; a disabled source's key
// collects nothing; wrong keys get nothing. A route missing from the classification fails the test.
//
// The matrix runs on an env without DATABASE_URL: an authorized refresh or catalogue push then stops at
// 503 dependency_unavailable (after authentication) instead of running a batch against the shared database.
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { createApp } from "../../src/app.ts";
import { BATCH_PATHS, BEACON_PATH, SINGLE_EVENT_PATHS, WEBHOOK_PATH } from "../../src/collect/routes.ts";
import { ADMIN_KEY, basic, type ErrorJson, uid, WRITE_KEY } from "./collect-helpers.ts";
import { appFetch, SERVER_KEY, userToken } from "./rank-helpers.ts";

const DISABLED_KEY = "matrix-disabled-write-key";
const ORIGIN = "https://shop.example";

const matrixEnv: Env = {
  ...env,
  DATABASE_URL: "",
  SOURCES: JSON.stringify([
    { id: "local", writeKey: WRITE_KEY, allowedOrigins: ["*"], trustedServer: true },
    { id: "matrix-off", writeKey: DISABLED_KEY, enabled: false },
  ]),
};

/**
 * Who may use a route. public: everyone gets the same answer (no data behind it); absent: no such route in this
 * configuration (404 for everyone); collect: write key as Basic or body `writeKey`; webhook: write key as Basic or
 * `?writeKey=`; beacon: write key as Basic, body `writeKey` or `?writeKey=`; reader: server key or user token; minter:
 * server key; admin: admin key.
 */
type Role = "public" | "absent" | "collect" | "webhook" | "beacon" | "reader" | "minter" | "admin";

interface Probe {
  role: Role;
  method: string;
  path: string;
  body?: unknown;
  /** The status an allowed caller gets (what the probe asks for is harmless: a read, or refused validation). */
  allowed: number;
}

const event = (type: string) => ({
  type,
  userId: uid("matrix"),
  event: "Product Viewed",
  properties: { product_id: "matrix-p1" },
  messageId: uid("m"),
});

function collectionProbes(): Record<string, Probe> {
  const probes: Record<string, Probe> = {};
  const add = (path: string, role: Role, body: () => unknown) => {
    probes[`POST ${path}`] = { role, method: "POST", path, body: body(), allowed: 200 };
    probes[`OPTIONS ${path}`] = { role: "public", method: "OPTIONS", path, allowed: 204 };
    // Other methods: 405 for everyone, before any key is looked at.
    probes[`ALL ${path}`] = { role: "public", method: "GET", path, allowed: 405 };
  };
  for (const [type, paths] of Object.entries(SINGLE_EVENT_PATHS)) {
    for (const path of paths) add(path, "collect", () => event(type));
  }
  for (const path of BATCH_PATHS) add(path, "collect", () => ({ batch: [event("track")] }));
  add(WEBHOOK_PATH, "webhook", () => event("track"));
  add(BEACON_PATH, "beacon", () => ({ batch: [event("track")] }));
  return probes;
}

/** [route as mounted, the path asked, the status an allowed caller gets, the JSON body]. */
type Row = [key: string, path: string, allowed: number, body?: unknown];

/** Probes of one role; an `ALL` route (a guard on every method) is asked with `otherMethod`, one it does not define. */
function fromRows(role: Role, rows: Row[], otherMethod: string): Record<string, Probe> {
  return Object.fromEntries(
    rows.map(([key, path, allowed, body]) => {
      const method = key.startsWith("ALL ") ? otherMethod : (key.split(" ")[0] ?? "");
      return [key, { role, method, path, allowed, ...(body === undefined ? {} : { body }) }];
    }),
  );
}

function rankProbes(): Record<string, Probe> {
  const probes: Record<string, Probe> = {
    ...fromRows(
      "reader",
      [
        ["GET /v1/recommendations", "/v1/recommendations?placement=home", 200],
        ["GET /v1/similar/:productId", "/v1/similar/matrix-p1", 200],
        ["POST /v1/rank", "/v1/rank", 200, { candidates: ["matrix-p1"] }],
        // The reader check guards every method of these paths: one the path does not define is 404 only past it.
        ["ALL /v1/recommendations", "/v1/recommendations", 404],
        ["ALL /v1/rank", "/v1/rank", 404],
        ["ALL /v1/similar/:productId", "/v1/similar/matrix-p1", 404],
      ],
      "PUT",
    ),
    ...fromRows("minter", [["POST /v1/tokens", "/v1/tokens", 200, { userId: "matrix-user" }]], "PUT"),
  };
  for (const [key, path] of [
    ["/v1/recommendations", "/v1/recommendations"],
    ["/v1/rank", "/v1/rank"],
    ["/v1/similar/:productId", "/v1/similar/matrix-p1"],
  ] as const) {
    probes[`OPTIONS ${key}`] = { role: "public", method: "OPTIONS", path, allowed: 204 };
  }
  return probes;
}

const ADMIN_PROBES = fromRows(
  "admin",
  [
    // The admin check guards every path under /v1/admin/, unknown ones included.
    ["ALL /v1/admin/*", "/v1/admin/no-such-thing", 404],
    ["GET /v1/admin/dead-letters", "/v1/admin/dead-letters?source=local", 200],
    ["GET /v1/admin/users/:id", "/v1/admin/users/matrix-nobody", 404],
    // The privacy routes require ?kind=: without it they stop at 400 before touching a store.
    ["DELETE /v1/admin/users/:id", "/v1/admin/users/matrix-nobody", 400],
    ["GET /v1/admin/users/:id/erasure", "/v1/admin/users/matrix-nobody/erasure", 400],
    ["GET /v1/admin/users/:id/suppression", "/v1/admin/users/matrix-nobody/suppression", 400],
    ["PUT /v1/admin/users/:id/suppression", "/v1/admin/users/matrix-nobody/suppression", 400],
    ["DELETE /v1/admin/users/:id/suppression", "/v1/admin/users/matrix-nobody/suppression", 400],
    ["PUT /v1/admin/catalog", "/v1/admin/catalog", 400, { items: [{ id: "" }] }],
    ["POST /v1/admin/refresh", "/v1/admin/refresh", 503],
    ["GET /v1/admin/runs", "/v1/admin/runs", 503],
    ["GET /v1/admin/versions", "/v1/admin/versions", 503],
    ["POST /v1/admin/rollback", "/v1/admin/rollback", 400, { version: 0 }],
    ["POST /v1/admin/catalog/push", "/v1/admin/catalog/push", 503],
    ["GET /v1/admin/ranking-config", "/v1/admin/ranking-config", 200],
    ["PUT /v1/admin/ranking-config", "/v1/admin/ranking-config", 400, { maxLimit: "many" }],
    ["GET /v1/admin/experiments", "/v1/admin/experiments", 200],
    ["PUT /v1/admin/experiments", "/v1/admin/experiments", 400, { experiments: "x" }],
    ["GET /v1/admin/experiments/:id/report", "/v1/admin/experiments/matrix-none/report", 404],
    // An hour count out of range stops at 400 before Redis is asked.
    ["GET /v1/admin/trending", "/v1/admin/trending?hours=0", 400],
  ],
  "DELETE",
);

const BASE_PROBES: Record<string, Probe> = {
  // The request-id middleware on every path; an unknown path is 404 for everyone.
  "ALL /*": { role: "public", method: "GET", path: "/no-such-route", allowed: 404 },
  "GET /health": { role: "public", method: "GET", path: "/health", allowed: 200 },
};

/** The probe for a route the app mounts, or undefined when it is not classified. */
function probeFor(key: string): Probe | undefined {
  const known = { ...BASE_PROBES, ...collectionProbes(), ...rankProbes(), ...ADMIN_PROBES };
  if (known[key]) return known[key];
  // Bench routes exist only with BENCH_ROUTES=true (not here: wrangler.toml's "false"); every one of them is probed.
  const [method = "", path = ""] = key.split(" ");
  if (path.startsWith("/__bench/")) {
    return {
      role: "absent",
      method: method === "ALL" ? "GET" : method,
      path: path.replace("*", "anything"),
      allowed: 404,
    };
  }
  return undefined;
}

interface Credential {
  name: string;
  authorization?: string;
  /** The write key in the JSON body (`writeKey`), or in the query string when the request has no body. */
  bodyKey?: string;
  queryKey?: string;
}

async function credentials(): Promise<Credential[]> {
  return [
    { name: "none" },
    { name: "write key (Basic)", authorization: basic(WRITE_KEY) },
    { name: "write key (body writeKey)", bodyKey: WRITE_KEY },
    { name: "write key (?writeKey=)", queryKey: WRITE_KEY },
    { name: "write key (Bearer)", authorization: `Bearer ${WRITE_KEY}` },
    { name: "disabled source's key (Basic)", authorization: basic(DISABLED_KEY) },
    { name: "server key", authorization: `Bearer ${SERVER_KEY}` },
    { name: "user token", authorization: `Bearer ${await userToken("u:matrix-user")}` },
    { name: "admin key", authorization: `Bearer ${ADMIN_KEY}` },
    { name: "wrong key (Bearer)", authorization: "Bearer not-a-configured-key" },
    { name: "wrong key (Basic)", authorization: basic("not-a-configured-key") },
  ];
}

/** The status a credential must get on a route of this role. */
function expected(probe: Probe, credential: Credential): number {
  const allowedFor: Record<Role, string[] | "everyone"> = {
    public: "everyone",
    absent: "everyone",
    collect: ["write key (Basic)", "write key (body writeKey)"],
    webhook: ["write key (Basic)", "write key (?writeKey=)"],
    beacon: ["write key (Basic)", "write key (body writeKey)", "write key (?writeKey=)"],
    reader: ["server key", "user token"],
    minter: ["server key"],
    admin: ["admin key"],
  };
  const allowed = allowedFor[probe.role];
  if (allowed === "everyone" || allowed.includes(credential.name)) return probe.allowed;
  // A known but disabled source is told so on collection routes; everywhere else its key is just not a credential.
  const collection = probe.role === "collect" || probe.role === "webhook" || probe.role === "beacon";
  if (collection && credential.name.startsWith("disabled")) return 403;
  return 401;
}

function request(probe: Probe, credential: Credential): Promise<Response> {
  const headers: Record<string, string> = { origin: ORIGIN, "access-control-request-method": "POST" };
  if (credential.authorization) headers.authorization = credential.authorization;
  const url = new URL(probe.path, "http://lastmile.test");
  const hasBody = probe.body !== undefined;
  if (credential.queryKey || (credential.bodyKey && !hasBody)) {
    url.searchParams.set("writeKey", credential.queryKey ?? credential.bodyKey ?? "");
  }
  const init: RequestInit = { method: probe.method, headers };
  if (hasBody) {
    headers["content-type"] = "application/json";
    const body = credential.bodyKey ? { ...(probe.body as object), writeKey: credential.bodyKey } : probe.body;
    init.body = JSON.stringify(body);
  }
  return appFetch(matrixEnv, `${url.pathname}${url.search}`, init);
}

describe("role matrix", () => {
  const routeKeys = [...new Set(createApp().routes.map((r) => `${r.method} ${r.path}`))];

  it("classifies every route the app mounts", () => {
    expect(routeKeys.length).toBeGreaterThan(40);
    const unclassified = routeKeys.filter((key) => probeFor(key) === undefined);
    expect(unclassified, "routes without a role in security-roles.test.ts").toEqual([]);
  });

  it("answers every route × credential as the route's role says", { timeout: 180_000 }, async () => {
    const creds = await credentials();
    const mismatches: string[] = [];
    let requests = 0;
    for (const key of routeKeys) {
      const probe = probeFor(key);
      if (!probe) continue;
      await Promise.all(
        creds.map(async (credential) => {
          const res = await request(probe, credential);
          requests++;
          const want = expected(probe, credential);
          const text = await res.text();
          const where = `${key} (${probe.method} ${probe.path}) with ${credential.name}: ${res.status}`;
          if (res.status !== want) {
            mismatches.push(`${where}, expected ${want}: ${text.slice(0, 200)}`);
            return;
          }
          if (want !== 401 && want !== 403) return;
          // A refusal is the error object and nothing else.
          const body = JSON.parse(text) as ErrorJson;
          if (
            Object.keys(body).join() !== "error" ||
            body.error.code !== (want === 401 ? "unauthorized" : "forbidden")
          ) {
            mismatches.push(`${where}: not a bare ${want} error: ${text.slice(0, 200)}`);
          }
          const challenge = res.headers.get("www-authenticate");
          if (probe.role === "admin" && !challenge?.includes('realm="lastmile-admin"')) {
            mismatches.push(`${where}: admin refusal without its Bearer challenge`);
          }
        }),
      );
    }
    console.log(
      `role matrix: ${routeKeys.length} routes × ${creds.length} credentials = ${requests} requests, ${mismatches.length} mismatches`,
    );
    expect(mismatches).toEqual([]);
    expect(requests).toBe(routeKeys.length * creds.length);
  });
});
