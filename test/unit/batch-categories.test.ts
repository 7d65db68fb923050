// Keyword categories and tags of product titles (src/batch/categories.ts), and the UCI Online Retail mapping the
// demo seed uses (scripts/lib/uci-retail.ts).
import { describe, expect, it } from "vitest";
import {
  CatalogBuilder,
  checkHeader,
  isProductCode,
  LineNumberer,
  messageIdOf,
  purchaseEvent,
  UCI_COLUMNS,
} from "../../scripts/lib/uci-retail.ts";
import {
  CATEGORY_RULES,
  categorize,
  MAX_TAGS,
  OTHER_CATEGORY,
  tagsOf,
  titleWords,
} from "../../src/batch/categories.ts";
import { warehouseRows } from "../../src/batch/warehouse.ts";

describe("categorize", () => {
  it.each([
    ["WHITE HANGING HEART T-LIGHT HOLDER", "Candles & Lights"],
    ["RED RETROSPOT MUG", "Mugs"],
    ["JUMBO BAG RED RETROSPOT", "Bags"],
    ["PAPER CHAIN KIT 50'S CHRISTMAS", "Christmas"],
    ["CHRISTMAS CARD STACK OF 16", "Christmas"],
    ["SET OF 6 VINTAGE GIFT CARDS", "Cards & Wrap"],
    ["PACK OF 72 RETROSPOT CAKE CASES", "Baking"],
    ["DIAMANTE NECKLACE.", "Jewellery"],
    ["ASSORTED COLOUR BIRD ORNAMENT", "Home Decor"],
    ["WOODEN HEART WITH STAR", "Home Decor"],
    ["LUNCH BOX WITH CUTLERY RETROSPOT", "Kitchen & Dining"],
    ["SPACEBOY LUNCH BOX", "Kitchen & Dining"],
    ["EASTER TIN CHICKS IN GARDEN", "Easter"],
    ["High Resolution Image", OTHER_CATEGORY],
    ["", OTHER_CATEGORY],
  ])("%s → %s", (title, category) => {
    expect(categorize(title)).toBe(category);
  });

  it("matches whole words only, case-insensitively, ignoring a trailing full stop", () => {
    expect(titleWords("Pink  t-light holder.")).toEqual(["PINK", "T-LIGHT", "HOLDER"]);
    expect(categorize("mugshot frame")).toBe("Home Decor"); // MUGSHOT is not MUG; FRAME is decor
    expect(categorize("bracelet.")).toBe("Jewellery");
  });

  it("has no keyword that an earlier rule of another category already claims", () => {
    const owner = new Map<string, string>();
    for (const rule of CATEGORY_RULES) {
      for (const keyword of rule.keywords) {
        const first = owner.get(keyword);
        if (first !== undefined) expect(first, keyword).toBe(rule.category);
        else owner.set(keyword, rule.category);
      }
    }
  });
});

describe("tagsOf", () => {
  it("keeps colours and category keywords in title order, lower case, deduplicated, bounded", () => {
    expect(tagsOf("WHITE HANGING HEART T-LIGHT HOLDER")).toEqual(["white", "hanging", "heart", "t-light", "holder"]);
    expect(tagsOf("RED RED MUG")).toEqual(["red", "mug"]);
    expect(tagsOf("SET OF 3 NOTHING")).toEqual([]);
    const long = "RED PINK BLUE WHITE BLACK GREEN IVORY CREAM SILVER GOLD MUG";
    expect(tagsOf(long)).toHaveLength(MAX_TAGS);
  });
});

