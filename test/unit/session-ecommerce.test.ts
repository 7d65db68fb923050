// The Segment e-commerce v2 → interaction mapping (src/session/ecommerce.ts).
import { describe, expect, it } from "vitest";
import type { CollectedEvent } from "../../src/collect/event.ts";
import { eventKey, interpret, productOf, recentEffects, tokenValue } from "../../src/session/ecommerce.ts";
import { priceBand } from "../../src/session/weights.ts";
import { collectedEvent } from "../support/events.ts";

function ev(type: CollectedEvent["type"], event: string | null, properties: Record<string, unknown>): CollectedEvent {
  return collectedEvent({ type, event, properties });
}
const track = (name: string, props: Record<string, unknown> = {}) => ev("track", name, props);

describe("interpret", () => {
  it.each([
    ["Product Clicked", "click"],
    ["Product Viewed", "view"],
    ["Product Added", "add_to_cart"],
    ["Product Removed", "remove_from_cart"],
    ["Product Added to Wishlist", "wishlist"],
    ["product_viewed", "view"],
    ["Viewed Product", "view"],
    ["  product   ADDED ", "add_to_cart"],
  ])("maps %s to %s with the product's fields and tokens", (name, kind) => {
    const [i, ...rest] = interpret(
      track(name, {
        product_id: 17,
        category: " Home & Garden ",
        brand: "ACME",
        price: "120",
        tags: ["Eco", "eco", " "],
      }),
    );
    expect(rest).toEqual([]);
    expect(i).toEqual({
      kind,
      productId: "17",
      category: "Home & Garden",
      brand: "ACME",
      price: 120,
      query: null,
      tokens: ["category:home & garden", "brand:acme", "tag:eco", "price:100-250"],
    });
  });

  it("reads searches, list views, cart views and checkouts", () => {
    expect(interpret(track("Products Searched", { query: "  Blue  Jeans " }))).toMatchObject([
      { kind: "search", query: "blue jeans", tokens: [] },
    ]);
    expect(interpret(track("Products Searched", { query: "" }))).toEqual([]);
    expect(
      interpret(track("Product List Viewed", { category: "Deals", products: [{ product_id: "x" }] })),
    ).toMatchObject([{ kind: "list_view", category: "Deals", productId: null, tokens: ["category:deals"] }]);
    expect(interpret(track("Cart Viewed", { products: [{ product_id: "x" }, { product_id: "y" }] }))).toMatchObject([
      { kind: "cart_view", productId: null },
    ]);
    expect(interpret(track("Checkout Started", { order_id: "o" }))).toMatchObject([{ kind: "checkout" }]);
  });

  it("turns Order Completed into one purchase per product", () => {
    const out = interpret(
      track("Order Completed", {
        order_id: "o1",
        revenue: 30,
        products: [{ product_id: "a", category: "X", price: 10, quantity: 2 }, { productId: "b", brand: "Y" }, "junk"],
      }),
    );
    expect(out.map((i) => [i.kind, i.productId])).toEqual([
      ["purchase", "a"],
      ["purchase", "b"],
    ]);
    expect(interpret(track("Order Completed", { order_id: "o2" }))).toMatchObject([
      { kind: "purchase", productId: null },
    ]);
  });

  it("reads a product from page and screen calls (product_id or productId)", () => {
    expect(interpret(ev("page", null, { productId: "p9", category: "Docs" }))).toMatchObject([
      { kind: "view", productId: "p9" },
    ]);
    expect(interpret(ev("screen", null, { product_id: "p8" }))).toMatchObject([{ kind: "view", productId: "p8" }]);
    expect(interpret(ev("page", null, { path: "/about" }))).toEqual([]);
  });

  it("gives everything else no interaction", () => {
    expect(interpret(track("Signed Up"))).toEqual([]);
    expect(interpret(ev("identify", null, {}))).toEqual([]);
    expect(interpret(ev("alias", null, {}))).toEqual([]);
    expect(interpret(track("Product Viewed", {}))).toEqual([]);
  });

  it("takes categories[] and a comma-separated tag list, bounded", () => {
    const p = productOf({ product_id: "p", categories: ["A", "B"], tags: "x, y" });
    expect(p.tokens).toEqual(["category:a", "category:b", "tag:x", "tag:y"]);
    const many = productOf({ product_id: "p", tags: Array.from({ length: 20 }, (_, i) => `t${i}`) });
    expect(many.tokens).toHaveLength(8);
  });
});

describe("recentEffects", () => {
  const i = (kind: Parameters<typeof recentEffects>[0]["kind"], productId: string | null = "p") => ({
    kind,
    productId,
    category: null,
    brand: null,
    price: null,
    query: kind === "search" ? "q" : null,
    tokens: [],
  });
  it("adds views, carts, wishlists and purchases; removals and purchases leave the cart", () => {
    expect(recentEffects(i("view"))).toEqual([{ kind: "viewed", op: "add", value: "p" }]);
    expect(recentEffects(i("add_to_cart"))).toEqual([{ kind: "carted", op: "add", value: "p" }]);
    expect(recentEffects(i("remove_from_cart"))).toEqual([{ kind: "carted", op: "remove", value: "p" }]);
    expect(recentEffects(i("wishlist"))).toEqual([{ kind: "wishlisted", op: "add", value: "p" }]);
    expect(recentEffects(i("purchase"))).toEqual([
      { kind: "purchased", op: "add", value: "p" },
      { kind: "carted", op: "remove", value: "p" },
    ]);
    expect(recentEffects(i("search", null))).toEqual([{ kind: "search", op: "add", value: "q" }]);
    expect(recentEffects(i("click"))).toEqual([]);
    expect(recentEffects(i("view", null))).toEqual([]);
  });
});

describe("helpers", () => {
  it("normalises names and token values", () => {
    expect(eventKey(" Product_List  Viewed ")).toBe("product list viewed");
    expect(tokenValue("  Big   Shoes ")).toBe("big shoes");
    expect(tokenValue("")).toBeNull();
    expect(tokenValue({})).toBeNull();
    expect(tokenValue("x".repeat(500))).toHaveLength(100);
  });

  it("puts prices in documented bands", () => {
    expect(priceBand(0)).toBe("0-10");
    expect(priceBand(9.99)).toBe("0-10");
    expect(priceBand(10)).toBe("10-25");
    expect(priceBand(999)).toBe("500-1000");
    expect(priceBand(5000)).toBe("1000+");
    expect(priceBand(-1)).toBeNull();
    expect(priceBand(Number.NaN)).toBeNull();
  });
});
