// The history checker of the reliability tests (scripts/lib/history.ts) and its load generator
// (scripts/lib/history-load.ts): outcomes of attempts, and each count made non-zero by the fault it stands for, so
// the checker itself can fail.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  attemptOutcomes,
  check,
  HistoryRecorder,
  type SentEvent,
  sentEvent,
  type Verdict,
} from "../../scripts/lib/history.ts";
import { type Post, sendBatch, workload } from "../../scripts/lib/history-load.ts";

const ev = (messageId: string, userKey = "a:v1", positions: number[] = [0]): SentEvent => ({
  messageId,
  userKey,
  positions,
});

/** Three acknowledged events of two users (m3 makes two interactions), one rejected, one unknown. */
function history(): HistoryRecorder {
  const h = new HistoryRecorder();
  h.attempt([ev("m1"), ev("m2", "u:a", []), ev("bad")], { status: 200, rejected: [2] });
  h.attempt([ev("m3", "u:a", [0, 2]), ev("m4")], { status: 200 });
  h.attempt([ev("m5")], { status: 503 });
  return h;
}

/** What a faultless pipeline holds for `history()` (m5, of unknown outcome, not delivered). */
function clean() {
  return {
    warehouse: ["m1", "m2", "m3", "m4"],
    interactions: [
      { messageId: "m1", position: 0 },
      { messageId: "m3", position: 0 },
      { messageId: "m3", position: 2 },
      { messageId: "m4", position: 0 },
    ],
    stream: ["m1", "m2", "m3", "m4"],
    sessions: [
      { userKey: "a:v1", events: 2 },
      { userKey: "u:a", events: 2 },
    ],
  };
}

const perPlace = (v: Verdict, kind: "lost" | "duplicated" | "unexpected") =>
  Object.fromEntries(Object.entries(v.places).map(([place, counts]) => [place, counts[kind]]));

describe("attempt outcomes", () => {
  it("maps answers to acknowledged, rejected and unknown per event", () => {
    expect(attemptOutcomes(3, { status: 200, rejected: [1] })).toEqual(["acknowledged", "rejected", "acknowledged"]);
    expect(attemptOutcomes(2, { status: 400 })).toEqual(["rejected", "rejected"]);
    expect(attemptOutcomes(2, { status: 429 })).toEqual(["rejected", "rejected"]);
    expect(attemptOutcomes(2, { status: 503 })).toEqual(["unknown", "unknown"]);
    expect(attemptOutcomes(1, {})).toEqual(["unknown"]);
  });

  it("keeps the best outcome of an id's attempts: acknowledged > listed as rejected > unknown > a 4xx", () => {
    const h = new HistoryRecorder();
    h.attempt([ev("a"), ev("b"), ev("c")], { status: 500 });
    // b failed validation: that verdict on its content settles the attempt whose answer was lost.
    h.attempt([ev("a"), ev("b")], { status: 200, rejected: [1] });
    // A rate limit says nothing about c's first attempt.
    h.attempt([ev("c")], { status: 429 });
    expect([h.outcome("a"), h.outcome("b"), h.outcome("c"), h.outcome("x")]).toEqual([
      "acknowledged",
      "rejected",
      "unknown",
      undefined,
    ]);
    expect(h.summary()).toEqual({ sent: 3, attempts: 6, acknowledged: 1, rejected: 1, unknown: 1 });
  });
});

