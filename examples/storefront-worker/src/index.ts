// An example storefront Worker in front of a store's origin (docs/storefront.md):
//   - proxies every request to the origin (ORIGIN_URL);
//   - fills each `<div data-lastmile-placement="home|pdp|cart|post_purchase|similar">` of an HTML page with a
//     personalised block, ranked by Lastmile over the Service Binding `LASTMILE` (the `Ranking` entrypoint), or
//     over HTTP with a server key when there is no binding; the element's `data-lastmile-fallback` ids (the
//     origin's bestsellers, say) are shown when Lastmile does not answer in time;
//   - passes the visitor's country (`request.cf.country`) for Lastmile's country segments;
//   - keeps a first-party anonymous id in the `lm_aid` cookie;
//   - sends the visit's events to Lastmile's collection API from the Worker: a page event for every page, Product
//     Viewed for a product page, Product Clicked when a link from a block is followed (its `lm_rec`, `lm_pos` and
//     `lm_pl` parameters carry the answer's recId, the item's position and the placement);
//   - forwards the page's own events (POST /lastmile/v1/track, …: Product Added from the injected script) to the
//     collection API, adding the write key and the anonymous id, so pages hold neither.
import {
  type ClientAnswer,
  createClient,
  DEFAULT_TIMEOUT_MS,
  fallbackAnswer,
  type LastmileClient,
  type RankParams,
  readAttribution,
  withAttribution,
} from "../../../src/client/index.ts";
import type { Ranking } from "../../../src/rank/entrypoint.ts";

export interface StorefrontEnv {
  ORIGIN_URL: string;
  PRODUCTS_API_PATH?: string;
  PRODUCT_PATH?: string;
  RANKING_TIMEOUT_MS?: string;
  /** Ranking over RPC: `services = [{ binding = "LASTMILE", service = "lastmile", entrypoint = "Ranking" }]`. */
  LASTMILE?: Service<Ranking>;
  /** Lastmile's default entrypoint (its HTTP API): where events go. */
  LASTMILE_HTTP?: Fetcher;
  /** Without bindings: Lastmile's URL, and a server key (secret) for the ranking API. */
  LASTMILE_URL?: string;
  LASTMILE_SERVER_KEY?: string;
  LASTMILE_WRITE_KEY: string;
}

const ANONYMOUS_ID_COOKIE = "lm_aid";
const ANONYMOUS_ID_MAX_AGE_S = 365 * 24 * 3600;
/** The collection paths the page may post to under /lastmile/v1/ (docs/collection.md). */
const COLLECT_PATHS = new Set(["track", "page", "identify", "batch", "t", "p", "i", "b"]);
const COLLECT_BODY_LIMIT = 64 * 1024;
/** A page's events forwarded to the collection API give up after this long (504 to the page). */
const FORWARD_TIMEOUT_MS = 3000;
/** One attempt to send events gives up after this long (it goes on in the background past EVENTS_PAGE_WAIT_MS). */
const EVENTS_TIMEOUT_MS = 1000;
/**
 * A send meeting a 5xx, a 429 or a network error (its timeout included) is tried again, in the background: the same
 * events (their messageIds make a repeat a duplicate), after Retry-After or a doubling backoff, EVENTS_ATTEMPTS
 * attempts at most and only while the send can end within EVENTS_RETRY_WINDOW_MS of its start.
 */
const EVENTS_ATTEMPTS = 4;
const EVENTS_RETRY_WINDOW_MS = 5000;
const EVENTS_BACKOFF_MS = 250;
/**
 * The page's last bytes wait at most this long for the events' acknowledgement (normally a few ms), the order of the
 * ranking deadline: a slow or hung collection API must not hold every page. Past it the page completes and the
 * send goes on under ctx.waitUntil (until EVENTS_TIMEOUT_MS); the next page may then not see those events yet.
 */
const EVENTS_PAGE_WAIT_MS = 150;
const PRODUCTS_TIMEOUT_MS = 300;
const DEFAULT_LIMIT = 8;

const escapeHtml = (text: string) =>
  text.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c] ?? c);

const NAMED_ENTITIES: Record<string, string> = { amp: "&", lt: "<", gt: ">", quot: '"', apos: "'" };

