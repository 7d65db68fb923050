// Properties of the ranking API's inputs for arbitrary values (fast-check, fixed seeds): the request parser (query
// strings, JSON bodies and RPC arguments alike) and the user-token verifier. A request is parsed or refused with
// 400 validation_failed, a token is verified or refused with a reason — never another exception — and nothing
// reaches a shared prototype.
import fc from "fast-check";
import { describe, expect, it, vi } from "vitest";
import { parseCatalogJson } from "../../src/batch/catalog.ts";
import { DEFAULT_RANKING_CONFIG, type PlacementConfig, type RankingConfig } from "../../src/rank/config.ts";
import {
  MAX_ID_CHARS,
  MAX_RERANK_CANDIDATES,
  parseRankParams,
  type RankParams,
  type RankRequest,
  requestUserKey,
} from "../../src/rank/request.ts";
import { looksLikeJwt, signUserToken, TOKEN_MAX_TTL_S, verifyUserToken } from "../../src/rank/tokens.ts";
import {
  checkPrototypesAfterAll,
  HOSTILE_KEYS,
  hostileJson,
  hostileString,
  hostileValue,
  survivesUtf8,
  unicodeString,
  valueOr4xx,
} from "../support/fuzz.ts";
import { rankParams, rankQuery } from "../support/fuzz-docs.ts";

vi.setConfig({ testTimeout: 60_000 });

checkPrototypesAfterAll();

const MODES: RankRequest["mode"][] = ["recommend", "similar", "rerank"];

/** A placement named like an Object.prototype member, as an admin may store one. */
const constructorPlacement: PlacementConfig = { sources: ["popular"], exclude: [], defaultLimit: 20 };
/** The default, and a config with a lowered cap and that placement. */
const CONFIGS: RankingConfig[] = [
  DEFAULT_RANKING_CONFIG,
  {
    ...DEFAULT_RANKING_CONFIG,
    maxLimit: 5,
    placements: {
      ...DEFAULT_RANKING_CONFIG.placements,
      constructor: constructorPlacement,
    },
  },
];

function checkRequest(mode: RankRequest["mode"], config: RankingConfig, r: RankRequest): void {
  expect(r.mode).toBe(mode);
  expect(Number.isInteger(r.limit)).toBe(true);
  if (mode === "recommend") {
    expect(Object.hasOwn(config.placements, r.placement)).toBe(true);
    expect(r.limit).toBeGreaterThanOrEqual(1);
    expect(r.limit).toBeLessThanOrEqual(config.maxLimit);
  }
  if (mode === "similar") expect(r.context).toHaveLength(1);
  if (mode === "rerank") {
    const ids = (r.candidates ?? []).map((c) => c.productId);
    expect(ids.length).toBeGreaterThan(0);
    expect(new Set(ids).size).toBe(ids.length);
    expect(r.limit).toBeLessThanOrEqual(MAX_RERANK_CANDIDATES);
    for (const c of r.candidates ?? []) if (c.score !== undefined) expect(Number.isFinite(c.score)).toBe(true);
  }
  if (r.userKey !== null) {
    expect(r.userKey).toMatch(/^[ua]:/);
    expect(r.userKey.length).toBeLessThanOrEqual(MAX_ID_CHARS + 2);
    // It names a session object: it must survive UTF-8 unchanged.
    expect(survivesUtf8(r.userKey)).toBe(true);
  }
  for (const v of [r.filters.minPrice, r.filters.maxPrice]) if (v !== undefined) expect(Number.isFinite(v)).toBe(true);
  for (const list of [r.filters.categories, r.filters.tags]) {
    if (list) expect(list.every((x) => typeof x === "string" && x.length > 0)).toBe(true);
  }
  if (r.country !== null) expect(r.country).toMatch(/^[A-Z]{2}$/);
  expect(typeof r.explain).toBe("boolean");
  // The request is logged and echoed as JSON.
  expect(() => JSON.stringify(r)).not.toThrow();
}

