/**
 * Upstash-REST-compatible HTTP gateway in front of a real redis-server.
 *
 * Lets the unmodified `@upstash/redis` client (and anything else speaking Upstash's
 * REST dialect) run against local Redis in development and tests: single commands
 * (`POST /` or path style `/<cmd>/<arg>…`), `/pipeline`, `/multi-exec`, bearer or
 * `_token` auth and the `Upstash-Encoding: base64` response encoding.
 *
 * Run standalone:
 *   node scripts/lib/upstash-gateway.ts --redis-port 6379 --port 8079 --token dev
 * prints `{"url":"http://127.0.0.1:8079"}` and serves until SIGINT/SIGTERM.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { parseArgs } from "node:util";
import type { Reply } from "./resp.ts";
import { isErrorReply, RespPool } from "./resp.ts";

export interface UpstashGatewayOptions {
  redisHost?: string;
  redisPort: number;
  host?: string;
  /** 0 picks a free port. */
  port: number;
  token: string;
}

export interface UpstashGateway {
  url: string;
  port: number;
  close(): Promise<void>;
}

const MAX_BODY_BYTES = 10 * 1024 * 1024;

// These change per-connection state or break one-reply-per-command pairing, which
// would leak into later requests sharing the pooled connection. Transactions go
// through /multi-exec instead, like on Upstash.
const UNSUPPORTED_COMMANDS = new Set([
  "AUTH",
  "HELLO",
  "SELECT",
  "CLIENT",
  "QUIT",
  "RESET",
  "MONITOR",
  "SYNC",
  "PSYNC",
  "MULTI",
  "EXEC",
  "DISCARD",
  "WATCH",
  "UNWATCH",
  "SUBSCRIBE",
  "PSUBSCRIBE",
  "SSUBSCRIBE",
  "UNSUBSCRIBE",
  "PUNSUBSCRIBE",
  "SUNSUBSCRIBE",
]);

class HttpError extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.status = status;
  }
}

type Command = Array<string | Buffer>;

// Upstash's client only ever sends strings, numbers and booleans (it JSON-stringifies
// everything else, including null, before sending). A raw JSON null from other
// callers becomes the empty string rather than an error, mirroring how most Redis
// clients send "no value".
function toArg(value: unknown): string {
  if (typeof value === "string") return value;
  if (typeof value === "number" || typeof value === "boolean") return String(value);
  if (value === null) return "";
  throw new HttpError(400, "ERR command arguments must be strings, numbers, booleans or null");
}

function toCommand(value: unknown): Command {
  if (!Array.isArray(value) || value.length === 0) {
    throw new HttpError(400, "ERR command must be a non-empty JSON array");
  }
  return checkSupported(value.map(toArg));
}

function checkSupported(command: Command): Command {
  const name = String(command[0] ?? "").toUpperCase();
  if (name === "") throw new HttpError(400, "ERR empty command name");
  if (UNSUPPORTED_COMMANDS.has(name)) throw new HttpError(400, `ERR command '${name}' is not supported by the gateway`);
  return command;
}

function toCommandList(value: unknown): Command[] {
  if (!Array.isArray(value) || value.length === 0) {
    throw new HttpError(400, "ERR body must be a non-empty JSON array of command arrays");
  }
  return value.map(toCommand);
}

function parseJson(body: Buffer): unknown {
  try {
    return JSON.parse(body.toString("utf8"));
  } catch {
    throw new HttpError(400, "ERR request body is not valid JSON");
  }
}

/**
 * Mirrors the decoder in @upstash/redis: with base64 it decodes every string except
 * a top-level "OK", so every other string, status replies such as PONG included,
 * must be encoded or the client would decode them into garbage.
 */
function toJson(reply: Reply, base64: boolean, topLevel: boolean): unknown {
  if (reply === null || typeof reply === "number") return reply;
  if (Array.isArray(reply)) return reply.map((item) => toJson(item, base64, false));
  if (Buffer.isBuffer(reply)) return base64 ? reply.toString("base64") : reply.toString("utf8");
  // Nested errors only occur inside arrays (e.g. EVAL results); keep their text.
  const text = reply.type === "simple" ? reply.value : reply.message;
  if (!base64 || (topLevel && reply.type === "simple" && text === "OK")) return text;
  return Buffer.from(text, "utf8").toString("base64");
}

function toEntry(reply: Reply, base64: boolean): { result: unknown } | { error: string } {
  return isErrorReply(reply) ? { error: reply.message } : { result: toJson(reply, base64, true) };
}

function sendJson(res: ServerResponse, status: number, payload: unknown): void {
  const body = JSON.stringify(payload);
  res.writeHead(status, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(body) });
  res.end(body);
}

