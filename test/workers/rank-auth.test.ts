// Who may read rankings (docs/ranking.md#auth): server keys, signed user tokens that read only their own user
// (BOLA), POST /v1/tokens, and CORS only on token-authenticated answers.
import { exports } from "cloudflare:workers";
import { beforeAll, describe, expect, it } from "vitest";
import { signUserToken } from "../../src/rank/tokens.ts";
import { ADMIN_KEY, basic, envWithSources, refused, WRITE_KEY } from "./collect-helpers.ts";
import {
  appFetch,
  BASE,
  get,
  ids,
  ok,
  postJson,
  publishFixture,
  SERVER_KEY,
  settled,
  shopFixture,
  track,
  userToken,
} from "./rank-helpers.ts";

const shop = shopFixture(`a${crypto.randomUUID().slice(0, 8)}`);
const id = shop.id;
const alice = `u:${id("alice")}`;
const ORIGIN = "https://shop.example";

beforeAll(async () => {
  await publishFixture(shop);
});

const paths = () => ["/v1/recommendations?placement=home", `/v1/similar/${id("p1")}`];
const fetchWith = (path: string, authorization: string | null) =>
  exports.default.fetch(new Request(`${BASE}${path}`, { headers: authorization ? { authorization } : {} }));

describe("credentials", () => {
  it("refuses no key, a wrong key, the write key and the admin key on every route", async () => {
    for (const auth of [null, "wrong-key", WRITE_KEY, ADMIN_KEY, `${SERVER_KEY}x`]) {
      for (const path of paths()) {
        const res = await fetchWith(path, auth === null ? null : `Bearer ${auth}`);
        await refused(res, 401, "unauthorized");
        expect(res.headers.get("www-authenticate")).toMatch(/^Bearer/);
      }
      await refused(postJson("/v1/rank", { candidates: ["a"] }, auth), 401, "unauthorized");
    }
    // The write key as collection sends it (Basic) is no reading credential either.
    await refused(fetchWith("/v1/recommendations", basic(WRITE_KEY)), 401, "unauthorized");
  });

  it("accepts the server key on every route", async () => {
    await ok(get("/v1/recommendations?placement=home"));
    await ok(get(`/v1/similar/${id("p1")}`));
    await ok(postJson("/v1/rank", { candidates: [id("s1")] }));
  });

  it("refuses invalid user tokens with their reason", async () => {
    const expired = await userToken(alice, 600, Date.now() - 3600_000);
    const body = await refused(get("/v1/recommendations", expired), 401, "unauthorized");
    expect(body.error.reason).toBe("expired");
    const foreign = (await signUserToken("some-other-secret", alice, Date.now(), 600)).token;
    expect((await refused(get("/v1/recommendations", foreign), 401, "unauthorized")).error.reason).toBe(
      "bad_signature",
    );
    const [, p] = (await userToken(alice)).split(".");
    const none = `${btoa(JSON.stringify({ alg: "none" })).replace(/=+$/, "")}.${p}.`;
    expect((await refused(get("/v1/recommendations", none), 401, "unauthorized")).error.reason).toBe(
      "algorithm_not_allowed",
    );
  });
});

