// The one config loader: reads the Worker's bindings and secrets once per `env` object, validates them and
// hands the rest of the code typed settings. Secrets are documented in docs/configuration.md.

import { OUTPUT_MODELS, type OutputModel } from "./batch/compute.ts";
import { DEFAULT_MAX_BATCHES, MAX_BATCH_SIZE } from "./batch/loader.ts";
import { ApiError } from "./errors.ts";
import { EXPOSURE_SOURCE } from "./experiments/exposure.ts";
import { validSchema } from "./publish/db.ts";
import { looksLikeJwt } from "./rank/tokens.ts";

/** A collection source: one write key, as configured in the SOURCES secret (docs/configuration.md#sources). */
export interface Source {
  id: string;
  writeKey: string;
  enabled: boolean;
  /** Origins whose pages may send to it (CORS): exact origins like "https://shop.example", or "*". */
  allowedOrigins: readonly string[];
  /** Server-side senders (few IPs, many requests) skip the per-IP rate limit. */
  trustedServer: boolean;
}

export interface Sources {
  list: readonly Source[];
  byWriteKey: ReadonlyMap<string, Source>;
  byId: ReadonlyMap<string, Source>;
}

export interface Config {
  environment: string;
  /** Absent until DATABASE_URL is set; the request path works without it (health reports it). */
  database: { databaseUrl: string; localWsProxy: string | undefined } | undefined;
  redis: { url: string; token: string } | undefined;
  adminKeys: readonly string[];
  serverKeys: readonly string[];
  /** HMAC secrets of the signed user tokens (docs/ranking.md#auth): the first signs, every one verifies. */
  userTokenSecrets: readonly string[];
  healthTimeoutMs: number;
  sources: Sources;
  /** The warehouse loader's settings for cron runs (src/batch/loader.ts has the defaults and bounds). */
  loader: { batchSize: number; budgetMs: number; maxBatches: number; deleteAcked: boolean };
  /** Outputs an external model owns (EXTERNAL_OUTPUTS): the refresh does not compute them (docs/recommenders.md). */
  externalOutputs: OutputModel[];
  /** The Postgres schema of Lastmile's tables (DATABASE_SCHEMA); undefined = public. */
  databaseSchema: string | undefined;
}

const cache = new WeakMap<object, Config>();

function keyList(value: string | undefined): string[] {
  return (value ?? "")
    .split(",")
    .map((k) => k.trim())
    .filter((k) => k.length > 0);
}

function outputList(name: string, value: string | undefined): OutputModel[] {
  const names = keyList(value);
  const known: readonly string[] = OUTPUT_MODELS;
  const unknown = names.filter((n) => !known.includes(n));
  if (unknown.length > 0) {
    throw new ConfigError(`${name}: unknown output(s) ${unknown.join(", ")}; outputs are ${OUTPUT_MODELS.join(", ")}`);
  }
  return [...new Set(names)] as OutputModel[];
}

function positiveInt(name: string, value: string | undefined, fallback: number, max?: number): number {
  if (value === undefined || value === "") return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new ConfigError(`${name} must be a positive integer, got "${value}"`);
  if (max !== undefined && n > max) {
    throw new ConfigError(`${name} must be at most ${max.toLocaleString("en-US")}, got "${value}"`);
  }
  return n;
}

/**
 * SERVER_KEYS. A bearer credential shaped like a JWT (three dot-separated base64url parts) is checked as a signed
 * user token only (src/rank/routes.ts), so such a server key would be refused on every ranking read: refuse it here.
 * The message names the variable and the entry's position, never the key.
 */
function serverKeyList(value: string | undefined): string[] {
  const keys = keyList(value);
  const at = keys.findIndex(looksLikeJwt);
  if (at >= 0) {
    throw new ConfigError(
      `SERVER_KEYS: entry ${at + 1} has the shape of a signed user token (three parts separated by "."); ` +
        'a server key must not (use a key without ".", e.g. a random hex string)',
    );
  }
  return keys;
}

/** DATABASE_SCHEMA: empty (or "public") = public; else a plain lower-case Postgres identifier (src/publish/db.ts). */
function databaseSchema(value: string | undefined): string | undefined {
  try {
    return validSchema(value);
  } catch {
    throw new ConfigError(
      "DATABASE_SCHEMA must be empty or a schema name of 1–63 lower-case letters, digits and _ (not starting with a digit)",
    );
  }
}

