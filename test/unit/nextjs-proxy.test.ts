// The Next.js proxy example (examples/nextjs-proxy/proxy.ts, docs/storefront.md#nextjs) with the real client of
// src/client answering through a stubbed fetch. Next.js is not installed here: `next/server` is stubbed to what the
// proxy uses, and `lastmile/client` resolves to src/client. The proxy must never throw (a thrown proxy breaks the
// page), whatever Lastmile answers and whatever the URL.
import { afterEach, expect, it, vi } from "vitest";
import type { ClientAnswer } from "../../src/client/index.ts";

vi.mock("next/server", () => ({
  NextResponse: {
    next: (init: { request: { headers: Headers } }) => ({ init, cookies: { set() {} } }),
  },
}));
vi.mock("lastmile/client", async () => await import("../../src/client/index.ts"));

// Imported by a path the type-checker does not follow: tsconfig.json leaves the example out (no Next.js types here).
const PROXY = "../../examples/nextjs-proxy/proxy.ts";
type Proxied = { init: { request: { headers: Headers } } };
const { proxy } = (await import(PROXY)) as { proxy: (request: unknown) => Promise<Proxied> };

afterEach(() => vi.restoreAllMocks());

/** What the proxy reads of a NextRequest. */
function nextRequest(pathname: string, anonymousId = "anon-12345678", headers: Record<string, string> = {}) {
  return {
    headers: new Headers(headers),
    cookies: { get: () => ({ value: anonymousId }) },
    nextUrl: new URL(`http://store.test${pathname}`),
    signal: new AbortController().signal,
  };
}

/** The header as the page reads it (the example's README): percent-encoded JSON. */
function recommendationsOf(response: Proxied): Pick<ClientAnswer, "recId" | "placement" | "fallback"> & {
  items: string[];
} {
  const raw = response.init.request.headers.get("x-lastmile-recommendations");
  expect(raw).not.toBeNull();
  return JSON.parse(decodeURIComponent(raw ?? ""));
}

it("passes Lastmile's answer to the page when a product id is not Latin-1", async () => {
  vi.spyOn(globalThis, "fetch").mockImplementation(async () =>
    Response.json({
      recId: "r1",
      placement: "home",
      items: [
        { productId: "商品-1", score: 1, reasons: ["popular"] },
        { productId: "café", score: 0.5, reasons: ["popular"] },
      ],
      degraded: [],
    }),
  );
  const response = await proxy(nextRequest("/"));
  expect(recommendationsOf(response)).toEqual({
    recId: "r1",
    placement: "home",
    fallback: false,
    items: ["商品-1", "café"],
  });
});

it("does not throw on a product URL with a malformed escape: not a product page", async () => {
  const fetched = vi.spyOn(globalThis, "fetch").mockImplementation(async () => new Response("down", { status: 503 }));
  const response = await proxy(nextRequest("/products/%E0%A4%A"));
  expect(response.init.request.headers.get("x-lastmile-recommendations")).toBeNull();
  expect(fetched).not.toHaveBeenCalled();
  // A well-formed escape is a product page.
  const product = await proxy(nextRequest("/products/caf%C3%A9"));
  expect(recommendationsOf(product)).toMatchObject({ fallback: true, recId: null, placement: "pdp" });
  expect(fetched.mock.calls.map(([input]) => String(input instanceof Request ? input.url : input))).toEqual([
    expect.stringContaining("productId=caf%C3%A9"),
  ]);
});

it("hands out a new anonymous id for a cookie that is no such id, instead of throwing", async () => {
  vi.spyOn(globalThis, "fetch").mockImplementation(async () => new Response("down", { status: 503 }));
  // Next.js decodes cookie values: "%E5%95%86" arrives as "商", which no header may carry.
  const response = await proxy(nextRequest("/", "商品"));
  const id = response.init.request.headers.get("x-lastmile-anonymous-id");
  expect(id).toMatch(/^[0-9a-f-]{36}$/);
  const kept = await proxy(nextRequest("/", "anon-12345678"));
  expect(kept.init.request.headers.get("x-lastmile-anonymous-id")).toBe("anon-12345678");
});

it("does not ask Lastmile for a prefetch (an unseen page would count as shown); the anonymous id still passes", async () => {
  const fetched = vi
    .spyOn(globalThis, "fetch")
    .mockImplementation(async () => Response.json({ recId: "r1", placement: "pdp", items: [], degraded: [] }));
  const prefetches: Array<Record<string, string>> = [
    { rsc: "1", "next-router-prefetch": "1" }, // next/link, App Router
    { "x-middleware-prefetch": "1" }, // next/link, Pages Router
    { "sec-purpose": "prefetch;prerender" }, // the browser's speculation rules
    { purpose: "prefetch" },
  ];
  for (const headers of prefetches) {
    const response = await proxy(nextRequest("/products/p2", "anon-12345678", headers));
    expect(response.init.request.headers.get("x-lastmile-recommendations"), JSON.stringify(headers)).toBeNull();
    expect(response.init.request.headers.get("x-lastmile-anonymous-id")).toBe("anon-12345678");
  }
  expect(fetched).not.toHaveBeenCalled();
  // The page itself, when the visitor follows the link, is asked for.
  await proxy(nextRequest("/products/p2", "anon-12345678", { rsc: "1" }));
  expect(fetched).toHaveBeenCalledTimes(1);
});
