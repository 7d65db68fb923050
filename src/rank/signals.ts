// From a session snapshot (what the SessionState object answers) to the signals the ranking core uses: recent
// item lists and affinities scaled to [0, 1]. Pure.
import type { AffinityScore, SessionSnapshot } from "../session/snapshot.ts";
import type { SessionSignals } from "./core.ts";

/** `prefix:<value>` tokens → value → score / best score. */
function scaled(scores: readonly AffinityScore[], prefix: string): Map<string, number> {
  const out = new Map<string, number>();
  let max = 0;
  for (const a of scores) if (a.token.startsWith(prefix) && a.score > max) max = a.score;
  if (max <= 0) return out;
  for (const a of scores) {
    if (!a.token.startsWith(prefix) || a.score <= 0) continue;
    out.set(a.token.slice(prefix.length), a.score / max);
  }
  return out;
}

export function sessionSignals(snapshot: SessionSnapshot): SessionSignals | null {
  if (!snapshot.exists) return null;
  const bands = new Map<string, number>();
  for (const [band, v] of scaled(snapshot.affinities.longTerm, "price:")) bands.set(band, 0.5 * v);
  for (const [band, v] of scaled(snapshot.affinities.session, "price:"))
    bands.set(band, (bands.get(band) ?? 0) + 0.5 * v);
  return {
    viewed: snapshot.viewed,
    carted: snapshot.carted,
    purchased: snapshot.purchased,
    searches: snapshot.searches,
    // Maps keep insertion order: strongest category first (the snapshot lists tokens best first).
    sessionCategories: scaled(snapshot.affinities.session, "category:"),
    longTermCategories: scaled(snapshot.affinities.longTerm, "category:"),
    priceBands: bands,
    active: snapshot.session?.active === true,
  };
}
