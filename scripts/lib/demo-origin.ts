// The demo store's origin: a small Node HTTP server that renders a shop from the catalogue in Postgres (the UCI
// Online Retail products the dev stack seeds). It knows nothing about Lastmile beyond the markup contract of the
// storefront Worker in front of it (examples/storefront-worker, docs/storefront.md):
//   <div data-lastmile-placement="pdp" data-product-id="…" data-lastmile-fallback="id,id,…">  a block to fill
//   <form data-lastmile-event="Product Added" data-product-id="…">                              an event to send
// and a product API the Worker renders the blocks from: GET /api/products?ids=a,b,c.
//   /                  home: the bestsellers and a home placement
//   /products/:id      product page: add to cart, a pdp placement
//   /cart              the cart (a cookie) and a cart placement;  POST /cart/add adds a product
//   /experiments       the running experiments' reports (Lastmile's admin API; local demo only: it holds the admin key)
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { type DbSettings, openPool } from "../../src/stores/db.ts";
import { LOOPBACK } from "./ports.ts";

export interface DemoProduct {
  id: string;
  title: string;
  category: string | null;
  price: number | null;
  currency: string | null;
  inStock: boolean;
}

export interface DemoOrigin {
  url: string;
  port: number;
  products: number;
  close(): Promise<void>;
}

export const CART_COOKIE = "demo_cart";
const MAX_CART_ITEMS = 50;
const BESTSELLERS = 24;

/** The visible catalogue and the bestsellers (most purchased products), read once at start. */
export async function loadDemoCatalog(
  settings: DbSettings,
): Promise<{ products: Map<string, DemoProduct>; bestsellers: string[] }> {
  const pool = openPool(settings);
  try {
    const rows = await pool.query<{
      id: string;
      title: string;
      category: string | null;
      price: number | null;
      currency: string | null;
      in_stock: boolean;
    }>("select id, title, category, price, currency, in_stock from catalog where visible order by id");
    const top = await pool.query<{ product_id: string }>(
      `select i.product_id from interactions i join catalog c on c.id = i.product_id
        where i.kind = 'purchase' and c.visible and c.in_stock
        group by i.product_id order by count(*) desc, i.product_id limit $1`,
      [BESTSELLERS],
    );
    const products = new Map<string, DemoProduct>();
    for (const r of rows.rows) {
      products.set(r.id, {
        id: r.id,
        title: r.title,
        category: r.category,
        price: r.price,
        currency: r.currency,
        inStock: r.in_stock,
      });
    }
    const bestsellers = top.rows.map((r) => r.product_id);
    // A catalogue without purchases still has a front page.
    if (bestsellers.length === 0) bestsellers.push(...[...products.keys()].slice(0, BESTSELLERS));
    return { products, bestsellers };
  } finally {
    await pool.end();
  }
}

const escapeHtml = (text: string) =>
  text.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c] ?? c);

export function formatPrice(price: number | null, currency: string | null): string {
  if (price === null) return "";
  try {
    return new Intl.NumberFormat("en-GB", { style: "currency", currency: currency ?? "GBP" }).format(price);
  } catch {
    return price.toFixed(2);
  }
}

/** Title case for the catalogue's upper-case names ("WHITE HANGING HEART" → "White Hanging Heart"). */
export function displayTitle(title: string): string {
  return title.toLowerCase().replace(/(^|[\s-])\p{L}/gu, (m) => m.toUpperCase());
}

export const productPath = (id: string) => `/products/${encodeURIComponent(id)}`;

/** Percent-decoded text, or null when it is not valid percent-encoding. */
function decoded(text: string): string | null {
  try {
    return decodeURIComponent(text);
  } catch {
    return null;
  }
}

/** The cart's product ids; a cookie that is not valid percent-encoding is an empty cart. */
function readCart(req: IncomingMessage): string[] {
  const cookie = req.headers.cookie ?? "";
  const match = new RegExp(`(?:^|;\\s*)${CART_COOKIE}=([^;]*)`).exec(cookie);
  if (!match?.[1]) return [];
  return (decoded(match[1]) ?? "")
    .split(",")
    .filter((id) => id.length > 0)
    .slice(0, MAX_CART_ITEMS);
}

