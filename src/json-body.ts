// A JSON request body for the non-collection APIs (ranking, admin config): `application/json` only, at most
// `limit` bytes (413 beyond; gzip bodies inflated within the same cap by readBodyBytes), parsed → 415 / 413 /
// 400 invalid_json with the one error model.
import { readBodyBytes } from "./collect/body.ts";
import { ApiError } from "./errors.ts";

export async function readJsonRequest(request: Request, limit: number): Promise<unknown> {
  if (!/^application\/json\b/i.test(request.headers.get("content-type") ?? "")) {
    throw new ApiError("unsupported_media_type", "send the body as application/json");
  }
  const bytes = await readBodyBytes(request, limit);
  try {
    return JSON.parse(new TextDecoder().decode(bytes)) as unknown;
  } catch {
    throw new ApiError("invalid_json", "the body is not valid JSON");
  }
}
