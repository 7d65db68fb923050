// Postgres over WebSocket, as Neon serves it: the Neon serverless driver opens a WebSocket to
// `<proxy>?address=<host>:<port>` and speaks the Postgres wire protocol inside it. This proxy pipes each
// WebSocket to a TCP connection to the one Postgres it fronts, so local code uses the very driver and code
// path it uses against Neon in production. It only ever connects to that one server: it is no open relay.
import { createServer } from "node:http";
import { createConnection } from "node:net";
import { WebSocketServer } from "ws";
import { LOOPBACK } from "./ports.ts";

export interface PgWsProxyOptions {
  /** 0 picks a free port. */
  port: number;
  target: { host: string; port: number };
  host?: string;
}

export interface RunningPgWsProxy {
  port: number;
  /** The value for `neonConfig.wsProxy` (host:port/path, no scheme). */
  wsProxy: string;
  /** Open WebSockets, for tests that check nothing leaks. */
  connections(): number;
  close(): Promise<void>;
}

export const WS_PATH = "/v2";

export async function startPgWsProxy(options: PgWsProxyOptions): Promise<RunningPgWsProxy> {
  const host = options.host ?? LOOPBACK;
  const server = createServer((_req, res) => {
    res.writeHead(426, { "content-type": "application/json" });
    res.end(JSON.stringify({ error: "upgrade_required", message: "connect with a WebSocket" }));
  });
  const wss = new WebSocketServer({ noServer: true });
  const allowed = new Set([`${options.target.host}:${options.target.port}`, `localhost:${options.target.port}`]);

  server.on("upgrade", (req, socket, head) => {
    const url = new URL(req.url ?? "/", "http://proxy");
    const address = url.searchParams.get("address");
    if (url.pathname !== WS_PATH || (address !== null && !allowed.has(address))) {
      socket.end("HTTP/1.1 403 Forbidden\r\nConnection: close\r\n\r\n");
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      const tcp = createConnection({ host: options.target.host, port: options.target.port });
      tcp.setNoDelay(true);
      const pending: Buffer[] = [];
      let connected = false;
      tcp.on("connect", () => {
        connected = true;
        for (const chunk of pending) tcp.write(chunk);
        pending.length = 0;
      });
      ws.on("message", (data: Buffer | ArrayBuffer | Buffer[]) => {
        const chunk = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as ArrayBuffer);
        if (connected) tcp.write(chunk);
        else pending.push(chunk);
      });
      tcp.on("data", (chunk) => ws.send(chunk));
      // 1011: the server could not reach Postgres or lost it; the driver surfaces it as a connection error.
      tcp.on("error", () => ws.close(1011, "postgres unreachable"));
      tcp.on("close", () => {
        if (ws.readyState === ws.OPEN) ws.close(1000);
      });
      ws.on("close", () => tcp.destroy());
      ws.on("error", () => tcp.destroy());
    });
  });

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port, host, () => resolve());
  });
  const address = server.address();
  const port = typeof address === "object" && address ? address.port : options.port;
  return {
    port,
    wsProxy: `${host}:${port}${WS_PATH}`,
    connections: () => wss.clients.size,
    close: async () => {
      for (const ws of wss.clients) ws.terminate();
      wss.close();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
