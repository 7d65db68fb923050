// The storefront client (src/client) against a real HTTP server on loopback: requests as the API takes them,
// answers passed through, and every dependency fault — timeout, 5xx, 4xx, refused connection, a body that is no
// answer, the caller's cancellation, an RPC error — turned into the caller's fallback list, never a throw.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import {
  type ClientAnswer,
  type ClientError,
  createClient,
  type RankingBinding,
  type RankParams,
  type RankResponse,
  readAttribution,
  withAttribution,
} from "../../src/client/index.ts";
import { DEFAULT_RANKING_CONFIG } from "../../src/rank/config.ts";
import { parseRankParams, type RankRequest } from "../../src/rank/request.ts";

// node:http, typed by the little this test uses: test/unit is type-checked with the Worker's types, not Node's.
interface IncomingMessage {
  method?: string;
  url?: string;
  headers: Record<string, string | undefined>;
  setEncoding(encoding: "utf8"): void;
  on(event: "data", listener: (chunk: string) => void): void;
  on(event: "end", listener: () => void): void;
}
interface ServerResponse {
  writeHead(status: number, headers: Record<string, string>): void;
  end(body?: string): void;
}
interface Server {
  listen(port: number, host: string, listening: () => void): void;
  address(): { port: number } | string | null;
  close(closed: () => void): void;
  closeAllConnections(): void;
}
interface NodeEvents {
  on(event: "unhandledRejection", listener: (reason: unknown) => void): void;
  off(event: "unhandledRejection", listener: (reason: unknown) => void): void;
}
const nodeHttp = "node:http";
const { createServer } = (await import(nodeHttp)) as {
  createServer(listener?: (req: IncomingMessage, res: ServerResponse) => void): Server;
};

/** Listens on a free loopback port; resolves with the port. */
function listen(target: Server): Promise<number> {
  return new Promise((resolve) =>
    target.listen(0, "127.0.0.1", () => resolve((target.address() as { port: number }).port)),
  );
}

interface Seen {
  method: string;
  url: string;
  authorization: string | undefined;
  contentType: string | undefined;
  body: string;
}

type Handler = (req: IncomingMessage, res: ServerResponse, body: string) => void;

let server: Server;
let baseUrl: string;
let handler: Handler;
let seen: Seen[];

function answer(items: string[], extra: Partial<RankResponse> = {}): RankResponse {
  return {
    recId: "rec-1",
    placement: "home",
    mode: "recommend",
    userKey: "a:anon-1",
    items: items.map((productId, i) => ({ productId, score: 1 - i / 10, reasons: ["popular"] })),
    sources: {
      session: { status: "ok" },
      batch: { status: "absent" },
      catalog: { status: "ok" },
      popular: { status: "ok" },
      trending: { status: "absent", from: null },
    },
    degraded: [],
    config: { version: "default" },
    snapshot: { version: 3, generatedAt: 1_700_000_000_000 },
    experiment: null,
    ...extra,
  };
}

function json(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { "content-type": "application/json" });
  res.end(JSON.stringify(body));
}

beforeAll(async () => {
  server = createServer((req, res) => {
    let body = "";
    req.setEncoding("utf8");
    req.on("data", (chunk: string) => {
      body += chunk;
    });
    req.on("end", () => {
      seen.push({
        method: req.method ?? "",
        url: req.url ?? "",
        authorization: req.headers.authorization,
        contentType: req.headers["content-type"],
        body,
      });
      handler(req, res, body);
    });
  });
  baseUrl = `http://127.0.0.1:${await listen(server)}/`;
});

afterAll(async () => {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(resolve));
});

beforeEach(() => {
  seen = [];
  handler = (_req, res) => json(res, 200, answer(["p1", "p2"]));
});

/** Tests about anything but the deadline wait this long: a loaded machine must not turn them into fallbacks. */
const PATIENT_MS = 5_000;