/**
 * An attribute's value as the browser reads it. HTMLRewriter gives the raw text between the quotes, entities and
 * all: an origin that writes `data-category="Candles &amp; Lights"` means "Candles & Lights".
 */
function attribute(element: Element, name: string): string | null {
  const raw = element.getAttribute(name);
  if (raw === null || !raw.includes("&")) return raw;
  return raw.replace(/&(?:#(\d{1,7})|#[xX]([0-9a-fA-F]{1,6})|([a-zA-Z]+));/g, (entity, dec, hex, named) => {
    if (named !== undefined) return NAMED_ENTITIES[named] ?? entity;
    const code = dec !== undefined ? Number(dec) : Number.parseInt(hex, 16);
    return code > 0 && code <= 0x10ffff && (code < 0xd800 || code > 0xdfff) ? String.fromCodePoint(code) : entity;
  });
}

/** A cookie's value, or null when it is absent or not valid percent-encoding (a new id is then handed out). */
function cookie(request: Request, name: string): string | null {
  const header = request.headers.get("cookie") ?? "";
  for (const part of header.split(";")) {
    const [k, ...v] = part.trim().split("=");
    if (k !== name) continue;
    try {
      return decodeURIComponent(v.join("="));
    } catch {
      return null;
    }
  }
  return null;
}

/** The visitor's anonymous id: the cookie's, or a new one (set on the response). */
function anonymousId(request: Request): { id: string; isNew: boolean } {
  const existing = cookie(request, ANONYMOUS_ID_COOKIE);
  if (existing && /^[A-Za-z0-9-]{8,64}$/.test(existing)) return { id: existing, isNew: false };
  return { id: crypto.randomUUID(), isNew: true };
}

function idCookie(id: string, url: URL): string {
  const secure = url.protocol === "https:" ? "; Secure" : "";
  return `${ANONYMOUS_ID_COOKIE}=${id}; Path=/; Max-Age=${ANONYMOUS_ID_MAX_AGE_S}; SameSite=Lax; HttpOnly${secure}`;
}

/** The product id of a product URL, by the PRODUCT_PATH pattern ("/products/:id"). */
function productIdOf(pattern: string, path: string): string | null {
  const [before, after = ""] = pattern.split(":id");
  if (before === undefined || !path.startsWith(before) || !path.endsWith(after)) return null;
  const raw = path.slice(before.length, path.length - after.length);
  if (!raw || raw.includes("/")) return null;
  try {
    return decodeURIComponent(raw);
  } catch {
    return null;
  }
}

function lastmileFetch(env: StorefrontEnv): ((request: Request) => Promise<Response>) | null {
  if (env.LASTMILE_HTTP) {
    const binding = env.LASTMILE_HTTP;
    return (request) => binding.fetch(request);
  }
  if (env.LASTMILE_URL) {
    const base = env.LASTMILE_URL.replace(/\/+$/, "");
    return (request) => {
      const url = new URL(request.url);
      return fetch(new Request(`${base}${url.pathname}${url.search}`, request));
    };
  }
  return null;
}

/**
 * The visitor's country as Cloudflare saw it (`request.cf.country`), for the country segments of Lastmile's popular
 * and trending lists; null for none or a code that names no country (`T1`: Tor, `XX`). Lastmile cannot see it
 * itself: over the binding there is no `cf`, and over HTTP its `cf` would be this Worker's subrequest's.
 */
function visitorCountry(request: Request): string | null {
  const country = (request as Request & { cf?: { country?: unknown } }).cf?.country;
  return typeof country === "string" && /^[A-Z]{2}$/.test(country) && country !== "XX" ? country : null;
}

/** The ranking deadline of a page (RANKING_TIMEOUT_MS, else the client's default of 150 ms). */
function rankingTimeout(env: StorefrontEnv): number {
  return Number(env.RANKING_TIMEOUT_MS) > 0 ? Number(env.RANKING_TIMEOUT_MS) : DEFAULT_TIMEOUT_MS;
}

