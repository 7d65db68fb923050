// The ranking config document (src/rank/config.ts): what PUT /v1/admin/ranking-config accepts, how it fills the
// parts a document leaves out, and the path of every problem it reports.
import { describe, expect, it } from "vitest";
import {
  type ConfigIssue,
  DEFAULT_RANKING_CONFIG,
  MAX_RULE_AMOUNT,
  parseRankingConfig,
  placementWeights,
} from "../../src/rank/config.ts";

// As the admin endpoint parses a PUT's body: strictly (unknown fields refused).
function issues(doc: unknown): ConfigIssue[] {
  const parsed = parseRankingConfig(doc, "v9", { strict: true });
  if (parsed.ok) throw new Error(`accepted: ${JSON.stringify(doc)}`);
  return parsed.issues;
}
const paths = (doc: unknown) => issues(doc).map((i) => i.path);

function accepted(doc: unknown) {
  const parsed = parseRankingConfig(doc, "v9", { strict: true });
  if (!parsed.ok) throw new Error(`refused: ${JSON.stringify(parsed.issues)}`);
  return parsed.config;
}

describe("parseRankingConfig accepts", () => {
  it("the default document, under the version it is given", () => {
    const { version: _, ...document } = DEFAULT_RANKING_CONFIG;
    expect(accepted(document)).toEqual({ ...DEFAULT_RANKING_CONFIG, version: "v9" });
  });

  it("an empty document as the default", () => {
    expect(accepted({})).toEqual({ ...DEFAULT_RANKING_CONFIG, version: "v9" });
  });

  it("a partial document, filling every omitted part from the default", () => {
    const config = accepted({ weights: { batch: 2.5 }, diversity: { maxPerCategory: 2 }, deadlines: { total: 80 } });
    expect(config.weights).toEqual({ ...DEFAULT_RANKING_CONFIG.weights, batch: 2.5 });
    expect(config.diversity).toEqual({ maxPerCategory: 2 });
    expect(config.deadlines).toEqual({ session: 30, kv: 30, total: 80 });
    expect(config.placements).toEqual(DEFAULT_RANKING_CONFIG.placements);
    expect(config.seeds).toEqual(DEFAULT_RANKING_CONFIG.seeds);
    expect(config.rules).toEqual([]);
    expect(config.maxLimit).toBe(50);
  });

  it("a change to one field of a known placement, keeping its others", () => {
    const config = accepted({ placements: { pdp: { defaultLimit: 4, weights: { context: 3 } } } });
    expect(config.placements.pdp).toEqual({
      sources: ["context", "session", "batch", "trending", "popular"],
      exclude: ["purchased", "carted", "viewing"],
      defaultLimit: 4,
      weights: { context: 3 },
    });
    expect(config.placements.home).toEqual(DEFAULT_RANKING_CONFIG.placements.home);
    const pdp = config.placements.pdp;
    if (!pdp) throw new Error("no pdp");
    expect(placementWeights(config, pdp)).toEqual({ ...DEFAULT_RANKING_CONFIG.weights, context: 3 });
  });

  it("a new placement, with home's sources, no exclusions and limit 10 unless given", () => {
    const config = accepted({ placements: { search_page: {} } });
    expect(config.placements.search_page).toEqual({
      sources: ["session", "buy_again", "batch", "trending", "popular"],
      exclude: [],
      defaultLimit: 10,
    });
  });

  it("boost, bury and pin rules with windows and placements", () => {
    const rules = [
      { id: "b", action: "boost", categories: ["Shoes"], amount: 0.5, from: "2026-01-01T00:00:00Z" },
      { id: "d", action: "bury", productIds: ["p1"], amount: 1, until: "2026-02-01T00:00:00Z", placements: ["home"] },
      { id: "p", action: "pin", productIds: ["p2", "p3"], slot: 1 },
    ];
    expect(accepted({ rules }).rules).toEqual(rules);
  });
});