describe("HTTP transport", () => {
  it("sends GET /v1/recommendations with the server key and returns the answer", async () => {
    const client = createClient({ baseUrl, serverKey: "k-1", timeoutMs: PATIENT_MS });
    const result = await client.recommendations(
      { placement: "pdp", anonymousId: "anon-1", productId: "p9", limit: 4, category: ["mugs", "cups"] },
      { fallback: ["b1"] },
    );
    expect(result.fallback).toBe(false);
    expect(result.recId).toBe("rec-1");
    expect(result.items.map((i) => i.productId)).toEqual(["p1", "p2"]);
    expect(seen).toHaveLength(1);
    const url = new URL(seen[0]?.url ?? "", baseUrl);
    expect(seen[0]?.method).toBe("GET");
    expect(url.pathname).toBe("/v1/recommendations");
    expect(Object.fromEntries(url.searchParams)).toEqual({
      placement: "pdp",
      anonymousId: "anon-1",
      productId: "p9",
      limit: "4",
      category: "mugs,cups",
    });
    expect(seen[0]?.authorization).toBe("Bearer k-1");
  });

  it("sends GET /v1/similar/:productId with the id in the path", async () => {
    const client = createClient({ baseUrl, serverKey: "k-1", timeoutMs: PATIENT_MS });
    const result = await client.similar({ productId: "a/b 1", limit: 2 });
    expect(result.fallback).toBe(false);
    const url = new URL(seen[0]?.url ?? "", baseUrl);
    expect(url.pathname).toBe("/v1/similar/a%2Fb%201");
    expect(Object.fromEntries(url.searchParams)).toEqual({ limit: "2" });
  });

  it("sends POST /v1/rank as JSON; its default fallback is the candidates in the caller's order", async () => {
    const client = createClient({ baseUrl, serverKey: "k-1", timeoutMs: PATIENT_MS });
    const ok = await client.rank({ userId: "u1", candidates: ["c1", { productId: "c2", score: 0.5 }] });
    expect(ok.fallback).toBe(false);
    expect(seen[0]?.method).toBe("POST");
    expect(seen[0]?.contentType).toBe("application/json");
    expect(JSON.parse(seen[0]?.body ?? "")).toEqual({
      userId: "u1",
      candidates: ["c1", { productId: "c2", score: 0.5 }],
    });

    handler = (_req, res) => json(res, 503, { error: { code: "dependency_unavailable", message: "busy" } });
    const down = await client.rank({ userId: "u1", candidates: ["c1", { productId: "c2", score: 0.5 }] });
    expect(down.fallback).toBe(true);
    expect(down.items).toEqual([
      { productId: "c1", score: 0, reasons: ["fallback"] },
      { productId: "c2", score: 0.5, reasons: ["fallback"] },
    ]);
  });

  it("answers the fallback when the server is slower than the deadline, in about the deadline", async () => {
    handler = (_req, res) => {
      setTimeout(() => json(res, 200, answer(["late"])), 1_000);
    };
    const errors: ClientError[] = [];
    const client = createClient({ baseUrl, serverKey: "k-1", timeoutMs: 80, onError: (e) => errors.push(e) });
    const started = performance.now();
    const result = await client.recommendations({ placement: "home", limit: 2 }, { fallback: ["b1", "b2", "b3"] });
    const elapsed = performance.now() - started;
    expect(result).toMatchObject({ fallback: true, recId: null, placement: "home" });
    expect(result.items).toEqual([
      { productId: "b1", score: 0, reasons: ["fallback"] },
      { productId: "b2", score: 0, reasons: ["fallback"] },
    ]);
    expect(result.fallback && result.error.kind).toBe("timeout");
    expect(elapsed).toBeGreaterThanOrEqual(75);
    expect(elapsed).toBeLessThan(800);
    expect(errors.map((e) => e.kind)).toEqual(["timeout"]);
  });

  it("uses the default deadline of 150 ms and lets a call override it", async () => {
    let delayMs = 1_500;
    handler = (_req, res) => {
      setTimeout(() => json(res, 200, answer(["slow"])), delayMs);
    };
    const client = createClient({ baseUrl, serverKey: "k-1" });
    const started = performance.now();
    const quick = await client.recommendations({}, { fallback: ["b1"] });
    expect(quick.fallback && quick.error.kind).toBe("timeout");
    expect(performance.now() - started).toBeGreaterThanOrEqual(145);
    expect(performance.now() - started).toBeLessThan(1_000);
    delayMs = 300;
    const patient = await client.recommendations({}, { fallback: ["b1"], timeoutMs: 5_000 });
    expect(patient.fallback).toBe(false);
    expect(patient.items.map((i) => i.productId)).toEqual(["slow"]);
  });

  it("answers the fallback on a 5xx, with the status and the API's error code", async () => {
    handler = (_req, res) => json(res, 500, { error: { code: "internal_error", message: "boom", requestId: "r" } });
    const client = createClient({ baseUrl, serverKey: "k-1", timeoutMs: PATIENT_MS });
    const result: ClientAnswer = await client.recommendations(
      { placement: "pdp", productId: "b2" },
      { fallback: ["b1", "b2", { productId: "b3", score: 9 }, "b1"] },
    );
    expect(result.fallback).toBe(true);
    if (!result.fallback) throw new Error("expected a fallback");
    expect(result.error).toMatchObject({ kind: "http", status: 500, code: "internal_error", message: "boom" });
    // The product being viewed is not recommended to itself, and duplicates count once.
    expect(result.items.map((i) => i.productId)).toEqual(["b1", "b3"]);
    expect(result.items[1]?.score).toBe(9);
  });

  it("answers the fallback on a 4xx too (a bad key must not break the page) and on a non-JSON 5xx", async () => {
    handler = (_req, res) => json(res, 401, { error: { code: "unauthorized", message: "invalid server key" } });
    const client = createClient({ baseUrl, serverKey: "wrong" });
    const denied = await client.recommendations({}, { fallback: ["b1"] });
    expect(denied.fallback && denied.error).toMatchObject({ kind: "http", status: 401, code: "unauthorized" });

    handler = (_req, res) => {
      res.writeHead(502, { "content-type": "text/html" });
      res.end("<h1>Bad gateway</h1>");
    };
    const gateway = await client.recommendations({}, { fallback: ["b1"] });
    expect(gateway.fallback && gateway.error).toMatchObject({ kind: "http", status: 502, message: "HTTP 502" });
  });

  it("answers the fallback when the body is not an answer", async () => {
    handler = (_req, res) => {
      res.writeHead(200, { "content-type": "application/json" });
      res.end("{not json");
    };
    const client = createClient({ baseUrl, serverKey: "k-1", timeoutMs: PATIENT_MS });
    const broken = await client.recommendations({}, { fallback: ["b1"] });
    expect(broken.fallback && broken.error.kind).toBe("invalid_response");

    handler = (_req, res) => json(res, 200, { items: "nope" });
    const odd = await client.recommendations({}, { fallback: ["b1"] });
    expect(odd.fallback && odd.error.kind).toBe("invalid_response");
  });

  it("answers the fallback when a 2xx body's items lack score or reasons (not the documented shape)", async () => {
    // Taken as Lastmile's answer, such a body would break a page that renders item.reasons.
    const client = createClient({ baseUrl, serverKey: "k-1", timeoutMs: PATIENT_MS });
    for (const body of [
      { recId: "r1", placement: "home", items: [{ productId: "a" }] },
      { recId: "r1", placement: "home", items: [{ productId: "a", score: 1 }] },
      { recId: "r1", placement: "home", items: [{ productId: "a", reasons: ["popular"] }] },
      { recId: "r1", placement: "home", items: [{ productId: "a", score: "1", reasons: ["popular"] }] },
      { recId: "r1", placement: "home", items: [{ productId: "a", score: 1, reasons: [null] }] },
      { recId: "r1", items: [{ productId: "a", score: 1, reasons: ["popular"] }] },
    ]) {
      handler = (_req, res) => json(res, 200, body);
      const result = await client.recommendations({}, { fallback: ["b1"] });
      expect(result.fallback && result.error.kind, JSON.stringify(body)).toBe("invalid_response");
      expect(result.items.map((i) => i.productId)).toEqual(["b1"]);
    }
    handler = (_req, res) => json(res, 200, answer(["a"]));
    expect((await client.recommendations({}, { fallback: ["b1"] })).fallback).toBe(false);
  });

  it("answers the fallback when nothing listens (network error)", async () => {
    const closed = createServer();
    const port = await listen(closed);
    await new Promise<void>((resolve) => closed.close(resolve));
    const client = createClient({ baseUrl: `http://127.0.0.1:${port}`, serverKey: "k-1", timeoutMs: 2_000 });
    const result = await client.recommendations({}, { fallback: ["b1"] });
    expect(result.fallback && result.error.kind).toBe("network");
    expect(result.items.map((i) => i.productId)).toEqual(["b1"]);
  });

  it("answers the fallback when the caller cancels, and an empty list when it gave none", async () => {
    handler = (_req, res) => {
      setTimeout(() => json(res, 200, answer(["late"])), 1_000);
    };
    const client = createClient({ baseUrl, serverKey: "k-1", timeoutMs: 5_000 });
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 30);
    const result = await client.recommendations({}, { signal: controller.signal });
    expect(result).toMatchObject({ fallback: true, items: [] });
    expect(result.fallback && result.error.kind).toBe("aborted");
  });

  it("answers an empty list as it is, or the fallback when asked to", async () => {
    handler = (_req, res) => json(res, 200, answer([], { degraded: ["no_snapshot"] }));
    const client = createClient({ baseUrl, serverKey: "k-1", timeoutMs: PATIENT_MS });
    const empty = await client.recommendations({}, { fallback: ["b1"] });
    expect(empty).toMatchObject({ fallback: false, items: [] });
    const filled = await client.recommendations({}, { fallback: ["b1"], fallbackWhenEmpty: true });
    expect(filled.fallback && filled.error).toMatchObject({
      kind: "empty",
      message: expect.stringContaining("no_snapshot"),
    });
    expect(filled.items.map((i) => i.productId)).toEqual(["b1"]);
  });

  it("never throws because of the onError hook", async () => {
    handler = (_req, res) => json(res, 503, {});
    const client = createClient({
      baseUrl,
      serverKey: "k-1",
      onError: () => {
        throw new Error("logger broke");
      },
    });
    await expect(client.recommendations({}, { fallback: ["b1"] })).resolves.toMatchObject({ fallback: true });
  });

  it("swallows the rejection of an async onError hook (no unhandled rejection)", async () => {
    handler = (_req, res) => json(res, 503, {});
    // Node's process, typed by the little this test uses (test/unit has the Worker's types).
    const proc = (globalThis as unknown as { process: NodeEvents }).process;
    const unhandled: unknown[] = [];
    const listener = (reason: unknown) => unhandled.push(reason);
    proc.on("unhandledRejection", listener);
    try {
      const heard: string[] = [];
      const client = createClient({
        baseUrl,
        serverKey: "k-1",
        onError: async (error) => {
          heard.push(error.kind);
          throw new Error("async logger broke");
        },
      });
      await expect(client.recommendations({}, { fallback: ["b1"] })).resolves.toMatchObject({ fallback: true });
      // Node reports an unhandled rejection after the microtasks of the turn that made it.
      await new Promise((resolve) => setTimeout(resolve, 50));
      expect(heard).toEqual(["http"]);
      expect(unhandled).toEqual([]);
    } finally {
      proc.off("unhandledRejection", listener);
    }
  });

  it("takes a Fetcher (a Service Binding's fetch) instead of the global fetch", async () => {
    const requests: string[] = [];
    const fetcher = {
      fetch: (input: Request | string | URL, init?: RequestInit) => {
        const request = new Request(input, init);
        requests.push(request.url);
        return fetch(request);
      },
    };
    const client = createClient({ baseUrl, serverKey: "k-1", fetch: fetcher });
    const result = await client.recommendations({ placement: "cart" });
    expect(result.fallback).toBe(false);
    expect(requests).toEqual([`${baseUrl}v1/recommendations?placement=cart`]);
  });

  it("mints a user token, and answers null (never throws) when it cannot", async () => {
    handler = (_req, res) => json(res, 200, { token: "a.b.c", userKey: "a:anon-1", expiresAt: 123 });
    const client = createClient({ baseUrl, serverKey: "k-1", timeoutMs: PATIENT_MS });
    expect(await client.userToken({ anonymousId: "anon-1" })).toEqual({
      token: "a.b.c",
      userKey: "a:anon-1",
      expiresAt: 123,
    });
    expect(seen[0]).toMatchObject({ method: "POST", url: "/v1/tokens", authorization: "Bearer k-1" });
    handler = (_req, res) => json(res, 500, {});
    expect(await client.userToken({ anonymousId: "anon-1" })).toBeNull();
    // A 2xx body that is not the documented { token, userKey, expiresAt } is no token either.
    for (const body of [
      { token: "a.b.c", expiresAt: 123 },
      { token: "a.b.c", userKey: 7, expiresAt: 123 },
      { token: "a.b.c", userKey: "a:anon-1" },
      null,
    ]) {
      handler = (_req, res) => json(res, 200, body);
      expect(await client.userToken({ anonymousId: "anon-1" }), JSON.stringify(body)).toBeNull();
    }
  });
});

