// openRedis and withRedisDeadline (src/stores/redis.ts) against TCP servers that misbehave: the Upstash client makes
// exactly one attempt per command (callers have deadlines and retries of their own; a hidden second attempt would
// spend their deadline and send a command twice), and a Redis that accepts the connection and never answers is given
// up on at the deadline: the ranking isolate's trending read and exposure pushes do not stay pending for good.
import { createServer, type Server, type Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { EXPOSURE_PUSH_TIMEOUT_MS } from "../../src/experiments/exposure-buffer.ts";
import { depsFromEnv, exposureBuffer } from "../../src/rank/deps.ts";
import { TRENDING_GIVE_UP_MS } from "../../src/rank/trending.ts";
import { openRedis, withRedisDeadline } from "../../src/stores/redis.ts";

const sockets = new Set<Socket>();
/** A server and its URL. */
function tcp(onSocket: (socket: Socket) => void) {
  const state = { server: null as Server | null, url: "" };
  state.server = createServer((socket) => {
    sockets.add(socket);
    onSocket(socket);
  });
  return state;
}
// Closes every connection at once: to fetch, a network error.
const closing = tcp((socket) => socket.destroy());
// Reads requests and never answers.
const silent = tcp(() => {});

beforeAll(async () => {
  for (const s of [closing, silent]) {
    await new Promise<void>((resolve) => s.server?.listen(0, "127.0.0.1", resolve));
    const address = s.server?.address();
    if (!address || typeof address === "string") throw new Error("no port");
    s.url = `http://127.0.0.1:${address.port}`;
  }
});
afterAll(async () => {
  for (const socket of sockets) socket.destroy();
  for (const s of [closing, silent]) await new Promise((resolve) => s.server?.close(resolve));
});

describe("openRedis", () => {
  it("makes one attempt when the network fails, then throws", async () => {
    let accepted = 0;
    closing.server?.on("connection", () => accepted++);
    await expect(openRedis({ url: closing.url, token: "t" }).ping()).rejects.toThrow();
    expect(accepted).toBe(1);
  });
});

describe("withRedisDeadline", () => {
  it("rejects at the deadline when Redis never answers", async () => {
    const started = Date.now();
    await expect(withRedisDeadline({ url: silent.url, token: "t" }, 200, (redis) => redis.ping())).rejects.toThrow(
      /timed out after 200 ms/,
    );
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  it("gives the ranking isolate's trending read and exposure pushes a deadline", async () => {
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout"] });
    try {
      const env = { UPSTASH_REDIS_REST_URL: silent.url, UPSTASH_REDIS_REST_TOKEN: "t", LASTMILE_ENV: "test" } as Env;
      const waited: Array<Promise<unknown>> = [];
      const deps = depsFromEnv(env, { waitUntil: (p) => waited.push(p) });
      expect(deps.trending?.(Date.now())?.status).toBe("warming");
      const buffer = exposureBuffer({ url: silent.url, token: "deadline-test" });
      const added = buffer.add({ messageId: "m1", userKey: "a:v", event: "{}" });
      expect(added.status).toBe("opened");
      await vi.advanceTimersByTimeAsync(Math.max(TRENDING_GIVE_UP_MS, EXPOSURE_PUSH_TIMEOUT_MS) + 100);
      await Promise.all(waited);
      if (added.status === "opened") await added.sent;
      // The read failed (not pending for good), so the answer says unavailable, and the exposure was released.
      expect(deps.trending?.(Date.now())?.status).toBe("unavailable");
      expect(buffer.pending).toBe(0);
    } finally {
      vi.useRealTimers();
    }
  });
});
