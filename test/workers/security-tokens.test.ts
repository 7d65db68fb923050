// Signed user tokens over HTTP, as RFC 8725 asks (every bad token is 401 with a machine-readable reason), and key
// rotation without dropped requests: ADMIN_KEYS, SERVER_KEYS, USER_TOKEN_SECRETS and SOURCES each accept several
// values. The config is loaded once per env object, so each configuration a rollout passes through is its own env,
// as each Worker isolate has its own during a deploy; requests are spread over the old and new configurations and
// the old and new keys at once.
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { MAX_TOKEN_CHARS, TOKEN_AUDIENCE, TOKEN_ISSUER, TOKEN_LEEWAY_S } from "../../src/rank/tokens.ts";
import { craft, text } from "../support/jwt.ts";
import { ADMIN_KEY, basic, refused, uid } from "./collect-helpers.ts";
import { appFetch, get, SERVER_KEY, TOKEN_SECRET, userToken } from "./rank-helpers.ts";

const HS256 = { alg: "HS256", typ: "JWT" };
const now = () => Math.floor(Date.now() / 1000);
const claims = (patch: Record<string, unknown> = {}) => ({
  iss: TOKEN_ISSUER,
  aud: TOKEN_AUDIENCE,
  sub: "u:rfc8725-alice",
  iat: now(),
  exp: now() + 600,
  ...patch,
});

describe("RFC 8725 over HTTP: every bad token is 401 with its reason", () => {
  it("accepts the well-formed token the cases below are built from", async () => {
    const res = await get("/v1/recommendations", await craft(HS256, claims(), TOKEN_SECRET));
    expect(res.status, await res.text()).toBe(200);
  });

  it("refuses each case with the reason a client can act on", async () => {
    const good = await craft(HS256, claims(), TOKEN_SECRET);
    const [h = "", p = "", s = ""] = good.split(".");
    const cases: Array<[string, string, string]> = [
      ["alg none, unsigned", `${text(JSON.stringify({ alg: "none", typ: "JWT" }))}.${p}.`, "algorithm_not_allowed"],
      ["alg none, signed", await craft({ alg: "none" }, claims(), TOKEN_SECRET), "algorithm_not_allowed"],
      ["alg HS512", await craft({ alg: "HS512", typ: "JWT" }, claims(), TOKEN_SECRET), "algorithm_not_allowed"],
      ["alg RS256", await craft({ alg: "RS256", typ: "JWT" }, claims(), TOKEN_SECRET), "algorithm_not_allowed"],
      ["no alg", await craft({ typ: "JWT" }, claims(), TOKEN_SECRET), "algorithm_not_allowed"],
      ["header tampered", `${text(JSON.stringify({ ...HS256, kid: "k2" }))}.${p}.${s}`, "bad_signature"],
      ["payload tampered", `${h}.${text(JSON.stringify(claims({ sub: "u:rfc8725-mallory" })))}.${s}`, "bad_signature"],
      ["signature stripped", `${h}.${p}.`, "bad_signature"],
      ["signature of another length", `${h}.${p}.${text("sixteen bytes...")}`, "bad_signature"],
      ["another secret", await craft(HS256, claims(), "guessed-secret"), "bad_signature"],
      ["expired", await craft(HS256, claims({ iat: now() - 900, exp: now() - 300 }), TOKEN_SECRET), "expired"],
      ["nbf ahead", await craft(HS256, claims({ nbf: now() + 300 }), TOKEN_SECRET), "not_yet_valid"],
      [
        "iat ahead beyond the leeway",
        await craft(HS256, claims({ iat: now() + TOKEN_LEEWAY_S + 120, exp: now() + 900 }), TOKEN_SECRET),
        "not_yet_valid",
      ],
      ["wrong aud", await craft(HS256, claims({ aud: "lastmile:admin" }), TOKEN_SECRET), "wrong_audience"],
      ["wrong iss", await craft(HS256, claims({ iss: "someone-else" }), TOKEN_SECRET), "wrong_issuer"],
      ["no sub", await craft(HS256, claims({ sub: undefined }), TOKEN_SECRET), "malformed"],
      ["no exp", await craft(HS256, claims({ exp: undefined }), TOKEN_SECRET), "malformed"],
      ["no aud", await craft(HS256, claims({ aud: undefined }), TOKEN_SECRET), "wrong_audience"],
      ["no iss", await craft(HS256, claims({ iss: undefined }), TOKEN_SECRET), "wrong_issuer"],
      ["no iat", await craft(HS256, claims({ iat: undefined }), TOKEN_SECRET), "not_yet_valid"],
      ["lifetime over 24 h", await craft(HS256, claims({ exp: now() + 25 * 3600 }), TOKEN_SECRET), "lifetime_too_long"],
      ["oversize", await craft(HS256, claims({ pad: "x".repeat(MAX_TOKEN_CHARS) }), TOKEN_SECRET), "too_large"],
      ["crit header", await craft({ ...HS256, crit: ["exp"] }, claims(), TOKEN_SECRET), "malformed"],
      [
        "duplicate alg, none last",
        await craft('{"alg":"HS256","alg":"none"}', claims(), TOKEN_SECRET),
        "algorithm_not_allowed",
      ],
    ];
    for (const [name, token, reason] of cases) {
      const res = await get("/v1/recommendations", token);
      expect(res.headers.get("www-authenticate"), name).toMatch(/error="invalid_token"/);
      const body = await refused(res, 401, "unauthorized");
      expect(body.error.reason, name).toBe(reason);
    }
  });

  it("refuses tokens with characters outside base64url as an unknown credential (401, no reason to give)", async () => {
    const [h, p, s] = (await craft(HS256, claims(), TOKEN_SECRET)).split(".");
    for (const token of [`${h}=.${p}.${s}`, `${h}.${p}.${s}=`, `${h}.${p}+.${s}`, `${h}.${p}.${s}/`]) {
      const body = await refused(get("/v1/recommendations", token), 401, "unauthorized");
      expect(body.error.reason, token).toBeUndefined();
    }
  });

  it("refuses the same token on every reading route and on POST /v1/tokens", async () => {
    const expired = await craft(HS256, claims({ iat: now() - 900, exp: now() - 300 }), TOKEN_SECRET);
    for (const path of ["/v1/recommendations", "/v1/similar/p1"]) {
      expect((await refused(get(path, expired), 401, "unauthorized")).error.reason, path).toBe("expired");
    }
    const valid = await userToken("u:rfc8725-alice");
    const mint = await appFetch(env, "/v1/tokens", {
      method: "POST",
      headers: { authorization: `Bearer ${valid}`, "content-type": "application/json" },
      body: JSON.stringify({ userId: "rfc8725-alice" }),
    });
    await refused(mint, 401, "unauthorized");
  });
});

