// `npm run eval -- <suite> [--json]`: offline relevance evaluation on public data sets, calling the same
// ranking functions the Worker deploys. `--list` prints the registered suites as JSON.
import { parseArgs } from "node:util";

interface EvalSuite {
  name: string;
  description: string;
  run(options: { json: boolean }): Promise<Record<string, unknown>>;
}

/** Suites register here as the ranking core gains them (docs/relevance.md). */
const suites: EvalSuite[] = [];

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { list: { type: "boolean", default: false }, json: { type: "boolean", default: false } },
});

if (values.list || positionals.length === 0) {
  console.log(JSON.stringify({ suites: suites.map(({ name, description }) => ({ name, description })) }));
  process.exit(values.list ? 0 : 2);
}
const suite = suites.find((s) => s.name === positionals[0]);
if (!suite) {
  console.error(JSON.stringify({ error: { code: "unknown_suite", message: `no eval suite named ${positionals[0]}` } }));
  process.exit(2);
}
console.log(JSON.stringify(await suite.run({ json: values.json })));
