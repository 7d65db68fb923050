// The ranking config as an admin resource (GET/PUT /v1/admin/ranking-config) and its effect on the next answers:
// versions, pins, buries, weights, placements, limits, the diversity cap; request filters over HTTP. Expected lists come from
// shopFixture (rank-helpers.ts): alice's batch b1 (1.0), b2 (2/3); pop01 … pop12 at 0.2 × (12 … 1)/100; with a hidden
// product in every list, and tags (below). Also what the catalogue removes (hidden, out of stock) from every source.
import { env, exports } from "cloudflare:workers";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { DEFAULT_RANKING_CONFIG, RANKING_CONFIG_KEY } from "../../src/rank/config.ts";
import { ADMIN_KEY, adminGet, refused, WRITE_KEY } from "./collect-helpers.ts";
import {
  type Answer,
  BASE,
  type Fixture,
  forgetDocs,
  get,
  ids,
  ok,
  postJson,
  publishFixture,
  resetCaches,
  SERVER_KEY,
  shopFixture,
} from "./rank-helpers.ts";

const base = shopFixture(`g${crypto.randomUUID().slice(0, 8)}`);
const id = base.id;
const tagged = new Set([id("b2"), id("pop03"), id("pop07")]);
/**
 * shopFixture, plus: `hid`, a hidden kitchen mug, in every list a product can come from (popular, batch trending,
 * bob's batch list, p1's similar and next items, c1's bought-together items), ahead of the rest; bob's batch list
 * hid, the out-of-stock oos, b1; the tag `eco` on b2, pop03 and pop07.
 */
const shop: Fixture = {
  ...base,
  catalog: [
    ...base.catalog.map((r) => (tagged.has(r.id) ? { ...r, tags: ["eco"] } : r)),
    { id: id("hid"), title: "Hidden Mug", category: "kitchen", price: 9, visible: false },
  ],
  popular: { global: [[id("hid"), 60], ...(base.popular?.global ?? [])] },
  trending: {
    global: [
      [id("hid"), 5],
      [id("tr1"), 5],
    ],
  },
  users: {
    ...base.users,
    [`u:${id("bob")}`]: [
      [id("hid"), 0.95, null],
      [id("oos"), 0.9, null],
      [id("b1"), 0.5, null],
    ],
  },
  similar: { [id("p1")]: [[id("hid"), 0.95], ...(base.similar?.[id("p1")] ?? [])] },
  next: { [id("p1")]: [[id("hid"), 5]] },
  boughtTogether: { [id("c1")]: [[id("hid"), 0.9], ...(base.boughtTogether?.[id("c1")] ?? [])] },
};

interface ConfigAnswer {
  version: string;
  updatedAt: number | null;
  active: boolean;
  invalid?: boolean;
  previous?: string;
  config: Record<string, unknown>;
}

function put(body: unknown, key: string | null = ADMIN_KEY, type = "application/json"): Promise<Response> {
  return exports.default.fetch(
    new Request(`${BASE}/v1/admin/ranking-config`, {
      method: "PUT",
      headers: { "content-type": type, ...(key ? { authorization: `Bearer ${key}` } : {}) },
      body: typeof body === "string" ? body : JSON.stringify(body),
    }),
  );
}

async function putOk(body: unknown): Promise<ConfigAnswer> {
  const res = await put(body);
  const text = await res.text();
  expect(res.status, text).toBe(200);
  return JSON.parse(text) as ConfigAnswer;
}

async function active(): Promise<ConfigAnswer> {
  const res = await adminGet("/v1/admin/ranking-config");
  expect(res.status).toBe(200);
  return (await res.json()) as ConfigAnswer;
}

const home = (q = "") => ok(get(`/v1/recommendations?placement=home&userId=${id("alice")}${q}`));
const organic = (list: string[]) => list.filter((x) => x !== id("tr1"));

beforeAll(async () => {
  await publishFixture(shop);
});

afterEach(async () => {
  // Back to the built-in default (the next PUT is v1 again).
  await forgetDocs(RANKING_CONFIG_KEY);
  resetCaches();
});

