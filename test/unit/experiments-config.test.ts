// The experiments document (src/experiments/config.ts): what it accepts, the defaults it fills in, the path of every
// problem it reports, the one-experiment-per-placement rule and which experiment is active when. Every expected
// value is read off the document in the test itself.
import { describe, expect, it } from "vitest";
import {
  activeExperiment,
  type ConfigIssue,
  DEFAULT_EXPERIMENTS_CONFIG,
  EXPERIMENTS_KEY,
  type ExperimentsConfig,
  parseExperiments,
  unplacedExperiments,
} from "../../src/experiments/config.ts";

function accepted(doc: unknown, version = "v3"): ExperimentsConfig {
  const parsed = parseExperiments(doc, version);
  if (!parsed.ok) throw new Error(`refused: ${JSON.stringify(parsed.issues)}`);
  return parsed.config;
}
function issues(doc: unknown): ConfigIssue[] {
  const parsed = parseExperiments(doc, "v3");
  if (parsed.ok) throw new Error(`accepted: ${JSON.stringify(doc)}`);
  return parsed.issues;
}
const paths = (doc: unknown) => issues(doc).map((i) => i.path);

const popular = { kind: "popular" } as const;
const ranker = { kind: "ranker" } as const;
/** A valid split experiment on `home`; `over` replaces fields. */
const experiment = (over: Record<string, unknown> = {}) => ({
  id: "home-1",
  placement: "home",
  variants: [
    { id: "control", ranker: popular },
    { id: "merged", ranker },
  ],
  ...over,
});
const one = (over: Record<string, unknown> = {}) => ({ experiments: [experiment(over)] });

describe("parseExperiments accepts", () => {
  it("an empty document and one without experiments, under the version it is given", () => {
    expect(accepted({ experiments: [] })).toEqual({ version: "v3", experiments: [] });
    expect(accepted({})).toEqual({ version: "v3", experiments: [] });
    // As a GET answers it: its version goes back unchanged, the new one is the PUT's.
    expect(accepted({ version: "v2", experiments: [] }, "v3")).toEqual({ version: "v3", experiments: [] });
    expect(DEFAULT_EXPERIMENTS_CONFIG).toEqual({ version: "default", experiments: [] });
    expect(EXPERIMENTS_KEY).toBe("cfg:experiments");
  });

  it("a minimal experiment, filling holdout 0, mode split and weight 1", () => {
    expect(accepted(one()).experiments).toEqual([
      {
        id: "home-1",
        placement: "home",
        holdout: 0,
        mode: "split",
        variants: [
          { id: "control", weight: 1, ranker: { kind: "popular" } },
          { id: "merged", weight: 1, ranker: { kind: "ranker" } },
        ],
      },
    ]);
  });

  it("a full experiment: window, holdout, weights, ranker overrides, description", () => {
    const doc = {
      experiments: [
        {
          id: "pdp_covisit-2026",
          placement: "pdp",
          description: "do co-visitation weights pay off on product pages?",
          start: "2026-12-01T00:00:00Z",
          end: "2026-12-15T00:00:00.000+01:00",
          holdout: 0.05,
          mode: "split",
          variants: [
            { id: "a", weight: 10, ranker: popular },
            { id: "b", weight: 30, ranker: { kind: "ranker", weights: { covisit: 8 } } },
            {
              id: "c",
              weight: 60,
              ranker: { kind: "ranker", weights: { covisit: 0, batch: -1 }, sources: ["batch"] },
            },
          ],
        },
      ],
    };
    expect(accepted(doc).experiments[0]).toEqual(doc.experiments[0]);
  });

  it("one variant with a holdout (personalisation against the non-personal list), and rerank / similar", () => {
    expect(accepted(one({ holdout: 0.5, variants: [{ id: "merged", ranker }] })).experiments[0]?.holdout).toBe(0.5);
    expect(accepted(one({ placement: "rerank" })).experiments[0]?.placement).toBe("rerank");
    expect(accepted(one({ placement: "similar" })).experiments[0]?.placement).toBe("similar");
  });

  it("an interleaving of two rankers, with or without (equal) weights", () => {
    const variants = [
      { id: "now", ranker },
      { id: "covisit-heavy", ranker: { kind: "ranker", weights: { covisit: 30 } } },
    ];
    expect(accepted(one({ mode: "interleave", variants })).experiments[0]?.mode).toBe("interleave");
    const weighted = variants.map((v) => ({ ...v, weight: 2 }));
    expect(accepted(one({ mode: "interleave", holdout: 0.1, variants: weighted })).experiments[0]?.holdout).toBe(0.1);
  });

  it("experiments on one placement whose windows only touch ([start, end) windows), and overlaps on other placements", () => {
    const doc = {
      experiments: [
        experiment({ id: "first", end: "2026-12-01T00:00:00Z" }),
        experiment({ id: "second", start: "2026-12-01T00:00:00Z", end: "2026-12-08T00:00:00Z" }),
        experiment({ id: "third", start: "2026-12-08T00:00:00Z" }),
        experiment({ id: "on-pdp", placement: "pdp" }),
        experiment({ id: "on-cart", placement: "cart", holdout: 0.2 }),
      ],
    };
    expect(accepted(doc).experiments.map((e) => e.id)).toEqual(["first", "second", "third", "on-pdp", "on-cart"]);
  });

  it("20 experiments", () => {
    const doc = {
      experiments: Array.from({ length: 20 }, (_, i) => experiment({ id: `e${i}`, placement: `p${i}` })),
    };
    expect(accepted(doc).experiments).toHaveLength(20);
  });
});

