// What an experiment changes in one answer (src/experiments/serve.ts): the unit, the arm's config, the interleaved
// list. Expected values are read off the inputs by hand.
import { describe, expect, it } from "vitest";
import { parseExperiments } from "../../src/experiments/config.ts";
import {
  assignmentUnit,
  experimentPlacement,
  interleaveAnswers,
  interleavedWhyNot,
  planExperiment,
  rankerConfig,
} from "../../src/experiments/serve.ts";
import { DEFAULT_RANKING_CONFIG } from "../../src/rank/config.ts";
import type { RankedItem } from "../../src/rank/core.ts";

const item = (productId: string, score: number): RankedItem => ({ productId, score, reasons: ["x"] });

describe("the example document", () => {
  it("examples/experiments.json is valid, as `npm run experiments -- push` would send it", async () => {
    // test/unit is type-checked with Worker types: node:fs through a dynamic import (as eval-otto.test.ts does).
    const nodeFs = "node:fs";
    const { readFileSync } = (await import(nodeFs)) as { readFileSync(path: string, encoding: "utf8"): string };
    const doc = JSON.parse(readFileSync("examples/experiments.json", "utf8")) as unknown;
    const parsed = parseExperiments(doc, "v1");
    expect(parsed.ok ? parsed.config.experiments.map((e) => [e.id, e.mode, e.holdout]) : parsed.issues).toEqual([
      ["home-personalisation", "split", 0.1],
      ["pdp-sequence-weight", "interleave", 0],
    ]);
  });
});

describe("assignment unit", () => {
  it("a user: the first anonymous id merged into them, else the request's anonymous id, else the user's key", () => {
    const known = (unit: string) => ({ status: "known", unit });
    // The first merged id wins over the request's: every device of the user gets one arm (oldest last).
    expect(assignmentUnit("v1", "u:alice", ["v3", "v2"])).toEqual(known("a:v2"));
    expect(assignmentUnit(null, "u:alice", ["v3", "v2"])).toEqual(known("a:v2"));
    // Before any merge: the anonymous id the login is about to merge, else the user's own key.
    expect(assignmentUnit("v1", "u:alice", [])).toEqual(known("a:v1"));
    expect(assignmentUnit(null, "u:alice", [])).toEqual(known("u:alice"));
    // An anonymous visitor: their own id.
    expect(assignmentUnit("v1", "a:v1", [])).toEqual(known("a:v1"));
    expect(assignmentUnit("v1", "a:v1", null)).toEqual(known("a:v1"));
    expect(assignmentUnit(null, null, null)).toEqual({ status: "none" });
  });

  it("a user named alone whose session could not be read has no known unit", () => {
    expect(assignmentUnit(null, "u:alice", null)).toEqual({ status: "unknown" });
    // With the request's anonymous id the best guess stands (the one the login merged, on a single device).
    expect(assignmentUnit("v1", "u:alice", null)).toEqual({ status: "known", unit: "a:v1" });
  });

  it("experiments are keyed by placement for recommendations and by mode otherwise", () => {
    expect(experimentPlacement("recommend", "cart")).toBe("cart");
    expect(experimentPlacement("rerank", "search")).toBe("rerank");
    expect(experimentPlacement("similar", "similar")).toBe("similar");
  });
});

describe("the config of an arm", () => {
  it("popular: the active config, without the visitor's data", () => {
    const plan = rankerConfig(DEFAULT_RANKING_CONFIG, "home", { kind: "popular" });
    expect(plan).toEqual({ config: DEFAULT_RANKING_CONFIG, personal: false });
  });

  it("ranker: the placement's weights and sources replaced, the other placements untouched", () => {
    const plan = rankerConfig(DEFAULT_RANKING_CONFIG, "home", {
      kind: "ranker",
      weights: { batch: 5 },
      sources: ["popular"],
    });
    expect(plan.personal).toBe(true);
    expect(plan.config.placements.home).toEqual({
      ...DEFAULT_RANKING_CONFIG.placements.home,
      weights: { batch: 5 },
      sources: ["popular"],
    });
    expect(plan.config.placements.pdp).toBe(DEFAULT_RANKING_CONFIG.placements.pdp);
    expect(plan.config.weights).toBe(DEFAULT_RANKING_CONFIG.weights);
    // rerank / similar have no placement entry: the weights apply to this answer's global weights.
    const rerank = rankerConfig(DEFAULT_RANKING_CONFIG, "rerank", { kind: "ranker", weights: { base: 3 } });
    expect(rerank.config.weights).toEqual({ ...DEFAULT_RANKING_CONFIG.weights, base: 3 });
  });

  it("plans one config per arm, two for an interleaved visitor, none without a unit or an experiment", () => {
    const doc = parseExperiments(
      {
        experiments: [
          {
            id: "il",
            placement: "pdp",
            mode: "interleave",
            variants: [
              { id: "a", ranker: { kind: "ranker", weights: { context: 9 } } },
              { id: "b", ranker: { kind: "popular" } },
            ],
          },
        ],
      },
      "v1",
    );
    if (!doc.ok) throw new Error("invalid");
    const plan = planExperiment(doc.config, "pdp", Date.now(), "a:v", DEFAULT_RANKING_CONFIG);
    expect(plan?.arm).toBe("interleaved");
    expect(plan?.plans.map((p) => p.personal)).toEqual([true, false]);
    expect(plan?.plans[0].config.placements.pdp?.weights).toEqual({ context: 9 });
    expect(planExperiment(doc.config, "pdp", Date.now(), null, DEFAULT_RANKING_CONFIG)).toBeNull();
    expect(planExperiment(doc.config, "home", Date.now(), "a:v", DEFAULT_RANKING_CONFIG)).toBeNull();
  });
});

