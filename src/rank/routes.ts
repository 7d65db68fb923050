// The ranking API (docs/ranking.md):
//   GET  /v1/recommendations?placement=&userId=|anonymousId=&productId=&limit=&category=&tags=&minPrice=&maxPrice=
//   POST /v1/rank                 re-rank a caller's candidates (JSON body)
//   GET  /v1/similar/:productId
//   POST /v1/tokens               mint a signed user token (server key only)
// Callers: a storefront server with a server key (Bearer), or a browser with a signed user token, which may only
// ask about its own user. CORS headers are sent only on token-authenticated answers (and their preflights).
import { type Context, Hono, type MiddlewareHandler } from "hono";
import type { AppEnv } from "../app.ts";
import { bearerToken, matchesAnyKey } from "../auth.ts";
import { anySourceAllowsOrigin } from "../collect/cors.ts";
import { configOrThrow } from "../config.ts";
import { ApiError } from "../errors.ts";
import { readJsonRequest } from "../json-body.ts";
import { DEFAULT_RANKING_CONFIG } from "./config.ts";
import { depsFromEnv } from "./deps.ts";
import { parseRankParams, type RankParams, type RankRequest, requestUserKey } from "./request.ts";
import { answer, loadHead, type RankAnswer } from "./service.ts";
import { looksLikeJwt, signUserToken, TOKEN_DEFAULT_TTL_S, TOKEN_MAX_TTL_S, verifyUserToken } from "./tokens.ts";

/**
 * The largest valid request fits: 1,000 candidates with scores, each id MAX_ID_CHARS (256) characters written as
 * `\uXXXX` escapes (6 bytes a character), is ~1.6 MB.
 */
export const RANK_BODY_LIMIT = 2048 * 1024;

export type Caller = { kind: "server" } | { kind: "user"; userKey: string };

type RankEnv = AppEnv & { Variables: { caller: Caller } };

const CORS_METHODS = "GET, POST, OPTIONS";
const CORS_HEADERS = "Authorization, Content-Type";

function unauthorized(message: string): ApiError {
  return new ApiError("unauthorized", message, { headers: { "WWW-Authenticate": 'Bearer realm="lastmile"' } });
}

/** Server key or signed user token. */
const requireReader: MiddlewareHandler<RankEnv> = async (c, next) => {
  const token = bearerToken(c.req.header("authorization"));
  if (!token) throw unauthorized("a server key or a signed user token is required: Authorization: Bearer <token>");
  const config = configOrThrow(c.env);
  if (looksLikeJwt(token)) {
    const check = await verifyUserToken(token, config.userTokenSecrets, Date.now());
    if (!check.ok) {
      throw new ApiError("unauthorized", `invalid user token (${check.reason})`, {
        details: { reason: check.reason },
        headers: { "WWW-Authenticate": 'Bearer realm="lastmile", error="invalid_token"' },
      });
    }
    c.set("caller", { kind: "user", userKey: check.claims.sub });
  } else if (await matchesAnyKey(token, config.serverKeys)) {
    c.set("caller", { kind: "server" });
  } else {
    throw unauthorized("invalid server key");
  }
  await next();
};

function corsHeaders(c: Context<RankEnv>): Record<string, string> {
  const origin = c.req.header("origin");
  if (!origin || !anySourceAllowsOrigin(configOrThrow(c.env).sources, origin)) return {};
  return {
    "Access-Control-Allow-Origin": origin,
    "Access-Control-Expose-Headers": "X-Request-Id, Server-Timing",
    Vary: "Origin",
  };
}

/** A token may only ask about its own user; with no user named, it asks about itself. */
function authorize(caller: Caller, params: RankParams): RankParams {
  if (caller.kind === "server") return params;
  const asked = requestUserKey(params);
  if (asked === null) {
    const id = caller.userKey.slice(2);
    return caller.userKey.startsWith("u:")
      ? { ...params, userId: id, anonymousId: undefined }
      : { ...params, anonymousId: id, userId: undefined };
  }
  if (asked !== caller.userKey) {
    throw new ApiError("forbidden", "this token may only read its own user's recommendations");
  }
  return params;
}

async function respond(c: Context<RankEnv>, mode: RankRequest["mode"], params: RankParams): Promise<Response> {
  const caller = c.get("caller");
  const authorized = authorize(caller, params);
  const deps = depsFromEnv(c.env, c.executionCtx);
  // The config is needed to validate (placements, limits); it comes from the same cached head the answer uses.
  const head = await loadHead(deps);
  const config = head.status === "ok" ? head.value.config : DEFAULT_RANKING_CONFIG;
  const request = parseRankParams(mode, authorized, config);
  if (request.country === null) {
    const country = (c.req.raw as Request & { cf?: { country?: unknown } }).cf?.country;
    if (typeof country === "string" && /^[A-Z]{2}$/.test(country)) request.country = country;
  }
  const result = await answer(deps, request, head);
  return send(c, result);
}