function rankingClient(env: StorefrontEnv): LastmileClient | null {
  const timeoutMs = rankingTimeout(env);
  const onError = (error: { kind: string; message: string }, call: { method: string }) =>
    console.warn(`lastmile ${call.method}: ${error.kind}: ${error.message}; showing the fallback`);
  if (env.LASTMILE) return createClient({ binding: env.LASTMILE, timeoutMs, onError });
  if (env.LASTMILE_URL && env.LASTMILE_SERVER_KEY) {
    return createClient({ baseUrl: env.LASTMILE_URL, serverKey: env.LASTMILE_SERVER_KEY, timeoutMs, onError });
  }
  return null;
}

type Json = Record<string, unknown>;

/** The headers of a call to the collection API: the write key, and the visitor's IP for its rate limit. */
function collectHeaders(env: StorefrontEnv, request: Request): Record<string, string> {
  const headers: Record<string, string> = {
    authorization: `Basic ${btoa(`${env.LASTMILE_WRITE_KEY}:`)}`,
    "content-type": "application/json",
  };
  const ip = request.headers.get("cf-connecting-ip");
  if (ip) headers["cf-connecting-ip"] = ip;
  return headers;
}

/** What one attempt to send came to: done (accepted, or refused for good), or worth another try. */
type Attempt = { retry: false } | { retry: true; reason: string; afterMs: number | null };

/** Retry-After in ms (seconds or an HTTP date), or null when it is absent or unreadable. */
function retryAfterMs(response: Response): number | null {
  const value = response.headers.get("retry-after");
  if (value === null) return null;
  const ms = /^\d+$/.test(value.trim()) ? Number(value) * 1000 : Date.parse(value) - Date.now();
  return Number.isFinite(ms) ? Math.max(0, ms) : null;
}

async function sendOnce(send: (request: Request) => Promise<Response>, init: RequestInit): Promise<Attempt> {
  try {
    const response = await send(new Request("https://lastmile.internal/v1/batch", init));
    await response.body?.cancel();
    if (response.ok) return { retry: false };
    const reason = `HTTP ${response.status}`;
    if (response.status >= 500 || response.status === 429) {
      return { retry: true, reason, afterMs: retryAfterMs(response) };
    }
    console.warn(`lastmile collect: ${reason}`);
    return { retry: false };
  } catch (error) {
    return { retry: true, reason: error instanceof Error ? error.message : String(error), afterMs: null };
  }
}

/**
 * Sends events to the collection API (one batch), retried as EVENTS_ATTEMPTS says; resolves either way, within
 * EVENTS_RETRY_WINDOW_MS.
 */
