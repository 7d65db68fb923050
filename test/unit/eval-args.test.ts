// `npm run eval` option values (scripts/eval.ts): a count that is not a positive integer is refused with exit 2 and
// the suite's usage before anything is evaluated, instead of a run over a nonsense number of sessions.
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";

const dir = mkdtempSync(join(tmpdir(), "lastmile-eval-args-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const train = join(dir, "train.tsv");
const test = join(dir, "test.tsv");
writeFileSync(train, "SessionId\tItemId\tTime\n1\ta\t1\n1\tb\t2\n1\tc\t3\n2\ta\t4\n2\tb\t5\n3\tb\t6\n3\tc\t7\n");
writeFileSync(test, "SessionId\tItemId\tTime\n10\ta\t11\n10\tb\t12\n11\tb\t13\n11\tc\t14\n12\ta\t15\n12\tb\t16\n");

function nextItem(...options: string[]) {
  return spawnSync(
    process.execPath,
    ["scripts/eval.ts", "next-item", "--train", train, "--test", test, "--json", ...options],
    { encoding: "utf8" },
  );
}

describe("npm run eval -- next-item --sessions N", () => {
  it.each(["-1", "1.5", "", "0"])("refuses --sessions=%j with exit 2 and the suite's usage", (value) => {
    const r = nextItem(`--sessions=${value}`);
    expect(r.stdout).toBe("");
    expect(r.status).toBe(2);
    const { error } = JSON.parse(r.stderr) as { error: { code: string; message: string; usage: string } };
    expect(error.code).toBe("bad_option");
    expect(error.message).toBe(`--sessions must be a positive integer, not ${JSON.stringify(value)}`);
    expect(error.usage).toMatch(/^protocol \(i\) on session-rec files: --train FILE --test FILE \[--sessions N\]/);
  });

  it("evaluates that many test sessions", () => {
    const r = nextItem("--sessions", "2");
    expect(r.status, r.stderr).toBe(0);
    expect((JSON.parse(r.stdout) as { testSessions: number }).testSessions).toBe(2);
  });
});

describe("npm run eval -- uci-next-purchase --cut DAY", () => {
  it.each(["2011-02-30", "2011-13-01", "2011-9-1", ""])(
    "refuses --cut=%j with exit 2 before reading any data",
    (value) => {
      const r = spawnSync(process.execPath, ["scripts/eval.ts", "uci-next-purchase", `--cut=${value}`, "--json"], {
        encoding: "utf8",
      });
      expect(r.status).toBe(2);
      const { error } = JSON.parse(r.stderr) as { error: { code: string; message: string } };
      expect(error).toMatchObject({
        code: "bad_option",
        message: `--cut must be a date (YYYY-MM-DD), not ${JSON.stringify(value)}`,
      });
    },
  );
});
