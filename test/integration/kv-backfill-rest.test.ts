// The KV backfill's REST mode (scripts/lib/kv-backfill.ts) against the real Postgres, in a schema of its own, and a
// local stand-in for the Workers KV bulk endpoints (no Cloudflare account here) that answers as Cloudflare documents:
// HTTP 200 with `result.unsuccessful_keys` (keys to retry) or `success: false`. Only the keys KV stored are recorded
// in published_keys; the others are written again, and a run that cannot store them fails without recording them.
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { type RestTarget, runBackfill } from "../../scripts/lib/kv-backfill.ts";
import { eraseWarehouse, subjectKeys } from "../../src/privacy/warehouse.ts";
import { openDb } from "../../src/publish/db.ts";
import { createSchema, dropSchema, query, STABLE_KEY_TABLES, stackSettings } from "../support/own-schema.ts";

const settings = stackSettings();
const USERS = ["u:user001", "u:user002", "u:user003", "u:user004", "u:user005"];
const kvKey = (userKey: string) => `u:${userKey}`;
/** Retries without waiting: the backoff's length is not what these tests are about. */
const retry = { attempts: 3, baseDelayMs: 1, maxDelayMs: 1 };
let schema = "";

const publishedKeys = async () =>
  (await query(`select key from "${schema}".published_keys order by key`)).map((r) => String(r.key));

/** The stand-in's namespace, and how it answers the next bulk writes. */
const kv = new Map<string, string>();
let answer: {
  /** Keys listed in unsuccessful_keys (and not stored), per write. */
  unsuccessful?: (key: string, write: number) => boolean;
  /** Writes answered with success: false (nothing stored). */
  refused?: (write: number) => boolean;
  /** Runs before the write is stored. */
  before?: (pairs: Array<{ key: string }>) => Promise<void>;
} = {};
let writes = 0;
let server: Server;
let rest: RestTarget;

function bulkEndpoint(method: string, url: string, body: unknown) {
  if (method === "POST" && url.endsWith("/bulk/delete")) {
    for (const key of body as string[]) kv.delete(key);
    return { success: true, errors: [], messages: [], result: { successful_key_count: (body as string[]).length } };
  }
  const write = ++writes;
  if (answer.refused?.(write)) {
    return { success: false, errors: [{ code: 10001, message: "service unavailable" }], messages: [], result: null };
  }
  const pairs = body as Array<{ key: string; value: string }>;
  const failed = pairs.filter((p) => answer.unsuccessful?.(p.key, write)).map((p) => p.key);
  for (const p of pairs) if (!failed.includes(p.key)) kv.set(p.key, p.value);
  return {
    success: true,
    errors: [],
    messages: [],
    result: { successful_key_count: pairs.length - failed.length, unsuccessful_keys: failed },
  };
}

beforeAll(async () => {
  // The erasure's own tables too: it deletes the user's events, interactions and identity links.
  schema = await createSchema("backfill_rest", [...STABLE_KEY_TABLES, "events", "interactions", "identities"]);
  server = createServer((req, res) => {
    let text = "";
    req.on("data", (chunk) => {
      text += chunk;
    });
    req.on("end", async () => {
      const body = JSON.parse(text) as unknown;
      if (req.method === "PUT") await answer.before?.(body as Array<{ key: string }>);
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify(bulkEndpoint(req.method ?? "", req.url ?? "", body)));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  rest = { accountId: "acc", apiToken: "tok", namespaceId: "ns", baseUrl };
});

afterAll(async () => {
  server?.close();
  await dropSchema(schema);
});

beforeEach(async () => {
  kv.clear();
  answer = {};
  writes = 0;
  await query(`truncate "${schema}".user_candidates, "${schema}".published_keys, "${schema}".erased_users`);
  await query(
    `insert into "${schema}".user_candidates (user_key, product_ids, scores, reasons, model_version)
     select key, '{p1,p2}', '{1,0.5}', null, 1 from unnest($1::text[]) as key`,
    [USERS],
  );
});

describe("kv-backfill REST mode", () => {
  it("writes the keys the bulk API reports unsuccessful again, and records each once stored", async () => {
    answer.unsuccessful = (key, write) => key === kvKey("u:user002") && write === 1;
    const report = await runBackfill({ settings, schema, rest, pairsPerFile: 2, retry });
    expect(report.keys).toBe(5);
    expect([...kv.keys()].sort()).toEqual(USERS.map(kvKey));
    expect(await publishedKeys()).toEqual(USERS.map(kvKey));
  });

  it("writes again a body answered with success: false", async () => {
    answer.refused = (write) => write === 1;
    await runBackfill({ settings, schema, rest, pairsPerFile: 2, retry });
    expect([...kv.keys()].sort()).toEqual(USERS.map(kvKey));
    expect(await publishedKeys()).toEqual(USERS.map(kvKey));
  });

  it("fails with the count of keys still unsuccessful after its retries, recording none of them", async () => {
    answer.unsuccessful = (key) => key === kvKey("u:user002");
    await expect(runBackfill({ settings, schema, rest, pairsPerFile: 2, retry })).rejects.toThrow(
      /^KV bulk write: 1 of 2 keys not stored after 3 attempts/,
    );
    expect(writes).toBe(3);
    // The run stopped at its first body, whose other key was stored and recorded.
    expect(await publishedKeys()).toEqual([kvKey("u:user001")]);
    expect([...kv.keys()]).toEqual([kvKey("u:user001")]);

    // A later run writes what is not recorded.
    answer = {};
    const again = await runBackfill({ settings, schema, rest, pairsPerFile: 2, retry });
    expect(again.keys).toBe(4);
    expect(await publishedKeys()).toEqual(USERS.map(kvKey));
    expect([...kv.keys()].sort()).toEqual(USERS.map(kvKey));
  });

  it("does not record a user erased after the read, and deletes the key it wrote back", async () => {
    const erased = "u:user003";
    let armed = true;
    answer.before = async (pairs) => {
      if (!armed || !pairs.some((p) => p.key === kvKey(erased))) return;
      armed = false;
      // The erasure lands between the backfill's read and its write: Postgres, then its KV delete (of nothing yet).
      const { db, end } = openDb(settings, schema);
      try {
        await eraseWarehouse(db, erased, subjectKeys([erased]), false);
      } finally {
        await end();
      }
      kv.delete(kvKey(erased));
    };
    await runBackfill({ settings, schema, rest, retry });
    const others = USERS.filter((u) => u !== erased).map(kvKey);
    expect(await publishedKeys()).toEqual(others);
    expect([...kv.keys()].sort()).toEqual(others);
  });
});
