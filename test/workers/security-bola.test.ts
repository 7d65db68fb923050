// The BOLA sweep: users A and B have sessions (recorded through the real collection API) and batch lists (in the
// online store); with A's tokens, ask for B's recommendations, similar items and re-ranks under every parameter
// spelling there is — names in other cases, URL-encoded, duplicated, in the body of POST /v1/rank, prototype keys —
// and for many guessed ids. A leak is any 2xx answered for someone other than the token's user, any answer naming
// B, or any item carrying a reason that only B's data gives it. The count must be 0, and the detector is shown to
// find B's data in a server key's answer about B, so a leak could not go unnoticed.

import { exports } from "cloudflare:workers";
import { beforeAll, describe, expect, it } from "vitest";
import type { Answer } from "./rank-helpers.ts";
import { BASE, get, publishFixture, SERVER_KEY, settled, track, userToken } from "./rank-helpers.ts";

const tag = `bola${crypto.randomUUID().slice(0, 8)}`;
const id = (name: string) => `${tag}-${name}`;
const A = id("alice");
const A_ANON = id("alice-anon");
const B = id("bob");
const B_ANON = id("bob-anon");

/** Products only B's data (batch lists, session, their neighbours) can bring into an answer. */
const B_ONLY = ["bBatch1", "bBatch2", "bAnonBatch", "pB", "sB1", "sB2", "cB", "btB1", "pB2", "sB3"].map(id);
const NEUTRAL = Array.from({ length: 12 }, (_, i) => id(`n${String(i + 1).padStart(2, "0")}`));
/** Reasons any visitor's answer may give any product: they say nothing about whose data was read. */
const SHARED_REASONS = new Set([
  "trending",
  "popular_fallback",
  "catalog_fill",
  "candidate",
  "query_match",
  "price_band",
]);
const isShared = (reason: string) => SHARED_REASONS.has(reason) || reason.startsWith("popular");

beforeAll(async () => {
  await publishFixture({
    version: 1,
    catalog: [
      ...NEUTRAL.map((n, i) => ({ id: n, category: `cat${i}` })),
      ...["aBatch1", "pA", "aSim1", "ctx"].map((n) => ({ id: id(n), category: "a-things" })),
      ...B_ONLY.map((n) => ({ id: n, category: "b-things" })),
    ],
    popular: { global: NEUTRAL.map((n, i) => [n, 12 - i] as [string, number]) },
    users: {
      [`u:${A}`]: [[id("aBatch1"), 0.9, null]],
      [`u:${B}`]: [
        [id("bBatch1"), 0.9, null],
        [id("bBatch2"), 0.8, null],
      ],
      [`a:${B_ANON}`]: [[id("bAnonBatch"), 0.9, null]],
    },
    similar: {
      [id("pA")]: [[id("aSim1"), 0.9]],
      [id("pB")]: [
        [id("sB1"), 0.9],
        [id("sB2"), 0.5],
      ],
      [id("pB2")]: [[id("sB3"), 0.9]],
      [id("ctx")]: [[NEUTRAL[0] as string, 0.9]],
    },
    boughtTogether: { [id("cB")]: [[id("btB1"), 0.8]] },
  });
  await track({ userId: A }, [{ event: "Product Viewed", properties: { product_id: id("pA") } }]);
  await track({ anonymousId: A_ANON }, [{ event: "Product Viewed", properties: { product_id: id("pA") } }]);
  await track({ userId: B }, [
    { event: "Product Viewed", properties: { product_id: id("pB") } },
    { event: "Product Added", properties: { product_id: id("cB") } },
  ]);
  await track({ anonymousId: B_ANON }, [{ event: "Product Viewed", properties: { product_id: id("pB2") } }]);
});

const RANK_CANDIDATES = [...B_ONLY, id("aBatch1"), ...NEUTRAL.slice(0, 4)];

/** The three reading routes; `query` is appended as given (it may hold any spelling). */
const routes = {
  recommendations: (query: string, auth: string) => get(`/v1/recommendations?limit=20&explain=true&${query}`, auth),
  similar: (query: string, auth: string) => get(`/v1/similar/${id("ctx")}?limit=20&explain=true&${query}`, auth),
  rank: (query: string, auth: string) =>
    rawPost(`/v1/rank?${query}`, JSON.stringify({ candidates: RANK_CANDIDATES, explain: true }), auth),
};

function rawPost(path: string, body: string, auth: string): Promise<Response> {
  return exports.default.fetch(
    new Request(`${BASE}${path}`, {
      method: "POST",
      headers: { authorization: `Bearer ${auth}`, "content-type": "application/json" },
      body,
    }),
  );
}

/** `${productId}|${reason}` pairs only B's data gives: the signature a leak would carry. */
const bSignature = new Set<string>();

function pairs(a: Answer): string[] {
  return a.items.flatMap((item) => item.reasons.filter((r) => !isShared(r)).map((r) => `${item.productId}|${r}`));
}

