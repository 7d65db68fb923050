// What must never be in a built bundle (or a response, or a log line): the local stack's keys, the values of
// `.dev.vars`, private keys, and connection strings carrying a password. Pure: the CLI (scripts/scan-bundle.ts)
// reads the files; tests call it on strings.

export interface SecretHit {
  /** Which rule matched (never the secret itself: the report must not leak what it found). */
  rule: string;
  /** Byte offset of the match in the text. */
  at: number;
}

/** Patterns of secrets whatever their value. */
const PATTERNS: ReadonlyArray<{ rule: string; re: RegExp }> = [
  { rule: "private key", re: /-----BEGIN [A-Z ]*PRIVATE KEY-----/g },
  // scheme://user:password@host — a connection string with its password (Postgres, Redis, …); not a template
  // that builds one (`${user}:${password}@`).
  { rule: "credentialed URL", re: /\b[a-z][a-z0-9+.-]*:\/\/[^\s:/@'"`${}]+:[^\s@'"`${}]{3,}@[^\s'"`]+/gi },
];

/**
 * Every occurrence of a known secret value (at least 8 characters: shorter values are not secrets worth the false
 * alarms) or of a secret-shaped pattern in `text`.
 */
export function findSecrets(text: string, secrets: ReadonlyArray<{ name: string; value: string }>): SecretHit[] {
  const hits: SecretHit[] = [];
  for (const { name, value } of secrets) {
    if (value.length < 8) continue;
    for (let at = text.indexOf(value); at !== -1; at = text.indexOf(value, at + 1)) hits.push({ rule: name, at });
  }
  for (const { rule, re } of PATTERNS) for (const m of text.matchAll(re)) hits.push({ rule, at: m.index ?? 0 });
  return hits.sort((a, b) => a.at - b.at);
}

/** Variable names whose values are secrets (the rest of `.dev.vars` — environment names, URLs of local proxies — is not). */
export const SECRET_NAME = /KEY|TOKEN|SECRET|PASSWORD|DATABASE_URL|SOURCES/;

/** The secret `KEY=value` lines of a `.dev.vars` / `.env` file (SECRET_NAME), quotes removed. */
export function envValues(text: string): Array<{ name: string; value: string }> {
  const out: Array<{ name: string; value: string }> = [];
  for (const line of text.split("\n")) {
    const m = /^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$/.exec(line);
    if (!m?.[1] || m[2] === undefined || !SECRET_NAME.test(m[1])) continue;
    const value = m[2].replace(/^(["'])(.*)\1$/, "$2");
    if (value) out.push({ name: `.dev.vars ${m[1]}`, value });
  }
  return out;
}
