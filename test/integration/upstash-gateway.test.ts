/**
 * The Upstash gateway against a real redis-server: the unmodified @upstash/redis
 * client end to end, plus the raw wire format it relies on. Values are checked by
 * reading back through the gateway or straight from Redis over RESP.
 */
import { randomUUID } from "node:crypto";
import { Redis } from "@upstash/redis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort } from "../../scripts/lib/ports.ts";
import { type RunningRedis, startRedis } from "../../scripts/lib/redis.ts";
import type { Reply } from "../../scripts/lib/resp.ts";
import { RespPool } from "../../scripts/lib/resp.ts";
import type { UpstashGateway } from "../../scripts/lib/upstash-gateway.ts";
import { startUpstashGateway } from "../../scripts/lib/upstash-gateway.ts";

/** A memory-only redis-server from the launcher `npm run dev` uses; pass `port` to restart on the same one. */
async function startRedisServer(opts: { port?: number } = {}): Promise<RunningRedis> {
  return startRedis({ port: opts.port ?? (await freePort()) });
}

const TOKEN = "test-token";

let redisServer: RunningRedis;
let gateway: UpstashGateway;
let direct: RespPool;
let redis: Redis;

beforeAll(async () => {
  redisServer = await startRedisServer();
  gateway = await startUpstashGateway({ redisPort: redisServer.port, port: 0, token: TOKEN });
  direct = new RespPool({ port: redisServer.port });
  redis = new Redis({ url: gateway.url, token: TOKEN });
});

afterAll(async () => {
  await direct?.close();
  await gateway?.close();
  await redisServer?.stop();
});

const key = (name: string) => `test:${name}:${randomUUID()}`;

/** Reads a key straight from Redis, bypassing the gateway. */
async function directGet(k: string): Promise<Reply> {
  const [reply = null] = await direct.exec([["GET", k]]);
  return reply;
}

async function call(
  path: string,
  body?: unknown,
  opts: { token?: string | null; base64?: boolean; method?: string; rawBody?: string } = {},
): Promise<{ status: number; json: unknown }> {
  const headers: Record<string, string> = { "Content-Type": "application/json" };
  const token = opts.token === undefined ? TOKEN : opts.token;
  if (token !== null) headers.Authorization = `Bearer ${token}`;
  if (opts.base64) headers["Upstash-Encoding"] = "base64";
  const res = await fetch(`${gateway.url}${path}`, {
    method: opts.method ?? (body === undefined && opts.rawBody === undefined ? "GET" : "POST"),
    headers,
    body: opts.rawBody ?? (body === undefined ? undefined : JSON.stringify(body)),
  });
  return { status: res.status, json: await res.json() };
}

const b64 = (s: string) => Buffer.from(s, "utf8").toString("base64");

