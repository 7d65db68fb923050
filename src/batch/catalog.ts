// The product catalogue in: validation of items (JSON objects or CSV rows, pure) and their upsert into `catalog`.
// Used by `PUT /v1/admin/catalog` (src/admin/catalog.ts), `npm run catalog:import` and the demo seed.
//
// An item is the whole description of a product (PUT semantics): a field left out is reset to its default.
// The upsert is `INSERT … ON CONFLICT (id) DO UPDATE … WHERE (the new values) IS DISTINCT FROM (the old)`, in
// chunks inside one transaction: a row that did not change is not touched at all, so `updated_at` (what the
// publisher ships by) moves only for real changes, and a failed request changes nothing.
import { sql } from "drizzle-orm";
import { isWellFormed, jsonDepthExceeds } from "../collect/json.ts";
import { MAX_JSON_DEPTH } from "../collect/limits.ts";
import { MAX_PRODUCT_ID_CHARS } from "../session/limits.ts";
import { type Database, transaction } from "../stores/db.ts";
import { catalog } from "../stores/schema.ts";
import { csvObjects, csvRecords } from "./csv.ts";

/** The catalogue's product id limit is the one collection and the session apply (src/session/limits.ts). */
export { MAX_PRODUCT_ID_CHARS };

/** Items per request or import file: 10,000 × ~0.5 KB stays a few MB of JSON and one short transaction. */
export const MAX_CATALOG_ITEMS = 10_000;
/** Request body cap (after decompression): 10,000 items with room for attributes. */
export const MAX_CATALOG_BODY_BYTES = 10 * 1024 * 1024;
export const MAX_TITLE_CHARS = 500;
/** Category and brand: names, not descriptions. */
export const MAX_NAME_CHARS = 200;
export const MAX_TAGS_PER_ITEM = 32;
export const MAX_TAG_CHARS = 100;
/** Free-form attributes travel to the edge with the item: keep them small. */
export const MAX_ATTRIBUTES_BYTES = 8 * 1024;
/** Row errors listed in one answer; `errorCount` has the total. */
export const MAX_REPORTED_ERRORS = 100;
/** Rows per INSERT: 500 × 10 columns = 5,000 parameters, far below Postgres' 65,535. */
export const UPSERT_CHUNK_ROWS = 500;

export interface CatalogItem {
  id: string;
  title: string;
  category: string | null;
  brand: string | null;
  tags: string[];
  price: number | null;
  /** ISO 4217, upper case. */
  currency: string | null;
  inStock: boolean;
  visible: boolean;
  attributes: Record<string, unknown>;
}

export interface FieldError {
  field: string;
  message: string;
}

export interface RowError {
  /** 0-based position among the items (for CSV: among the data rows). */
  index: number;
  /** CSV only: the line the row starts on (the header is line 1). */
  line?: number;
  id?: string;
  errors: FieldError[];
}

export interface ParsedCatalog {
  items: CatalogItem[];
  errors: RowError[];
  /** All row errors (only the first MAX_REPORTED_ERRORS are in `errors`). */
  errorCount: number;
}

/** A problem with the document as a whole (shape, size, header): no row can be read. */
export class CatalogFormatError extends Error {
  override name = "CatalogFormatError";
  readonly tooMany: { limit: number; actual: number } | undefined;
  constructor(message: string, tooMany?: { limit: number; actual: number }) {
    super(message);
    this.tooMany = tooMany;
  }
}

/** Accepted names of each field (JSON keys and CSV headers); the first is the canonical one. */
const FIELD_NAMES: Readonly<Record<keyof CatalogItem, readonly string[]>> = {
  id: ["id", "product_id", "productId"],
  title: ["title", "name"],
  category: ["category"],
  brand: ["brand"],
  tags: ["tags"],
  price: ["price"],
  currency: ["currency"],
  inStock: ["in_stock", "inStock"],
  visible: ["visible"],
  attributes: ["attributes"],
};
const FIELD_OF = new Map<string, keyof CatalogItem>(
  Object.entries(FIELD_NAMES).flatMap(([field, names]) => names.map((n) => [n, field as keyof CatalogItem])),
);

type Raw = Partial<Record<keyof CatalogItem, unknown>>;

