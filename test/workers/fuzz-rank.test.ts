// Properties of the ranking API through the Worker's real entry point (fast-check, fixed seeds), against a snapshot
// written into the local KV in the publisher's encodings: any query string, path segment, JSON body, Content-Type
// and bearer credential on /v1/recommendations, /v1/similar/:id, /v1/rank and /v1/tokens answers a 2xx or a
// machine-readable 4xx — never a 5xx — and every list answered is one of distinct products.
import fc from "fast-check";
import { beforeAll, describe, expect, it, vi } from "vitest";
import { MAX_ID_CHARS } from "../../src/rank/request.ts";
import { RANK_BODY_LIMIT } from "../../src/rank/routes.ts";
import { TOKEN_MAX_TTL_S } from "../../src/rank/tokens.ts";
import {
  checkPrototypesAfterAll,
  deepJsonText,
  hostileJson,
  hostileString,
  malformedJsonText,
} from "../support/fuzz.ts";
import { rankParams } from "../support/fuzz-docs.ts";
import { gzip } from "./collect-helpers.ts";
import { type Answer, answered, codeOf, queryString, send, slowBody, wireValue } from "./fuzz-helpers.ts";
import { publishFixture, SERVER_KEY, shopFixture, userToken } from "./rank-helpers.ts";

vi.setConfig({ testTimeout: 120_000 });
checkPrototypesAfterAll();

const shop = shopFixture(`fz${crypto.randomUUID().slice(0, 8)}`);
const id = shop.id;

beforeAll(async () => {
  await publishFixture(shop);
});

const PARAM_KEYS = [
  "userId",
  "anonymousId",
  "placement",
  "productId",
  "limit",
  "category",
  "tags",
  "minPrice",
  "maxPrice",
  "country",
  "query",
  "explain",
  "whyNot",
] as const;

/** Names and values a storefront might send, mixed with hostile ones. */
const plausibleQuery = fc
  .record(
    {
      placement: fc.constantFrom("home", "pdp", "cart", "post_purchase", "search", "constructor", "__proto__"),
      userId: fc.constantFrom(id("alice"), id("bob"), ""),
      productId: fc.constantFrom(id("p1"), id("c1"), "nope"),
      limit: fc.constantFrom("1", "5", "50", "51", "0", "-1", "1.5", "1e2"),
      category: fc.constantFrom("kitchen", "kitchen,lamps", ",,,", ""),
      minPrice: fc.constantFrom("0", "10", "-5", "abc"),
      maxPrice: fc.constantFrom("5", "100", "Infinity"),
      explain: fc.constantFrom("true", "false", "1", "maybe"),
      whyNot: fc.constantFrom(id("oos"), id("s1")),
    },
    { requiredKeys: [] },
  )
  .map((q) => {
    const pairs = Object.entries(q).map(([k, v]) => `${k}=${encodeURIComponent(v)}`);
    return pairs.length ? `?${pairs.join("&")}` : "";
  });
const query = fc.oneof(plausibleQuery, queryString(PARAM_KEYS));

/** Server key, a user's signed token (theirs or another's, expired or not), a malformed one, or nothing. */
const credential = fc.oneof(
  { weight: 4, arbitrary: fc.constant({ auth: SERVER_KEY }) },
  {
    weight: 2,
    arbitrary: fc
      .tuple(fc.constantFrom(`u:${id("alice")}`, `a:${id("visitor")}`), fc.constantFrom(600, -7200))
      .map(([key, ttl]) => ({ userKey: key, ttl })),
  },
  {
    weight: 1,
    arbitrary: fc
      .oneof(
        fc.constantFrom("a.b.c", "eyJhbGciOiJub25lIn0.e30.", "x".repeat(5000), "local-admin-key"),
        hostileString.filter((s) => /^[\x21-\x7e]+$/.test(s)),
      )
      .map((auth) => ({ auth })),
  },
  { weight: 1, arbitrary: fc.constant({ auth: null }) },
);

