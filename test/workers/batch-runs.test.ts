// batch_runs (src/batch/runs.ts): what an operator reads in a failed run's `error` is Postgres's own SQLSTATE and
// message, not drizzle's "Failed query: <statement> params: <values>" wrapper (which says only which statement
// failed, and carries the batch's data). A real refused statement through the real driver.
import { sql as sqlTag } from "drizzle-orm";
import { expect, it } from "vitest";
import { finishRun, startRun } from "../../src/batch/runs.ts";
import { sql, withDb } from "./batch-helpers.ts";

it("records a refused statement's SQLSTATE and message as the run's error", async () => {
  const error = await withDb((db) =>
    db.execute(sqlTag`select ${"not a date"}::date`).then(
      () => null,
      (e) => e,
    ),
  );
  expect(error).not.toBeNull();
  const id = await withDb((db) => startRun(db, { kind: "compute", trigger: "admin" }));
  await withDb((db) => finishRun(db, id, "failed", {}, error));
  const [row] = await sql<{ error: string }>("select error from batch_runs where id = $1", [id]);
  expect(row?.error).toMatch(/^22007 invalid input syntax for type date/);
  expect(row?.error).not.toContain("Failed query");
});