function textField(value: unknown, field: string, max: number, errors: FieldError[], required: boolean): string | null {
  if (value === undefined || value === null || value === "") {
    if (required) errors.push({ field, message: "is required" });
    return null;
  }
  // A number is taken as its text only when that text is exact: past 2^53 JSON.parse has already rounded it
  // (12345678901234567891 arrives as 12345678901234567000, another product's id), and a fraction is printed anew.
  if (typeof value === "number" && !Number.isSafeInteger(value)) {
    const message = `must be a string; a number is taken only as an integer up to ${Number.MAX_SAFE_INTEGER} (write it in quotes)`;
    errors.push({ field, message });
    return null;
  }
  const text = typeof value === "number" ? String(value) : value;
  if (typeof text !== "string") {
    errors.push({ field, message: "must be a string" });
    return null;
  }
  const trimmed = text.trim();
  if (trimmed === "") {
    if (required) errors.push({ field, message: "is required" });
    return null;
  }
  if (trimmed.length > max) {
    errors.push({ field, message: `is ${trimmed.length} characters long; the limit is ${max}` });
    return null;
  }
  if (trimmed.includes("\u0000")) {
    errors.push({ field, message: "must not contain NUL characters" });
    return null;
  }
  // The driver writes an unpaired UTF-16 surrogate as U+FFFD: "p\udc00" would be stored as "p\ufffd", another id.
  if (!isWellFormed(trimmed)) {
    errors.push({ field, message: "must not contain unpaired UTF-16 surrogates" });
    return null;
  }
  return trimmed;
}

function boolField(value: unknown, field: string, fallback: boolean, errors: FieldError[]): boolean {
  if (value === undefined || value === null || value === "") return fallback;
  if (typeof value === "boolean") return value;
  if (typeof value === "string") {
    const v = value.trim().toLowerCase();
    if (["true", "1", "yes", "y"].includes(v)) return true;
    if (["false", "0", "no", "n"].includes(v)) return false;
  }
  if (value === 1 || value === 0) return value === 1;
  errors.push({ field, message: "must be true or false" });
  return fallback;
}

