// SessionState: one Durable Object per user or visitor, with SQLite storage. It holds the live session and is
// the durable write-ahead point of collection. Callers use RPC methods, never fetch routing.
import { DurableObject } from "cloudflare:workers";

export class SessionState extends DurableObject<Env> {
  /** Liveness probe for GET /health: one round trip into an object, touching no storage. */
  async ping(): Promise<{ ok: true }> {
    return { ok: true };
  }
}
