// The ranking configuration (src/rank/config.ts) as an admin resource:
//   GET /v1/admin/ranking-config[?version=N]   the active config (or a stored older one), with its version
//   PUT /v1/admin/ranking-config               a new config document: validated, filled from the defaults,
//                                              stored as version N+1 (KV `cfg:ranking` and `cfg:ranking:vN`)
// Isolates pick a new config up within POINTER_TTL_MS plus KV's propagation (~60 s between locations).
import { Hono } from "hono";
import type { AppEnv } from "../app.ts";
import { ApiError } from "../errors.ts";
import { readJsonRequest } from "../json-body.ts";
import { parseRankingConfig, RANKING_CONFIG_KEY } from "../rank/config.ts";
import { decodeRankingConfig, invalidateHead } from "../rank/online-store.ts";

export const RANKING_CONFIG_BODY_LIMIT = 256 * 1024;

const versionKey = (n: number) => `${RANKING_CONFIG_KEY}:v${n}`;

interface StoredConfig {
  version: string;
  updatedAt: number;
  config: unknown;
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

export const rankingConfigRoutes = new Hono<AppEnv>();

rankingConfigRoutes.get("/v1/admin/ranking-config", async (c) => {
  const asked = c.req.query("version");
  c.header("cache-control", "no-store");
  if (asked !== undefined) {
    if (!/^v?\d{1,9}$/.test(asked)) throw new ApiError("bad_request", "version must look like v3");
    const n = Number(asked.replace(/^v/, ""));
    const text = await c.env.ONLINE_STORE.get(versionKey(n));
    if (text === null) throw new ApiError("not_found", `no ranking config version v${n}`);
    const stored = JSON.parse(text) as StoredConfig;
    return c.json({ version: stored.version, updatedAt: stored.updatedAt, active: false, config: stored.config });
  }
  const text = await c.env.ONLINE_STORE.get(RANKING_CONFIG_KEY);
  const { config, invalid } = decodeRankingConfig(text);
  const updatedAt = text ? ((JSON.parse(text) as StoredConfig).updatedAt ?? null) : null;
  return c.json({ version: config.version, updatedAt, active: true, invalid, config });
});

rankingConfigRoutes.put("/v1/admin/ranking-config", async (c) => {
  const body = await readJsonRequest(c.req.raw, RANKING_CONFIG_BODY_LIMIT);
  const currentText = await c.env.ONLINE_STORE.get(RANKING_CONFIG_KEY);
  const current = decodeRankingConfig(currentText);
  // The stored document's own version counts even when its config is unreadable: no version number is reused.
  const next = `v${Math.max(versionNumber(current.config.version), storedVersion(currentText)) + 1}`;
  const parsed = parseRankingConfig(body, next);
  if (!parsed.ok) {
    throw new ApiError("validation_failed", "the ranking config is invalid", { details: { issues: parsed.issues } });
  }
  const { version: _, ...document } = parsed.config;
  const stored: StoredConfig = { version: next, updatedAt: Date.now(), config: document };
  const text = JSON.stringify(stored);
  await c.env.ONLINE_STORE.put(versionKey(versionNumber(next)), text);
  await c.env.ONLINE_STORE.put(RANKING_CONFIG_KEY, text);
  invalidateHead(c.env.ONLINE_STORE);
  c.header("cache-control", "no-store");
  return c.json({ version: next, updatedAt: stored.updatedAt, config: document, previous: current.config.version });
});
