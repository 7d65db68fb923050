import { describe, expect, it } from "vitest";
import { refreshOutputs } from "../../src/batch/compute.ts";
import { DEFAULT_MAX_BATCHES } from "../../src/batch/loader.ts";
import { ConfigError, loadConfig } from "../../src/config.ts";
import { ApiError, ERROR_STATUS, errorBody } from "../../src/errors.ts";
import { describeError } from "../../src/log.ts";
import { isLocalDatabase } from "../../src/stores/db.ts";

// Only the string settings matter to the loader; bindings are not read there.
function env(vars: Record<string, string>): Env {
  return { LASTMILE_ENV: "test", HEALTH_TIMEOUT_MS: "", NEON_LOCAL_WS_PROXY: "", ...vars } as unknown as Env;
}

describe("loadConfig", () => {
  it("splits comma-separated key lists and drops blanks", () => {
    const config = loadConfig(env({ ADMIN_KEYS: " a , b,,c ", SERVER_KEYS: "" }));
    expect(config.adminKeys).toEqual(["a", "b", "c"]);
    expect(config.serverKeys).toEqual([]);
  });

  it("leaves Postgres and Redis unconfigured when their secrets are absent", () => {
    const config = loadConfig(env({}));
    expect(config.database).toBeUndefined();
    expect(config.redis).toBeUndefined();
    expect(config.healthTimeoutMs).toBe(2000);
  });

  it("rejects malformed settings with a message naming the setting", () => {
    expect(() => loadConfig(env({ DATABASE_URL: "not a url" }))).toThrow(/DATABASE_URL/);
    expect(() => loadConfig(env({ UPSTASH_REDIS_REST_URL: "http://x" }))).toThrow(ConfigError);
    expect(() => loadConfig(env({ HEALTH_TIMEOUT_MS: "-5" }))).toThrow(/HEALTH_TIMEOUT_MS/);
  });

  it("takes only an http(s) URL as the Redis REST endpoint (not the rediss:// string shown beside it)", () => {
    // @upstash/redis throws on any other scheme at every call site; refused here, the mistake has one clear message.
    const redis = { UPSTASH_REDIS_REST_TOKEN: "t" };
    expect(() => loadConfig(env({ ...redis, UPSTASH_REDIS_REST_URL: "rediss://default:t@127.0.0.1:6379" }))).toThrow(
      /UPSTASH_REDIS_REST_URL must be an https or http URL/,
    );
    for (const ok of ["https://eu1-x.upstash.io", "http://127.0.0.1:8079"]) {
      expect(loadConfig(env({ ...redis, UPSTASH_REDIS_REST_URL: ok })).redis?.url).toBe(ok);
    }
  });

  it("reads the loader's settings, with the batch ceiling defaulting to the loader's own", () => {
    expect(loadConfig(env({})).loader).toEqual({
      batchSize: 500,
      budgetMs: 20_000,
      maxBatches: DEFAULT_MAX_BATCHES,
      deleteAcked: true,
    });
    const set = loadConfig(env({ LOADER_MAX_BATCHES: "50", LOADER_BUDGET_MS: "120000", LOADER_DELETE_ACKED: "false" }));
    expect(set.loader).toMatchObject({ maxBatches: 50, budgetMs: 120_000, deleteAcked: false });
    expect(() => loadConfig(env({ LOADER_MAX_BATCHES: "0" }))).toThrow(/LOADER_MAX_BATCHES/);
  });

  it("refuses a LOADER_BATCH_SIZE above 1,000 instead of clamping it", () => {
    expect(loadConfig(env({ LOADER_BATCH_SIZE: "1000" })).loader.batchSize).toBe(1000);
    expect(() => loadConfig(env({ LOADER_BATCH_SIZE: "1001" }))).toThrow(ConfigError);
    expect(() => loadConfig(env({ LOADER_BATCH_SIZE: "5000" }))).toThrow(/LOADER_BATCH_SIZE must be at most 1,000/);
  });

  it("refuses a SERVER_KEYS entry shaped like a signed user token, naming the variable but not the key", () => {
    const key = "lm.prod.k1";
    expect(loadConfig(env({ SERVER_KEYS: "plain-key-1, key_with-dashes" })).serverKeys).toEqual([
      "plain-key-1",
      "key_with-dashes",
    ]);
    let thrown: unknown;
    try {
      loadConfig(env({ SERVER_KEYS: `plain-key-1,${key}` }));
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toBeInstanceOf(ConfigError);
    expect((thrown as Error).message).toMatch(/^SERVER_KEYS: entry 2 /);
    expect((thrown as Error).message).not.toContain(key);
    // Two dots in another shape (not three base64url parts) are fine.
    expect(loadConfig(env({ SERVER_KEYS: "a.b.c.d" })).serverKeys).toEqual(["a.b.c.d"]);
  });

  it("reads DATABASE_SCHEMA, refusing a name Postgres would need quoting for", () => {
    expect(loadConfig(env({})).databaseSchema).toBeUndefined();
    expect(loadConfig(env({ DATABASE_SCHEMA: "public" })).databaseSchema).toBeUndefined();
    expect(loadConfig(env({ DATABASE_SCHEMA: "lastmile_2" })).databaseSchema).toBe("lastmile_2");
    for (const bad of ["Lastmile", "1abc", 'x"; drop table events; --', "a-b"]) {
      expect(() => loadConfig(env({ DATABASE_SCHEMA: bad })), bad).toThrow(/DATABASE_SCHEMA/);
    }
  });

  it("reads the outputs an external model owns, refusing unknown names", () => {
    expect(loadConfig(env({})).externalOutputs).toEqual([]);
    expect(loadConfig(env({ EXTERNAL_OUTPUTS: "similar, user_candidates,similar" })).externalOutputs).toEqual([
      "similar",
      "user_candidates",
    ]);
    expect(() => loadConfig(env({ EXTERNAL_OUTPUTS: "similar,embeddings" }))).toThrow(/EXTERNAL_OUTPUTS.*embeddings/);
    expect(refreshOutputs([])).toBeUndefined();
    expect(refreshOutputs(["similar", "popular"])).toEqual([
      "bought_together",
      "next_items",
      "trending",
      "user_candidates",
    ]);
  });

  it("reads each env object once", () => {
    const e = env({ ADMIN_KEYS: "a" });
    expect(loadConfig(e)).toBe(loadConfig(e));
  });
});

describe("error model", () => {
  it("maps every code to a 4xx or 5xx status", () => {
    for (const status of Object.values(ERROR_STATUS)) expect(status).toBeGreaterThanOrEqual(400);
    expect(new ApiError("payload_too_large", "x").status).toBe(413);
  });

  it("puts code, message, requestId and details in one error object", () => {
    const body = errorBody(new ApiError("validation_failed", "bad", { details: { field: "userId" } }), "r1");
    expect(body).toEqual({ error: { code: "validation_failed", message: "bad", requestId: "r1", field: "userId" } });
  });
});

describe("isLocalDatabase", () => {
  it("treats loopback hosts as local and everything else as Neon", () => {
    expect(isLocalDatabase("postgres://u:p@127.0.0.1:5432/db")).toBe(true);
    expect(isLocalDatabase("postgres://u:p@localhost/db")).toBe(true);
    expect(isLocalDatabase("postgres://u:p@ep-cool-1.eu-central-1.aws.neon.tech/db")).toBe(false);
    expect(isLocalDatabase("postgres://u:p@127.evil.com/db")).toBe(false);
  });
});

describe("describeError", () => {
  it("removes credentials from connection strings", () => {
    expect(describeError(new Error("cannot reach postgres://me:pw@host/db"))).toBe(
      "cannot reach postgres://***@host/db",
    );
  });

  it("reads the message of an error event (the Neon driver's failed connect rejects with one)", () => {
    const event = { type: "error", message: "connect ECONNREFUSED postgres://me:pw@host" };
    expect(describeError(event)).toBe("connect ECONNREFUSED postgres://***@host");
    expect(describeError({})).toBe("[object Object]");
  });
});
