// The demo store of `npm run dev` in a real browser (headless Chromium from the system's `chromium` package, driven
// by playwright-core): the storefront Worker fills the origin's placements over the Service Binding, keeps the
// visitor's first-party id, sends the visit's events, and the next page's recommendations reflect them — items
// similar to what was viewed on the home page, the carted item left out of the cart's block, the click on a
// recommended item attributed to its answer.
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Browser, type BrowserContext, chromium, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LOCAL_KEYS } from "../../scripts/lib/local-keys.ts";
import { freePort } from "../../scripts/lib/ports.ts";
import type { SessionSnapshot } from "../../src/session/snapshot.ts";
import { type Dev, devState, stopDev, until, untilReady } from "./dev-process.ts";

const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const root = join(import.meta.dirname, "..", "..");
const stateDir = mkdtempSync(join(tmpdir(), "lastmile-e2e-store-"));
const admin = { authorization: `Bearer ${LOCAL_KEYS.adminKey}` };

let dev: Dev;
let lastmileUrl: string;
let storeUrl: string;
let browser: Browser;
let context: BrowserContext;
let page: Page;

/**
 * `npm run dev` with the demo store. The launcher picks the store's port itself when it starts the store: a port
 * picked here would be free now but could be taken by then (Postgres, the seed and wrangler take seconds, and every
 * outgoing connection on the machine draws its local port from the same range).
 */
function startDevWithDemo(port: number): Dev {
  const proc = spawn(
    process.execPath,
    [join(root, "scripts", "dev.ts"), "--port", String(port), "--state-dir", stateDir, "--quiet"],
    { cwd: root, stdio: ["ignore", "pipe", "pipe"] },
  );
  let output = "";
  const collect = (d: Buffer) => {
    output += d.toString();
  };
  proc.stdout?.on("data", collect);
  proc.stderr?.on("data", collect);
  const exited = new Promise<number | null>((resolve) => proc.once("exit", (code) => resolve(code)));
  return { proc, output: () => output, exited };
}

interface Block {
  source: string | null;
  recId: string | null;
  items: Array<{ productId: string; reasons: string[]; href: string }>;
}

/** The filled block of a placement on the current page (null when the Worker left the origin's content). */
async function block(placement: string): Promise<Block | null> {
  return page.evaluate((name) => {
    const section = document.querySelector(`[data-lastmile-placement="${name}"] section.lm-recs`);
    if (!section) return null;
    return {
      source: section.getAttribute("data-lastmile-source"),
      recId: section.getAttribute("data-lastmile-rec-id"),
      items: [...section.querySelectorAll("li.lm-item")].map((li) => ({
        productId: li.getAttribute("data-product-id") ?? "",
        reasons: (li.getAttribute("data-reasons") ?? "").split(" ").filter(Boolean),
        href: li.querySelector("a")?.getAttribute("href") ?? "",
      })),
    };
  }, placement);
}

/**
 * Reloads the page until its block of `placement` satisfies `ok` (the first ranking calls after a start may miss
 * the storefront's deadline and show the fallback; events are acknowledged before the page completes, so one
 * reload is normally enough).
 */
async function blockWhere(placement: string, ok: (b: Block) => boolean, what: string): Promise<Block> {
  let last: Block | null = null;
  return until(
    what,
    async () => {
      if (last !== null) await page.reload();
      last = await block(placement);
      return last && ok(last) ? last : undefined;
    },
    30_000,
  ).catch((error: unknown) => {
    throw new Error(`${(error as Error).message}; last block: ${JSON.stringify(last)}`);
  });
}

const live = (b: Block) => b.source === "lastmile" && b.items.length > 0;

async function anonymousId(): Promise<string> {
  const cookie = (await context.cookies(storeUrl)).find((c) => c.name === "lm_aid");
  if (!cookie) throw new Error("no lm_aid cookie");
  return cookie.value;
}

async function sessionOf(aid: string): Promise<SessionSnapshot> {
  const res = await fetch(`${lastmileUrl}/v1/admin/users/${aid}?kind=anonymous`, { headers: admin });
  expect(res.status).toBe(200);
  return (await res.json()) as SessionSnapshot;
}

/**
 * The visitor's session once it satisfies `ok`: the storefront holds a page's end for its events only
 * EVENTS_PAGE_WAIT_MS, then sends them in the background, so on a busy machine they may land after the page.
 */
async function sessionWhere(ok: (s: SessionSnapshot) => boolean, what: string): Promise<SessionSnapshot> {
  const aid = await anonymousId();
  let last: SessionSnapshot | null = null;
  return until(
    what,
    async () => {
      last = await sessionOf(aid);
      return ok(last) ? last : undefined;
    },
    10_000,
  ).catch((error: unknown) => {
    throw new Error(`${(error as Error).message}; last session: ${JSON.stringify(last)}`);
  });
}

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) {
    throw new Error(
      `no Chromium at ${CHROMIUM}: install Debian's package (apt-get install -y chromium) or set CHROMIUM_PATH`,
    );
  }
  const port = await freePort();
  lastmileUrl = `http://127.0.0.1:${port}`;
  dev = startDevWithDemo(port);
  await untilReady(dev, 240_000);
  const state = devState(stateDir) as ReturnType<typeof devState> & { demoUrl?: string };
  if (!state.demoUrl) throw new Error(`the demo store did not start:\n${dev.output()}`);
  storeUrl = state.demoUrl;
  // The launcher publishes the first snapshot of a new state folder in the background: wait until it is live.
  await until(
    "the first published snapshot",
    async () => {
      const res = await fetch(`${lastmileUrl}/v1/admin/versions`, { headers: admin });
      const body = (await res.json()) as { current: { version: number } | null };
      return body.current ?? undefined;
    },
    240_000,
  );
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
  context = await browser.newContext();
  page = await context.newPage();
}, 600_000);

