// The registry of benchmark suites: `npm run bench -- <name>` runs one, `npm run bench -- --list` lists them.
// A new suite is a file in this folder exporting a default `Suite` (bench/lib/suite.ts), added here.
import type { Suite } from "../lib/suite.ts";
import collect from "./collect.ts";
import compute from "./compute.ts";
import floor from "./floor.ts";
import load from "./load.ts";
import publish from "./publish.ts";
import rank from "./rank.ts";
import soak from "./soak.ts";

export const SUITES: readonly Suite[] = [floor, collect, compute, load, publish, rank, soak];

export function findSuite(name: string): Suite | undefined {
  return SUITES.find((s) => s.name === name);
}
