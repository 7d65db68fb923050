/**
 * Minimal RESP2 client for talking to a real redis-server from Node scripts and tests.
 *
 * Commands are pipelined on one pooled TCP connection per call, so a batch of N
 * commands costs one round trip and replies come back in order. Connections that
 * error or close are dropped and replaced on demand, which is what lets callers
 * recover by themselves once Redis is reachable again.
 */

import type { Socket } from "node:net";
import { connect } from "node:net";

/** A command argument; numbers are sent as their decimal string. */
export type Arg = string | number | Uint8Array;

export interface SimpleString {
  type: "simple";
  value: string;
}

export interface ErrorReply {
  type: "error";
  message: string;
}

/**
 * One RESP2 reply. Integers become JS numbers, which loses precision beyond 2^53;
 * that matches what a JSON gateway can carry anyway.
 */
export type Reply = SimpleString | ErrorReply | number | Buffer | null | Reply[];

export function isErrorReply(reply: Reply): reply is ErrorReply {
  return (
    typeof reply === "object" &&
    reply !== null &&
    !Array.isArray(reply) &&
    !Buffer.isBuffer(reply) &&
    reply.type === "error"
  );
}

const CRLF = Buffer.from("\r\n");

export function encodeCommand(args: readonly Arg[]): Buffer {
  const parts: Buffer[] = [Buffer.from(`*${args.length}\r\n`)];
  for (const arg of args) {
    const bytes =
      typeof arg === "string" || typeof arg === "number"
        ? Buffer.from(String(arg), "utf8")
        : Buffer.from(arg.buffer, arg.byteOffset, arg.byteLength);
    parts.push(Buffer.from(`$${bytes.length}\r\n`), bytes, CRLF);
  }
  return Buffer.concat(parts);
}

// `needed` is the absolute buffer length required before parsing can make progress,
// so a large bulk reply arriving in many chunks is not re-parsed on every chunk.
type ParseResult = { done: true; value: Reply; end: number } | { done: false; needed: number };

function parseAt(buf: Buffer, pos: number): ParseResult {
  const lineEnd = buf.indexOf(CRLF, pos);
  if (lineEnd === -1) return { done: false, needed: buf.length + 1 };
  const line = buf.toString("utf8", pos + 1, lineEnd);
  const next = lineEnd + 2;
  switch (buf[pos]) {
    case 0x2b /* + */:
      return { done: true, value: { type: "simple", value: line }, end: next };
    case 0x2d /* - */:
      return { done: true, value: { type: "error", message: line }, end: next };
    case 0x3a /* : */:
      return { done: true, value: Number(line), end: next };
    case 0x24 /* $ */:
      {
        const len = Number(line);
        if (len < 0) return { done: true, value: null, end: next };
        if (buf.length < next + len + 2) return { done: false, needed: next + len + 2 };
        // Copy so the reply does not pin the whole receive buffer in memory.
        return { done: true, value: Buffer.from(buf.subarray(next, next + len)), end: next + len + 2 };
      }
    case 0x2a /* * */:
      {
        const count = Number(line);
        if (count < 0) return { done: true, value: null, end: next };
        const items: Reply[] = [];
        let at = next;
        for (let i = 0; i < count; i++) {
          const item = parseAt(buf, at);
          if (!item.done) return item;
          items.push(item.value);
          at = item.end;
        }
        return { done: true, value: items, end: at };
      }
    default:
      throw new Error(`RESP protocol error: unexpected type byte 0x${(buf[pos] ?? 0).toString(16)}`);
  }
}

/** Incremental parser: feed raw TCP chunks, get every complete reply back. */
export class RespParser {
  #chunks: Buffer[] = [];
  #buffered = 0;
  #needed = 1;

  push(chunk: Buffer): Reply[] {
    this.#chunks.push(chunk);
    this.#buffered += chunk.length;
    if (this.#buffered < this.#needed) return [];
    let buf = this.#chunks.length === 1 ? (this.#chunks[0] as Buffer) : Buffer.concat(this.#chunks);
    const replies: Reply[] = [];
    let pos = 0;
    let needed = 1;
    while (pos < buf.length) {
      const result = parseAt(buf, pos);
      if (!result.done) {
        needed = result.needed - pos;
        break;
      }
      replies.push(result.value);
      pos = result.end;
    }
    buf = buf.subarray(pos);
    this.#chunks = buf.length > 0 ? [buf] : [];
    this.#buffered = buf.length;
    this.#needed = needed;
    return replies;
  }
}

interface Pending {
  remaining: number;
  replies: Reply[];
  resolve: (replies: Reply[]) => void;
  reject: (error: Error) => void;
}

class Connection {
  readonly socket: Socket;
  dead = false;
  #parser = new RespParser();
  #pending: Pending[] = [];
  #onDead: (conn: Connection) => void;

