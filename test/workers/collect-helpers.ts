// Helpers shared by the collection and admin Worker tests (test/workers/collect-*.test.ts, admin-*.test.ts).
import { runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { env, exports } from "cloudflare:workers";
import { expect } from "vitest";
import { createApp } from "../../src/app.ts";
import type { CollectedEvent, RecordResult } from "../../src/collect/event.ts";
import type { CollectResponse } from "../../src/collect/routes.ts";
import type { SessionState } from "../../src/session/session-state.ts";
import { EVENT_STREAM, STREAM_FIELDS } from "../../src/session/stream.ts";
import { openRedis } from "../../src/stores/redis.ts";

export const BASE = "http://lastmile.test";
export const WRITE_KEY = "local-write-key";
export const ADMIN_KEY = "local-admin-key";

export const uid = (prefix = "t") => `${prefix}-${crypto.randomUUID()}`;
export const basic = (writeKey: string, password = "") => `Basic ${btoa(`${writeKey}:${password}`)}`;

export interface PostOptions {
  headers?: Record<string, string>;
  /** Gzip the body and say so in Content-Encoding. */
  gzip?: boolean;
  /** Send this instead of JSON.stringify(body). */
  raw?: BodyInit;
  /** Another Worker env (custom SOURCES, fakes): the request goes through createApp() with it. */
  env?: Env;
}

export async function gzip(text: string | Uint8Array): Promise<Uint8Array> {
  const input = typeof text === "string" ? new TextEncoder().encode(text) : text;
  const stream = new Blob([input]).stream().pipeThrough(new CompressionStream("gzip"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/**
 * Gzip of `bytes` in stored (uncompressed) deflate blocks: a valid gzip body a little bigger than what it decodes to,
 * as a compressor emits for data it cannot shrink. CompressionStream has no level to ask for it.
 */
export function storedGzip(bytes: Uint8Array): Uint8Array {
  let crc = -1;
  for (const byte of bytes) {
    crc ^= byte;
    for (let k = 0; k < 8; k++) crc = crc & 1 ? 0xedb88320 ^ (crc >>> 1) : crc >>> 1;
  }
  crc = (crc ^ -1) >>> 0;
  const parts: number[] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
  const blocks: Uint8Array[] = [];
  for (let at = 0; at < bytes.byteLength || at === 0; at += 65_535) {
    const block = bytes.subarray(at, at + 65_535);
    const last = at + 65_535 >= bytes.byteLength ? 1 : 0;
    const len = block.byteLength;
    blocks.push(new Uint8Array([last, len & 0xff, len >>> 8, ~len & 0xff, (~len >>> 8) & 0xff]), block);
  }
  const size = bytes.byteLength;
  const trailer = [crc, size].flatMap((n) => [n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, n >>> 24]);
  const all = [new Uint8Array(parts), ...blocks, new Uint8Array(trailer)];
  const out = new Uint8Array(all.reduce((sum, part) => sum + part.byteLength, 0));
  let offset = 0;
  for (const part of all) {
    out.set(part, offset);
    offset += part.byteLength;
  }
  return out;
}

/** POSTs to the Worker (the real entry point, or createApp() with a custom env). */
export async function post(path: string, body: unknown, options: PostOptions = {}): Promise<Response> {
  const headers: Record<string, string> = { "content-type": "application/json", ...options.headers };
  let payload: BodyInit = options.raw ?? JSON.stringify(body);
  if (options.gzip) {
    payload = await gzip(
      typeof payload === "string" ? payload : new Uint8Array(await new Response(payload).arrayBuffer()),
    );
    headers["content-encoding"] = "gzip";
  }
  const init: RequestInit = { method: "POST", headers, body: payload };
  if (options.env) return createApp().request(path, init, options.env);
  return exports.default.fetch(new Request(`${BASE}${path}`, init));
}

/** A request that must succeed: the parsed 200 body. */
export async function collect(path: string, body: unknown, options: PostOptions = {}): Promise<CollectResponse> {
  const res = await post(path, body, options);
  const text = await res.text();
  expect(res.status, text).toBe(200);
  return JSON.parse(text) as CollectResponse;
}

export interface ErrorJson {
  error: { code: string; message: string; requestId: string } & Record<string, unknown>;
}

/** A request that must fail with `status` and `code`: the parsed error body. */
export async function refused(res: Response | Promise<Response>, status: number, code: string): Promise<ErrorJson> {
  const response = await res;
  const text = await response.text();
  expect(response.status, text).toBe(status);
  const body = JSON.parse(text) as ErrorJson;
  expect(body.error.code).toBe(code);
  expect(body.error.requestId).toBe(response.headers.get("x-request-id"));
  return body;
}

export async function adminGet(path: string, key: string | null = ADMIN_KEY, testEnv?: Env): Promise<Response> {
  const init: RequestInit = { headers: key === null ? {} : { authorization: `Bearer ${key}` } };
  if (testEnv) return await createApp().request(path, init, testEnv);
  return exports.default.fetch(new Request(`${BASE}${path}`, init));
}

/** An env whose SOURCES is the given list (the Worker's other bindings unchanged). */
export function envWithSources(sources: unknown[], extra: Partial<Env> = {}): Env {
  return { ...env, SOURCES: JSON.stringify(sources), ...extra };
}

export interface RecordCall {
  userKey: string;
  objectName: string;
  events: CollectedEvent[];
}

/**
 * A stand-in SESSION_STATE namespace that records every `record` call (to see exactly what collection hands
 * over) and can fail on demand; everything else goes to the real namespace.
 */
export function recordingSessions(fail?: (call: RecordCall, attempt: number) => Error | undefined): {
  namespace: Env["SESSION_STATE"];
  calls: RecordCall[];
} {
  const calls: RecordCall[] = [];
  const attempts = new Map<string, number>();
  const namespace = {
    getByName(objectName: string) {
      return {
        async record(userKey: string, events: CollectedEvent[]): Promise<RecordResult> {
          const call = { userKey, objectName, events: structuredClone(events) };
          calls.push(call);
          const attempt = (attempts.get(userKey) ?? 0) + 1;
          attempts.set(userKey, attempt);
          const error = fail?.(call, attempt);
          if (error) throw error;
          return { accepted: events.length, duplicates: 0 };
        },
        // Collection asks it whose rejected events these are (a suppressed user's are not kept).
        suppression: () => env.SESSION_STATE.getByName(objectName).suppression(),
      };
    },
  } as unknown as Env["SESSION_STATE"];
  return { namespace, calls };
}

export type SessionCalls = Pick<
  DurableObjectStub<SessionState>,
  "handOver" | "release" | "erase" | "relay" | "snapshot" | "suppression"
>;

/**
 * Routes session object `key`'s calls to other session objects through `override` (fault and delay injection; the
 * object keeps the wrapper until it is evicted).
 */
export async function wrapSessions(
  key: string,
  override: (name: string, other: SessionCalls) => Partial<Record<keyof SessionCalls, unknown>>,
): Promise<void> {
  await runInDurableObject(env.SESSION_STATE.getByName(key), (o: SessionState) => {
    const real = (o as unknown as { env: Env }).env;
    const sessions = {
      getByName(name: string) {
        const other = real.SESSION_STATE.getByName(name);
        return {
          handOver: (...args: [string, string, boolean]) => other.handOver(...args),
          release: (intoKey: string) => other.release(intoKey),
          erase: (options: { suppress: boolean }) => other.erase(options),
          relay: (...args: [string, CollectedEvent[], number]) => other.relay(...args),
          ...override(name, other),
        };
      },
    };
    (o as unknown as { env: Env }).env = { ...real, SESSION_STATE: sessions } as unknown as Env;
  });
}

/** A second Redis client: the warehouse stream, read back to see what a SessionState object received. */
export const redis = () => openRedis({ url: env.UPSTASH_REDIS_REST_URL, token: env.UPSTASH_REDIS_REST_TOKEN });

/** The CollectedEvent the session objects forwarded to the Redis stream under `messageId` (waits for the outbox). */
/** The event as the user's object delivered it to the warehouse stream (its alarm drains the outbox; run it now). */
export async function streamedEvent(messageId: string, userKey: string, timeoutMs = 10_000): Promise<CollectedEvent> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    await runDurableObjectAlarm(env.SESSION_STATE.getByName(userKey));
    const entries = await redis().xrevrange(EVENT_STREAM, "+", "-", 2000);
    for (const fields of Object.values(entries)) {
      const f = fields as Record<string, unknown>;
      if (f[STREAM_FIELDS.messageId] === messageId) {
        const e = f[STREAM_FIELDS.event];
        return (typeof e === "string" ? JSON.parse(e) : e) as CollectedEvent;
      }
    }
    if (Date.now() > deadline) throw new Error(`event ${messageId} did not reach the stream`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
