// `node scripts/scan-bundle.ts [DIR]` (CI, after `npm run deploy:check`): fails when the production bundle in DIR
// (default .lastmile/dist) holds a secret — a local stack key, a value of `.dev.vars`, a private key, a connection
// string with a password. Prints the rule and the place, never the value.
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { LOCAL_KEYS } from "./lib/local-keys.ts";
import { envValues, findSecrets } from "./lib/secret-scan.ts";

const dir = process.argv[2] ?? ".lastmile/dist";
if (!existsSync(dir)) {
  console.error(`scan-bundle: no bundle at ${dir} (run npm run deploy:check first)`);
  process.exit(1);
}
// The local write key is a documented public default the Worker itself carries (src/config.ts: the built-in source
// of LASTMILE_ENV development / test only, refused elsewhere); every other local key must stay out of the bundle.
const secrets = [
  ...Object.entries(LOCAL_KEYS)
    .filter(([name]) => name !== "writeKey")
    .map(([name, value]) => ({ name: `local ${name}`, value })),
  ...(existsSync(".dev.vars") ? envValues(readFileSync(".dev.vars", "utf8")) : []),
];
const files: string[] = [];
const walk = (d: string) => {
  for (const name of readdirSync(d)) {
    const p = join(d, name);
    if (statSync(p).isDirectory()) walk(p);
    else files.push(p);
  }
};
walk(dir);
let found = 0;
for (const file of files) {
  for (const hit of findSecrets(readFileSync(file, "utf8"), secrets)) {
    found++;
    console.error(`scan-bundle: ${file} at ${hit.at}: ${hit.rule}`);
  }
}
if (found > 0) process.exit(1);
console.log(`scan-bundle: ${files.length} files, no secret`);
