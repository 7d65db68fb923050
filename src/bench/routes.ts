// Bench-only routes: reference endpoints that `npm run bench` (docs/benchmarks.md) measures to know what the
// platform itself costs, so every suite can report its figures relative to that floor. They exist only when the
// Worker variable BENCH_ROUTES is "true" (the bench harness sets it for its own local Worker); otherwise they
// answer the same 404 as any unknown path. Routes:
//   GET /__bench/empty                   { ok: true }: the cost of an empty endpoint
//   GET /__bench/do?users=N&prefix=P     one SessionState ping() per user P:0 … P:N-1, concurrently: { calls: N }
//   POST /__bench/collect-floor          a /v1/batch body: parse it, one SessionState ping() per distinct user
//                                        (the user's key, as collection routes it), concurrently: { users: N }
import { Hono } from "hono";
import type { AppEnv } from "../app.ts";
import { userKey } from "../collect/event.ts";
import { ApiError } from "../errors.ts";

export const BENCH_MAX_USERS = 500;
const DEFAULT_PREFIX = "bench";
const MAX_PREFIX_LENGTH = 100;

export const benchRoutes = new Hono<AppEnv>();

benchRoutes.use("/__bench/*", async (c, next) => {
  if (c.env.BENCH_ROUTES !== "true") {
    throw new ApiError("not_found", `no route for ${c.req.method} ${new URL(c.req.url).pathname}`);
  }
  await next();
});

benchRoutes.get("/__bench/empty", (c) => c.json({ ok: true }));

benchRoutes.get("/__bench/do", async (c) => {
  const usersParam = c.req.query("users") ?? "1";
  const users = Number(usersParam);
  if (!/^\d+$/.test(usersParam) || users < 1 || users > BENCH_MAX_USERS) {
    throw new ApiError("bad_request", `users must be an integer from 1 to ${BENCH_MAX_USERS}`);
  }
  const prefix = c.req.query("prefix") || DEFAULT_PREFIX;
  if (prefix.length > MAX_PREFIX_LENGTH) {
    throw new ApiError("bad_request", `prefix must be at most ${MAX_PREFIX_LENGTH} characters`);
  }
  await Promise.all(Array.from({ length: users }, (_, i) => c.env.SESSION_STATE.getByName(`${prefix}:${i}`).ping()));
  return c.json({ calls: users });
});

/**
 * The floor of collection: what a batch costs before validation, dedupe and session updates — reading and parsing
 * the body and one Durable Object round trip per distinct user, the least any design that keeps per-user state in
 * objects must do.
 */
benchRoutes.post("/__bench/collect-floor", async (c) => {
  const body = (await c.req.json()) as { batch?: Array<{ userId?: string; anonymousId?: string }> };
  const keys = new Set(
    (body.batch ?? []).map((e) => userKey({ userId: e.userId ?? null, anonymousId: e.anonymousId ?? null })),
  );
  await Promise.all([...keys].map((key) => c.env.SESSION_STATE.getByName(key).ping()));
  return c.json({ users: keys.size });
});
