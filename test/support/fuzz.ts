// Arbitraries and checks shared by the property-based tests of the API's inputs (test/unit/fuzz-*.test.ts in Node,
// test/workers/fuzz-*.test.ts in workerd): hostile strings (unicode, lone surrogates, NUL, huge), hostile keys
// (`__proto__`, `constructor`, …), numbers JSON cannot hold (NaN, ±Infinity, -0), values of every shape, JSON
// texts built from them, and a check that nothing reached the shared prototypes. Pure: fast-check only.
import fc from "fast-check";
import { afterAll, expect } from "vitest";
import { ApiError } from "../../src/errors.ts";

/** Keys that reach a prototype when code assigns them carelessly, and names of Object.prototype's members. */
export const HOSTILE_KEYS = [
  "__proto__",
  "constructor",
  "prototype",
  "toString",
  "valueOf",
  "hasOwnProperty",
  "__defineGetter__",
  "isPrototypeOf",
  "polluted",
] as const;

/** One UTF-16 code unit of a surrogate half: a string holding it alone is not valid UTF-16. */
const loneSurrogate = fc.integer({ min: 0xd800, max: 0xdfff }).map((c) => String.fromCharCode(c));

/** Strings that trip parsers and validators: empty, blank, NUL, BOM, look-alike numbers and dates, markup. */
const trickyStrings = fc.constantFrom(
  "",
  " ",
  "\u0000",
  "a\u0000b",
  "\uFEFF",
  "\uFFFD",
  "NaN",
  "Infinity",
  "-Infinity",
  "-0",
  "1e309",
  "0x10",
  "true",
  "null",
  "undefined",
  "[object Object]",
  "2026-13-45T25:61:61Z",
  "2026-11-26T19:17:05.192Z",
  "1970-01-01",
  "+275760-09-13T00:00:00Z",
  "<script>alert(1)</script>",
  "../../etc/passwd",
  "%00%ff",
  "\\u0000",
  "𝓁𝒶𝓈𝓉𝓂𝒾𝓁𝑒",
  "e\u0301\u0301\u0301",
  ...HOSTILE_KEYS,
);

/** Strings of any code points, lone surrogates included. */
export const unicodeString = (maxLength = 40) =>
  fc.string({ unit: fc.oneof(fc.string({ unit: "binary", minLength: 1, maxLength: 1 }), loneSurrogate), maxLength });

/** Strings up to a few hundred characters: every kind above, none near a size limit. */
export const boundedString = fc.oneof(
  { weight: 3, arbitrary: fc.string() },
  { weight: 3, arbitrary: unicodeString() },
  { weight: 3, arbitrary: trickyStrings },
);

/** Strings that also reach past the size limits (an id over 256 characters, an event over 32 KB). */
export const hostileString = fc.oneof(
  { weight: 9, arbitrary: boundedString },
  { weight: 1, arbitrary: fc.nat({ max: 40_000 }).map((n) => "x".repeat(n)) },
);

export const hostileKey = fc.oneof(
  { weight: 2, arbitrary: fc.constantFrom(...HOSTILE_KEYS) },
  { weight: 3, arbitrary: fc.string({ maxLength: 12 }) },
  { weight: 1, arbitrary: unicodeString(8) },
);

/** Numbers at and beyond what JSON and the validators expect. */
export const hostileNumber = fc.oneof(
  fc.constantFrom(
    Number.NaN,
    Number.POSITIVE_INFINITY,
    Number.NEGATIVE_INFINITY,
    -0,
    Number.MAX_VALUE,
    Number.MIN_VALUE,
    Number.MAX_SAFE_INTEGER + 2,
    -1,
    0,
    1,
    0.5,
    1e21,
  ),
  fc.integer(),
  fc.double(),
);

function valuesOf(strings: fc.Arbitrary<string>): fc.Arbitrary<unknown> {
  const leaf = fc.oneof(strings, hostileNumber, fc.boolean(), fc.constant(null), fc.constant(undefined));
  return fc.letrec<{ value: unknown }>((tie) => ({
    value: fc.oneof(
      { depthSize: "small", withCrossShrink: true },
      { weight: 4, arbitrary: leaf },
      { weight: 1, arbitrary: fc.array(tie("value"), { maxLength: 6 }) },
      { weight: 1, arbitrary: fc.dictionary(hostileKey, tie("value"), { maxKeys: 6 }) },
    ),
  })).value;
}

/**
 * Values of every shape an in-memory caller can pass: strings, numbers JSON cannot hold, booleans, null,
 * undefined, arrays and objects whose own keys include `__proto__` and the names of Object.prototype's members.
 */