describe("GET /v1/admin/ranking-config", () => {
  it("shows the built-in default while none is stored", async () => {
    const a = await active();
    expect(a).toEqual({
      version: "default",
      updatedAt: null,
      active: true,
      invalid: false,
      config: DEFAULT_RANKING_CONFIG,
    });
  });

  it("is for admins only", async () => {
    for (const key of [null, SERVER_KEY, WRITE_KEY, "nope"]) {
      await refused(adminGet("/v1/admin/ranking-config", key), 401, "unauthorized");
      await refused(put({}, key), 401, "unauthorized");
    }
    // Nothing was stored by the refused PUTs.
    expect(await env.ONLINE_STORE.get(RANKING_CONFIG_KEY)).toBeNull();
  });
});

describe("PUT /v1/admin/ranking-config", () => {
  it("stores a pin rule as v1; the next answer names v1 and follows it on its placement only", async () => {
    const before = await home("&limit=3");
    expect(before.config.version).toBe("default");
    expect(ids(before).slice(0, 2)).toEqual([id("b1"), id("b2")]);

    const rule = { id: "sale-pin", action: "pin", productIds: [id("oos"), id("pop12")], slot: 1, placements: ["home"] };
    const stored = await putOk({ rules: [rule] });
    expect(stored.version).toBe("v1");
    expect(stored.previous).toBe("default");
    expect(stored.config.rules).toEqual([rule]);
    expect(stored.config.weights).toEqual(DEFAULT_RANKING_CONFIG.weights);

    // Read back through KV (a second path): the active key and the kept version.
    const raw = JSON.parse((await env.ONLINE_STORE.get(RANKING_CONFIG_KEY)) ?? "null") as { version: string };
    expect(raw.version).toBe("v1");
    expect(await env.ONLINE_STORE.get(`${RANKING_CONFIG_KEY}:v1`)).not.toBeNull();

    const after = await home("&limit=3");
    expect(after.config.version).toBe("v1");
    // oos is out of stock, so the rule's next product takes slot 1 (pinned first, then its own reason: it was a
    // popular candidate); the list keeps its length.
    expect(after.items[0]).toEqual({
      productId: id("pop12"),
      score: 0.002,
      reasons: ["pinned:sale-pin", "popular_fallback"],
    });
    expect(ids(after).slice(1)).toEqual([id("b1"), id("b2")]);
    // Not on other placements or modes.
    const pdp = await ok(get(`/v1/recommendations?placement=pdp&userId=${id("alice")}&limit=3`));
    expect(pdp.config.version).toBe("v1");
    expect(ids(pdp)).not.toContain(id("pop12"));
    const similar = await ok(get(`/v1/similar/${id("p1")}?limit=3`));
    expect(ids(similar)).not.toContain(id("pop12"));
    expect((await active()).version).toBe("v1");
  });

  it("changes weights as v1, then v2; an older version stays readable", async () => {
    await putOk({ rules: [{ id: "p", action: "pin", productIds: [id("pop05")], slot: 1 }] });
    const v2 = await putOk({ weights: { batch: 0.01, popularity: 1 } });
    expect(v2).toMatchObject({ version: "v2", previous: "v1" });
    const a = await home("&limit=4");
    expect(a.config.version).toBe("v2");
    // The pin of v1 is gone (a PUT is a whole document); popularity 1 × 12/100 = 0.12 beats batch 0.01 × 1.
    expect(organic(ids(a)).slice(0, 3)).toEqual([id("pop01"), id("pop02"), id("pop03")]);
    expect(a.items.find((i) => i.productId === id("pop01"))?.score).toBe(0.12);
    const old = await adminGet("/v1/admin/ranking-config?version=v1");
    expect(old.status).toBe(200);
    const body = (await old.json()) as ConfigAnswer;
    expect(body).toMatchObject({ version: "v1", active: false });
    expect((body.config.rules as unknown[]).length).toBe(1);
    // Asked by its number, the active version says it is active (it said false).
    const current = (await (await adminGet("/v1/admin/ranking-config?version=v2")).json()) as ConfigAnswer;
    expect(current).toMatchObject({ version: "v2", active: true });
    await refused(adminGet("/v1/admin/ranking-config?version=v7"), 404, "not_found");
  });

  it("gives two concurrent PUTs two versions, both kept; the active one is the last written", async () => {
    await putOk({ maxLimit: 5 }); // v1
    // Both read v1 as the head; KV has no compare-and-set, so the numbers come from the coordinator.
    const [a, b] = await Promise.all([putOk({ maxLimit: 11 }), putOk({ maxLimit: 22 })]);
    expect([a.version, b.version].sort()).toEqual(["v2", "v3"]);
    expect([a.previous, b.previous]).toEqual(["v1", "v1"]);
    for (const [answer, maxLimit] of [
      [a, 11],
      [b, 22],
    ] as const) {
      const res = await adminGet(`/v1/admin/ranking-config?version=${answer.version}`);
      expect(res.status).toBe(200);
      expect(((await res.json()) as ConfigAnswer).config.maxLimit).toBe(maxLimit);
    }
    const now = await active();
    expect(["v2", "v3"]).toContain(now.version);
    expect(now.config.maxLimit).toBe(now.version === a.version ? 11 : 22);
    // Removing the active key does not restart the numbering: nothing kept is overwritten.
    await env.ONLINE_STORE.delete(RANKING_CONFIG_KEY);
    expect((await putOk({ maxLimit: 7 })).version).toBe("v4");
    expect(
      ((await (await adminGet("/v1/admin/ranking-config?version=v1")).json()) as ConfigAnswer).config.maxLimit,
    ).toBe(5);
  });

  it("buries a category, and applies a rule only inside its window", async () => {
    const future = new Date(Date.now() + 3600_000).toISOString();
    await putOk({
      rules: [
        { id: "less-aprons", action: "bury", categories: ["Aprons"], amount: 5 },
        { id: "later", action: "boost", productIds: [id("pop12")], amount: 10, from: future },
      ],
    });
    const a = await home("&limit=50&explain=true");
    expect(a.items[0]?.productId).toBe(id("b2"));
    const b1 = a.items.find((i) => i.productId === id("b1"));
    // 1 − 5
    expect(b1?.score).toBe(-4);
    expect(b1?.reasons).toEqual(["batch", "buried:less-aprons"]);
    expect(b1?.contributions).toEqual({ batch: 1, rules: -5 });
    // Last of the scored candidates; only the catalogue fill (below every scored candidate) comes after it.
    const scored = a.items.filter((i) => !i.reasons.includes("catalog_fill"));
    expect(scored.at(-1)?.productId).toBe(id("b1"));
    const fills = a.items.filter((i) => i.reasons.includes("catalog_fill"));
    expect(fills.length).toBeGreaterThan(0);
    for (const f of fills) expect(f.score).toBeLessThan(-4);
    expect(a.items.find((i) => i.productId === id("pop12"))?.reasons).toEqual(["popular_fallback"]);
  });

  it("scopes rules by placement or mode; a rank or similar call's placement label is attribution only", async () => {
    await putOk({
      rules: [
        { id: "home-only", action: "boost", productIds: [id("pop12")], amount: 10, placements: ["home"] },
        { id: "rerank-only", action: "boost", productIds: [id("pop11")], amount: 10, placements: ["rerank"] },
      ],
    });
    const onHome = await ok(get("/v1/recommendations?placement=home&limit=1"));
    // The boost (10) outweighs pop12's popularity (0.002): its reason comes first.
    expect(onHome.items[0]).toMatchObject({
      productId: id("pop12"),
      reasons: ["boosted:home-only", "popular_fallback"],
    });
    // base 1 − i/3: pop01 1, pop12 2/3, pop11 1/3 (+10 for the rerank rule); popularity adds at most 0.024
    const reranked = await ok(
      postJson("/v1/rank", { placement: "home", candidates: [id("pop01"), id("pop12"), id("pop11")] }),
    );
    expect(reranked.placement).toBe("home");
    expect(ids(reranked)).toEqual([id("pop11"), id("pop01"), id("pop12")]);
    // Every candidate gets every feature: pop12's popularity (0.2 × 1/100) shows, its home boost does not.
    expect(reranked.items[2]?.reasons).toEqual(["base_score", "popular"]);
    const similar = await ok(get(`/v1/similar/${id("p1")}?placement=home&limit=50`));
    expect(similar.items.find((i) => i.productId === id("pop12"))?.reasons).toEqual(["popular_fallback"]);
    const unlabelled = await ok(get(`/v1/similar/${id("p1")}?placement=&limit=1`));
    expect(unlabelled.placement).toBe("similar");
  });

  it("adds a placement and lowers maxLimit", async () => {
    await putOk({ placements: { search_page: { sources: ["popular"], defaultLimit: 3 } }, maxLimit: 5 });
    const a = await ok(get("/v1/recommendations?placement=search_page"));
    expect(a.placement).toBe("search_page");
    expect(ids(a)).toEqual([id("pop01"), id("pop02"), id("pop03")]);
    const body = await refused(get("/v1/recommendations?placement=home&limit=6"), 400, "validation_failed");
    expect(body.error.field).toBe("limit");
    await ok(get("/v1/recommendations?placement=home&limit=5"));
    // maxLimit is a hard cap: a placement's larger default (home: 12) is cut to it.
    expect((await ok(get("/v1/recommendations?placement=home"))).items).toHaveLength(5);
  });

  it("refuses an invalid document with its issues and keeps the active config", async () => {
    await putOk({ diversity: { maxPerCategory: 2 } });
    const res = await put({ weights: { batch: "high" }, rules: [{ id: "x", action: "pin", productIds: ["a"] }] });
    const body = await refused(res, 400, "validation_failed");
    expect(body.error.issues).toEqual([
      { path: "weights.batch", message: expect.any(String) },
      { path: "rules[0].slot", message: expect.any(String) },
    ]);
    await refused(put("{nope"), 400, "invalid_json");
    await refused(put("{}", ADMIN_KEY, "text/plain"), 415, "unsupported_media_type");
    await refused(put([]), 400, "validation_failed");
    const a = await active();
    expect(a.version).toBe("v1");
    expect((a.config.diversity as { maxPerCategory: number }).maxPerCategory).toBe(2);
  });

  // Two rules named alike were stored: their `boosted:<id>` / `buried:<id>` reasons and explain traces could not say
  // which rule acted (and two buries of one id showed as one), unlike the experiments document, which refuses them.
  it("refuses two rules with one id, and keeps the active config", async () => {
    await putOk({ maxLimit: 7 });
    const rule = { action: "boost", amount: 1, productIds: [id("b2")] };
    const res = await put({
      rules: [
        { id: "sale", ...rule },
        { id: "other", ...rule },
        { id: "sale", ...rule, action: "bury" },
      ],
    });
    const body = await refused(res, 400, "validation_failed");
    expect(body.error.issues).toEqual([{ path: "rules[2].id", message: "duplicate id; rules[0] has it" }]);
    expect((await active()).config.maxLimit).toBe(7);
  });

  it("an unreadable stored config falls back to the default and says so", async () => {
    await env.ONLINE_STORE.put(RANKING_CONFIG_KEY, JSON.stringify({ version: "v3", config: { weights: 7 } }));
    resetCaches();
    const a = await home("&limit=2");
    expect(a.config.version).toBe("default");
    expect(a.degraded).toContain("config_invalid");
    expect(ids(a)).toEqual([id("b1"), id("b2")]);
    expect((await active()).invalid).toBe(true);
    // The next PUT does not reuse the unreadable document's version number.
    expect((await putOk({ diversity: { maxPerCategory: 2 } })).version).toBe("v4");
  });
});