describe("parseRankingConfig rejects", () => {
  it("a document that is not an object", () => {
    for (const doc of [null, [], "x", 3]) expect(paths(doc)).toEqual([""]);
  });

  it("bad weights", () => {
    expect(paths({ weights: [] })).toEqual(["weights"]);
    expect(paths({ weights: { recency: 1 } })).toEqual(["weights.recency"]);
    expect(paths({ weights: { batch: "1" } })).toEqual(["weights.batch"]);
    expect(paths({ weights: { batch: 101 } })).toEqual(["weights.batch"]);
    expect(paths({ weights: { batch: -101 } })).toEqual(["weights.batch"]);
    expect(accepted({ weights: { batch: -100 } }).weights.batch).toBe(-100);
  });

  it("bad placements", () => {
    expect(paths({ placements: [] })).toEqual(["placements"]);
    expect(paths({ placements: { "Bad-Name": {} } })).toEqual(["placements.Bad-Name"]);
    expect(paths({ placements: { home: 3 } })).toEqual(["placements.home"]);
    expect(paths({ placements: { home: { sources: ["search"] } } })).toEqual(["placements.home.sources"]);
    expect(paths({ placements: { home: { sources: "batch" } } })).toEqual(["placements.home.sources"]);
    expect(paths({ placements: { home: { exclude: ["wishlisted"] } } })).toEqual(["placements.home.exclude"]);
    for (const limit of [0, 51, 2.5, "8"])
      expect(paths({ placements: { home: { defaultLimit: limit } } })).toEqual(["placements.home.defaultLimit"]);
    expect(paths({ placements: { home: { weights: { nope: 1 } } } })).toEqual(["placements.home.weights.nope"]);
    expect(paths({ placements: { home: { weights: { batch: "x" } } } })).toEqual(["placements.home.weights.batch"]);
    expect(paths({ placements: { home: { weights: 1 } } })).toEqual(["placements.home.weights"]);
  });

  it("bad diversity, seeds, deadlines and maxLimit", () => {
    expect(paths({ diversity: { maxPerCategory: 0 } })).toEqual(["diversity.maxPerCategory"]);
    expect(paths({ diversity: 3 })).toEqual(["diversity.maxPerCategory"]);
    expect(paths({ seeds: [] })).toEqual(["seeds"]);
    expect(paths({ seeds: { viewed: 21 } })).toEqual(["seeds.viewed"]);
    expect(paths({ seeds: { carted: -1 } })).toEqual(["seeds.carted"]);
    expect(paths({ seeds: { recencyHalfLife: 1.5 } })).toEqual(["seeds.recencyHalfLife"]);
    expect(paths({ deadlines: "fast" })).toEqual(["deadlines"]);
    expect(paths({ deadlines: { kv: 0 } })).toEqual(["deadlines.kv"]);
    expect(paths({ deadlines: { total: 5001 } })).toEqual(["deadlines.total"]);
    expect(paths({ deadlines: { session: "30" } })).toEqual(["deadlines.session"]);
    for (const maxLimit of [0, 201, 1.5]) expect(paths({ maxLimit })).toEqual(["maxLimit"]);
  });

  it("bad rules, naming the rule and the field", () => {
    expect(paths({ rules: {} })).toEqual(["rules"]);
    expect(paths({ rules: [3] })).toEqual(["rules[0]"]);
    const ok = { id: "r", action: "boost", productIds: ["p"], amount: 1 };
    expect(paths({ rules: [ok, { ...ok, id: "" }] })).toEqual(["rules[1].id"]);
    expect(paths({ rules: [{ ...ok, action: "hide" }] })).toEqual(["rules[0].action"]);
    expect(paths({ rules: [{ ...ok, amount: 0 }] })).toEqual(["rules[0].amount"]);
    expect(paths({ rules: [{ ...ok, amount: undefined }] })).toEqual(["rules[0].amount"]);
    expect(paths({ rules: [{ ...ok, action: "bury", amount: -1 }] })).toEqual(["rules[0].amount"]);
    // Bounded: an amount near Number.MAX_VALUE drove scores to Infinity ("score": null in the answer).
    for (const amount of [1000.5, 1e303, Number.MAX_VALUE])
      expect(paths({ rules: [{ ...ok, amount }] }), String(amount)).toEqual(["rules[0].amount"]);
    expect(issues({ rules: [{ ...ok, amount: 1e303 }] })[0]?.message).toMatch(/\(0, 1000\]/);
    expect(accepted({ rules: [{ ...ok, action: "bury", amount: MAX_RULE_AMOUNT }] }).rules[0]?.amount).toBe(1000);
    expect(paths({ rules: [{ ...ok, productIds: "p" }] })).toEqual(["rules[0].productIds"]);
    expect(paths({ rules: [{ ...ok, productIds: undefined }] })).toEqual(["rules[0].productIds"]);
    expect(paths({ rules: [{ ...ok, productIds: undefined, categories: [1] }] })).toEqual(["rules[0].categories"]);
    expect(paths({ rules: [{ ...ok, placements: "home" }] })).toEqual(["rules[0].placements"]);
    expect(paths({ rules: [{ ...ok, from: "tomorrow" }] })).toEqual(["rules[0].from"]);
    expect(paths({ rules: [{ ...ok, until: 1767225600000 }] })).toEqual(["rules[0].until"]);
    // Only ISO-8601 date-times with a zone: not what Date.parse happens to read (locale text, bare numbers, local
    // times that depend on the host's zone) or rolls over (2026-02-30 is not 2026-03-02).
    for (const from of ["Dec 1", "1", "2026-02-30T00:00:00Z", "2026-12-01T00:00:00", "2026-12-01", ""])
      expect(paths({ rules: [{ ...ok, from }] }), from).toEqual(["rules[0].from"]);
    expect(paths({ rules: [{ ...ok, until: "2026-12-01T24:00:00Z" }] })).toEqual(["rules[0].until"]);
    expect(
      accepted({ rules: [{ ...ok, from: "2026-12-01T00:00:00+01:00", until: "2026-12-31T23:59:59.5Z" }] }).rules,
    ).toHaveLength(1);
    // An empty window (until at or before from, compared as instants, zones applied) would keep the rule off for
    // ever, as an experiment's would: refused as experiments refuse an end not after their start.
    const swapped = { ...ok, from: "2026-12-08T00:00:00Z", until: "2026-12-01T00:00:00Z" };
    expect(issues({ rules: [swapped] })).toEqual([{ path: "rules[0].until", message: "must be after from" }]);
    expect(paths({ rules: [{ ...ok, from: "2026-12-01T01:00:00+01:00", until: "2026-12-01T00:00:00Z" }] })).toEqual([
      "rules[0].until",
    ]);
    expect(
      accepted({ rules: [{ ...ok, from: "2026-12-01T00:30:00+01:00", until: "2026-12-01T00:00:00Z" }] }).rules,
    ).toHaveLength(1);
    // A stored document keeps ranking (its other rules too): such a rule never applies anyway.
    expect(parseRankingConfig({ rules: [swapped] }, "v9").ok).toBe(true);
    const pin = { id: "p", action: "pin", productIds: ["p"], slot: 1 };
    expect(paths({ rules: [{ ...pin, slot: 0 }] })).toEqual(["rules[0].slot"]);
    expect(paths({ rules: [{ ...pin, slot: undefined }] })).toEqual(["rules[0].slot"]);
    expect(paths({ rules: [{ ...pin, productIds: undefined, categories: ["shoes"] }] })).toEqual([
      "rules[0].productIds",
    ]);
    expect(paths({ rules: [{ ...pin, productIds: [] }] })).toEqual(["rules[0].productIds"]);
  });

  it("unknown fields anywhere, naming the path (a typo must not be dropped silently)", () => {
    expect(paths({ weigths: { covisit: 5 } })).toEqual(["weigths"]);
    expect(paths({ diversity: { maxPerCategry: 2 } })).toContain("diversity.maxPerCategry");
    expect(paths({ seeds: { view: 3 } })).toEqual(["seeds.view"]);
    expect(paths({ deadlines: { totl: 40 } })).toEqual(["deadlines.totl"]);
    expect(paths({ placements: { home: { limit: 5 } } })).toEqual(["placements.home.limit"]);
    const rule = { id: "r", action: "boost", amount: 1, productIds: ["p"], util: "2026-12-01T00:00:00Z" };
    expect(paths({ rules: [rule] })).toEqual(["rules[0].util"]);
    expect(issues({ weigths: {} })[0]?.message).toMatch(/unknown field; one of version, weights/);
    // A document as GET answers it (its version included) goes back unchanged.
    expect(accepted({ ...DEFAULT_RANKING_CONFIG })).toEqual({ ...DEFAULT_RANKING_CONFIG, version: "v9" });
    // A placement may not take a mode's name: it would share the mode's experiments (src/experiments/serve.ts).
    expect(paths({ placements: { similar: { sources: ["popular"] } } })).toEqual(["placements.similar"]);
    expect(paths({ placements: { rerank: {} } })).toEqual(["placements.rerank"]);
    // Stored documents are read as they were accepted, before the check existed.
    expect(parseRankingConfig({ weigths: {} }, "v9").ok).toBe(true);
  });

  it("reports every problem of a document at once, each with a message", () => {
    const found = issues({ weights: { batch: "x" }, maxLimit: 0, rules: [{ id: "r", action: "pin" }] });
    expect(found.map((i) => i.path).sort()).toEqual(
      ["maxLimit", "rules[0].productIds", "rules[0].productIds", "rules[0].slot", "weights.batch"].sort(),
    );
    for (const i of found) expect(i.message.length).toBeGreaterThan(0);
  });
});
