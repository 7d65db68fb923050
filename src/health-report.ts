// The shape of GET /health, apart from the probes themselves so that Node-side tools and tests can import it.

export type ProbeStatus = "ok" | "error" | "not_configured";

export interface ProbeResult {
  status: ProbeStatus;
  latencyMs: number;
  error?: { code: "timeout" | "failed" | "config"; message: string };
}

export interface HealthReport {
  status: "ok" | "degraded";
  service: "lastmile";
  environment: string;
  time: string;
  checks: Record<"postgres" | "redis" | "kv" | "durableObjects", ProbeResult>;
}
