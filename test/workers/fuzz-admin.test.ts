// Properties of the admin API through the Worker's real entry point (fast-check, fixed seeds): any document on
// PUT /v1/admin/ranking-config and /v1/admin/experiments, any JSON or CSV on PUT /v1/admin/catalog, any path
// segment or query on the user, dead-letter, run and report routes, any body on rollback, any credential on any
// admin path answers a 2xx or a machine-readable 4xx — never a 5xx. What a PUT accepts is read back through GET
// (documents) or Postgres (catalogue rows); `__proto__` keys in documents stay plain data.
import { env } from "cloudflare:workers";
import fc from "fast-check";
import { afterEach, describe, expect, it, vi } from "vitest";
import { CONFIG_DOC_BODY_LIMIT } from "../../src/admin/versioned-doc.ts";
import { MAX_CATALOG_BODY_BYTES } from "../../src/batch/catalog.ts";
import { EXPERIMENTS_KEY } from "../../src/experiments/config.ts";
import { RANKING_CONFIG_KEY } from "../../src/rank/config.ts";
import {
  checkPrototypesAfterAll,
  deepJsonText,
  hostileJson,
  hostileKey,
  hostileString,
  hostileValue,
  malformedJsonText,
} from "../support/fuzz.ts";
import {
  catalogItem,
  experimentsLike,
  rankingConfigLike,
  validExperiments,
  validRankingConfig,
} from "../support/fuzz-docs.ts";
import { sql } from "./batch-helpers.ts";
import { ADMIN_KEY, gzip } from "./collect-helpers.ts";
import { answered, codeOf, queryString, send, slowBody, wireValue } from "./fuzz-helpers.ts";
import { resetCaches, SERVER_KEY } from "./rank-helpers.ts";

vi.setConfig({ testTimeout: 120_000 });
checkPrototypesAfterAll();

afterEach(async () => {
  await env.ONLINE_STORE.delete(RANKING_CONFIG_KEY);
  await env.ONLINE_STORE.delete(EXPERIMENTS_KEY);
  resetCaches();
});

const ADMIN = { authorization: `Bearer ${ADMIN_KEY}` };

function put(path: string, body: BodyInit, type = "application/json", headers: Record<string, string> = {}) {
  return send(path, { method: "PUT", headers: { ...ADMIN, "content-type": type, ...headers }, body });
}

const adminGet = (path: string) => send(path, { headers: ADMIN });

const jsonType = fc.constantFrom(
  "application/json",
  "application/json; charset=utf-8",
  "text/plain",
  "",
  "application/x-www-form-urlencoded",
);

/** A document as text: valid, wrong-typed, hostile, JSON of anything or not JSON at all. */
function documentText(valid: fc.Arbitrary<unknown>, like: fc.Arbitrary<unknown>): fc.Arbitrary<string> {
  return fc.oneof(
    valid.map((d) => JSON.stringify(d)),
    like.map((d) => JSON.stringify(d)),
    hostileJson.map((v) => JSON.stringify(v) ?? "null"),
    malformedJsonText,
  );
}

