// From a session snapshot to ranking signals (src/rank/signals.ts): affinities scaled by the best of their kind,
// price bands half session, half long-term, nothing for a visitor never seen.
import { describe, expect, it } from "vitest";
import { sessionSignals } from "../../src/rank/signals.ts";
import { emptySnapshot, type SessionSnapshot } from "../../src/session/snapshot.ts";

function snapshot(patch: Partial<SessionSnapshot>): SessionSnapshot {
  return { ...emptySnapshot("u:1", 1000), exists: true, ...patch };
}

describe("sessionSignals", () => {
  it("is null for a visitor the session objects never saw", () => {
    expect(sessionSignals(emptySnapshot("a:new", 1000))).toBeNull();
  });

  it("scales categories by the best category of each horizon and splits price bands half and half", () => {
    const s = sessionSignals(
      snapshot({
        viewed: ["p2", "p1"],
        carted: ["c1"],
        purchased: ["o1"],
        searches: ["mug"],
        session: { id: "s", startedAt: 0, lastEventAt: 900, eventCount: 3, active: true },
        affinities: {
          session: [
            { token: "brand:acme", score: 10 },
            { token: "category:shoes", score: 4 },
            { token: "category:hats", score: 2 },
            { token: "category:none", score: 0 },
            { token: "price:10-25", score: 1 },
          ],
          longTerm: [
            { token: "price:25-50", score: 4 },
            { token: "category:hats", score: 3 },
            { token: "price:10-25", score: 2 },
          ],
        },
      }),
    );
    if (!s) throw new Error("no signals");
    expect([...s.sessionCategories]).toEqual([
      ["shoes", 1],
      ["hats", 0.5],
    ]);
    expect([...s.longTermCategories]).toEqual([["hats", 1]]);
    // 10-25: 0.5 × 2/4 (long-term) + 0.5 × 1/1 (session); 25-50: 0.5 × 4/4
    expect(Object.fromEntries(s.priceBands)).toEqual({ "10-25": 0.75, "25-50": 0.5 });
    expect(s).toMatchObject({ viewed: ["p2", "p1"], carted: ["c1"], purchased: ["o1"], searches: ["mug"] });
    expect(s.active).toBe(true);
  });

  it("has no affinities when no score is positive, and is inactive without a session", () => {
    const s = sessionSignals(
      snapshot({ affinities: { session: [{ token: "category:x", score: 0 }], longTerm: [] }, session: null }),
    );
    expect(s?.sessionCategories.size).toBe(0);
    expect(s?.priceBands.size).toBe(0);
    expect(s?.active).toBe(false);
  });
});
