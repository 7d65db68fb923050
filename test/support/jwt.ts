// Hand-built JWTs for the user-token tests (unit and Worker): header and claims exactly as given, HMAC-SHA-256 over
// them with WebCrypto, so each test changes one thing. Runs in Node and in workerd alike.
const encoder = new TextEncoder();

export function base64url(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/** base64url of a string's UTF-8 bytes. */
export const text = (s: string) => base64url(encoder.encode(s));

export async function hmac(secret: string, data: string): Promise<string> {
  const key = await crypto.subtle.importKey("raw", encoder.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, [
    "sign",
  ]);
  return base64url(new Uint8Array(await crypto.subtle.sign("HMAC", key, encoder.encode(data))));
}

/** A token with exactly this header and these claims (objects, or JSON text as given), signed with `secret`. */
export async function craft(
  header: Record<string, unknown> | string,
  claims: Record<string, unknown> | string,
  secret: string,
): Promise<string> {
  const json = (v: Record<string, unknown> | string) => (typeof v === "string" ? v : JSON.stringify(v));
  const body = `${text(json(header))}.${text(json(claims))}`;
  return `${body}.${await hmac(secret, body)}`;
}
