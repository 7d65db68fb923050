// Hand-off of accepted events to the users' SessionState objects: one `record` call per distinct user per request,
// all users in parallel, each user's events in request order. The request is acknowledged only when every call
// returned (the object is the durable write-ahead point). Failure policy (docs/collection.md#hand-off):
//   - an overloaded object (`overloaded === true`) is not retried: more calls would only deepen the overload;
//   - a transient error (`retryable === true`) is retried once, on a fresh stub (a stub that threw may be broken),
//     under the same attempt token: a first call that stored the events but lost its answer leaves them seen under
//     that token, and the retry counts them as accepted, not as duplicates;
//   - if any user still fails, the whole request answers 503 and the client retries the batch; that is another
//     request, with other tokens, so the users that did succeed count the same messageIds as duplicates.
import { ApiError } from "../errors.ts";
import { type CollectedEvent, type RecordOptions, type RecordResult, userKey } from "./event.ts";

export interface SessionRecorder {
  record(userKey: string, events: CollectedEvent[], options?: RecordOptions): Promise<RecordResult>;
}

/** Seconds a client should wait before retrying after a failed hand-off. Segment's clients back off on their own. */
export const HANDOFF_RETRY_AFTER_SECONDS = 2;

/** Events grouped by user key, in first-seen order of users and request order within a user. */
export function groupByUser<E extends Pick<CollectedEvent, "userId" | "anonymousId">>(
  events: readonly E[],
): Map<string, E[]> {
  const groups = new Map<string, E[]>();
  for (const event of events) {
    const key = userKey(event);
    const group = groups.get(key);
    if (group) group.push(event);
    else groups.set(key, [event]);
  }
  return groups;
}

function flag(error: unknown, name: "overloaded" | "retryable"): boolean {
  return typeof error === "object" && error !== null && (error as Record<string, unknown>)[name] === true;
}

async function recordOne(
  stubFor: (userKey: string) => SessionRecorder,
  key: string,
  events: CollectedEvent[],
): Promise<RecordResult> {
  // One token per request and user, the same on the retry.
  const options: RecordOptions = { attempt: crypto.randomUUID() };
  try {
    return await stubFor(key).record(key, events, options);
  } catch (error) {
    if (flag(error, "overloaded") || !flag(error, "retryable")) throw error;
    return await stubFor(key).record(key, events, options);
  }
}

export interface HandOffOutcome {
  accepted: number;
  duplicates: number;
  /** Events of suppressed users: answered, not stored (docs/privacy.md). */
  suppressed: number;
  /** Distinct users (= record calls, retries aside). */
  users: number;
  /** The user keys whose object answered `suppressed` (their rejected events are not kept either). */
  suppressedKeys: string[];
}

export async function handOff(
  events: readonly CollectedEvent[],
  stubFor: (userKey: string) => SessionRecorder,
): Promise<HandOffOutcome> {
  const groups = [...groupByUser(events)];
  const settled = await Promise.allSettled(groups.map(([key, group]) => recordOne(stubFor, key, group)));
  let accepted = 0;
  let duplicates = 0;
  let suppressed = 0;
  const suppressedKeys: string[] = [];
  const failures: unknown[] = [];
  settled.forEach((result, i) => {
    if (result.status === "fulfilled") {
      accepted += result.value.accepted;
      duplicates += result.value.duplicates;
      suppressed += result.value.suppressed ?? 0;
      if ((result.value.suppressed ?? 0) > 0) suppressedKeys.push(groups[i]?.[0] as string);
    } else failures.push(result.reason);
  });
  if (failures.length > 0) {
    const overloaded = failures.some((e) => flag(e, "overloaded"));
    throw new ApiError(
      "dependency_unavailable",
      overloaded
        ? "a session store is overloaded; retry the request later"
        : "the events could not be stored; retry the request",
      {
        details: { failedUsers: failures.length, users: groups.length },
        headers: { "Retry-After": String(HANDOFF_RETRY_AFTER_SECONDS) },
        cause: failures[0],
      },
    );
  }
  return { accepted, duplicates, suppressed, users: groups.length, suppressedKeys };
}