export const hostileValue = valuesOf(hostileString);

/** The same without strings near a size limit: content of events and documents that are otherwise valid. */
export const compactValue = valuesOf(boundedString);

/** Whether a string survives UTF-8 (well-formed UTF-16: no unpaired surrogate), checked by encoding it. */
export const survivesUtf8 = (s: string): boolean => new TextDecoder().decode(new TextEncoder().encode(s)) === s;

/** What JSON.parse can make of a hostile value (NaN and ±Infinity become null, undefined disappears). */
export const jsonOf = (value: unknown): unknown => JSON.parse(JSON.stringify(value) ?? "null");

/** A JSON-parsed hostile value, own `__proto__` keys included (JSON.parse creates them as plain properties). */
export const hostileJson = hostileValue.map(jsonOf);
export const compactJson = compactValue.map(jsonOf);

/** A value as an in-memory caller passes it, as JSON.parse gives it back, or any value at all. */
export const asGivenOrParsed = (arb: fc.Arbitrary<unknown>): fc.Arbitrary<unknown> =>
  fc.oneof(arb, arb.map(jsonOf), hostileValue);

/** An object whose fields are `fields` (each valid or not) plus hostile extra keys. */
export function objectWith(fields: Record<string, fc.Arbitrary<unknown>>): fc.Arbitrary<Record<string, unknown>> {
  return fc
    .tuple(fc.record(fields, { requiredKeys: [] }), fc.dictionary(hostileKey, hostileValue, { maxKeys: 3 }))
    .map(([known, extra]) => {
      const out: Record<string, unknown> = {};
      for (const [k, v] of [...Object.entries(extra), ...Object.entries(known)]) {
        Object.defineProperty(out, k, { value: v, enumerable: true, writable: true, configurable: true });
      }
      return out;
    });
}

/** `depth` nested arrays (`[[[…]]]`) or objects (`{"a":{"a":…}}`) as JSON text: no recursion to build or print. */
export function deepJsonText(depth: number, kind: "array" | "object" = "array"): string {
  return kind === "array"
    ? `${"[".repeat(depth)}${"]".repeat(depth)}`
    : `${'{"a":'.repeat(depth)}1${"}".repeat(depth)}`;
}

/** JSON texts that do not parse. */
export const malformedJsonText = fc.oneof(
  fc.constantFrom(
    "",
    " ",
    "{",
    "}",
    "[",
    '{"a":}',
    '{"a":1,}',
    "[1,]",
    "{'a':1}",
    "NaN",
    "Infinity",
    '{"a":NaN}',
    '{"a":Infinity}',
    '{"a":-Infinity}',
    "undefined",
    '{"a":1}}',
    '{"a":"\\x00"}',
    '"\\ud800',
    "\u0000",
    "\uFEFF",
    '{"batch":[',
  ),
  fc.string().filter((s) => {
    try {
      JSON.parse(s);
      return false;
    } catch {
      return true;
    }
  }),
  fc.json().map((s) => `${s}}`),
);

/** Names of the shared prototypes' own properties, to compare before and after a run. */
export function prototypeSnapshot(): string[] {
  const protos = [Object.prototype, Array.prototype, Function.prototype, String.prototype, Number.prototype];
  return protos.map((p) => Reflect.ownKeys(p).map(String).sort().join(",")) as string[];
}

/** Whether anything reached the shared prototypes since `before` (a prototypeSnapshot()). */
export function polluted(before: string[]): string | null {
  const probe = {} as Record<string, unknown>;
  for (const key of HOSTILE_KEYS) {
    if (key !== "__proto__" && !Object.hasOwn(Object.prototype, key) && probe[key] !== undefined) {
      return `Object.prototype.${key} is set`;
    }
  }
  const after = prototypeSnapshot();
  const changed = after.findIndex((names, i) => names !== before[i]);
  return changed === -1 ? null : `prototype ${changed} gained or lost properties`;
}

/** The API's promise for bad input: a value, or an ApiError whose status is a 4xx. Anything else fails the property. */
export async function valueOr4xx<T>(
  run: () => T | Promise<T>,
): Promise<{ ok: true; value: T } | { ok: false; error: ApiError }> {
  let value: T;
  try {
    value = await run();
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    if (error.status < 400 || error.status > 499) throw new Error(`${error.code} (${error.status}): ${error.message}`);
    return { ok: false, error };
  }
  return { ok: true, value };
}

/** Fails the test file if anything reached a shared prototype while its tests ran. */
export function checkPrototypesAfterAll(): void {
  const before = prototypeSnapshot();
  afterAll(() => {
    expect(polluted(before)).toBeNull();
  });
}
