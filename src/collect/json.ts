// JSON helpers for collection: size as UTF-8 bytes without allocating, canonical JSON for content hashes, and
// the plain-object test the validators use.

export type JsonObject = Record<string, unknown>;

/** A JSON object (not an array, not null). */
export function isObject(value: unknown): value is JsonObject {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

const UNPAIRED_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/**
 * Whether a string is well-formed UTF-16: no surrogate without its pair. An ill-formed one has no UTF-8 form; where
 * it is written as UTF-8 (Durable Object names, SQLite text) the surrogate becomes U+FFFD, so two ids become one.
 */
export function isWellFormed(text: string): boolean {
  return !UNPAIRED_SURROGATE.test(text);
}

/** The UTF-8 length of a string, counted rather than encoded (events are measured by the thousand). */
export function utf8Length(text: string): number {
  let bytes = 0;
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code < 0x80) bytes += 1;
    else if (code < 0x800) bytes += 2;
    else if (code >= 0xd800 && code <= 0xdbff && i + 1 < text.length) {
      const next = text.charCodeAt(i + 1);
      if (next >= 0xdc00 && next <= 0xdfff) {
        // A surrogate pair: one 4-byte code point.
        bytes += 4;
        i++;
      } else bytes += 3;
    } else bytes += 3;
  }
  return bytes;
}

/** The size of a value as JSON, in UTF-8 bytes. */
export function jsonSize(value: unknown): number {
  return utf8Length(JSON.stringify(value) ?? "");
}

/**
 * Whether a parsed JSON value nests arrays and objects deeper than `max` levels. The walk stops at depth `max + 1`,
 * so it never recurses deeper than that however deep the value is (JSON.parse itself parses any depth without
 * recursion): safe to run first on a value that would overflow the stack of anything else that walks it. Visits
 * each array element and object value once; on a parsed request body several times faster than scanning its text.
 */
export function jsonDepthExceeds(value: unknown, max: number): boolean {
  if (typeof value !== "object" || value === null) return false;
  if (max <= 0) return true;
  if (Array.isArray(value)) {
    for (const item of value) if (jsonDepthExceeds(item, max - 1)) return true;
    return false;
  }
  for (const key in value) {
    if (jsonDepthExceeds((value as JsonObject)[key], max - 1)) return true;
  }
  return false;
}

/**
 * JSON of a value whose arrays and objects past `max` levels are replaced by the string `cut` (recursion bounded by
 * `max`): what can be kept of a value too deep for JSON.stringify to walk safely.
 */
export function jsonCutAt(value: unknown, max: number, cut = "…"): string {
  if (typeof value !== "object" || value === null) return JSON.stringify(value) ?? "null";
  if (max <= 0) return JSON.stringify(cut);
  if (Array.isArray(value)) return `[${value.map((v) => jsonCutAt(v ?? null, max - 1, cut)).join(",")}]`;
  const parts: string[] = [];
  for (const key in value) {
    const v = (value as JsonObject)[key];
    if (v !== undefined) parts.push(`${JSON.stringify(key)}:${jsonCutAt(v, max - 1, cut)}`);
  }
  return `{${parts.join(",")}}`;
}

/**
 * JSON with object keys sorted at every depth, so two payloads that differ only in key order (a client that
 * rebuilds its object on retry) serialise identically.
 */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map((v) => canonicalJson(v ?? null)).join(",")}]`;
  if (isObject(value)) {
    const parts: string[] = [];
    for (const key of Object.keys(value).sort()) {
      const v = value[key];
      if (v === undefined) continue;
      parts.push(`${JSON.stringify(key)}:${canonicalJson(v)}`);
    }
    return `{${parts.join(",")}}`;
  }
  return JSON.stringify(value) ?? "null";
}

/**
 * A JSON text cut short, ended where its last object member or array element ended: everything after the last `{`,
 * `[` or `,` outside a string goes. What a cut leaves unfinished at the end (a string without its closing quote, a
 * number without what follows it) could be part of an id, of which a search for the whole value would miss the rest.
 */
export function toLastMember(cut: string): string {
  let end = 0;
  let inString = false;
  for (let i = 0; i < cut.length; i++) {
    const c = cut.charCodeAt(i);
    if (inString) {
      if (c === 0x5c)
        i++; // a backslash escapes the next character
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x7b || c === 0x5b || c === 0x2c) end = i + 1; // { [ ,
  }
  return cut.slice(0, end);
}

/** The first `maxBytes` of a string's UTF-8, cut on a character boundary. */
export function truncateUtf8(text: string, maxBytes: number): string {
  if (utf8Length(text) <= maxBytes) return text;
  const bytes = new TextEncoder().encode(text).subarray(0, maxBytes);
  // A cut through a multi-byte character decodes to U+FFFD at the end: drop it.
  return new TextDecoder().decode(bytes).replace(/\uFFFD+$/, "");
}