describe("Service Binding transport", () => {
  function binding(impl: Partial<RankingBinding>): RankingBinding {
    const missing = () => Promise.reject(new Error("not bound"));
    return { recommendations: missing, rank: missing, similar: missing, ...impl };
  }

  it("calls the entrypoint's method with the parameters and returns its answer", async () => {
    const calls: unknown[] = [];
    const client = createClient({
      binding: binding({
        recommendations: async (params) => {
          calls.push(params);
          return { ...answer(["p1"]), timing: { total: 3 } };
        },
      }),
    });
    const result = await client.recommendations({ placement: "home", anonymousId: "anon-1" });
    expect(calls).toEqual([{ placement: "home", anonymousId: "anon-1" }]);
    expect(result.fallback).toBe(false);
    expect(result.items.map((i) => i.productId)).toEqual(["p1"]);
  });

  it("turns a thrown RPC error into the fallback with the API's code", async () => {
    const client = createClient({
      binding: binding({
        similar: () => Promise.reject(new Error("validation_failed: productId: is required")),
      }),
    });
    const result = await client.similar({ productId: "" }, { fallback: ["b1"] });
    expect(result.fallback && result.error).toMatchObject({ kind: "rpc", code: "validation_failed" });
    expect(result.items.map((i) => i.productId)).toEqual(["b1"]);
  });

  it("stops waiting at the deadline", async () => {
    const client = createClient({
      timeoutMs: 50,
      binding: binding({ rank: () => new Promise((resolve) => setTimeout(() => resolve(answer(["late"])), 1_000)) }),
    });
    const started = performance.now();
    const result = await client.rank({ candidates: ["c1"] });
    expect(result.fallback && result.error.kind).toBe("timeout");
    expect(result.items.map((i) => i.productId)).toEqual(["c1"]);
    expect(performance.now() - started).toBeLessThan(500);
    expect(await client.userToken({ anonymousId: "a" })).toBeNull();
  });
});

