// openRedis (src/stores/redis.ts): the Upstash client makes exactly one attempt per command. Callers have deadlines
// and retries of their own (the outbox's backoff, the loader's runs); a hidden second attempt after a network error
// would spend their deadline and send a command twice.
import { createServer, type Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openRedis } from "../../src/stores/redis.ts";

let connections = 0;
const sockets = new Set<Socket>();
// Accepts a connection and closes it at once: to fetch, a network error.
const server = createServer((socket) => {
  connections++;
  sockets.add(socket);
  socket.destroy();
});
let url = "";

beforeAll(async () => {
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  if (!address || typeof address === "string") throw new Error("no port");
  url = `http://127.0.0.1:${address.port}`;
});
afterAll(async () => {
  for (const socket of sockets) socket.destroy();
  await new Promise((resolve) => server.close(resolve));
});

describe("openRedis", () => {
  it("makes one attempt when the network fails, then throws", async () => {
    connections = 0;
    await expect(openRedis({ url, token: "t" }).ping()).rejects.toThrow();
    expect(connections).toBe(1);
  });
});
