// Reading a collection request's body: identity or gzip encoding, read under a byte cap that applies to the
// DECOMPRESSED size, then parsed as JSON whatever the Content-Type says — Segment's browser library posts JSON as
// text/plain to avoid CORS preflights, beacons send whatever the browser picks. A gzip body is read whole under
// the cap plus GZIP_SLACK_BYTES (compressed) and decoded by src/collect/gzip.ts into a buffer that never grows past
// the cap: a gzip bomb costs the cap, never what it would inflate to.
import { ApiError } from "../errors.ts";
import { GzipError, GzipTooLarge, gunzip } from "./gzip.ts";
import { jsonDepthExceeds } from "./json.ts";
import { GZIP_SLACK_BYTES, MAX_JSON_DEPTH } from "./limits.ts";

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

/** Whether the body is gzip (true) or identity (false), from Content-Encoding; 415 for any other encoding. */
function isGzip(request: Request): boolean {
  const encoding = (request.headers.get("content-encoding") ?? "").trim().toLowerCase();
  if (encoding === "" || encoding === "identity") return false;
  if (encoding === "gzip" || encoding === "x-gzip") return true;
  throw new ApiError("unsupported_media_type", `Content-Encoding "${encoding}" is not supported; use gzip or none`);
}

/** Reads at most `limit` bytes; one more byte is `tooLarge` and the rest of the stream is never read. */
async function readCapped(
  stream: ReadableStream<Uint8Array>,
  limit: number,
  tooLarge: (read: number) => ApiError,
): Promise<Uint8Array> {
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
        throw tooLarge(total);
      }
      chunks.push(value);
    }
  } catch (error) {
    if (error instanceof ApiError) throw error;
    throw new ApiError("bad_request", "the request body could not be read", { cause: error });
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
  const gzip = isGzip(request);
  // A gzip body is never much bigger than what it decodes to (stored blocks and a header's optional fields add a few
  // bytes): past the cap plus the slack it decodes past the cap.
  const rawLimit = gzip ? limit + GZIP_SLACK_BYTES : limit;
  const declared = Number(request.headers.get("content-length") ?? Number.NaN);
  // A body declared bigger than that is refused before a byte is read.
  if (Number.isFinite(declared) && declared > rawLimit) throw tooLarge(limit, declared, gzip);
  if (!request.body) return new Uint8Array(0);
  const raw = await readCapped(request.body, rawLimit, (read) => tooLarge(limit, read, true));
  if (!gzip || raw.byteLength === 0) return raw;
  try {
    return gunzip(raw, limit);
  } catch (error) {
    if (error instanceof GzipTooLarge) throw tooLarge(limit, limit + 1, true);
    if (error instanceof GzipError) {
      throw new ApiError("bad_request", "the body could not be decompressed as gzip", { cause: error });
    }
    throw error;
  }
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
