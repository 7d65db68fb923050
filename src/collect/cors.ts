// CORS for the collection routes only (never /health or the admin API). A response names the request's Origin in
// Access-Control-Allow-Origin only when the source allows that origin; when the source is not known (a preflight
// carries no body; a request refused before its write key was resolved) the origin is allowed if ANY enabled
// source allows it — exactly what a preflight already reveals. Credentials are never allowed: write keys travel in
// the body or the Authorization header, never in cookies.
import type { Source, Sources } from "../config.ts";

export const CORS_ALLOWED_METHODS = "POST, OPTIONS";
/**
 * AnonymousId: RudderStack's browser SDK (v3) sends it (base64) on every request, so a preflight that does not allow
 * it blocks that SDK entirely. We ignore its value: the events carry their anonymousId. `*`: any other header —
 * analytics.js sends whatever headers its delivery config names (recent versions X-Retry-Count too), and a page's
 * one refused header blocks all its events; we read none of them. The wildcard covers requests without credentials
 * (ours never have any) and never Authorization, which stays named.
 */
export const CORS_ALLOWED_HEADERS = "Content-Type, Authorization, Content-Encoding, AnonymousId, *";
/** Headers a page may read from our responses: why to wait, and what to quote to support. */
export const CORS_EXPOSED_HEADERS = "Retry-After, X-Request-Id";
/** Browsers cap this (Chrome: 2 h); a day asks for the most any browser gives. */
export const CORS_MAX_AGE_SECONDS = 86_400;

export function sourceAllowsOrigin(source: Source, origin: string): boolean {
  return source.enabled && source.allowedOrigins.some((allowed) => allowed === "*" || allowed === origin);
}

export function anySourceAllowsOrigin(sources: Sources, origin: string): boolean {
  return sources.list.some((source) => sourceAllowsOrigin(source, origin));
}

/** The CORS headers of an actual (non-preflight) response. */
export function corsResponseHeaders(
  origin: string | undefined,
  source: Source | undefined,
  sources: Sources,
): Record<string, string> {
  if (!origin) return {};
  const allowed = source ? sourceAllowsOrigin(source, origin) : anySourceAllowsOrigin(sources, origin);
  return allowed
    ? { "Access-Control-Allow-Origin": origin, "Access-Control-Expose-Headers": CORS_EXPOSED_HEADERS }
    : {};
}

/** The CORS headers of a preflight (OPTIONS) response. */
export function corsPreflightHeaders(origin: string | undefined, sources: Sources): Record<string, string> {
  if (!origin || !anySourceAllowsOrigin(sources, origin)) return {};
  return {
    "Access-Control-Allow-Origin": origin,
    "Access-Control-Allow-Methods": CORS_ALLOWED_METHODS,
    "Access-Control-Allow-Headers": CORS_ALLOWED_HEADERS,
    "Access-Control-Max-Age": String(CORS_MAX_AGE_SECONDS),
  };
}
