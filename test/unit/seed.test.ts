// The demo seed's pure parts (scripts/lib/seed.ts), at the full UCI file's size, without a database.
import { describe, expect, it } from "vitest";
import { newestTime } from "../../scripts/lib/seed.ts";
import { CatalogBuilder, parseUciLines, purchaseEvent } from "../../scripts/lib/uci-retail.ts";

const HEADER = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country";

/** One purchase of the UCI layout, as the seed derives it. */
function samplePurchase() {
  const lines = parseUciLines(
    `${HEADER}\n536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,2010-12-01T08:26:00Z,2.55,17850,United Kingdom\n`,
  );
  const builder = new CatalogBuilder();
  for (const line of lines) builder.add(line);
  const event = lines[0] && purchaseEvent(lines[0], builder.items()[0]);
  if (!event) throw new Error("the sample line is no purchase");
  return event;
}

describe("newestTime", () => {
  it("finds the newest of 400,000 purchases (the full file has 396,340)", () => {
    const event = samplePurchase();
    const start = Date.parse(event.timestamp);
    const at = (k: number) => new Date(start + k * 60_000).toISOString();
    // The newest in the middle: the file's order is not relied on.
    const purchases = Array.from({ length: 400_000 }, (_, k) => ({
      event: { ...event, timestamp: at(k === 123_456 ? 500_000 : k) },
    }));
    expect(newestTime(purchases)).toBe(start + 500_000 * 60_000);
    expect(newestTime([])).toBe(Number.NEGATIVE_INFINITY);
  });
});
