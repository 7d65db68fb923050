CREATE TABLE "batch_runs" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"parent_id" bigint,
	"kind" text NOT NULL,
	"trigger" text NOT NULL,
	"status" text DEFAULT 'running' NOT NULL,
	"started_at" timestamp with time zone DEFAULT now() NOT NULL,
	"finished_at" timestamp with time zone,
	"stats" jsonb DEFAULT '{}'::jsonb NOT NULL,
	"error" text,
	CONSTRAINT "batch_runs_kind_check" CHECK ("batch_runs"."kind" in ('refresh', 'load', 'compute', 'publish')),
	CONSTRAINT "batch_runs_trigger_check" CHECK ("batch_runs"."trigger" in ('cron', 'admin')),
	CONSTRAINT "batch_runs_status_check" CHECK ("batch_runs"."status" in ('running', 'ok', 'failed', 'skipped'))
);
--> statement-breakpoint
CREATE TABLE "catalog" (
	"id" text PRIMARY KEY NOT NULL,
	"title" text NOT NULL,
	"category" text,
	"brand" text,
	"tags" text[] DEFAULT '{}'::text[] NOT NULL,
	"price" double precision,
	"currency" text,
	"in_stock" boolean DEFAULT true NOT NULL,
	"visible" boolean DEFAULT true NOT NULL,
	"attributes" jsonb DEFAULT '{}'::jsonb NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "catalog_price_check" CHECK ("catalog"."price" is null or "catalog"."price" >= 0)
);
--> statement-breakpoint
CREATE TABLE "events" (
	"message_id" text PRIMARY KEY NOT NULL,
	"user_key" text NOT NULL,
	"user_id" text,
	"anonymous_id" text,
	"type" text NOT NULL,
	"event" text,
	"name" text,
	"product_id" text,
	"previous_id" text,
	"group_id" text,
	"properties" jsonb DEFAULT '{}'::jsonb NOT NULL,
	"traits" jsonb DEFAULT '{}'::jsonb NOT NULL,
	"context" jsonb DEFAULT '{}'::jsonb NOT NULL,
	"country" text,
	"source_id" text NOT NULL,
	"event_time" timestamp with time zone NOT NULL,
	"received_at" timestamp with time zone NOT NULL,
	"loaded_at" timestamp with time zone DEFAULT now() NOT NULL,
	"stream_id" text,
	CONSTRAINT "events_type_check" CHECK ("events"."type" in ('track', 'page', 'screen', 'identify', 'alias', 'group'))
);
--> statement-breakpoint
CREATE TABLE "identities" (
	"anonymous_id" text NOT NULL,
	"user_id" text NOT NULL,
	"first_seen" timestamp with time zone NOT NULL,
	"last_seen" timestamp with time zone NOT NULL,
	CONSTRAINT "identities_pkey" PRIMARY KEY("anonymous_id","user_id")
);
--> statement-breakpoint
CREATE TABLE "interactions" (
	"message_id" text NOT NULL,
	"position" integer NOT NULL,
	"user_key" text NOT NULL,
	"product_id" text NOT NULL,
	"kind" text NOT NULL,
	"weight" double precision NOT NULL,
	"quantity" integer,
	"price" double precision,
	"order_id" text,
	"event_time" timestamp with time zone NOT NULL,
	CONSTRAINT "interactions_pkey" PRIMARY KEY("message_id","position"),
	CONSTRAINT "interactions_kind_check" CHECK ("interactions"."kind" in ('search', 'list_view', 'click', 'view', 'add_to_cart', 'remove_from_cart', 'wishlist', 'cart_view', 'checkout', 'purchase')),
	CONSTRAINT "interactions_position_check" CHECK ("interactions"."position" >= 0)
);
--> statement-breakpoint
CREATE TABLE "item_neighbors" (
	"kind" text NOT NULL,
	"product_id" text NOT NULL,
	"neighbor_id" text NOT NULL,
	"score" double precision NOT NULL,
	"rank" integer NOT NULL,
	"support" double precision,
	"confidence" double precision,
	"lift" double precision,
	"model_version" bigint NOT NULL,
	CONSTRAINT "item_neighbors_pkey" PRIMARY KEY("kind","product_id","neighbor_id"),
	CONSTRAINT "item_neighbors_kind_check" CHECK ("item_neighbors"."kind" in ('similar', 'bought_together')),
	CONSTRAINT "item_neighbors_rank_check" CHECK ("item_neighbors"."rank" >= 1),
	CONSTRAINT "item_neighbors_self_check" CHECK ("item_neighbors"."product_id" <> "item_neighbors"."neighbor_id")
);
--> statement-breakpoint
CREATE TABLE "leases" (
	"name" text PRIMARY KEY NOT NULL,
	"holder" text NOT NULL,
	"acquired_at" timestamp with time zone DEFAULT now() NOT NULL,
	"expires_at" timestamp with time zone NOT NULL
);
--> statement-breakpoint
CREATE TABLE "model_versions" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"model" text NOT NULL,
	"version" text NOT NULL,
	"source" text DEFAULT 'internal' NOT NULL,
	"status" text DEFAULT 'building' NOT NULL,
	"params" jsonb DEFAULT '{}'::jsonb NOT NULL,
	"stats" jsonb DEFAULT '{}'::jsonb NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"finished_at" timestamp with time zone,
	CONSTRAINT "model_versions_source_check" CHECK ("model_versions"."source" in ('internal', 'external')),
	CONSTRAINT "model_versions_status_check" CHECK ("model_versions"."status" in ('building', 'ready', 'published', 'failed', 'retired'))
);
--> statement-breakpoint
CREATE TABLE "popular_items" (
	"list" text NOT NULL,
	"segment" text NOT NULL,
	"product_id" text NOT NULL,
	"score" double precision NOT NULL,
	"rank" integer NOT NULL,
	"model_version" bigint NOT NULL,
	CONSTRAINT "popular_items_pkey" PRIMARY KEY("list","segment","product_id"),
	CONSTRAINT "popular_items_list_check" CHECK ("popular_items"."list" in ('popular', 'trending')),
	CONSTRAINT "popular_items_segment_check" CHECK ("popular_items"."segment" = 'global' or "popular_items"."segment" ~ '^(category|country):.+'),
	CONSTRAINT "popular_items_rank_check" CHECK ("popular_items"."rank" >= 1)
);
--> statement-breakpoint
CREATE TABLE "published_keys" (
	"key" text PRIMARY KEY NOT NULL,
	"content_hash" text NOT NULL,
	"version" text NOT NULL,
	"published_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "user_candidates" (
	"user_key" text NOT NULL,
	"product_id" text NOT NULL,
	"score" double precision NOT NULL,
	"rank" integer NOT NULL,
	"reason" text,
	"model_version" bigint NOT NULL,
	CONSTRAINT "user_candidates_pkey" PRIMARY KEY("user_key","product_id"),
	CONSTRAINT "user_candidates_rank_check" CHECK ("user_candidates"."rank" >= 1)
);
--> statement-breakpoint
ALTER TABLE "batch_runs" ADD CONSTRAINT "batch_runs_parent_id_batch_runs_id_fk" FOREIGN KEY ("parent_id") REFERENCES "public"."batch_runs"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "item_neighbors" ADD CONSTRAINT "item_neighbors_model_version_model_versions_id_fk" FOREIGN KEY ("model_version") REFERENCES "public"."model_versions"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "popular_items" ADD CONSTRAINT "popular_items_model_version_model_versions_id_fk" FOREIGN KEY ("model_version") REFERENCES "public"."model_versions"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "user_candidates" ADD CONSTRAINT "user_candidates_model_version_model_versions_id_fk" FOREIGN KEY ("model_version") REFERENCES "public"."model_versions"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "batch_runs_kind_started_idx" ON "batch_runs" USING btree ("kind","started_at");--> statement-breakpoint
CREATE INDEX "batch_runs_parent_idx" ON "batch_runs" USING btree ("parent_id");--> statement-breakpoint
CREATE INDEX "catalog_category_idx" ON "catalog" USING btree ("category");--> statement-breakpoint
CREATE INDEX "catalog_updated_at_idx" ON "catalog" USING btree ("updated_at");--> statement-breakpoint
CREATE INDEX "events_event_time_brin" ON "events" USING brin ("event_time");--> statement-breakpoint
CREATE INDEX "events_loaded_at_brin" ON "events" USING brin ("loaded_at");--> statement-breakpoint
CREATE INDEX "events_user_time_idx" ON "events" USING btree ("user_key","event_time");--> statement-breakpoint
CREATE INDEX "identities_user_idx" ON "identities" USING btree ("user_id");--> statement-breakpoint
CREATE INDEX "interactions_product_idx" ON "interactions" USING btree ("product_id");--> statement-breakpoint
CREATE INDEX "interactions_user_time_idx" ON "interactions" USING btree ("user_key","event_time");--> statement-breakpoint
CREATE INDEX "interactions_event_time_brin" ON "interactions" USING brin ("event_time");--> statement-breakpoint
CREATE UNIQUE INDEX "model_versions_model_version_key" ON "model_versions" USING btree ("model","version");--> statement-breakpoint
CREATE INDEX "model_versions_model_created_idx" ON "model_versions" USING btree ("model","created_at");--> statement-breakpoint
CREATE INDEX "published_keys_published_at_idx" ON "published_keys" USING btree ("published_at");