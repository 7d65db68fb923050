// The documented keys of the local stack (README, docs/configuration.md). Never used outside local dev and tests.
export const LOCAL_KEYS = {
  writeKey: "local-write-key",
  serverKey: "local-server-key",
  adminKey: "local-admin-key",
  redisToken: "local-redis-token",
} as const;

/** Worker variables for the local stack besides the connection settings. */
export function localWorkerVars(): Record<string, string> {
  return {
    LASTMILE_ENV: "development",
    ADMIN_KEYS: LOCAL_KEYS.adminKey,
    SERVER_KEYS: LOCAL_KEYS.serverKey,
  };
}
