ALTER TABLE "user_candidates" DROP CONSTRAINT "user_candidates_rank_check";--> statement-breakpoint
ALTER TABLE "user_candidates" ADD COLUMN "product_ids" text[] NOT NULL;--> statement-breakpoint
ALTER TABLE "user_candidates" ADD COLUMN "scores" double precision[] NOT NULL;--> statement-breakpoint
ALTER TABLE "user_candidates" ADD COLUMN "reasons" text[];--> statement-breakpoint
ALTER TABLE "user_candidates" DROP COLUMN "product_id";--> statement-breakpoint
ALTER TABLE "user_candidates" DROP COLUMN "score";--> statement-breakpoint
ALTER TABLE "user_candidates" DROP COLUMN "rank";--> statement-breakpoint
ALTER TABLE "user_candidates" DROP COLUMN "reason";--> statement-breakpoint
ALTER TABLE "user_candidates" DROP CONSTRAINT "user_candidates_pkey";
--> statement-breakpoint
ALTER TABLE "user_candidates" ADD CONSTRAINT "user_candidates_pkey" PRIMARY KEY("user_key");--> statement-breakpoint
ALTER TABLE "user_candidates" ADD CONSTRAINT "user_candidates_list_check" CHECK (cardinality("user_candidates"."product_ids") >= 1);--> statement-breakpoint
ALTER TABLE "user_candidates" ADD CONSTRAINT "user_candidates_scores_check" CHECK (cardinality("user_candidates"."scores") = cardinality("user_candidates"."product_ids"));--> statement-breakpoint
ALTER TABLE "user_candidates" ADD CONSTRAINT "user_candidates_reasons_check" CHECK ("user_candidates"."reasons" is null or cardinality("user_candidates"."reasons") = cardinality("user_candidates"."product_ids"));