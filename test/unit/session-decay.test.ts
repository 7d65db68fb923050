// Decay math (src/session/decay.ts) and session placement (src/session/visit.ts).
import { describe, expect, it } from "vitest";
import { addScore, combine, decayFactor, rankOf, valueAt } from "../../src/session/decay.ts";
import { MINUTE_MS } from "../../src/session/limits.ts";
import { isActive, place } from "../../src/session/visit.ts";

const HL = 30 * MINUTE_MS;

describe("decay", () => {
  it("halves a score every half-life and never grows it", () => {
    expect(decayFactor(HL, HL)).toBeCloseTo(0.5, 12);
    expect(decayFactor(3 * HL, HL)).toBeCloseTo(0.125, 12);
    expect(decayFactor(-HL, HL)).toBe(1);
    expect(valueAt({ value: 4, at: 0 }, 2 * HL, HL)).toBeCloseTo(1, 12);
  });

  it("adds independently of arrival order", () => {
    const inOrder = addScore(addScore(null, 1, 0, HL), 2, HL, HL);
    const late = addScore(addScore(null, 2, HL, HL), 1, 0, HL);
    expect(inOrder.at).toBe(HL);
    expect(late.at).toBe(HL);
    expect(inOrder.value).toBeCloseTo(2.5, 12);
    expect(late.value).toBeCloseTo(2.5, 12);
  });

  it("floors at zero", () => {
    expect(addScore({ value: 1, at: 0 }, -3, 0, HL).value).toBe(0);
    expect(addScore(null, -1, 0, HL).value).toBe(0);
  });

  it("combines two scores at the later time", () => {
    expect(combine({ value: 2, at: 0 }, { value: 1, at: HL }, HL)).toEqual({ value: 2, at: HL });
    expect(combine(null, { value: 1, at: 5 }, HL)).toEqual({ value: 1, at: 5 });
    expect(combine(null, null, HL)).toBeNull();
  });

  it("ranks rows by their current score whatever the current time", () => {
    const a = { value: 4, at: 0 };
    const b = { value: 1.5, at: HL };
    // At HL: a = 2, b = 1.5 → a first; the rank order is the same.
    expect(valueAt(a, HL, HL) > valueAt(b, HL, HL)).toBe(rankOf(a, HL) > rankOf(b, HL));
    expect(valueAt(a, 10 * HL, HL) > valueAt(b, 10 * HL, HL)).toBe(rankOf(a, HL) > rankOf(b, HL));
    expect(rankOf({ value: 0, at: 0 }, HL)).toBeLessThan(rankOf({ value: 1e-9, at: 0 }, HL));
  });
});

describe("sessions", () => {
  let n = 0;
  const id = () => `s${++n}`;

  it("starts, joins and restarts on a 30-minute gap", () => {
    const first = place(null, 0, id);
    expect(first.kind).toBe("started");
    const joined = place(first.session, 29 * MINUTE_MS, id);
    expect(joined).toMatchObject({ kind: "joined", session: { id: first.session.id, eventCount: 2 } });
    const exactlyGap = place(joined.session, 59 * MINUTE_MS, id);
    expect(exactlyGap.kind).toBe("joined");
    const restarted = place(exactlyGap.session, 59 * MINUTE_MS + 30 * MINUTE_MS + 1, id);
    expect(restarted.kind).toBe("started");
    expect(restarted.session.eventCount).toBe(1);
  });

  it("lets a slightly late event join and leaves a very old one out", () => {
    const s = place(null, 60 * MINUTE_MS, id).session;
    expect(place(s, 50 * MINUTE_MS, id).session).toMatchObject({
      startedAt: 50 * MINUTE_MS,
      lastEventAt: 60 * MINUTE_MS,
    });
    expect(place(s, 0, id)).toEqual({ kind: "past", session: s });
  });

  it("is active for 30 minutes after its last event", () => {
    const s = place(null, 0, id).session;
    expect(isActive(s, 30 * MINUTE_MS)).toBe(true);
    expect(isActive(s, 30 * MINUTE_MS + 1)).toBe(false);
  });
});