describe("@upstash/redis client through the gateway", () => {
  it("round-trips ASCII, non-ASCII and control-character strings byte-exactly", async () => {
    const values = ["plain", "héllo wörld — 日本語 🚀", 'nul\u0000ctl\u0001\u007f\nline "q" \\ end', "00123"];
    for (const value of values) {
      const k = key("str");
      expect(await redis.set(k, value)).toBe("OK");
      expect(await redis.get(k)).toBe(value);
      expect(await directGet(k)).toEqual(Buffer.from(value, "utf8"));
    }
  });

  it("reads values written directly to Redis", async () => {
    const k = key("direct");
    await direct.exec([["SET", k, "ünïcode from resp"]]);
    expect(await redis.get(k)).toBe("ünïcode from resp");
    expect(await redis.get(key("missing"))).toBeNull();
  });

  it("returns non-OK status replies intact", async () => {
    const k = key("type");
    await redis.set(k, "x");
    expect(await redis.ping()).toBe("PONG");
    expect(await redis.type(k)).toBe("string");
  });

  it("increments counters", async () => {
    const k = key("incr");
    expect(await redis.incr(k)).toBe(1);
    expect(await redis.incrby(k, 41)).toBe(42);
    expect(await directGet(k)).toEqual(Buffer.from("42"));
  });

  it("stores and reads hashes", async () => {
    const k = key("hash");
    expect(await redis.hset(k, { name: "Ünï", qty: 3, meta: { tags: ["a", "b"] } })).toBe(3);
    expect(await redis.hgetall(k)).toEqual({ name: "Ünï", qty: 3, meta: { tags: ["a", "b"] } });
    const [raw] = await direct.exec([["HGET", k, "meta"]]);
    expect(raw).toEqual(Buffer.from('{"tags":["a","b"]}'));
  });

  it("ranks sorted-set members with scores", async () => {
    const k = key("zset");
    expect(
      await redis.zadd(k, { score: 2.5, member: "b" }, { score: 1, member: "a" }, { score: 10, member: "c" }),
    ).toBe(3);
    expect(await redis.zrange(k, 0, -1, { withScores: true })).toEqual(["a", 1, "b", 2.5, "c", 10]);
    expect(await redis.zrange(k, 0, 0, { rev: true })).toEqual(["c"]);
    expect(await redis.zscore(k, "b")).toBe(2.5);
  });

  it("consumes a stream through a consumer group", async () => {
    const k = key("stream");
    const id1 = await redis.xadd(k, "*", { event: "view", sku: "A1" });
    const id2 = await redis.xadd(k, "*", { event: "cart", sku: "B2" });
    expect(id1).toMatch(/^\d+-\d+$/);
    expect(await redis.xgroup(k, { type: "CREATE", group: "g", id: "0" })).toBe("OK");
    const read = await redis.xreadgroup("g", "c1", k, ">", { count: 10 });
    expect(read).toEqual([
      [
        k,
        [
          [id1, ["event", "view", "sku", "A1"]],
          [id2, ["event", "cart", "sku", "B2"]],
        ],
      ],
    ]);
    expect(await redis.xack(k, "g", id1)).toBe(1);
    const [pending] = await direct.exec([["XPENDING", k, "g"]]);
    expect(Array.isArray(pending) && pending[0]).toBe(1);
  });

  it("executes explicit pipelines in order", async () => {
    const k = key("pipe");
    const result = await redis.pipeline().set(k, "v").incr(`${k}:n`).get(k).incr(`${k}:n`).exec();
    expect(result).toEqual(["OK", 1, "v", 2]);
  });

  it("executes multi/exec transactions", async () => {
    const k = key("multi");
    const result = await redis.multi().set(k, 5).incrby(k, 3).get(k).exec();
    expect(result).toEqual(["OK", 8, 8]);
    expect(await directGet(k)).toEqual(Buffer.from("8"));
  });

  it("surfaces a Redis error as a thrown error", async () => {
    const k = key("err");
    await redis.set(k, "not a number");
    await expect(redis.incr(k)).rejects.toThrow(/not an integer/);
    await expect(redis.pipeline().incr(k).exec()).rejects.toThrow(/not an integer/);
  });

  it("rejects a wrong token", async () => {
    const bad = new Redis({ url: gateway.url, token: "wrong", retry: false });
    await expect(bad.get("anything")).rejects.toThrow(/Unauthorized/);
  });

  it("serialises and deserialises JSON values", async () => {
    const k = key("json");
    const value = { sku: "A1", price: 9.99, tags: ["x", "ÿ"], nested: { ok: true, none: null } };
    await redis.set(k, value);
    expect(await redis.get(k)).toEqual(value);
    expect(JSON.parse(String(await directGet(k)))).toEqual(value);
  });
});

