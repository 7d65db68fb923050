// Offline evaluation data: sessions of events, read from the three layouts the evaluation accepts, and the UCI
// Online Retail → session-file converter with a temporal split (docs/relevance.md#data). Pure parsing functions
// over text; the file I/O is in eval/files.ts.

import { CatalogBuilder, isSaleLine, parseUciLines, type RetailLine } from "../scripts/lib/uci-retail.ts";
import { categorize } from "../src/batch/categories.ts";

export { parseUciLines };

/** What happened: a click or view, an add to cart, a purchase (OTTO's clicks / carts / orders). */
export type EventType = "view" | "cart" | "purchase";

export interface SessionEvent {
  item: string;
  /** Unix seconds. */
  time: number;
  type: EventType;
}

export interface Session {
  id: string;
  /** The customer, when the data knows one (UCI invoices with a CustomerID). */
  user: string | null;
  /** Sorted by time; ties keep the file order (a stable sort). */
  events: SessionEvent[];
}

/** Per item: a title, category and price, when the data has them (UCI). */
export interface ItemInfo {
  title: string;
  category: string | null;
  price: number | null;
}

export interface Dataset {
  sessions: Session[];
  catalog: Map<string, ItemInfo>;
}

/** The session's start: its first event's time. */
export const startOf = (s: Session): number => s.events[0]?.time ?? 0;

const byTime = (a: SessionEvent, b: SessionEvent): number => a.time - b.time;

// ── (a) session-rec / RecSys'15 style: tab-separated, header SessionId ItemId Time (unix seconds) ──

export const SESSION_COLUMNS = ["SessionId", "ItemId", "Time"] as const;

/**
 * Sessions in the order their first line appears; each session's events sorted by time, ties in file order.
 * Extra columns after the three are ignored; every event is a `type` (the layout has no event type).
 */
export function parseSessionFile(text: string, type: EventType = "view"): Session[] {
  const lines = text.split(/\r?\n/);
  const header = (lines[0] ?? "").split("\t").map((f) => f.trim());
  const idx = SESSION_COLUMNS.map((c) => header.indexOf(c));
  if (idx.some((i) => i < 0))
    throw new Error(`not a session file: header must hold ${SESSION_COLUMNS.join(", ")} (tab-separated)`);
  const [si, ii, ti] = idx as [number, number, number];
  const byId = new Map<string, Session>();
  for (let n = 1; n < lines.length; n++) {
    const line = lines[n] as string;
    if (line.trim() === "") continue;
    const f = line.split("\t");
    const id = (f[si] ?? "").trim();
    const item = (f[ii] ?? "").trim();
    const time = Number(f[ti]);
    if (id === "" || item === "" || !Number.isFinite(time)) throw new Error(`bad session line ${n + 1}: "${line}"`);
    let s = byId.get(id);
    if (!s) {
      s = { id, user: null, events: [] };
      byId.set(id, s);
    }
    s.events.push({ item, time, type });
  }
  const sessions = [...byId.values()];
  for (const s of sessions) s.events.sort(byTime);
  return sessions;
}

/** The session file of `sessions` (header, then one line per event, sessions in order). */
export function formatSessionFile(sessions: readonly Session[]): string {
  const out: string[] = [SESSION_COLUMNS.join("\t")];
  for (const s of sessions) for (const e of s.events) out.push(`${s.id}\t${e.item}\t${e.time}`);
  return `${out.join("\n")}\n`;
}

// ── (b) OTTO jsonl: {"session": n, "events": [{"aid": n, "ts": unix ms, "type": "clicks"|"carts"|"orders"}]} ──

const OTTO_TYPES: Readonly<Record<string, EventType>> = { clicks: "view", carts: "cart", orders: "purchase" };

