// Exposure logging (docs/experiments.md#exposures): every ranking answer to a named visitor becomes one event,
// sent to the Redis event stream after the answer has gone out (waitUntil: no latency on the request), batched per
// isolate (exposure-buffer.ts), and loaded by the warehouse loader into Postgres `events`, where attribution and
// reports read it. It is an ordinary track event that names no interaction and never reaches the visitor's session.

import type { CollectedEvent } from "../collect/event.ts";
import type { ListTeam } from "./interleave.ts";

/**
 * Positions an exposure lists at most: a page shows far fewer, and a 1,000-item re-rank's full list would make every
 * exposure ~40 KB. `item_count` keeps the answer's length.
 */
export const EXPOSURE_MAX_ITEMS = 100;

/** The track event name of an exposure. */
export const EXPOSURE_EVENT = "Recommendations Shown";
/** The source id exposures carry (no write key has it: collection never accepts it from a client). */
export const EXPOSURE_SOURCE = "lastmile";

export interface ExposureInput {
  recId: string;
  /** The object key the visitor was named by (`u:<userId>` / `a:<anonymousId>`). */
  userKey: string;
  placement: string;
  mode: "recommend" | "similar" | "rerank";
  productIds: readonly string[];
  /** Context products of the request (the product page's product). */
  context: readonly string[];
  /**
   * The answer's experiment: `unit` is what the visitor was assigned by; `variants`, for an interleaved list, the
   * ids of the variants its teams `a` and `b` stand for (a report reads them instead of the document's order).
   */
  experiment: {
    id: string;
    arm: string;
    version: string;
    unit?: string;
    teams?: readonly ListTeam[];
    variants?: readonly [string, string];
  } | null;
  configVersion: string;
  snapshotVersion: number | null;
  now: number;
}

/**
 * The exposure event of one answer. Its messageId derives from the recId, so a retried recording is deduplicated
 * like any client retry.
 */
export function exposureEvent(x: ExposureInput): CollectedEvent {
  const at = new Date(x.now).toISOString();
  const isUser = x.userKey.startsWith("u:");
  return {
    messageId: `exposure-${x.recId}`,
    type: "track",
    userId: isUser ? x.userKey.slice(2) : null,
    anonymousId: isUser ? null : x.userKey.slice(2),
    previousId: null,
    groupId: null,
    event: EXPOSURE_EVENT,
    name: null,
    properties: {
      rec_id: x.recId,
      placement: x.placement,
      mode: x.mode,
      context: [...x.context],
      // `items`, not `products`: the warehouse's first-product column and the interactions stay empty for it.
      items: x.productIds.slice(0, EXPOSURE_MAX_ITEMS).map((id, i) => ({
        product_id: id,
        position: i + 1,
        ...(x.experiment?.teams ? { team: x.experiment.teams[i] } : {}),
      })),
      item_count: x.productIds.length,
      experiment_id: x.experiment?.id ?? null,
      arm: x.experiment?.arm ?? null,
      ...(x.experiment?.unit ? { unit: x.experiment.unit } : {}),
      ...(x.experiment?.variants ? { variants: [...x.experiment.variants] } : {}),
      experiments_version: x.experiment?.version ?? null,
      config_version: x.configVersion,
      snapshot_version: x.snapshotVersion,
    },
    traits: {},
    context: { library: { name: "lastmile", version: "exposure/1" } },
    timestamp: at,
    originalTimestamp: null,
    sentAt: null,
    receivedAt: at,
    sourceId: EXPOSURE_SOURCE,
  };
}
