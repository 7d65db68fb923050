ALTER TABLE "batch_runs" DROP CONSTRAINT "batch_runs_status_check";--> statement-breakpoint
ALTER TABLE "batch_runs" ADD COLUMN "lease" text;--> statement-breakpoint
ALTER TABLE "batch_runs" ADD COLUMN "holder" text;--> statement-breakpoint
CREATE UNIQUE INDEX "batch_runs_holder_kind_idx" ON "batch_runs" USING btree ("holder","kind") WHERE "batch_runs"."holder" is not null;--> statement-breakpoint
CREATE INDEX "batch_runs_running_lease_idx" ON "batch_runs" USING btree ("lease") WHERE "batch_runs"."status" = 'running';--> statement-breakpoint
ALTER TABLE "batch_runs" ADD CONSTRAINT "batch_runs_status_check" CHECK ("batch_runs"."status" in ('running', 'ok', 'failed', 'skipped', 'abandoned'));