describe("PUT the versioned documents", () => {
  for (const [path, valid, like, seed] of [
    ["/v1/admin/ranking-config", validRankingConfig, rankingConfigLike, 0x5eed_5101],
    ["/v1/admin/experiments", validExperiments, experimentsLike, 0x5eed_5102],
  ] as const) {
    it(`${path}: any document is stored and read back, or refused with a machine-readable 4xx`, async () => {
      const seen = new Set<number>();
      await fc.assert(
        fc.asyncProperty(documentText(valid, like), jsonType, fc.boolean(), async (text, type, compress) => {
          const headers: Record<string, string> = compress ? { "content-encoding": "gzip" } : {};
          const a = await answered(put(path, compress ? await gzip(text) : text, type, headers), text.slice(0, 300));
          seen.add(a.status);
          if (a.status !== 200) {
            expect(["validation_failed", "invalid_json", "unsupported_media_type"]).toContain(codeOf(a));
            return;
          }
          const stored = a.body as { version: string; config: unknown };
          const active = await answered(adminGet(path));
          expect(active.body).toMatchObject({ version: stored.version, active: true, invalid: false });
          // The active document is the stored one, with its version inside.
          const { version, ...config } = (active.body as { config: { version: string } }).config;
          expect(version).toBe(stored.version);
          expect(config).toEqual(stored.config);
        }),
        { seed, numRuns: 60 },
      );
      expect([...seen]).toEqual(expect.arrayContaining([200, 400, 415]));
    });

    it(`${path}: any ?version= answers 200, 400 or 404`, async () => {
      await fc.assert(
        fc.asyncProperty(wireValue, async (v) => {
          const a = await answered(adminGet(`${path}?version=${v}`), v);
          expect([200, 400, 404]).toContain(a.status);
        }),
        { seed: 0x5eed_5103, numRuns: 40 },
      );
    });
  }

  it("refuses 10,000-deep nesting with 400, a body over the cap or a gzip bomb with 413, a slow body is read", async () => {
    for (const kind of ["array", "object"] as const) {
      const deep = `{"rules":[{"id":"r","action":"boost","amount":1,"productIds":["a"],"x":${deepJsonText(10_000, kind)}}]}`;
      expect(codeOf(await answered(put("/v1/admin/ranking-config", deep), kind))).toBe("invalid_json");
      const deepDoc = `{"experiments":${deepJsonText(10_000, kind)}}`;
      expect(codeOf(await answered(put("/v1/admin/experiments", deepDoc), kind))).toBe("invalid_json");
    }
    const big = JSON.stringify({ weights: { batch: 1 }, pad: "x".repeat(CONFIG_DOC_BODY_LIMIT) });
    expect(codeOf(await answered(put("/v1/admin/ranking-config", big)))).toBe("payload_too_large");
    const bomb = await gzip(`{"pad":"${"0".repeat(20_000_000)}"}`);
    const a = await answered(put("/v1/admin/experiments", bomb, "application/json", { "content-encoding": "gzip" }));
    expect(codeOf(a)).toBe("payload_too_large");
    const slow = slowBody(new TextEncoder().encode(JSON.stringify({ maxLimit: 7 })), 5, 40);
    const stored = await answered(put("/v1/admin/ranking-config", slow));
    expect((stored.body as { config: { maxLimit: number } }).config.maxLimit).toBe(7);
  });

  it("keeps `__proto__` and `constructor` keys as plain data: a placement named constructor works, nothing polluted", async () => {
    const text = `{"__proto__":{"maxLimit":1,"polluted":"doc"},"maxLimit":9,
      "placements":{"constructor":{"sources":["popular"],"defaultLimit":3},"__proto__":{"sources":["popular"]}},
      "weights":{"__proto__":{"batch":99}}}`;
    const refused = await answered(put("/v1/admin/ranking-config", text));
    // A field, weight or placement named __proto__ is an issue, never a silent prototype change.
    expect(codeOf(refused)).toBe("validation_failed");
    const paths = (refused.body as { error: { issues: Array<{ path: string }> } }).error.issues.map((i) => i.path);
    expect(paths).toEqual(expect.arrayContaining(["__proto__", "placements.__proto__", "weights.__proto__"]));
    const ruleProto = `{"rules":[{"id":"r","action":"boost","amount":1,"productIds":["p"],"__proto__":{"polluted":"rule"}}]}`;
    expect(codeOf(await answered(put("/v1/admin/ranking-config", ruleProto)))).toBe("validation_failed");

    const ok = `{"maxLimit":9,"placements":{"constructor":{"sources":["popular"],"defaultLimit":3}},
      "rules":[{"id":"r","action":"boost","amount":1,"productIds":["p"]}]}`;
    const stored = await answered(put("/v1/admin/ranking-config", ok));
    expect(stored.status).toBe(200);
    const active = (await answered(adminGet("/v1/admin/ranking-config"))).body as {
      config: { maxLimit: number; placements: Record<string, { defaultLimit: number }> };
    };
    expect(active.config.maxLimit).toBe(9);
    expect(Object.hasOwn(active.config.placements, "constructor")).toBe(true);
    expect(new Map(Object.entries(active.config.placements)).get("constructor")?.defaultLimit).toBe(3);
    resetCaches();
    const rec = await answered(
      send("/v1/recommendations?placement=constructor", { headers: { authorization: `Bearer ${SERVER_KEY}` } }),
    );
    expect(rec.status).toBe(200);
    const other = await answered(
      send("/v1/recommendations?placement=toString", { headers: { authorization: `Bearer ${SERVER_KEY}` } }),
    );
    expect(codeOf(other)).toBe("validation_failed");
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });
});

