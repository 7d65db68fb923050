// PUT /v1/admin/catalog — upsert catalogue items (docs/api.md#put-v1admincatalog). Body: JSON `{ "items": [...] }`
// or a JSON array (application/json), or CSV with a header row (text/csv); gzip allowed. All rows are validated
// first: any invalid row → 400 validation_failed listing each bad row's reasons, and nothing is written.
// Otherwise one transaction upserts them all (src/batch/catalog.ts) and the answer counts what changed.
import type { Context } from "hono";
import type { AppEnv } from "../app.ts";
import {
  CatalogFormatError,
  MAX_CATALOG_BODY_BYTES,
  type ParsedCatalog,
  parseCatalogCsv,
  parseCatalogJson,
  upsertCatalog,
} from "../batch/catalog.ts";
import { CsvError } from "../batch/csv.ts";
import { readBodyBytes, refuseDeepJson, utf8Text } from "../collect/body.ts";
import { ApiError } from "../errors.ts";
import { withWarehouse } from "./batch.ts";

function mediaType(header: string | undefined): string {
  return (header ?? "").split(";")[0]?.trim().toLowerCase() ?? "";
}

/** The body as UTF-8 text, read under the byte cap (applied after gzip decompression). */
async function readText(request: Request): Promise<string> {
  const bytes = await readBodyBytes(request, MAX_CATALOG_BODY_BYTES);
  if (bytes.byteLength === 0) throw new ApiError("bad_request", "the request body is empty");
  const text = utf8Text(bytes);
  if (text === undefined) throw new ApiError("bad_request", "the request body is not UTF-8 text");
  return text;
}

function parse(type: string, text: string): ParsedCatalog {
  try {
    if (type === "text/csv") return parseCatalogCsv(text);
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      throw new ApiError("invalid_json", "the request body is not valid JSON");
    }
    refuseDeepJson(value);
    return parseCatalogJson(value);
  } catch (error) {
    if (error instanceof CatalogFormatError) {
      if (error.tooMany) {
        throw new ApiError("payload_too_large", error.message, { details: { ...error.tooMany, unit: "items" } });
      }
      throw new ApiError("validation_failed", error.message, { details: { errors: [], errorCount: 0 } });
    }
    if (error instanceof CsvError) throw new ApiError("bad_request", `the CSV cannot be read: ${error.message}`);
    throw error;
  }
}

const JSON_TYPES = new Set(["application/json", "text/json"]);

export async function putCatalog(c: Context<AppEnv>): Promise<Response> {
  const type = mediaType(c.req.header("content-type"));
  if (!JSON_TYPES.has(type) && type !== "text/csv") {
    throw new ApiError(
      "unsupported_media_type",
      `Content-Type "${type}" is not supported: send application/json ({ "items": [...] }) or text/csv`,
    );
  }
  const parsed = parse(type, await readText(c.req.raw));
  if (parsed.errorCount > 0) {
    throw new ApiError(
      "validation_failed",
      `${parsed.errorCount} of ${parsed.items.length + parsed.errorCount} items are invalid; nothing was written`,
      { details: { errors: parsed.errors, errorCount: parsed.errorCount } },
    );
  }
  // The warehouse in its configured schema (DATABASE_SCHEMA), as every other admin route reaches it.
  const result = await withWarehouse(c.env, async (db) => {
    try {
      return await upsertCatalog(db, parsed.items);
    } catch (error) {
      throw new ApiError("dependency_unavailable", "the catalogue could not be written", { cause: error });
    }
  });
  return c.json(result);
}
