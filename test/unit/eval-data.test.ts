// The evaluation's readers (session-rec files, OTTO jsonl, the UCI CSV) and the UCI → session-file converter's
// split, on small hand-made inputs.
import { describe, expect, it } from "vitest";
import {
  cutBeforeEnd,
  formatSessionFile,
  parseOtto,
  parseSessionFile,
  parseUciLines,
  type Session,
  temporalSplit,
  uciDataset,
} from "../../eval/data.ts";

describe("session-rec files", () => {
  it("groups by SessionId in first-seen order and sorts events by time, ties in file order", () => {
    const text = "Time\tSessionId\tItemId\n30\t2\tx\n10\t1\ta\n20\t1\tc\n10\t1\tb\n5\t2\ty\n";
    const sessions = parseSessionFile(text);
    expect(sessions.map((s) => s.id)).toEqual(["2", "1"]);
    expect(sessions[1]?.events.map((e) => e.item)).toEqual(["a", "b", "c"]);
    expect(sessions[0]?.events).toEqual([
      { item: "y", time: 5, type: "view" },
      { item: "x", time: 30, type: "view" },
    ]);
    expect(parseSessionFile(text, "purchase")[0]?.events[0]?.type).toBe("purchase");
  });
  it("rejects another layout and bad lines", () => {
    expect(() => parseSessionFile("session,item,time\n1,a,1\n")).toThrow(/header/);
    expect(() => parseSessionFile("SessionId\tItemId\tTime\n1\ta\tsoon\n")).toThrow(/line 2/);
  });
  it("round-trips through the writer", () => {
    const sessions: Session[] = [
      {
        id: "7",
        user: null,
        events: [
          { item: "a", time: 1, type: "view" },
          { item: "b", time: 2, type: "view" },
        ],
      },
    ];
    const text = formatSessionFile(sessions);
    expect(text).toBe("SessionId\tItemId\tTime\n7\ta\t1\n7\tb\t2\n");
    expect(parseSessionFile(text)).toEqual(sessions);
  });
});

describe("OTTO jsonl", () => {
  it("maps clicks / carts / orders and ms to seconds", () => {
    const text =
      '{"session":3,"events":[{"aid":9,"ts":2000,"type":"carts"},{"aid":8,"ts":1000,"type":"clicks"},{"aid":9,"ts":3000,"type":"orders"}]}\n';
    expect(parseOtto(text)).toEqual([
      {
        id: "3",
        user: null,
        events: [
          { item: "8", time: 1, type: "view" },
          { item: "9", time: 2, type: "cart" },
          { item: "9", time: 3, type: "purchase" },
        ],
      },
    ]);
    expect(() => parseOtto('{"session":1,"events":[{"aid":1,"ts":1,"type":"likes"}]}')).toThrow(/likes/);
  });
});

describe("UCI Online Retail", () => {
  const csv = [
    "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country",
    "536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,2010-12-01T08:26:00Z,2.55,17850,United Kingdom",
    "536365,POST,POSTAGE,1,2010-12-01T08:26:00Z,18,17850,United Kingdom",
    "536365,71053,WHITE METAL LANTERN,6,2010-12-01T08:26:00Z,3.39,17850,United Kingdom",
    '536366,22633,"HAND WARMER, UNION JACK",6,2010-12-01T08:28:00Z,1.85,,United Kingdom',
    "C536379,71053,WHITE METAL LANTERN,-1,2010-12-01T09:41:00Z,3.39,17850,United Kingdom",
  ].join("\n");
  it("makes an invoice a session of its sale lines in file order, the customer its user", () => {
    const { sessions, catalog } = uciDataset(parseUciLines(csv));
    expect(sessions).toEqual([
      {
        id: "536365",
        user: "17850",
        events: [
          { item: "85123A", time: Date.parse("2010-12-01T08:26:00Z") / 1000, type: "purchase" },
          { item: "71053", time: Date.parse("2010-12-01T08:26:00Z") / 1000, type: "purchase" },
        ],
      },
      {
        id: "536366",
        user: null,
        events: [{ item: "22633", time: Date.parse("2010-12-01T08:28:00Z") / 1000, type: "purchase" }],
      },
    ]);
    expect(catalog.get("85123A")).toEqual({
      title: "WHITE HANGING HEART T-LIGHT HOLDER",
      category: "Candles & Lights",
      price: 2.55,
    });
    expect(catalog.has("POST")).toBe(false);
  });
  it("rejects another CSV", () => {
    expect(() => parseUciLines("a,b\n1,2\n")).toThrow(/UCI/);
  });
});

describe("the temporal split (session-rec filters)", () => {
  const ev = (item: string, time: number) => ({ item, time, type: "purchase" as const });
  const sessions: Session[] = [
    { id: "1", user: null, events: [ev("a", 0), ev("b", 1)] },
    { id: "2", user: null, events: [ev("a", 100), ev("b", 101), ev("z", 102)] },
    { id: "3", user: null, events: [ev("a", 200)] },
    { id: "4", user: null, events: [ev("a", 300), ev("b", 301), ev("c", 302)] },
    { id: "5", user: null, events: [ev("c", 400), ev("a", 401)] },
    { id: "6", user: null, events: [ev("b", 500), ev("c", 501), ev("a", 502)] },
  ];
  it("drops short sessions and rare items, splits by session start, keeps test items seen in training", () => {
    // Session 3 is too short. Supports then: a 5, b 4, c 3, z 1 → z goes (min 2). Cut at 400: sessions 1, 2, 4
    // train (items a, b, c); 5 and 6 test.
    const { train, test } = temporalSplit(sessions, { cut: 400, minItemSupport: 2, minSessionLength: 2 });
    expect(train.map((s) => s.id)).toEqual(["1", "2", "4"]);
    expect(train[1]?.events.map((e) => e.item)).toEqual(["a", "b"]);
    expect(test.map((s) => s.id)).toEqual(["5", "6"]);
    // With a cut at 300, c is only in test sessions: 4 keeps a, b; 5 keeps a alone and goes; 6 keeps b, a.
    const later = temporalSplit(sessions, { cut: 300, minItemSupport: 2, minSessionLength: 2 });
    expect(later.test.map((s) => [s.id, s.events.map((e) => e.item)])).toEqual([
      ["4", ["a", "b"]],
      ["6", ["b", "a"]],
    ]);
  });
  it("cuts whole days before the last session start", () => {
    const day = 86_400;
    const s = (t: number): Session => ({ id: String(t), user: null, events: [ev("a", t)] });
    // Last start on day 10 (+ 5 h): 1 test day → cut at day 10 00:00; 3 days → day 8.
    expect(cutBeforeEnd([s(0), s(10 * day + 5 * 3600)], 1)).toBe(10 * day);
    expect(cutBeforeEnd([s(0), s(10 * day + 5 * 3600)], 3)).toBe(8 * day);
  });
});