function flag(name: string, value: string | undefined, fallback: boolean): boolean {
  if (value === undefined || value === "") return fallback;
  if (value === "true") return true;
  if (value === "false") return false;
  throw new ConfigError(`${name} must be "true" or "false", got "${value}"`);
}

/** A URL setting; with `protocols`, one of those schemes only (e.g. a REST endpoint is http(s), never `rediss:`). */
function url(name: string, value: string | undefined, protocols?: readonly string[]): string | undefined {
  if (!value) return undefined;
  let parsed: URL;
  try {
    parsed = new URL(value);
  } catch {
    throw new ConfigError(`${name} is not a URL`);
  }
  if (protocols && !protocols.includes(parsed.protocol)) {
    throw new ConfigError(`${name} must be an ${protocols.map((p) => p.slice(0, -1)).join(" or ")} URL`);
  }
  return value;
}

export class ConfigError extends Error {
  override name = "ConfigError";
}

/** Environments where an unset SOURCES means the documented local source instead of none. */
const LOCAL_ENVIRONMENTS = new Set(["development", "test"]);

/**
 * The local stack's source (write key `local-write-key`). trustedServer because every local client shares
 * 127.0.0.1: the per-IP limit would throttle the benchmarks, which send far more than one visitor could.
 */
export const LOCAL_SOURCE: Source = {
  id: "local",
  writeKey: "local-write-key",
  enabled: true,
  allowedOrigins: ["*"],
  trustedServer: true,
};

const SOURCE_FIELDS = new Set(["id", "writeKey", "enabled", "allowedOrigins", "trustedServer"]);
/** Source ids appear in URLs, logs and Durable Object names: keep them plain. */
const SOURCE_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

function origin(where: string, value: unknown): string {
  if (value === "*") return "*";
  if (typeof value === "string") {
    try {
      const url = new URL(value);
      // Only scheme://host[:port]: an origin never has a path, and "https://shop.example/" is a common slip.
      if (url.origin !== "null" && url.origin.toLowerCase() === value.replace(/\/$/, "").toLowerCase()) {
        return url.origin;
      }
    } catch {
      // reported below
    }
  }
  throw new ConfigError(`${where} must be "*" or an origin like "https://shop.example"`);
}

function bool(where: string, value: unknown, fallback: boolean): boolean {
  if (value === undefined) return fallback;
  if (typeof value !== "boolean") throw new ConfigError(`${where} must be true or false`);
  return value;
}

/**
 * What a write key may hold to work as the username of HTTP Basic auth: the username ends at the first ":"
 * (src/collect/sources.ts), btoa takes Latin-1 only, and control characters have no business in a header.
 */
const BASIC_AUTH_USERNAME = /^[\u0020-\u0039\u003b-\u007e\u00a0-\u00ff]+$/;