function page(title: string, body: string): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(title)} · Lastmile demo store</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 0; color: #1d1d1f; background: #fafafa; }
  header { display: flex; gap: 1.5rem; align-items: center; padding: 0.8rem 2rem; background: #14213d; }
  header a { color: #fff; text-decoration: none; }
  header .brand { font-weight: 700; font-size: 1.1rem; margin-right: auto; }
  main { max-width: 1100px; margin: 0 auto; padding: 1.5rem 2rem 3rem; }
  .grid, .lm-recs ul { display: grid; grid-template-columns: repeat(auto-fill, minmax(190px, 1fr)); gap: 0.8rem;
    list-style: none; padding: 0; }
  .card, .lm-item { background: #fff; border: 1px solid #e3e3e3; border-radius: 8px; padding: 0.8rem; }
  .card a, .lm-item a { color: #14213d; font-weight: 600; text-decoration: none; }
  .price, .lm-price { color: #555; display: block; margin-top: 0.3rem; }
  .category { color: #777; font-size: 0.85rem; }
  .lm-recs { margin-top: 2rem; }
  .lm-reasons { display: block; color: #999; font-size: 0.75rem; margin-top: 0.3rem; }
  button { background: #fca311; border: 0; border-radius: 6px; padding: 0.6rem 1.2rem; font-size: 1rem; cursor: pointer; }
  .placement { min-height: 2rem; }
  table.report { border-collapse: collapse; font-size: 0.85rem; background: #fff; }
  table.report td, table.report th { border: 1px solid #e3e3e3; padding: 0.3rem 0.5rem; text-align: left; }
</style>
</head>
<body>
<header><a class="brand" href="/">Lastmile demo store</a><a href="/">Home</a><a href="/cart" id="cart-link">Cart</a></header>
<main>
${body}
</main>
</body>
</html>`;
}

function card(p: DemoProduct): string {
  return `<li class="card" data-product-id="${escapeHtml(p.id)}"><a href="${productPath(p.id)}">${escapeHtml(
    displayTitle(p.title),
  )}</a><span class="price">${formatPrice(p.price, p.currency)}</span>${
    p.category ? `<span class="category">${escapeHtml(p.category)}</span>` : ""
  }</li>`;
}

/**
 * A placement for the storefront Worker to fill. What it contains is shown when the Worker is not in front (or
 * Lastmile and the Worker's fallback both failed): the origin's own bestsellers.
 */
function placement(
  name: string,
  title: string,
  fallback: DemoProduct[],
  extra: Record<string, string | undefined> = {},
): string {
  const attributes = Object.entries(extra)
    .filter((e): e is [string, string] => e[1] !== undefined)
    .map(([k, v]) => ` ${k}="${escapeHtml(v)}"`)
    .join("");
  return `<div class="placement" data-lastmile-placement="${name}" data-lastmile-title="${escapeHtml(title)}"${attributes}
  data-lastmile-fallback="${escapeHtml(fallback.map((p) => p.id).join(","))}">
<section class="origin-recs"><h2>${escapeHtml(title)}</h2><ul class="grid">${fallback.map(card).join("")}</ul></section>
</div>`;
}

/** Where the experiments page reads its reports (the local Lastmile Worker and its admin key). */
export interface ReportSource {
  lastmileUrl: string;
  adminKey: string;
}

const pct = (x: number) => `${(100 * x).toFixed(1)} %`;
const money = (x: number) => x.toFixed(2);

interface ReportArm {
  arm: string;
  share: number;
  visitors: number;
  exposures: number;
  ctr: { rate: number; low: number; high: number };
  addToCartRate: { rate: number; low: number; high: number };
  conversion: { rate: number; low: number; high: number };
  revenuePerVisitor: { mean: number; low: number; high: number } | null;
  /** pValue null below two visitors per arm (docs/experiments.md#report). */
  vsControl: {
    ctr: { difference: number; pValue: number | null };
    conversion: { difference: number; pValue: number | null };
  } | null;
}

interface Report {
  experiment: { id: string; placement: string; mode: string; holdout: number };
  control: string | null;
  arms: ReportArm[];
  srm: { pValue: number; mismatch: boolean } | null;
  crossed?: { visitors: number; exposures: number };
  interleaving: { a: string; b: string; wins: number; losses: number; ties: number; n: number; pValue: number } | null;
}

/** The experiments page: each experiment of the active document with its report, as tables. */
async function experimentsPage(source: ReportSource): Promise<string> {
  const headers = { authorization: `Bearer ${source.adminKey}` };
  const doc = (await (await fetch(`${source.lastmileUrl}/v1/admin/experiments`, { headers })).json()) as {
    version: string;
    config: { experiments: Array<{ id: string }> };
  };
  const experiments = doc.config?.experiments ?? [];
  if (experiments.length === 0) {
    return `<h1>Experiments</h1><p>No experiment is configured (document ${escapeHtml(doc.version ?? "default")}).
Create one with <code>PUT /v1/admin/experiments</code> (docs/experiments.md).</p>`;
  }
  const sections: string[] = [];
  for (const e of experiments) {
    const res = await fetch(`${source.lastmileUrl}/v1/admin/experiments/${encodeURIComponent(e.id)}/report`, {
      headers,
    });
    if (!res.ok) {
      sections.push(`<h2>${escapeHtml(e.id)}</h2><p>No report (${res.status}): ${escapeHtml(await res.text())}</p>`);
      continue;
    }
    const r = (await res.json()) as Report;
    const rows = r.arms
      .map(
        (a) => `<tr><td>${escapeHtml(a.arm)}${a.arm === r.control ? " (control)" : ""}</td><td>${pct(a.share)}</td>
<td>${a.visitors}</td><td>${a.exposures}</td>
<td>${pct(a.ctr.rate)} [${pct(a.ctr.low)}, ${pct(a.ctr.high)}]</td>
<td>${pct(a.addToCartRate.rate)}</td>
<td>${pct(a.conversion.rate)} [${pct(a.conversion.low)}, ${pct(a.conversion.high)}]</td>
<td>${a.revenuePerVisitor ? `${money(a.revenuePerVisitor.mean)} [${money(a.revenuePerVisitor.low)}, ${money(a.revenuePerVisitor.high)}]` : "–"}</td>
<td>${a.vsControl ? `CTR ${a.vsControl.ctr.difference >= 0 ? "+" : ""}${pct(a.vsControl.ctr.difference)} (p ${a.vsControl.ctr.pValue === null ? "–" : a.vsControl.ctr.pValue.toFixed(3)})` : "–"}</td></tr>`,
      )
      .join("");
    const srm = r.srm
      ? `<p>Sample ratio: p = ${r.srm.pValue.toFixed(4)}${r.srm.mismatch ? " — <strong>mismatch: the arms are not comparable</strong>" : " (consistent with the configured split)"}</p>`
      : "<p>Sample ratio: no visitors yet.</p>";
    const crossed = r.crossed?.visitors
      ? `<p>${r.crossed.visitors} visitor(s) seen in more than one arm: counted in their first arm only.</p>`
      : "";
    const il = r.interleaving
      ? `<p>Interleaving: ${escapeHtml(r.interleaving.a)} won ${r.interleaving.wins}, ${escapeHtml(r.interleaving.b)} won ${r.interleaving.losses}, ties ${r.interleaving.ties} (sign test p = ${r.interleaving.pValue.toFixed(4)})</p>`
      : "";
    sections.push(`<h2>${escapeHtml(r.experiment.id)} <small>${escapeHtml(r.experiment.placement)} · ${escapeHtml(r.experiment.mode)}</small></h2>
<table class="report"><thead><tr><th>arm</th><th>share</th><th>visitors</th><th>exposures</th><th>CTR [95 %]</th>
<th>add to cart</th><th>conversion [95 %]</th><th>revenue / visitor [95 %]</th><th>vs control</th></tr></thead>
<tbody>${rows}</tbody></table>${srm}${crossed}${il}`);
  }
  return `<h1>Experiments</h1>
<p>Document ${escapeHtml(doc.version)}. Exposures and events count once the warehouse has loaded them (the refresh
cron, or <code>POST /v1/admin/refresh</code>).</p>${sections.join("\n")}`;
}

export function startDemoOrigin(options: {
  products: Map<string, DemoProduct>;
  bestsellers: string[];
  port?: number;
  /** Serves /experiments from these reports (absent: no such page). */
  reports?: ReportSource;
}): Promise<DemoOrigin> {
  const { products } = options;
  const bestsellers = options.bestsellers.map((id) => products.get(id)).filter((p): p is DemoProduct => !!p);
  const fallbackFor = (exclude: string[], n: number) => bestsellers.filter((p) => !exclude.includes(p.id)).slice(0, n);

  const send = (res: ServerResponse, status: number, body: string, headers: Record<string, string> = {}) => {
    res.writeHead(status, { "content-type": "text/html; charset=utf-8", "cache-control": "no-store", ...headers });
    res.end(body);
  };
  const notFound = (res: ServerResponse) => send(res, 404, page("Not found", "<h1>Not found</h1>"));

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "http://origin.invalid");
    const path = url.pathname;
    if (req.method === "GET" && path === "/") {
      send(
        res,
        200,
        page(
          "Home",
          `<h1>Gifts and homeware</h1>
${placement("home", "Picked for you", fallbackFor([], 8))}
<h2>Bestsellers</h2>
<ul class="grid" id="bestsellers">${bestsellers.map(card).join("")}</ul>`,
        ),
      );
      return;
    }
    const productMatch = /^\/products\/([^/]+)$/.exec(path);
    if (req.method === "GET" && productMatch?.[1]) {
      const id = decoded(productMatch[1]);
      const product = id === null ? undefined : products.get(id);
      if (!product) return notFound(res);
      const title = displayTitle(product.title);
      send(
        res,
        200,
        page(
          title,
          `<article id="product" data-product-id="${escapeHtml(product.id)}">
<h1>${escapeHtml(title)}</h1>
<p class="price">${formatPrice(product.price, product.currency)}</p>
${product.category ? `<p class="category">${escapeHtml(product.category)}</p>` : ""}
<p>Item ${escapeHtml(product.id)}${product.inStock ? "" : " · out of stock"}</p>
<form method="post" action="/cart/add" data-lastmile-event="Product Added" data-product-id="${escapeHtml(product.id)}"${
            product.price !== null ? ` data-price="${product.price}"` : ""
          }${product.category ? ` data-category="${escapeHtml(product.category)}"` : ""}>
<input type="hidden" name="product_id" value="${escapeHtml(product.id)}">
<button type="submit" id="add-to-cart">Add to cart</button>
</form>
</article>
${placement("pdp", "You may also like", fallbackFor([product.id], 8), {
  "data-product-id": product.id,
  "data-category": product.category ?? undefined,
  "data-price": product.price === null ? undefined : String(product.price),
})}`,
        ),
      );
      return;
    }
    if (req.method === "GET" && path === "/cart") {
      const cart = readCart(req)
        .map((id) => products.get(id))
        .filter((p): p is DemoProduct => !!p);
      const total = cart.reduce((sum, p) => sum + (p.price ?? 0), 0);
      send(
        res,
        200,
        page(
          "Cart",
          `<h1>Your cart</h1>
${
  cart.length === 0
    ? "<p>Your cart is empty.</p>"
    : `<ul class="grid" id="cart-items">${cart.map(card).join("")}</ul><p>Total ${formatPrice(total, cart[0]?.currency ?? null)}</p>`
}
${placement(
  "cart",
  "Complete your order",
  fallbackFor(
    cart.map((p) => p.id),
    8,
  ),
)}`,
        ),
      );
      return;
    }
    if (req.method === "POST" && path === "/cart/add") {
      let body = "";
      for await (const chunk of req) {
        body += String(chunk);
        if (body.length > 10_000) return send(res, 413, page("Too large", "<h1>Too large</h1>"));
      }
      const id = new URLSearchParams(body).get("product_id") ?? "";
      if (!products.has(id)) return notFound(res);
      const cart = [id, ...readCart(req).filter((x) => x !== id)].slice(0, MAX_CART_ITEMS);
      res.writeHead(303, {
        location: "/cart",
        "set-cookie": `${CART_COOKIE}=${encodeURIComponent(cart.join(","))}; Path=/; SameSite=Lax; HttpOnly`,
        "cache-control": "no-store",
      });
      res.end();
      return;
    }
    if (req.method === "GET" && path === "/experiments" && options.reports) {
      send(res, 200, page("Experiments", await experimentsPage(options.reports)));
      return;
    }
    if (req.method === "GET" && path === "/api/products") {
      const ids = (url.searchParams.get("ids") ?? "")
        .split(",")
        .filter((id) => id.length > 0)
        .slice(0, 100);
      const list = ids
        .map((id) => products.get(id))
        .filter((p): p is DemoProduct => !!p)
        .map((p) => ({
          id: p.id,
          title: displayTitle(p.title),
          url: productPath(p.id),
          price: formatPrice(p.price, p.currency),
          category: p.category,
          inStock: p.inStock,
        }));
      res.writeHead(200, { "content-type": "application/json", "cache-control": "no-store" });
      res.end(JSON.stringify({ products: list }));
      return;
    }
    notFound(res);
  }

  const server: Server = createServer((req, res) => {
    handle(req, res).catch((error: unknown) => {
      if (!res.headersSent) send(res, 500, page("Error", "<h1>Something went wrong</h1>"));
      else res.destroy(error instanceof Error ? error : undefined);
    });
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port ?? 0, LOOPBACK, () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      resolve({
        url: `http://${LOOPBACK}:${port}`,
        port,
        products: products.size,
        close: () =>
          new Promise<void>((done) => {
            server.closeAllConnections();
            server.close(() => done());
          }),
      });
    });
  });
}
