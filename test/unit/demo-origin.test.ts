// The demo store's origin (scripts/lib/demo-origin.ts) on loopback: what a browser may send it — a cookie or a
// path that is not valid percent-encoding — is an empty cart or an unknown product, never a 500.
import { afterAll, beforeAll, expect, it } from "vitest";
import { startDemoOrigin } from "../../scripts/lib/demo-origin.ts";

const product = {
  id: "85123A",
  title: "WHITE HANGING HEART",
  category: "Candles",
  price: 2.95,
  currency: "GBP",
  inStock: true,
};
let origin: Awaited<ReturnType<typeof startDemoOrigin>>;

beforeAll(async () => {
  origin = await startDemoOrigin({ products: new Map([[product.id, product]]), bestsellers: [product.id] });
});
afterAll(async () => {
  await origin.close();
});

it("reads a demo_cart cookie that is not valid percent-encoding as an empty cart", async () => {
  const cookie = "demo_cart=85123A%2C%E0%A4%A";
  const cart = await fetch(`${origin.url}/cart`, { headers: { cookie } });
  await cart.text();
  expect(cart.status).toBe(200);
  const add = await fetch(`${origin.url}/cart/add`, {
    method: "POST",
    headers: { cookie, "content-type": "application/x-www-form-urlencoded" },
    body: "product_id=85123A",
    redirect: "manual",
  });
  await add.text();
  expect(add.status).toBe(303);
  // The cart starts over with the product added.
  expect(decodeURIComponent(/demo_cart=([^;]*)/.exec(add.headers.get("set-cookie") ?? "")?.[1] ?? "")).toBe("85123A");
});

it("answers 404 for a product path that is not valid percent-encoding", async () => {
  const res = await fetch(`${origin.url}/products/%E0%A4%A`);
  await res.text();
  expect(res.status).toBe(404);
  const known = await fetch(`${origin.url}/products/85123A`);
  await known.text();
  expect(known.status).toBe(200);
});
