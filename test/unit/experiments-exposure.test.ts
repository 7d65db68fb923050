// The exposure event of one answer (src/experiments/exposure.ts): fields, the visitor's ids from its key, and the
// cap on listed positions for long re-ranks.
import { describe, expect, it } from "vitest";
import { EXPOSURE_MAX_ITEMS, type ExposureInput, exposureEvent } from "../../src/experiments/exposure.ts";

const input = (n: number, extra: Partial<ExposureInput> = {}): ExposureInput => ({
  recId: "r1",
  userKey: "u:alice",
  placement: "search",
  mode: "rerank",
  productIds: Array.from({ length: n }, (_, i) => `p${i + 1}`),
  context: [],
  experiment: null,
  configVersion: "default",
  snapshotVersion: 7,
  now: Date.parse("2026-11-27T06:00:00.000Z"),
  ...extra,
});

describe("exposureEvent", () => {
  it("lists every position of a short answer, 1-based, and names the visitor from its key", () => {
    const e = exposureEvent(input(3));
    expect(e).toMatchObject({ messageId: "exposure-r1", userId: "alice", anonymousId: null });
    expect(e.properties).toMatchObject({
      items: [
        { product_id: "p1", position: 1 },
        { product_id: "p2", position: 2 },
        { product_id: "p3", position: 3 },
      ],
      item_count: 3,
    });
    expect(exposureEvent(input(1, { userKey: "a:v1" }))).toMatchObject({ userId: null, anonymousId: "v1" });
  });

  it("lists the first EXPOSURE_MAX_ITEMS positions of a long re-rank and keeps its length", () => {
    const teams = Array.from({ length: 1000 }, (_, i) => (i % 2 === 0 ? "a" : "b") as "a" | "b");
    const e = exposureEvent(input(1000, { experiment: { id: "x", arm: "interleaved", version: "v1", teams } }));
    const items = e.properties.items as Array<{ product_id: string; position: number; team: string }>;
    expect(EXPOSURE_MAX_ITEMS).toBe(100);
    expect(items).toHaveLength(EXPOSURE_MAX_ITEMS);
    expect(items.at(-1)).toEqual({ product_id: "p100", position: 100, team: "b" });
    expect(e.properties.item_count).toBe(1000);
    expect(JSON.stringify(e).length).toBeLessThan(6_000);
  });

  it("names the unit the visitor was assigned by and, for an interleaved list, the variants of teams a and b", () => {
    const e = exposureEvent(
      input(2, {
        experiment: {
          id: "il",
          arm: "interleaved",
          version: "v4",
          unit: "a:v1",
          teams: ["b", "a"],
          variants: ["now", "pop"],
        },
      }),
    );
    expect(e.properties).toMatchObject({
      experiment_id: "il",
      arm: "interleaved",
      unit: "a:v1",
      variants: ["now", "pop"],
      items: [
        { product_id: "p1", position: 1, team: "b" },
        { product_id: "p2", position: 2, team: "a" },
      ],
    });
    // Outside an experiment neither is written.
    expect(Object.keys(exposureEvent(input(1)).properties)).not.toContain("variants");
  });
});
