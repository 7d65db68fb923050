ALTER TABLE "item_neighbors" DROP CONSTRAINT "item_neighbors_model_version_model_versions_id_fk";
--> statement-breakpoint
ALTER TABLE "popular_items" DROP CONSTRAINT "popular_items_model_version_model_versions_id_fk";
--> statement-breakpoint
ALTER TABLE "user_candidates" DROP CONSTRAINT "user_candidates_model_version_model_versions_id_fk";
