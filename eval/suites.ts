// The evaluation suites behind `npm run eval -- <suite>` (docs/relevance.md#reproduce): file reading, the method
// line-up, the protocols, and the markdown tables.
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { gunzipSync } from "node:zlib";
import type { RankingConfig } from "../src/rank/config.ts";
import {
  cutBeforeEnd,
  type Dataset,
  type EventType,
  formatSessionFile,
  isoDay,
  parseOtto,
  parseSessionFile,
  parseUciLines,
  type Session,
  SPLIT_DEFAULTS,
  temporalSplit,
  uciDataset,
} from "./data.ts";
import type { Method } from "./method.ts";
import {
  AssociationRules,
  Popularity,
  RepeatPurchases,
  SequentialRules,
  SessionKnnCosine,
  SessionKnnVector,
} from "./methods/baselines.ts";
import { LastmileBatch, LastmileModels, LastmileRanker, type RequestShape } from "./methods/lastmile.ts";
import { customersAt, nextItem, nextPurchase, type OverlapResult, otto, ottoCases, trainData } from "./protocols.ts";
import { abSimMarkdown } from "./simulate.ts";
import { sqlModels } from "./sql.ts";

const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
export const UCI_FILE = join(REPO_ROOT, "..", "shared", "data", "uci-online-retail", "online_retail.csv.gz");
export const OTTO_FILE = join(REPO_ROOT, "..", "shared", "data", "otto-fixture", "train.jsonl");

export function readText(file: string): string {
  const raw = readFileSync(file);
  return (file.endsWith(".gz") ? gunzipSync(raw) : raw).toString("utf8");
}

let uciCache: Dataset | null = null;
export function readUci(file = UCI_FILE): Dataset {
  if (!uciCache) uciCache = uciDataset(parseUciLines(readText(file)));
  return uciCache;
}

/** The UCI invoices as session-rec train/test sessions: the last `testDays` days are the test split. */
export function uciSplit(testDays: number): { train: Session[]; test: Session[]; cut: number } {
  const { sessions } = readUci();
  const cut = cutBeforeEnd(sessions, testDays);
  return { ...temporalSplit(sessions, { cut, ...SPLIT_DEFAULTS }), cut };
}

/** The converter: UCI CSV → `train.tsv` and `test.tsv` in the session-rec layout. */
export function convertUci(outDir: string, testDays: number): Record<string, unknown> {
  const { train, test, cut } = uciSplit(testDays);
  mkdirSync(outDir, { recursive: true });
  writeFileSync(join(outDir, "train.tsv"), formatSessionFile(train));
  writeFileSync(join(outDir, "test.tsv"), formatSessionFile(test));
  const events = (s: Session[]) => s.reduce((n, x) => n + x.events.length, 0);
  return {
    cut: isoDay(cut),
    train: { sessions: train.length, events: events(train), file: join(outDir, "train.tsv") },
    test: { sessions: test.length, events: events(test), file: join(outDir, "test.tsv") },
  };
}

export interface LineupOptions {
  shape?: RequestShape;
  /** The merged ranker's config (default: DEFAULT_RANKING_CONFIG). */
  config?: RankingConfig;
  /** Include the customer's repeat purchases (protocol ii). */
  repeat?: boolean;
  only?: readonly string[];
}

/** Every method, one run: baselines, our batch lists, our session scoring, the merged ranker. */
export function lineup(shared: LastmileModels, options: LineupOptions = {}): Method[] {
  const methods: Method[] = [
    new Popularity(),
    ...(options.repeat ? [new RepeatPurchases()] : []),
    new AssociationRules(),
    new SequentialRules(),
    new SessionKnnCosine(),
    new SessionKnnVector(),
    new LastmileBatch(shared),
    new LastmileRanker(shared, {
      name: "lastmile-session",
      shape: { placement: "home", as: options.shape?.as ?? null },
      sources: ["session"],
    }),
    new LastmileRanker(shared, { shape: options.shape, ...(options.config ? { config: options.config } : {}) }),
  ];
  return options.only ? methods.filter((m) => options.only?.includes(m.name)) : methods;
}