async function authorization(c: { auth?: string | null; userKey?: string; ttl?: number }): Promise<string | null> {
  if (c.userKey) {
    // A negative lifetime: issued two hours ago, expired an hour later.
    const now = (c.ttl ?? 600) < 0 ? Date.now() - 7_200_000 : Date.now();
    return `Bearer ${await userToken(c.userKey, Math.abs(c.ttl ?? 600), now)}`;
  }
  return c.auth ? `Bearer ${c.auth}` : null;
}

interface RankAnswerBody {
  items: Array<{ productId: string }>;
}

/** A 200's list holds distinct products; any answer passes the no-5xx check. */
async function checked(res: Promise<Response>, what: string): Promise<Answer> {
  const a = await answered(res, what);
  if (a.status === 200) {
    const items = (a.body as RankAnswerBody).items;
    expect(Array.isArray(items), what).toBe(true);
    const ids = items.map((i) => i.productId);
    expect(new Set(ids).size, what).toBe(ids.length);
  }
  return a;
}

function get(path: string, auth: string | null, headers: Record<string, string> = {}): Promise<Response> {
  return send(path, { headers: { ...(auth ? { authorization: auth } : {}), ...headers } });
}

function post(path: string, body: BodyInit | null, auth: string | null, headers: Record<string, string> = {}) {
  return send(path, {
    method: "POST",
    headers: { "content-type": "application/json", ...(auth ? { authorization: auth } : {}), ...headers },
    body,
  });
}

describe("GET /v1/recommendations and /v1/similar/:id", () => {
  it("answer any query string and credential with a 2xx or a machine-readable 4xx", async () => {
    const seen = new Set<number>();
    await fc.assert(
      fc.asyncProperty(query, credential, fc.constantFrom("", "https://shop.example"), async (q, c, origin) => {
        const auth = await authorization(c);
        const a = await checked(get(`/v1/recommendations${q}`, auth, origin ? { origin } : {}), q);
        if (auth === null) expect(a.status).toBe(401);
        seen.add(a.status);
      }),
      { seed: 0x5eed_4101, numRuns: 80 },
    );
    // The runs reached answers as well as each kind of refusal.
    expect([...seen]).toEqual(expect.arrayContaining([200, 400, 401, 403]));
  });

  it("answer any product id in the path, any query and credential the same way", async () => {
    const productId = fc.oneof(
      fc.constantFrom(id("p1"), id("c1"), encodeURIComponent("x".repeat(MAX_ID_CHARS + 1))),
      wireValue,
    );
    const seen = new Set<number>();
    await fc.assert(
      fc.asyncProperty(productId, query, credential, async (p, q, c) => {
        seen.add((await checked(get(`/v1/similar/${p}${q}`, await authorization(c)), `similar ${p}${q}`)).status);
      }),
      { seed: 0x5eed_4102, numRuns: 60 },
    );
    expect([...seen]).toEqual(expect.arrayContaining([200, 400, 401]));
  });
});