describe("PUT /v1/admin/catalog", () => {
  /** Item ids of this file's run only (the catalogue table is shared with other test files). */
  const tag = `fz-${crypto.randomUUID().slice(0, 8)}`;
  const tagged = (item: Record<string, unknown>) => {
    const out = { ...item };
    for (const k of ["id", "product_id", "productId"]) {
      const v = out[k];
      if (typeof v === "string" || typeof v === "number") out[k] = `${tag}-${v}`;
    }
    return out;
  };
  const validItem = fc.record(
    {
      id: fc.stringMatching(/^[a-z0-9]{1,12}$/),
      // Valid items only (an unpaired surrogate is refused: hostileString and catalogItem bring those).
      title: fc.constantFrom("Mug", "Tote Bag", "Lampe ☀", "𝓁𝒶𝓂𝓅", "a\u00a0b"),
      price: fc.double({ min: 0, max: 1e6, noNaN: true }),
      tags: fc.array(fc.constantFrom("red", "blue", "__proto__", "ü"), { maxLength: 3 }),
      in_stock: fc.boolean(),
      attributes: fc.dictionary(hostileKey, fc.oneof(fc.integer(), fc.string({ maxLength: 20 })), { maxKeys: 3 }),
    },
    { requiredKeys: ["id", "title"] },
  );
  const jsonBody = fc.oneof(
    fc
      .uniqueArray(validItem, { selector: (i) => i.id, minLength: 1, maxLength: 6 })
      .map((items) => JSON.stringify({ items: items.map(tagged) })),
    fc.array(catalogItem.map(tagged), { minLength: 1, maxLength: 6 }).map((items) => JSON.stringify({ items })),
    fc.array(catalogItem.map(tagged), { maxLength: 6 }).map((items) => JSON.stringify(items)),
    hostileJson.map((v) => JSON.stringify(v) ?? "null"),
    malformedJsonText,
  );
  const csvBody = fc.oneof(
    fc
      .array(
        fc.tuple(fc.string({ minLength: 1, maxLength: 10 }), hostileString, fc.constantFrom("", "1.5", "-1", "x")),
        {
          maxLength: 5,
        },
      )
      .map((rows) =>
        [
          "id,title,price",
          ...rows.map(
            ([id, title, price]) => `"${tag}-${id.replaceAll('"', '""')}","${title.replaceAll('"', '""')}",${price}`,
          ),
        ].join("\n"),
      ),
    fc
      .array(fc.oneof(hostileKey, fc.constantFrom("id", "title")), { minLength: 1, maxLength: 4 })
      .map((h) => `${h.join(",")}\n${tag}-a,b`),
    hostileString,
    fc.constantFrom('id,title\n"unclosed,x', "\uFEFFid,title\n", ""),
  );

  it("answers any JSON or CSV body with a 2xx whose rows are in Postgres, or a machine-readable 4xx", async () => {
    const seen = new Set<number>();
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          jsonBody.map((b) => [b, "application/json"] as const),
          csvBody.map((b) => [b, "text/csv"] as const),
        ),
        fc.constantFrom<string | null>(null, "text/html", "application/xml"),
        fc.boolean(),
        async ([text, type], otherType, compress) => {
          const headers: Record<string, string> = compress ? { "content-encoding": "gzip" } : {};
          const a = await answered(
            put("/v1/admin/catalog", compress ? await gzip(text) : text, otherType ?? type, headers),
            text.slice(0, 300),
          );
          seen.add(a.status);
          if (otherType !== null) expect(codeOf(a)).toBe("unsupported_media_type");
          if (a.status !== 200) return;
          const result = a.body as { received: number; inserted: number; updated: number; unchanged: number };
          expect(result.inserted + result.updated + result.unchanged).toBe(result.received);
          // Read back through a second connection: every item received is a row now.
          const [row] = await sql<{ n: number }>("select count(*)::int as n from catalog where id like $1", [
            `${tag}-%`,
          ]);
          expect(row?.n).toBeGreaterThanOrEqual(result.received);
        },
      ),
      {
        seed: 0x5eed_5201,
        numRuns: 60,
        // Found by this property: attributes with an unpaired surrogate reached Postgres, which refused the jsonb (503).
        examples: [
          [
            [
              JSON.stringify({ items: [{ id: `${tag}-s`, title: "Mug", attributes: { "\ud800": "" } }] }),
              "application/json",
            ],
            null,
            false,
          ],
        ],
      },
    );
    expect([...seen]).toEqual(expect.arrayContaining([200, 400, 415]));
  });

  it("refuses a gzip bomb past 10 MiB with 413, deep JSON with 400, deep CSV attributes as a row error", async () => {
    const bomb = await gzip(`{"items":[{"id":"x","title":"${"0".repeat(MAX_CATALOG_BODY_BYTES + 1_000_000)}"}]}`);
    const a = await answered(put("/v1/admin/catalog", bomb, "application/json", { "content-encoding": "gzip" }));
    expect(codeOf(a)).toBe("payload_too_large");
    const deep = `{"items":[{"id":"${tag}-d","title":"T","attributes":{"a":${deepJsonText(100_000, "object")}}}]}`;
    expect(codeOf(await answered(put("/v1/admin/catalog", deep)))).toBe("invalid_json");
    const csv = `id,title,attributes\n${tag}-d,T,"${deepJsonText(100_000, "object").replaceAll('"', '""')}"`;
    const rowError = await answered(put("/v1/admin/catalog", csv, "text/csv"));
    expect(codeOf(rowError)).toBe("validation_failed");
    const errors = (rowError.body as { error: { errors: Array<{ errors: Array<{ field: string }> }> } }).error.errors;
    expect(errors[0]?.errors.map((e) => e.field)).toEqual(["attributes"]);
  });
});