describe("the client's own inputs", () => {
  function failing(): RankingBinding {
    const refuse = () => Promise.reject(new Error("validation_failed: candidates[0]: must be an id or an object"));
    return { recommendations: refuse, rank: refuse, similar: refuse };
  }

  it("answers the fallback, never throws, for candidates or a fallback list the API would refuse", async () => {
    // A storefront passing its search engine's results as they came (a null, a numeric id): the API answers 400,
    // which must be the fallback like any other refusal, not an exception that breaks the page.
    const client = createClient({ binding: failing() });
    const candidates = [null, "c1", 7, { productId: "c2", score: Number.NaN }] as unknown as string[];
    const ranked = await Promise.resolve()
      .then(() => client.rank({ candidates }))
      .catch((error: unknown) => error);
    expect(ranked).toMatchObject({ fallback: true, error: { kind: "rpc", code: "validation_failed" } });
    expect((ranked as ClientAnswer).items).toEqual([
      { productId: "c1", score: 0, reasons: ["fallback"] },
      { productId: "7", score: 0, reasons: ["fallback"] },
      { productId: "c2", score: 0, reasons: ["fallback"] },
    ]);
    const notAList = await Promise.resolve()
      .then(() => client.rank({ candidates: undefined as unknown as string[] }))
      .catch((error: unknown) => error);
    expect(notAList).toMatchObject({ fallback: true, items: [] });

    const fallback = [undefined, "b1", { productId: 5 }, { score: 2 }, "", "b1"] as unknown as string[];
    const recs = await client.recommendations({}, { fallback }).catch((error: unknown) => error);
    expect(recs).toMatchObject({ fallback: true });
    expect((recs as ClientAnswer).items.map((i) => i.productId)).toEqual(["b1", "5"]);
    const noParams = await client.recommendations(undefined as unknown as RankParams).catch((e: unknown) => e);
    expect(noParams).toMatchObject({ fallback: true, placement: "home", items: [] });
  });

  it("does not call the binding when the caller has already cancelled (no answer counted as shown)", async () => {
    let calls = 0;
    const counting = async () => {
      calls++;
      return answer(["p1"]);
    };
    const client = createClient({
      binding: { recommendations: counting, rank: counting, similar: counting },
      timeoutMs: PATIENT_MS,
    });
    const result = await client.recommendations({ anonymousId: "a-1" }, { signal: AbortSignal.abort() });
    expect(result.fallback && result.error.kind).toBe("aborted");
    expect(calls).toBe(0);
  });

  it("labels a fallback with the placement Lastmile's answer to the same call would have", async () => {
    const client = createClient({ binding: failing() });
    const cases: Array<[RankRequest["mode"], "recommendations" | "similar" | "rank", RankParams]> = [
      ["recommend", "recommendations", {}],
      ["recommend", "recommendations", { placement: "" }],
      ["recommend", "recommendations", { placement: "pdp", productId: "p1" }],
      ["similar", "similar", { productId: "p1" }],
      ["similar", "similar", { productId: "p1", placement: "" }],
      ["similar", "similar", { productId: "p1", placement: "search" }],
      ["rerank", "rank", { candidates: ["c1"] }],
      ["rerank", "rank", { candidates: ["c1"], placement: "search" }],
    ];
    for (const [mode, method, params] of cases) {
      const live = parseRankParams(mode, params, DEFAULT_RANKING_CONFIG).placement;
      const fallback = await (client[method] as (p: RankParams) => Promise<ClientAnswer>)(params);
      expect(fallback.fallback, `${method} ${JSON.stringify(params)}`).toBe(true);
      expect(fallback.placement, `${method} ${JSON.stringify(params)}`).toBe(live);
    }
  });
});

