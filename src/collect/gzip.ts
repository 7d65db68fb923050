// gzip decoding under an output cap (RFC 1952 members around RFC 1951 deflate data), for request bodies.
//
// Why not DecompressionStream: workerd's inflates each chunk written to it whole, into its own buffer, before a
// reader sees a byte, and applies no backpressure to the writer. One 500 KB body of a gzip bomb became ~500 MB in
// the isolate (128 MB in production) however early the reader stopped. Here the compressed body (already capped)
// is decoded into a buffer that never grows past the cap: the decoding stops at the first byte beyond it.

/** Thrown for a body that is not valid gzip: truncated, corrupt, a checksum that does not match. */
export class GzipError extends Error {
  override name = "GzipError";
}

/** Thrown when the decompressed data would be longer than the cap. */
export class GzipTooLarge extends Error {
  override name = "GzipTooLarge";
}

const MAX_BITS = 15;
const LENGTH_BASE = [
  3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258,
];
const LENGTH_EXTRA = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0];
const DIST_BASE = [
  1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145,
  8193, 12289, 16385, 24577,
];
const DIST_EXTRA = [0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13];
/** The order in which a dynamic block sends its code-length code lengths. */
const CODE_LENGTH_ORDER = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15];

/** A canonical Huffman code: how many codes of each length, and the symbols in code order. */
interface Huffman {
  counts: Uint16Array;
  symbols: Uint16Array;
}

function huffman(lengths: ArrayLike<number>, n: number): Huffman {
  const counts = new Uint16Array(MAX_BITS + 1);
  for (let s = 0; s < n; s++) {
    const len = lengths[s] as number;
    counts[len] = (counts[len] as number) + 1;
  }
  counts[0] = 0;
  // Over-subscribed lengths describe no prefix code; an incomplete code is decoded until a missing code turns up.
  let left = 1;
  for (let len = 1; len <= MAX_BITS; len++) {
    left = (left << 1) - (counts[len] as number);
    if (left < 0) throw new GzipError("an over-subscribed Huffman code");
  }
  const offsets = new Uint16Array(MAX_BITS + 1);
  for (let len = 1; len < MAX_BITS; len++) offsets[len + 1] = (offsets[len] as number) + (counts[len] as number);
  const symbols = new Uint16Array(n);
  for (let s = 0; s < n; s++) {
    const len = lengths[s] as number;
    if (len === 0) continue;
    const at = offsets[len] as number;
    symbols[at] = s;
    offsets[len] = at + 1;
  }
  return { counts, symbols };
}

const FIXED = (() => {
  const lengths = new Uint8Array(288);
  lengths.fill(8, 0, 144);
  lengths.fill(9, 144, 256);
  lengths.fill(7, 256, 280);
  lengths.fill(8, 280, 288);
  return { literals: huffman(lengths, 288), distances: huffman(new Uint8Array(30).fill(5), 30) };
})();

const CRC_TABLE = (() => {
  const table = new Int32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c;
  }
  return table;
})();

function crc32(bytes: Uint8Array, start: number, end: number): number {
  let crc = -1;
  for (let i = start; i < end; i++) crc = (CRC_TABLE[(crc ^ (bytes[i] as number)) & 0xff] as number) ^ (crc >>> 8);
  return (crc ^ -1) >>> 0;
}

/** Decodes one gzip body, which may hold several members (RFC 1952 §2.2), into at most `limit` bytes. */
class Gunzip {
  private pos = 0;
  private bitBuffer = 0;
  private bitCount = 0;
  private out: Uint8Array;
  private length = 0;
  private readonly input: Uint8Array;
  private readonly limit: number;

  constructor(input: Uint8Array, limit: number) {
    this.input = input;
    this.limit = limit;
    // Grown by doubling up to the cap: a small body costs a small buffer.
    this.out = new Uint8Array(Math.min(limit, Math.max(64 * 1024, input.byteLength * 4)));
  }

  run(): Uint8Array {
    do this.member();
    while (this.pos < this.input.byteLength);
    return this.out.subarray(0, this.length);
  }

  private byte(): number {
    if (this.pos >= this.input.byteLength) throw new GzipError("the gzip data ends early");
    return this.input[this.pos++] as number;
  }

  private member(): void {
    if (this.byte() !== 0x1f || this.byte() !== 0x8b) throw new GzipError("not gzip data");
    if (this.byte() !== 8) throw new GzipError("a gzip compression method other than deflate");
    const flags = this.byte();
    if (flags & 0xe0) throw new GzipError("reserved gzip header flags set");
    this.pos += 6; // MTIME, XFL, OS
    if (flags & 0x04) {
      const extra = this.byte() | (this.byte() << 8);
      this.pos += extra;
    }
    if (flags & 0x08) while (this.byte() !== 0);
    if (flags & 0x10) while (this.byte() !== 0);
    if (flags & 0x02) this.pos += 2;
    if (this.pos > this.input.byteLength) throw new GzipError("the gzip data ends early");

    const start = this.length;
    this.bitBuffer = 0;
    this.bitCount = 0;
    let last: number;
    do {
      last = this.bits(1);
      const type = this.bits(2);
      if (type === 0) this.stored();
      else if (type === 1) this.codes(FIXED.literals, FIXED.distances);
      else if (type === 2) this.dynamic();
      else throw new GzipError("an invalid deflate block type");
    } while (!last);
    // The trailer starts on the next byte boundary: unused bits of the last byte are dropped.
    this.bitBuffer = 0;
    this.bitCount = 0;
    const crc = (this.byte() | (this.byte() << 8) | (this.byte() << 16) | (this.byte() << 24)) >>> 0;
    const size = (this.byte() | (this.byte() << 8) | (this.byte() << 16) | (this.byte() << 24)) >>> 0;
    if (crc !== crc32(this.out, start, this.length)) throw new GzipError("the gzip checksum does not match");
    if (size !== (this.length - start) >>> 0) throw new GzipError("the gzip length does not match");
  }