describe("user tokens read only their own user", () => {
  it("reads its own user with or without naming it, on every route", async () => {
    const token = await userToken(alice);
    const implicit = await ok(get("/v1/recommendations?placement=home&limit=2", token));
    expect(implicit.userKey).toBe(alice);
    expect(ids(implicit)).toEqual([id("b1"), id("b2")]);
    expect((await ok(get(`/v1/recommendations?userId=${id("alice")}&limit=2`, token))).userKey).toBe(alice);
    expect((await ok(get(`/v1/similar/${id("p1")}`, token))).userKey).toBe(alice);
    expect((await ok(postJson("/v1/rank", { candidates: [id("b2"), id("s1")] }, token))).userKey).toBe(alice);
  });

  it("an anonymous visitor's token reads that anonymous id", async () => {
    const token = await userToken(`a:${id("anon")}`);
    const a = await ok(get("/v1/recommendations", token));
    expect(a.userKey).toBe(`a:${id("anon")}`);
    await refused(get(`/v1/recommendations?userId=${id("anon")}`, token), 403, "forbidden");
  });

  it("is forbidden to read anyone else, whatever id it guesses", async () => {
    const token = await userToken(alice);
    const guesses = [
      `userId=${id("bob")}`,
      `anonymousId=${id("alice")}`,
      `userId=${id("alice")}x`,
      `userId=${id("ALICE")}`,
      `userId=${encodeURIComponent(` ${id("alice")}`)}`,
      "userId=1",
      "userId=admin",
      `anonymousId=${id("alice")}&userId=${id("bob")}`,
    ];
    for (const q of guesses) {
      const body = await refused(get(`/v1/recommendations?${q}`, token), 403, "forbidden");
      expect(body.error.message).toMatch(/own user/);
    }
    await refused(get(`/v1/similar/${id("p1")}?userId=${id("bob")}`, token), 403, "forbidden");
    await refused(postJson("/v1/rank", { userId: id("bob"), candidates: ["a"] }, token), 403, "forbidden");
    await refused(postJson("/v1/rank", { anonymousId: "x", candidates: ["a"] }, token), 403, "forbidden");
  });

  it("cannot read another user through a forged identity merge", async () => {
    // Collection is open to anyone holding the (public) write key: an event carrying the victim's userId and the
    // attacker's anonymousId makes the victim's object absorb the attacker's visitor key (mergedInto → victim).
    const victim = id("alice");
    const attacker = id("attacker");
    await track({ userId: victim }, [
      { event: "Product Viewed", properties: { product_id: id("p1") } },
      { event: "Product Added", properties: { product_id: id("c1") } },
    ]);
    await track({ anonymousId: attacker }, [{ event: "Product Viewed", properties: { product_id: id("pop05") } }]);
    await track({ userId: victim, anonymousId: attacker }, [{ event: "Cart Viewed" }]);
    // The victim's object did absorb the attacker's key.
    const victimState = await settled(() => ok(get(`/v1/recommendations?userId=${victim}`)));
    expect(victimState.items.flatMap((i) => i.reasons)).toContain(`similar_to:${id("p1")}`);

    // Neither a user token nor a server key (edge middleware passing the visitor's cookie) follows the merge.
    const token = await userToken(`a:${attacker}`);
    for (const auth of [token, undefined]) {
      const a = await settled(() =>
        ok(get(`/v1/recommendations?placement=home&explain=true&anonymousId=${attacker}`, auth)),
      );
      expect(a.userKey).toBe(`a:${attacker}`);
      expect(a.sources.session.status).toBe("ok");
      expect(a.sources.batch.status).not.toBe("ok");
      const reasons = a.items.flatMap((i) => i.reasons);
      expect(reasons).not.toContain("batch");
      expect(reasons.filter((r) => r.includes(id("p1")) || r.includes(id("c1")))).toEqual([]);
      expect(ids(a)).not.toContain(id("b1"));
    }
  });

  it("a server key may read any user", async () => {
    expect((await ok(get(`/v1/recommendations?userId=${id("bob")}`))).userKey).toBe(`u:${id("bob")}`);
  });
});

describe("POST /v1/tokens", () => {
  it("mints a token for a user with a server key, which then reads that user", async () => {
    const before = Math.floor(Date.now() / 1000);
    const res = await postJson("/v1/tokens", { userId: id("alice") });
    expect(res.headers.get("cache-control")).toBe("no-store");
    const minted = (await res.json()) as { token: string; userKey: string; expiresAt: number };
    expect(res.status).toBe(200);
    expect(minted.userKey).toBe(alice);
    expect(minted.expiresAt).toBeGreaterThanOrEqual((before + 3600) * 1000);
    expect(minted.expiresAt).toBeLessThanOrEqual((Math.floor(Date.now() / 1000) + 3600) * 1000);
    const a = await ok(get("/v1/recommendations?limit=10", minted.token));
    expect(a.userKey).toBe(alice);
    // Alice's batch list (b1) is read; her session (an earlier test carted c1) may put its neighbours first.
    expect(a.items.find((i) => i.productId === id("b1"))?.reasons).toContain("batch");

    const anon = (await (await postJson("/v1/tokens", { anonymousId: "v-1", ttlSeconds: 60 })).json()) as {
      userKey: string;
      expiresAt: number;
    };
    expect(anon.userKey).toBe("a:v-1");
    expect(anon.expiresAt).toBeLessThanOrEqual(Date.now() + 61_000);
  });

  it("needs a server key: not a user token, the write key or the admin key", async () => {
    const token = await userToken(alice);
    for (const auth of [null, token, WRITE_KEY, ADMIN_KEY]) {
      await refused(postJson("/v1/tokens", { userId: id("alice") }, auth), 401, "unauthorized");
    }
  });

  it("validates the body", async () => {
    const field = async (body: unknown, name: string) =>
      expect((await refused(postJson("/v1/tokens", body), 400, "validation_failed")).error.field).toBe(name);
    await field({}, "userId");
    await field({ userId: "" }, "userId");
    await field({ userId: 42 }, "userId");
    await field({ userId: "a", ttlSeconds: 59 }, "ttlSeconds");
    await field({ userId: "a", ttlSeconds: 86_401 }, "ttlSeconds");
    await field({ userId: "a", ttlSeconds: "3600" }, "ttlSeconds");
    await field([], "body");
    const raw = (body: string, type: string) =>
      exports.default.fetch(
        new Request(`${BASE}/v1/tokens`, {
          method: "POST",
          headers: { authorization: `Bearer ${SERVER_KEY}`, "content-type": type },
          body,
        }),
      );
    await refused(raw("{", "application/json"), 400, "invalid_json");
    await refused(raw('{"userId":"a"}', "application/x-www-form-urlencoded"), 415, "unsupported_media_type");
  });
});

