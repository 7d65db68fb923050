// The compute benchmark's data generator (bench/lib/simulate.ts) against the figures docs/benchmarks.md#compute
// gives for it: sessions of 7.5 events on average (the length formula's L = 8 gives 1 + 1/(e^(1/7) − 1)), ~90 % of
// the user ids with a session and so ~22 events per active user (for 20 events per id), and the users' countries
// GB 60 %, DE 15 %, FR 10 %, NL 5 %, US 10 %. Run F of that page had 1M events in 133,769 sessions (7.5 each) from
// 45,236 users (22.1 each). Generated here at a small size, with the default options, in a database of its own.
import { describe, expect, it } from "vitest";
import { simulateSessions } from "../../bench/lib/simulate.ts";
import { ownDatabase } from "../support/own-database.ts";

const own = ownDatabase("lastmile_test_bench_simulate");
const EVENTS = 40_000;
/** The default eventsPerUser: the generator draws users from EVENTS / 20 ids. */
const IDS = EVENTS / 20;

describe("simulateSessions: the documented distribution", () => {
  it("gives 7.5 events per session, ~90 % of the ids active at ~22 events each, and the documented countries", async () => {
    await own.pool.query("truncate interactions, events, catalog cascade");
    await own.pool.query(
      `insert into catalog (id, title, category)
       select 'p' || g, 'product ' || g, 'cat' || (g % 12) from generate_series(1, 600) g`,
    );
    const client = await own.pool.connect();
    let report: Awaited<ReturnType<typeof simulateSessions>>;
    try {
      report = await simulateSessions(client, { events: EVENTS, now: new Date("2026-11-26T12:00:00Z") });
    } finally {
      client.release();
    }
    expect(report.events).toBe(EVENTS);

    // Read back from the stored rows, not from the generator's own report.
    const { rows } = await own.pool.query(
      `select count(*)::int as events, count(distinct user_key)::int as users,
              count(distinct split_part(message_id, '-', 2))::int as sessions
       from events where message_id like 'sim-%'`,
    );
    const stored = rows[0] as { events: number; users: number; sessions: number };
    expect(stored).toEqual({ events: report.events, users: report.users, sessions: report.sessions });

    const perSession = stored.events / stored.sessions;
    expect(perSession).toBeGreaterThan(7.3);
    expect(perSession).toBeLessThan(7.7);
    const active = stored.users / IDS;
    expect(active).toBeGreaterThan(0.87);
    expect(active).toBeLessThan(0.93);
    const perUser = stored.events / stored.users;
    expect(perUser).toBeGreaterThan(21);
    expect(perUser).toBeLessThan(23);

    const { rows: countries } = await own.pool.query(
      `select country, count(*)::int as users from (select distinct user_key, country from events) u group by 1`,
    );
    const share = Object.fromEntries(
      (countries as Array<{ country: string; users: number }>).map((c) => [c.country, c.users / stored.users]),
    );
    const documented = { GB: 0.6, DE: 0.15, FR: 0.1, NL: 0.05, US: 0.1 };
    expect(Object.keys(share).sort()).toEqual(Object.keys(documented).sort());
    for (const [country, expected] of Object.entries(documented)) {
      expect(Math.abs((share[country] ?? 0) - expected), country).toBeLessThan(0.025);
    }
  }, 120_000);
});