describe("interleaved answers", () => {
  it("keep the per-category cap each variant's list kept, filling from the items over it only when needed", () => {
    // Both lists hold at most two of a category; drafted as they come, one category could take four places.
    const a = ["s1", "s2", "h1", "h2", "b1", "b2"].map((id, i) => item(id, 10 - i));
    const b = ["s3", "s4", "h3", "h4", "b3", "b4"].map((id, i) => item(id, 10 - i));
    const diversity = { maxPerCategory: 2, categoryOf: (id: string) => id[0] };
    const perCategory = (ids: string[]) => ids.reduce((m, id) => m.set(id[0], (m.get(id[0]) ?? 0) + 1), new Map());
    for (const recId of ["rec-1", "rec-2", "rec-3", "rec-4", "rec-5", "rec-6"]) {
      const { items, teams } = interleaveAnswers(a, b, 6, recId, diversity);
      expect(items.map((i) => i.productId).length, recId).toBe(6);
      expect(Math.max(...perCategory(items.map((i) => i.productId)).values()), recId).toBeLessThanOrEqual(2);
      for (const [i, it] of items.entries()) expect(teams[i] === "a" ? a : b).toContain(it);
    }
    // One category only: the cap cannot hold, and the list is still full.
    const onlyS = interleaveAnswers(a.slice(0, 2), b.slice(0, 2), 4, "rec-1", diversity);
    expect(onlyS.items).toHaveLength(4);
  });

  it("keeps each team's own ranked item and is the same for the same recId", () => {
    const a = [item("p", 3), item("q", 2), item("r", 1)];
    const b = [item("q", 9), item("s", 8), item("p", 7)];
    const one = interleaveAnswers(a, b, 4, "rec-1");
    const two = interleaveAnswers(a, b, 4, "rec-1");
    expect(two).toEqual(one);
    expect(one.items).toHaveLength(4);
    expect(new Set(one.items.map((i) => i.productId)).size).toBe(4);
    // Every item is the object of the team that placed it (its score tells which list it came from).
    one.items.forEach((it, i) => {
      const from = one.teams[i] === "a" ? a : b;
      expect(from).toContain(it);
    });
    // The four distinct products of the two lists' heads: p, q, r, s.
    expect(one.items.map((i) => i.productId).sort()).toEqual(["p", "q", "r", "s"]);
  });

  it("explains a product against the shown list: its slot there, or why the first variant did not show it", () => {
    const shown = [item("p", 3), item("s", 8)];
    const inFirst = { productId: "q", status: "shown" as const, position: 2, score: 2 };
    expect(interleavedWhyNot({ productId: "s", status: "not_candidate", inCatalog: true }, shown)).toEqual({
      productId: "s",
      status: "shown",
      position: 2,
      score: 8,
    });
    expect(interleavedWhyNot(inFirst, shown)).toEqual({ productId: "q", status: "interleaved_out" });
    const removed = { productId: "r", status: "removed" as const, rule: "out_of_stock" };
    expect(interleavedWhyNot(removed, shown)).toBe(removed);
    expect(interleavedWhyNot(undefined, shown)).toBeUndefined();
  });

  it("keeps a pinned product at its slot, credited to neither team, whatever the draft's coins", () => {
    const pinned = { ...item("P", 0), reasons: ["pinned:sale"] };
    const a = [item("a1", 3), item("a2", 2), pinned, item("a3", 1)];
    const b = [item("b1", 9), item("b2", 8), pinned, item("b3", 7)];
    for (const recId of ["rec-1", "rec-2", "rec-3", "rec-4", "rec-5", "rec-6"]) {
      const { items, teams } = interleaveAnswers(a, b, 5, recId);
      expect(items).toHaveLength(5);
      expect(items[2]).toBe(pinned);
      expect(teams[2]).toBe("pinned");
      expect(teams.filter((t) => t === "pinned")).toHaveLength(1);
      expect(new Set(items.map((i) => i.productId)).size).toBe(5);
    }
  });

  it("pins of either list are taken out of both drafts; the first variant's pin wins a slot both pin", () => {
    // One rule pins P or Q at slot 1: the non-personal list a pins P; b excludes P for this visitor and pins Q.
    // b also pins R at slot 3 (a rule whose product a does not have), and ranks P organically.
    const pin = (id: string) => ({ ...item(id, 0), reasons: ["pinned:promo"] });
    const [P, Qa, Q, R] = [pin("P"), { ...item("Q", 5) }, pin("Q"), pin("R")];
    const a = [P, Qa, item("a1", 3), item("a2", 2), item("a3", 1)];
    const b = [Q, item("P", 9), R, item("b1", 8), item("b2", 7)];
    for (const recId of ["rec-1", "rec-2", "rec-3", "rec-4", "rec-5", "rec-6"]) {
      const { items, teams } = interleaveAnswers(a, b, 5, recId);
      const list = items.map((i) => i.productId);
      expect(list[0]).toBe("P");
      expect(items[0]).toBe(P);
      expect(list[2]).toBe("R");
      expect(teams[0]).toBe("pinned");
      expect(teams[2]).toBe("pinned");
      // Q lost its slot to P: out of the list, not a team-a item (a ranked it 2nd organically) nor b's.
      expect(list).not.toContain("Q");
      expect(teams.filter((t) => t === "pinned")).toHaveLength(2);
      expect(list.filter((_, i) => teams[i] !== "pinned").every((id) => !["P", "Q", "R"].includes(id))).toBe(true);
      expect(items).toHaveLength(5);
      expect(new Set(list).size).toBe(5);
    }
  });
});