describe("UCI Online Retail mapping", () => {
  const header = [...UCI_COLUMNS];
  const raw = [
    [
      "536365",
      "85123A",
      "WHITE HANGING HEART T-LIGHT HOLDER",
      "6",
      "2010-12-01T08:26:00Z",
      "2.55",
      "17850",
      "United Kingdom",
    ],
    ["536365", "POST", "POSTAGE", "1", "2010-12-01T08:26:00Z", "18", "17850", "United Kingdom"],
    ["536366", "85123A", "WHITE HANGING HEART T-LIGHT HOLDER", "2", "2010-12-01T09:00:00Z", "2.95", "", "France"],
    ["536367", "85123A", "CREAM HANGING HEART T-LIGHT HOLDER", "1", "2010-12-01T10:00:00Z", "3.25", "12583", "France"],
    [
      "C536368",
      "85123A",
      "WHITE HANGING HEART T-LIGHT HOLDER",
      "-1",
      "2010-12-01T11:00:00Z",
      "2.55",
      "12583",
      "France",
    ],
    ["536365", "22633", "HAND WARMER UNION JACK", "6", "2010-12-01T08:26:00Z", "1.85", "17850", "United Kingdom"],
    ["536369", "22633", "", "1", "2010-12-01T12:00:00Z", "0", "", "Unspecified"],
  ];
  const lines = () => {
    const numberer = new LineNumberer();
    return raw.map((fields) => numberer.line(fields));
  };

  it("checks the header and numbers lines within their invoice", () => {
    expect(() => checkHeader(header)).not.toThrow();
    expect(() => checkHeader(["a", "b"])).toThrow(/not the UCI Online Retail layout/);
    expect(lines().map((l) => `${l.invoice}#${l.lineNo}`)).toEqual([
      "536365#1",
      "536365#2",
      "536366#1",
      "536367#1",
      "C536368#1",
      "536365#3",
      "536369#1",
    ]);
    expect(messageIdOf({ invoice: "536365", lineNo: 3 })).toBe("uci-536365-3");
  });

  it("builds the catalogue from sales: most frequent description, median price, keyword category", () => {
    expect(isProductCode("POST")).toBe(false);
    expect(isProductCode("gift_0001_20")).toBe(false);
    expect(isProductCode("85123A")).toBe(true);
    const builder = new CatalogBuilder();
    for (const line of lines()) builder.add(line);
    const items = builder.items();
    expect(items.map((i) => i.id)).toEqual(["22633", "85123A"]);
    expect(items[1]).toMatchObject({
      title: "WHITE HANGING HEART T-LIGHT HOLDER",
      price: 2.95, // median of 2.55, 2.95, 3.25 (the cancellation does not count)
      category: "Candles & Lights",
      currency: "GBP",
      inStock: true,
      visible: true,
    });
    expect(items[0]).toMatchObject({ title: "HAND WARMER UNION JACK", category: "Accessories", price: 1.85 });
  });

  it("turns a customer's sale line into an Order Completed event whose rows the loader would write", () => {
    const builder = new CatalogBuilder();
    const all = lines();
    for (const line of all) builder.add(line);
    const byId = new Map(builder.items().map((i) => [i.id, i]));
    const events = all.map((line) => purchaseEvent(line, byId.get(line.stockCode)));
    // Postage, a line without a customer, a cancellation and a zero-price line are not purchases.
    expect(events.map((e) => e?.messageId ?? null)).toEqual([
      "uci-536365-1",
      null,
      null,
      "uci-536367-1",
      null,
      "uci-536365-3",
      null,
    ]);
    const event = events[0];
    if (!event) throw new Error("expected an event");
    expect(event).toMatchObject({
      type: "track",
      event: "Order Completed",
      userId: "17850",
      timestamp: "2010-12-01T08:26:00.000Z",
      context: { location: { country: "GB" } },
    });
    const rows = warehouseRows(event);
    expect(rows.event).toMatchObject({
      userKey: "u:17850",
      country: "GB",
      productId: "85123A",
      sourceId: "uci-online-retail",
    });
    expect(rows.interactions).toEqual([
      {
        messageId: "uci-536365-1",
        position: 0,
        userKey: "u:17850",
        productId: "85123A",
        kind: "purchase",
        weight: 5,
        quantity: 6,
        price: 2.55,
        orderId: "536365",
        eventTime: "2010-12-01T08:26:00.000Z",
      },
    ]);
    // Deterministic: the same line gives the same event.
    expect(purchaseEvent(all[0] as (typeof all)[number], byId.get("85123A"))).toEqual(event);
  });
});
