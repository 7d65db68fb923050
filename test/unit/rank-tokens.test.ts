// Signed user tokens (src/rank/tokens.ts) checked as RFC 8725 asks. Tokens other than the valid one are built byte
// by byte (test/support/jwt.ts: header and claims as given, HMAC-SHA-256 over them), so each test changes one thing.
import { describe, expect, it } from "vitest";
import {
  looksLikeJwt,
  MAX_TOKEN_CHARS,
  signUserToken,
  TOKEN_AUDIENCE,
  TOKEN_ISSUER,
  TOKEN_LEEWAY_S,
  TOKEN_MAX_TTL_S,
  verifyUserToken,
} from "../../src/rank/tokens.ts";
import { craft as craftWith, hmac, text } from "../support/jwt.ts";

const SECRET = "test-secret-one";
const OTHER = "test-secret-two";
const NOW_MS = Date.parse("2026-06-01T12:00:00Z");
const NOW = NOW_MS / 1000;

const b64url = (bytes: Uint8Array) => Buffer.from(bytes).toString("base64url");

/** A token with exactly this header and these claims, signed with `secret`. */
const craft = (
  header: Record<string, unknown> | string,
  claims: Record<string, unknown> | string,
  secret: string = SECRET,
): Promise<string> => craftWith(header, claims, secret);

const HS256 = { alg: "HS256", typ: "JWT" };
const claims = (patch: Record<string, unknown> = {}) => ({
  iss: TOKEN_ISSUER,
  aud: TOKEN_AUDIENCE,
  sub: "u:alice",
  iat: NOW,
  exp: NOW + 600,
  ...patch,
});

async function reason(token: string, secrets: string[] = [SECRET], nowMs = NOW_MS): Promise<string> {
  const check = await verifyUserToken(token, secrets, nowMs);
  return check.ok ? "ok" : check.reason;
}