describe("parseExperiments refuses, naming the path", () => {
  it("a document that is not an object, unknown fields, experiments that are not a list", () => {
    expect(paths([])).toEqual([""]);
    expect(paths("x")).toEqual([""]);
    expect(paths({ experiment: [] })).toEqual(["experiment"]);
    expect(paths({ experiments: {} })).toEqual(["experiments"]);
    expect(paths({ experiments: [42] })).toEqual(["experiments[0]"]);
  });

  it("more than 20 experiments", () => {
    const doc = { experiments: Array.from({ length: 21 }, (_, i) => experiment({ id: `e${i}`, placement: `p${i}` })) };
    expect(paths(doc)).toEqual(["experiments"]);
  });

  it("bad ids, placements and descriptions", () => {
    expect(paths(one({ id: "Home" }))).toEqual(["experiments[0].id"]);
    expect(paths(one({ id: "-home" }))).toEqual(["experiments[0].id"]);
    expect(paths(one({ id: "a".repeat(65) }))).toEqual(["experiments[0].id"]);
    expect(accepted(one({ id: "a".repeat(64) })).experiments).toHaveLength(1);
    expect(paths(one({ id: 7 }))).toEqual(["experiments[0].id"]);
    expect(paths(one({ placement: "Home" }))).toEqual(["experiments[0].placement"]);
    expect(paths(one({ placement: undefined }))).toEqual(["experiments[0].placement"]);
    expect(paths(one({ description: 3 }))).toEqual(["experiments[0].description"]);
    expect(paths(one({ holdOut: 0.1 }))).toEqual(["experiments[0].holdOut"]);
  });

  it("duplicate experiment ids", () => {
    const doc = { experiments: [experiment(), experiment({ placement: "pdp" })] };
    expect(paths(doc)).toEqual(["experiments[1].id"]);
  });

  it("times that are not ISO-8601 with a zone, and windows that end before they start", () => {
    expect(paths(one({ start: "2026-12-01" }))).toEqual(["experiments[0].start"]);
    expect(paths(one({ start: "2026-12-01T00:00:00" }))).toEqual(["experiments[0].start"]);
    expect(paths(one({ end: "December 8, 2026" }))).toEqual(["experiments[0].end"]);
    expect(paths(one({ end: "2026-13-40T00:00:00Z" }))).toEqual(["experiments[0].end"]);
    expect(paths(one({ start: "2026-12-08T00:00:00Z", end: "2026-12-08T00:00:00Z" }))).toEqual(["experiments[0].end"]);
    expect(paths(one({ start: "2026-12-08T00:00:00Z", end: "2026-12-01T00:00:00Z" }))).toEqual(["experiments[0].end"]);
  });

  it("dates and times that do not exist, which Date.parse would roll over (2026-02-30 → 2 March)", () => {
    for (const t of [
      "2026-02-30T00:00:00Z",
      "2026-02-29T00:00:00Z",
      "2026-04-31T00:00:00Z",
      "2026-00-10T00:00:00Z",
      "2026-12-00T00:00:00Z",
      "2026-12-01T24:00:00Z",
      "2026-12-01T12:60:00Z",
      "2026-12-01T12:00:60Z",
      "2026-12-01T12:00:00+24:00",
      "2026-12-01T12:00:00+01:60",
    ])
      expect(paths(one({ start: t })), t).toEqual(["experiments[0].start"]);
    // Leap days exist in leap years (2100 is not one, 2000 was).
    for (const t of ["2028-02-29T00:00:00Z", "2000-02-29T23:59:59.999+14:00"])
      expect(accepted(one({ start: t })).experiments[0]?.start).toBe(t);
    expect(paths(one({ start: "2100-02-29T00:00:00Z" }))).toEqual(["experiments[0].start"]);
  });

  it("a holdout outside [0, 0.5] and an unknown mode", () => {
    expect(paths(one({ holdout: 0.51 }))).toEqual(["experiments[0].holdout"]);
    expect(paths(one({ holdout: -0.01 }))).toEqual(["experiments[0].holdout"]);
    expect(paths(one({ holdout: "0.1" }))).toEqual(["experiments[0].holdout"]);
    expect(paths(one({ holdout: null }))).toEqual(["experiments[0].holdout"]);
    expect(paths(one({ mode: "bandit" }))).toEqual(["experiments[0].mode"]);
  });

  it("no variants, more than 10, one without a holdout, duplicates and reserved ids", () => {
    expect(paths(one({ variants: [] }))).toEqual(["experiments[0].variants"]);
    expect(paths(one({ variants: "a" }))).toEqual(["experiments[0].variants"]);
    const eleven = Array.from({ length: 11 }, (_, i) => ({ id: `v${i}`, ranker }));
    expect(paths(one({ variants: eleven }))).toEqual(["experiments[0].variants"]);
    expect(accepted(one({ variants: eleven.slice(0, 10) })).experiments[0]?.variants).toHaveLength(10);
    expect(paths(one({ variants: [{ id: "merged", ranker }] }))).toEqual(["experiments[0].variants"]);
    const twice = [
      { id: "x", ranker },
      { id: "x", ranker: popular },
    ];
    expect(paths(one({ variants: twice }))).toEqual(["experiments[0].variants[1].id"]);
    const reserved = [
      { id: "holdout", ranker: popular },
      { id: "interleaved", ranker },
    ];
    expect(paths(one({ variants: reserved }))).toEqual([
      "experiments[0].variants[0].id",
      "experiments[0].variants[1].id",
    ]);
  });

  it("weights that are not positive numbers", () => {
    const withWeight = (weight: unknown) =>
      one({
        variants: [
          { id: "a", ranker, weight: 1 },
          { id: "b", ranker, weight },
        ],
      });
    for (const w of [0, -1, "2", null, Number.NaN, 2_000_000])
      expect(paths(withWeight(w)), String(w)).toEqual(["experiments[0].variants[1].weight"]);
    expect(accepted(withWeight(0.5)).experiments[0]?.variants[1]?.weight).toBe(0.5);
  });

  it("rankers: missing, unknown kinds, unknown features and sources, out-of-range weights, options on popular", () => {
    const withRanker = (r: unknown) =>
      one({
        variants: [
          { id: "a", ranker: popular },
          { id: "b", ranker: r },
        ],
      });
    const p = "experiments[0].variants[1].ranker";
    expect(paths(withRanker(undefined))).toEqual([p]);
    expect(paths(withRanker({ kind: "neural" }))).toEqual([`${p}.kind`]);
    expect(paths(withRanker({ kind: "popular", weights: {} }))).toEqual([`${p}.weights`]);
    expect(paths(withRanker({ kind: "ranker", weights: { nope: 1 } }))).toEqual([`${p}.weights.nope`]);
    expect(paths(withRanker({ kind: "ranker", weights: { batch: 101 } }))).toEqual([`${p}.weights.batch`]);
    expect(paths(withRanker({ kind: "ranker", weights: [] }))).toEqual([`${p}.weights`]);
    expect(paths(withRanker({ kind: "ranker", sources: [] }))).toEqual([`${p}.sources`]);
    expect(paths(withRanker({ kind: "ranker", sources: ["batch", "web"] }))).toEqual([`${p}.sources`]);
    expect(paths(withRanker({ kind: "ranker", sources: ["batch", "batch"] }))).toEqual([`${p}.sources`]);
    expect(paths(withRanker({ kind: "ranker", limit: 3 }))).toEqual([`${p}.limit`]);
    // similar and rerank rank fixed candidates: sources would change nothing there. Weights still apply.
    for (const placement of ["similar", "rerank"]) {
      const variants = [
        { id: "a", ranker: popular },
        { id: "b", ranker: { kind: "ranker", weights: { batch: 2 }, sources: ["popular"] } },
      ];
      expect(issues(one({ placement, variants }))).toEqual([
        { path: `${p}.sources`, message: `${placement} ranks fixed candidates: sources change nothing there` },
      ]);
      const weighted = [variants[0], { id: "b", ranker: { kind: "ranker", weights: { batch: 2 } } }];
      expect(accepted(one({ placement, variants: weighted })).experiments[0]?.placement).toBe(placement);
    }
    expect(paths({ experiments: [experiment({ variants: [{ id: "a", ranker: popular, colour: "red" }] })] })).toEqual([
      "experiments[0].variants[0].colour",
    ]);
  });

  it("interleaving anything but two equally weighted variants", () => {
    const three = [
      { id: "a", ranker },
      { id: "b", ranker: popular },
      { id: "c", ranker },
    ];
    expect(paths(one({ mode: "interleave", variants: three }))).toEqual(["experiments[0].variants"]);
    expect(paths(one({ mode: "interleave", holdout: 0.1, variants: [{ id: "a", ranker }] }))).toEqual([
      "experiments[0].variants",
    ]);
    const unequal = [
      { id: "a", ranker, weight: 1 },
      { id: "b", ranker: popular, weight: 3 },
    ];
    expect(paths(one({ mode: "interleave", variants: unequal }))).toEqual(["experiments[0].variants[1].weight"]);
  });

  it("two experiments on one placement whose windows overlap, open ends included", () => {
    const overlapping = (a: Record<string, unknown>, b: Record<string, unknown>) =>
      issues({ experiments: [experiment({ id: "one", ...a }), experiment({ id: "two", ...b })] });
    // Both open-ended: always overlapping.
    expect(overlapping({}, {})).toEqual([
      { path: "experiments[1]", message: "overlaps experiments[0] (one) on placement home" },
    ]);
    // [−∞, 12-08) and [12-07, +∞) share 12-07.
    expect(overlapping({ end: "2026-12-08T00:00:00Z" }, { start: "2026-12-07T00:00:00Z" })[0]?.path).toBe(
      "experiments[1]",
    );
    // [12-01, 12-08) contains [12-02, 12-03).
    expect(
      overlapping(
        { start: "2026-12-01T00:00:00Z", end: "2026-12-08T00:00:00Z" },
        { start: "2026-12-02T00:00:00Z", end: "2026-12-03T00:00:00Z" },
      ),
    ).toHaveLength(1);
    // 00:00+01:00 is 23:00Z the day before: it overlaps a window ending at midnight UTC by an hour.
    expect(overlapping({ end: "2026-12-08T00:00:00Z" }, { start: "2026-12-08T00:00:00+01:00" })).toHaveLength(1);
  });

  it("every problem at once, each under its own path", () => {
    const doc = {
      experiments: [
        experiment({ id: "A", holdout: 2 }),
        experiment({ id: "b", variants: [{ id: "x", weight: 0, ranker: { kind: "ranker", weights: { foo: 1 } } }] }),
      ],
    };
    expect(paths(doc)).toEqual([
      "experiments[0].id",
      "experiments[0].holdout",
      "experiments[1].variants[0].weight",
      "experiments[1].variants[0].ranker.weights.foo",
    ]);
    for (const i of issues(doc)) expect(i.message.length).toBeGreaterThan(0);
  });
});

