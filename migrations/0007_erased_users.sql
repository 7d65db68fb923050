CREATE TABLE "erased_users" (
	"user_key" text PRIMARY KEY NOT NULL,
	"subject" text NOT NULL,
	"erased_at" timestamp with time zone DEFAULT now() NOT NULL,
	"suppressed" boolean DEFAULT false NOT NULL
);
--> statement-breakpoint
CREATE INDEX "erased_users_subject_idx" ON "erased_users" USING btree ("subject");