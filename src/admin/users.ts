// Admin routes about one user (admin key; docs/api.md#admin-api, docs/privacy.md):
//   GET    /v1/admin/users/:id?kind=user|anonymous                  the live session snapshot (SessionSnapshot)
//   DELETE /v1/admin/users/:id?kind=user|anonymous[&suppress=true]  erase the user everywhere → ErasureReport
//   GET    /v1/admin/users/:id/erasure?kind=…                       the verifier: what any store still holds
//   PUT    /v1/admin/users/:id/suppression?kind=…                   refuse the user's events at ingest (data kept)
//   GET    /v1/admin/users/:id/suppression?kind=…                   whether it is
//   DELETE /v1/admin/users/:id/suppression?kind=…                   accept them again
import { type Context, Hono } from "hono";
import type { AppEnv } from "../app.ts";
import { MAX_ID_LENGTH } from "../collect/limits.ts";
import { ApiError } from "../errors.ts";
import { eraseUser, type PrivacyDeps, type SubjectKey, setSuppression, verifyErasure } from "../privacy/erase.ts";
import { unsuppressWarehouse } from "../privacy/warehouse.ts";
import { openRedis } from "../stores/redis.ts";
import { withWarehouse } from "./batch.ts";

export const userRoutes = new Hono<AppEnv>();

const KIND_PREFIX = { user: "u:", anonymous: "a:" } as const;
type Kind = keyof typeof KIND_PREFIX;

/** Where the id is in every path of these routes: /v1/admin/users/<id>[/…]. */
const ID_SEGMENT = 4;

/**
 * The id of the path, decoded from the raw segment: Hono's own decoding keeps a segment it cannot decode as it is,
 * so a Latin-1 `jos%E9` would name the user "jos%E9" (an erasure of nobody, answered clean). An id collection
 * could never have recorded — not percent-encoded UTF-8, holding NUL (Postgres refuses it), empty or too long — is
 * 400 `bad_request`.
 */
function idParam(c: Context<AppEnv>): string {
  const raw = new URL(c.req.url).pathname.split("/")[ID_SEGMENT] ?? "";
  let id: string;
  try {
    id = decodeURIComponent(raw);
  } catch {
    throw new ApiError("bad_request", "the id is not percent-encoded UTF-8 (encode it with encodeURIComponent)");
  }
  if (id.length === 0 || id.length > MAX_ID_LENGTH) {
    throw new ApiError("bad_request", `the id must be 1 to ${MAX_ID_LENGTH} characters`);
  }
  if (id.includes("\u0000")) throw new ApiError("bad_request", "the id must not contain NUL characters");
  return id;
}

function kindParam(c: Context<AppEnv>, required: boolean): Kind | undefined {
  const kind = c.req.query("kind");
  if (kind === undefined && !required) return undefined;
  if (kind !== "user" && kind !== "anonymous") {
    throw new ApiError(
      "bad_request",
      required
        ? 'kind is required: "user" (a userId) or "anonymous" (an anonymousId)'
        : 'kind must be "user" or "anonymous"',
    );
  }
  return kind;
}

/** The subject key of a privacy route: `kind` is required there (an erasure must not guess). */
function subjectOf(c: Context<AppEnv>): SubjectKey {
  const kind = kindParam(c, true) as Kind;
  return `${KIND_PREFIX[kind]}${idParam(c)}` as SubjectKey;
}

/** Postgres (required: the warehouse holds most of a user's history) and Redis (when configured) for `fn`. */
async function withStores<T>(c: Context<AppEnv>, fn: (deps: PrivacyDeps) => Promise<T>): Promise<T> {
  return withWarehouse(c.env, (db, config) => {
    const redis = config.redis ? openRedis({ ...config.redis, rawResults: true }) : undefined;
    return fn({ env: c.env, config, db, redis });
  });
}

userRoutes.get("/v1/admin/users/:id", async (c) => {
  const id = idParam(c);
  const kind = kindParam(c, false);
  // A known user first; else the visitor of that anonymous id (its snapshot says if it was merged into a user).
  const kinds: Kind[] = kind ? [kind] : ["user", "anonymous"];
  for (const k of kinds) {
    const userKey = `${KIND_PREFIX[k]}${id}`;
    const snapshot = await c.env.SESSION_STATE.getByName(userKey).snapshot(userKey);
    if (snapshot.exists) {
      // The snapshot as the object returns it: its userKey says which of the two it is.
      return c.json(snapshot);
    }
  }
  throw new ApiError("not_found", `no session for ${kind ?? "user or anonymous"} id "${id}"`);
});

userRoutes.delete("/v1/admin/users/:id", async (c) => {
  const subject = subjectOf(c);
  const suppress = c.req.query("suppress");
  if (suppress !== undefined && suppress !== "true" && suppress !== "false") {
    throw new ApiError("bad_request", 'suppress must be "true" or "false"');
  }
  const report = await withStores(c, (deps) => eraseUser(deps, subject, { suppress: suppress === "true" }));
  return c.json(report);
});

userRoutes.get("/v1/admin/users/:id/erasure", async (c) => {
  const subject = subjectOf(c);
  const verification = await withStores(c, (deps) => verifyErasure(deps, subject));
  return c.json(verification);
});

userRoutes.get("/v1/admin/users/:id/suppression", async (c) => {
  const subject = subjectOf(c);
  const state = await c.env.SESSION_STATE.getByName(subject).suppression();
  return c.json({ subject, ...state });
});

userRoutes.put("/v1/admin/users/:id/suppression", async (c) => {
  const subject = subjectOf(c);
  return c.json(await withStores(c, (deps) => setSuppression(deps, subject, true)));
});

userRoutes.delete("/v1/admin/users/:id/suppression", async (c) => {
  const subject = subjectOf(c);
  const result = await withStores(c, async (deps) => {
    const lifted = await setSuppression(deps, subject, false);
    await unsuppressWarehouse(deps.db, subject);
    return lifted;
  });
  return c.json(result);
});
