// Starts the real services the tests need, with the same launcher `npm run dev` uses, on their own ports and
// in a throwaway folder with its own database: tests never touch dev data. Connection settings reach Node
// tests through `inject("stack")` and Worker tests through the Miniflare bindings in vitest.config.ts.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { TestProject } from "vitest/node";
import { LOCAL_KEYS } from "../../scripts/lib/local-keys.ts";
import { startStack } from "../../scripts/lib/stack.ts";

export interface TestStack {
  DATABASE_URL: string;
  NEON_LOCAL_WS_PROXY: string;
  UPSTASH_REDIS_REST_URL: string;
  UPSTASH_REDIS_REST_TOKEN: string;
}

declare module "vitest" {
  export interface ProvidedContext {
    stack: TestStack;
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const stateDir = mkdtempSync(join(tmpdir(), "lastmile-test-"));
  const stack = await startStack({
    stateDir,
    database: "lastmile_test",
    redisToken: LOCAL_KEYS.redisToken,
    persistRedis: false,
  });
  project.provide("stack", stack.vars);
  return async () => {
    await stack.stop();
    rmSync(stateDir, { recursive: true, force: true });
  };
}