/** Fresh env objects: each is a configuration as one isolate holds it (the config is cached per env). */
const variant = (vars: Partial<Env>): Env => ({ ...env, ...vars });

/**
 * `n` requests at once, request i going to configuration i mod |envs| with key ⌊i / |envs|⌋ mod |keys|, so every
 * configuration sees every key: the statuses, in order.
 */
async function spread(
  envs: Env[],
  keys: string[],
  n: number,
  send: (env: Env, key: string, i: number) => Promise<Response>,
): Promise<Array<{ status: number; key: string }>> {
  return Promise.all(
    Array.from({ length: n }, async (_, i) => {
      const key = keys[Math.floor(i / envs.length) % keys.length] as string;
      const res = await send(envs[i % envs.length] as Env, key, i);
      await res.arrayBuffer();
      return { status: res.status, key };
    }),
  );
}

const statuses = (results: Array<{ status: number }>) => [...new Set(results.map((r) => r.status))];

const bearer = (path: string) => (e: Env, key: string) =>
  appFetch(e, path, { headers: { authorization: `Bearer ${key}` } });

describe("key rotation without dropped requests", () => {
  for (const [name, variable, path] of [
    ["ADMIN_KEYS", "ADMIN_KEYS", "/v1/admin/ranking-config"],
    ["SERVER_KEYS", "SERVER_KEYS", "/v1/recommendations?placement=home"],
  ] as const) {
    it(`${name}: add the new key, move callers, remove the old one`, async () => {
      const [oldKey, newKey] = [uid("old"), uid("new")];
      const before = variant({ [variable]: oldKey });
      const both = variant({ [variable]: `${oldKey},${newKey}` });
      const bothAgain = variant({ [variable]: `${newKey}, ${oldKey}` });
      const after = variant({ [variable]: newKey });
      const send = bearer(path);
      // The deploy adding the new key rolls out while callers still use the old one.
      expect(statuses(await spread([before, both], [oldKey], 12, send))).toEqual([200]);
      // Callers move over one by one, old and new keys interleaved, on isolates of either order of the list.
      expect(statuses(await spread([both, bothAgain], [oldKey, newKey], 24, send))).toEqual([200]);
      // The deploy removing the old key rolls out once every caller has moved.
      expect(statuses(await spread([both, after], [newKey], 12, send))).toEqual([200]);
      // Removed means refused.
      await refused(send(after, oldKey), 401, "unauthorized");
      // The keys are not interchangeable with the other kind of key.
      await refused(send(after, variable === "ADMIN_KEYS" ? SERVER_KEY : ADMIN_KEY), 401, "unauthorized");
    });
  }

  it("USER_TOKEN_SECRETS: verify-only first, then sign with the new one, drop the old after the longest lifetime", async () => {
    const [oldSecret, newSecret] = [uid("old-secret"), uid("new-secret")];
    const configs = {
      start: variant({ USER_TOKEN_SECRETS: oldSecret }),
      verifyNew: variant({ USER_TOKEN_SECRETS: `${oldSecret},${newSecret}` }),
      signNew: variant({ USER_TOKEN_SECRETS: `${newSecret},${oldSecret}` }),
      done: variant({ USER_TOKEN_SECRETS: newSecret }),
    };
    const mint = async (e: Env, i: number) => {
      const res = await appFetch(e, "/v1/tokens", {
        method: "POST",
        headers: { authorization: `Bearer ${SERVER_KEY}`, "content-type": "application/json" },
        body: JSON.stringify({ userId: `rotation-${i}` }),
      });
      expect(res.status).toBe(200);
      return ((await res.json()) as { token: string }).token;
    };
    /** Tokens minted on each of `minters` and presented on each of `readers`, all at once: the statuses. */
    const crossCheck = async (minters: Env[], readers: Env[]) => {
      const tokens = await Promise.all(minters.map((e, i) => mint(e, i)));
      return statuses(await spread(readers, tokens, readers.length * tokens.length * 2, bearer("/v1/recommendations")));
    };
    // 1. The new secret is added second (verify only) while isolates with the old list still serve.
    expect(await crossCheck([configs.start, configs.verifyNew], [configs.start, configs.verifyNew])).toEqual([200]);
    // 2. Once every isolate verifies with it, the new secret moves first and signs.
    const oldToken = await mint(configs.verifyNew, 99);
    expect(await crossCheck([configs.verifyNew, configs.signNew], [configs.verifyNew, configs.signNew])).toEqual([200]);
    // 3. After the longest token lifetime the old secret goes; tokens signed since step 2 verify everywhere.
    expect(await crossCheck([configs.signNew, configs.done], [configs.signNew, configs.done])).toEqual([200]);
    // A token signed with the old secret verifies while that secret is listed, and is refused once it is removed.
    expect((await bearer("/v1/recommendations")(configs.signNew, oldToken)).status).toBe(200);
    const removed = await refused(bearer("/v1/recommendations")(configs.done, oldToken), 401, "unauthorized");
    expect(removed.error.reason).toBe("bad_signature");
    // Why step 1 is needed: moving the new secret first in one deploy drops requests while the rollout lasts —
    // a token the updated isolates sign is refused by the isolates still on the old list.
    const early = await mint(configs.signNew, 7);
    const dropped = await refused(bearer("/v1/recommendations")(configs.start, early), 401, "unauthorized");
    expect(dropped.error.reason).toBe("bad_signature");
  });

  it("SOURCES: a second source with the new write key, clients moved, then the old source disabled", async () => {
    const [oldKey, newKey] = [uid("wk-old"), uid("wk-new")];
    const source = (id: string, writeKey: string, enabled = true) => ({
      id,
      writeKey,
      enabled,
      allowedOrigins: [],
      trustedServer: true,
    });
    const before = variant({ SOURCES: JSON.stringify([source("shop", oldKey)]) });
    const both = variant({ SOURCES: JSON.stringify([source("shop", oldKey), source("shop-2", newKey)]) });
    const after = variant({ SOURCES: JSON.stringify([source("shop", oldKey, false), source("shop-2", newKey)]) });
    const send = (e: Env, key: string, i: number) =>
      appFetch(e, "/v1/track", {
        method: "POST",
        headers: { authorization: basic(key), "content-type": "application/json" },
        body: JSON.stringify({ userId: uid("rotation"), event: "Product Viewed", messageId: `rotation-${i}` }),
      });
    expect(statuses(await spread([before, both], [oldKey], 8, send))).toEqual([200]);
    expect(statuses(await spread([both], [oldKey, newKey], 8, send))).toEqual([200]);
    expect(statuses(await spread([both, after], [newKey], 8, send))).toEqual([200]);
    const disabled = await refused(send(after, oldKey, 0), 403, "forbidden");
    expect(disabled.error.sourceId).toBe("shop");
  });
});