  constructor(socket: Socket, onDead: (conn: Connection) => void) {
    this.socket = socket;
    this.#onDead = onDead;
    socket.on("data", (chunk: Buffer) => this.#onData(chunk));
    socket.on("error", (err) => this.#fail(err));
    // Redis closing the socket (shutdown, idle timeout, CLIENT KILL) must not leave callers waiting.
    socket.on("end", () => this.#fail(new Error("redis closed the connection")));
    socket.on("close", () => this.#fail(new Error("redis connection closed")));
  }

  send(commands: readonly (readonly Arg[])[]): Promise<Reply[]> {
    if (this.dead) return Promise.reject(new Error("redis connection is closed"));
    if (commands.length === 0) return Promise.resolve([]);
    return new Promise((resolve, reject) => {
      this.#pending.push({ remaining: commands.length, replies: [], resolve, reject });
      this.socket.write(Buffer.concat(commands.map(encodeCommand)));
    });
  }

  #onData(chunk: Buffer): void {
    let replies: Reply[];
    try {
      replies = this.#parser.push(chunk);
    } catch (err) {
      this.#fail(err as Error);
      return;
    }
    for (const reply of replies) {
      const head = this.#pending[0];
      if (!head) {
        this.#fail(new Error("RESP protocol error: reply without a pending command"));
        return;
      }
      head.replies.push(reply);
      if (--head.remaining === 0) {
        this.#pending.shift();
        head.resolve(head.replies);
      }
    }
  }

  #fail(err: Error): void {
    if (this.dead) return;
    this.dead = true;
    this.socket.destroy();
    for (const p of this.#pending.splice(0)) p.reject(err);
    this.#onDead(this);
  }

  destroy(): void {
    this.#fail(new Error("redis pool closed"));
  }
}

export interface RespPoolOptions {
  host?: string;
  port: number;
  /** Maximum concurrent connections; further callers queue. Default 16. */
  max?: number;
  /** Give up connecting after this long so a black-holed host cannot hang callers. Default 1000 ms. */
  connectTimeoutMs?: number;
}

export class RespPool {
  readonly host: string;
  readonly port: number;
  #max: number;
  #connectTimeoutMs: number;
  #all = new Set<Connection>();
  #idle: Connection[] = [];
  #waiters: Array<() => void> = [];
  #closed = false;

  constructor(opts: RespPoolOptions) {
    this.host = opts.host ?? "127.0.0.1";
    this.port = opts.port;
    this.#max = opts.max ?? 16;
    this.#connectTimeoutMs = opts.connectTimeoutMs ?? 1000;
  }

  /** Sends all commands pipelined on one connection; resolves with one reply per command, in order. */
  async exec(commands: readonly (readonly Arg[])[]): Promise<Reply[]> {
    const conn = await this.#acquire();
    try {
      return await conn.send(commands);
    } finally {
      this.#release(conn);
    }
  }

  /**
   * Runs the commands as MULTI … EXEC. Resolves with EXEC's reply array (which may
   * contain per-command runtime errors), or with an ErrorReply when Redis aborted the
   * transaction; the abort message names the first command rejected while queuing.
   */
  async transaction(commands: readonly (readonly Arg[])[]): Promise<Reply[] | ErrorReply> {
    const replies = await this.exec([["MULTI"], ...commands, ["EXEC"]]);
    const exec = replies[replies.length - 1] ?? null;
    if (Array.isArray(exec)) return exec;
    const queueError = replies.slice(1, -1).find(isErrorReply);
    const base = isErrorReply(exec) ? exec.message : "EXECABORT Transaction aborted";
    return { type: "error", message: queueError ? `${base} First error: ${queueError.message}` : base };
  }

  async close(): Promise<void> {
    this.#closed = true;
    for (const wake of this.#waiters.splice(0)) wake();
    const closing = [...this.#all].map(
      (conn) =>
        new Promise<void>((resolve) =>
          conn.socket.destroyed ? resolve() : conn.socket.once("close", () => resolve()),
        ),
    );
    for (const conn of [...this.#all]) conn.destroy();
    await Promise.all(closing);
  }

  async #acquire(): Promise<Connection> {
    for (;;) {
      if (this.#closed) throw new Error("redis pool is closed");
      const idle = this.#idle.pop();
      if (idle) {
        if (!idle.dead) return idle;
        continue;
      }
      if (this.#all.size < this.#max) return this.#connect();
      await new Promise<void>((resolve) => this.#waiters.push(resolve));
    }
  }

  #release(conn: Connection): void {
    if (!conn.dead && !this.#closed) this.#idle.push(conn);
    this.#waiters.shift()?.();
  }

  #connect(): Promise<Connection> {
    return new Promise((resolve, reject) => {
      const socket = connect({ host: this.host, port: this.port, noDelay: true, keepAlive: true });
      // Reserve the slot while connecting so concurrent callers respect `max`.
      const conn = new Connection(socket, (dead) => {
        this.#all.delete(dead);
        this.#idle = this.#idle.filter((c) => c !== dead);
        this.#waiters.shift()?.();
      });
      this.#all.add(conn);
      const timer = setTimeout(
        () => socket.destroy(new Error(`connect timeout after ${this.#connectTimeoutMs} ms`)),
        this.#connectTimeoutMs,
      );
      // Connection itself tears the socket down on failure; these only settle the promise.
      // A late reject after resolve is a no-op, so the listeners can stay attached.
      const onFail = (err?: Error) => {
        clearTimeout(timer);
        reject(new Error(`redis unreachable at ${this.host}:${this.port}: ${err?.message ?? "connection closed"}`));
      };
      socket.once("error", onFail);
      socket.once("close", () => onFail());
      socket.once("connect", () => {
        clearTimeout(timer);
        socket.off("error", onFail);
        resolve(conn);
      });
    });
  }
}
