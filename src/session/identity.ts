// Which other objects a user's object should absorb, from the events it records. Pure.
//   - an event with both userId and anonymousId (identify, and every later event of a logged-in visitor) →
//     the visitor object `a:<anonymousId>`; claimed even when empty, so later anonymous-only events under that
//     id are forwarded to the user;
//   - `alias` (previousId → userId) → `a:<previousId>` (claimed) and `u:<previousId>` (only if it exists:
//     Segment's previousId may be either kind of id).
import type { CollectedEvent } from "../collect/event.ts";

export interface StitchTarget {
  key: string;
  /** Claim the key even when its object has no state (it then forwards to us). */
  claim: boolean;
}

export const USER_KEY_PATTERN = /^[ua]:.+$/s;
/** Keys are Durable Object names; bound them so a bad caller cannot create absurd names. */
export const MAX_USER_KEY_CHARS = 512;

export function isUserKey(key: unknown): key is string {
  return typeof key === "string" && key.length <= MAX_USER_KEY_CHARS && USER_KEY_PATTERN.test(key);
}

export function stitchTargets(
  selfKey: string,
  events: readonly Pick<CollectedEvent, "type" | "userId" | "anonymousId" | "previousId">[],
): StitchTarget[] {
  if (!selfKey.startsWith("u:")) return [];
  const found = new Map<string, StitchTarget>();
  const add = (key: string, claim: boolean) => {
    if (key === selfKey || !isUserKey(key)) return;
    const prev = found.get(key);
    found.set(key, { key, claim: claim || (prev?.claim ?? false) });
  };
  for (const e of events) {
    if (e.type === "alias" && e.previousId) {
      add(`a:${e.previousId}`, true);
      add(`u:${e.previousId}`, false);
    }
    if (e.userId && e.anonymousId) add(`a:${e.anonymousId}`, true);
  }
  return [...found.values()];
}
