// Secrets never reach a response or a log line. The Worker runs with secrets of its own (a Postgres password, a
// Redis token, admin and server keys, a token secret, a server-side write key), its Postgres and Redis pointed at a
// port where nothing listens, and the requests that go wrong are made: 5xx from the admin API, degraded health,
// collection whose session objects fail with a connection string in the error, a misconfigured deployment. Every
// response (body and headers) and every console line written meanwhile (src/log.ts writes through console) is
// searched for every secret.
import { env } from "cloudflare:workers";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { signUserToken } from "../../src/rank/tokens.ts";
import { basic, recordingSessions, uid } from "./collect-helpers.ts";
import { appFetch, userToken } from "./rank-helpers.ts";

const secret = (name: string) => `${name}${crypto.randomUUID().replace(/-/g, "")}`;
const PG_PASSWORD = secret("pgpass");
const DATABASE_URL = `postgres://lastmile:${PG_PASSWORD}@127.0.0.1:9/lastmile`;
const REDIS_TOKEN = secret("redistoken");
const ADMIN = secret("adminkey");
const SERVER = secret("serverkey");
const TOKEN_SECRET = secret("tokensecret");
const WRITE_KEY = secret("serverwritekey");
const SECRETS = { PG_PASSWORD, DATABASE_URL, REDIS_TOKEN, ADMIN, SERVER, TOKEN_SECRET, WRITE_KEY };

const brokenEnv = (patch: Partial<Env> = {}): Env => ({
  ...env,
  DATABASE_URL,
  NEON_LOCAL_WS_PROXY: "127.0.0.1:9/v2",
  UPSTASH_REDIS_REST_URL: "http://127.0.0.1:9",
  UPSTASH_REDIS_REST_TOKEN: REDIS_TOKEN,
  ADMIN_KEYS: ADMIN,
  SERVER_KEYS: SERVER,
  USER_TOKEN_SECRETS: TOKEN_SECRET,
  SOURCES: JSON.stringify([{ id: "backend", writeKey: WRITE_KEY, trustedServer: true }]),
  ...patch,
});

/** Every console line while a test runs. */
const lines: string[] = [];
const show = (v: unknown) => (v instanceof Error ? `${v.message} ${v.stack ?? ""} ${String(v.cause)}` : String(v));

beforeEach(() => {
  lines.length = 0;
  for (const method of ["log", "info", "warn", "error", "debug"] as const) {
    vi.spyOn(console, method).mockImplementation((...args: unknown[]) => {
      lines.push(
        args.map((a) => (typeof a === "object" && !(a instanceof Error) ? JSON.stringify(a) : show(a))).join(" "),
      );
    });
  }
});

afterEach(() => {
  vi.restoreAllMocks();
});

/** Which secrets `text` holds, by name. */
function secretsIn(text: string): string[] {
  return Object.entries(SECRETS)
    .filter(([, value]) => text.includes(value))
    .map(([name]) => name);
}

interface Seen {
  status: number;
  body: string;
}

/** The response (body and headers), searched for every secret. */
async function call(testEnv: Env, path: string, init: RequestInit = {}): Promise<Seen> {
  const res = await appFetch(testEnv, path, init);
  const body = await res.text();
  const headers = [...res.headers.entries()].map(([k, v]) => `${k}: ${v}`).join("\n");
  expect(secretsIn(`${headers}\n${body}`), `${init.method ?? "GET"} ${path} answered ${res.status}: ${body}`).toEqual(
    [],
  );
  return { status: res.status, body };
}

const admin = (method: string, body?: unknown): RequestInit => ({
  method,
  headers: { authorization: `Bearer ${ADMIN}`, ...(body === undefined ? {} : { "content-type": "application/json" }) },
  ...(body === undefined ? {} : { body: JSON.stringify(body) }),
});

function expectCleanLogs(): void {
  expect(lines.length, "the failures were logged").toBeGreaterThan(0);
  const dirty = lines.filter((line) => secretsIn(line).length > 0);
  expect(dirty.map((line) => `${secretsIn(line).join(",")}: ${line.slice(0, 300)}`)).toEqual([]);
}

