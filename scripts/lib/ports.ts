// Port helpers for the local stack: pick free loopback ports, and fail early with a clear message when a
// fixed port (the Worker's 8787) is already taken.
import { createServer } from "node:net";

export const LOOPBACK = "127.0.0.1";

/** Asks the kernel for a free loopback port. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.once("error", reject);
    server.listen(0, LOOPBACK, () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/** True when nothing listens on host:port (we can bind it ourselves). */
export function portIsFree(port: number, host = LOOPBACK): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.unref();
    server.once("error", () => resolve(false));
    server.listen(port, host, () => server.close(() => resolve(true)));
  });
}

export async function assertPortFree(port: number, what: string, host = LOOPBACK): Promise<void> {
  if (!(await portIsFree(port, host))) {
    throw new StackError(
      `port ${host}:${port} (${what}) is already in use. Stop whatever listens there ` +
        `(\`ss -ltnp 'sport = :${port}'\` shows it) or choose another port.`,
    );
  }
}

/** An error whose message is meant for the person running the stack: printed without a stack trace. */
export class StackError extends Error {
  override name = "StackError";
}