describe("activeExperiment", () => {
  const config = accepted({
    experiments: [
      experiment({ id: "early", start: "2026-12-01T00:00:00Z", end: "2026-12-08T00:00:00Z" }),
      experiment({ id: "late", start: "2026-12-08T00:00:00Z" }),
      experiment({ id: "pdp-always", placement: "pdp" }),
    ],
  });
  const at = (placement: string, iso: string) => activeExperiment(config, placement, Date.parse(iso))?.id ?? null;

  it("is the one whose [start, end) window holds the instant, on that placement", () => {
    expect(at("home", "2026-11-30T23:59:59.999Z")).toBeNull();
    expect(at("home", "2026-12-01T00:00:00Z")).toBe("early"); // start is inside
    expect(at("home", "2026-12-07T23:59:59.999Z")).toBe("early");
    expect(at("home", "2026-12-08T00:00:00Z")).toBe("late"); // end is outside, the next one starts
    expect(at("home", "2099-01-01T00:00:00Z")).toBe("late");
    expect(at("pdp", "2000-01-01T00:00:00Z")).toBe("pdp-always");
    expect(at("cart", "2026-12-02T00:00:00Z")).toBeNull();
  });

  it("takes a Date as well as milliseconds", () => {
    expect(activeExperiment(config, "home", new Date("2026-12-02T00:00:00Z"))?.id).toBe("early");
  });

  it("finds nothing in the default document", () => {
    expect(activeExperiment(DEFAULT_EXPERIMENTS_CONFIG, "home", Date.now())).toBeNull();
  });
});

