// `npm run experiments -- <command>`: the experiments document as a file (docs/experiments.md#the-document-as-a-file).
//   validate FILE          check a document locally, with the same validation as the admin API (no server)
//   push FILE              validate, then PUT it to the admin API: it becomes the next version
//   show                   the active document and its version
//   report ID [--model last|any] [--click-window S] [--purchase-window S]   an experiment's report (JSON)
// --url (default http://127.0.0.1:8787) and --admin-key (default $LASTMILE_ADMIN_KEY, else the local stack's key).
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { parseExperiments } from "../src/experiments/config.ts";
import { LOCAL_KEYS } from "./lib/local-keys.ts";

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    url: { type: "string", default: "http://127.0.0.1:8787" },
    "admin-key": { type: "string", default: process.env.LASTMILE_ADMIN_KEY ?? LOCAL_KEYS.adminKey },
    model: { type: "string" },
    "click-window": { type: "string" },
    "purchase-window": { type: "string" },
  },
});

/** The document in FILE, validated; exits 1 with its issues when invalid. */
export function readDocument(file: string): unknown {
  const document = JSON.parse(readFileSync(file, "utf8")) as unknown;
  const parsed = parseExperiments(document, "file");
  if (!parsed.ok) {
    for (const issue of parsed.issues) console.error(`${file}: ${issue.path || "(document)"}: ${issue.message}`);
    process.exit(1);
  }
  return document;
}

async function call(method: string, path: string, body?: unknown): Promise<void> {
  const res = await fetch(`${values.url}${path}`, {
    method,
    headers: {
      authorization: `Bearer ${values["admin-key"]}`,
      ...(body === undefined ? {} : { "content-type": "application/json" }),
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  console.log(text);
  if (!res.ok) process.exit(1);
}

const [command, arg] = positionals;
switch (command) {
  case "validate":
    if (!arg) throw new Error("validate FILE");
    readDocument(arg);
    console.log(`${arg}: valid`);
    break;
  case "push":
    if (!arg) throw new Error("push FILE");
    await call("PUT", "/v1/admin/experiments", readDocument(arg));
    break;
  case "show":
    await call("GET", "/v1/admin/experiments");
    break;
  case "report": {
    if (!arg) throw new Error("report ID");
    const q = new URLSearchParams();
    if (values.model) q.set("model", values.model);
    if (values["click-window"]) q.set("clickWindow", values["click-window"]);
    if (values["purchase-window"]) q.set("purchaseWindow", values["purchase-window"]);
    await call("GET", `/v1/admin/experiments/${encodeURIComponent(arg)}/report${q.size > 0 ? `?${q}` : ""}`);
    break;
  }
  default:
    console.error("usage: npm run experiments -- validate FILE | push FILE | show | report ID [--model any]");
    process.exit(2);
}
