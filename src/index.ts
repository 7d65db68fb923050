// Lastmile's Worker entry: the HTTP API (Hono), the cron-driven batch loop and the Durable Object classes.
import { createApp } from "./app.ts";
import { runScheduled } from "./batch/cron.ts";

export { DeadLetters } from "./collect/dead-letters.ts";
export { PublishCoordinator } from "./publish/coordinator.ts";
export { Ranking } from "./rank/entrypoint.ts";
export { SessionState } from "./session/session-state.ts";

const app = createApp();

export default {
  fetch: app.fetch,
  async scheduled(controller, env, ctx) {
    ctx.waitUntil(runScheduled(controller, env));
  },
} satisfies ExportedHandler<Env>;
