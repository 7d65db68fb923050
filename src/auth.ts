// Admin authentication: `Authorization: Bearer <key>` against ADMIN_KEYS. Keys are compared as SHA-256 digests in
// constant time, against every configured key, so neither the timing of a comparison nor the number of keys
// tried tells an attacker how close a guess was. Anything else is 401 with `WWW-Authenticate: Bearer`.
import type { MiddlewareHandler } from "hono";
import type { AppEnv } from "./app.ts";
import { configOrThrow } from "./config.ts";
import { ApiError } from "./errors.ts";

async function digest(text: string): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text)));
}

/**
 * Whether two byte arrays are equal, looking at every byte of the longer one whatever differs first: no early exit,
 * not even on a length difference (which is folded into the result). Callers compare SHA-256 digests, so the
 * lengths are equal anyway and the time taken says nothing about the secret.
 */
export function constantTimeEqual(a: Uint8Array, b: Uint8Array): boolean {
  let difference = a.length ^ b.length;
  const length = Math.max(a.length, b.length);
  for (let i = 0; i < length; i++) difference |= (a[i] ?? 0) ^ (b[i] ?? 0);
  return difference === 0;
}

/** Digests of the configured keys, computed once per isolate (the keys are secrets of this deployment). */
const keyDigests = new Map<string, Promise<Uint8Array>>();

function configuredDigest(key: string): Promise<Uint8Array> {
  let d = keyDigests.get(key);
  if (!d) {
    d = digest(key);
    if (keyDigests.size > 100) keyDigests.clear();
    keyDigests.set(key, d);
  }
  return d;
}

/** Whether `presented` is one of `keys`; every key is compared, whatever matched first. */
export async function matchesAnyKey(presented: string, keys: readonly string[]): Promise<boolean> {
  const candidate = await digest(presented);
  let matched = false;
  for (const key of keys) {
    if (constantTimeEqual(candidate, await configuredDigest(key))) matched = true;
  }
  return matched;
}

/** The token of a Bearer Authorization header, or undefined. */
export function bearerToken(header: string | undefined): string | undefined {
  const match = /^bearer\s+(\S+)\s*$/i.exec(header ?? "");
  return match?.[1];
}

function unauthorized(message: string): ApiError {
  return new ApiError("unauthorized", message, { headers: { "WWW-Authenticate": 'Bearer realm="lastmile-admin"' } });
}

export const requireAdmin: MiddlewareHandler<AppEnv> = async (c, next) => {
  const token = bearerToken(c.req.header("authorization"));
  if (!token) throw unauthorized("an admin key is required: Authorization: Bearer <key>");
  if (!(await matchesAnyKey(token, configOrThrow(c.env).adminKeys))) throw unauthorized("invalid admin key");
  await next();
};
