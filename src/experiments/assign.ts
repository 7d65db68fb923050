// Deterministic, sticky, storage-free assignment of visitors to experiment arms (docs/experiments.md#assignment).
// A visitor's arm is a pure function of the experiment id, the arm layout (holdout, variant order and weights) and
// the visitor's unit: nothing is stored, every isolate and every runtime computes the same arm. Synchronous and
// cheap (one pass over the key's UTF-8 bytes), no Web Crypto, no Node built-ins.

import { type Experiment, HOLDOUT_ARM, INTERLEAVED_ARM } from "./config.ts";

const TWO_32 = 4294967296;
const TWO_53 = 9007199254740992;

/** (a × b) mod 2^64 of two 64-bit numbers given as [high, low] 32-bit words. */
function mul64(ah: number, al: number, bh: number, bl: number): [number, number] {
  const a0 = al & 0xffff;
  const a1 = al >>> 16;
  const b0 = bl & 0xffff;
  const b1 = bl >>> 16;
  const mid = a0 * b1 + a1 * b0; // < 2^33
  const low = a0 * b0 + (mid % 65536) * 65536; // < 2^33
  const lo = low >>> 0;
  const carry = (low - lo) / TWO_32;
  // Every term is an exact integer below 2^35 in magnitude; >>> 0 reduces the sum mod 2^32.
  const hi = (a1 * b1 + Math.floor(mid / 65536) + carry + Math.imul(ah, bl) + Math.imul(al, bh)) >>> 0;
  return [hi, lo];
}

/**
 * FNV-1a 64 (offset basis 0xcbf29ce484222325, prime 0x100000001b3) over the UTF-8 bytes of `text` (lone surrogates
 * as U+FFFD, as TextEncoder does), as [high, low] 32-bit words.
 */
export function fnv1a64(text: string): [number, number] {
  let hi = 0xcbf29ce4;
  let lo = 0x84222325;
  const eat = (byte: number) => {
    lo = (lo ^ byte) >>> 0;
    // × 0x100000001b3 = × 0x1b3 + × 2^40; the 2^40 term adds lo << 8 to the high word.
    const t = lo * 0x1b3; // < 2^41
    const nlo = t >>> 0;
    hi = (hi * 0x1b3 + (t - nlo) / TWO_32 + ((lo << 8) >>> 0)) >>> 0;
    lo = nlo;
  };
  for (let i = 0; i < text.length; i++) {
    let c = text.charCodeAt(i);
    if (c < 0x80) eat(c);
    else if (c < 0x800) {
      eat(0xc0 | (c >>> 6));
      eat(0x80 | (c & 0x3f));
    } else {
      if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length) {
        const d = text.charCodeAt(i + 1);
        if (d >= 0xdc00 && d <= 0xdfff) {
          const cp = ((c - 0xd800) << 10) + (d - 0xdc00) + 0x10000;
          eat(0xf0 | (cp >>> 18));
          eat(0x80 | ((cp >>> 12) & 0x3f));
          eat(0x80 | ((cp >>> 6) & 0x3f));
          eat(0x80 | (cp & 0x3f));
          i++;
          continue;
        }
      }
      if (c >= 0xd800 && c <= 0xdfff) c = 0xfffd;
      eat(0xe0 | (c >>> 12));
      eat(0x80 | ((c >>> 6) & 0x3f));
      eat(0x80 | (c & 0x3f));
    }
  }
  return [hi, lo];
}

/**
 * MurmurHash3's 64-bit finaliser (fmix64): every input bit affects every output bit. FNV-1a alone mixes a key's
 * last bytes into the low and middle bits only, and the bucket is read from the high bits.
 */
export function fmix64(hi: number, lo: number): [number, number] {
  lo = (lo ^ (hi >>> 1)) >>> 0; // k ^= k >>> 33
  [hi, lo] = mul64(hi, lo, 0xff51afd7, 0xed558ccd);
  lo = (lo ^ (hi >>> 1)) >>> 0;
  [hi, lo] = mul64(hi, lo, 0xc4ceb9fe, 0x1a85ec53);
  lo = (lo ^ (hi >>> 1)) >>> 0;
  return [hi, lo];
}

