// A refresh that finds the refresh lease held still runs the load (docs/api.md): a failed load fails the invocation,
// the cron's and the admin call's alike, as any failed step does.

import { createScheduledController } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { expect, it } from "vitest";
import { LOCAL_KEYS } from "../../scripts/lib/local-keys.ts";
import { createApp } from "../../src/app.ts";
import { runScheduled } from "../../src/batch/cron.ts";
import { REFRESH_LEASE } from "../../src/batch/refresh.ts";
import { createSchema, dropSchema } from "./publish-helpers.ts";

it("a failed load under a held refresh lease fails the cron invocation and the admin refresh", {
  timeout: 60_000,
}, async () => {
  const { schema, q } = await createSchema("rvskip");
  // Redis unreachable: every loader run fails.
  const testEnv = { ...env, DATABASE_SCHEMA: schema, UPSTASH_REDIS_REST_URL: "http://127.0.0.1:9" } as Env;
  try {
    // A refresh lease left behind (a refresh that lost its database before releasing it).
    await q("insert into leases (name, holder, expires_at) values ($1, 'lost', now() + interval '15 minutes')", [
      REFRESH_LEASE,
    ]);
    const cron = await runScheduled(
      createScheduledController({ scheduledTime: Date.now(), cron: "*/15 * * * *" }),
      testEnv,
    ).then(
      () => "fulfilled",
      () => "rejected",
    );
    const loads = await q<{ status: string }>("select status from batch_runs where kind = 'load' order by id");
    expect(loads.map((r) => r.status)).toEqual(["failed"]); // the load did fail, and is recorded so
    const res = await createApp().request(
      "/v1/admin/refresh",
      { method: "POST", headers: { authorization: `Bearer ${LOCAL_KEYS.adminKey}` } },
      testEnv,
    );
    const body = (await res.json()) as { report: { status: string; load: { status: string } } };
    expect(body.report.load.status).toBe("failed");
    expect({ cron, admin: res.status, refresh: body.report.status }).toEqual({
      cron: "rejected",
      admin: 500,
      refresh: "failed",
    });
  } finally {
    await dropSchema(schema);
  }
});
