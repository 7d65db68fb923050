// A versioned configuration document as KV stores it (the ranking config, the experiments document): the admin
// endpoint (src/admin/versioned-doc.ts) writes it, the ranking path's head read (src/rank/online-store.ts) decodes
// it. No Env, no bindings: Node tools read the same format.
import type { ConfigIssue } from "./rank/config.ts";

/** What is stored under the key: the document without its version, and when it was written. */
export interface StoredDoc {
  version: string;
  updatedAt: number;
  config: unknown;
}

/** Validates a document's content and stamps it with `version`. */
export type DocParser<T> = (
  input: unknown,
  version: string,
) => { ok: true; config: T } | { ok: false; issues: ConfigIssue[] };

/** Reads a stored document's parts, or null when the text is not one. */
export function parseStoredDoc(text: string | null): StoredDoc | null {
  if (text === null) return null;
  try {
    const doc = JSON.parse(text) as Partial<StoredDoc>;
    if (typeof doc.version !== "string") return null;
    return {
      version: doc.version,
      updatedAt: typeof doc.updatedAt === "number" ? doc.updatedAt : 0,
      config: doc.config,
    };
  } catch {
    return null;
  }
}

/** The decoder of a stored document: its parsed content, or the default (an unreadable one is reported). */
export function docDecoder<T extends { version: string }>(
  parse: DocParser<T>,
  fallback: T,
): (text: string | null) => { config: T; invalid: boolean } {
  return (text) => {
    if (text === null) return { config: fallback, invalid: false };
    const stored = parseStoredDoc(text);
    if (stored) {
      const parsed = parse(stored.config, stored.version);
      if (parsed.ok) return { config: parsed.config, invalid: false };
    }
    return { config: fallback, invalid: true };
  };
}