describe("unplacedExperiments", () => {
  const config = accepted({
    experiments: [
      experiment({ id: "typo", placement: "hmoe" }),
      experiment({ id: "ended", placement: "gone", end: "2026-12-08T00:00:00Z" }),
      experiment({ id: "later", placement: "landing", start: "2026-12-20T00:00:00Z" }),
      experiment({ id: "home" }),
      experiment({ id: "similar", placement: "similar" }),
      experiment({ id: "rerank", placement: "rerank" }),
    ],
  });
  const unplaced = (placements: string[], iso: string) =>
    unplacedExperiments(config, placements, Date.parse(iso)).map(({ index, experiment }) => [index, experiment.id]);

  it("are those that can still run on a placement the ranking config lacks, similar and rerank aside", () => {
    // "ended" can still run until its end (exclusive); "later" has not started but can run.
    expect(unplaced(["home"], "2026-12-07T23:59:59.999Z")).toEqual([
      [0, "typo"],
      [1, "ended"],
      [2, "later"],
    ]);
    expect(unplaced(["home", "landing"], "2026-12-08T00:00:00Z")).toEqual([[0, "typo"]]);
    // Every placement present: none.
    expect(unplaced(["home", "hmoe", "landing"], "2026-12-08T00:00:00Z")).toEqual([]);
  });
});
