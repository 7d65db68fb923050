// The capped gzip decoder of collection request bodies (src/collect/gzip.ts), against zlib's own output.
import { constants, gzipSync } from "node:zlib";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { GzipError, GzipTooLarge, gunzip } from "../../src/collect/gzip.ts";

const text = (n: number, seed = 1) => {
  // JSON-like text with repeats (matches near and far) and noise (literals).
  let x = seed;
  const words = ["product_id", "Product Viewed", "anonymousId", "€uro", "😀", "userId", "{", "}", ",", '"'];
  let out = "";
  while (out.length < n) {
    x = (x * 1103515245 + 12345) & 0x7fffffff;
    out += x % 7 === 0 ? String.fromCharCode(32 + (x % 90)) : (words[x % words.length] as string);
  }
  return new TextEncoder().encode(out.slice(0, n));
};

const STRATEGIES = [
  { level: 0 },
  { level: 1 },
  { level: 6 },
  { level: 9 },
  { level: 6, strategy: constants.Z_FIXED },
  { level: 6, strategy: constants.Z_HUFFMAN_ONLY },
  { level: 6, strategy: constants.Z_RLE },
  { level: 6, strategy: constants.Z_FILTERED },
];

describe("gunzip", () => {
  it("decodes what zlib encodes: stored, fixed and dynamic blocks, every level and strategy", () => {
    for (const size of [0, 1, 100, 70_000, 300_000]) {
      const data = text(size, size + 7);
      for (const options of STRATEGIES) {
        expect(Buffer.from(gunzip(gzipSync(data, options), 1_000_000)).equals(Buffer.from(data))).toBe(true);
      }
    }
    const random = new Uint8Array(100_000).map((_, i) => (i * 2654435761) >>> 24);
    expect(Buffer.from(gunzip(gzipSync(random), 1_000_000)).equals(Buffer.from(random))).toBe(true);
  });

  it("decodes every member of a multi-member body, and header fields (name, comment, extra, header CRC)", () => {
    const a = text(5000, 1);
    const b = text(3000, 2);
    const both = gunzip(Buffer.concat([gzipSync(a), gzipSync(b)]), 10_000);
    expect(Buffer.from(both).equals(Buffer.concat([a, b]))).toBe(true);
    const plain = gzipSync(b);
    // FEXTRA (2 bytes of length + data), FNAME, FCOMMENT (zero-terminated), FHCRC (2 bytes, not checked here).
    const header = Buffer.from([0x1f, 0x8b, 8, 0x04 | 0x08 | 0x10 | 0x02, 0, 0, 0, 0, 0, 3]);
    const fields = Buffer.concat([Buffer.from([3, 0, 1, 2, 3]), Buffer.from("name\0comment\0"), Buffer.from([0, 0])]);
    const withFields = Buffer.concat([header, fields, plain.subarray(10)]);
    expect(Buffer.from(gunzip(withFields, 10_000)).equals(Buffer.from(b))).toBe(true);
  });

  it("stops at the cap: exactly `limit` bytes decode, one more is GzipTooLarge", () => {
    const data = new Uint8Array(50_000).fill(0x20);
    expect(gunzip(gzipSync(data), 50_000).byteLength).toBe(50_000);
    expect(() => gunzip(gzipSync(data), 49_999)).toThrow(GzipTooLarge);
    expect(() => gunzip(gzipSync(data, { level: 0 }), 49_999)).toThrow(GzipTooLarge);
    // A bomb: 64 MB of spaces in 64 KB of gzip; the decoder stops right after the cap.
    const bomb = gzipSync(new Uint8Array(64 * 1024 * 1024).fill(0x20));
    const started = performance.now();
    expect(() => gunzip(bomb, 512_000)).toThrow(GzipTooLarge);
    expect(performance.now() - started).toBeLessThan(1_000);
  });

  it("refuses what is not gzip, truncated data and checksums that do not match", () => {
    const good = gzipSync(text(10_000));
    expect(() => gunzip(new TextEncoder().encode('{"batch":[]}'), 1000)).toThrow(GzipError);
    expect(() => gunzip(good.subarray(0, good.byteLength - 1), 100_000)).toThrow(GzipError);
    expect(() => gunzip(good.subarray(0, 200), 100_000)).toThrow(GzipError);
    const badCrc = Buffer.from(good);
    badCrc[badCrc.byteLength - 8] = (badCrc[badCrc.byteLength - 8] as number) ^ 1;
    expect(() => gunzip(badCrc, 100_000)).toThrow(GzipError);
    const badSize = Buffer.from(good);
    badSize[badSize.byteLength - 1] = 1;
    expect(() => gunzip(badSize, 100_000)).toThrow(GzipError);
    expect(() => gunzip(Buffer.concat([good, Buffer.from([0])]), 100_000)).toThrow(GzipError);
  });

  it("answers any corruption with GzipError or GzipTooLarge, never another exception", () => {
    const good = gzipSync(text(4000), { level: 9 });
    const fixed = gzipSync(text(4000), { strategy: constants.Z_FIXED });
    fc.assert(
      fc.property(
        fc.constantFrom(good, fixed),
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 8 }),
        (base, edits) => {
          const bytes = Buffer.from(base);
          for (const [at, value] of edits) bytes[10 + (at % (bytes.byteLength - 10))] = value;
          try {
            gunzip(bytes, 8000);
          } catch (error) {
            expect(error instanceof GzipError || error instanceof GzipTooLarge, String(error)).toBe(true);
          }
        },
      ),
      { seed: 0x6a1b, numRuns: 2000 },
    );
  });
});
