// The current session ("visit") of a user, driven by event time. Pure.
//   - no session yet, or more than SESSION_GAP_MS since the last event → a new session starts;
//   - an event that arrives late but falls inside (or within the gap of) the current session joins it;
//   - an event far older than the current session's start (a replayed offline queue) belongs to a visit that is
//     over: it updates the long-term state only, not the current session.
import { SESSION_GAP_MS } from "./limits.ts";

export interface CurrentSession {
  id: string;
  startedAt: number;
  lastEventAt: number;
  eventCount: number;
}

export type Placement =
  | { kind: "started"; session: CurrentSession }
  | { kind: "joined"; session: CurrentSession }
  | { kind: "past"; session: CurrentSession };

export function place(current: CurrentSession | null, at: number, newId: () => string): Placement {
  if (!current || at - current.lastEventAt > SESSION_GAP_MS) {
    return { kind: "started", session: { id: newId(), startedAt: at, lastEventAt: at, eventCount: 1 } };
  }
  if (current.startedAt - at > SESSION_GAP_MS) return { kind: "past", session: current };
  return {
    kind: "joined",
    session: {
      id: current.id,
      startedAt: Math.min(current.startedAt, at),
      lastEventAt: Math.max(current.lastEventAt, at),
      eventCount: current.eventCount + 1,
    },
  };
}

export function isActive(session: CurrentSession, now: number): boolean {
  return now - session.lastEventAt <= SESSION_GAP_MS;
}