describe("user tokens", () => {
  it("accept a token the service signed, with its claims", async () => {
    const { token, claims: signed } = await signUserToken(SECRET, "a:anon-1", NOW_MS, 900);
    expect(looksLikeJwt(token)).toBe(true);
    expect(signed).toEqual({ iss: "lastmile", aud: "lastmile:rank", sub: "a:anon-1", iat: NOW, exp: NOW + 900 });
    expect(await verifyUserToken(token, [SECRET], NOW_MS)).toEqual({ ok: true, claims: signed });
    // A token built independently with the same bytes verifies too (the signature is plain HS256).
    expect(await reason(await craft(HS256, claims()))).toBe("ok");
  });

  it("refuse alg none, with or without a signature", async () => {
    const unsigned = `${text(JSON.stringify({ alg: "none", typ: "JWT" }))}.${text(JSON.stringify(claims()))}.`;
    expect(await reason(unsigned)).toBe("algorithm_not_allowed");
    expect(await reason(await craft({ alg: "none" }, claims()))).toBe("algorithm_not_allowed");
    expect(await reason(await craft({ alg: "None" }, claims()))).toBe("algorithm_not_allowed");
  });

  it("refuse any other algorithm in the header, even over a valid HS256 signature", async () => {
    for (const alg of ["HS512", "RS256", "ES256", "hs256"]) {
      expect(await reason(await craft({ alg, typ: "JWT" }, claims())), alg).toBe("algorithm_not_allowed");
    }
    expect(await reason(await craft({ typ: "JWT" }, claims()))).toBe("algorithm_not_allowed");
  });

  it("refuse a tampered payload", async () => {
    const good = await craft(HS256, claims());
    const [h, , s] = good.split(".");
    const forged = `${h}.${text(JSON.stringify(claims({ sub: "u:mallory" })))}.${s}`;
    expect(await reason(forged)).toBe("bad_signature");
  });

  it("refuse a tampered or truncated signature", async () => {
    const good = await craft(HS256, claims());
    const [h, p, s = ""] = good.split(".");
    const bytes = Buffer.from(s, "base64url");
    bytes[0] = (bytes[0] ?? 0) ^ 1;
    expect(await reason(`${h}.${p}.${b64url(bytes)}`)).toBe("bad_signature");
    expect(await reason(`${h}.${p}.${b64url(bytes.subarray(0, 16))}`)).toBe("bad_signature");
    expect(await reason(`${h}.${p}.`)).toBe("bad_signature");
  });

  it("refuse a token signed with another secret", async () => {
    expect(await reason(await craft(HS256, claims(), "guessed"))).toBe("bad_signature");
    expect(await reason(await craft(HS256, claims()), [])).toBe("bad_signature");
  });

  it("refuse an expired token beyond the leeway, accept one within it", async () => {
    const exp = NOW - 120;
    const token = await craft(HS256, claims({ iat: NOW - 600, exp }));
    expect(await reason(token)).toBe("expired");
    expect(await reason(token, [SECRET], (exp + TOKEN_LEEWAY_S - 1) * 1000)).toBe("ok");
    expect(await reason(token, [SECRET], (exp + TOKEN_LEEWAY_S + 1) * 1000)).toBe("expired");
  });

  it("refuse nbf in the future beyond the leeway", async () => {
    expect(await reason(await craft(HS256, claims({ nbf: NOW + 300 })))).toBe("not_yet_valid");
    expect(await reason(await craft(HS256, claims({ nbf: NOW + TOKEN_LEEWAY_S - 1 })))).toBe("ok");
    expect(await reason(await craft(HS256, claims({ nbf: "soon" })))).toBe("not_yet_valid");
  });

  it("refuse iat in the future beyond the leeway, and a token without iat", async () => {
    expect(await reason(await craft(HS256, claims({ iat: NOW + 300, exp: NOW + 900 })))).toBe("not_yet_valid");
    expect(await reason(await craft(HS256, claims({ iat: undefined })))).toBe("not_yet_valid");
  });

  it("refuse a wrong or missing issuer and audience", async () => {
    expect(await reason(await craft(HS256, claims({ iss: "someone-else" })))).toBe("wrong_issuer");
    expect(await reason(await craft(HS256, claims({ iss: undefined })))).toBe("wrong_issuer");
    expect(await reason(await craft(HS256, claims({ aud: "lastmile:admin" })))).toBe("wrong_audience");
    // An audience list is not the exact audience.
    expect(await reason(await craft(HS256, claims({ aud: [TOKEN_AUDIENCE] })))).toBe("wrong_audience");
  });

  it("refuse a lifetime longer than the maximum", async () => {
    expect(await reason(await craft(HS256, claims({ exp: NOW + TOKEN_MAX_TTL_S + 1 })))).toBe("lifetime_too_long");
    expect(await reason(await craft(HS256, claims({ exp: NOW + TOKEN_MAX_TTL_S })))).toBe("ok");
  });

  it("refuse malformed tokens: parts, base64, JSON, claim types", async () => {
    expect(await reason("abc.def")).toBe("malformed");
    expect(await reason("a.b.c.d")).toBe("malformed");
    expect(await reason("!!!.e30.")).toBe("malformed");
    expect(await reason(`${text("not json")}.${text("{}")}.`)).toBe("malformed");
    expect(await reason(`${text("[1]")}.${text("{}")}.`)).toBe("malformed");
    expect(looksLikeJwt("!!!.e30.")).toBe(false);
    // Signed correctly, but the payload is not JSON.
    const h = text(JSON.stringify(HS256));
    const p = text("not json");
    expect(await reason(`${h}.${p}.${await hmac(SECRET, `${h}.${p}`)}`)).toBe("malformed");
    expect(await reason(await craft(HS256, claims({ sub: "alice" })))).toBe("malformed");
    expect(await reason(await craft(HS256, claims({ sub: 42 })))).toBe("malformed");
    expect(await reason(await craft(HS256, claims({ exp: undefined })))).toBe("malformed");
    expect(await reason(await craft(HS256, claims({ exp: "later" })))).toBe("malformed");
    expect(await reason(await craft({ alg: "HS256", typ: "JWS" }, claims()))).toBe("malformed");
    expect(await reason(await craft({ alg: "HS256", crit: ["exp"] }, claims()))).toBe("malformed");
  });

  it("verify a token signed with any configured secret (rotation)", async () => {
    const old = (await signUserToken(OTHER, "u:alice", NOW_MS, 600)).token;
    const fresh = (await signUserToken(SECRET, "u:alice", NOW_MS, 600)).token;
    expect(await reason(old, [SECRET, OTHER])).toBe("ok");
    expect(await reason(fresh, [SECRET, OTHER])).toBe("ok");
    expect(await reason(old, [SECRET])).toBe("bad_signature");
  });
});

