// A JSON request body for the non-collection APIs (ranking, admin config): `application/json` only, at most
// `limit` bytes (413 beyond; gzip bodies inflated within the same cap by readBodyBytes), parsed → 415 / 413 /
// 400 invalid_json (also for bytes that are not UTF-8 and nesting deeper than MAX_JSON_DEPTH) with the one error model.
import { readBodyBytes, refuseDeepJson, utf8Text } from "./collect/body.ts";
import { ApiError } from "./errors.ts";

export async function readJsonRequest(request: Request, limit: number): Promise<unknown> {
  if (!/^application\/json\b/i.test(request.headers.get("content-type") ?? "")) {
    throw new ApiError("unsupported_media_type", "send the body as application/json");
  }
  const text = utf8Text(await readBodyBytes(request, limit));
  if (text === undefined) throw new ApiError("invalid_json", "the body is not UTF-8 text");
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new ApiError("invalid_json", "the body is not valid JSON");
  }
  refuseDeepJson(value);
  return value;
}
