/**
 * How the batch loop's retry (src/batch/retry.ts) reads failures of the real Upstash client (src/stores/redis.ts)
 * against an HTTP server that answers like a gateway in trouble: a 502/503/504 whose body is not Redis's JSON answer
 * (Cloudflare's "error code: 502", an HTML page) is transient; Redis's own error answer is not.
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isTransientError } from "../../src/batch/retry.ts";
import { openRedis } from "../../src/stores/redis.ts";

let server: Server;
let url: string;
/** What the server answers next: status, content type, body. */
let answer: { status: number; type: string; body: string };

beforeAll(async () => {
  server = createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      res.writeHead(answer.status, { "content-type": answer.type });
      res.end(answer.body);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await new Promise((resolve) => server.close(resolve));
});

async function failure(): Promise<unknown> {
  const redis = openRedis({ url, token: "t", rawResults: true });
  return redis.exec(["XPENDING", "s", "g"]).then(
    () => {
      throw new Error("expected the call to fail");
    },
    (error: unknown) => error,
  );
}

describe("Upstash failures as the retry reads them", () => {
  it.each([
    [502, "text/plain", "error code: 502"],
    [503, "text/html", "<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>"],
    [504, "text/plain", "upstream request timeout"],
  ])("a %i whose body is not Redis's answer is transient", async (status, type, body) => {
    answer = { status, type, body };
    expect(isTransientError(await failure())).toBe(true);
  });

  it("Redis's own error answer is not", async () => {
    answer = { status: 400, type: "application/json", body: JSON.stringify({ error: "ERR syntax error" }) };
    const error = await failure();
    expect(String(error)).toContain("ERR syntax error");
    expect(isTransientError(error)).toBe(false);
  });
});
