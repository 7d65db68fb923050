// The example storefront Worker (examples/storefront-worker, docs/storefront.md) in workerd, its events going to
// the real collection API of this Worker (`exports.default`), read back through the admin API. The store's origin
// is the test's own (pages and a product API answered in-process for one test host; every other fetch goes out
// unchanged): what an origin sends is this test's input. The demo store in a real browser is test/e2e/storefront.
// A block never breaks the page — product fields of any JSON type, products the block cannot show — and a slow
// collection API never holds the page's last bytes.
import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { exports } from "cloudflare:workers";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import storefront, { type StorefrontEnv } from "../../examples/storefront-worker/src/index.ts";
import { adminGet } from "./collect-helpers.ts";

const ORIGIN = "http://origin.storefront.test";
const STORE = "http://store.storefront.test";
const FOOTER = '<footer id="footer">the footer</footer><script id="origin-script">window.store = 1;</script>';

/** The origin's product API answer for the current test: `{ products }`, each entry as the origin sends it. */
let products: unknown[];

function page(placement: string): string {
  return `<!doctype html><html><head><title>Test store</title></head><body><main>${placement}</main>${FOOTER}</body></html>`;
}

/** The origin's page for the current test: its HTML, or a function making a fresh body (a stream) per request. */
let pageHtml: string | (() => BodyInit);

function originAnswer(url: URL): Response {
  if (url.pathname === "/api/products") return Response.json({ products });
  const body = typeof pageHtml === "function" ? pageHtml() : pageHtml;
  return new Response(body, { headers: { "content-type": "text/html; charset=utf-8" } });
}

beforeEach(() => {
  const realFetch = globalThis.fetch;
  vi.spyOn(globalThis, "fetch").mockImplementation((input, init) => {
    const url = new URL(input instanceof Request ? input.url : String(input));
    return url.origin === ORIGIN ? Promise.resolve(originAnswer(url)) : realFetch(input, init);
  });
});

afterEach(() => {
  vi.restoreAllMocks();
});

const baseEnv = (extra: Partial<StorefrontEnv> = {}): StorefrontEnv => ({
  ORIGIN_URL: ORIGIN,
  PRODUCTS_API_PATH: "/api/products",
  PRODUCT_PATH: "/products/:id",
  LASTMILE_HTTP: exports.default,
  LASTMILE_WRITE_KEY: "local-write-key",
  ...extra,
});

/** One page through the storefront Worker, its body read to the end, then its waitUntil work. */
async function visit(
  storeEnv: StorefrontEnv,
  aid: string,
): Promise<{ status: number; html: string; ms: number; settled: Promise<void> }> {
  const ctx = createExecutionContext();
  const started = Date.now();
  const res = await storefront.fetch(
    new Request(`${STORE}/products/p1`, { headers: { cookie: `lm_aid=${aid}` } }) as Request<
      unknown,
      IncomingRequestCfProperties
    >,
    storeEnv,
    ctx,
  );
  const html = await res.text();
  const ms = Date.now() - started;
  return { status: res.status, html, ms, settled: waitOnExecutionContext(ctx) };
}

/** The rendered block's items: product id and price text. */
function blockItems(html: string): Array<{ id: string; price: string | null }> {
  return [...html.matchAll(/<li class="lm-item" data-product-id="([^"]*)"[^>]*>(.*?)<\/li>/g)].map((m) => ({
    id: m[1] ?? "",
    price: /<span class="lm-price">([^<]*)<\/span>/.exec(m[2] ?? "")?.[1] ?? null,
  }));
}

function expectCompletePage(html: string): void {
  expect(html).toContain(FOOTER);
  expect(html).toContain('fetch("/lastmile/v1/track"'); // the script appended to <body>
  expect(html.trimEnd().endsWith("</html>")).toBe(true);
}

const pdp = (fallback: string) =>
  `<div data-lastmile-placement="pdp" data-product-id="p1" data-price="2.95" data-lastmile-fallback="${fallback}"><p id="origin-own">the origin's bestsellers</p></div>`;

async function viewedOf(aid: string): Promise<string[]> {
  const res = await adminGet(`/v1/admin/users/${aid}?kind=anonymous`);
  expect(res.status).toBe(200);
  return ((await res.json()) as { viewed: string[] }).viewed;
}

type SentEvent = { type: string; event?: string; messageId: string };