/**
 * The Worker request each protocol makes (chosen on validation data: docs/relevance.md#tuning). A UCI invoice in
 * progress is a cart being filled: its items are carted, the latest is the product in view (pdp). A customer
 * coming back (protocol ii) opens the home page with no session yet; their history is long-term affinity and
 * batch candidates.
 */
export const UCI_NEXT_ITEM_SHAPE: RequestShape = { placement: "pdp", as: "cart" };
export const NEXT_PURCHASE_SHAPE: RequestShape = { placement: "home", as: null };

/** Protocol (i) on session files. */
export async function runNextItem(options: {
  train: Session[];
  test: Session[];
  sessions?: number;
  catalog?: Dataset["catalog"];
  shape?: RequestShape;
  /** Batch lists from the deployed SQL in a local Postgres (eval/sql.ts) rather than their TypeScript version. */
  sql?: boolean;
  /** Only these methods (by name); all of them by default. */
  only?: readonly string[];
  /** The merged ranker's config (default: DEFAULT_RANKING_CONFIG). */
  config?: RankingConfig;
}): Promise<Record<string, unknown>> {
  const started = performance.now();
  const train = trainData(options.train, options.catalog);
  const shared = new LastmileModels();
  let batchLists: Record<string, unknown> = { computed: "typescript" };
  if (options.sql) {
    const out = await sqlModels(train, (s) => `s:${s.id}`);
    shared.preset(out.models, new Map());
    batchLists = { computed: "sql", timings: out.timings };
  }
  const methods = lineup(shared, {
    shape: options.shape,
    ...(options.only ? { only: options.only } : {}),
    ...(options.config ? { config: options.config } : {}),
  });
  const unknown = options.only?.filter((name) => !methods.some((m) => m.name === name)) ?? [];
  if (unknown.length > 0) throw new Error(`unknown method(s): ${unknown.join(", ")}`);
  const results = nextItem(methods, train, options.test, { sessions: options.sessions });
  return {
    protocol: "next-item",
    config: options.config?.version ?? "default",
    batchLists,
    trainSessions: options.train.length,
    testSessions: Math.min(options.sessions ?? options.test.length, options.test.length),
    results,
    totalMs: Math.round(performance.now() - started),
  };
}

export function readSessionFile(file: string, type: EventType): Session[] {
  return parseSessionFile(readText(file), type);
}

/** Protocol (ii) on UCI: customers' purchases before and after `cut`. */
export async function runNextPurchase(options: {
  cut: number;
  users?: number;
  sql?: boolean;
  config?: RankingConfig;
}): Promise<Record<string, unknown>> {
  const started = performance.now();
  const { sessions, catalog } = readUci();
  const { train, customers } = customersAt(sessions, options.cut);
  const data = trainData(train, catalog);
  const shared = new LastmileModels();
  let batchLists: Record<string, unknown> = { computed: "typescript" };
  if (options.sql) {
    // Customers are users (`u:<CustomerID>`, as the demo seed keys them); invoices without one stand alone.
    const out = await sqlModels(data, (s) => (s.user ? `u:${s.user}` : `s:${s.id}`));
    const byUser = new Map<string, Array<{ productId: string; score: number }>>();
    for (const [key, list] of out.candidates) if (key.startsWith("u:")) byUser.set(key.slice(2), list);
    shared.preset(out.models, byUser);
    batchLists = { computed: "sql", timings: out.timings };
  }
  const methods = lineup(shared, {
    repeat: true,
    shape: NEXT_PURCHASE_SHAPE,
    ...(options.config ? { config: options.config } : {}),
  });
  const results = nextPurchase(methods, data, customers, options.cut, { users: options.users });
  return {
    protocol: "next-purchase",
    config: options.config?.version ?? "default",
    batchLists,
    cut: isoDay(options.cut),
    trainSessions: train.length,
    customers: Math.min(options.users ?? customers.length, customers.length),
    results,
    totalMs: Math.round(performance.now() - started),
  };
}