describe("POST /v1/rank", () => {
  const candidates = fc.array(fc.constantFrom(id("p1"), id("s1"), id("oos"), id("pop01"), "unknown"), {
    minLength: 1,
    maxLength: 8,
  });
  const body = fc.oneof(
    fc
      .record({ userId: fc.constantFrom(id("alice"), ""), query: hostileString, candidates })
      .map((b) => JSON.stringify(b)),
    rankParams.map((p) => JSON.stringify(p)),
    hostileJson.map((v) => JSON.stringify(v) ?? "null"),
    malformedJsonText,
  );

  it("answers any body, Content-Type and credential with a 2xx or a machine-readable 4xx", async () => {
    const seen = new Set<number>();
    await fc.assert(
      fc.asyncProperty(
        body,
        credential,
        fc.constantFrom(
          "application/json",
          "application/json; charset=utf-8",
          "text/plain",
          "",
          "application/x-www-form-urlencoded",
        ),
        fc.boolean(),
        async (text, c, type, compress) => {
          const headers: Record<string, string> = { "content-type": type };
          if (compress) headers["content-encoding"] = "gzip";
          const auth = await authorization(c);
          seen.add((await checked(post("/v1/rank", compress ? await gzip(text) : text, auth, headers), text)).status);
        },
      ),
      { seed: 0x5eed_4201, numRuns: 80 },
    );
    expect([...seen]).toEqual(expect.arrayContaining([200, 400, 401, 415]));
  });

  it("re-ranks a body that arrives slowly", async () => {
    const text = JSON.stringify({ candidates: [id("p1"), id("s1"), id("pop01")] });
    const a = await checked(
      post("/v1/rank", slowBody(new TextEncoder().encode(text), 6, 40), `Bearer ${SERVER_KEY}`),
      "slow",
    );
    expect(a.status).toBe(200);
    expect(new Set((a.body as RankAnswerBody).items.map((i) => i.productId))).toEqual(
      new Set([id("p1"), id("s1"), id("pop01")]),
    );
  });

  it("refuses deep nesting with 400, a body over the cap or a gzip bomb with 413, another type with 415", async () => {
    const auth = `Bearer ${SERVER_KEY}`;
    for (const kind of ["array", "object"] as const) {
      expect(codeOf(await checked(post("/v1/rank", `{"candidates":${deepJsonText(10_000, kind)}}`, auth), kind))).toBe(
        "invalid_json",
      );
    }
    // The largest valid request is under the cap: 1,000 candidates of the longest ids, every character escaped.
    const idText = (n: number) => `"${"\\u6f22".repeat(MAX_ID_CHARS - 3)}${String(n).padStart(3, "0")}"`;
    const candidates = Array.from({ length: 1_000 }, (_, n) => `{"productId":${idText(n)},"score":${n}.5}`);
    const largest = `{"candidates":[${candidates.join(",")}]}`;
    expect(largest.length).toBeGreaterThan(1_500_000);
    expect((await checked(post("/v1/rank", largest, auth), "largest")).status).toBe(200);
    const big = JSON.stringify({ candidates: [id("p1")], pad: "x".repeat(RANK_BODY_LIMIT) });
    expect(codeOf(await checked(post("/v1/rank", big, auth), "big"))).toBe("payload_too_large");
    const bomb = await gzip(`{"candidates":["${"0".repeat(20_000_000)}"]}`);
    const a = await checked(post("/v1/rank", bomb, auth, { "content-encoding": "gzip" }), "bomb");
    expect(codeOf(a)).toBe("payload_too_large");
    const form = await checked(
      post("/v1/rank", "candidates=p1", auth, { "content-type": "application/x-www-form-urlencoded" }),
      "form",
    );
    expect(codeOf(form)).toBe("unsupported_media_type");
  });
});

describe("POST /v1/tokens", () => {
  it("mints a token or refuses with a machine-readable 4xx, for any body", async () => {
    const body = fc.oneof(
      fc
        .record(
          {
            userId: fc.oneof(fc.string({ minLength: 1, maxLength: 20 }), hostileJson),
            ttlSeconds: fc.oneof(fc.integer({ min: 60, max: TOKEN_MAX_TTL_S }), fc.integer(), hostileJson),
          },
          { requiredKeys: [] },
        )
        .map((b) => JSON.stringify(b)),
      hostileJson.map((v) => JSON.stringify(v) ?? "null"),
      malformedJsonText,
    );
    const seen = new Set<number>();
    await fc.assert(
      fc.asyncProperty(body, credential, async (text, c) => {
        const a = await answered(post("/v1/tokens", text, await authorization(c)), text.slice(0, 200));
        if (a.status === 200) expect(typeof (a.body as { token: string }).token).toBe("string");
        seen.add(a.status);
      }),
      { seed: 0x5eed_4301, numRuns: 60 },
    );
    expect([...seen]).toEqual(expect.arrayContaining([200, 400, 401]));
  });
});