/** A collection API that shows `onBatch` each batch it is sent; the real one answers when `onBatch` does not. */
function collectionSeeing(
  onBatch: (batch: SentEvent[], request: Request) => Response | Promise<Response> | undefined,
): Fetcher {
  return {
    fetch: async (input: RequestInfo | URL, init?: RequestInit) => {
      const request = new Request(input, init);
      const { batch } = (await request.clone().json()) as { batch: SentEvent[] };
      return (await onBatch(batch, request)) ?? exports.default.fetch(request);
    },
  } as unknown as Fetcher;
}

describe("the storefront Worker's blocks", () => {
  it("renders numeric prices and ids from the product API, and the page is complete", async () => {
    pageHtml = page(pdp("p2,3"));
    products = [
      { id: "p2", title: "Candle", url: "/products/p2", price: 2.95 },
      { id: 3, title: "Mug", url: "/products/3", price: "£4.50" },
    ];
    const aid = crypto.randomUUID();
    const { status, html, settled } = await visit(baseEnv(), aid);
    await settled;
    expect(status).toBe(200);
    expectCompletePage(html);
    expect(blockItems(html)).toEqual([
      { id: "p2", price: "2.95" },
      { id: "3", price: "£4.50" },
    ]);
    expect(html).not.toContain("origin-own");
    // The visit's events reached Lastmile: the product page's view is in the visitor's session.
    expect(await viewedOf(aid)).toContain("p1");
  });

  it("reads the product page's attributes as the browser does, entities decoded (the view's category)", async () => {
    pageHtml = page(
      `<div data-lastmile-placement="pdp" data-product-id="p1" data-category="Candles &amp; Lights &#x2014; &#8220;Home&#8221;" data-lastmile-fallback="p2"></div>`,
    );
    products = [{ id: "p2", title: "Candle", url: "/products/p2" }];
    const aid = crypto.randomUUID();
    const { settled } = await visit(baseEnv(), aid);
    await settled;
    const res = await adminGet(`/v1/admin/users/${aid}?kind=anonymous`);
    const session = (await res.json()) as { interactions: Array<{ productId: string; category: string | null }> };
    expect(session.interactions.find((i) => i.productId === "p1")?.category).toBe(
      "Candles & Lights \u2014 \u201cHome\u201d",
    );
  });

  it("leaves out a product without a title or url; with none left, the origin's content stays", async () => {
    pageHtml = page(pdp("p2,p3,p4"));
    products = [
      { id: "p2", url: "/products/p2", price: "£1.00" },
      { id: "p3", title: "Lamp", url: "/products/p3" },
      { id: "p4", title: "Bowl", url: 42 },
      "not a product",
    ];
    const first = await visit(baseEnv(), crypto.randomUUID());
    await first.settled;
    expectCompletePage(first.html);
    expect(blockItems(first.html)).toEqual([{ id: "p3", price: null }]);

    products = [{ id: "p2", url: "/products/p2" }, { id: "p3" }];
    const second = await visit(baseEnv(), crypto.randomUUID());
    await second.settled;
    expectCompletePage(second.html);
    expect(blockItems(second.html)).toEqual([]);
    expect(second.html).toContain(`<p id="origin-own">the origin's bestsellers</p>`);
  });

  it("keeps the origin's content when rendering a block fails, and the page is complete", async () => {
    pageHtml = page(
      `<div data-lastmile-placement="home" data-lastmile-fallback="p2"><p id="origin-own">the origin's bestsellers</p></div>`,
    );
    products = [{ id: "p2", title: "Candle", url: "/products/p2" }];
    // The real Ranking entrypoint, its answer altered into one the client passes on (it has the documented shape)
    // but no block can render: its reasons cannot be joined.
    const ranking = exports.Ranking;
    const unjoinable = Object.assign(["popular"], {
      join(): string {
        throw new Error("reasons that cannot be joined");
      },
    });
    const broken = async (params: Parameters<typeof ranking.recommendations>[0]) => ({
      ...(await ranking.recommendations(params)),
      items: [{ productId: "p2", score: 1, reasons: unjoinable }],
    });
    const LASTMILE = { recommendations: broken, similar: broken, rank: broken } as unknown as StorefrontEnv["LASTMILE"];
    const { html, settled } = await visit(baseEnv({ LASTMILE, RANKING_TIMEOUT_MS: "5000" }), crypto.randomUUID());
    await settled;
    expectCompletePage(html);
    expect(html).toContain(`<p id="origin-own">the origin's bestsellers</p>`);
    expect(blockItems(html)).toEqual([]);
  });

  it("completes the page long before a hung collection API gives up, and still sends the events", async () => {
    pageHtml = page(pdp("p2"));
    products = [{ id: "p2", title: "Candle", url: "/products/p2", price: "£2.95" }];
    const seen: string[] = [];
    // The collection API accepts the connection and never answers (until the sender gives up).
    const hung = collectionSeeing((batch, request) => {
      seen.push(`${new URL(request.url).pathname} ${batch.map((e) => e.event ?? e.type).join(",")}`);
      return new Promise<Response>((_, reject) => {
        const safety = setTimeout(() => reject(new Error("hung collection: safety stop")), 5_000);
        request.signal.addEventListener("abort", () => {
          clearTimeout(safety);
          reject(request.signal.reason);
        });
      });
    });
    const { html, ms, settled } = await visit(baseEnv({ LASTMILE_HTTP: hung }), crypto.randomUUID());
    expectCompletePage(html);
    expect(blockItems(html)).toEqual([{ id: "p2", price: "£2.95" }]);
    // The sends time out after 1 s; the page must not wait for that (a fault-detection bound, not a speed target).
    expect(ms).toBeLessThan(700);
    await settled;
    // Both sends were made (the page's, and the product view's), and tried again in the background.
    expect(new Set(seen)).toEqual(new Set(["/v1/batch page", "/v1/batch Product Viewed"]));
    expect(seen.length).toBeGreaterThanOrEqual(4);
  });

  it("sends the page's events again, the same messageIds, when the collection API answers 503 for a while", async () => {
    pageHtml = page(pdp("p2"));
    products = [{ id: "p2", title: "Candle", url: "/products/p2" }];
    const sent: string[] = [];
    // The collection API is briefly unavailable: its first two answers are 503 with Retry-After: 1.
    const flaky = collectionSeeing((batch) => {
      sent.push(batch.map((e) => e.messageId).join(","));
      if (sent.length > 2) return undefined;
      const error = { code: "dependency_unavailable", message: "a session object failed" };
      return Response.json({ error }, { status: 503, headers: { "retry-after": "1" } });
    });
    const aid = crypto.randomUUID();
    const { html, settled } = await visit(baseEnv({ LASTMILE_HTTP: flaky }), aid);
    expectCompletePage(html);
    await settled;
    expect(sent).toHaveLength(4);
    expect(new Set(sent).size).toBe(2); // each batch sent twice, unchanged
    expect(await viewedOf(aid)).toEqual(["p1"]);
  });
});

