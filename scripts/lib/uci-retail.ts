// The UCI "Online Retail" data set (541,909 invoice lines of a UK gift-ware shop, Dec 2010 – Dec 2011) as a demo
// store: its products become the catalogue, its customers' purchases become "Order Completed" events. Pure
// mapping (no I/O); scripts/lib/seed.ts reads the file and writes the rows.
//
// "Online Retail" by Daqing Chen, UCI Machine Learning Repository, dataset 352
// (https://archive.ics.uci.edu/dataset/352/online+retail), CC BY 4.0. The data is read from ../shared/data next
// to the repository and never copied into it.

import type { CatalogItem } from "../../src/batch/catalog.ts";
import { categorize, tagsOf } from "../../src/batch/categories.ts";
import { csvRecords } from "../../src/batch/csv.ts";
import type { CollectedEvent } from "../../src/collect/event.ts";

export const UCI_COLUMNS = [
  "InvoiceNo",
  "StockCode",
  "Description",
  "Quantity",
  "InvoiceDate",
  "UnitPrice",
  "CustomerID",
  "Country",
] as const;

/** The seeded events' source id (events.source_id). */
export const UCI_SOURCE_ID = "uci-online-retail";
export const UCI_CURRENCY = "GBP";

/** Stock codes that are charges, fees and adjustments, not products. Gift vouchers (`gift_…`) are excluded too. */
export const SERVICE_CODES: ReadonlySet<string> = new Set([
  "POST",
  "DOT",
  "M",
  "m",
  "C2",
  "D",
  "S",
  "B",
  "BANK CHARGES",
  "AMAZONFEE",
  "CRUK",
]);

export function isProductCode(code: string): boolean {
  return code !== "" && !SERVICE_CODES.has(code) && !code.startsWith("gift_");
}

/**
 * The data set's country names → ISO 3166-1 alpha-2 (events.country, segments `country:<cc>`). "Unspecified",
 * "European Community" and "Channel Islands" (Jersey and Guernsey have separate codes) have none.
 */
export const COUNTRY_CODES: Readonly<Record<string, string>> = {
  "United Kingdom": "GB",
  Germany: "DE",
  France: "FR",
  EIRE: "IE",
  Spain: "ES",
  Netherlands: "NL",
  Belgium: "BE",
  Switzerland: "CH",
  Portugal: "PT",
  Australia: "AU",
  Norway: "NO",
  Italy: "IT",
  Finland: "FI",
  Cyprus: "CY",
  Sweden: "SE",
  Austria: "AT",
  Denmark: "DK",
  Japan: "JP",
  Poland: "PL",
  Israel: "IL",
  USA: "US",
  "Hong Kong": "HK",
  Singapore: "SG",
  Iceland: "IS",
  Canada: "CA",
  Greece: "GR",
  Malta: "MT",
  "United Arab Emirates": "AE",
  RSA: "ZA",
  Lebanon: "LB",
  Lithuania: "LT",
  Brazil: "BR",
  "Czech Republic": "CZ",
  Bahrain: "BH",
  "Saudi Arabia": "SA",
};

export interface RetailLine {
  invoice: string;
  stockCode: string;
  description: string;
  quantity: number;
  /** ISO 8601 (UTC). */
  invoiceDate: string;
  unitPrice: number;
  customerId: string;
  country: string;
  /** 1-based position of the line within its invoice, in file order (all lines counted). */
  lineNo: number;
}

/** Checks the header; throws when the file is not the UCI layout. */
export function checkHeader(fields: readonly string[]): void {
  const got = fields.map((f) => f.trim()).join(",");
  if (got !== UCI_COLUMNS.join(",")) throw new Error(`not the UCI Online Retail layout: header is "${got}"`);
}