/** Protocol (iii) on an OTTO jsonl file: sessions starting in the last `testDays` days are cut and predicted. */
export function runOtto(options: { file: string; testDays: number; seed: number }): Record<string, unknown> {
  const started = performance.now();
  const sessions = parseOtto(readText(options.file));
  const cut = cutBeforeEnd(sessions, options.testDays);
  const testSessions = sessions.filter((s) => (s.events[0]?.time ?? 0) >= cut);
  const cases = ottoCases(testSessions, options.seed);
  // Training: the sessions before the test days, plus the test sessions' visible parts (OTTO gives them).
  const train = [
    ...sessions.filter((s) => (s.events[0]?.time ?? 0) < cut),
    ...cases.map((c) => ({ id: `${c.session}:input`, user: null, events: c.input })),
  ];
  const results = otto(lineup(new LastmileModels()), trainData(train), cases);
  return {
    protocol: "otto",
    cut: isoDay(cut),
    trainSessions: train.length,
    testSessions: cases.length,
    results,
    totalMs: Math.round(performance.now() - started),
  };
}

// ── markdown ──

const f3 = (x: unknown) => (typeof x === "number" ? x.toFixed(4) : String(x));

function overlapMarkdown(r: OverlapResult & { data: string }): string {
  const [a, b] = r.methods;
  const share = (n: number) => (n / Math.max(1, r.predictions)).toFixed(4);
  return [
    `${r.data}: ${r.predictions} predictions, top ${r.k}`,
    "",
    "| who finds the target | predictions | share |",
    "|---|--:|--:|",
    `| both | ${r.both} | ${share(r.both)} |`,
    `| ${a} only | ${r.onlyFirst} | ${share(r.onlyFirst)} |`,
    `| ${b} only | ${r.onlySecond} | ${share(r.onlySecond)} |`,
    `| neither | ${r.neither} | ${share(r.neither)} |`,
    "",
    `HR@${r.k}: ${a} ${f3(r.hr[0])}, ${b} ${f3(r.hr[1])}, either ${f3(r.unionHr)}; ${b}'s top ${r.deep} holds the target in ${f3(r.secondDeepShare)}.`,
  ].join("\n");
}

export function markdown(report: Record<string, unknown>): string {
  if (report.protocol === "ab-sim") return abSimMarkdown(report);
  if (report.protocol === "overlap") return overlapMarkdown(report as unknown as OverlapResult & { data: string });
  const results = (report.results ?? []) as Array<Record<string, unknown>>;
  const columns: Record<string, string[]> = {
    "next-item": ["hr", "mrr", "predictions"],
    "next-purchase": ["recall", "ndcg", "users"],
    otto: ["score", "clicks", "carts", "orders", "sessions"],
  };
  const cols = columns[String(report.protocol)] ?? [];
  const names: Record<string, string> = {
    hr: "HR@20",
    mrr: "MRR@20",
    recall: "Recall@20",
    ndcg: "NDCG@20",
    score: "OTTO score",
    clicks: "R@20 clicks",
    carts: "R@20 carts",
    orders: "R@20 orders",
  };
  const head = ["method", ...cols.map((c) => names[c] ?? c), "fit s", "eval s"];
  const lines = [`| ${head.join(" | ")} |`, `|${head.map(() => "---").join("|")}|`];
  for (const r of results)
    lines.push(
      `| ${[
        r.method,
        ...cols.map((c) => (Number.isInteger(r[c]) ? String(r[c]) : f3(r[c]))),
        ((r.fitMs as number) / 1000).toFixed(1),
        ((r.evalMs as number) / 1000).toFixed(1),
      ].join(" | ")} |`,
    );
  const meta = Object.entries(report)
    .filter(([k]) => k !== "results")
    .map(([k, v]) => `${k}: ${typeof v === "object" ? JSON.stringify(v) : v}`)
    .join(", ");
  return `${meta}\n\n${lines.join("\n")}\n`;
}
