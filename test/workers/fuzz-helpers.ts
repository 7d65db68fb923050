// Helpers of the property-based Worker tests (test/workers/fuzz-*.test.ts): requests of any shape to the real entry
// point, the check every answer must pass (a 2xx, or a 4xx with the one JSON error shape — never a 5xx), bodies that
// arrive slowly, and hostile query strings and path segments.
import { exports } from "cloudflare:workers";
import fc from "fast-check";
import { expect } from "vitest";
import { HOSTILE_KEYS, hostileString } from "../support/fuzz.ts";
import { BASE, type ErrorJson } from "./collect-helpers.ts";

export interface Answer {
  status: number;
  headers: Headers;
  /** The parsed JSON body (null for an empty one). */
  body: unknown;
}

/** Sends a request to the Worker's real entry point. */
export function send(path: string, init: RequestInit = {}): Promise<Response> {
  return exports.default.fetch(new Request(`${BASE}${path}`, init));
}

/**
 * The API's promise for any input: a 2xx, or a 4xx whose body is `{ error: { code, message, requestId } }` with a
 * string code and the response's request id. Never a 5xx. Returns the parsed answer for further checks.
 */
export async function answered(response: Response | Promise<Response>, what = ""): Promise<Answer> {
  const res = await response;
  const text = await res.text();
  const label = `${what} → ${res.status} ${text.slice(0, 300)}`;
  expect(res.status, label).toBeGreaterThanOrEqual(200);
  expect(res.status, label).toBeLessThan(500);
  expect(res.status >= 300 && res.status < 400, label).toBe(false);
  const body = text === "" ? null : (JSON.parse(text) as unknown);
  if (res.status >= 400) {
    const error = (body as ErrorJson).error;
    expect(typeof error?.code, label).toBe("string");
    expect(typeof error.message, label).toBe("string");
    expect(error.requestId, label).toBe(res.headers.get("x-request-id"));
  }
  return { status: res.status, headers: res.headers, body };
}

/** The error code of a 4xx answer (undefined for a 2xx). */
export const codeOf = (a: Answer): string | undefined =>
  a.status >= 400 ? (a.body as ErrorJson).error.code : undefined;

/** A body that arrives in `pieces`, one every `pauseMs` (a slow client on a bad connection). */
export function slowBody(bytes: Uint8Array, pieces: number, pauseMs: number): ReadableStream<Uint8Array> {
  const size = Math.ceil(bytes.byteLength / pieces);
  let next = 0;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      await new Promise((r) => setTimeout(r, pauseMs));
      if (next >= bytes.byteLength) {
        controller.close();
        return;
      }
      controller.enqueue(bytes.slice(next, next + size));
      next += size;
    },
  });
}

/** Percent-encoding of arbitrary bytes: invalid UTF-8 and encoded lone surrogates included. */
const encodedBytes = fc
  .uint8Array({ maxLength: 12 })
  .map((bytes) => [...bytes].map((b) => `%${b.toString(16).padStart(2, "0").toUpperCase()}`).join(""));

/** A path segment or query value as a client may put it on the wire. */
export const wireValue = fc.oneof(
  hostileString
    .filter((s) => s.length < 3000)
    .map((s) => {
      try {
        return encodeURIComponent(s);
      } catch {
        return "%ED%A0%80"; // a lone surrogate, as its UTF-8 would be if it had one
      }
    }),
  encodedBytes,
  fc.constantFrom("%ED%A0%80", "%FF%FE", "%", "%zz", "%00", "..", ".", "a%2Fb", "+", "%20", ""),
);

/** A query string with some of `keys`, hostile ones and repeats, every value a wire value. */
export function queryString(keys: readonly string[]): fc.Arbitrary<string> {
  return fc
    .array(fc.tuple(fc.constantFrom(...keys, ...HOSTILE_KEYS, "x"), wireValue), { maxLength: 8 })
    .map((pairs) => (pairs.length ? `?${pairs.map(([k, v]) => `${k}=${v}`).join("&")}` : ""));
}
