// The warehouse schema (Postgres / Neon), in drizzle. `npm run db:generate -- --name <what>` turns changes here into
// SQL migrations under migrations/; `npm run db:migrate` applies them. docs/data-model.md explains every table and
// every index; keep the two in step.
//
// Four groups:
//   inputs       catalog (admin upsert / import), events + interactions + identities (the loader, the seed)
//   outputs      item_neighbors, user_candidates, popular_items (the SQL recommenders), model_versions
//   operations   batch_runs, leases, published_keys, sync_state
// Enumerated text columns carry CHECK constraints built from the exported lists below, so a new value is a schema
// change (a migration), never a silent typo.
import { sql } from "drizzle-orm";
import {
  bigint,
  bigserial,
  boolean,
  check,
  customType,
  doublePrecision,
  index,
  integer,
  jsonb,
  type PgColumn,
  pgTable,
  primaryKey,
  text,
  timestamp,
  uniqueIndex,
} from "drizzle-orm/pg-core";
import { EVENT_TYPES } from "../collect/event.ts";
import { INTERACTION_KINDS } from "../session/weights.ts";

/** `col in ('a', 'b', …)` for a CHECK constraint. The values are our own constants, never input. */
function oneOf(column: PgColumn, values: readonly string[]) {
  const list = values.map((v) => `'${v.replaceAll("'", "''")}'`).join(", ");
  return sql`${column} in (${sql.raw(list)})`;
}

const createdAt = () => timestamp("created_at", { withTimezone: true }).notNull().defaultNow();

// ───────────────────────────── inputs ─────────────────────────────

/**
 * The product catalogue: what the recommenders may recommend and what the publisher ships to the edge (stock,
 * visibility, price). Written by `PUT /v1/admin/catalog`, `npm run catalog:import` and the demo seed
 * (src/batch/catalog.ts); `updated_at` moves only when a row really changed, so the publisher can ship changes.
 */