describe("gateway wire format", () => {
  it("POST / returns {result} with plain encoding", async () => {
    const k = key("raw");
    expect(await call("/", ["SET", k, "héllo", "EX", 100])).toEqual({ status: 200, json: { result: "OK" } });
    expect(await call("/", ["GET", k])).toEqual({ status: 200, json: { result: "héllo" } });
    expect(await call("/", ["TTL", k])).toMatchObject({ status: 200, json: { result: expect.any(Number) } });
    expect(await call("/", ["GET", key("none")])).toEqual({ status: 200, json: { result: null } });
  });

  it("base64-encodes every string except a top-level OK when asked to", async () => {
    const k = key("b64");
    expect(await call("/", ["SET", k, "héllo"], { base64: true })).toEqual({ status: 200, json: { result: "OK" } });
    expect(await call("/", ["GET", k], { base64: true })).toEqual({ status: 200, json: { result: b64("héllo") } });
    expect(await call("/", ["PING"], { base64: true })).toEqual({ status: 200, json: { result: b64("PONG") } });
    expect(await call("/", ["STRLEN", k], { base64: true })).toEqual({ status: 200, json: { result: 6 } });
    const l = key("list");
    await call("/", ["RPUSH", l, "a", "ü"]);
    expect(await call("/", ["LRANGE", l, 0, -1], { base64: true })).toEqual({
      status: 200,
      json: { result: [b64("a"), b64("ü")] },
    });
    expect(await call("/", ["LRANGE", l, 0, -1])).toEqual({ status: 200, json: { result: ["a", "ü"] } });
    const s = key("xs");
    const added = await call("/", ["XADD", s, "1-1", "f", "v"]);
    expect(added).toEqual({ status: 200, json: { result: "1-1" } });
    expect(await call("/", ["XRANGE", s, "-", "+"], { base64: true })).toEqual({
      status: 200,
      json: { result: [[b64("1-1"), [b64("f"), b64("v")]]] },
    });
  });

  it("reads binary values base64-encoded byte-exactly", async () => {
    const k = key("bin");
    const bytes = Buffer.from([0, 1, 0xfe, 0xff, 0x80]);
    await direct.exec([["SET", k, bytes]]);
    const { json } = await call("/", ["GET", k], { base64: true });
    expect(Buffer.from((json as { result: string }).result, "base64")).toEqual(bytes);
  });

  it("stringifies number, boolean and null arguments", async () => {
    const k = key("args");
    await call("/", ["HSET", k, "n", 1.5, "t", true, "z", null]);
    const [reply] = await direct.exec([["HGETALL", k]]);
    expect((reply as Buffer[]).map(String)).toEqual(["n", "1.5", "t", "true", "z", ""]);
  });

  it("returns 400 {error} for a Redis error", async () => {
    const k = key("err");
    await call("/", ["LPUSH", k, "x"]);
    const { status, json } = await call("/", ["INCR", k]);
    expect(status).toBe(400);
    expect(json).toEqual({ error: expect.stringMatching(/^WRONGTYPE/) });
  });

  it("/pipeline answers each command independently and in order", async () => {
    const k = key("pipe");
    const { status, json } = await call("/pipeline", [
      ["SET", k, "1"],
      ["INCR", k],
      ["LPUSH", k, "x"],
      ["NOSUCHCMD"],
      ["GET", k],
    ]);
    expect(status).toBe(200);
    expect(json).toEqual([
      { result: "OK" },
      { result: 2 },
      { error: expect.stringMatching(/^WRONGTYPE/) },
      { error: expect.stringMatching(/^ERR unknown command/) },
      { result: "2" },
    ]);
  });

  it("/multi-exec runs atomically and reports runtime errors per command", async () => {
    const k = key("tx");
    const ok = await call(
      "/multi-exec",
      [
        ["SET", k, "1"],
        ["INCR", k],
        ["LPUSH", k, "x"],
        ["GET", k],
      ],
      { base64: true },
    );
    expect(ok).toEqual({
      status: 200,
      json: [{ result: "OK" }, { result: 2 }, { error: expect.stringMatching(/^WRONGTYPE/) }, { result: b64("2") }],
    });
  });

  it("/multi-exec returns 400 and applies nothing when the transaction aborts", async () => {
    const k = key("txabort");
    const { status, json } = await call("/multi-exec", [["SET", k, "1"], ["NOSUCHCMD"]]);
    expect(status).toBe(400);
    expect(json).toEqual({ error: expect.stringMatching(/^EXECABORT/) });
    expect(await directGet(k)).toBeNull();
  });

  it("supports path-style commands", async () => {
    const k = key("path/with space");
    const enc = encodeURIComponent(k);
    expect(await call(`/set/${enc}/${encodeURIComponent("v 1/ü")}`)).toEqual({ status: 200, json: { result: "OK" } });
    expect(await directGet(k)).toEqual(Buffer.from("v 1/ü"));
    expect(await call(`/get/${enc}`)).toEqual({ status: 200, json: { result: "v 1/ü" } });
    expect(await call(`/get/${enc}`, undefined, { base64: true })).toEqual({
      status: 200,
      json: { result: b64("v 1/ü") },
    });
    // POST body is the value; query parameters follow it.
    expect(await call(`/set/${enc}?EX=100`, undefined, { rawBody: '{"raw":"body"}' })).toEqual({
      status: 200,
      json: { result: "OK" },
    });
    expect(await directGet(k)).toEqual(Buffer.from('{"raw":"body"}'));
    const [ttl] = await direct.exec([["TTL", k]]);
    expect(ttl).toBeGreaterThan(0);
    const incr = await call(`/incr/${encodeURIComponent(key("n"))}?_token=${TOKEN}`, undefined, { token: null });
    expect(incr).toEqual({ status: 200, json: { result: 1 } });
  });

  it("rejects malformed bodies with 400 {error}", async () => {
    for (const rawBody of ["{not json", '{"a":1}', "[]", '[["GET","k"]]', '["GET",{"a":1}]', '[""]']) {
      const { status, json } = await call("/", undefined, { rawBody });
      expect({ rawBody, status }).toEqual({ rawBody, status: 400 });
      expect(json).toEqual({ error: expect.stringMatching(/^ERR /) });
    }
    for (const rawBody of ["[]", '["GET","k"]', '[["GET","k"], "x"]']) {
      const { status } = await call("/pipeline", undefined, { rawBody });
      expect({ rawBody, status }).toEqual({ rawBody, status: 400 });
    }
    expect(await call("/", ["SUBSCRIBE", "ch"])).toEqual({
      status: 400,
      json: { error: expect.stringMatching(/not supported/) },
    });
  });

  it("rejects bad or missing tokens with 401", async () => {
    expect(await call("/", ["PING"], { token: "nope" })).toEqual({ status: 401, json: { error: "Unauthorized" } });
    expect(await call("/", ["PING"], { token: null })).toEqual({ status: 401, json: { error: "Unauthorized" } });
    expect(await call("/ping?_token=nope", undefined, { token: null })).toEqual({
      status: 401,
      json: { error: "Unauthorized" },
    });
  });

  it("answers 404 for unknown routes and 413 for oversized bodies", async () => {
    expect(await call("/")).toMatchObject({ status: 404, json: { error: expect.any(String) } });
    expect(await call("/pipeline")).toMatchObject({ status: 404, json: { error: expect.any(String) } });
    const huge = JSON.stringify(["SET", "k", "x".repeat(10 * 1024 * 1024)]);
    expect(await call("/", undefined, { rawBody: huge })).toMatchObject({
      status: 413,
      json: { error: expect.any(String) },
    });
    // The connection stays usable after a rejected upload.
    expect(await call("/", ["PING"])).toEqual({ status: 200, json: { result: "PONG" } });
  });
});

