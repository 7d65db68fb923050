// Signed user tokens: what a browser presents to read its own recommendations (docs/ranking.md#auth). A JWT
// (RFC 7519) signed with HMAC-SHA-256, checked as RFC 8725 asks: the algorithm is fixed by the server (HS256 only;
// `none` and every other alg are refused before any crypto), issuer and audience are required and exact, `exp` is
// required, `nbf`/`iat` are honoured with a small leeway, and the signature is verified in constant time by
// WebCrypto. The storefront's backend mints tokens with `POST /v1/tokens` (server key) or with `signUserToken`.

export const TOKEN_ISSUER = "lastmile";
export const TOKEN_AUDIENCE = "lastmile:rank";
export const TOKEN_DEFAULT_TTL_S = 3600;
export const TOKEN_MAX_TTL_S = 24 * 3600;
/** Clock skew allowed on exp / nbf / iat, in seconds. */
export const TOKEN_LEEWAY_S = 30;
/** Longer tokens are refused unread: the service's own are under 600 characters (a 200-character id included). */
export const MAX_TOKEN_CHARS = 4096;

export interface UserTokenClaims {
  iss: string;
  aud: string;
  /** The user key: `u:<userId>` or `a:<anonymousId>`. */
  sub: string;
  iat: number;
  nbf?: number;
  exp: number;
}

export type TokenCheck = { ok: true; claims: UserTokenClaims } | { ok: false; reason: string };

const encoder = new TextEncoder();

function base64url(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/** The bytes of canonical unpadded base64url text, else null (one token has one spelling: no unused bits set). */
function fromBase64url(text: string): Uint8Array | null {
  if (!/^[A-Za-z0-9_-]*$/.test(text)) return null;
  try {
    const s = atob(text.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((text.length + 3) % 4));
    const out = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
    return base64url(out) === text ? out : null;
  } catch {
    return null;
  }
}

const keyCache = new Map<string, Promise<CryptoKey>>();

function hmacKey(secret: string): Promise<CryptoKey> {
  let key = keyCache.get(secret);
  if (!key) {
    key = crypto.subtle.importKey("raw", encoder.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, [
      "sign",
      "verify",
    ]);
    keyCache.set(secret, key);
  }
  return key;
}

const HEADER = base64url(encoder.encode(JSON.stringify({ alg: "HS256", typ: "JWT" })));

/** A token for `userKey`, valid `ttlSeconds` from `nowMs`. */
export async function signUserToken(
  secret: string,
  userKey: string,
  nowMs: number,
  ttlSeconds = TOKEN_DEFAULT_TTL_S,
): Promise<{ token: string; claims: UserTokenClaims }> {
  const iat = Math.floor(nowMs / 1000);
  const claims: UserTokenClaims = { iss: TOKEN_ISSUER, aud: TOKEN_AUDIENCE, sub: userKey, iat, exp: iat + ttlSeconds };
  const body = `${HEADER}.${base64url(encoder.encode(JSON.stringify(claims)))}`;
  const signature = new Uint8Array(await crypto.subtle.sign("HMAC", await hmacKey(secret), encoder.encode(body)));
  return { token: `${body}.${base64url(signature)}`, claims };
}

/** Whether a bearer credential has the shape of a JWT (three base64url parts). */
export function looksLikeJwt(token: string): boolean {
  return /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/.test(token);
}

function parseJson(bytes: Uint8Array | null): Record<string, unknown> | null {
  if (!bytes) return null;
  try {
    const v = JSON.parse(new TextDecoder("utf-8", { fatal: true, ignoreBOM: false }).decode(bytes)) as unknown;
    return typeof v === "object" && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

const isInt = (v: unknown): v is number => typeof v === "number" && Number.isSafeInteger(v);

export async function verifyUserToken(token: string, secrets: readonly string[], nowMs: number): Promise<TokenCheck> {
  if (token.length > MAX_TOKEN_CHARS) return { ok: false, reason: "too_large" };
  const parts = token.split(".");
  if (parts.length !== 3) return { ok: false, reason: "malformed" };
  const [h = "", p = "", s = ""] = parts;
  const header = parseJson(fromBase64url(h));
  if (!header) return { ok: false, reason: "malformed" };
  // The server decides the algorithm; the header may only confirm it.
  if (header.alg !== "HS256") return { ok: false, reason: "algorithm_not_allowed" };
  if (header.typ !== undefined && header.typ !== "JWT") return { ok: false, reason: "malformed" };
  if (header.crit !== undefined) return { ok: false, reason: "malformed" };
  const signature = fromBase64url(s);
  if (!signature) return { ok: false, reason: "malformed" };
  if (signature.length !== 32) return { ok: false, reason: "bad_signature" };
  const body = encoder.encode(`${h}.${p}`);
  let valid = false;
  for (const secret of secrets) {
    // Every secret is tried (rotation); verify() compares in constant time.
    if (await crypto.subtle.verify("HMAC", await hmacKey(secret), signature, body)) valid = true;
  }
  if (!valid) return { ok: false, reason: "bad_signature" };
  const claims = parseJson(fromBase64url(p));
  if (!claims) return { ok: false, reason: "malformed" };
  const now = Math.floor(nowMs / 1000);
  if (claims.iss !== TOKEN_ISSUER) return { ok: false, reason: "wrong_issuer" };
  if (claims.aud !== TOKEN_AUDIENCE) return { ok: false, reason: "wrong_audience" };
  if (typeof claims.sub !== "string" || !/^[ua]:/.test(claims.sub)) return { ok: false, reason: "malformed" };
  if (!isInt(claims.exp)) return { ok: false, reason: "malformed" };
  if (now > claims.exp + TOKEN_LEEWAY_S) return { ok: false, reason: "expired" };
  if (claims.nbf !== undefined && (!isInt(claims.nbf) || now + TOKEN_LEEWAY_S < claims.nbf))
    return { ok: false, reason: "not_yet_valid" };
  if (!isInt(claims.iat) || claims.iat > now + TOKEN_LEEWAY_S) return { ok: false, reason: "not_yet_valid" };
  if (claims.exp - claims.iat > TOKEN_MAX_TTL_S) return { ok: false, reason: "lifetime_too_long" };
  return { ok: true, claims: claims as unknown as UserTokenClaims };
}