async function sendEvents(env: StorefrontEnv, request: Request, events: Json[]): Promise<void> {
  const send = lastmileFetch(env);
  if (!send || events.length === 0) return;
  const headers = collectHeaders(env, request);
  const giveUpAt = Date.now() + EVENTS_RETRY_WINDOW_MS;
  for (let attempt = 1; ; attempt++) {
    const outcome = await sendOnce(send, {
      method: "POST",
      headers,
      body: JSON.stringify({ batch: events, sentAt: new Date().toISOString() }),
      signal: AbortSignal.timeout(Math.max(1, Math.min(EVENTS_TIMEOUT_MS, giveUpAt - Date.now()))),
    });
    if (!outcome.retry) return;
    const waitMs = outcome.afterMs ?? EVENTS_BACKOFF_MS * 2 ** (attempt - 1);
    if (attempt >= EVENTS_ATTEMPTS || Date.now() + waitMs >= giveUpAt) {
      console.warn(`lastmile collect: ${outcome.reason}; the events are dropped after ${attempt} attempt(s)`);
      return;
    }
    console.warn(`lastmile collect: ${outcome.reason}; trying again in ${waitMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, waitMs));
  }
}

/** Waits for `work`, or `ms` at most (what `work` does then goes on). */
async function within(work: Promise<unknown>, ms: number): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    await Promise.race([work, new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

function event(base: { anonymousId: string; request: Request }, fields: Json): Json {
  return {
    anonymousId: base.anonymousId,
    messageId: crypto.randomUUID(),
    timestamp: new Date().toISOString(),
    context: { userAgent: base.request.headers.get("user-agent") ?? undefined },
    ...fields,
  };
}

/** The body's text, read up to `limit` bytes; null as soon as it is declared or read past them (the rest unread). */
async function readLimited(request: Request, limit: number): Promise<string | null> {
  if (Number(request.headers.get("content-length")) > limit) return null;
  if (!request.body) return "";
  const reader = request.body.getReader();
  const decoder = new TextDecoder();
  let text = "";
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return text + decoder.decode();
    total += value.byteLength;
    if (total > limit) {
      reader.cancel().catch(() => {});
      return null;
    }
    text += decoder.decode(value, { stream: true });
  }
}

/** An id as collection reads one: a non-empty string or a finite number (null, "" and the rest name no one). */
const isId = (value: unknown) =>
  (typeof value === "string" && value !== "") || (typeof value === "number" && Number.isFinite(value));

/** Whether the event names its user: else the cookie's anonymous id is filled in. */
const namesSomeone = (e: Json) => isId(e.userId) || isId(e.anonymousId);

/** POST /lastmile/v1/<path> from the page: the write key and the anonymous id are added here. */
async function forwardCollect(env: StorefrontEnv, request: Request, path: string, aid: string): Promise<Response> {
  if (request.method !== "POST" || !COLLECT_PATHS.has(path)) return new Response("not found", { status: 404 });
  const send = lastmileFetch(env);
  if (!send) return new Response("collection is not configured", { status: 503 });
  const text = await readLimited(request, COLLECT_BODY_LIMIT);
  if (text === null) return new Response("payload too large", { status: 413 });
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    return new Response("invalid JSON", { status: 400 });
  }
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    return new Response("expected a JSON object", { status: 400 });
  }
  const withId = (e: unknown) =>
    typeof e === "object" && e !== null && !namesSomeone(e as Json) ? { ...e, anonymousId: aid } : e;
  const envelope = body as Json;
  delete envelope.writeKey;
  const forwarded = Array.isArray(envelope.batch)
    ? { ...envelope, batch: envelope.batch.map(withId) }
    : withId(envelope);
  const headers = collectHeaders(env, request);
  let response: Response;
  try {
    response = await send(
      new Request(`https://lastmile.internal/v1/${path}`, {
        method: "POST",
        headers,
        body: JSON.stringify(forwarded),
        signal: AbortSignal.timeout(FORWARD_TIMEOUT_MS),
      }),
    );
  } catch (error) {
    return forwardFailed(error);
  }
  return new Response(response.body, {
    status: response.status,
    headers: { "content-type": response.headers.get("content-type") ?? "application/json" },
  });
}

/** The page's answer when the collection API cannot be reached (502) or does not answer in time (504). */
function forwardFailed(error: unknown): Response {
  const timedOut = error instanceof Error && error.name === "TimeoutError";
  const message = error instanceof Error ? error.message : String(error);
  console.warn(`lastmile collect (forwarded): ${message}`);
  const [status, code] = timedOut ? [504, "collection_timeout"] : [502, "collection_unreachable"];
  const detail = timedOut ? `no answer within ${FORWARD_TIMEOUT_MS} ms` : "the collection API could not be reached";
  return Response.json({ error: { code, message: detail } }, { status });
}

interface ProductInfo {
  id: string;
  title: string;
  url: string;
  price?: string;
}

/** A string, or a finite number written as a string; anything else is undefined. */
function textOf(value: unknown): string | undefined {
  if (typeof value === "string") return value;
  if (typeof value === "number" && Number.isFinite(value)) return String(value);
  return undefined;
}

/**
 * One product of the origin's API as a block shows it, or null when it cannot be shown. `id`: a string or a number;
 * `title` and `url`: non-empty strings; `price` (optional): a string shown as it is ("£2.95") or a number (2.95);
 * any other price is left out.
 */
function productOf(value: unknown): ProductInfo | null {
  if (typeof value !== "object" || value === null) return null;
  const v = value as Record<string, unknown>;
  const id = textOf(v.id);
  if (id === undefined || id === "") return null;
  if (typeof v.title !== "string" || v.title.trim() === "") return null;
  if (typeof v.url !== "string" || v.url.trim() === "") return null;
  const price = textOf(v.price);
  return { id, title: v.title, url: v.url, ...(price ? { price } : {}) };
}