describe("the storefront Worker's events", () => {
  it("sends no page, view or click events for a prefetch (Sec-Purpose: prefetch): the visitor may never see it", async () => {
    pageHtml = page(pdp("p2"));
    products = [{ id: "p2", title: "Candle", url: "/products/p2" }];
    const sent: string[] = [];
    const recording = collectionSeeing((batch) => {
      sent.push(...batch.map((e) => e.event ?? e.type));
      return undefined;
    });
    const load = async (headers: Record<string, string>) => {
      const ctx = createExecutionContext();
      const res = await storefront.fetch(
        new Request(`${STORE}/products/p1?lm_rec=r1&lm_pos=1&lm_pl=home`, {
          headers: { cookie: `lm_aid=${crypto.randomUUID()}`, ...headers },
        }) as Request<unknown, IncomingRequestCfProperties>,
        baseEnv({ LASTMILE_HTTP: recording }),
        ctx,
      );
      const html = await res.text();
      await waitOnExecutionContext(ctx);
      return html;
    };
    expectCompletePage(await load({ "sec-purpose": "prefetch" }));
    expect(sent).toEqual([]);
    await load({});
    expect(sent.sort()).toEqual(["Product Clicked", "Product Viewed", "page"]);
  });
});

describe("the storefront Worker's visitor id", () => {
  it("hands out a new lm_aid for a malformed cookie (bad percent-encoding) instead of failing the request", async () => {
    pageHtml = page("<p>no blocks</p>");
    for (const [cookie, isNew] of [
      ["lm_aid=abcdef12-3456", false],
      ["lm_aid=%E0%A4%A", true],
    ] as const) {
      const ctx = createExecutionContext();
      const res = await storefront.fetch(
        new Request(`${STORE}/`, { headers: { cookie } }) as Request<unknown, IncomingRequestCfProperties>,
        baseEnv(),
        ctx,
      );
      const html = await res.text();
      await waitOnExecutionContext(ctx);
      expect(res.status, cookie).toBe(200);
      expectCompletePage(html);
      const set = res.headers.get("set-cookie");
      if (isNew) expect(set).toMatch(/^lm_aid=[0-9a-f-]{36}; Path=\/;/);
      else expect(set).toBeNull();
    }
  });
});