  private bits(n: number): number {
    while (this.bitCount < n) {
      this.bitBuffer |= this.byte() << this.bitCount;
      this.bitCount += 8;
    }
    const value = this.bitBuffer & ((1 << n) - 1);
    this.bitBuffer >>>= n;
    this.bitCount -= n;
    return value;
  }

  /** Room for `n` more output bytes, or GzipTooLarge past the cap. */
  private reserve(n: number): void {
    const needed = this.length + n;
    if (needed > this.limit) throw new GzipTooLarge();
    if (needed <= this.out.byteLength) return;
    const grown = new Uint8Array(Math.min(this.limit, Math.max(needed, this.out.byteLength * 2)));
    grown.set(this.out.subarray(0, this.length));
    this.out = grown;
  }

  private stored(): void {
    this.bitBuffer = 0;
    this.bitCount = 0;
    const len = this.byte() | (this.byte() << 8);
    const nlen = this.byte() | (this.byte() << 8);
    if (len !== (~nlen & 0xffff)) throw new GzipError("a stored deflate block's length is corrupt");
    if (this.pos + len > this.input.byteLength) throw new GzipError("the gzip data ends early");
    this.reserve(len);
    this.out.set(this.input.subarray(this.pos, this.pos + len), this.length);
    this.length += len;
    this.pos += len;
  }

  private decode(h: Huffman): number {
    let code = 0;
    let first = 0;
    let index = 0;
    for (let len = 1; len <= MAX_BITS; len++) {
      code |= this.bits(1);
      const count = h.counts[len] as number;
      if (code - first < count) return h.symbols[index + code - first] as number;
      index += count;
      first = (first + count) << 1;
      code <<= 1;
    }
    throw new GzipError("an invalid Huffman code");
  }

  private codes(literals: Huffman, distances: Huffman): void {
    for (;;) {
      let symbol = this.decode(literals);
      if (symbol < 256) {
        this.reserve(1);
        this.out[this.length++] = symbol;
        continue;
      }
      if (symbol === 256) return;
      symbol -= 257;
      if (symbol >= 29) throw new GzipError("an invalid deflate length code");
      const len = (LENGTH_BASE[symbol] as number) + this.bits(LENGTH_EXTRA[symbol] as number);
      const d = this.decode(distances);
      if (d >= 30) throw new GzipError("an invalid deflate distance code");
      const dist = (DIST_BASE[d] as number) + this.bits(DIST_EXTRA[d] as number);
      if (dist > this.length) throw new GzipError("a deflate distance back past the start");
      this.reserve(len);
      const out = this.out;
      for (let i = 0; i < len; i++, this.length++) out[this.length] = out[this.length - dist] as number;
    }
  }

  private dynamic(): void {
    const nlen = this.bits(5) + 257;
    const ndist = this.bits(5) + 1;
    const ncode = this.bits(4) + 4;
    if (nlen > 286 || ndist > 30) throw new GzipError("too many deflate codes");
    const lengths = new Uint8Array(320);
    for (let i = 0; i < ncode; i++) lengths[CODE_LENGTH_ORDER[i] as number] = this.bits(3);
    const lencode = huffman(lengths, 19);
    lengths.fill(0);
    for (let i = 0; i < nlen + ndist; ) {
      const symbol = this.decode(lencode);
      if (symbol < 16) {
        lengths[i++] = symbol;
        continue;
      }
      let value = 0;
      let repeat: number;
      if (symbol === 16) {
        if (i === 0) throw new GzipError("a deflate length repeat with nothing to repeat");
        value = lengths[i - 1] as number;
        repeat = 3 + this.bits(2);
      } else if (symbol === 17) repeat = 3 + this.bits(3);
      else repeat = 11 + this.bits(7);
      if (i + repeat > nlen + ndist) throw new GzipError("too many deflate code lengths");
      lengths.fill(value, i, i + repeat);
      i += repeat;
    }
    if (lengths[256] === 0) throw new GzipError("a deflate block without an end code");
    this.codes(huffman(lengths, nlen), huffman(lengths.subarray(nlen), ndist));
  }
}

/**
 * The decompressed bytes of a gzip body (every member of it), at most `limit` of them: GzipTooLarge at the first byte
 * beyond, GzipError for anything that is not valid gzip (checksums and lengths checked).
 */
export function gunzip(input: Uint8Array, limit: number): Uint8Array {
  return new Gunzip(input, limit).run();
}