describe("read routes and rollback", () => {
  const ROUTES: Array<[string, fc.Arbitrary<string>]> = [
    ["/v1/admin/users/{}", queryString(["kind"])],
    ["/v1/admin/users/{}/erasure", queryString(["kind"])],
    ["/v1/admin/users/{}/suppression", queryString(["kind"])],
    ["/v1/admin/dead-letters", queryString(["source", "limit", "before"])],
    ["/v1/admin/runs", queryString(["limit", "kind"])],
    ["/v1/admin/trending", queryString(["hours", "top"])],
    ["/v1/admin/experiments/{}/report", queryString(["model", "clickWindow", "purchaseWindow"])],
  ];

  it("answer any path segment and query with a 2xx or a machine-readable 4xx", async () => {
    const seen = new Set<number>();
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 0, max: ROUTES.length - 1 }).chain((i) => {
          const [template, query] = ROUTES[i] as (typeof ROUTES)[number];
          return fc.tuple(fc.constant(template), fc.oneof(wireValue, fc.constantFrom("local", "u1")), query);
        }),
        async ([template, segment, query]) => {
          const path = `${template.replace("{}", segment || "x")}${query}`;
          const a = await answered(adminGet(path), path);
          seen.add(a.status);
        },
      ),
      { seed: 0x5eed_5301, numRuns: 80 },
    );
    expect([...seen]).toEqual(expect.arrayContaining([200, 400, 404]));
  });

  it("POST /v1/admin/rollback answers any body and content type with a machine-readable 4xx (nothing is published here)", async () => {
    const body = fc.oneof(
      fc.record({ version: fc.oneof(fc.integer(), hostileValue) }).map((b) => JSON.stringify(b)),
      hostileJson.map((v) => JSON.stringify(v) ?? "null"),
      malformedJsonText,
    );
    await fc.assert(
      fc.asyncProperty(body, jsonType, async (text, type) => {
        const a = await answered(
          send("/v1/admin/rollback", { method: "POST", headers: { ...ADMIN, "content-type": type }, body: text }),
          text.slice(0, 200),
        );
        const json = /^application\/json\b/i.test(type);
        expect(
          json
            ? ["invalid_json", "payload_too_large", "validation_failed", "version_not_found"]
            : ["unsupported_media_type"],
        ).toContain(codeOf(a));
      }),
      { seed: 0x5eed_5302, numRuns: 60 },
    );
  });

  it("any credential on any admin path is 401 unless it is the admin key", async () => {
    const paths = fc.constantFrom(
      "/v1/admin/ranking-config",
      "/v1/admin/users/x",
      "/v1/admin/dead-letters?source=local",
      "/v1/admin/versions",
      "/v1/admin/nope",
    );
    const credential = fc.oneof(
      hostileString.filter((s) => /^[\x20-\x7e]*$/.test(s)).map((s) => `Bearer ${s}`),
      fc.constantFrom(`Bearer ${SERVER_KEY}`, `Basic ${btoa(`${ADMIN_KEY}:`)}`, `bearer  ${ADMIN_KEY}x`, ADMIN_KEY, ""),
    );
    await fc.assert(
      fc.asyncProperty(
        paths,
        credential,
        fc.constantFrom("GET", "PUT", "POST", "DELETE"),
        async (path, auth, method) => {
          const a = await answered(
            send(path, { method, headers: auth ? { authorization: auth } : {} }),
            `${method} ${path}`,
          );
          expect(codeOf(a)).toBe("unauthorized");
        },
      ),
      { seed: 0x5eed_5303, numRuns: 60 },
    );
  });
});
