// The ranking request parser (src/rank/request.ts): numbers written as text, and what it refuses with 400.
import { describe, expect, it } from "vitest";
import { ApiError } from "../../src/errors.ts";
import { DEFAULT_RANKING_CONFIG } from "../../src/rank/config.ts";
import { parseRankParams, type RankParams, type RankRequest } from "../../src/rank/request.ts";

const parse = (params: RankParams, mode: RankRequest["mode"] = "recommend") =>
  parseRankParams(mode, params, DEFAULT_RANKING_CONFIG);

/** A rerank body with one candidate whose score is written as text (as a JSON body may). */
const scoredAs = (score: string) => ({ candidates: [{ productId: "a", score }] }) as unknown as RankParams;

/** The field a refusal names (throws when the request was accepted). */
function refusedField(params: RankParams, mode: RankRequest["mode"] = "recommend"): unknown {
  try {
    parse(params, mode);
  } catch (error) {
    if (error instanceof ApiError && error.code === "validation_failed") return error.details?.field;
    throw error;
  }
  throw new Error(`accepted: ${JSON.stringify(params)}`);
}

describe("numbers written as text", () => {
  it("reads decimal numbers, with a sign, a fraction or an exponent", () => {
    expect(parse({ limit: "5" }).limit).toBe(5);
    expect(parse({ limit: "1e1" }).limit).toBe(10);
    expect(parse({ minPrice: "2.5", maxPrice: "1e2" }).filters).toEqual({ minPrice: 2.5, maxPrice: 100 });
    expect(parse(scoredAs("-0.5"), "rerank").candidates).toEqual([{ productId: "a", score: -0.5 }]);
  });

  it("refuses a blank value rather than reading it as 0 (maxPrice=%20 is no price filter of 0)", () => {
    expect(refusedField({ maxPrice: " " })).toBe("maxPrice");
    expect(refusedField({ minPrice: "\t" })).toBe("minPrice");
    expect(refusedField({ limit: " " })).toBe("limit");
    expect(refusedField(scoredAs(" "), "rerank")).toBe("candidates[0].score");
  });

  it("refuses hex, binary and octal literals and thousands separators, which Number() would read", () => {
    expect(refusedField({ limit: "0x10" })).toBe("limit");
    expect(refusedField({ limit: "0b11" })).toBe("limit");
    expect(refusedField({ maxPrice: "0o17" })).toBe("maxPrice");
    expect(refusedField({ minPrice: "1,000" })).toBe("minPrice");
    expect(refusedField(scoredAs("0x1"), "rerank")).toBe("candidates[0].score");
  });
});

describe("rerank candidates", () => {
  it("refuses scores given for some candidates and not others: the core would rank all of them by position", () => {
    const mixed = { candidates: [{ productId: "a", score: 1 }, { productId: "b", score: 100 }, "c"] };
    expect(refusedField(mixed, "rerank")).toBe("candidates[2].score");
    const unscoredFirst = { candidates: ["a", { productId: "b", score: 2 }] };
    expect(refusedField(unscoredFirst, "rerank")).toBe("candidates[1].score");
    // A null score is no score.
    expect(
      refusedField(
        {
          candidates: [
            { productId: "a", score: 1 },
            { productId: "b", score: null },
          ],
        } as unknown as RankParams,
        "rerank",
      ),
    ).toBe("candidates[1].score");
  });

  it("takes scores for all or none, and a product given twice once, at its first place with its first score", () => {
    expect(parse({ candidates: ["a", "b", "a"] }, "rerank")).toMatchObject({
      candidates: [{ productId: "a" }, { productId: "b" }],
      limit: 2,
    });
    expect(
      parse(
        {
          candidates: [
            { productId: "a", score: 1 },
            { productId: "b", score: 3 },
            { productId: "a", score: 9 },
          ],
        },
        "rerank",
      ).candidates,
    ).toEqual([
      { productId: "a", score: 1 },
      { productId: "b", score: 3 },
    ]);
  });
});
