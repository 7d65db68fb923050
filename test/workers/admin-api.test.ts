// The admin API: Bearer admin keys, the user snapshot lookup (user, else visitor) and the dead-letter listing.
import { env, exports } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { createApp } from "../../src/app.ts";
import type { DeadLetter } from "../../src/collect/dead-letter-entry.ts";
import type { SessionSnapshot } from "../../src/session/snapshot.ts";
import {
  ADMIN_KEY,
  adminGet,
  BASE,
  basic,
  collect,
  envWithSources,
  refused,
  uid,
  WRITE_KEY,
} from "./collect-helpers.ts";

const auth = { authorization: basic(WRITE_KEY) };

type UserAnswer = SessionSnapshot;

describe("admin authentication", () => {
  const path = "/v1/admin/dead-letters?source=local";

  it("answers 401 with WWW-Authenticate: Bearer without a key, with a wrong key or another scheme", async () => {
    for (const authorization of [
      null,
      "Bearer wrong",
      `Bearer ${ADMIN_KEY}x`,
      `Basic ${btoa(`${ADMIN_KEY}:`)}`,
      ADMIN_KEY,
    ]) {
      const res = await exports.default.fetch(`${BASE}${path}`, {
        headers: authorization === null ? {} : { authorization },
      });
      expect(res.headers.get("www-authenticate"), String(authorization)).toBe('Bearer realm="lastmile-admin"');
      await refused(res, 401, "unauthorized");
    }
  });

  it("accepts any configured key", async () => {
    expect((await adminGet(path)).status).toBe(200);
    const twoKeys = { ...env, ADMIN_KEYS: "old-key, new-key" };
    expect((await adminGet(path, "old-key", twoKeys)).status).toBe(200);
    expect((await adminGet(path, "new-key", twoKeys)).status).toBe(200);
    expect((await adminGet(path, ADMIN_KEY, twoKeys)).status).toBe(401);
  });

  it("refuses everyone when no admin key is configured", async () => {
    await refused(adminGet(path, "", { ...env, ADMIN_KEYS: "" }), 401, "unauthorized");
  });

  it("guards unknown admin paths too (401 before 404)", async () => {
    await refused(adminGet("/v1/admin/nope", null), 401, "unauthorized");
    await refused(adminGet("/v1/admin/nope"), 404, "not_found");
  });

  it("marks every answer no-store, refusals and errors included", async () => {
    for (const [path, key, status] of [
      ["/v1/admin/versions", null, 401],
      ["/v1/admin/nope", ADMIN_KEY, 404],
      [`/v1/admin/users/${uid("nobody")}`, ADMIN_KEY, 404],
      ["/v1/admin/dead-letters?source=local&limit=0", ADMIN_KEY, 400],
    ] as const) {
      const res = await adminGet(path, key);
      expect(res.status, path).toBe(status);
      expect(res.headers.get("cache-control"), path).toBe("no-store");
    }
  });
});

describe("GET /v1/admin/users/:id", () => {
  it("returns the user's snapshot, else the visitor's, with merged anonymous ids", async () => {
    const [userId, anonymousId] = [uid("u"), uid("a")];
    await collect(
      "/v1/batch",
      {
        batch: [
          {
            type: "track",
            event: "Product Viewed",
            anonymousId,
            messageId: uid("m"),
            properties: { product_id: "p1" },
          },
        ],
      },
      { headers: auth },
    );
    const visitor = (await (await adminGet(`/v1/admin/users/${anonymousId}`)).json()) as UserAnswer;
    expect(visitor).toMatchObject({ exists: true, userKey: `a:${anonymousId}`, mergedInto: null });
    expect(visitor.viewed).toEqual(["p1"]);

    await collect("/v1/identify", { userId, anonymousId, messageId: uid("m") }, { headers: auth });
    const user = (await (await adminGet(`/v1/admin/users/${userId}`)).json()) as UserAnswer;
    expect(user).toMatchObject({ exists: true, userKey: `u:${userId}`, userId });
    expect(user.anonymousIds).toContain(anonymousId);
    expect(user.viewed).toEqual(["p1"]);
    // The visitor's object now says where its data went.
    const merged = (await (await adminGet(`/v1/admin/users/${anonymousId}?kind=anonymous`)).json()) as UserAnswer;
    expect(merged.mergedInto).toBe(`u:${userId}`);
  });

  it("chooses with ?kind= when a user id and an anonymous id are equal", async () => {
    const id = uid("same");
    await collect("/v1/p", { userId: id, messageId: uid("m"), name: "as user" }, { headers: auth });
    await collect("/v1/p", { anonymousId: id, messageId: uid("m"), name: "as visitor" }, { headers: auth });
    const answer = async (query: string) =>
      ((await (await adminGet(`/v1/admin/users/${id}${query}`)).json()) as UserAnswer).userKey;
    expect(await answer("")).toBe(`u:${id}`);
    expect(await answer("?kind=user")).toBe(`u:${id}`);
    expect(await answer("?kind=anonymous")).toBe(`a:${id}`);
  });

  it("answers 404 when neither exists, 400 for a bad kind or id", async () => {
    await refused(adminGet(`/v1/admin/users/${uid("nobody")}`), 404, "not_found");
    const userOnly = uid("u");
    await collect("/v1/p", { userId: userOnly, messageId: uid("m") }, { headers: auth });
    await refused(adminGet(`/v1/admin/users/${userOnly}?kind=anonymous`), 404, "not_found");
    await refused(adminGet(`/v1/admin/users/${userOnly}?kind=robot`), 400, "bad_request");
    await refused(adminGet(`/v1/admin/users/${"x".repeat(257)}`), 400, "bad_request");
  });
});