/** Titles, prices and URLs of products from the origin's product API; null when it does not answer. */
async function productInfo(env: StorefrontEnv, ids: string[]): Promise<Map<string, ProductInfo> | null> {
  if (ids.length === 0) return new Map();
  const url = new URL(env.PRODUCTS_API_PATH ?? "/api/products", env.ORIGIN_URL);
  url.searchParams.set("ids", ids.join(","));
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(PRODUCTS_TIMEOUT_MS) });
    if (!response.ok) {
      await response.body?.cancel();
      return null;
    }
    const body = (await response.json()) as { products?: unknown };
    const products = new Map<string, ProductInfo>();
    for (const entry of Array.isArray(body?.products) ? body.products : []) {
      const product = productOf(entry);
      if (product && !products.has(product.id)) products.set(product.id, product);
    }
    return products;
  } catch {
    return null;
  }
}

const REASON_TEXT: Array<[RegExp, string]> = [
  [/^similar_to:/, "similar to what you viewed"],
  [/^bought_together:/, "often bought together"],
  [/^context$/, "goes with this item"],
  [/^session_affinity/, "matches your visit"],
  [/^trending/, "trending now"],
  [/^popular/, "popular"],
  [/^fallback$/, "bestseller"],
];

function reasonText(reasons: string[]): string {
  for (const reason of reasons) for (const [re, text] of REASON_TEXT) if (re.test(reason)) return text;
  return "";
}

/**
 * The block that replaces the element's content, or null when none of the answer's products can be shown. Links
 * carry the attribution of a live answer.
 */
function renderBlock(title: string, answer: ClientAnswer, products: Map<string, ProductInfo>): string | null {
  const items = answer.items
    .map((item, index) => ({ item, position: index + 1, product: products.get(item.productId) }))
    .filter((x) => x.product !== undefined)
    .map(({ item, position, product }) => {
      const p = product as ProductInfo;
      const href =
        answer.recId === null
          ? p.url
          : withAttribution(p.url, { recId: answer.recId, position, placement: answer.placement });
      const why = reasonText(item.reasons);
      return `<li class="lm-item" data-product-id="${escapeHtml(item.productId)}" data-position="${position}" data-reasons="${escapeHtml(
        item.reasons.join(" "),
      )}"><a href="${escapeHtml(href)}">${escapeHtml(p.title)}</a>${
        p.price ? `<span class="lm-price">${escapeHtml(p.price)}</span>` : ""
      }${why ? `<span class="lm-reasons">${escapeHtml(why)}</span>` : ""}</li>`;
    });
  if (items.length === 0) return null;
  return `<section class="lm-recs" data-lastmile-rec-id="${escapeHtml(answer.recId ?? "")}" data-lastmile-source="${
    answer.fallback ? "fallback" : "lastmile"
  }" data-lastmile-placement-filled="${escapeHtml(answer.placement)}"><h2>${escapeHtml(title)}</h2><ul>${items.join("")}</ul></section>`;
}

/**
 * The page's events from the browser: a submit of `form[data-lastmile-event]` (or a click on another element with
 * it) posts the event first — the navigation waits for it, at most 300 ms — so the next page already knows it.
 */
const PAGE_SCRIPT = `<script>
(function () {
  function payload(el) {
    var p = { product_id: el.getAttribute("data-product-id") };
    var price = el.getAttribute("data-price");
    if (price) p.price = Number(price);
    var category = el.getAttribute("data-category");
    if (category) p.category = category;
    return JSON.stringify({ event: el.getAttribute("data-lastmile-event"), properties: p, timestamp: new Date().toISOString() });
  }
  function send(el) {
    return fetch("/lastmile/v1/track", { method: "POST", headers: { "content-type": "application/json" }, body: payload(el), keepalive: true });
  }
  document.addEventListener("submit", function (e) {
    var form = e.target;
    if (!form || !form.matches || !form.matches("form[data-lastmile-event]") || form.__lastmileSent) return;
    e.preventDefault();
    form.__lastmileSent = true;
    var go = function () { form.submit(); };
    Promise.race([send(form), new Promise(function (r) { setTimeout(r, 300); })]).then(go, go);
  }, true);
  document.addEventListener("click", function (e) {
    var el = e.target && e.target.closest && e.target.closest("[data-lastmile-event]");
    if (el && el.tagName !== "FORM" && !el.closest("form[data-lastmile-event]")) send(el).catch(function () {});
  }, true);
})();
</script>`;

