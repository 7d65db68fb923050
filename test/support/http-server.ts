// A local HTTP server for the tests of HTTP clients (the benchmark harness's loads): each request is read whole
// (method, path, body) and handed to `answer`, which answers it on `res`.
import http from "node:http";
import type { AddressInfo } from "node:net";

export interface ReceivedRequest {
  method: string;
  path: string;
  body: string;
}

export async function startServer(
  answer: (request: ReceivedRequest, res: http.ServerResponse) => void,
): Promise<{ url: string; close: () => Promise<void> }> {
  const server = http.createServer((req, res) => {
    let body = "";
    req.on("data", (chunk: Buffer) => {
      body += chunk.toString();
    });
    req.on("end", () => answer({ method: req.method ?? "", path: req.url ?? "", body }, res));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
