// The ranking requests, validated the same way whether they come over HTTP (query string or JSON body) or through
// the Service Binding RPC class. Every problem is a 400 `validation_failed` naming the field.
import { isWellFormed } from "../collect/json.ts";
import { ApiError } from "../errors.ts";
import { tokenValue } from "../session/ecommerce.ts";
import { MAX_PRODUCT_ID_CHARS } from "../session/limits.ts";
import type { RankingConfig } from "./config.ts";
import type { Filters } from "./core.ts";

/**
 * A product or user id: the limit collection and the catalogue accept (MAX_PRODUCT_ID_CHARS, collection's
 * MAX_ID_LENGTH), so every id a visitor or product can have is one ranking takes.
 */
export const MAX_ID_CHARS = MAX_PRODUCT_ID_CHARS;
export const MAX_RERANK_CANDIDATES = 1000;
export const MAX_QUERY_CHARS = 200;
export const MAX_FILTER_VALUES = 20;

/** The parameters a caller gives (HTTP query/body or RPC argument). */
export interface RankParams {
  userId?: string;
  anonymousId?: string;
  placement?: string;
  productId?: string;
  limit?: number | string;
  category?: string | string[];
  tags?: string | string[];
  minPrice?: number | string;
  maxPrice?: number | string;
  /** ISO 3166 country for segment lists (HTTP: defaults to the request's Cloudflare country). */
  country?: string;
  query?: string;
  /** rerank: ids, or { productId, score }. */
  candidates?: Array<string | { productId: string; score?: number }>;
  explain?: boolean | string;
  whyNot?: string;
}

export interface RankRequest {
  mode: "recommend" | "similar" | "rerank";
  placement: string;
  userKey: string | null;
  /** The anonymous id the caller named (also when a userId wins the key): an experiment's assignment unit. */
  anonymousId: string | null;
  context: string[];
  limit: number;
  filters: Filters;
  country: string | null;
  query: string | null;
  candidates?: Array<{ productId: string; score?: number }>;
  explain: boolean;
  whyNot: string | null;
}

function invalid(field: string, message: string): ApiError {
  return new ApiError("validation_failed", `${field}: ${message}`, { details: { field } });
}

function id(field: string, v: unknown): string | undefined {
  if (v === undefined || v === null || v === "") return undefined;
  if (typeof v !== "string") throw invalid(field, "must be a string");
  if (v.length > MAX_ID_CHARS) throw invalid(field, `must be at most ${MAX_ID_CHARS} characters`);
  // As in collection: an unpaired surrogate would name another user's session object.
  if (!isWellFormed(v)) throw invalid(field, "must be valid Unicode (no unpaired surrogate)");
  return v;
}

/**
 * A number written out: an optional sign, digits with an optional decimal point and exponent. Not what Number()
 * reads besides: a blank string (0), hex, binary or octal literals ("0x10" is 16).
 */
const NUMBER_TEXT = /^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$/;

function number(field: string, v: unknown): number | undefined {
  if (v === undefined || v === null || v === "") return undefined;
  const n = typeof v === "number" ? v : typeof v === "string" && NUMBER_TEXT.test(v.trim()) ? Number(v) : Number.NaN;
  if (!Number.isFinite(n)) throw invalid(field, "must be a finite number");
  return n;
}

function list(field: string, v: unknown): string[] | undefined {
  if (v === undefined || v === null || v === "") return undefined;
  const raw = typeof v === "string" ? v.split(",") : Array.isArray(v) ? v : null;
  if (!raw?.every((x) => typeof x === "string")) throw invalid(field, "must be a string or a list of strings");
  if (raw.length > MAX_FILTER_VALUES) throw invalid(field, `at most ${MAX_FILTER_VALUES} values`);
  const out = raw.map((x) => tokenValue(x)).filter((x): x is string => x !== null);
  // Values given, all blank: taking that as no filter would answer an unfiltered list.
  if (out.length === 0) throw invalid(field, "every value is blank");
  return out;
}

function flag(field: string, v: unknown): boolean {
  if (v === undefined || v === null || v === "" || v === false || v === "false" || v === "0") return false;
  if (v === true || v === "true" || v === "1") return true;
  throw invalid(field, "must be true or false");
}

/** The user key (`u:<userId>` wins over `a:<anonymousId>`, as in collection), or null for none. */
export function requestUserKey(params: Pick<RankParams, "userId" | "anonymousId">): string | null {
  const userId = id("userId", params.userId);
  if (userId) return `u:${userId}`;
  const anonymousId = id("anonymousId", params.anonymousId);
  return anonymousId ? `a:${anonymousId}` : null;
}