describe("the storefront Worker's ranking deadline", () => {
  it("renders a page with two blocks within one ranking deadline when Lastmile hangs", async () => {
    const block = (placement: string) =>
      `<div data-lastmile-placement="${placement}" data-lastmile-fallback="p2,p3"><p>own</p></div>`;
    pageHtml = page(`${block("home")}${block("cart")}`);
    products = [
      { id: "p2", title: "Candle", url: "/products/p2" },
      { id: "p3", title: "Mug", url: "/products/p3" },
    ];
    // A Ranking binding that never answers: each block's call would otherwise wait a deadline of its own, one after
    // the other (HTMLRewriter runs the handlers in turn).
    const hang = () => new Promise<never>(() => {});
    const LASTMILE = { recommendations: hang, similar: hang, rank: hang } as unknown as StorefrontEnv["LASTMILE"];
    const { html, ms, settled } = await visit(baseEnv({ LASTMILE, RANKING_TIMEOUT_MS: "400" }), crypto.randomUUID());
    await settled;
    expectCompletePage(html);
    expect(html.match(/data-lastmile-source="fallback"/g)?.length).toBe(2);
    expect(blockItems(html).map((i) => i.id)).toEqual(["p2", "p3", "p2", "p3"]);
    // One deadline (400 ms) and the rest of the page; two deadlines would be 800 ms and more. The margin is wide
    // (350 ms for the rest of the page) so that a loaded machine's late timers cannot fail the test.
    expect(ms).toBeLessThan(750);
  });

  it("ranks a block that the origin streams in late: the origin's time is not the blocks' deadline", async () => {
    products = [
      { id: "p2", title: "Candle", url: "/products/p2" },
      { id: "p3", title: "Mug", url: "/products/p3" },
    ];
    // The origin flushes its head at once and the block 300 ms later (streaming rendering, a slow query).
    pageHtml = () => {
      const enc = new TextEncoder();
      return new ReadableStream<Uint8Array>({
        async start(controller) {
          controller.enqueue(enc.encode("<!doctype html><html><head><title>Test store</title></head><body><main>"));
          await new Promise((resolve) => setTimeout(resolve, 300));
          const block = `<div data-lastmile-placement="home" data-lastmile-fallback="p3"><p>own</p></div>`;
          controller.enqueue(enc.encode(`${block}</main>${FOOTER}</body></html>`));
          controller.close();
        },
      });
    };
    const asked: string[] = [];
    // A Ranking binding that answers at once.
    const answer = (params: { placement?: string }) => {
      asked.push(params.placement ?? "");
      return Promise.resolve({
        recId: "r-streamed",
        placement: params.placement ?? "home",
        items: [{ productId: "p2", score: 1, reasons: ["popular"] }],
        sources: {},
        degraded: [],
      });
    };
    const LASTMILE = { recommendations: answer, similar: answer, rank: answer } as unknown as StorefrontEnv["LASTMILE"];
    const { html, settled } = await visit(baseEnv({ LASTMILE, RANKING_TIMEOUT_MS: "150" }), crypto.randomUUID());
    await settled;
    expectCompletePage(html);
    expect(asked).toEqual(["home"]);
    expect(html).toContain('data-lastmile-source="lastmile"');
    expect(blockItems(html).map((i) => i.id)).toEqual(["p2"]);
  });
});

describe("the storefront Worker's ranking calls", () => {
  it("passes the visitor's country (request.cf.country) over the binding, where Lastmile cannot see it", async () => {
    pageHtml = page(`<div data-lastmile-placement="home" data-lastmile-fallback="p2"><p>own</p></div>`);
    products = [{ id: "p2", title: "Candle", url: "/products/p2" }];
    const asked: Array<{ country?: string }> = [];
    const answer = (params: { country?: string }) => {
      asked.push(params);
      return Promise.resolve({
        recId: "r-country",
        placement: "home",
        items: [{ productId: "p2", score: 1, reasons: ["popular"] }],
        sources: {},
        degraded: [],
      });
    };
    const LASTMILE = { recommendations: answer, similar: answer, rank: answer } as unknown as StorefrontEnv["LASTMILE"];
    for (const [cf, country] of [
      [{ country: "GB" }, "GB"],
      [{ country: "T1" }, undefined], // Tor: no country segment
      [undefined, undefined],
    ] as const) {
      const ctx = createExecutionContext();
      const request = new Request(`${STORE}/`, { headers: { cookie: `lm_aid=${crypto.randomUUID()}` }, cf });
      const res = await storefront.fetch(
        request as Request<unknown, IncomingRequestCfProperties>,
        baseEnv({ LASTMILE, RANKING_TIMEOUT_MS: "5000" }),
        ctx,
      );
      expect(await res.text()).toContain('data-lastmile-source="lastmile"');
      await waitOnExecutionContext(ctx);
      expect(asked.pop()?.country).toBe(country);
    }
  });
});

