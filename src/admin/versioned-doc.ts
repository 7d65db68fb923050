// A versioned configuration document as an admin resource (the ranking config, the experiments document):
//   GET <path>[?version=N]   the active document (or a stored one, `active` when the head holds it), with its version
//   PUT <path>               a new document: validated, stored as version N+1 under `<key>` and `<key>:vN`
// Versions are v1, v2, …: never reused, even when the stored document has become unreadable, and never given twice
// when PUTs race: KV has no compare-and-set, so the number comes from a counter in the PublishCoordinator object
// (nextDocVersion), which continues from the head the PUT read. Two concurrent PUTs get two versions, both kept
// under `<key>:vN`; the active one is whichever head write lands last. Isolates pick a new document up with their
// next head read (POINTER_TTL_MS) plus KV's propagation (~60 s between locations).
import { Hono } from "hono";
import type { AppEnv } from "../app.ts";
import { ApiError } from "../errors.ts";
import { readJsonRequest } from "../json-body.ts";
import { COORDINATOR_NAME } from "../publish/coordinator.ts";
import type { ConfigIssue } from "../rank/config.ts";
import { invalidateHead } from "../rank/online-store.ts";
import { type DocParser, parseStoredDoc, type StoredDoc } from "../stored-doc.ts";

export const CONFIG_DOC_BODY_LIMIT = 256 * 1024;

export interface VersionedDoc<T extends { version: string }> {
  /** Route path, e.g. /v1/admin/ranking-config. */
  path: string;
  /** KV key of the active document; versions under `<key>:v<n>`. */
  key: string;
  /** What the document is called in errors ("ranking config"). */
  name: string;
  parse: DocParser<T>;
  /** The active document from the stored text (the default when absent; `invalid` when unreadable). */
  decode(text: string | null): { config: T; invalid: boolean };
  /**
   * The issues of a valid document against the active one it replaces (`active`, as the PUT read it) and the other
   * active documents (read from `env`), refused like `parse`'s; none when absent.
   */
  check?(config: T, active: T, env: Env): Promise<ConfigIssue[]>;
}

function versionNumber(version: string): number {
  const n = Number(/^v(\d+)$/.exec(version)?.[1] ?? 0);
  return Number.isSafeInteger(n) ? n : 0;
}

function storedVersion(text: string | null): number {
  if (text === null) return 0;
  try {
    const doc = JSON.parse(text) as { version?: unknown };
    return typeof doc.version === "string" ? versionNumber(doc.version) : 0;
  } catch {
    return 0;
  }
}

export function versionedDocRoutes<T extends { version: string }>(doc: VersionedDoc<T>): Hono<AppEnv> {
  const routes = new Hono<AppEnv>();
  const versionKey = (n: number) => `${doc.key}:v${n}`;

  routes.get(doc.path, async (c) => {
    const asked = c.req.query("version");
    if (asked !== undefined) {
      if (!/^v?\d{1,9}$/.test(asked)) throw new ApiError("bad_request", "version must look like v3");
      const n = Number(asked.replace(/^v/, ""));
      const [text, headText] = await Promise.all([
        c.env.ONLINE_STORE.get(versionKey(n)),
        c.env.ONLINE_STORE.get(doc.key),
      ]);
      const stored = parseStoredDoc(text);
      if (!stored) throw new ApiError("not_found", `no ${doc.name} version v${n}`);
      // Active when it is the document the head holds and readers can use (an unreadable head serves the default).
      const head = doc.decode(headText);
      const active = !head.invalid && head.config.version === stored.version;
      return c.json({ version: stored.version, updatedAt: stored.updatedAt, active, config: stored.config });
    }
    const text = await c.env.ONLINE_STORE.get(doc.key);
    const { config, invalid } = doc.decode(text);
    const updatedAt = parseStoredDoc(text)?.updatedAt ?? null;
    return c.json({ version: config.version, updatedAt, active: true, invalid, config });
  });

  routes.put(doc.path, async (c) => {
    const body = await readJsonRequest(c.req.raw, CONFIG_DOC_BODY_LIMIT);
    const currentText = await c.env.ONLINE_STORE.get(doc.key);
    const current = doc.decode(currentText);
    // The stored document's own version counts even when its content is unreadable: no version number is reused.
    const head = Math.max(versionNumber(current.config.version), storedVersion(currentText));
    const parsed = doc.parse(body, `v${head + 1}`);
    const issues = parsed.ok ? ((await doc.check?.(parsed.config, current.config, c.env)) ?? []) : parsed.issues;
    if (!parsed.ok || issues.length > 0) {
      throw new ApiError("validation_failed", `the ${doc.name} is invalid`, { details: { issues } });
    }
    // Only a valid document takes a number; the coordinator never gives one twice (a concurrent PUT that read the
    // same head gets the next one).
    const n = await c.env.PUBLISH_COORDINATOR.getByName(COORDINATOR_NAME)
      .nextDocVersion(doc.key, head)
      .catch((error: unknown) => {
        throw new ApiError("dependency_unavailable", "the version counter did not answer; nothing was stored", {
          cause: error,
        });
      });
    const next = `v${n}`;
    const { version: _, ...document } = parsed.config;
    const stored: StoredDoc = { version: next, updatedAt: Date.now(), config: document };
    const text = JSON.stringify(stored);
    await c.env.ONLINE_STORE.put(versionKey(n), text);
    await c.env.ONLINE_STORE.put(doc.key, text);
    invalidateHead(c.env.ONLINE_STORE);
    return c.json({ version: next, updatedAt: stored.updatedAt, config: document, previous: current.config.version });
  });

  return routes;
}
