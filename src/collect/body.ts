// Reading a collection request's body: identity or gzip encoding, streamed under a byte cap that applies to the
// DECOMPRESSED size (a 50 KB gzip bomb that inflates to gigabytes stops at the cap, never in memory), then parsed
// as JSON whatever the Content-Type says — Segment's browser library posts JSON as text/plain to avoid CORS
// preflights, beacons send whatever the browser picks.
import { ApiError } from "../errors.ts";
import { jsonDepthExceeds } from "./json.ts";
import { MAX_JSON_DEPTH } from "./limits.ts";

export interface JsonBody {
  value: unknown;
  /** Decompressed size in bytes. */
  bytes: number;
}

/** Content types that are JSON or that clients use to carry JSON; anything else that fails to parse is 415. */
const JSON_CARRYING_TYPES = new Set(["application/json", "text/plain", "application/octet-stream", ""]);

function mediaType(contentType: string | null): string {
  return (contentType ?? "").split(";")[0]?.trim().toLowerCase() ?? "";
}

function carriesJson(contentType: string | null): boolean {
  const type = mediaType(contentType);
  return JSON_CARRYING_TYPES.has(type) || type.endsWith("+json");
}

function tooLarge(limit: number, actual: number, atLeast: boolean): ApiError {
  return new ApiError("payload_too_large", `the request body is larger than ${limit} bytes`, {
    details: atLeast ? { limit, actual, unit: "bytes", atLeast: true } : { limit, actual, unit: "bytes" },
  });
}

/** The stream to read, decompressed when the client says it is gzip. */
function decodedStream(request: Request, body: ReadableStream<Uint8Array>): ReadableStream<Uint8Array> {
  const encoding = (request.headers.get("content-encoding") ?? "").trim().toLowerCase();
  if (encoding === "" || encoding === "identity") return body;
  if (encoding === "gzip" || encoding === "x-gzip") {
    // The cast reconciles the Workers and DOM typings of the same stream (unit tests type-check under DOM).
    return body.pipeThrough(new DecompressionStream("gzip") as unknown as TransformStream<Uint8Array, Uint8Array>);
  }
  throw new ApiError("unsupported_media_type", `Content-Encoding "${encoding}" is not supported; use gzip or none`);
}

/** Reads at most `limit` bytes; one more byte is a 413 and the rest of the stream is never read. */
async function readCapped(stream: ReadableStream<Uint8Array>, limit: number): Promise<Uint8Array> {
  const reader = stream.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      total += value.byteLength;
      if (total > limit) {
        reader.cancel().catch(() => {});
        throw tooLarge(limit, total, true);
      }
      chunks.push(value);
    }
  } catch (error) {
    if (error instanceof ApiError) throw error;
    // DecompressionStream rejects a truncated or corrupt gzip stream.
    throw new ApiError("bad_request", "the body could not be decompressed as gzip", { cause: error });
  }
  const bytes = new Uint8Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return bytes;
}

/**
 * The request body's bytes, gzip-decoded when the client says so, read under `limit` (applied after
 * decompression): 413 `payload_too_large` past it, 415 for an unknown Content-Encoding, 400 for corrupt gzip.
 * An absent body is zero bytes; what that means is the caller's to say.
 */
export async function readBodyBytes(request: Request, limit: number): Promise<Uint8Array> {
  const declared = Number(request.headers.get("content-length") ?? Number.NaN);
  // Compressed or not, a body declared bigger than the cap is refused before a byte is read: gzip never makes
  // a body bigger than the cap plus a few bytes of header.
  if (Number.isFinite(declared) && declared > limit) throw tooLarge(limit, declared, false);
  if (!request.body) return new Uint8Array(0);
  return readCapped(decodedStream(request, request.body), limit);
}

/** 400 invalid_json for a parsed body nested deeper than MAX_JSON_DEPTH (docs/api.md#errors). */
export function refuseDeepJson(value: unknown): void {
  if (jsonDepthExceeds(value, MAX_JSON_DEPTH)) {
    throw new ApiError("invalid_json", `the body nests arrays and objects deeper than ${MAX_JSON_DEPTH} levels`);
  }
}

/** The bytes as UTF-8 text, or undefined when they are not UTF-8 (never U+FFFD standing in for another id). */
export function utf8Text(bytes: Uint8Array): string | undefined {
  try {
    return new TextDecoder("utf-8", { fatal: true, ignoreBOM: false }).decode(bytes);
  } catch {
    return undefined;
  }
}

export async function readJsonBody(request: Request, limit: number): Promise<JsonBody> {
  const contentType = request.headers.get("content-type");
  const bytes = await readBodyBytes(request, limit);
  if (bytes.byteLength === 0) throw new ApiError("invalid_json", "the request body is empty; send a JSON object");

  const text = utf8Text(bytes);
  if (text === undefined) {
    throw carriesJson(contentType)
      ? new ApiError("invalid_json", "the request body is not UTF-8 text")
      : unsupported(contentType);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    if (!carriesJson(contentType)) throw unsupported(contentType);
    // The parser's own message quotes the body: keep only where it failed (messages reach logs).
    const at = /position (\d+)/.exec(String((error as Error).message))?.[1];
    throw new ApiError("invalid_json", `the request body is not valid JSON${at ? ` (at character ${at})` : ""}`);
  }
  // Not checked for depth here: a batch's events are checked one by one (readEnvelope, normalize), so one too deep
  // never refuses the others.
  return { value, bytes: bytes.byteLength };
}

function unsupported(contentType: string | null): ApiError {
  return new ApiError(
    "unsupported_media_type",
    `Content-Type "${mediaType(contentType)}" is not supported: send JSON (application/json or text/plain)`,
  );
}
