// The one logger: one JSON object per line, which Workers Logs indexes field by field.
type Level = "debug" | "info" | "warn" | "error";

export function log(level: Level, message: string, fields: Record<string, unknown> = {}): void {
  const line = JSON.stringify({ level, message, time: new Date().toISOString(), ...fields });
  if (level === "error") console.error(line);
  else if (level === "warn") console.warn(line);
  else console.log(line);
}

/** A message safe to log or return: no credentials from connection strings, bounded length. */
export function describeError(error: unknown): string {
  // Not only Errors: a WebSocket's ErrorEvent (the Neon driver's failed connect) has a message and no useful String().
  const message = error !== null && typeof error === "object" ? (error as { message?: unknown }).message : undefined;
  const text =
    error instanceof Error
      ? error.message || error.name
      : typeof message === "string" && message !== ""
        ? message
        : String(error);
  return text.replace(/\/\/[^/@\s]*@/g, "//***@").slice(0, 300);
}