/** Why this answer is a leak to the caller `callerKey`, or null. */
function leakOf(status: number, text: string, callerKey: string): string | null {
  if (status < 200 || status >= 300) return null;
  const answer = JSON.parse(text) as Answer;
  if (answer.userKey !== callerKey) return `answered for ${answer.userKey}`;
  if (text.includes(B) || text.includes(B_ANON)) return "names B";
  const found = pairs(answer).filter((p) => bSignature.has(p));
  return found.length > 0 ? `carries B's data: ${found.join(", ")}` : null;
}

/** What a server key reads about one visitor (POST /v1/rank names the visitor in its body), with its session. */
async function serverRead(route: keyof typeof routes, query: string): Promise<Answer> {
  const [name = "", value = ""] = query.split("=");
  const body = JSON.stringify({ [name]: value, candidates: RANK_CANDIDATES, explain: true });
  const send = () => (route === "rank" ? rawPost("/v1/rank", body, SERVER_KEY) : routes[route](query, SERVER_KEY));
  const answer = await settled(async () => JSON.parse(await (await send()).text()) as Answer);
  expect(answer.sources.session.status, `${route} ${query}`).toBe("ok");
  return answer;
}

// The signature: what B's answers carry on B's own products that A's answers do not.
beforeAll(async () => {
  const own = new Set<string>();
  const routeNames = Object.keys(routes) as Array<keyof typeof routes>;
  for (const route of routeNames) {
    for (const p of pairs(await serverRead(route, `userId=${A}`))) own.add(p);
    for (const p of pairs(await serverRead(route, `anonymousId=${A_ANON}`))) own.add(p);
  }
  for (const route of routeNames) {
    for (const query of [`userId=${B}`, `anonymousId=${B_ANON}`]) {
      for (const p of pairs(await serverRead(route, query))) {
        if (!own.has(p) && B_ONLY.includes(p.split("|")[0] as string)) bSignature.add(p);
      }
    }
  }
});