describe("secrets in 5xx answers and their logs", () => {
  it("the admin API with Postgres and Redis unreachable", { timeout: 60_000 }, async () => {
    const e = brokenEnv();
    const seen = [
      await call(e, "/v1/admin/runs", admin("GET")),
      await call(e, "/v1/admin/versions", admin("GET")),
      await call(e, "/v1/admin/refresh", admin("POST")),
      await call(e, "/v1/admin/catalog", admin("PUT", { items: [{ id: "s1", title: "Mug" }] })),
    ];
    for (const s of seen) expect(s.status, s.body).toBeGreaterThanOrEqual(500);
    expectCleanLogs();
  });

  it("health with every dependency failing names them without credentials", async () => {
    const { status, body } = await call(brokenEnv(), "/health?strict=1");
    expect(status).toBe(503);
    const report = JSON.parse(body) as { checks: Record<string, { status: string }> };
    expect(report.checks.postgres?.status).toBe("error");
    expect(report.checks.redis?.status).toBe("error");
  });

  it("collection whose session objects fail with a connection string in the error", async () => {
    const sessions = recordingSessions(() => new Error(`connect ECONNREFUSED ${DATABASE_URL}`));
    const e = brokenEnv({ SESSION_STATE: sessions.namespace });
    const { status } = await call(e, "/v1/track", {
      method: "POST",
      headers: { authorization: basic(WRITE_KEY), "content-type": "application/json" },
      body: JSON.stringify({ userId: uid("secrets"), event: "Product Viewed", messageId: uid("m") }),
    });
    expect(status).toBe(503);
    expect(sessions.calls.length).toBeGreaterThan(0);
    expectCleanLogs();
  });

  it("ranking whose session objects and Redis fail, for a server key and a user token", async () => {
    const failing = {
      getByName: () => ({
        snapshot: () => Promise.reject(new Error(`session store at ${DATABASE_URL} refused`)),
      }),
    } as unknown as Env["SESSION_STATE"];
    const e = brokenEnv({ SESSION_STATE: failing });
    for (const auth of [SERVER, (await signUserToken(TOKEN_SECRET, "u:secrets-u1", Date.now(), 600)).token]) {
      const { status } = await call(e, "/v1/recommendations?placement=home&userId=secrets-u1&explain=true", {
        headers: { authorization: `Bearer ${auth}` },
      });
      expect([200, 403]).toContain(status);
    }
    const minted = await call(e, "/v1/tokens", {
      method: "POST",
      headers: { authorization: `Bearer ${SERVER}`, "content-type": "application/json" },
      body: JSON.stringify({ userId: "secrets-u1" }),
    });
    expect(minted.status).toBe(200);
  });

  it("a misconfigured deployment: 500 with the reason in the log, never the values", async () => {
    const cases: Array<Partial<Env>> = [
      // Two sources with the same write key: the message names the sources, not the key.
      {
        SOURCES: JSON.stringify([
          { id: "one", writeKey: WRITE_KEY },
          { id: "two", writeKey: WRITE_KEY },
        ]),
      },
      // Unparseable SOURCES holding a key.
      { SOURCES: `[{"id":"one","writeKey":"${WRITE_KEY}"` },
      // A Redis URL without its token; a database URL that is not one (with the password in it).
      { UPSTASH_REDIS_REST_TOKEN: "" },
      { DATABASE_URL: `not a url ${PG_PASSWORD}` },
    ];
    for (const patch of cases) {
      const e = brokenEnv(patch);
      expect((await call(e, "/v1/recommendations", { headers: { authorization: `Bearer ${SERVER}` } })).status).toBe(
        500,
      );
      expect((await call(e, "/v1/admin/runs", admin("GET"))).status).toBe(500);
      const collected = await call(e, "/v1/track", {
        method: "POST",
        headers: { authorization: basic(WRITE_KEY), "content-type": "application/json" },
        body: JSON.stringify({ userId: "u", event: "e" }),
      });
      expect(collected.status).toBe(500);
    }
    // No token secret configured: minting is a 500, not a token signed with nothing.
    const unsigned = await call(brokenEnv({ USER_TOKEN_SECRETS: "" }), "/v1/tokens", {
      method: "POST",
      headers: { authorization: `Bearer ${SERVER}`, "content-type": "application/json" },
      body: JSON.stringify({ userId: "u" }),
    });
    expect(unsigned.status).toBe(500);
    expectCleanLogs();
  });
});

// The helpers' tokens are signed with the local stack's secret: refused here, naming no secret either.
it("a token signed with another secret is refused without naming any secret", async () => {
  const foreign = await userToken("u:secrets-u1");
  const { status } = await call(brokenEnv(), "/v1/recommendations", {
    headers: { authorization: `Bearer ${foreign}` },
  });
  expect(status).toBe(401);
});