describe("user tokens: the rest of RFC 8725's cases", () => {
  it("refuse a tampered header, whatever it adds (kid, jku, an embedded jwk)", async () => {
    const good = await craft(HS256, claims());
    const [, p, s] = good.split(".");
    for (const header of [
      { alg: "HS256", typ: "JWT", kid: "other" },
      { alg: "HS256", typ: "JWT", jku: "https://evil.example/keys" },
      { alg: "HS256", typ: "JWT", jwk: { kty: "oct", k: text("attacker") } },
      { alg: "HS256" },
    ]) {
      expect(await reason(`${text(JSON.stringify(header))}.${p}.${s}`), JSON.stringify(header)).toBe("bad_signature");
    }
    // A header naming the attacker's own key, signed with that key: the key in the header is never used.
    const embedded = { alg: "HS256", typ: "JWT", jwk: { kty: "oct", k: text("attacker") } };
    expect(await reason(await craft(embedded, claims(), "attacker"))).toBe("bad_signature");
  });

  it("refuse a stripped signature, with or without its separator", async () => {
    const [h, p] = (await craft(HS256, claims())).split(".");
    expect(await reason(`${h}.${p}.`)).toBe("bad_signature");
    expect(await reason(`${h}.${p}`)).toBe("malformed");
  });

  it("refuse every missing required claim", async () => {
    expect(await reason(await craft(HS256, claims({ sub: undefined })))).toBe("malformed");
    expect(await reason(await craft(HS256, claims({ aud: undefined })))).toBe("wrong_audience");
    expect(await reason(await craft(HS256, claims({ iss: undefined })))).toBe("wrong_issuer");
    expect(await reason(await craft(HS256, claims({ exp: undefined })))).toBe("malformed");
    expect(await reason(await craft(HS256, claims({ iat: undefined })))).toBe("not_yet_valid");
    expect(await reason(await craft(HS256, {}))).toBe("wrong_issuer");
  });

  it("refuse a payload that is not an object, even when signed", async () => {
    for (const payload of ["[]", "null", '"u:alice"', "42"]) {
      const h = text(JSON.stringify(HS256));
      const p = text(payload);
      expect(await reason(`${h}.${p}.${await hmac(SECRET, `${h}.${p}`)}`), payload).toBe("malformed");
    }
  });

  it("refuse characters outside base64url in any part, and padding", async () => {
    const [h = "", p = "", s = ""] = (await craft(HS256, claims())).split(".");
    const variants = [
      `${h}=.${p}.${s}`,
      `${h}.${p}=.${s}`,
      `${h}.${p}.${s}=`,
      `${h.replace(/-|_/g, "+")}+.${p}.${s}`,
      `${h}.${p}.${s.slice(0, -1)}/`,
      `${h}.${p} .${s}`,
      `${h}.${p}.${s}\u00e9`,
    ];
    for (const token of variants) {
      expect(looksLikeJwt(token), token).toBe(false);
      expect(["malformed", "bad_signature"], token).toContain(await reason(token));
    }
  });

  it("refuse a signature in a non-canonical base64url spelling (other unused bits, same bytes)", async () => {
    const [h, p, s = ""] = (await craft(HS256, claims())).split(".");
    // 32 bytes are 43 characters: the last one carries 2 unused bits. Setting them spells the same bytes.
    const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const last = alphabet.indexOf(s.at(-1) ?? "A");
    const twin = `${s.slice(0, -1)}${alphabet[(last & ~3) | ((last & 3) ^ 1)]}`;
    expect(Buffer.from(twin, "base64url")).toEqual(Buffer.from(s, "base64url"));
    expect(await reason(`${h}.${p}.${twin}`)).toBe("malformed");
  });

  it("refuse an oversize token before any work on it", async () => {
    const big = claims({ pad: "x".repeat(8_000) });
    const token = await craft(HS256, big);
    expect(token.length).toBeGreaterThan(MAX_TOKEN_CHARS);
    expect(await reason(token)).toBe("too_large");
    expect(await reason(`${"a".repeat(MAX_TOKEN_CHARS + 1)}.e30.`)).toBe("too_large");
    // The largest token the service mints (a 256-character id, each character three bytes of UTF-8) is far below
    // the limit.
    const longest = (await signUserToken(SECRET, `u:${"漢".repeat(256)}`, NOW_MS, TOKEN_MAX_TTL_S)).token;
    expect(longest.length).toBeLessThan(MAX_TOKEN_CHARS / 2);
    expect(await reason(longest)).toBe("ok");
  });

  it("read duplicate JSON members as the lexically last one (RFC 7519 §4), so they cannot smuggle a claim", async () => {
    // Header: the last alg decides, and the header is under the signature anyway.
    const payload = JSON.stringify(claims());
    expect(await reason(await craft('{"alg":"HS256","alg":"none"}', payload))).toBe("algorithm_not_allowed");
    expect(await reason(await craft('{"alg":"none","alg":"HS256"}', payload, "guessed"))).toBe("bad_signature");
    // Payload: a second sub after a valid one changes nothing without the secret.
    const good = await craft(HS256, claims());
    const [h, , s] = good.split(".");
    const smuggled = `${payload.slice(0, -1)},"sub":"u:mallory"}`;
    expect(await reason(`${h}.${text(smuggled)}.${s}`)).toBe("bad_signature");
    const signed = await verifyUserToken(await craft(JSON.stringify(HS256), smuggled), [SECRET], NOW_MS);
    expect(signed.ok && signed.claims.sub).toBe("u:mallory");
  });
});