/** Parses SOURCES. Messages name the entry and field, never a write key. */
export function parseSources(value: string | undefined, environment: string): Sources {
  let list: Source[];
  if (value === undefined || value.trim() === "") {
    list = LOCAL_ENVIRONMENTS.has(environment) ? [LOCAL_SOURCE] : [];
  } else {
    let parsed: unknown;
    try {
      parsed = JSON.parse(value);
    } catch {
      throw new ConfigError("SOURCES is not valid JSON");
    }
    if (!Array.isArray(parsed)) throw new ConfigError("SOURCES must be a JSON array of sources");
    list = parsed.map((entry: unknown, i) => {
      const where = `SOURCES[${i}]`;
      if (typeof entry !== "object" || entry === null || Array.isArray(entry)) {
        throw new ConfigError(`${where} must be an object`);
      }
      const e = entry as Record<string, unknown>;
      for (const key of Object.keys(e)) {
        if (!SOURCE_FIELDS.has(key)) throw new ConfigError(`${where} has an unknown field "${key}"`);
      }
      if (typeof e.id !== "string" || !SOURCE_ID.test(e.id)) {
        throw new ConfigError(`${where}.id must be 1–64 letters, digits, ".", "_" or "-"`);
      }
      if (e.id === EXPOSURE_SOURCE) {
        throw new ConfigError(
          `${where}.id "${EXPOSURE_SOURCE}" is reserved for the exposures Lastmile logs: ` +
            "a client's events under it would count as exposures in experiment reports",
        );
      }
      if (typeof e.writeKey !== "string" || e.writeKey.trim() === "" || e.writeKey !== e.writeKey.trim()) {
        throw new ConfigError(`${where}.writeKey must be a non-empty string without surrounding spaces`);
      }
      if (!BASIC_AUTH_USERNAME.test(e.writeKey)) {
        throw new ConfigError(
          `${where}.writeKey must not contain ":", control characters or characters beyond Latin-1: ` +
            "clients send it as the username of HTTP Basic auth, which ends at the first colon",
        );
      }
      const origins = e.allowedOrigins ?? [];
      if (!Array.isArray(origins)) throw new ConfigError(`${where}.allowedOrigins must be an array`);
      return {
        id: e.id,
        writeKey: e.writeKey,
        enabled: bool(`${where}.enabled`, e.enabled, true),
        allowedOrigins: origins.map((o: unknown, j) => origin(`${where}.allowedOrigins[${j}]`, o)),
        trustedServer: bool(`${where}.trustedServer`, e.trustedServer, false),
      };
    });
  }
  const byWriteKey = new Map<string, Source>();
  const byId = new Map<string, Source>();
  list.forEach((source, i) => {
    if (byId.has(source.id)) throw new ConfigError(`SOURCES[${i}].id "${source.id}" is used twice`);
    if (byWriteKey.has(source.writeKey)) {
      throw new ConfigError(
        `SOURCES[${i}].writeKey is also the write key of source "${byWriteKey.get(source.writeKey)?.id}"`,
      );
    }
    byId.set(source.id, source);
    byWriteKey.set(source.writeKey, source);
  });
  return { list, byWriteKey, byId };
}

export function loadConfig(env: Env): Config {
  const cached = cache.get(env);
  if (cached) return cached;
  const databaseUrl = url("DATABASE_URL", env.DATABASE_URL);
  const redisUrl = url("UPSTASH_REDIS_REST_URL", env.UPSTASH_REDIS_REST_URL, ["https:", "http:"]);
  if (redisUrl && !env.UPSTASH_REDIS_REST_TOKEN) throw new ConfigError("UPSTASH_REDIS_REST_TOKEN is missing");
  const environment = env.LASTMILE_ENV || "production";
  const config: Config = {
    environment,
    database: databaseUrl ? { databaseUrl, localWsProxy: env.NEON_LOCAL_WS_PROXY || undefined } : undefined,
    redis: redisUrl ? { url: redisUrl, token: env.UPSTASH_REDIS_REST_TOKEN } : undefined,
    adminKeys: keyList(env.ADMIN_KEYS),
    serverKeys: serverKeyList(env.SERVER_KEYS),
    userTokenSecrets: keyList(env.USER_TOKEN_SECRETS),
    healthTimeoutMs: positiveInt("HEALTH_TIMEOUT_MS", env.HEALTH_TIMEOUT_MS, 2000),
    sources: parseSources(env.SOURCES, environment),
    loader: {
      batchSize: positiveInt("LOADER_BATCH_SIZE", env.LOADER_BATCH_SIZE, 500, MAX_BATCH_SIZE),
      budgetMs: positiveInt("LOADER_BUDGET_MS", env.LOADER_BUDGET_MS, 20_000),
      maxBatches: positiveInt("LOADER_MAX_BATCHES", env.LOADER_MAX_BATCHES, DEFAULT_MAX_BATCHES),
      deleteAcked: flag("LOADER_DELETE_ACKED", env.LOADER_DELETE_ACKED, true),
    },
    externalOutputs: outputList("EXTERNAL_OUTPUTS", env.EXTERNAL_OUTPUTS),
    databaseSchema: databaseSchema(env.DATABASE_SCHEMA),
  };
  cache.set(env, config);
  return config;
}

/** The config, or a 500 that says the deployment is misconfigured (the detail goes to the log only). */
export function configOrThrow(env: Env): Config {
  try {
    return loadConfig(env);
  } catch (error) {
    throw new ApiError("internal_error", "the service is misconfigured", { cause: error });
  }
}
