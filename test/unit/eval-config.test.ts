// `npm run eval -- … --config JSON|FILE`: the merged ranker's config, validated as the admin endpoint validates it.
import { describe, expect, it } from "vitest";
import { rankingConfigArg } from "../../eval/config.ts";
import { DEFAULT_RANKING_CONFIG } from "../../src/rank/config.ts";

/** Files by path, as the script's reader would give them. */
const files: Record<string, string> = { "c.json": JSON.stringify({ weights: { content: 0 } }) };
const read = (file: string): string => {
  const text = files[file];
  if (text === undefined) throw new Error(`ENOENT: ${file}`);
  return text;
};
const arg = (value: string) => rankingConfigArg(value, read);

describe("--config", () => {
  it("takes a JSON document and fills what it leaves out from the default", () => {
    const c = arg(' {"weights":{"adjacent":2},"seeds":{"carted":5}}');
    expect(c.weights.adjacent).toBe(2);
    expect(c.weights.sequence).toBe(DEFAULT_RANKING_CONFIG.weights.sequence);
    expect(c.seeds).toEqual({ ...DEFAULT_RANKING_CONFIG.seeds, carted: 5 });
    expect(c.version).toBe("offline");
  });

  it("reads a file when the value is not a document", () => {
    expect(arg("c.json").weights.content).toBe(0);
    expect(() => arg("missing.json")).toThrow(/ENOENT: missing\.json/);
  });

  it("refuses what the admin endpoint refuses, naming the path", () => {
    expect(() => arg('{"weights":{"adjacent":"high"}}')).toThrow(/--config: weights\.adjacent: /);
    expect(() => arg("{nope")).toThrow(/--config: not JSON/);
    // A typo the PUT refuses was dropped offline: the evaluation ran on the default weights.
    expect(() => arg('{"weigths":{"batch":2}}')).toThrow(/--config: weigths: unknown field/);
    const rule = { action: "boost", amount: 1, productIds: ["p"] };
    const twice = JSON.stringify({
      rules: [
        { id: "r", ...rule },
        { id: "r", ...rule },
      ],
    });
    expect(() => arg(twice)).toThrow(/--config: rules\[1\]\.id: duplicate id/);
  });
});
