// The one config loader: reads the Worker's bindings and secrets once per `env` object, validates them and
// hands the rest of the code typed settings. Secrets are documented in docs/configuration.md.
import { ApiError } from "./errors.ts";

export interface Config {
  environment: string;
  /** Absent until DATABASE_URL is set; the request path works without it (health reports it). */
  database: { databaseUrl: string; localWsProxy: string | undefined } | undefined;
  redis: { url: string; token: string } | undefined;
  adminKeys: readonly string[];
  serverKeys: readonly string[];
  healthTimeoutMs: number;
}

const cache = new WeakMap<object, Config>();

function keyList(value: string | undefined): string[] {
  return (value ?? "")
    .split(",")
    .map((k) => k.trim())
    .filter((k) => k.length > 0);
}

function positiveInt(name: string, value: string | undefined, fallback: number): number {
  if (value === undefined || value === "") return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new ConfigError(`${name} must be a positive integer, got "${value}"`);
  return n;
}

function url(name: string, value: string | undefined): string | undefined {
  if (!value) return undefined;
  try {
    new URL(value);
  } catch {
    throw new ConfigError(`${name} is not a URL`);
  }
  return value;
}

export class ConfigError extends Error {
  override name = "ConfigError";
}

export function loadConfig(env: Env): Config {
  const cached = cache.get(env);
  if (cached) return cached;
  const databaseUrl = url("DATABASE_URL", env.DATABASE_URL);
  const redisUrl = url("UPSTASH_REDIS_REST_URL", env.UPSTASH_REDIS_REST_URL);
  if (redisUrl && !env.UPSTASH_REDIS_REST_TOKEN) throw new ConfigError("UPSTASH_REDIS_REST_TOKEN is missing");
  const config: Config = {
    environment: env.LASTMILE_ENV || "production",
    database: databaseUrl ? { databaseUrl, localWsProxy: env.NEON_LOCAL_WS_PROXY || undefined } : undefined,
    redis: redisUrl ? { url: redisUrl, token: env.UPSTASH_REDIS_REST_TOKEN } : undefined,
    adminKeys: keyList(env.ADMIN_KEYS),
    serverKeys: keyList(env.SERVER_KEYS),
    healthTimeoutMs: positiveInt("HEALTH_TIMEOUT_MS", env.HEALTH_TIMEOUT_MS, 2000),
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
