// Key comparison (src/auth.ts): correctness of the constant-time helper and of matching a presented key against a
// list of configured keys. How long a comparison takes is not asserted here (no timing assertions); the helper's
// shape — every byte visited, the length folded in, digests of equal length — is what keeps it constant-time.
import { describe, expect, it } from "vitest";
import { constantTimeEqual, matchesAnyKey } from "../../src/auth.ts";

const bytes = (...values: number[]) => new Uint8Array(values);

describe("constantTimeEqual", () => {
  it("is true for equal arrays, including empty ones", () => {
    expect(constantTimeEqual(bytes(), bytes())).toBe(true);
    expect(constantTimeEqual(bytes(1, 2, 3), bytes(1, 2, 3))).toBe(true);
    const digest = new Uint8Array(32).map((_, i) => (i * 37) & 0xff);
    expect(constantTimeEqual(digest, digest.slice())).toBe(true);
  });

  it("is false when any single byte differs, in any position and any bit", () => {
    const base = new Uint8Array(32).map((_, i) => i);
    for (let i = 0; i < base.length; i++) {
      for (let bit = 0; bit < 8; bit++) {
        const other = base.slice();
        other[i] = (other[i] ?? 0) ^ (1 << bit);
        expect(constantTimeEqual(base, other), `byte ${i} bit ${bit}`).toBe(false);
      }
    }
  });

  it("is false for different lengths, also when one is a prefix of the other or padded with zeros", () => {
    expect(constantTimeEqual(bytes(1, 2, 3), bytes(1, 2))).toBe(false);
    expect(constantTimeEqual(bytes(1, 2), bytes(1, 2, 3))).toBe(false);
    expect(constantTimeEqual(bytes(), bytes(0))).toBe(false);
    // A missing byte must not count as a zero byte.
    expect(constantTimeEqual(bytes(1, 2), bytes(1, 2, 0))).toBe(false);
    expect(constantTimeEqual(bytes(0, 0), bytes(0, 0, 0, 0))).toBe(false);
  });
});

describe("matchesAnyKey", () => {
  it("matches a configured key exactly, whichever position it has in the list", async () => {
    expect(await matchesAnyKey("k-new", ["k-old", "k-new"])).toBe(true);
    expect(await matchesAnyKey("k-old", ["k-old", "k-new"])).toBe(true);
  });

  it("refuses near misses, prefixes, extensions, case changes and empty lists", async () => {
    const keys = ["admin-key-0123456789"];
    for (const guess of [
      "admin-key-012345678",
      "admin-key-01234567890",
      "ADMIN-KEY-0123456789",
      "admin-key-0123456788",
      " admin-key-0123456789",
      "",
    ]) {
      expect(await matchesAnyKey(guess, keys), JSON.stringify(guess)).toBe(false);
    }
    expect(await matchesAnyKey("anything", [])).toBe(false);
    expect(await matchesAnyKey("", [])).toBe(false);
  });
});
