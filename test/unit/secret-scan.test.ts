// The bundle's secret scan (scripts/lib/secret-scan.ts, run by CI after the production build).
import { describe, expect, it } from "vitest";
import { envValues, findSecrets } from "../../scripts/lib/secret-scan.ts";

describe("findSecrets", () => {
  it("finds known values, private keys and credentialed URLs — and reports rules and places, never values", () => {
    const text = [
      'const a = "sk-live-0123456789";', // 0
      "-----BEGIN RSA PRIVATE KEY-----",
      "postgres://app:hunter2pw@db.example:5432/shop",
      "redis://default:abc@cache.example",
    ].join("\n");
    const hits = findSecrets(text, [{ name: "ADMIN_KEYS", value: "sk-live-0123456789" }]);
    expect(hits.map((h) => h.rule)).toEqual(["ADMIN_KEYS", "private key", "credentialed URL", "credentialed URL"]);
    expect(hits[0]?.at).toBe(text.indexOf("sk-live"));
    expect(JSON.stringify(hits)).not.toContain("hunter2pw");
  });

  it("ignores what only looks like one: templates building a URL, URLs without a password, short values", () => {
    const dollar = "$";
    const text = `l = \`postgresql://${dollar}{u(o.user)}:${dollar}{u(o.password)}@${dollar}{u(o.host)}/db\`; x = 'https://example.com/a@b'; k='dev'`;
    expect(findSecrets(text, [{ name: "SHORT", value: "dev" }])).toEqual([]);
  });
});

describe("envValues", () => {
  it("keeps the secret variables of a .dev.vars file, quotes removed", () => {
    const text =
      'LASTMILE_ENV=development\nADMIN_KEYS="k1-abcdefgh"\nDATABASE_URL=postgres://u:p@h/d\n# comment\nUPSTASH_REDIS_REST_TOKEN=tok-123456\n';
    expect(envValues(text)).toEqual([
      { name: ".dev.vars ADMIN_KEYS", value: "k1-abcdefgh" },
      { name: ".dev.vars DATABASE_URL", value: "postgres://u:p@h/d" },
      { name: ".dev.vars UPSTASH_REDIS_REST_TOKEN", value: "tok-123456" },
    ]);
  });
});
