-- user_candidates becomes one row per user (0004). The lists written so far are kept: copied here as one row per
-- user (arrays in rank order) and copied back in 0005. The table is emptied so that 0004 can add its NOT NULL
-- columns, and its primary key is moved to (user_key) now: 0004 drops product_id (which would drop the old
-- two-column key with it) before it drops and re-adds the key by name.
CREATE TABLE "user_candidates_0003" AS
SELECT "user_key",
       array_agg("product_id" ORDER BY "rank", "product_id") AS "product_ids",
       array_agg("score" ORDER BY "rank", "product_id") AS "scores",
       CASE WHEN bool_or("reason" IS NOT NULL)
            THEN array_agg("reason" ORDER BY "rank", "product_id") END AS "reasons",
       max("model_version") AS "model_version"
FROM "user_candidates"
GROUP BY "user_key";
--> statement-breakpoint
DELETE FROM "user_candidates";
--> statement-breakpoint
ALTER TABLE "user_candidates" DROP CONSTRAINT "user_candidates_pkey";
--> statement-breakpoint
ALTER TABLE "user_candidates" ADD CONSTRAINT "user_candidates_pkey" PRIMARY KEY ("user_key");
