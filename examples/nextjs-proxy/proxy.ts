// Next.js 16 Proxy (the renamed Middleware; it runs on the Node.js runtime) for a store built with Next.js: it asks
// Lastmile for the page's recommendations before the page renders, and passes them to the page in a request header
// (`x-lastmile-recommendations`, percent-encoded JSON, read with `headers()` in a Server Component). Lastmile down
// or slow costs at most the deadline: the client answers the fallback list instead. README.md in this folder shows
// the page side.

// This repository's src/client/index.ts (see README.md for how to make the import resolve).
import { createClient } from "lastmile/client";
import { type NextRequest, NextResponse } from "next/server";

const lastmile = createClient({
  baseUrl: process.env.LASTMILE_URL ?? "http://127.0.0.1:8787",
  serverKey: process.env.LASTMILE_SERVER_KEY ?? "",
  timeoutMs: 150,
  onError: (error, call) => console.warn(`lastmile ${call.method}: ${error.kind} ${error.message}`),
});

/** Shown when Lastmile cannot answer in time: the store's bestsellers. */
const BESTSELLERS = (process.env.STORE_BESTSELLERS ?? "").split(",").filter((id: string) => id.length > 0);

const ANONYMOUS_ID_COOKIE = "lm_aid";
const RECOMMENDATIONS_HEADER = "x-lastmile-recommendations";
/** The visitor's anonymous id for the page (a new one is not in the request's cookies yet). */
const ANONYMOUS_ID_HEADER = "x-lastmile-anonymous-id";
/** What an anonymous id of this proxy looks like (a UUID; the storefront Worker example accepts the same). */
const ANONYMOUS_ID = /^[A-Za-z0-9-]{8,64}$/;

/** The placement of a page, and the product it is about. */
function placementOf(pathname: string): { placement: string; productId?: string } | null {
  if (pathname === "/") return { placement: "home" };
  if (pathname === "/cart") return { placement: "cart" };
  const product = /^\/products\/([^/]+)$/.exec(pathname);
  if (!product?.[1]) return null;
  try {
    return { placement: "pdp", productId: decodeURIComponent(product[1]) };
  } catch {
    return null; // not valid percent-encoding: not a product page of the store
  }
}

/**
 * A prefetch (next/link's of a link in the viewport, or the browser's speculative loading): the visitor may never
 * see the page, so it must not ask Lastmile, whose answer records what it shows as seen.
 */
function isPrefetch(headers: Headers): boolean {
  if (headers.get("next-router-prefetch") === "1" || headers.get("x-middleware-prefetch") === "1") return true;
  return ["purpose", "sec-purpose"].some((name) => (headers.get(name) ?? "").toLowerCase().includes("prefetch"));
}

export async function proxy(request: NextRequest) {
  // An id this proxy handed out, else a new one: a cookie is the client's to write, and a value that is no such id
  // (any text, Next.js decodes it) would make Headers.set throw and break the page.
  const cookie = request.cookies.get(ANONYMOUS_ID_COOKIE)?.value;
  const existing = cookie !== undefined && ANONYMOUS_ID.test(cookie) ? cookie : undefined;
  const anonymousId = existing ?? crypto.randomUUID();
  const requestHeaders = new Headers(request.headers);
  // A client must not be able to inject its own list.
  requestHeaders.delete(RECOMMENDATIONS_HEADER);
  requestHeaders.set(ANONYMOUS_ID_HEADER, anonymousId);

  const page = isPrefetch(request.headers) ? null : placementOf(request.nextUrl.pathname);
  if (page) {
    // No logins here. A store with them passes its logged-in user's userId, taken from its own session: ranking
    // reads exactly the key it is given and does not follow identity merges.
    const answer = await lastmile.recommendations(
      { ...page, anonymousId, limit: 8 },
      { fallback: BESTSELLERS, signal: request.signal },
    );
    // Small enough for a header: the page looks the products up itself. Percent-encoded JSON: a header value must
    // be Latin-1 (Headers.set throws on other characters), and product ids may be anything. The page decodes it
    // with decodeURIComponent before JSON.parse (README.md).
    requestHeaders.set(
      RECOMMENDATIONS_HEADER,
      encodeURIComponent(
        JSON.stringify({
          recId: answer.recId,
          placement: answer.placement,
          fallback: answer.fallback,
          items: answer.items.map((item) => item.productId),
        }),
      ),
    );
  }

  // The modified request headers go to the page (not to the browser).
  const response = NextResponse.next({ request: { headers: requestHeaders } });
  if (!existing) {
    response.cookies.set(ANONYMOUS_ID_COOKIE, anonymousId, {
      path: "/",
      maxAge: 365 * 24 * 3600,
      sameSite: "lax",
      httpOnly: true,
      secure: request.nextUrl.protocol === "https:",
    });
  }
  return response;
}

export const config = {
  matcher: ["/", "/products/:id", "/cart"],
};