afterAll(async () => {
  await browser?.close();
  await stopDev(dev);
  rmSync(stateDir, { recursive: true, force: true });
});

describe("the demo store", () => {
  let firstHome: Block;
  let viewed: string;
  let clicked: string;

  it("serves the home page with a personalised block and a first-party anonymous id", async () => {
    await page.goto(`${storeUrl}/`);
    expect(await page.title()).toContain("Lastmile demo store");
    firstHome = await blockWhere("home", live, "a live home block");
    expect(firstHome.recId).toMatch(/^[0-9a-f-]{36}$/);
    expect(firstHome.items.length).toBeGreaterThanOrEqual(4);
    expect(await anonymousId()).toMatch(/^[0-9a-f-]{36}$/);
    // Every link of a live block carries its attribution: the answer, the 1-based position, the placement.
    firstHome.items.forEach((item, i) => {
      const url = new URL(item.href, storeUrl);
      expect(Object.fromEntries(url.searchParams)).toEqual({
        lm_rec: firstHome.recId,
        lm_pos: String(i + 1),
        lm_pl: "home",
      });
    });
  });

  it("opens a product page with a block of items for that product, and records the view", async () => {
    await page.locator("#bestsellers li a").first().click();
    await page.waitForURL(/\/products\//);
    viewed = (await page.locator("#product").getAttribute("data-product-id")) ?? "";
    expect(viewed).not.toBe("");
    const pdp = await blockWhere("pdp", live, "a live pdp block");
    expect(pdp.items.map((i) => i.productId)).not.toContain(viewed);
    // The product's own neighbours lead the block.
    expect(pdp.items.some((i) => i.reasons.some((r) => r.endsWith(`:${viewed}`)))).toBe(true);
    await sessionWhere((s) => s.viewed.includes(viewed), "the view recorded");
  });

  it("follows a recommended item: the click is attributed and the new product counts as viewed", async () => {
    const pdp = await blockWhere("pdp", live, "a live pdp block");
    const first = pdp.items[0];
    if (!first) throw new Error("empty pdp block");
    clicked = first.productId;
    await page.locator(`[data-lastmile-placement="pdp"] li.lm-item a`).first().click();
    await page.waitForURL(/lm_rec=/);
    const url = new URL(page.url());
    expect(url.searchParams.get("lm_rec")).toBe(pdp.recId);
    expect(url.searchParams.get("lm_pos")).toBe("1");
    expect(url.searchParams.get("lm_pl")).toBe("pdp");
    expect(await page.locator("#product").getAttribute("data-product-id")).toBe(clicked);
    // The Worker sent Product Clicked for the followed link, and the new product counts as viewed.
    const clickedBy = (s: SessionSnapshot) => s.interactions.some((i) => i.kind === "click" && i.productId === clicked);
    const session = await sessionWhere((s) => clickedBy(s) && s.viewed[0] === clicked, "the click and view recorded");
    expect(session.viewed.slice(0, 2)).toEqual([clicked, viewed]);
  });

  it("adds the product to the cart; the cart's block leaves it out", async () => {
    await page.locator("#add-to-cart").click();
    await page.waitForURL(/\/cart$/);
    expect(await page.locator("#cart-items li").first().getAttribute("data-product-id")).toBe(clicked);
    const cart = await blockWhere(
      "cart",
      (b) => live(b) && !b.items.some((i) => i.productId === clicked),
      "a live cart block without the carted item",
    );
    expect(cart.items.length).toBeGreaterThan(0);
    const session = await sessionWhere((s) => s.carted.length > 0, "the add to cart recorded");
    expect(session.carted).toEqual([clicked]);
  });

  it("shows a home block that reflects the visit: neighbours of the viewed items, none of the seen ones", async () => {
    await page.goto(`${storeUrl}/`);
    const home = await blockWhere(
      "home",
      (b) =>
        live(b) && b.items.some((i) => i.reasons.some((r) => r.endsWith(`:${viewed}`) || r.endsWith(`:${clicked}`))),
      "a home block with neighbours of the viewed products",
    );
    const ids = home.items.map((i) => i.productId);
    expect(ids).not.toContain(viewed);
    expect(ids).not.toContain(clicked);
    expect(home.recId).not.toBe(firstHome.recId);
    expect(ids).not.toEqual(firstHome.items.map((i) => i.productId));
  });
});

describe("the demo's experiments page", () => {
  it("says there is no experiment, then shows each configured one with its arms", async () => {
    await page.goto(`${storeUrl}/experiments`);
    expect(await page.locator("main").textContent()).toContain("No experiment is configured");
    const put = await fetch(`${lastmileUrl}/v1/admin/experiments`, {
      method: "PUT",
      headers: { ...admin, "content-type": "application/json" },
      body: JSON.stringify({
        experiments: [
          {
            id: "demo-e2e",
            placement: "post_purchase",
            holdout: 0.1,
            variants: [
              { id: "popular", ranker: { kind: "popular" } },
              { id: "merged", ranker: { kind: "ranker" } },
            ],
          },
        ],
      }),
    });
    expect(put.status, await put.text()).toBe(200);
    await page.goto(`${storeUrl}/experiments`);
    const rows = await page.locator("table.report tbody tr td:first-child").allTextContents();
    expect(rows).toEqual(["holdout", "popular (control)", "merged"]);
    expect(await page.locator("main h2").first().textContent()).toContain("demo-e2e");
  });
});