/** The high 53 bits of fmix64(fnv1a64(key)) as a number in [0, 1). */
export function unitInterval(key: string): number {
  const [h, l] = fnv1a64(key);
  const [hi, lo] = fmix64(h, l);
  return (hi * 2097152 + (lo >>> 11)) / TWO_53;
}

/**
 * A visitor's position in [0, 1) for one experiment: the hash of `experimentId + "\u0000" + unit`. Depends on
 * nothing else (not the config version, not the other experiments), so it is the same in every version of the
 * document; different experiments hash different keys, so a visitor's positions in two experiments are independent.
 *
 * `unit` is the visitor's stable id; the caller decides which. The ranking path passes one per person: the anonymous
 * id the person was first seen with (not the user id a login adds later), so logging in keeps the arm and every device
 * of a user gets the same one (serve.ts assignmentUnit).
 */
export function bucket(experimentId: string, unit: string): number {
  return unitInterval(`${experimentId}\u0000${unit}`);
}

export interface Assignment {
  /** `holdout`, `interleaved` (interleave mode) or a variant id. */
  arm: string;
  /** The visitor's position in [0, 1) (bucket()). */
  bucket: number;
}

/**
 * The arms of an experiment and their shares of traffic, in the order they lay out [0, 1): the holdout first
 * [0, holdout) (only when holdout > 0), then the variants in document order, each (1 − holdout) × weight / Σ weights
 * (split), or one `interleaved` arm with the rest (interleave).
 */
export function armShares(experiment: Experiment): { arm: string; share: number }[] {
  const h = experiment.holdout;
  const arms: { arm: string; share: number }[] = h > 0 ? [{ arm: HOLDOUT_ARM, share: h }] : [];
  if (experiment.mode === "interleave") {
    arms.push({ arm: INTERLEAVED_ARM, share: 1 - h });
    return arms;
  }
  const total = experiment.variants.reduce((s, v) => s + v.weight, 0);
  for (const v of experiment.variants) arms.push({ arm: v.id, share: ((1 - h) * v.weight) / total });
  return arms;
}

/**
 * The arm of `unit` in `experiment`: bucket < holdout → `holdout`; otherwise, in split mode, the variant whose
 * slice of [holdout, 1) holds the bucket (slices in variant order, proportional to weight); in interleave mode,
 * `interleaved`. Sticky as long as the experiment id, the holdout and the variants' order and weights stay the same;
 * changing any of these moves visitors between arms (start a new experiment id instead).
 */
export function assign(experiment: Experiment, unit: string): Assignment {
  const b = bucket(experiment.id, unit);
  const h = experiment.holdout;
  if (b < h) return { arm: HOLDOUT_ARM, bucket: b };
  if (experiment.mode === "interleave") return { arm: INTERLEAVED_ARM, bucket: b };
  const variants = experiment.variants;
  const total = variants.reduce((s, v) => s + v.weight, 0);
  let cumulative = 0;
  for (let i = 0; i < variants.length - 1; i++) {
    const v = variants[i] as (typeof variants)[number];
    cumulative += v.weight;
    if (b < h + ((1 - h) * cumulative) / total) return { arm: v.id, bucket: b };
  }
  // The last variant takes the rest of [0, 1), whatever the rounding of the sums above.
  return { arm: (variants[variants.length - 1] as (typeof variants)[number]).id, bucket: b };
}

/**
 * A 32-bit seed for team-draft interleaving (interleave.ts) from a key: the answer's recId (fresh coin flips for
 * every list) or the visitor's unit plus the placement (the same list on every reload). Hashed in its own domain,
 * so the seed of a unit says nothing about that unit's buckets.
 */
export function interleaveSeed(key: string): number {
  const [h, l] = fnv1a64(`interleave\u0000${key}`);
  return fmix64(h, l)[0];
}