describe("BOLA sweep", () => {
  it("the detector knows B's data: B's batch lists and the neighbours of what B viewed and carted", async () => {
    const products = new Set([...bSignature].map((p) => p.split("|")[0]));
    for (const product of ["bBatch1", "bBatch2", "bAnonBatch", "sB1", "btB1", "sB3"]) {
      expect(products, product).toContain(id(product));
    }
    const res = await routes.recommendations(`userId=${B}`, SERVER_KEY);
    expect(leakOf(res.status, await res.text(), `u:${A}`)).not.toBeNull();
  });

  it("A's tokens never read B, whatever the spelling or the guess: 0 leaks", { timeout: 240_000 }, async () => {
    const enc = (s: string) => [...s].map((ch) => `%${ch.charCodeAt(0).toString(16).padStart(2, "0")}`).join("");
    const spellings = [
      `userId=${B}`,
      `anonymousId=${B_ANON}`,
      `userId=${B}&anonymousId=${B_ANON}`,
      `anonymousId=${B_ANON}&userId=${B}`,
      `userId=${A}&anonymousId=${B_ANON}`,
      `anonymousId=${B_ANON}&userId=${A}`,
      `userId=${A}&userId=${B}`,
      `userId=${B}&userId=${A}`,
      `anonymousId=${A_ANON}&anonymousId=${B_ANON}`,
      `anonymousId=${B_ANON}&anonymousId=${A_ANON}`,
      `UserId=${B}`,
      `userid=${B}`,
      `USERID=${B}`,
      `userID=${B}`,
      `user_id=${B}`,
      `AnonymousId=${B_ANON}`,
      `anonymousid=${B_ANON}`,
      `anonymous_id=${B_ANON}`,
      `userId=${B.toUpperCase()}`,
      `anonymousId=${B_ANON.toUpperCase()}`,
      `userId=${enc(B)}`,
      `anonymousId=${enc(B_ANON)}`,
      `${enc("userId")}=${B}`,
      `${enc("anonymousId")}=${enc(B_ANON)}`,
      `userId=${encodeURIComponent(` ${B}`)}`,
      `userId=${B}%20`,
      `userId=${B}%00`,
      `userId=u:${B}`,
      `userId=u%3A${B}`,
      `anonymousId=a:${B_ANON}`,
      `userId[]=${B}`,
      `userId[0]=${B}`,
      `user[id]=${B}`,
      `sub=u:${B}`,
      `userKey=u:${B}`,
      `user=${B}`,
      `uid=${B}`,
      `id=${B}`,
      `userId=&anonymousId=${B_ANON}`,
      `userId=${A}${encodeURIComponent(`&userId=${B}`)}`,
      `userId=${A}&amp;userId=${B}`,
      `userId==${B}`,
      `&&userId=${B}`,
      `userId=${B};userId=${A}`,
      `__proto__[userId]=${B}`,
      `constructor[prototype][userId]=${B}`,
    ];
    const guesses = [
      ...Array.from({ length: 60 }, (_, i) => String(i)),
      ...["admin", "root", "test", "user", "null", "undefined", "-1", "*", "%", "me", "self", "true", "[]", "{}"],
      ...Array.from({ length: 20 }, (_, i) => id(`user-${i}`)),
      ...Array.from({ length: 10 }, () => crypto.randomUUID()),
      `${A}x`,
      A.toUpperCase(),
      A_ANON,
      `${B_ANON}`,
      B.slice(0, -1),
      `${B}-anon`,
    ];
    const tokens = { [`u:${A}`]: await userToken(`u:${A}`), [`a:${A_ANON}`]: await userToken(`a:${A_ANON}`) };

    let requests = 0;
    const outcomes = new Map<number, number>();
    const leaks: string[] = [];
    const check = async (what: string, callerKey: string, send: () => Promise<Response>, anyTwoXxLeaks: boolean) => {
      const res = await send();
      const text = await res.text();
      requests++;
      outcomes.set(res.status, (outcomes.get(res.status) ?? 0) + 1);
      if (res.status >= 500) leaks.push(`${what}: ${res.status} ${text.slice(0, 120)}`);
      const leak =
        anyTwoXxLeaks && res.status >= 200 && res.status < 300
          ? `2xx for another user (${text.slice(0, 80)})`
          : leakOf(res.status, text, callerKey);
      if (leak) leaks.push(`${what}: ${leak}`);
    };

    for (const [callerKey, token] of Object.entries(tokens)) {
      const own = callerKey.slice(2);
      // Every spelling, on every route (for POST /v1/rank in the query string, which the route ignores).
      for (const route of Object.keys(routes) as Array<keyof typeof routes>) {
        await Promise.all(
          spellings.map((q) => check(`${callerKey} ${route}?${q}`, callerKey, () => routes[route](q, token), false)),
        );
        // Guessed ids are someone else's: any 2xx is a leak (the token's own id is not a guess). POST /v1/rank
        // reads identity from its body only: its guesses are in the bodies below.
        if (route === "rank") continue;
        await Promise.all(
          guesses
            .filter((g) => g !== own)
            .flatMap((g) => [`userId=${encodeURIComponent(g)}`, `anonymousId=${encodeURIComponent(g)}`])
            .map((q) => check(`${callerKey} ${route}?${q}`, callerKey, () => routes[route](q, token), true)),
        );
      }
      // POST /v1/rank: identity in the body, as JSON text so duplicate members and odd shapes go through verbatim.
      const c = JSON.stringify(RANK_CANDIDATES);
      const bodies = [
        `{"userId":"${B}","candidates":${c}}`,
        `{"anonymousId":"${B_ANON}","candidates":${c}}`,
        `{"userId":"${B}","anonymousId":"${B_ANON}","candidates":${c}}`,
        `{"userId":"${A}","anonymousId":"${B_ANON}","candidates":${c}}`,
        `{"userId":"${own}","userId":"${B}","candidates":${c}}`,
        `{"userId":"${B}","userId":"${own}","candidates":${c}}`,
        `{"anonymousId":"${own}","anonymousId":"${B_ANON}","candidates":${c}}`,
        `{"UserId":"${B}","candidates":${c}}`,
        `{"userid":"${B}","candidates":${c}}`,
        `{"user_id":"${B}","candidates":${c}}`,
        `{"AnonymousId":"${B_ANON}","candidates":${c}}`,
        `{"userId":"${B.toUpperCase()}","candidates":${c}}`,
        `{"userId":"\\u${B.charCodeAt(0).toString(16).padStart(4, "0")}${B.slice(1)}","candidates":${c}}`,
        `{"userId":"u:${B}","candidates":${c}}`,
        `{"userId":"${B} ","candidates":${c}}`,
        `{"userId":["${B}"],"candidates":${c}}`,
        `{"userId":{"id":"${B}"},"candidates":${c}}`,
        `{"userId":null,"anonymousId":"${B_ANON}","candidates":${c}}`,
        `{"userId":"","anonymousId":"${B_ANON}","candidates":${c}}`,
        `{"user":{"id":"${B}"},"candidates":${c}}`,
        `{"userKey":"u:${B}","candidates":${c}}`,
        `{"sub":"u:${B}","candidates":${c}}`,
        `{"__proto__":{"userId":"${B}"},"candidates":${c}}`,
        `{"constructor":{"prototype":{"userId":"${B}"}},"candidates":${c}}`,
        `{"candidates":${c},"userId":"${B}"}`,
        ...guesses.filter((g) => g !== own).map((g) => `{"userId":${JSON.stringify(g)},"candidates":${c}}`),
      ];
      await Promise.all(
        bodies.map((body) =>
          check(
            `${callerKey} POST /v1/rank ${body.slice(0, 60)}`,
            callerKey,
            () => rawPost("/v1/rank", body, token),
            false,
          ),
        ),
      );
    }

    const summary = [...outcomes.entries()]
      .sort(([a], [b]) => a - b)
      .map(([s, n]) => `${n}×${s}`)
      .join(", ");
    console.log(`BOLA sweep: ${requests} requests (${summary}), ${leaks.length} leaks`);
    expect(leaks).toEqual([]);
    // Asking for someone else is refused, not silently answered: most of the sweep is 403.
    expect(outcomes.get(403) ?? 0).toBeGreaterThan(requests / 2);
  });
});