describe("attribution links", () => {
  it("adds recId, position and placement to relative and absolute links, keeping query and fragment", () => {
    const a = { recId: "r-1", position: 3, placement: "pdp" };
    expect(withAttribution("/products/85123A", a)).toBe("/products/85123A?lm_rec=r-1&lm_pos=3&lm_pl=pdp");
    expect(withAttribution("https://shop.example/p?x=1#top", a)).toBe(
      "https://shop.example/p?x=1&lm_rec=r-1&lm_pos=3&lm_pl=pdp#top",
    );
    expect(readAttribution("https://shop.example/products/1?lm_rec=r-1&lm_pos=3&lm_pl=pdp")).toEqual(a);
  });

  it("reads no attribution from a link without one or with a malformed one", () => {
    expect(readAttribution("https://shop.example/products/1")).toBeNull();
    expect(readAttribution("https://shop.example/products/1?lm_rec=r&lm_pos=0&lm_pl=pdp")).toBeNull();
    expect(readAttribution("https://shop.example/products/1?lm_rec=r&lm_pos=x")).toBeNull();
    expect(readAttribution("http://[::1/products/1?lm_rec=r&lm_pos=1&lm_pl=pdp")).toBeNull(); // no URL
  });

  it("reads back the attribution of a relative link (a Node server's req.url), as withAttribution wrote it", () => {
    const a = { recId: "r1", position: 2, placement: "pdp" };
    expect(readAttribution(withAttribution("/products/22086", a))).toEqual(a);
    expect(readAttribution("/products/22086")).toBeNull();
  });
});