describe("parseRankParams: any parameters, any mode", () => {
  it("parses a request within its bounds or refuses it with 400 validation_failed", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(rankParams, hostileValue),
        fc.constantFrom(...MODES),
        fc.constantFrom(...CONFIGS),
        async (p, mode, config) => {
          const result = await valueOr4xx(() => parseRankParams(mode, p as RankParams, config));
          if (result.ok) checkRequest(mode, config, result.value);
          else {
            expect(result.error.code).toBe("validation_failed");
            expect(typeof result.error.details?.field).toBe("string");
          }
        },
      ),
      { seed: 0x5eed_1101, numRuns: 1500 },
    );
  });

  it("parses query strings (every value a string) the same way", async () => {
    await fc.assert(
      fc.asyncProperty(rankQuery, fc.constantFrom(...MODES), async (q, mode) => {
        const result = await valueOr4xx(() => parseRankParams(mode, q as RankParams, DEFAULT_RANKING_CONFIG));
        if (result.ok) checkRequest(mode, DEFAULT_RANKING_CONFIG, result.value);
        else expect(result.error.code).toBe("validation_failed");
      }),
      { seed: 0x5eed_1102, numRuns: 1000 },
    );
  });

  it("never takes a placement from Object.prototype: constructor, toString, __proto__ are unknown", async () => {
    for (const name of HOSTILE_KEYS) {
      const result = await valueOr4xx(() => parseRankParams("recommend", { placement: name }, DEFAULT_RANKING_CONFIG));
      expect(result.ok).toBe(false);
    }
    // A placement an admin really named so is one.
    const own = CONFIGS[1] as RankingConfig;
    expect(parseRankParams("recommend", { placement: "constructor" }, own).limit).toBe(own.maxLimit);
  });

  it("refuses ids with an unpaired surrogate: they would name another user's session object", async () => {
    for (const field of ["userId", "anonymousId", "productId", "placement"] as const) {
      const result = await valueOr4xx(() =>
        parseRankParams("similar", { productId: "p", [field]: "zz\ud800" }, DEFAULT_RANKING_CONFIG),
      );
      expect(!result.ok && result.error.details?.field).toBe(field);
    }
  });

  it("takes every id the catalogue and collection accept (256 characters), and refuses a longer one", () => {
    const longest = "p".repeat(256);
    const catalogued = parseCatalogJson({ items: [{ id: longest, title: "Longest id" }] });
    expect(catalogued.errorCount).toBe(0);
    expect(catalogued.items.map((i) => i.id)).toEqual([longest]);
    const rerank = parseRankParams("rerank", { candidates: ["85123A", longest] }, DEFAULT_RANKING_CONFIG);
    expect(rerank.candidates?.map((c) => c.productId)).toEqual(["85123A", longest]);
    expect(parseRankParams("similar", { productId: longest }, DEFAULT_RANKING_CONFIG).context).toEqual([longest]);
    const visitor = "u".repeat(256);
    expect(parseRankParams("recommend", { userId: visitor }, DEFAULT_RANKING_CONFIG).userKey).toBe(`u:${visitor}`);
    for (const params of [{ productId: `${longest}x` }, { userId: `${visitor}x` }]) {
      expect(() => parseRankParams("similar", params, DEFAULT_RANKING_CONFIG)).toThrow(/at most 256 characters/);
    }
  });

  it("keys a request by its userId over its anonymousId, as collection does", () => {
    fc.assert(
      fc.property(
        fc.string({ minLength: 1, maxLength: MAX_ID_CHARS }),
        fc.option(fc.string({ minLength: 1, maxLength: MAX_ID_CHARS }), { nil: undefined }),
        (userId, anonymousId) => {
          expect(requestUserKey({ userId, anonymousId })).toBe(`u:${userId}`);
          expect(requestUserKey({ anonymousId: userId })).toBe(`a:${userId}`);
        },
      ),
      { seed: 0x5eed_1103, numRuns: 300 },
    );
  });
});

const SECRET = "fuzz-secret";
const NOW_MS = Date.parse("2026-06-01T12:00:00Z");

const base64url = fc.string({
  unit: fc.constantFrom(..."ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"),
});
const b64 = (text: string) =>
  btoa(String.fromCharCode(...new TextEncoder().encode(text)))
    .replace(/\+/g, "-")
    .replace(/\//g, "_")
    .replace(/=+$/, "");

describe("verifyUserToken: any bearer credential", () => {
  it("refuses anything it did not sign with a reason, never throwing", async () => {
    const jsonPart = hostileJson.map((v) => b64(JSON.stringify(v) ?? "null"));
    const token = fc.oneof(
      hostileString,
      unicodeString(60),
      fc.tuple(base64url, base64url, base64url).map((parts) => parts.join(".")),
      fc.tuple(jsonPart, jsonPart, base64url).map((parts) => parts.join(".")),
      fc
        .tuple(jsonPart, fc.constantFrom("", "A", "AA", "AAA", "A".repeat(43), "_".repeat(43)))
        .map(([p, s]) => `${b64('{"alg":"HS256","typ":"JWT"}')}.${p}.${s}`),
      fc.constantFrom("..", "a.b.c", "a.b.c.d", `${b64('{"alg":"none"}')}.${b64("{}")}.`),
    );
    await fc.assert(
      // Secrets as the config reads them: trimmed, never empty.
      fc.asyncProperty(token, fc.array(fc.constantFrom(SECRET, "other", "é"), { maxLength: 3 }), async (t, secrets) => {
        const check = await verifyUserToken(t, secrets, NOW_MS);
        expect(check.ok).toBe(false);
        if (!check.ok) expect(typeof check.reason).toBe("string");
        expect(typeof looksLikeJwt(t)).toBe("boolean");
      }),
      { seed: 0x5eed_1201, numRuns: 800 },
    );
  });

  it("accepts what it signed for any user key, and nothing once a claim is changed", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom("u:", "a:"),
        unicodeString(60),
        fc.integer({ min: 60, max: TOKEN_MAX_TTL_S }),
        async (prefix, id, ttl) => {
          const { token } = await signUserToken(SECRET, `${prefix}${id}`, NOW_MS, ttl);
          const check = await verifyUserToken(token, ["other", SECRET], NOW_MS);
          expect(check.ok && check.claims.sub).toBe(`${prefix}${id}`);
          const [h, p, s] = token.split(".") as [string, string, string];
          const claims = JSON.parse(
            new TextDecoder().decode(
              Uint8Array.from(atob(p.replace(/-/g, "+").replace(/_/g, "/")), (c) => c.charCodeAt(0)),
            ),
          );
          const forged = `${h}.${b64(JSON.stringify({ ...claims, sub: `${prefix}${id}x` }))}.${s}`;
          expect((await verifyUserToken(forged, [SECRET], NOW_MS)).ok).toBe(false);
        },
      ),
      { seed: 0x5eed_1202, numRuns: 200 },
    );
  });
});