function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    // Keep draining past the cap instead of dropping the socket: clients still
    // uploading would otherwise see a reset instead of the 413.
    req.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (size <= MAX_BODY_BYTES) chunks.push(chunk);
    });
    req.on("end", () => {
      if (size > MAX_BODY_BYTES) reject(new HttpError(413, `ERR request body exceeds ${MAX_BODY_BYTES} bytes`));
      else resolve(Buffer.concat(chunks));
    });
    req.on("error", reject);
  });
}

function tokenMatches(given: string | null, expected: Buffer): boolean {
  if (given === null) return false;
  return timingSafeEqual(createHash("sha256").update(given).digest(), expected);
}

function bearerToken(req: IncomingMessage, url: URL): string | null {
  const match = /^Bearer\s+(.+)$/i.exec(req.headers.authorization ?? "");
  return match?.[1]?.trim() ?? url.searchParams.get("_token");
}

/** Path-style command: `/set/foo/bar?EX=100`, a POST body being the value before the query args. */
function pathCommand(url: URL, body: Buffer): Command {
  let segments: string[];
  try {
    segments = url.pathname.slice(1).split("/").map(decodeURIComponent);
  } catch {
    throw new HttpError(400, "ERR invalid percent-encoding in path");
  }
  const command: Command = [...segments];
  if (body.length > 0) command.push(body);
  for (const [key, value] of url.searchParams) {
    if (key === "_token") continue;
    command.push(key);
    if (value !== "") command.push(value);
  }
  return checkSupported(command);
}

export async function startUpstashGateway(opts: UpstashGatewayOptions): Promise<UpstashGateway> {
  const pool = new RespPool({ host: opts.redisHost ?? "127.0.0.1", port: opts.redisPort });
  const expectedToken = createHash("sha256").update(opts.token).digest();

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "http://gateway");
    if (!tokenMatches(bearerToken(req, url), expectedToken)) {
      sendJson(res, 401, { error: "Unauthorized" });
      return;
    }
    if (req.method !== "GET" && req.method !== "POST") {
      res.setHeader("Allow", "GET, POST");
      throw new HttpError(405, `ERR method ${req.method ?? ""} not allowed`);
    }
    const body = await readBody(req);
    const base64 = String(req.headers["upstash-encoding"] ?? "").toLowerCase() === "base64";
    const route = url.pathname;

    if (route === "/pipeline" || route === "/multi-exec") {
      if (req.method !== "POST") throw new HttpError(404, `ERR ${route} only accepts POST`);
      const commands = toCommandList(parseJson(body));
      if (route === "/pipeline") {
        const replies = await pool.exec(commands);
        sendJson(
          res,
          200,
          replies.map((reply) => toEntry(reply, base64)),
        );
        return;
      }
      const replies = await pool.transaction(commands);
      if (isErrorReply(replies)) throw new HttpError(400, replies.message);
      sendJson(
        res,
        200,
        replies.map((reply) => toEntry(reply, base64)),
      );
      return;
    }

    let command: Command;
    if (route === "/") {
      if (req.method !== "POST")
        throw new HttpError(404, "ERR no command: POST a JSON array to / or use /<command>/<args>");
      command = toCommand(parseJson(body));
    } else {
      command = pathCommand(url, body);
    }
    const [reply = null] = await pool.exec([command]);
    if (isErrorReply(reply)) throw new HttpError(400, reply.message);
    sendJson(res, 200, { result: toJson(reply, base64, true) });
  }

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (res.headersSent) {
        res.destroy();
        return;
      }
      // Anything that is not a request problem is Redis being unreachable or failing mid-flight.
      const status = err instanceof HttpError ? err.status : 500;
      sendJson(res, status, { error: err instanceof Error ? err.message : String(err) });
    });
  });

  const host = opts.host ?? "127.0.0.1";
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port, host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;

  return {
    url: `http://${host.includes(":") ? `[${host}]` : host}:${port}`,
    port,
    async close() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      await Promise.all([closed, pool.close()]);
    },
  };
}

if (import.meta.main) {
  const { values } = parseArgs({
    options: {
      "redis-host": { type: "string", default: "127.0.0.1" },
      "redis-port": { type: "string", default: "6379" },
      host: { type: "string", default: "127.0.0.1" },
      port: { type: "string", default: "0" },
      token: { type: "string" },
    },
  });
  if (!values.token) {
    console.error(
      "usage: upstash-gateway.ts --token <token> [--redis-port 6379] [--port 0] [--host 127.0.0.1] [--redis-host 127.0.0.1]",
    );
    process.exit(2);
  }
  const gateway = await startUpstashGateway({
    redisHost: values["redis-host"],
    redisPort: Number(values["redis-port"]),
    host: values.host,
    port: Number(values.port),
    token: values.token,
  });
  console.log(JSON.stringify({ url: gateway.url }));
  const shutdown = () => void gateway.close().then(() => process.exit(0));
  process.once("SIGINT", shutdown);
  process.once("SIGTERM", shutdown);
}