/** Numbers each line within its invoice as the file is read (invoices' lines are contiguous; this does not rely on it). */
export class LineNumberer {
  readonly #next = new Map<string, number>();
  line(fields: readonly string[]): RetailLine {
    const invoice = (fields[0] ?? "").trim();
    const lineNo = (this.#next.get(invoice) ?? 0) + 1;
    this.#next.set(invoice, lineNo);
    return {
      invoice,
      stockCode: (fields[1] ?? "").trim(),
      description: (fields[2] ?? "").trim().replace(/\s+/g, " "),
      quantity: Number(fields[3]),
      invoiceDate: (fields[4] ?? "").trim(),
      unitPrice: Number(fields[5]),
      customerId: (fields[6] ?? "").trim(),
      country: (fields[7] ?? "").trim(),
      lineNo,
    };
  }
}

/** A sale of a product: not a cancellation ("C…" invoice), positive quantity and price, a product code. */
export function isSaleLine(line: RetailLine): boolean {
  return (
    !line.invoice.startsWith("C") &&
    Number.isFinite(line.quantity) &&
    line.quantity > 0 &&
    Number.isFinite(line.unitPrice) &&
    line.unitPrice > 0 &&
    isProductCode(line.stockCode)
  );
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  const m =
    sorted.length % 2 === 1 ? (sorted[mid] as number) : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
  return Math.round(m * 100) / 100;
}

/**
 * The catalogue from sale lines: per stock code the most frequent description (ties: the first seen) and the
 * median unit price; category and tags from the description's keywords (src/batch/categories.ts).
 */
export class CatalogBuilder {
  readonly #products = new Map<string, { prices: number[]; descriptions: Map<string, number> }>();

  add(line: RetailLine): void {
    if (!isSaleLine(line) || line.description === "") return;
    let product = this.#products.get(line.stockCode);
    if (!product) {
      product = { prices: [], descriptions: new Map() };
      this.#products.set(line.stockCode, product);
    }
    product.prices.push(line.unitPrice);
    product.descriptions.set(line.description, (product.descriptions.get(line.description) ?? 0) + 1);
  }

  items(): CatalogItem[] {
    const items: CatalogItem[] = [];
    for (const [id, product] of this.#products) {
      let title = "";
      let best = 0;
      for (const [description, count] of product.descriptions) {
        if (count > best) {
          best = count;
          title = description;
        }
      }
      items.push({
        id,
        title,
        category: categorize(title),
        brand: null,
        tags: tagsOf(title),
        price: median(product.prices),
        currency: UCI_CURRENCY,
        inStock: true,
        visible: true,
        attributes: { source: UCI_SOURCE_ID },
      });
    }
    return items.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }
}

/** Deterministic, so a re-seed inserts nothing new: invoice + line position. */
export function messageIdOf(line: Pick<RetailLine, "invoice" | "lineNo">): string {
  return `uci-${line.invoice}-${line.lineNo}`;
}

/**
 * A customer's sale line as the "Order Completed" event a storefront would have sent (Segment e-commerce v2):
 * one product, the invoice as order_id (the basket for bought-together), the country in context.location.
 * Null for lines without a customer or that are not sales of a catalogued product.
 */
export function purchaseEvent(line: RetailLine, product: CatalogItem | undefined): CollectedEvent | null {
  if (!line.customerId || !product || !isSaleLine(line)) return null;
  const at = new Date(line.invoiceDate);
  if (Number.isNaN(at.getTime())) return null;
  const timestamp = at.toISOString();
  const country = COUNTRY_CODES[line.country];
  return {
    messageId: messageIdOf(line),
    type: "track",
    userId: line.customerId,
    anonymousId: null,
    previousId: null,
    groupId: null,
    event: "Order Completed",
    name: null,
    properties: {
      order_id: line.invoice,
      currency: UCI_CURRENCY,
      revenue: Math.round(line.quantity * line.unitPrice * 100) / 100,
      // Name and category are in the catalogue; leaving them out keeps 400k seeded rows small.
      products: [{ product_id: line.stockCode, price: line.unitPrice, quantity: line.quantity }],
    },
    traits: {},
    context: country ? { location: { country } } : {},
    timestamp,
    originalTimestamp: timestamp,
    sentAt: null,
    receivedAt: timestamp,
    sourceId: UCI_SOURCE_ID,
  };
}

/** The UCI file's text as lines (header checked), numbered within their invoice: what the seed and the evaluation read. */
export function parseUciLines(text: string): RetailLine[] {
  const numberer = new LineNumberer();
  const lines: RetailLine[] = [];
  let header = true;
  for (const record of csvRecords(text)) {
    if (header) {
      checkHeader(record.fields);
      header = false;
    } else lines.push(numberer.line(record.fields));
  }
  return lines;
}