describe("CORS", () => {
  const withOrigin = (auth: string, origin = ORIGIN) => ({ authorization: `Bearer ${auth}`, origin });

  it("token answers name an allowed origin; server-key answers never do", async () => {
    const token = await userToken(alice);
    const tokenRes = await exports.default.fetch(
      new Request(`${BASE}/v1/recommendations`, { headers: withOrigin(token) }),
    );
    expect(tokenRes.status).toBe(200);
    expect(tokenRes.headers.get("access-control-allow-origin")).toBe(ORIGIN);
    expect(tokenRes.headers.get("access-control-allow-credentials")).toBeNull();
    expect(tokenRes.headers.get("access-control-expose-headers")).toMatch(/Server-Timing/);
    const serverRes = await exports.default.fetch(
      new Request(`${BASE}/v1/recommendations`, { headers: withOrigin(SERVER_KEY) }),
    );
    expect(serverRes.status).toBe(200);
    expect(serverRes.headers.get("access-control-allow-origin")).toBeNull();
  });

  it("token refusals carry the origin too, so a page can read why; server-key refusals never do", async () => {
    const token = await userToken(alice);
    const forbidden = await exports.default.fetch(
      new Request(`${BASE}/v1/recommendations?userId=${id("bob")}`, { headers: withOrigin(token) }),
    );
    expect(forbidden.headers.get("access-control-allow-origin")).toBe(ORIGIN);
    await refused(forbidden, 403, "forbidden");
    const expired = await userToken(alice, 600, Date.now() - 3600_000);
    const unauthorized = await exports.default.fetch(
      new Request(`${BASE}/v1/recommendations`, { headers: withOrigin(expired) }),
    );
    expect(unauthorized.headers.get("access-control-allow-origin")).toBe(ORIGIN);
    await refused(unauthorized, 401, "unauthorized");
    const invalid = await exports.default.fetch(
      new Request(`${BASE}/v1/recommendations?limit=0`, { headers: withOrigin(token) }),
    );
    expect(invalid.headers.get("access-control-allow-origin")).toBe(ORIGIN);
    await refused(invalid, 400, "validation_failed");
    const serverInvalid = await exports.default.fetch(
      new Request(`${BASE}/v1/recommendations?limit=0`, { headers: withOrigin(SERVER_KEY) }),
    );
    expect(serverInvalid.headers.get("access-control-allow-origin")).toBeNull();
    await refused(serverInvalid, 400, "validation_failed");
    const wrongKey = await exports.default.fetch(
      new Request(`${BASE}/v1/recommendations`, { headers: withOrigin("not-a-key") }),
    );
    expect(wrongKey.headers.get("access-control-allow-origin")).toBeNull();
    await refused(wrongKey, 401, "unauthorized");
  });

  it("answers a preflight from an allowed origin", async () => {
    for (const path of ["/v1/recommendations", "/v1/rank", `/v1/similar/${id("p1")}`]) {
      const res = await exports.default.fetch(
        new Request(`${BASE}${path}`, {
          method: "OPTIONS",
          headers: {
            origin: ORIGIN,
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization, content-type",
          },
        }),
      );
      expect(res.status, path).toBe(204);
      expect(res.headers.get("access-control-allow-origin")).toBe(ORIGIN);
      expect(res.headers.get("access-control-allow-methods")).toMatch(/POST/);
      expect(res.headers.get("access-control-allow-headers")?.toLowerCase()).toMatch(/authorization/);
    }
  });

  it("names no origin that no source allows, on preflights and on token answers", async () => {
    const only = envWithSources([{ id: "shop", writeKey: "k-shop", allowedOrigins: [ORIGIN], trustedServer: false }]);
    const evil = "https://evil.example";
    const preflight = await appFetch(only, "/v1/recommendations", {
      method: "OPTIONS",
      headers: { origin: evil, "access-control-request-method": "GET" },
    });
    expect(preflight.status).toBe(403);
    expect(preflight.headers.get("access-control-allow-origin")).toBeNull();
    // Refused like any other request: the machine-readable error body.
    expect(((await preflight.json()) as { error: { code: string; origin: unknown } }).error).toMatchObject({
      code: "forbidden",
      origin: evil,
    });
    const allowed = await appFetch(only, "/v1/recommendations", {
      method: "OPTIONS",
      headers: { origin: ORIGIN, "access-control-request-method": "GET" },
    });
    expect(allowed.status).toBe(204);
    const token = await userToken(alice);
    const answer = await appFetch(only, "/v1/recommendations", { headers: withOrigin(token, evil) });
    expect(answer.status).toBe(200);
    expect(answer.headers.get("access-control-allow-origin")).toBeNull();
    const good = await appFetch(only, "/v1/recommendations", { headers: withOrigin(token) });
    expect(good.headers.get("access-control-allow-origin")).toBe(ORIGIN);
  });
});