/**
 * The page's ranking budget (RANKING_TIMEOUT_MS): only the time its blocks wait for Lastmile counts, not the time
 * the origin takes to stream the page. Blocks are filled one after another, so their waits add up to at most one
 * deadline.
 */
class RankingBudget {
  #leftMs: number;

  constructor(ms: number) {
    this.#leftMs = ms;
  }

  get leftMs(): number {
    return this.#leftMs;
  }

  /** Runs `work` with what is left of the budget, and takes the time it waited off the budget. */
  async spend<T>(work: (timeoutMs: number) => Promise<T>): Promise<T> {
    const started = Date.now();
    try {
      return await work(this.#leftMs);
    } finally {
      this.#leftMs -= Date.now() - started;
    }
  }
}

/**
 * Fills the page's placements. HTMLRewriter runs async element handlers one after another, so the blocks share
 * one ranking budget for the page: each call gets what is left of it, and a block that starts with none left shows
 * its fallback at once. A hung Lastmile costs the page one deadline, not one per block; an origin that streams its
 * page slowly costs the blocks nothing.
 */
class PlacementHandler implements HTMLRewriterElementContentHandlers {
  readonly #env: StorefrontEnv;
  readonly #client: LastmileClient | null;
  readonly #visit: { anonymousId: string; request: Request };
  readonly #track: (events: Json[]) => void;
  readonly #budget: RankingBudget;

  constructor(
    env: StorefrontEnv,
    client: LastmileClient | null,
    visit: { anonymousId: string; request: Request },
    track: (events: Json[]) => void,
    budget: RankingBudget,
  ) {
    this.#env = env;
    this.#client = client;
    this.#visit = visit;
    this.#track = track;
    this.#budget = budget;
  }

  /** A block never breaks the page: on any error the origin's content stays, and the page streams on. */
  async element(element: Element): Promise<void> {
    try {
      await this.#fill(element);
    } catch (error) {
      console.warn(
        `lastmile block: ${error instanceof Error ? error.message : String(error)}; keeping the origin's content`,
      );
    }
  }

  async #fill(element: Element): Promise<void> {
    const placement = attribute(element, "data-lastmile-placement") ?? "home";
    const productId = attribute(element, "data-product-id") ?? undefined;
    const limit = Number(attribute(element, "data-lastmile-limit")) || DEFAULT_LIMIT;
    const fallback = (attribute(element, "data-lastmile-fallback") ?? "").split(",").filter((id) => id.length > 0);
    const title = attribute(element, "data-lastmile-title") ?? "Recommended for you";

    // A product page: the view is recorded while the block is ranked (the ranking of this page does not need it;
    // the next page's does, and the page is complete only once it is acknowledged).
    if (placement === "pdp" && productId) {
      const price = Number(attribute(element, "data-price"));
      const category = attribute(element, "data-category");
      this.#track([
        event(this.#visit, {
          type: "track",
          event: "Product Viewed",
          properties: {
            product_id: productId,
            ...(category ? { category } : {}),
            ...(Number.isFinite(price) && price > 0 ? { price } : {}),
          },
        }),
      ]);
    }

    const country = visitorCountry(this.#visit.request);
    const params: RankParams = {
      anonymousId: this.#visit.anonymousId,
      limit,
      ...(productId ? { productId } : {}),
      ...(country ? { country } : {}),
    };
    let answer: ClientAnswer;
    if (!this.#client) {
      answer = fallbackAnswer(placement, fallback, params, {
        kind: "network",
        message: "Lastmile is not configured",
        ms: 0,
      });
    } else if (this.#budget.leftMs <= 0) {
      // Earlier blocks used up the page's ranking budget: no call, the fallback at once.
      const message = "the page's ranking deadline has passed";
      console.warn(`lastmile ${placement}: timeout: ${message}; showing the fallback`);
      answer = fallbackAnswer(placement, fallback, params, { kind: "timeout", message, ms: 0 });
    } else {
      const client = this.#client;
      answer = await this.#budget.spend((timeoutMs) => {
        const options = { fallback, fallbackWhenEmpty: true, timeoutMs: Math.max(1, timeoutMs) };
        return placement === "similar" && productId
          ? client.similar({ ...params, productId }, options)
          : client.recommendations({ ...params, placement }, options);
      });
    }
    if (answer.items.length === 0) return; // the origin's own content stays
    const products = await productInfo(
      this.#env,
      answer.items.map((i) => i.productId),
    );
    if (!products || products.size === 0) return;
    const block = renderBlock(title, answer, products);
    if (block === null) return;
    element.setInnerContent(block, { html: true });
    element.setAttribute("data-lastmile-filled", answer.fallback ? "fallback" : "lastmile");
  }
}