describe("the storefront Worker's track proxy (POST /lastmile/v1/track)", () => {
  type Options = { path?: string; headers?: Record<string, string>; storeEnv?: StorefrontEnv; waitMs?: number };

  /** The page's events through the proxy: its answer, or a note that none came within `waitMs` (2 s). */
  async function post(
    body: BodyInit,
    { path = "track", headers = {}, storeEnv = baseEnv(), waitMs = 2000 }: Options = {},
  ): Promise<{ status: number; text: string; setCookie: string | null } | string> {
    const ctx = createExecutionContext();
    const answered = storefront
      .fetch(
        new Request(`${STORE}/lastmile/v1/${path}`, {
          method: "POST",
          headers: { "content-type": "application/json", ...headers },
          body,
        }) as Request<unknown, IncomingRequestCfProperties>,
        storeEnv,
        ctx,
      )
      .then(async (res) => ({ status: res.status, text: await res.text(), setCookie: res.headers.get("set-cookie") }));
    const timer = new Promise<string>((resolve) => setTimeout(() => resolve(`no answer within ${waitMs} ms`), waitMs));
    const outcome = await Promise.race([answered, timer]);
    await waitOnExecutionContext(ctx);
    return outcome;
  }

  it("refuses a body over 64 KB as it streams in (413), without waiting for the rest of it", async () => {
    // 70,000 bytes of a JSON string, and the upload never ends.
    const endless = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(new TextEncoder().encode(`{"event":"x","pad":"${"a".repeat(70_000)}`));
      },
    });
    expect(await post(endless)).toMatchObject({ status: 413 });
  });

  it("counts the limit in bytes: a batch of 42,000 two-byte characters is over 64 KB", async () => {
    // Three events collection would take (28 KB each, under its 32 KB per event).
    const event = () => ({ type: "track", event: "x", properties: { pad: "é".repeat(14_000) } });
    const wide = JSON.stringify({ batch: [event(), event(), event()] });
    expect(wide.length).toBeLessThan(64 * 1024);
    expect(await post(wide, { path: "batch" })).toMatchObject({ status: 413 });
  });

  it("refuses a body declared over 64 KB by its Content-Length before reading it", async () => {
    const never = new ReadableStream<Uint8Array>({});
    expect(await post(never, { headers: { "content-length": String(64 * 1024 + 1) } })).toMatchObject({ status: 413 });
  });

  it("fills the cookie's anonymousId when the event's userId is null or empty (no user), so it is not lost", async () => {
    for (const userId of [null, ""]) {
      const aid = crypto.randomUUID();
      const body = JSON.stringify({ event: "Product Viewed", userId, properties: { product_id: "p9" } });
      const answer = await post(body, { headers: { cookie: `lm_aid=${aid}` } });
      expect(answer, String(userId)).toMatchObject({ status: 200 });
      expect(JSON.parse((answer as { text: string }).text)).toMatchObject({ accepted: 1, rejected: [] });
      expect(await viewedOf(aid)).toEqual(["p9"]);
    }
  });

  it("answers 502 (JSON) when the collection API cannot be reached, and still sets a new visitor's cookie", async () => {
    const down = { fetch: () => Promise.reject(new Error("connection refused")) } as unknown as Fetcher;
    const body = JSON.stringify({ event: "Product Added", properties: { product_id: "p1" } });
    const answer = await post(body, { storeEnv: baseEnv({ LASTMILE_HTTP: down }) });
    expect(answer).toMatchObject({ status: 502, setCookie: expect.stringMatching(/^lm_aid=/) });
    expect(JSON.parse((answer as { text: string }).text)).toMatchObject({ error: { code: "collection_unreachable" } });
  });

  it("answers 504 (JSON) when the collection API does not answer in time, instead of hanging", async () => {
    // The collection API accepts the connection and answers only when the caller gives up.
    const hung = {
      fetch: (input: RequestInfo | URL, init?: RequestInit) => {
        const { signal } = new Request(input, init);
        return new Promise<Response>((_, reject) => signal.addEventListener("abort", () => reject(signal.reason)));
      },
    } as unknown as Fetcher;
    const body = JSON.stringify({ event: "Product Added", properties: { product_id: "p1" } });
    const answer = await post(body, { storeEnv: baseEnv({ LASTMILE_HTTP: hung }), waitMs: 5000 });
    expect(answer).toMatchObject({ status: 504, setCookie: expect.stringMatching(/^lm_aid=/) });
    expect(JSON.parse((answer as { text: string }).text)).toMatchObject({ error: { code: "collection_timeout" } });
  });
});