function send(c: Context<RankEnv>, result: RankAnswer): Response {
  const { timing, ...body } = result;
  c.header("Cache-Control", "private, no-store");
  c.header(
    "Server-Timing",
    Object.entries(timing)
      .map(([name, ms]) => `${name};dur=${Math.round(ms * 10) / 10}`)
      .join(", "),
  );
  return c.json(body);
}

async function jsonBody(c: Context<RankEnv>): Promise<Record<string, unknown>> {
  const value = await readJsonRequest(c.req.raw, RANK_BODY_LIMIT);
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new ApiError("validation_failed", "body: must be a JSON object", { details: { field: "body" } });
  }
  return value as Record<string, unknown>;
}

function queryParams(c: Context<RankEnv>): RankParams {
  const q = c.req.query();
  return q as unknown as RankParams;
}

/**
 * CORS headers on every answer to a browser holding a user token (errors included, so a page can read why it was
 * refused); never on answers to a server key.
 */
const browserCors: MiddlewareHandler<RankEnv> = async (c, next) => {
  await next();
  c.header("Vary", "Origin", { append: true });
  const caller = c.get("caller");
  const token = bearerToken(c.req.header("authorization"));
  const browser = caller ? caller.kind === "user" : token !== undefined && looksLikeJwt(token);
  if (!browser) return;
  try {
    for (const [k, v] of Object.entries(corsHeaders(c))) c.header(k, v);
  } catch {
    // misconfigured: the error response says so, without CORS
  }
};

export const rankRoutes = new Hono<RankEnv>();

for (const path of ["/v1/recommendations", "/v1/rank", "/v1/similar/:productId"]) {
  // Preflights of browsers holding a user token. The actual answer carries CORS headers only for user tokens.
  rankRoutes.options(path, (c) => {
    const headers = corsHeaders(c);
    if (!headers["Access-Control-Allow-Origin"]) {
      throw new ApiError("forbidden", "no source allows this origin to call the ranking API from a browser", {
        details: { origin: c.req.header("origin") ?? null },
      });
    }
    return c.body(null, 204, {
      ...headers,
      "Access-Control-Allow-Methods": CORS_METHODS,
      "Access-Control-Allow-Headers": CORS_HEADERS,
      "Access-Control-Max-Age": "86400",
    });
  });
  rankRoutes.use(path, browserCors, requireReader);
}

rankRoutes.get("/v1/recommendations", (c) => respond(c, "recommend", queryParams(c)));

rankRoutes.get("/v1/similar/:productId", (c) =>
  respond(c, "similar", { ...queryParams(c), productId: c.req.param("productId") }),
);

rankRoutes.post("/v1/rank", async (c) => respond(c, "rerank", (await jsonBody(c)) as RankParams));

rankRoutes.post("/v1/tokens", async (c) => {
  const token = bearerToken(c.req.header("authorization"));
  const config = configOrThrow(c.env);
  if (!token || !(await matchesAnyKey(token, config.serverKeys))) throw unauthorized("a server key is required");
  if (config.userTokenSecrets.length === 0) {
    throw new ApiError("internal_error", "the service is misconfigured", {
      cause: new Error("USER_TOKEN_SECRETS is empty"),
    });
  }
  const body = await jsonBody(c);
  const userKey = requestUserKey(body as RankParams);
  if (!userKey)
    throw new ApiError("validation_failed", "userId or anonymousId is required", { details: { field: "userId" } });
  const ttl = body.ttlSeconds ?? TOKEN_DEFAULT_TTL_S;
  if (!Number.isInteger(ttl) || (ttl as number) < 60 || (ttl as number) > TOKEN_MAX_TTL_S) {
    throw new ApiError("validation_failed", `ttlSeconds: must be an integer in [60, ${TOKEN_MAX_TTL_S}]`, {
      details: { field: "ttlSeconds" },
    });
  }
  const secret = config.userTokenSecrets[0] as string;
  const { token: signed, claims } = await signUserToken(secret, userKey, Date.now(), ttl as number);
  c.header("Cache-Control", "no-store");
  return c.json({ token: signed, userKey, expiresAt: claims.exp * 1000 });
});
