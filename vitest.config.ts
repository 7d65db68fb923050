// Test projects (docs/testing.md):
//   unit         pure functions in Node
//   integration  Node tests against the real Postgres and Redis started by test/support/global-setup.ts
//   workers      the Worker inside workerd (@cloudflare/vitest-plugin), bound to the same real services
//   e2e          the whole local stack as `npm run dev` runs it (wrangler dev), driven over HTTP
import { cloudflareTest } from "@cloudflare/vitest-plugin";
import { defineConfig } from "vitest/config";
import { localWorkerVars } from "./scripts/lib/local-keys.ts";

// Miniflare otherwise tries to fetch Request.cf data from the internet when it starts.
process.env.CLOUDFLARE_CF_FETCH_ENABLED = "false";

export default defineConfig({
  test: {
    globalSetup: ["./test/support/global-setup.ts"],
    // Logs of passing tests are noise; a failing test still shows its own.
    silent: "passed-only",
    projects: [
      {
        test: { name: "unit", include: ["test/unit/**/*.test.ts"], environment: "node" },
      },
      {
        test: {
          name: "integration",
          include: ["test/integration/**/*.test.ts"],
          environment: "node",
          testTimeout: 30_000,
          hookTimeout: 60_000,
        },
      },
      {
        test: {
          name: "e2e",
          include: ["test/e2e/**/*.test.ts"],
          environment: "node",
          testTimeout: 120_000,
          hookTimeout: 180_000,
        },
      },
      {
        plugins: [
          cloudflareTest(({ inject }) => ({
            wrangler: { configPath: "./wrangler.toml" },
            miniflare: {
              bindings: { ...localWorkerVars(), LASTMILE_ENV: "test", ...inject("stack") },
            },
          })),
        ],
        test: { name: "workers", include: ["test/workers/**/*.test.ts"], testTimeout: 30_000 },
      },
    ],
  },
});