describe("gateway when Redis goes away", () => {
  it("answers 500 quickly while Redis is down and recovers when it is back", async () => {
    let server = await startRedisServer();
    const gw = await startUpstashGateway({ redisPort: server.port, port: 0, token: TOKEN });
    const client = new Redis({ url: gw.url, token: TOKEN, retry: false });
    const post = async (path: string, body: unknown) => {
      const res = await fetch(`${gw.url}${path}`, {
        method: "POST",
        headers: { Authorization: `Bearer ${TOKEN}` },
        body: JSON.stringify(body),
      });
      return { status: res.status, json: (await res.json()) as unknown };
    };
    try {
      expect(await post("/", ["SET", "k", "before"])).toEqual({ status: 200, json: { result: "OK" } });
      await server.stop();

      const started = Date.now();
      expect(await post("/", ["GET", "k"])).toEqual({ status: 500, json: { error: expect.any(String) } });
      expect(await post("/pipeline", [["GET", "k"]])).toEqual({ status: 500, json: { error: expect.any(String) } });
      await expect(client.get("k")).rejects.toThrow();
      expect(Date.now() - started).toBeLessThan(1000);

      server = await startRedisServer({ port: server.port });
      expect(await post("/", ["SET", "k", "after"])).toEqual({ status: 200, json: { result: "OK" } });
      expect(await client.get("k")).toBe("after");
    } finally {
      await gw.close();
      await server.stop();
    }
  });
});