describe("the id of /v1/admin/users/:id and its privacy routes", () => {
  const routes: Array<[string, (id: string) => string]> = [
    ["GET", (id) => `/v1/admin/users/${id}`],
    ["DELETE", (id) => `/v1/admin/users/${id}?kind=user`],
    ["GET", (id) => `/v1/admin/users/${id}/erasure?kind=user`],
    ["GET", (id) => `/v1/admin/users/${id}/suppression?kind=user`],
    ["PUT", (id) => `/v1/admin/users/${id}/suppression?kind=user`],
    ["DELETE", (id) => `/v1/admin/users/${id}/suppression?kind=user`],
  ];
  const send = (method: string, path: string) =>
    exports.default.fetch(new Request(`${BASE}${path}`, { method, headers: { authorization: `Bearer ${ADMIN_KEY}` } }));

  // A NUL reached Postgres (500); a segment that is not percent-encoded UTF-8 (a Latin-1 `jos%E9`, an encoded
  // surrogate) was taken literally, so an erasure of "josé" erased the nobody named "jos%E9" and answered clean.
  it("answers 400 bad_request for an id holding NUL or one that is not percent-encoded UTF-8, on every route", async () => {
    for (const id of ["a%00b", "jos%E9", "a%ED%A0%80", "100%", "%C3"]) {
      for (const [method, path] of routes) {
        const body = await refused(send(method, path(id)), 400, "bad_request");
        expect(body.error.message, `${method} ${path(id)}`).toMatch(/id/);
      }
    }
  });

  it("decodes a well-formed id: UTF-8 escapes and an escaped percent sign", async () => {
    const id = uid("jos\u00e9%");
    await collect("/v1/p", { userId: id, messageId: uid("m") }, { headers: auth });
    const res = await adminGet(`/v1/admin/users/${encodeURIComponent(id)}?kind=user`);
    expect(res.status).toBe(200);
    expect(((await res.json()) as UserAnswer).userKey).toBe(`u:${id}`);
    await refused(adminGet(`/v1/admin/users/${encodeURIComponent(uid("nobody%"))}`), 404, "not_found");
  });
});

describe("GET /v1/admin/dead-letters", () => {
  it("pages through a source's dead letters newest first", async () => {
    const batch = Array.from({ length: 5 }, (_, i) => ({ type: "track", userId: "u", messageId: `dl-${i}` }));
    const res = await exports.default.fetch(`${BASE}/v1/batch`, {
      method: "POST",
      headers: { ...auth, "content-type": "application/json" },
      body: JSON.stringify({ batch }),
    });
    expect(res.status).toBe(200);
    const requestId = res.headers.get("x-request-id");
    const page = async (query: string) => {
      const r = await adminGet(`/v1/admin/dead-letters?source=local&${query}`);
      expect(r.status).toBe(200);
      expect(r.headers.get("cache-control")).toBe("no-store");
      return (await r.json()) as { source: string; deadLetters: DeadLetter[]; nextBefore: number | null };
    };
    const first = await page("limit=3");
    expect(first.source).toBe("local");
    expect(first.deadLetters.map((d) => d.messageId)).toEqual(["dl-4", "dl-3", "dl-2"]);
    expect(first.deadLetters.every((d) => d.requestId === requestId && d.code === "missing_event")).toBe(true);
    expect(first.nextBefore).toBe(first.deadLetters[2]?.id);
    const second = await page(`limit=3&before=${first.nextBefore}`);
    expect(second.deadLetters.map((d) => d.messageId).slice(0, 2)).toEqual(["dl-1", "dl-0"]);
  });

  it("answers 400 without a source or with a bad limit, 404 for an unknown source", async () => {
    await refused(adminGet("/v1/admin/dead-letters"), 400, "bad_request");
    await refused(adminGet("/v1/admin/dead-letters?source=nope"), 404, "not_found");
    for (const limit of ["0", "1001", "x", "-1"]) {
      await refused(adminGet(`/v1/admin/dead-letters?source=local&limit=${limit}`), 400, "bad_request");
    }
  });

  it("keeps each source's dead letters apart", async () => {
    const testEnv = envWithSources([
      { id: "a", writeKey: "wk-a" },
      { id: "b", writeKey: "wk-b" },
    ]);
    const send = (writeKey: string) =>
      createApp().request(
        "/v1/t",
        {
          method: "POST",
          body: JSON.stringify({ userId: "u", messageId: `from-${writeKey}` }),
          headers: { authorization: basic(writeKey) },
        },
        testEnv,
      );
    expect((await send("wk-a")).status).toBe(200);
    expect((await send("wk-b")).status).toBe(200);
    const list = async (source: string) =>
      (
        (await (await adminGet(`/v1/admin/dead-letters?source=${source}`, ADMIN_KEY, testEnv)).json()) as {
          deadLetters: DeadLetter[];
        }
      ).deadLetters.map((d) => d.messageId);
    expect(await list("a")).toEqual(["from-wk-a"]);
    expect(await list("b")).toEqual(["from-wk-b"]);
  });
});
