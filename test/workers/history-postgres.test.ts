// History check under Postgres faults: a loader run that cannot reach the database at all (DATABASE_URL pointing at
// a port where nothing listens), and a loader run whose connections are terminated mid-load by
// pg_terminate_backend from a second connection. Acknowledged events reach Postgres exactly once all the same.
import { describe, expect, it } from "vitest";
import { dbSettings, sql } from "./batch-helpers.ts";
import {
  drainAndCheck,
  expectClean,
  flushSessions,
  load,
  runsEndedAfterEach,
  sendAll,
  userKeys,
} from "./history-helpers.ts";

const begin = runsEndedAfterEach();

/** The test database's URL with another port (nothing of ours listens on 9, the discard port). */
function deadDatabaseUrl(): string {
  const url = new URL(dbSettings().databaseUrl);
  url.port = "9";
  return url.toString();
}

describe("history: Postgres down and connections terminated", () => {
  it("a loader run against an unreachable database loads and acknowledges nothing; the next loads all", {
    timeout: 120_000,
  }, async () => {
    const run = await begin("pg-down", { users: 10, events: 250, seed: 202 });
    await sendAll(run, run.batches);
    await flushSessions(userKeys(run));

    const down = await load(run, { databaseUrl: deadDatabaseUrl() });
    expect(down.status).toBe("failed");
    expect(down.events).toBe(0);
    const [none] = await run.q<{ n: number }>("select count(*)::int as n from events where message_id like $1", [
      `${run.prefix}-%`,
    ]);
    expect(none?.n).toBe(0);
    expectClean(await drainAndCheck(run));
  });

  it("terminating the loader's backends mid-load costs retries, not events", { timeout: 120_000 }, async () => {
    const run = await begin("pg-kill", { users: 10, events: 300, seed: 203 });
    await sendAll(run, run.batches);
    await flushSessions(userKeys(run));

    // The loader's connections carry an application_name of their own: only they are terminated.
    const appName = `loader-${run.prefix}`;
    const url = new URL(dbSettings().databaseUrl);
    url.searchParams.set("application_name", appName);
    let terminated = 0;
    const terminate = async () => {
      const rows = await sql<{ ok: boolean }>(
        "select pg_terminate_backend(pid) as ok from pg_stat_activity where application_name = $1",
        [appName],
      );
      terminated += rows.filter((r) => r.ok).length;
    };
    const report = await load(run, {
      databaseUrl: url.toString(),
      batchSize: 25,
      hooks: {
        // Inside a batch's transaction (it must roll back and run again) …
        beforeCommit: async ({ batch, attempt }) => {
          if (attempt === 1 && batch % 3 === 2) await terminate();
        },
        // … and between a COMMIT and its XACK (the pool's idle connections die too).
        afterCommit: async ({ batch }) => {
          if (batch % 4 === 0) await terminate();
        },
      },
    });
    expect(terminated).toBeGreaterThan(0);
    // The run rides through: each broken transaction is retried on a new connection.
    expect(report).toMatchObject({ status: "ok", stoppedBy: "drained" });
    expect(report.retries).toBeGreaterThan(0);
    expectClean(await drainAndCheck(run));
  });
});
