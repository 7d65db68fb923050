-- The lists kept by 0003, back in user_candidates as one row per user.
INSERT INTO "user_candidates" ("user_key", "product_ids", "scores", "reasons", "model_version")
SELECT "user_key", "product_ids", "scores", "reasons", "model_version" FROM "user_candidates_0003";
--> statement-breakpoint
DROP TABLE "user_candidates_0003";