export function parseOtto(text: string): Session[] {
  const sessions: Session[] = [];
  for (const [n, line] of text.split(/\r?\n/).entries()) {
    if (line.trim() === "") continue;
    const row = JSON.parse(line) as { session: number; events: Array<{ aid: number; ts: number; type: string }> };
    const events = row.events.map((e) => {
      const type = OTTO_TYPES[e.type];
      if (!type) throw new Error(`OTTO line ${n + 1}: unknown event type ${e.type}`);
      return { item: String(e.aid), time: e.ts / 1000, type };
    });
    events.sort(byTime);
    sessions.push({ id: String(row.session), user: null, events });
  }
  return sessions;
}

// ── (c) UCI Online Retail CSV: an invoice is a session (its sale lines in file order), a customer a user ──

/**
 * Invoices as purchase sessions: sale lines only (no cancellations, returns, fees; src: scripts/lib/uci-retail.ts),
 * in file order; time = the invoice time in unix seconds; user = CustomerID (null when missing). Sessions are in
 * the order of their first line. The catalogue: the most frequent description, its keyword category, median price.
 */
export function uciDataset(lines: readonly RetailLine[]): Dataset {
  const builder = new CatalogBuilder();
  const byId = new Map<string, Session>();
  for (const line of lines) {
    builder.add(line);
    if (!isSaleLine(line)) continue;
    const time = Date.parse(line.invoiceDate) / 1000;
    if (!Number.isFinite(time)) continue;
    let s = byId.get(line.invoice);
    if (!s) {
      s = { id: line.invoice, user: line.customerId || null, events: [] };
      byId.set(line.invoice, s);
    }
    s.events.push({ item: line.stockCode, time, type: "purchase" });
  }
  const catalog = new Map<string, ItemInfo>();
  for (const item of builder.items())
    catalog.set(item.id, { title: item.title, category: categorize(item.title), price: item.price });
  const sessions = [...byId.values()];
  for (const s of sessions) s.events.sort(byTime);
  return { sessions, catalog };
}

// ── Temporal split, with the session-rec framework's filters ──

export interface SplitOptions {
  /** Sessions starting at or after this time (unix seconds) are test sessions. */
  cut: number;
  /** Items with fewer events in the whole data are dropped (session-rec: 5). */
  minItemSupport: number;
  /** Sessions with fewer events are dropped (session-rec: 2). */
  minSessionLength: number;
}

export const SPLIT_DEFAULTS = { minItemSupport: 5, minSessionLength: 2 } as const;

/**
 * The session-rec preprocessing and split: drop sessions shorter than `minSessionLength`, then items with fewer
 * than `minItemSupport` events, then short sessions again; split by session start at `cut`; drop test events
 * whose item is not in the training sessions, then short test sessions. Order is kept.
 */
export function temporalSplit(
  sessions: readonly Session[],
  options: SplitOptions,
): { train: Session[]; test: Session[] } {
  const { cut, minItemSupport, minSessionLength } = options;
  let kept = sessions.filter((s) => s.events.length >= minSessionLength);
  const support = new Map<string, number>();
  for (const s of kept) for (const e of s.events) support.set(e.item, (support.get(e.item) ?? 0) + 1);
  kept = kept
    .map((s) => ({ ...s, events: s.events.filter((e) => (support.get(e.item) ?? 0) >= minItemSupport) }))
    .filter((s) => s.events.length >= minSessionLength);
  const train = kept.filter((s) => startOf(s) < cut);
  const known = new Set<string>();
  for (const s of train) for (const e of s.events) known.add(e.item);
  const test = kept
    .filter((s) => startOf(s) >= cut)
    .map((s) => ({ ...s, events: s.events.filter((e) => known.has(e.item)) }))
    .filter((s) => s.events.length >= minSessionLength);
  return { train, test };
}

/** The time `days` days before the latest session start (whole-day cut at 00:00 UTC of that day). */
export function cutBeforeEnd(sessions: readonly Session[], days: number): number {
  let last = Number.NEGATIVE_INFINITY;
  for (const s of sessions) last = Math.max(last, startOf(s));
  const day = 86_400;
  return Math.floor(last / day) * day - (days - 1) * day;
}

export const isoDay = (unixSeconds: number): string => new Date(unixSeconds * 1000).toISOString().slice(0, 10);