export const catalog = pgTable(
  "catalog",
  {
    id: text("id").primaryKey(),
    title: text("title").notNull(),
    category: text("category"),
    brand: text("brand"),
    tags: text("tags").array().notNull().default(sql`'{}'::text[]`),
    /** In `currency` units. Double, not numeric: the ranking path wants a JS number, never a string. */
    price: doublePrecision("price"),
    /** ISO 4217 code. */
    currency: text("currency"),
    inStock: boolean("in_stock").notNull().default(true),
    visible: boolean("visible").notNull().default(true),
    attributes: jsonb("attributes").$type<Record<string, unknown>>().notNull().default({}),
    createdAt: createdAt(),
    updatedAt: timestamp("updated_at", { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [
    // Recommenders restrict candidates to a category (popular per category, same-category similar items).
    index("catalog_category_idx").on(t.category),
    // The publisher ships the rows changed since its last run: a range scan on updated_at.
    index("catalog_updated_at_idx").on(t.updatedAt),
    check("catalog_price_check", sql`${t.price} is null or ${t.price} >= 0`),
  ],
);

/**
 * One row per accepted message (the `CollectedEvent` of src/collect/event.ts), loaded from the Redis stream by
 * src/batch/loader.ts or written by the seed. `message_id` is the primary key: loading the same message twice
 * (a re-delivered stream entry, a re-run seed) inserts nothing (`ON CONFLICT DO NOTHING`).
 */
export const events = pgTable(
  "events",
  {
    messageId: text("message_id").primaryKey(),
    /** The SessionState object that recorded it (`u:<userId>` / `a:<anonymousId>`; the merge target if merged). */
    userKey: text("user_key").notNull(),
    userId: text("user_id"),
    anonymousId: text("anonymous_id"),
    type: text("type", { enum: EVENT_TYPES }).notNull(),
    /** track: the event name ("Order Completed"). */
    event: text("event"),
    /** page/screen: the page name. */
    name: text("name"),
    /** The first product of the event (`product_id`, or `products[0]`), for convenience; all are in interactions. */
    productId: text("product_id"),
    /** alias: the id merged into `user_id`. */
    previousId: text("previous_id"),
    groupId: text("group_id"),
    properties: jsonb("properties").$type<Record<string, unknown>>().notNull().default({}),
    traits: jsonb("traits").$type<Record<string, unknown>>().notNull().default({}),
    context: jsonb("context").$type<Record<string, unknown>>().notNull().default({}),
    /** ISO 3166-1 alpha-2 from `context.location.country` when it is a two-letter code (per-country segments). */
    country: text("country"),
    sourceId: text("source_id").notNull(),
    /** When it happened (skew-corrected by collection). */
    eventTime: timestamp("event_time", { withTimezone: true }).notNull(),
    receivedAt: timestamp("received_at", { withTimezone: true }).notNull(),
    loadedAt: timestamp("loaded_at", { withTimezone: true }).notNull().defaultNow(),
    /** The Redis stream entry id it was loaded from (null for seeded or backfilled rows). */
    streamId: text("stream_id"),
  },
  (t) => [
    // Events arrive roughly in time order and are never updated, so the heap is (nearly) sorted by event_time:
    // a BRIN index (one min/max summary per block range, a few KB for millions of rows) prunes a time-window scan
    // to the matching block ranges at almost no write cost, where a B-tree would be ~30% of the table and slow
    // every insert. Late events only widen a few ranges.
    index("events_event_time_brin").using("brin", t.eventTime),
    // Same for load order (perfectly correlated with the heap): "what arrived since the last compute".
    index("events_loaded_at_brin").using("brin", t.loadedAt),
    // A user's history in time order (profiles, deletion, per-user features).
    index("events_user_time_idx").on(t.userKey, t.eventTime),
    check("events_type_check", oneOf(t.type, EVENT_TYPES)),
  ],
);

/**
 * Product-level rows derived from events through src/session/ecommerce.ts (`interpret`) — the same mapping the
 * live session uses — one per interaction that names a product. This is what the recommenders scan.
 * `position` is the interaction's index in `interpret(event)`, so (message_id, position) is stable and a re-load
 * inserts nothing.
 */
export const interactions = pgTable(
  "interactions",
  {
    messageId: text("message_id").notNull(),
    position: integer("position").notNull(),
    userKey: text("user_key").notNull(),
    productId: text("product_id").notNull(),
    kind: text("kind", { enum: INTERACTION_KINDS }).notNull(),
    /** AFFINITY_WEIGHTS[kind] (src/session/weights.ts): the live session's weight for the same interaction. */
    weight: doublePrecision("weight").notNull(),
    quantity: integer("quantity"),
    price: doublePrecision("price"),
    /** Order Completed: `order_id` (baskets for bought-together); null otherwise. */
    orderId: text("order_id"),
    eventTime: timestamp("event_time", { withTimezone: true }).notNull(),
  },
  (t) => [
    primaryKey({ name: "interactions_pkey", columns: [t.messageId, t.position] }),
    // Item-to-item models and "who interacted with this product" start from a product.
    index("interactions_product_idx").on(t.productId),
    // Per-user candidates and sequences read one user's interactions in time order.
    index("interactions_user_time_idx").on(t.userKey, t.eventTime),
    // Windowed scans (trending, last N days), as for events.
    index("interactions_event_time_brin").using("brin", t.eventTime),
    check("interactions_kind_check", oneOf(t.kind, INTERACTION_KINDS)),
    check("interactions_position_check", sql`${t.position} >= 0`),
  ],
);

/**
 * Who is who: an anonymous id (or, for alias, any previous id) seen together with a user id — from identify,
 * alias and every event that carries both. Lets the models join a visitor's pre-login history to the user.
 */
export const identities = pgTable(
  "identities",
  {
    anonymousId: text("anonymous_id").notNull(),
    userId: text("user_id").notNull(),
    firstSeen: timestamp("first_seen", { withTimezone: true }).notNull(),
    lastSeen: timestamp("last_seen", { withTimezone: true }).notNull(),
  },
  (t) => [
    primaryKey({ name: "identities_pkey", columns: [t.anonymousId, t.userId] }),
    // The other direction: every anonymous id of a user (history stitching, deletion).
    index("identities_user_idx").on(t.userId),
  ],
);

// ───────────────────────────── recommender outputs ─────────────────────────────

export const MODEL_SOURCES = ["internal", "external"] as const;
/** building → ready → published (or failed); retired once a newer version replaced it everywhere. */
export const MODEL_STATUSES = ["building", "ready", "published", "failed", "retired"] as const;

/**
 * One row per computed (or externally supplied) version of a model. Output rows point at the version that
 * produced them; the publisher records which version each KV snapshot holds, so a rollback knows what it returns to.
 */
export const modelVersions = pgTable(
  "model_versions",
  {
    id: bigserial("id", { mode: "number" }).primaryKey(),
    /** e.g. "co_visitation", "bought_together", "user_candidates", "popular". */
    model: text("model").notNull(),
    /** Human label, unique per model (e.g. "2026-11-26T12:15Z" or an external model's tag). */
    version: text("version").notNull(),
    source: text("source", { enum: MODEL_SOURCES }).notNull().default("internal"),
    status: text("status", { enum: MODEL_STATUSES }).notNull().default("building"),
    params: jsonb("params").$type<Record<string, unknown>>().notNull().default({}),
    stats: jsonb("stats").$type<Record<string, unknown>>().notNull().default({}),
    createdAt: createdAt(),
    finishedAt: timestamp("finished_at", { withTimezone: true }),
  },
  (t) => [
    uniqueIndex("model_versions_model_version_key").on(t.model, t.version),
    // "The latest ready version of model X".
    index("model_versions_model_created_idx").on(t.model, t.createdAt),
    check("model_versions_source_check", oneOf(t.source, MODEL_SOURCES)),
    check("model_versions_status_check", oneOf(t.status, MODEL_STATUSES)),
  ],
);

/**
 * The model_versions.id that wrote the row. Deliberately not a foreign key: the recommenders write millions of
 * output rows per run, and a per-row RI check roughly tripled that insert's time (8.3 s against 3.1 s per 1M
 * user_candidates rows, measured; docs/recommenders.md). The writers (src/batch/compute.ts and the external-model
 * contract) insert the version row first; nothing deletes a version that still has rows.
 */
const modelVersion = () => bigint("model_version", { mode: "number" }).notNull();

export const NEIGHBOR_KINDS = ["similar", "bought_together", "next"] as const;

/**
 * Item-to-item lists: `similar` (co-visitation / content), `bought_together` (association rules) and `next`
 * (sequential rules: what visitors went on to after the product). The statistics columns are filled by the models
 * that have them (support/confidence/lift for association rules; support = the number of pairs counted for `next`).
 */
export const itemNeighbors = pgTable(
  "item_neighbors",
  {
    kind: text("kind", { enum: NEIGHBOR_KINDS }).notNull(),
    productId: text("product_id").notNull(),
    neighborId: text("neighbor_id").notNull(),
    score: doublePrecision("score").notNull(),
    /** 1 = best neighbour of product_id for this kind. */
    rank: integer("rank").notNull(),
    support: doublePrecision("support"),
    confidence: doublePrecision("confidence"),
    lift: doublePrecision("lift"),
    modelVersion: modelVersion(),
  },
  (t) => [
    // The primary key's prefix (kind, product_id) is the publisher's read: one product's list.
    primaryKey({ name: "item_neighbors_pkey", columns: [t.kind, t.productId, t.neighborId] }),
    check("item_neighbors_kind_check", oneOf(t.kind, NEIGHBOR_KINDS)),
    check("item_neighbors_rank_check", sql`${t.rank} >= 1`),
    check("item_neighbors_self_check", sql`${t.productId} <> ${t.neighborId}`),
  ],
);

/**
 * Per-user candidate lists (batch half of the ranking): one row per user, the list as three parallel arrays, best
 * first (position 1 = rank 1). The publisher ships one KV key per user. One row per user rather than one per
 * candidate: a full rebuild writes tens of thousands of rows instead of millions (docs/benchmarks.md#compute).
 */
export const userCandidates = pgTable(
  "user_candidates",
  {
    userKey: text("user_key").notNull(),
    /** Candidate product ids (catalog.id), best first, each at most once. */
    productIds: text("product_ids").array().notNull(),
    /** scores[i] is product_ids[i]'s score. */
    scores: doublePrecision("scores").array().notNull(),
    /**
     * reasons[i] is a code the ranking path can show for product_ids[i] ("similar_to:<product>",
     * "bought_together:<product>", "category:<c>", "popular", …; an element may be null). Null: no reasons.
     */
    reasons: text("reasons").array(),
    modelVersion: modelVersion(),
  },
  (t) => [
    // Users in key order for the publisher's batched reads.
    primaryKey({ name: "user_candidates_pkey", columns: [t.userKey] }),
    check("user_candidates_list_check", sql`cardinality(${t.productIds}) >= 1`),
    check("user_candidates_scores_check", sql`cardinality(${t.scores}) = cardinality(${t.productIds})`),
    check(
      "user_candidates_reasons_check",
      sql`${t.reasons} is null or cardinality(${t.reasons}) = cardinality(${t.productIds})`,
    ),
  ],
);

export const POPULAR_LISTS = ["popular", "trending"] as const;

/**
 * Popular and trending items per segment: `global`, `category:<normalised category>`, `country:<ISO alpha-2>`.
 * Cold-start and fallback lists of the ranking path.
 */
export const popularItems = pgTable(
  "popular_items",
  {
    list: text("list", { enum: POPULAR_LISTS }).notNull(),
    segment: text("segment").notNull(),
    productId: text("product_id").notNull(),
    score: doublePrecision("score").notNull(),
    rank: integer("rank").notNull(),
    modelVersion: modelVersion(),
  },
  (t) => [
    primaryKey({ name: "popular_items_pkey", columns: [t.list, t.segment, t.productId] }),
    check("popular_items_list_check", oneOf(t.list, POPULAR_LISTS)),
    check("popular_items_segment_check", sql`${t.segment} = 'global' or ${t.segment} ~ '^(category|country):.+'`),
    check("popular_items_rank_check", sql`${t.rank} >= 1`),
  ],
);

// ───────────────────────────── operations ─────────────────────────────

export const BATCH_RUN_KINDS = ["refresh", "load", "compute", "publish"] as const;
export const BATCH_RUN_TRIGGERS = ["cron", "admin"] as const;
/**
 * `skipped`: another run held the lease, so this one did nothing (runs never overlap). `abandoned`: the run stopped
 * without closing its row (its Worker was stopped or crashed); the next run that took its lease closed it.
 */
export const BATCH_RUN_STATUSES = ["running", "ok", "failed", "skipped", "abandoned"] as const;
export type BatchRunKind = (typeof BATCH_RUN_KINDS)[number];
export type BatchRunTrigger = (typeof BATCH_RUN_TRIGGERS)[number];
export type BatchRunStatus = (typeof BATCH_RUN_STATUSES)[number];

/**
 * Every run of the batch loop: a `refresh` (load → compute → publish) and its steps (`parent_id` points at the
 * refresh), or a step run alone. `stats` holds what the step measured (rows loaded, keys written, lag, …).
 */
export const batchRuns = pgTable(
  "batch_runs",
  {
    id: bigserial("id", { mode: "number" }).primaryKey(),
    parentId: bigint("parent_id", { mode: "number" }).references((): PgColumn => batchRuns.id),
    kind: text("kind", { enum: BATCH_RUN_KINDS }).notNull(),
    trigger: text("trigger", { enum: BATCH_RUN_TRIGGERS }).notNull(),
    status: text("status", { enum: BATCH_RUN_STATUSES }).notNull().default("running"),
    startedAt: timestamp("started_at", { withTimezone: true }).notNull().defaultNow(),
    finishedAt: timestamp("finished_at", { withTimezone: true }),
    stats: jsonb("stats").$type<Record<string, unknown>>().notNull().default({}),
    error: text("error"),
    /** The lease the run held (`refresh`, `loader`); null for runs that hold none (publish, skipped runs). */
    lease: text("lease"),
    /** The run's lease holder id: a retried start finds its row by it, and a later holder closes it if abandoned. */
    holder: text("holder"),
  },
  (t) => [
    // "The last N runs of kind X" (admin status, freshness).
    index("batch_runs_kind_started_idx").on(t.kind, t.startedAt),
    index("batch_runs_parent_idx").on(t.parentId),
    // One row per run and kind: a start retried after a lost answer gets the row it inserted.
    uniqueIndex("batch_runs_holder_kind_idx").on(t.holder, t.kind).where(sql`${t.holder} is not null`),
    // The rows a new lease holder closes when their run never finished.
    index("batch_runs_running_lease_idx").on(t.lease).where(sql`${t.status} = 'running'`),
    check("batch_runs_kind_check", oneOf(t.kind, BATCH_RUN_KINDS)),
    check("batch_runs_trigger_check", oneOf(t.trigger, BATCH_RUN_TRIGGERS)),
    check("batch_runs_status_check", oneOf(t.status, BATCH_RUN_STATUSES)),
  ],
);

/**
 * Mutual exclusion between runs (cron runs may be late, duplicated or overlap an admin refresh). A run takes the
 * row with `INSERT … ON CONFLICT DO UPDATE … WHERE expires_at < now()`, extends it while it works and deletes it
 * at the end; a crashed holder's lease simply expires (src/batch/lease.ts).
 */
export const leases = pgTable("leases", {
  name: text("name").primaryKey(),
  holder: text("holder").notNull(),
  acquiredAt: timestamp("acquired_at", { withTimezone: true }).notNull().defaultNow(),
  expiresAt: timestamp("expires_at", { withTimezone: true }).notNull(),
});

/**
 * What the publisher last wrote to Workers KV per key, so a run writes only keys whose content changed
 * (KV: 1 write/s per key, ≤ 1,000 binding operations per invocation).
 */
export const publishedKeys = pgTable(
  "published_keys",
  {
    key: text("key").primaryKey(),
    /** Hash of the value written (hex); equal hash → skip the write. */
    contentHash: text("content_hash").notNull(),
    /** The snapshot version the value was written under. */
    version: text("version").notNull(),
    publishedAt: timestamp("published_at", { withTimezone: true }).notNull().defaultNow(),
  },
  // Keys not rewritten since a given run (stale keys to expire or delete from KV).
  (t) => [index("published_keys_published_at_idx").on(t.publishedAt)],
);

/**
 * Small named records of the batch loop's progress: watermarks, cursors, published versions, the last
 * cron run. One row per name; `value` is the record itself.
 */
export const syncState = pgTable("sync_state", {
  name: text("name").primaryKey(),
  value: jsonb("value").notNull(),
  updatedAt: timestamp("updated_at", { withTimezone: true }).notNull().defaultNow(),
});

// ───────────────────────────── privacy ─────────────────────────────

/** A 64-bit transaction id (Postgres `xid8`), as text: only ever compared in SQL. */
const xid8 = customType<{ data: string }>({ dataType: () => "xid8" });

/**
 * Users erased by `DELETE /v1/admin/users/:id` (docs/privacy.md): one row per session key (`u:<userId>`,
 * `a:<anonymousId>`) the erasure covered, under the key the admin named (`subject`). The loader drops stream
 * entries of a listed key received before `erased_at` (events that were already on their way when the erasure ran);
 * the verifier finds every key of a subject again after its data and identity links are gone.
 */
export const erasedUsers = pgTable(
  "erased_users",
  {
    userKey: text("user_key").primaryKey(),
    /** The key the erasure was asked for; equal to `user_key` for that key itself. */
    subject: text("subject").notNull(),
    erasedAt: timestamp("erased_at", { withTimezone: true }).notNull().defaultNow(),
    /**
     * The erasing transaction's id. A reader that worked from an older snapshot (the user_candidates lists, staged
     * without the erasure lock) asks `pg_visible_in_snapshot(erased_xid, its snapshot)`: false means the erasure
     * committed after that reader had read the user's rows, so what it derived from them must not be written.
     */
    erasedXid: xid8("erased_xid").notNull().default(sql`pg_current_xact_id()`),
    /** Whether new events of the key are refused at ingest too (the session object holds the live flag). */
    suppressed: boolean("suppressed").notNull().default(false),
  },
  (t) => [index("erased_users_subject_idx").on(t.subject)],
);