export default {
  async fetch(request, env, ctx): Promise<Response> {
    const url = new URL(request.url);
    const visitor = anonymousId(request);
    const withCookie = (response: Response): Response => {
      if (!visitor.isNew) return response;
      const out = new Response(response.body, response);
      out.headers.append("set-cookie", idCookie(visitor.id, url));
      return out;
    };

    if (url.pathname.startsWith("/lastmile/v1/")) {
      return withCookie(await forwardCollect(env, request, url.pathname.slice("/lastmile/v1/".length), visitor.id));
    }

    const originUrl = new URL(`${url.pathname}${url.search}`, env.ORIGIN_URL);
    const headers = new Headers(request.headers);
    headers.delete("host");
    headers.set("x-forwarded-host", url.host);
    headers.set("x-forwarded-proto", url.protocol.replace(":", ""));
    const origin = await fetch(originUrl, {
      method: request.method,
      headers,
      body: request.method === "GET" || request.method === "HEAD" ? null : request.body,
      redirect: "manual",
    });
    const isPage =
      request.method === "GET" &&
      origin.status === 200 &&
      (origin.headers.get("content-type") ?? "").includes("text/html");
    if (!isPage) return withCookie(origin);

    // The visit: a page event, and a click when the link came from a block. A prefetch (Sec-Purpose: prefetch) is
    // no visit: the visitor may never see the page.
    const visit = { anonymousId: visitor.id, request };
    const prefetch = /prefetch/i.test(request.headers.get("sec-purpose") ?? request.headers.get("purpose") ?? "");
    const events: Json[] = [
      event(visit, {
        type: "page",
        properties: {
          path: url.pathname,
          url: url.href,
          search: url.search,
          referrer: request.headers.get("referer") ?? undefined,
        },
      }),
    ];
    const attribution = readAttribution(url);
    const clicked = attribution ? productIdOf(env.PRODUCT_PATH ?? "/products/:id", url.pathname) : null;
    if (attribution && clicked) {
      events.push(
        event(visit, {
          type: "track",
          event: "Product Clicked",
          properties: {
            product_id: clicked,
            position: attribution.position,
            list_id: attribution.placement,
            rec_id: attribution.recId,
          },
        }),
      );
    }
    // Every send is also under ctx.waitUntil as soon as it starts (Product Viewed starts while the page streams):
    // it completes even once the page is done, or the visitor gone.
    const pending: Promise<void>[] = [];
    const track = (events: Json[]) => {
      if (prefetch) return;
      const send = sendEvents(env, request, events);
      pending.push(send);
      ctx.waitUntil(send);
    };
    track(events);

    const client = rankingClient(env);
    // One ranking budget for the whole page, shared by its blocks (they are filled one after another).
    const budget = new RankingBudget(rankingTimeout(env));
    const rewritten = new HTMLRewriter()
      .on("[data-lastmile-placement]", new PlacementHandler(env, client, visit, track, budget))
      .on("body", {
        element(body) {
          body.append(PAGE_SCRIPT, { html: true });
        },
      })
      .onDocument({
        // The page's last bytes wait for the events' acknowledgement (a few ms), so the next page sees them; at most
        // EVENTS_PAGE_WAIT_MS, so a slow collection API never holds the page (the sends go on under waitUntil).
        async end() {
          await within(Promise.all(pending), EVENTS_PAGE_WAIT_MS);
        },
      })
      .transform(origin);
    const response = withCookie(rewritten);
    response.headers.set("cache-control", "private, no-store");
    return response;
  },
} satisfies ExportedHandler<StorefrontEnv>;
