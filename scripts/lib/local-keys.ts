// The documented keys of the local stack (README, docs/configuration.md). Never used outside local dev and tests.
export const LOCAL_KEYS = {
  writeKey: "local-write-key",
  serverKey: "local-server-key",
  adminKey: "local-admin-key",
  redisToken: "local-redis-token",
  userTokenSecret: "local-user-token-secret",
} as const;

/** Worker variables for the local stack besides the connection settings. */
export function localWorkerVars(): Record<string, string> {
  return {
    LASTMILE_ENV: "development",
    ADMIN_KEYS: LOCAL_KEYS.adminKey,
    SERVER_KEYS: LOCAL_KEYS.serverKey,
    USER_TOKEN_SECRETS: LOCAL_KEYS.userTokenSecret,
    // One source for everything local: every local client is 127.0.0.1, so the per-IP limit is skipped.
    // Keep loaded entries in the local stream: tests and developers read it (XRANGE) to see what was collected.
    LOADER_DELETE_ACKED: "false",
    SOURCES: JSON.stringify([
      { id: "local", writeKey: LOCAL_KEYS.writeKey, allowedOrigins: ["*"], trustedServer: true },
    ]),
  };
}