export function parseRankParams(mode: RankRequest["mode"], params: RankParams, config: RankingConfig): RankRequest {
  if (typeof params !== "object" || params === null) throw invalid("body", "must be an object");
  const userKey = requestUserKey(params);
  const named = id("placement", params.placement);
  let placement = mode === "recommend" ? (named ?? "home") : mode;
  // Own keys only: "constructor" or "toString" are no placements.
  if (mode === "recommend" && !Object.hasOwn(config.placements, placement)) {
    throw invalid("placement", `unknown placement; one of ${Object.keys(config.placements).join(", ")}`);
  }
  if (mode !== "recommend" && named !== undefined) {
    // A caller may label the list (e.g. "search") for attribution; it must not name another placement's config.
    placement = named;
  }
  const productId = id("productId", params.productId);
  if (mode === "similar" && !productId) throw invalid("productId", "is required");
  const defaultLimit =
    mode === "recommend" ? (config.placements[placement]?.defaultLimit ?? 10) : mode === "similar" ? 10 : 0;
  const limitRaw = number("limit", params.limit);
  if (limitRaw !== undefined && (!Number.isInteger(limitRaw) || limitRaw < 1)) {
    throw invalid("limit", "must be a positive integer");
  }
  const maxLimit = mode === "rerank" ? MAX_RERANK_CANDIDATES : config.maxLimit;
  if (limitRaw !== undefined && limitRaw > maxLimit) throw invalid("limit", `must be at most ${maxLimit}`);

  const filters: Filters = {};
  const categories = list("category", params.category);
  if (categories) filters.categories = categories;
  const tags = list("tags", params.tags);
  if (tags) filters.tags = tags;
  const minPrice = number("minPrice", params.minPrice);
  const maxPrice = number("maxPrice", params.maxPrice);
  if (minPrice !== undefined) filters.minPrice = minPrice;
  if (maxPrice !== undefined) filters.maxPrice = maxPrice;
  if (minPrice !== undefined && maxPrice !== undefined && minPrice > maxPrice) {
    throw invalid("minPrice", "must not be above maxPrice");
  }

  let country: string | null = null;
  if (params.country !== undefined && params.country !== "") {
    if (typeof params.country !== "string" || !/^[A-Za-z]{2}$/.test(params.country)) {
      throw invalid("country", "must be a two-letter ISO 3166 code");
    }
    country = params.country.toUpperCase();
  }

  let query: string | null = null;
  if (params.query !== undefined && params.query !== "") {
    if (typeof params.query !== "string") throw invalid("query", "must be a string");
    if (params.query.length > MAX_QUERY_CHARS) throw invalid("query", `must be at most ${MAX_QUERY_CHARS} characters`);
    query = params.query;
  }

  let candidates: RankRequest["candidates"];
  if (mode === "rerank") {
    if (!Array.isArray(params.candidates)) throw invalid("candidates", "must be a list");
    if (params.candidates.length === 0) throw invalid("candidates", "must not be empty");
    if (params.candidates.length > MAX_RERANK_CANDIDATES) {
      throw invalid("candidates", `at most ${MAX_RERANK_CANDIDATES} candidates`);
    }
    const seen = new Set<string>();
    candidates = [];
    /** Whether the first candidate has a score: then every one must, else none (a base score is all or nothing). */
    let scored: boolean | undefined;
    params.candidates.forEach((c, i) => {
      const item = typeof c === "string" ? { productId: c } : c;
      if (typeof item !== "object" || item === null) throw invalid(`candidates[${i}]`, "must be an id or an object");
      const pid = id(`candidates[${i}].productId`, item.productId);
      if (!pid) throw invalid(`candidates[${i}].productId`, "is required");
      const score = number(`candidates[${i}].score`, item.score);
      // The ranking scales the caller's scores only when every candidate has one (else it ranks by position):
      // some scores, silently ignored, would be a wrong answer.
      scored ??= score !== undefined;
      if (scored !== (score !== undefined)) {
        throw invalid(
          `candidates[${i}].score`,
          scored
            ? "every candidate needs a score when the first has one"
            : "no candidate may have a score when the first has none",
        );
      }
      if (seen.has(pid)) return; // the first occurrence counts
      seen.add(pid);
      candidates?.push(score === undefined ? { productId: pid } : { productId: pid, score });
    });
  }

  const whyNot = id("whyNot", params.whyNot) ?? null;
  const explain = flag("explain", params.explain) || whyNot !== null;
  // A placement's default is capped too: maxLimit is the hard cap (a config may lower it below a default).
  const limit = limitRaw ?? (mode === "rerank" ? (candidates?.length ?? 0) : Math.min(defaultLimit, maxLimit));
  return {
    mode,
    placement,
    userKey,
    anonymousId: id("anonymousId", params.anonymousId) ?? null,
    context: productId ? [productId] : [],
    limit,
    filters,
    country,
    query,
    ...(candidates ? { candidates } : {}),
    explain,
    whyNot,
  };
}