/** A price written out: digits with an optional decimal point and exponent (no sign, no hex, no thousands separator). */
const PRICE_TEXT = /^(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$/;

function priceField(value: unknown, errors: FieldError[]): number | null {
  if (value === undefined || value === null) return null;
  // A blank cell is no price, as for every other optional field (not Number(" ") = 0, a free product).
  const text = typeof value === "string" ? value.trim() : null;
  if (text === "") return null;
  const n = typeof value === "number" ? value : text !== null && PRICE_TEXT.test(text) ? Number(text) : Number.NaN;
  if (!Number.isFinite(n) || n < 0) {
    errors.push({ field: "price", message: "must be a number ≥ 0" });
    return null;
  }
  return n;
}

function tagsField(value: unknown, separator: RegExp, errors: FieldError[]): string[] {
  if (value === undefined || value === null || value === "") return [];
  const list = typeof value === "string" ? value.split(separator) : value;
  if (!Array.isArray(list) || list.some((t) => typeof t !== "string")) {
    errors.push({ field: "tags", message: "must be an array of strings" });
    return [];
  }
  const tags = [...new Set((list as string[]).map((t) => t.trim()).filter((t) => t.length > 0))];
  if (tags.length > MAX_TAGS_PER_ITEM) {
    errors.push({ field: "tags", message: `has ${tags.length} tags; the limit is ${MAX_TAGS_PER_ITEM}` });
    return [];
  }
  const long = tags.find((t) => t.length > MAX_TAG_CHARS || t.includes("\u0000") || !isWellFormed(t));
  if (long !== undefined) {
    errors.push({
      field: "tags",
      message: `a tag is longer than ${MAX_TAG_CHARS} characters or contains NUL or an unpaired UTF-16 surrogate`,
    });
    return [];
  }
  return tags;
}

/**
 * A number in `value` that JSON text cannot have carried exactly, or undefined: JSON.parse reads 1e400 as Infinity
 * (which JSON.stringify, and so the jsonb column, writes as null) and rounds an integer past 2^53
 * (12345678901234567891 arrives as 12345678901234567000). `value` is at most MAX_JSON_DEPTH deep.
 */
function inexactNumber(value: unknown): number | undefined {
  if (typeof value === "number") {
    return Number.isFinite(value) && !(Number.isInteger(value) && !Number.isSafeInteger(value)) ? undefined : value;
  }
  if (typeof value !== "object" || value === null) return undefined;
  for (const v of Object.values(value)) {
    const n = inexactNumber(v);
    if (n !== undefined) return n;
  }
  return undefined;
}

function attributesField(value: unknown, errors: FieldError[]): Record<string, unknown> {
  if (value === undefined || value === null || value === "") return {};
  let object = value;
  if (typeof value === "string") {
    try {
      object = JSON.parse(value);
    } catch {
      errors.push({ field: "attributes", message: "must be a JSON object" });
      return {};
    }
  }
  // JSON text in a CSV cell, or a file read by catalog:import, has not passed the request body's nesting limit.
  if (jsonDepthExceeds(object, MAX_JSON_DEPTH)) {
    errors.push({ field: "attributes", message: `nests deeper than ${MAX_JSON_DEPTH} levels` });
    return {};
  }
  if (typeof object !== "object" || object === null || Array.isArray(object)) {
    errors.push({ field: "attributes", message: "must be an object" });
    return {};
  }
  const json = JSON.stringify(object);
  if (new TextEncoder().encode(json).byteLength > MAX_ATTRIBUTES_BYTES) {
    errors.push({ field: "attributes", message: `is larger than ${MAX_ATTRIBUTES_BYTES} bytes as JSON` });
    return {};
  }
  const inexact = inexactNumber(object);
  if (inexact !== undefined) {
    errors.push({
      field: "attributes",
      message:
        `holds a number JSON cannot carry exactly (read as ${inexact}): numbers must be finite, integers at most ` +
        `${Number.MAX_SAFE_INTEGER} in size; write such a value as a string`,
    });
    return {};
  }
  if (/\\u0000/.test(json)) {
    errors.push({ field: "attributes", message: "must not contain NUL characters" });
    return {};
  }
  // Postgres refuses jsonb holding an unpaired UTF-16 surrogate, which JSON.stringify writes as a \udXXX escape
  // (after an odd number of backslashes: an even number is an escaped backslash followed by plain text).
  if (/(?<!\\)(?:\\\\)*\\ud[89a-f]/i.test(json)) {
    errors.push({ field: "attributes", message: "must not contain unpaired UTF-16 surrogates" });
    return {};
  }
  return object as Record<string, unknown>;
}

/** One item from its raw fields; `tagSeparator` splits a tags string (JSON: ","; CSV: "|"). */
export function validateItem(raw: Raw, tagSeparator: RegExp): { item: CatalogItem | null; errors: FieldError[] } {
  const errors: FieldError[] = [];
  const id = textField(raw.id, "id", MAX_PRODUCT_ID_CHARS, errors, true);
  const title = textField(raw.title, "title", MAX_TITLE_CHARS, errors, true);
  const currency = textField(raw.currency, "currency", 3, errors, false);
  if (currency !== null && !/^[A-Za-z]{3}$/.test(currency)) {
    errors.push({ field: "currency", message: "must be a 3-letter ISO 4217 code" });
  }
  const item: CatalogItem = {
    id: id ?? "",
    title: title ?? "",
    category: textField(raw.category, "category", MAX_NAME_CHARS, errors, false),
    brand: textField(raw.brand, "brand", MAX_NAME_CHARS, errors, false),
    tags: tagsField(raw.tags, tagSeparator, errors),
    price: priceField(raw.price, errors),
    currency: currency?.toUpperCase() ?? null,
    inStock: boolField(raw.inStock, "in_stock", true, errors),
    visible: boolField(raw.visible, "visible", true, errors),
    attributes: attributesField(raw.attributes, errors),
  };
  return { item: errors.length === 0 ? item : null, errors };
}

/** Collects items and row errors; refuses a second row with the same id. */
class Collector {
  readonly items: CatalogItem[] = [];
  readonly errors: RowError[] = [];
  errorCount = 0;
  readonly #firstIndex = new Map<string, number>();

  add(index: number, result: { item: CatalogItem | null; errors: FieldError[] }, rawId: unknown, line?: number) {
    const errors = [...result.errors];
    const id = result.item?.id ?? (typeof rawId === "string" ? rawId.slice(0, MAX_PRODUCT_ID_CHARS) : undefined);
    if (result.item) {
      const first = this.#firstIndex.get(result.item.id);
      if (first !== undefined) errors.push({ field: "id", message: `is also the id of item ${first}` });
      else this.#firstIndex.set(result.item.id, index);
    }
    if (errors.length === 0 && result.item) {
      this.items.push(result.item);
      return;
    }
    this.errorCount++;
    if (this.errors.length < MAX_REPORTED_ERRORS) {
      this.errors.push({ index, ...(line === undefined ? {} : { line }), ...(id ? { id } : {}), errors });
    }
  }

  result(): ParsedCatalog {
    return { items: this.items, errors: this.errors, errorCount: this.errorCount };
  }
}

/**
 * `{ items: [...] }` or `[...]` → items and row errors. Throws CatalogFormatError for another shape or more than
 * `maxItems` items (the import script lifts the limit and upserts in parts).
 */
export function parseCatalogJson(value: unknown, maxItems = MAX_CATALOG_ITEMS): ParsedCatalog {
  const list = Array.isArray(value)
    ? value
    : value !== null && typeof value === "object" && Array.isArray((value as { items?: unknown }).items)
      ? ((value as { items: unknown[] }).items as unknown[])
      : null;
  if (!list) throw new CatalogFormatError('send { "items": [ … ] } or an array of items');
  // As an unknown item field, an unknown field next to `items` (a `currency` meant for every item) is refused, not
  // dropped.
  const others = Array.isArray(value) ? [] : Object.keys(value as object).filter((k) => k !== "items");
  if (others.length > 0) {
    throw new CatalogFormatError(
      `unknown field${others.length > 1 ? "s" : ""} ${others
        .slice(0, 5)
        .map((k) => `"${k.slice(0, 50)}"`)
        .join(", ")} next to "items"; the body is { "items": [ … ] } only`,
    );
  }
  if (list.length === 0) throw new CatalogFormatError("there are no items");
  if (list.length > maxItems) {
    throw new CatalogFormatError(`at most ${maxItems} items per request`, { limit: maxItems, actual: list.length });
  }
  const out = new Collector();
  list.forEach((entry, index) => {
    if (entry === null || typeof entry !== "object" || Array.isArray(entry)) {
      out.add(index, { item: null, errors: [{ field: "", message: "must be an object" }] }, undefined);
      return;
    }
    const raw: Raw = {};
    const errors: FieldError[] = [];
    for (const [key, v] of Object.entries(entry)) {
      const field = FIELD_OF.get(key);
      if (!field) errors.push({ field: key, message: "is not a catalogue field" });
      else if (raw[field] !== undefined) errors.push({ field: key, message: `is given twice (as ${field})` });
      else raw[field] = v;
    }
    const result = validateItem(raw, /,/);
    out.add(index, { item: errors.length ? null : result.item, errors: [...errors, ...result.errors] }, raw.id);
  });
  return out.result();
}

/**
 * A catalogue file's text (`catalog:import`): CSV when the name ends in `.csv`, JSON otherwise. A leading byte-order
 * mark, which spreadsheet exports write, is dropped (JSON.parse refuses it). Throws SyntaxError for bad JSON.
 */
export function parseCatalogFile(name: string, text: string, maxItems = MAX_CATALOG_ITEMS): ParsedCatalog {
  const body = text.replace(/^\uFEFF/, "");
  return name.toLowerCase().endsWith(".csv")
    ? parseCatalogCsv(body, maxItems)
    : parseCatalogJson(JSON.parse(body), maxItems);
}

/** CSV with a header row (field names as for JSON; tags separated by "|"; attributes as JSON) → items and errors. */
export function parseCatalogCsv(text: string, maxItems = MAX_CATALOG_ITEMS): ParsedCatalog {
  const header = csvRecords(text).next();
  if (header.done) throw new CatalogFormatError("the CSV is empty; the first line must name the columns");
  const names = header.value.fields.map((h) => h.trim());
  const unknown = names.filter((n) => !FIELD_OF.has(n));
  if (unknown.length > 0) {
    throw new CatalogFormatError(
      `unknown column${unknown.length > 1 ? "s" : ""} ${unknown.map((n) => `"${n.slice(0, 50)}"`).join(", ")}; ` +
        `known: ${Object.values(FIELD_NAMES).flat().join(", ")}`,
    );
  }
  const fields = names.map((n) => FIELD_OF.get(n) as keyof CatalogItem);
  const twice = fields.find((f, i) => fields.indexOf(f) !== i);
  if (twice) throw new CatalogFormatError(`the column for ${twice} is given twice`);
  if (!fields.includes("id") || !fields.includes("title")) {
    throw new CatalogFormatError("the CSV needs an id column and a title column");
  }
  const out = new Collector();
  let count = 0;
  for (const { row, line, extra, missing } of csvObjects(text)) {
    const index = count++;
    // Past the limit, only count (for the error message).
    if (index >= maxItems) continue;
    const raw: Raw = {};
    names.forEach((name, k) => {
      raw[fields[k] as keyof CatalogItem] = row[name];
    });
    const result = validateItem(raw, /\|/);
    // RFC 4180: every row has the header's fields. A short row is refused too: read as PUT, its missing columns would
    // reset the product's stock and visibility to their defaults.
    const errors =
      extra > 0
        ? [{ field: "", message: `has ${extra} more field(s) than the header` }]
        : missing > 0
          ? [{ field: "", message: `has ${missing} field(s) fewer than the header` }]
          : [];
    out.add(index, { item: errors.length ? null : result.item, errors: [...errors, ...result.errors] }, raw.id, line);
  }
  if (count > maxItems) {
    throw new CatalogFormatError(`at most ${maxItems} items per request`, { limit: maxItems, actual: count });
  }
  if (count === 0) throw new CatalogFormatError("there are no items (only a header)");
  return out.result();
}

export interface UpsertResult {
  received: number;
  inserted: number;
  updated: number;
  unchanged: number;
}

/**
 * Inserts new items, updates changed ones (and their updated_at), leaves identical ones untouched; one
 * transaction, UPSERT_CHUNK_ROWS rows per statement.
 */
/** The advisory lock catalogue writers take in turn ("lastmile catalog", an arbitrary 63-bit constant). */
export const CATALOG_WRITE_LOCK = 0x6c6d_6361_7461_6c67n;

export async function upsertCatalog(db: Database, items: readonly CatalogItem[]): Promise<UpsertResult> {
  const result: UpsertResult = { received: items.length, inserted: 0, updated: 0, unchanged: 0 };
  if (items.length === 0) return result;
  await transaction(db, async (tx) => {
    // Writers take turns, and stamp rows with the time after their turn began (clock_timestamp(), not now(): the
    // transaction's start). So a later commit always carries a later updated_at, and the publisher's watermark
    // (row count, newest updated_at) moves on every commit: with two overlapping uploads, the one that started
    // first could otherwise commit last with the older stamps, after the publisher had read the newer ones.
    await tx.execute(sql`select pg_advisory_xact_lock(${CATALOG_WRITE_LOCK.toString()}::bigint)`);
    for (let start = 0; start < items.length; start += UPSERT_CHUNK_ROWS) {
      const chunk = items.slice(start, start + UPSERT_CHUNK_ROWS);
      const rows = await tx
        .insert(catalog)
        .values(chunk.map((item) => ({ ...item, updatedAt: sql`clock_timestamp()` })))
        .onConflictDoUpdate({
          target: catalog.id,
          set: {
            title: sql`excluded.title`,
            category: sql`excluded.category`,
            brand: sql`excluded.brand`,
            tags: sql`excluded.tags`,
            price: sql`excluded.price`,
            currency: sql`excluded.currency`,
            inStock: sql`excluded.in_stock`,
            visible: sql`excluded.visible`,
            attributes: sql`excluded.attributes`,
            updatedAt: sql`clock_timestamp()`,
          },
          setWhere: sql`(${catalog.title}, ${catalog.category}, ${catalog.brand}, ${catalog.tags}, ${catalog.price},
            ${catalog.currency}, ${catalog.inStock}, ${catalog.visible}, ${catalog.attributes})
            is distinct from (excluded.title, excluded.category, excluded.brand, excluded.tags, excluded.price,
            excluded.currency, excluded.in_stock, excluded.visible, excluded.attributes)`,
        })
        // xmax is 0 for a freshly inserted row version and set for an updated one.
        .returning({ inserted: sql<boolean>`(xmax = 0)` });
      for (const row of rows) {
        if (row.inserted) result.inserted++;
        else result.updated++;
      }
    }
  });
  result.unchanged = result.received - result.inserted - result.updated;
  return result;
}
