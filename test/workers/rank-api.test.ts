// The ranking API end to end in workerd: the published snapshot in the local KV (publisher encodings), the real
// SessionState objects fed through the collection API, the real Redis behind the Upstash gateway. Expected lists
// are worked out from shopFixture (rank-helpers.ts) and the default weights (docs/ranking.md#features): batch 1.0,
// context 2.0, covisit 3.0, content 3.0, sessionAffinity 0.8, popularity 0.2 — e.g. pop01 = 0.2 × 12/100 (oos tops
// the list); content = 3 × the share of the context product's title words found in the candidate's.
// Live trending (Redis) holds whatever other test files tracked; fixture ids carry a fresh tag per test, so only
// tr1 (the batch trending list, used while the isolate's live list is cold) can come and go: assertions allow it.
import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { env, exports } from "cloudflare:workers";
import { beforeEach, describe, expect, it, vi } from "vitest";
import { decodePointer, encodePointer } from "../../src/publish/codec.ts";
import { POINTER_KEY } from "../../src/publish/keys.ts";
import { Ranking } from "../../src/rank/entrypoint.ts";
import { invalidateHead } from "../../src/rank/online-store.ts";
import { RANK_BODY_LIMIT } from "../../src/rank/routes.ts";
import { refused } from "./collect-helpers.ts";
import {
  type Answer,
  appFetch,
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

let shop: ReturnType<typeof shopFixture>;
let id: (name: string) => string;
const pops = (from: number, to: number) =>
  Array.from({ length: to - from + 1 }, (_, i) => id(`pop${String(from + i).padStart(2, "0")}`));
/** The items without tr1, whose presence depends on whether the isolate's live trending list is warm yet. */
const organic = (a: Answer) => ids(a).filter((x) => x !== id("tr1"));

beforeEach(async () => {
  shop = shopFixture(`r${crypto.randomUUID().slice(0, 8)}`);
  id = shop.id;
  await publishFixture(shop);
});

describe("routes with a server key", () => {
  it("GET /v1/recommendations: the user's batch list, then the popular fallback", async () => {
    const res = await get(`/v1/recommendations?placement=home&userId=${id("alice")}`);
    expect(res.headers.get("cache-control")).toBe("private, no-store");
    expect(res.headers.get("server-timing")).toMatch(/(^|, )total;dur=[\d.]+/);
    expect(res.headers.get("access-control-allow-origin")).toBeNull();
    const a = await ok(res);
    expect(a.items).toHaveLength(12);
    const hasTrending = ids(a).includes(id("tr1"));
    expect(organic(a)).toEqual([id("b1"), id("b2"), ...pops(1, hasTrending ? 9 : 10)]);
    expect(a.items[0]).toEqual({ productId: id("b1"), score: 1, reasons: ["batch"] });
    // b2 = 0.6 / 0.9; pop01 = 0.2 × 12 / 100
    expect(a.items[1]?.score).toBeCloseTo(2 / 3, 5);
    expect(a.items.find((i) => i.productId === id("pop01"))).toEqual({
      productId: id("pop01"),
      score: 0.024,
      reasons: ["popular_fallback"],
    });
    expect(a).toMatchObject({
      placement: "home",
      mode: "recommend",
      userKey: `u:${id("alice")}`,
      config: { version: "default" },
      snapshot: { version: 1 },
      sources: {
        session: { status: "absent" },
        batch: { status: "ok", version: 1 },
        catalog: { status: "ok", items: 22, version: 1 },
        popular: { status: "ok", version: 1 },
      },
    });
    expect(a.recId).toMatch(/^[0-9a-f-]{36}$/);
  });

  it("GET /v1/recommendations without a user: the non-personal list", async () => {
    const a = await ok(get("/v1/recommendations?placement=home&limit=5"));
    expect(a.userKey).toBeNull();
    expect(a.sources.session.status).toBe("skipped");
    expect(a.sources.batch.status).toBe("skipped");
    const hasTrending = ids(a).includes(id("tr1"));
    expect(organic(a)).toEqual(pops(1, hasTrending ? 4 : 5));
  });

  it("GET /v1/similar/:productId: the product's neighbours first, never the product itself", async () => {
    const a = await ok(get(`/v1/similar/${id("p1")}?limit=4`));
    expect(a.mode).toBe("similar");
    // Neighbour values ½ · score/max + ½ / (1 + rank/5): s1 = 2 × 1 + 3 × ½ ("mug" of "blue mug"),
    // s2 = 2 × (½ · 0.45/0.9 + ½ / 1.2) = 2 × 2/3
    expect(a.items.map((i) => [i.productId, i.score, i.reasons[0]])).toEqual([
      [id("s1"), 3.5, `similar_to:${id("p1")}`],
      [id("s2"), 1.333333, `similar_to:${id("p1")}`],
      [id("pop01"), 0.024, "popular_fallback"],
      [id("pop02"), 0.022, "popular_fallback"],
    ]);
  });

  it("POST /v1/rank: only the caller's candidates, by its scores and the query", async () => {
    const a = await ok(
      postJson("/v1/rank", {
        userId: id("alice"),
        query: "mug",
        candidates: [
          { productId: id("s2"), score: 3 },
          { productId: id("p1"), score: 1 },
          { productId: id("s1"), score: 2 },
          { productId: id("oos"), score: 5 },
          { productId: "not-in-catalogue", score: 0 },
        ],
      }),
    );
    expect(a.mode).toBe("rerank");
    // base = (score − 0) / (5 − 0); the mugs (p1, s1) match the query (+1); b1 (alice's batch) is not a candidate
    // but its batch feature does not apply to others; oos is removed; the unknown id stays (the caller owns it).
    expect(a.items.map((i) => [i.productId, i.score])).toEqual([
      [id("s1"), 1.4],
      [id("p1"), 1.2],
      [id("s2"), 0.6],
      ["not-in-catalogue", 0],
    ]);
    expect(a.items[0]?.reasons).toEqual(["query_match", "base_score"]);
  });

  it("POST /v1/rank with 1,000 candidates answers all of them, the same order every time", async () => {
    const candidates = Array.from({ length: 1000 }, (_, i) => ({ productId: `x${i}`, score: i % 7 }));
    const one = await ok(postJson("/v1/rank", { candidates }));
    const two = await ok(postJson("/v1/rank", { candidates }));
    expect(one.items).toHaveLength(1000);
    const expected = candidates
      .map((c) => c.productId)
      .sort((a, b) => (Number(b.slice(1)) % 7) - (Number(a.slice(1)) % 7) || (a < b ? -1 : 1));
    expect(ids(one)).toEqual(expected);
    expect(ids(two)).toEqual(expected);
  });

  it("gives every answer its own recId and identical requests the identical list", async () => {
    const path = `/v1/similar/${id("p1")}?anonymousId=${id("nobody")}&limit=10`;
    const answers = [await ok(get(path)), await ok(get(path)), await ok(get(path))];
    expect(new Set(answers.map((a) => a.recId)).size).toBe(3);
    expect(ids(answers[0] as Answer)).toEqual([id("s1"), id("s2"), ...pops(1, 8)]);
    for (const a of answers) expect(ids(a)).toEqual(ids(answers[0] as Answer));
  });
});

describe("session events change the next answer", () => {
  it("a viewed product's similar items lead the home list", async () => {
    const anonymousId = id("viewer");
    const before = await ok(get(`/v1/recommendations?placement=home&anonymousId=${anonymousId}`));
    expect(before.sources.session.status).toBe("absent");
    expect(organic(before)[0]).toBe(id("pop01"));

    await track({ anonymousId }, [
      { event: "Product Viewed", properties: { product_id: id("p1"), category: "Kitchen", price: 8 } },
    ]);
    const after = await settled(() =>
      ok(get(`/v1/recommendations?placement=home&anonymousId=${anonymousId}&explain=true`)),
    );
    expect(after.sources.session.status).toBe("ok");
    expect(ids(after).slice(0, 2)).toEqual([id("s1"), id("s2")]);
    // s1: covisit 3 × 1 and session affinity 0.8 × 1 (kitchen is the session's only category)
    expect(after.items[0]?.reasons.slice(0, 2)).toEqual([`similar_to:${id("p1")}`, "session_affinity:kitchen"]);
    expect(after.items[0]?.contributions).toMatchObject({ covisit: 3, sessionAffinity: 0.8 });
    // The viewed product is a seed, not a suggestion.
    expect(ids(after)).not.toContain(id("p1"));
  });

  it("similar items are tuned by the visitor's last viewed items: a neighbour of both overtakes", async () => {
    // p1's neighbours s1 (0.9) and s2 (0.88); the watering can v, in a category of its own, is a neighbour of s2's.
    await publishFixture({
      ...shop,
      version: 2,
      catalog: [...shop.catalog, { id: id("v"), title: "Watering Can", category: "garden", price: 14 }],
      similar: {
        [id("p1")]: [
          [id("s1"), 0.9],
          [id("s2"), 0.88],
        ],
        [id("v")]: [[id("s2"), 0.9]],
      },
    });
    const anonymousId = id("gardener");
    const path = `/v1/similar/${id("p1")}?limit=4`;
    // Without a visitor: s1 = 2 × 1 + 3 × ½ ("mug") = 3.5 ahead of s2 = 2 × (½ · 0.88/0.9 + ½ / 1.2) ≈ 1.81.
    const alone = await ok(get(path));
    expect(ids(alone).slice(0, 2)).toEqual([id("s1"), id("s2")]);
    await track({ anonymousId }, [
      { event: "Product Viewed", properties: { product_id: id("v"), category: "Garden" } },
    ]);
    // The same request for the visitor who viewed v: s2 also gets covisit 3 × 1 (similar to v), 4.81 > 3.5.
    const tuned = await settled(() => ok(get(`${path}&anonymousId=${anonymousId}&explain=true`)));
    expect(tuned.sources.session.status).toBe("ok");
    expect(ids(tuned).slice(0, 2)).toEqual([id("s2"), id("s1")]);
    expect(tuned.items[0]?.reasons).toEqual(expect.arrayContaining([`similar_to:${id("v")}`]));
    expect(ids(tuned)).not.toContain(id("p1"));
    // A visitor who viewed nothing gets the list without one.
    const stranger = await ok(get(`${path}&anonymousId=${id("stranger")}`));
    expect(ids(stranger)).toEqual(ids(alone));
  });

  it("a carted product is excluded on home and its bought-together items lead on cart", async () => {
    const anonymousId = id("shopper");
    await track({ anonymousId }, [{ event: "Product Added", properties: { product_id: id("c1"), quantity: 1 } }]);
    const home = await settled(() =>
      ok(get(`/v1/recommendations?placement=home&anonymousId=${anonymousId}&limit=50&whyNot=${id("c1")}`)),
    );
    expect(ids(home)).not.toContain(id("c1"));
    expect(home.explain?.whyNot).toEqual({ productId: id("c1"), status: "removed", rule: "carted" });
    // Seeds from the cart bring its bought-together items on home too (session source).
    expect(home.items[0]?.reasons[0]).toBe(`bought_together:${id("c1")}`);

    const cart = await settled(() => ok(get(`/v1/recommendations?placement=cart&anonymousId=${anonymousId}`)));
    // Context = the cart: bt1 "Light Bulb" = 2 × 1; bt2 "Lamp Shade" = 2 × (½ · 0.4/0.8 + ½ / 1.2) + 3 × ½ ("lamp"
    // of "desk lamp"): the shared title word puts it first.
    expect(cart.items.slice(0, 2).map((i) => [i.productId, i.score, i.reasons])).toEqual([
      [id("bt2"), 2.833333, ["similar_content", `bought_together:${id("c1")}`]],
      [id("bt1"), 2, [`bought_together:${id("c1")}`]],
    ]);
    expect(ids(cart)).not.toContain(id("c1"));
  });
});

describe("next items and buy again from the batch", () => {
  it("pdp: what shoppers went on to after the product in view leads (i:next:<id>)", async () => {
    await publishFixture({
      ...shop,
      version: 2,
      next: {
        [id("p1")]: [
          [id("c1"), 7],
          [id("s2"), 3.5],
        ],
      },
    });
    const a = await ok(get(`/v1/recommendations?placement=pdp&productId=${id("p1")}&limit=4&explain=true`));
    // Neighbour values ½ · score/max + ½ / (1 + rank/5): c1 = sequence 16 × 1 + popularity 0.2 × 0.5/100;
    // s2 = 16 × (½ · 3.5/7 + ½ / 1.2) + context 2 × (½ · 0.45/0.9 + ½ / 1.2) = 18 × 2/3; s1 = context 2 × 1
    // + content 3 × ½.
    expect(a.items.slice(0, 3).map((i) => [i.productId, i.score, i.reasons[0]])).toEqual([
      [id("c1"), 16.001, `next_after:${id("p1")}`],
      [id("s2"), 12, `next_after:${id("p1")}`],
      [id("s1"), 3.5, `similar_to:${id("p1")}`],
    ]);
    expect(a.items[0]?.sources).toEqual(["context", "popular"]);
  });

  it("home: the user's earlier purchases come back as buy-again entries, apart from the batch candidates", async () => {
    const user = `u:${id("alice")}`;
    await publishFixture({
      ...shop,
      version: 2,
      users: {
        [user]: [
          [id("b1"), 0.9, "bought_together:x"],
          [id("b2"), 0.6, null],
          [id("s2"), 2, "bought_before"],
          [id("c1"), 0.5, "bought_before"],
        ],
      },
    });
    const a = await ok(get(`/v1/recommendations?placement=home&userId=${id("alice")}&limit=4&explain=true`));
    // s2 = buyAgain 10 × 2/2; c1 = 10 × 0.5/2 + popularity 0.2 × 0.5/100; b1 = batch 1 × 0.9/0.9; b2 = 0.6/0.9 (the buy-again entries are not
    // batch candidates: they do not change the batch list's scale).
    expect(a.items.map((i) => [i.productId, i.score, i.reasons[0]])).toEqual([
      [id("s2"), 10, "bought_before"],
      [id("c1"), 2.501, "bought_before"],
      [id("b1"), 1, "batch"],
      [id("b2"), Math.round((0.6 / 0.9) * 1e6) / 1e6, "batch"],
    ]);
    expect(a.items[0]?.sources).toEqual(["buy_again"]);
    expect(a.items[0]?.contributions).toEqual({ buyAgain: 10 });
  });
});

describe("identity merges and post-purchase", () => {
  it("reads exactly the key it is given: a visitor merged into a user answers from its own, emptied object", async () => {
    const anonymousId = id("before-login");
    const userId = id("logged-in");
    await track({ anonymousId }, [{ event: "Product Viewed", properties: { product_id: id("p1") } }]);
    const before = await settled(() => ok(get(`/v1/recommendations?placement=home&anonymousId=${anonymousId}`)));
    expect(before.items[0]?.reasons[0]).toBe(`similar_to:${id("p1")}`);
    // A logged-in event carrying both ids: the user's object absorbs the visitor's.
    await track({ userId, anonymousId }, [{ event: "Cart Viewed" }]);
    const asUser = await settled(() => ok(get(`/v1/recommendations?placement=home&userId=${userId}`)));
    expect(asUser.userKey).toBe(`u:${userId}`);
    expect(asUser.items[0]?.productId).toBe(id("s1"));
    expect(asUser.items[0]?.reasons[0]).toBe(`similar_to:${id("p1")}`);
    // The merge is not followed (anyone holding the write key can send one): the visitor's key reads the visitor's
    // object, whose data went to the user.
    const asVisitor = await settled(() => ok(get(`/v1/recommendations?placement=home&anonymousId=${anonymousId}`)));
    expect(asVisitor.userKey).toBe(`a:${anonymousId}`);
    expect(asVisitor.items.flatMap((i) => i.reasons).filter((r) => r.includes(id("p1")))).toEqual([]);
  });

  it("post_purchase: the order's bought-together items lead, the bought product is excluded", async () => {
    const anonymousId = id("buyer");
    await track({ anonymousId }, [
      { event: "Order Completed", properties: { order_id: "o-1", products: [{ product_id: id("c1"), price: 30 }] } },
    ]);
    const a = await settled(() =>
      ok(get(`/v1/recommendations?placement=post_purchase&anonymousId=${anonymousId}&limit=4`)),
    );
    // As on cart: bt2 = 4/3 + 1.5 (content), bt1 = 2.
    expect(a.items.slice(0, 2).map((i) => [i.productId, i.reasons.at(-1)])).toEqual([
      [id("bt2"), `bought_together:${id("c1")}`],
      [id("bt1"), `bought_together:${id("c1")}`],
    ]);
    expect(ids(a)).not.toContain(id("c1"));
  });

  it("a rerank's placement is a label only: `cart` and `post_purchase` rank as `search` does", async () => {
    const shopper = id("shopper");
    const buyer = id("buyer");
    await track({ anonymousId: shopper }, [
      { event: "Product Added", properties: { product_id: id("c1"), quantity: 1 } },
    ]);
    await track({ anonymousId: buyer }, [
      { event: "Order Completed", properties: { order_id: "o-1", products: [{ product_id: id("c1"), price: 30 }] } },
    ]);
    const rerank = async (anonymousId: string, placement: string) => {
      const a = await settled(() =>
        ok(postJson("/v1/rank", { anonymousId, placement, candidates: [id("pop01"), id("bt1"), id("bt2")] })),
      );
      expect(a.placement).toBe(placement);
      return a.items.map((i) => [i.productId, i.score, i.reasons]);
    };
    // The carted lamp is a session seed whatever the label (its bought-together items get covisit); as a recommend
    // placement, `cart` would also make it the context, and `post_purchase` the bought lamp.
    expect(await rerank(shopper, "cart")).toEqual(await rerank(shopper, "search"));
    const bought = await rerank(buyer, "post_purchase");
    expect(bought).toEqual(await rerank(buyer, "search"));
    expect(bought.flatMap(([, , reasons]) => reasons as string[]).filter((r) => r.includes(id("c1")))).toEqual([]);
  });
});

describe("country segments", () => {
  it("a country's popular list counts on its own scale, next to the global one", async () => {
    // Popular scores are sums of weights per segment: a country's are smaller than the global ones. Each list is
    // scaled by its own best; a product in both takes the better of the two.
    await publishFixture({
      version: 1,
      catalog: [{ id: id("g1") }, { id: id("g2") }, { id: id("de1") }],
      popular: {
        global: [
          [id("g1"), 100],
          [id("g2"), 50],
        ],
        "country:DE": [
          [id("g1"), 5],
          [id("de1"), 4],
        ],
      },
    });
    const de = await ok(get("/v1/recommendations?placement=home&country=de&explain=true"));
    // g1 = 0.2 × max(5/5, 100/100); de1 = 0.2 × 4/5; g2 = 0.2 × 50/100
    expect(de.items.map((i) => [i.productId, i.score])).toEqual([
      [id("g1"), 0.2],
      [id("de1"), 0.16],
      [id("g2"), 0.1],
    ]);
    const global = await ok(get("/v1/recommendations?placement=home&limit=2"));
    expect(ids(global)).toEqual([id("g1"), id("g2")]);
    const other = await ok(get("/v1/recommendations?placement=home&country=FR&limit=2"));
    expect(ids(other)).toEqual([id("g1"), id("g2")]);
  });
});

describe("explain and whyNot", () => {
  it("explain=true adds contributions, sources and the candidate counts", async () => {
    const a = await ok(get(`/v1/recommendations?placement=home&userId=${id("alice")}&explain=true`));
    expect(a.items[0]).toEqual({
      productId: id("b1"),
      score: 1,
      reasons: ["batch"],
      contributions: { batch: 1 },
      sources: ["batch"],
    });
    expect(a.explain?.removed.out_of_stock).toBe(1);
    expect(a.explain?.bySource).toMatchObject({ batch: 2, popular: 14 });
    expect(a.explain?.candidates).toBeGreaterThanOrEqual(16);
    const plain = await ok(get(`/v1/recommendations?placement=home&userId=${id("alice")}`));
    expect(plain.explain).toBeUndefined();
    expect(plain.items[0]?.contributions).toBeUndefined();
  });

  it("whyNot explains a product removed, below the cut, shown, or never a candidate", async () => {
    const why = async (productId: string) =>
      (await ok(get(`/v1/similar/${id("p1")}?limit=4&whyNot=${productId}`))).explain?.whyNot;
    expect(await why(id("oos"))).toEqual({ productId: id("oos"), status: "removed", rule: "out_of_stock" });
    // Eligible order: s1, s2, pop01, pop02 | pop03, pop04, pop05 (7th, 0.2 × 8/100); the cut is pop02 (0.022).
    expect(await why(id("pop05"))).toEqual({
      productId: id("pop05"),
      status: "below_cut",
      position: 7,
      score: 0.016,
      cutScore: 0.022,
      gap: 0.006,
    });
    expect(await why(id("s2"))).toEqual({ productId: id("s2"), status: "shown", position: 2, score: 1.333333 });
    expect(await why(id("b1"))).toEqual({ productId: id("b1"), status: "not_candidate", inCatalog: true });
    expect(await why("nope")).toEqual({ productId: "nope", status: "not_candidate", inCatalog: false });
  });
});

describe("validation", () => {
  const field = async (res: Response | Promise<Response>, name: string) => {
    const body = await refused(res, 400, "validation_failed");
    expect(body.error.field).toBe(name);
  };

  it("refuses bad query parameters naming the field", async () => {
    await field(get("/v1/recommendations?limit=0"), "limit");
    await field(get("/v1/recommendations?limit=2.5"), "limit");
    await field(get("/v1/recommendations?limit=ten"), "limit");
    await field(get("/v1/recommendations?limit=51"), "limit");
    await field(get("/v1/recommendations?placement=checkout"), "placement");
    for (const inherited of ["constructor", "toString", "__proto__", "hasOwnProperty"])
      await field(get(`/v1/recommendations?placement=${inherited}`), "placement");
    await field(get("/v1/recommendations?minPrice=20&maxPrice=10"), "minPrice");
    await field(get("/v1/recommendations?minPrice=cheap"), "minPrice");
    await field(get("/v1/recommendations?country=USA"), "country");
    // Filter values that are all blank would otherwise mean no filter, and an unfiltered list.
    await field(get("/v1/recommendations?category=%20"), "category");
    await field(get("/v1/recommendations?tags=%20,%20"), "tags");
    await field(get("/v1/recommendations?explain=maybe"), "explain");
    await field(get(`/v1/recommendations?userId=${"x".repeat(257)}`), "userId"); // ids: at most 256 characters
    await field(get(`/v1/similar/${id("p1")}?limit=51`), "limit");
  });

  it("refuses bad rerank bodies", async () => {
    const candidates = Array.from({ length: 1001 }, (_, i) => `x${i}`);
    await field(postJson("/v1/rank", { candidates }), "candidates");
    await field(postJson("/v1/rank", { candidates: [] }), "candidates");
    await field(postJson("/v1/rank", { candidates: "a,b" }), "candidates");
    await field(postJson("/v1/rank", { candidates: [{ score: 1 }] }), "candidates[0].productId");
    await field(postJson("/v1/rank", { candidates: [{ productId: "a", score: "high" }] }), "candidates[0].score");
    await field(postJson("/v1/rank", { candidates: ["a"], limit: 1001 }), "limit");
    await field(postJson("/v1/rank", [1, 2]), "body");
    const raw = (body: BodyInit, type: string) =>
      exports.default.fetch(
        new Request("http://lastmile.test/v1/rank", {
          method: "POST",
          headers: { authorization: `Bearer ${SERVER_KEY}`, "content-type": type },
          body,
        }),
      );
    await refused(raw("{not json", "application/json"), 400, "invalid_json");
    // "josé" with é in Latin-1 (0xE9) is not UTF-8: refused, never ranked as the user "jos\uFFFD".
    const enc = (text: string) => new TextEncoder().encode(text);
    const latin1 = new Uint8Array([...enc('{"userId":"jos'), 0xe9, ...enc('","candidates":["a"]}')]);
    const notUtf8 = await refused(raw(latin1, "application/json"), 400, "invalid_json");
    expect(notUtf8.error.message).toMatch(/UTF-8/);
    // 1,000 candidates with 200-character ids and scores fit the body limit; past the limit, 413.
    const long = (i: number) => `${String(i).padStart(4, "0")}${"x".repeat(196)}`;
    const big = Array.from({ length: 1000 }, (_, i) => ({ productId: long(i), score: i }));
    expect((await ok(postJson("/v1/rank", { candidates: big, limit: 1 }))).items).toHaveLength(1);
    const huge = JSON.stringify({ candidates: big, padding: "y".repeat(RANK_BODY_LIMIT) });
    await refused(raw(huge, "application/json"), 413, "payload_too_large");
    await refused(raw(JSON.stringify({ candidates: ["a"] }), "text/plain"), 415, "unsupported_media_type");
  });
});

describe("the Ranking RPC entrypoint", () => {
  it("answers as the HTTP API does, and throws validation errors with their code", async () => {
    const ranking = exports.Ranking;
    const a = await ranking.recommendations({ placement: "home", userId: id("alice"), limit: 2 });
    expect(ids(a)).toEqual([id("b1"), id("b2")]);
    expect(a.userKey).toBe(`u:${id("alice")}`);
    const similar = await ranking.similar({ productId: id("p1"), limit: 2 });
    expect(ids(similar)).toEqual([id("s1"), id("s2")]);
    const reranked = await ranking.rank({ candidates: [id("s2"), id("s1")] });
    expect(ids(reranked)).toEqual([id("s2"), id("s1")]);
    const error = await ranking.recommendations({ limit: 0 }).then(
      () => null,
      (e: unknown) => e,
    );
    expect(String((error as Error | null)?.message)).toMatch(/^validation_failed: limit/);
  });

  it("throws what the HTTP API answers when the deployment is misconfigured: internal_error, details in the log", async () => {
    // A Redis URL without its token: the HTTP API answers 500 internal_error and logs why.
    const misconfigured = { ...env, UPSTASH_REDIS_REST_URL: "http://127.0.0.1:1", UPSTASH_REDIS_REST_TOKEN: "" };
    const http = await appFetch(misconfigured, `/v1/recommendations?placement=home&userId=${id("alice")}`, {
      headers: { authorization: `Bearer ${SERVER_KEY}` },
    });
    expect(http.status).toBe(500);
    const { error: httpError } = (await http.json()) as { error: { code: string; message: string } };
    expect(httpError.code).toBe("internal_error");

    const logged: string[] = [];
    const spy = vi.spyOn(console, "error").mockImplementation((...args: unknown[]) => {
      logged.push(args.map(String).join(" "));
    });
    try {
      const ctx = createExecutionContext();
      const ranking = new Ranking(ctx, misconfigured);
      const thrown = await ranking.recommendations({ placement: "home", userId: id("alice") }).then(
        () => null,
        (e: unknown) => e,
      );
      await waitOnExecutionContext(ctx);
      expect(String((thrown as Error | null)?.message)).toBe(`internal_error: ${httpError.message}`);
      expect(logged.join("\n")).toContain("UPSTASH_REDIS_REST_TOKEN");
    } finally {
      spy.mockRestore();
    }
  });
});

describe("user tokens on the API", () => {
  it("a token reads its own user, named or not", async () => {
    const token = await userToken(`u:${id("alice")}`);
    const implicit = await ok(get("/v1/recommendations?placement=home&limit=2", token));
    expect(implicit.userKey).toBe(`u:${id("alice")}`);
    expect(ids(implicit)).toEqual([id("b1"), id("b2")]);
    const named = await ok(get(`/v1/recommendations?placement=home&limit=2&userId=${id("alice")}`, token));
    expect(ids(named)).toEqual([id("b1"), id("b2")]);
  });
});

describe("catalogue neighbours", () => {
  // The fixture's pointer carries no measure of the catalogue's order (as one written before the publisher took
  // it), so every test above ranks without the adjacency source. Here the pointer says what the publisher measures.
  const measured = (near: number) => ({ ...shop, catalogOrder: { pairs: 200, near, products: 1_000, span: 12 } });

  it("ranks the product in view's neighbours in the catalogue's order when the batch found the order predictive", async () => {
    // 150 of 200 pairs near: 0.75 / (24 / 999) = 31× chance (≥ 5×).
    await publishFixture(measured(150));
    const a = await ok(get(`/v1/similar/${id("p1")}?limit=4`));
    expect(a.config.version).toBe("default");
    // Sorted ids: b1 b2 bt1 bt2 c1 oos p1 pop01 … pop12 s1 s2 tr1. Adjacent 4 / √distance: pop01 and oos at 1 (oos
    // is out of stock), c1 and pop02 at 2; s1 is 13 places away. s1 = context 2 × 1 + content 3 × ½ as above;
    // pop01 = 4 + popularity 0.2 × 12/100; pop02 = 4/√2 + 0.2 × 11/100; c1 = 4/√2 + 0.2 × 0.5/100.
    expect(a.items.map((i) => [i.productId, i.score, i.reasons])).toEqual([
      [id("pop01"), 4.024, [`catalogue_neighbour:${id("p1")}`, "popular"]],
      [id("s1"), 3.5, [`similar_to:${id("p1")}`, "similar_content"]],
      [id("pop02"), 2.850427, [`catalogue_neighbour:${id("p1")}`, "popular"]],
      [id("c1"), 2.829427, [`catalogue_neighbour:${id("p1")}`, "popular"]],
    ]);
    const pdp = await ok(get(`/v1/recommendations?placement=pdp&productId=${id("p1")}&limit=4`));
    expect(ids(pdp)).toEqual([id("pop01"), id("s1"), id("pop02"), id("c1")]);
  });

  it("follows the pointer's measure even when the new pointer reuses the cached catalogue", async () => {
    const neighbours = async () =>
      (await ok(get(`/v1/similar/${id("p1")}?limit=4`))).items.some((i) =>
        i.reasons.some((r) => r.startsWith("catalogue_neighbour:")),
      );
    expect(await neighbours()).toBe(false);
    // A publish that wrote no shared key: the same catalogue version, a new pointer with the measure. Only the
    // head is re-read (as after its 10 s); the decoded catalogue stays in the isolate.
    const pointer = decodePointer(await env.ONLINE_STORE.get(POINTER_KEY));
    if (!pointer) throw new Error("no pointer");
    const catalogOrder = { pairs: 200, near: 150, products: 1_000, span: 12 };
    await env.ONLINE_STORE.put(POINTER_KEY, encodePointer({ ...pointer, version: pointer.version + 1, catalogOrder }));
    invalidateHead(env.ONLINE_STORE);
    expect(await neighbours()).toBe(true);
  });

  it("leaves the order out when the batch found it no better than chance", async () => {
    // 5 of 200 near: 0.025 / (24 / 999) = 1.04× chance.
    await publishFixture(measured(5));
    const a = await ok(get(`/v1/similar/${id("p1")}?limit=4`));
    expect(a.items.map((i) => i.productId)).toEqual([id("s1"), id("s2"), id("pop01"), id("pop02")]);
    expect(a.items.flatMap((i) => i.reasons).some((r) => r.startsWith("catalogue_neighbour:"))).toBe(false);
  });
});
