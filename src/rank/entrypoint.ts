// The ranking API as RPC for Service Bindings: a storefront Worker binds to it
// (`services = [{ binding = "LASTMILE", service = "lastmile", entrypoint = "Ranking" }]`) and calls
// `env.LASTMILE.recommendations({...})` with no network hop and no key — a binding is only possible inside the same
// Cloudflare account, which is the trust boundary. The same validation, sources and answer as the HTTP API; invalid
// parameters throw an error whose message starts with the machine-readable code (e.g. "validation_failed: …"), and
// any other failure throws what the HTTP API answers for it (`internal_error: internal error`,
// `dependency_unavailable: …`), its cause logged as the HTTP API logs a 5xx, never passed to the caller.
import { WorkerEntrypoint } from "cloudflare:workers";
import { reportedError } from "../app.ts";
import { configOrThrow } from "../config.ts";
import { DEFAULT_RANKING_CONFIG } from "./config.ts";
import { depsFromEnv } from "./deps.ts";
import { parseRankParams, type RankParams, type RankRequest } from "./request.ts";
import { answer, loadHead, type RankAnswer } from "./service.ts";

export type RpcAnswer = Omit<RankAnswer, "timing"> & { timing: Record<string, number> };

export class Ranking extends WorkerEntrypoint<Env> {
  async #run(mode: RankRequest["mode"], params: RankParams): Promise<RpcAnswer> {
    try {
      // As the HTTP API: a misconfigured deployment is refused before anything is read.
      configOrThrow(this.env);
      const deps = depsFromEnv(this.env, this.ctx);
      const head = await loadHead(deps);
      const config = head.status === "ok" ? head.value.config : DEFAULT_RANKING_CONFIG;
      return await answer(deps, parseRankParams(mode, params ?? {}, config), head);
    } catch (error) {
      const reported = reportedError(error, crypto.randomUUID());
      throw new Error(`${reported.code}: ${reported.message}`);
    }
  }

  /** As GET /v1/recommendations. */
  recommendations(params: RankParams): Promise<RpcAnswer> {
    return this.#run("recommend", params);
  }

  /** As POST /v1/rank. */
  rank(params: RankParams): Promise<RpcAnswer> {
    return this.#run("rerank", params);
  }

  /** As GET /v1/similar/{productId}. */
  similar(params: RankParams & { productId: string }): Promise<RpcAnswer> {
    return this.#run("similar", params);
  }
}