describe("check", () => {
  it("finds nothing wrong when every acknowledged event is in place exactly once", () => {
    const v = check(history(), clean());
    expect(v).toMatchObject({ sent: 6, acknowledged: 4, rejected: 1, unknown: 1, unknownDelivered: 0 });
    expect([v.lost, v.duplicated, v.unexpected]).toEqual([0, 0, 0]);
  });

  it("accepts an unknown-outcome event present everywhere and counts it as delivered", () => {
    const o = clean();
    o.warehouse.push("m5");
    o.interactions.push({ messageId: "m5", position: 0 });
    o.stream.push("m5");
    o.sessions[0] = { userKey: "a:v1", events: 3 };
    const v = check(history(), o);
    expect([v.lost, v.duplicated, v.unexpected, v.unknownDelivered]).toEqual([0, 0, 0, 1]);
  });

  it("counts an acknowledged event missing from Postgres as lost", () => {
    const o = clean();
    o.warehouse = o.warehouse.filter((id) => id !== "m4");
    o.interactions = o.interactions.filter((r) => r.messageId !== "m4");
    const v = check(history(), o);
    expect(v.lost).toBe(1);
    expect(v.places.warehouse.lost).toBe(1);
    expect(v.findings.lost[0]).toMatchObject({ place: "warehouse", id: "m4" });
  });

  it("counts missing interactions of a loaded event as lost", () => {
    const o = clean();
    o.interactions = o.interactions.filter((r) => !(r.messageId === "m3" && r.position === 2));
    expect(check(history(), o)).toMatchObject({ lost: 1, duplicated: 0, unexpected: 0 });
  });

  it("counts a session object that counted fewer events than it acknowledged as lost", () => {
    const o = clean();
    o.sessions = [{ userKey: "a:v1", events: 1 }];
    const v = check(history(), o);
    // a:v1 is one short; u:a was not observed at all (two acknowledged).
    expect(v.places.session.lost).toBe(3);
    expect(v.lost).toBe(3);
  });

  it("counts repeated stream entries, repeated or extra interactions and over-counting objects as duplicated", () => {
    const o = clean();
    o.stream.push("m1", "m1");
    o.interactions.push({ messageId: "m3", position: 2 }, { messageId: "m1", position: 1 });
    o.sessions[1] = { userKey: "u:a", events: 3 };
    o.warehouse.push("m2");
    const v = check(history(), o);
    expect(perPlace(v, "duplicated")).toEqual({ warehouse: 1, interactions: 2, stream: 2, session: 1 });
    expect(v.duplicated).toBe(6);
    expect([v.lost, v.unexpected]).toEqual([0, 0]);
  });

  it("counts rows of ids never sent or only rejected, and objects nothing was sent to, as unexpected", () => {
    const o = clean();
    o.warehouse.push("ghost", "bad");
    o.interactions.push({ messageId: "ghost", position: 0 });
    o.stream.push("bad");
    o.sessions.push({ userKey: "a:nobody", events: 2 });
    const v = check(history(), o);
    expect(perPlace(v, "unexpected")).toEqual({ warehouse: 2, interactions: 1, stream: 1, session: 2 });
    expect(v.unexpected).toBe(6);
    expect(v.findings.unexpected.map((f) => f.note)).toContain("only ever rejected");
  });

  it("over random histories: a faithful observation is clean, and dropping or repeating one id is caught", () => {
    const outcome = fc.constantFrom(200, 200, 200, 400, 503);
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.array(fc.integer({ min: 0, max: 30 }), { minLength: 1, maxLength: 6 }), outcome), {
          minLength: 1,
          maxLength: 20,
        }),
        fc.boolean(),
        (requests, deliverUnknown) => {
          const h = new HistoryRecorder();
          for (const [ids, status] of requests) {
            h.attempt(
              ids.map((n) => ev(`m${n}`, `a:v${n % 3}`, n % 2 ? [0] : [])),
              { status },
            );
          }
          const delivered = h.ids().filter((id) => {
            const o = h.outcome(id);
            return o === "acknowledged" || (o === "unknown" && deliverUnknown);
          });
          const counts = new Map<string, number>();
          for (const id of delivered) {
            const key = h.event(id)?.userKey ?? "";
            counts.set(key, (counts.get(key) ?? 0) + 1);
          }
          const faithful = {
            warehouse: delivered,
            stream: delivered,
            interactions: delivered.flatMap((id) =>
              (h.event(id)?.positions ?? []).map((position) => ({ messageId: id, position })),
            ),
            sessions: [...counts].map(([userKey, events]) => ({ userKey, events })),
          };
          const v = check(h, faithful);
          expect([v.lost, v.duplicated, v.unexpected]).toEqual([0, 0, 0]);
          const acked = h.ids("acknowledged")[0];
          if (acked) {
            expect(check(h, { ...faithful, warehouse: delivered.filter((id) => id !== acked) }).lost).toBe(1);
            expect(check(h, { ...faithful, stream: [...delivered, acked] }).duplicated).toBe(1);
          }
        },
      ),
      { seed: 20261120, numRuns: 200 },
    );
  });
});

describe("sentEvent", () => {
  it("knows each event's object and the interaction positions its warehouse rows get", () => {
    const order = sentEvent({
      messageId: "o",
      type: "track",
      userId: "42",
      event: "Order Completed",
      properties: { products: [{ product_id: "a" }, { product_id: "b" }, { name: "no id" }] },
    });
    expect(order).toEqual({ messageId: "o", userKey: "u:42", positions: [0, 1] });
    expect(sentEvent({ messageId: "s", type: "track", anonymousId: "v", event: "Products Searched" })).toEqual({
      messageId: "s",
      userKey: "a:v",
      positions: [],
    });
    expect(
      sentEvent({ messageId: "p", type: "page", anonymousId: "v", properties: { product_id: "x" } }).positions,
    ).toEqual([0]);
  });
});

describe("the load generator", () => {
  it("makes the same batches for a seed, every id under the prefix, each event once", () => {
    const a = workload({ prefix: "run1", users: 7, events: 300, seed: 5 });
    expect(workload({ prefix: "run1", users: 7, events: 300, seed: 5 })).toEqual(a);
    const ids = a.flatMap((b) => b.sent.map((s) => s.messageId));
    expect(new Set(ids).size).toBe(300);
    expect(ids.every((id) => id.startsWith("run1-"))).toBe(true);
    expect(new Set(a.flatMap((b) => b.sent.map((s) => s.userKey))).size).toBe(7);
    expect(a.every((b) => b.events.length === b.sent.length && b.events.length <= 20)).toBe(true);
  });

  it("records what each answer taught the client", async () => {
    const [batch] = workload({ prefix: "run2", users: 2, events: 3, seed: 1, maxBatch: 3 });
    if (!batch) throw new Error("no batch");
    const h = new HistoryRecorder();
    const answer =
      (status: number, text = ""): Post =>
      async () => ({ status, text });
    const ok = await sendBatch(answer(200, JSON.stringify({ rejected: [{ index: 1 }] })), batch, h);
    expect(ok.outcomes).toEqual(batch.sent.map((_, i) => (i === 1 ? "rejected" : "acknowledged")));
    const lost = await sendBatch(
      async () => {
        throw new Error("socket hang up");
      },
      batch,
      h,
    );
    expect(lost).toMatchObject({ status: undefined, error: "socket hang up" });
    expect(lost.outcomes.every((o) => o === "unknown")).toBe(true);
    expect((await sendBatch(answer(200, "not json"), batch, h)).outcomes.every((o) => o === "unknown")).toBe(true);
    expect((await sendBatch(answer(413), batch, h)).outcomes.every((o) => o === "rejected")).toBe(true);
    expect(h.summary().attempts).toBe(4 * batch.sent.length);
  });
});