describe("request filters over HTTP", () => {
  it("filters by tag", async () => {
    const a = await ok(get(`/v1/recommendations?placement=home&userId=${id("alice")}&tags=eco`));
    expect(ids(a)).toEqual([id("b2"), id("pop03"), id("pop07")]);
    const none = await ok(get(`/v1/recommendations?placement=home&tags=nothing-has-this`));
    expect(none.items).toEqual([]);
  });

  it("filters by category and by price range, inclusive", async () => {
    const cat = await ok(get("/v1/recommendations?placement=home&category=%20CAT3%20"));
    expect(ids(cat)).toEqual([id("pop04")]);
    // pop06 costs 15, pop07 16; bt2 (15) is no candidate on home: the catalogue fill brings it last.
    const price = await ok(get("/v1/recommendations?placement=home&minPrice=15&maxPrice=16"));
    expect(ids(price)).toEqual([id("pop06"), id("pop07"), id("bt2")]);
    expect(price.items[2]?.reasons).toEqual(["catalog_fill"]);
    const both = await ok(get(`/v1/recommendations?placement=home&userId=${id("alice")}&category=aprons,cat0`));
    expect(ids(both)).toEqual([id("b1"), id("pop01")]);
  });
});

describe("the catalogue over HTTP", () => {
  it("never serves a hidden product, from any source", async () => {
    const answers = await Promise.all([
      ok(get("/v1/recommendations?placement=home&limit=50")),
      ok(get(`/v1/recommendations?placement=home&userId=${id("bob")}&limit=50`)),
      ok(get(`/v1/similar/${id("p1")}?limit=50`)),
      ok(get(`/v1/recommendations?placement=pdp&productId=${id("p1")}&limit=50`)),
      ok(get(`/v1/recommendations?placement=cart&productId=${id("c1")}&limit=50`)),
      ok(postJson("/v1/rank", { placement: "home", candidates: [id("hid"), id("pop01")] })),
    ]);
    for (const a of answers) {
      expect(a.items.length).toBeGreaterThan(0);
      expect(ids(a)).not.toContain(id("hid"));
    }
    const [popular, bob, similar, pdp, cart, reranked] = answers as [Answer, Answer, Answer, Answer, Answer, Answer];
    // Each source still served what it had besides the hidden product.
    expect(organic(ids(popular))[0]).toBe(id("pop01"));
    expect(ids(bob)[0]).toBe(id("b1"));
    expect(ids(similar).slice(0, 2)).toEqual([id("s1"), id("s2")]);
    expect(ids(pdp)[0]).toBe(id("s1"));
    expect(ids(cart)).toEqual(expect.arrayContaining([id("bt1"), id("bt2")]));
    expect(ids(reranked)).toEqual([id("pop01")]);
    // Read back through whyNot: removed as hidden, not merely cut.
    const why = await ok(get(`/v1/recommendations?placement=home&userId=${id("bob")}&whyNot=${id("hid")}`));
    expect(why.explain?.whyNot).toEqual({ productId: id("hid"), status: "removed", rule: "hidden" });
  });

  it("never serves an out-of-stock product of a user's batch list", async () => {
    // Twice: the second answer comes from the batch list the isolate keeps.
    for (let i = 0; i < 2; i++) {
      const a = await ok(get(`/v1/recommendations?placement=home&userId=${id("bob")}&limit=50`));
      expect(a.sources.batch.status).toBe("ok");
      expect(ids(a)).not.toContain(id("oos"));
      expect(ids(a)[0]).toBe(id("b1"));
    }
    const why = await ok(get(`/v1/recommendations?placement=home&userId=${id("bob")}&whyNot=${id("oos")}`));
    expect(why.explain?.whyNot).toEqual({ productId: id("oos"), status: "removed", rule: "out_of_stock" });
  });
});

describe("the diversity cap", () => {
  it("maxPerCategory keeps at most that many of a category, the list still full", async () => {
    // p1's similar items s1 and s2 are both kitchen products.
    const before = await ok(get(`/v1/similar/${id("p1")}?limit=4`));
    expect(ids(before)).toEqual([id("s1"), id("s2"), id("pop01"), id("pop02")]);
    await putOk({ diversity: { maxPerCategory: 1 } });
    const after = await ok(get(`/v1/similar/${id("p1")}?limit=4`));
    expect(after.config.version).toBe("v1");
    expect(ids(after)).toEqual([id("s1"), id("pop01"), id("pop02"), id("pop03")]);
    const category = new Map(shop.catalog.map((r) => [r.id, r.category ?? null]));
    const perCategory = new Map<string | null, number>();
    for (const p of ids(after))
      perCategory.set(category.get(p) ?? null, (perCategory.get(category.get(p) ?? null) ?? 0) + 1);
    expect(Math.max(...perCategory.values())).toBe(1);
  });
});
