// `npm run eval -- <suite> [options] [--json]`: offline relevance evaluation on public data sets, calling the same
// ranking functions the Worker deploys (eval/, docs/relevance.md). A markdown table by default, the JSON report
// with `--json`. `--list` prints the registered suites as JSON.
import { parseArgs } from "node:util";
import { rankingConfigArg } from "../eval/config.ts";
import { type EventType, isoDay, type Session } from "../eval/data.ts";
import { SequentialRules } from "../eval/methods/baselines.ts";
import { LastmileModels, LastmileRanker } from "../eval/methods/lastmile.ts";
import { overlap, trainData } from "../eval/protocols.ts";
import { runAbSim } from "../eval/simulate.ts";
import {
  convertUci,
  markdown,
  OTTO_FILE,
  readSessionFile,
  readText,
  readUci,
  runNextItem,
  runNextPurchase,
  runOtto,
  UCI_NEXT_ITEM_SHAPE,
  uciSplit,
} from "../eval/suites.ts";
import { tune, validationSplits } from "../eval/tune.ts";
import { parseIsoTime } from "../src/iso-time.ts";

type Values = Record<string, string | boolean | undefined>;

interface EvalSuite {
  name: string;
  description: string;
  run(values: Values): Record<string, unknown> | Promise<Record<string, unknown>>;
}

/** An option value the suite cannot take: exit 2 with the suite's usage (an error of the run itself exits 1). */
class UsageError extends Error {}

/** `--name N`, an integer of at least `min` (0 or 1); undefined when absent. */
const integer = (v: Values, name: string, min: 0 | 1): number | undefined => {
  const text = v[name];
  if (typeof text !== "string") return undefined;
  const n = Number(text);
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(n) || n < min) {
    const what = min === 1 ? "a positive integer" : "a non-negative integer";
    throw new UsageError(`--${name} must be ${what}, not ${JSON.stringify(text)}`);
  }
  return n;
};
/** A count (days, sessions, users, list depth): a positive integer. */
const optionalCount = (v: Values, name: string): number | undefined => integer(v, name, 1);
const count = (v: Values, name: string, fallback: number): number => optionalCount(v, name) ?? fallback;
/** `--methods a,b`: only these methods (all by default). */
const methodsOf = (v: Values) =>
  typeof v.methods === "string" ? v.methods.split(",").map((m) => m.trim()) : undefined;
/** `--config JSON|FILE`: the merged ranker's config (absent: the shipped default). */
const configOf = (v: Values) => (typeof v.config === "string" ? { config: rankingConfigArg(v.config, readText) } : {});
/** `--cut YYYY-MM-DD`, a calendar day (Date.parse would take 2011-02-30 for 2011-03-02): its epoch seconds. */
const dateSeconds = (v: string | boolean | undefined, fallback: string): number => {
  const text = typeof v === "string" ? v : fallback;
  const t = /^\d{4}-\d{2}-\d{2}$/.test(text) ? parseIsoTime(`${text}T00:00:00Z`) : null;
  if (t === null) throw new UsageError(`--cut must be a date (YYYY-MM-DD), not ${JSON.stringify(v)}`);
  return t / 1000;
};

/** Protocol (i) on a UCI split: the test split or the validation split carved from the training data. */
async function uciNextItem(
  v: Values,
  split: {
    data: string;
    train: Session[];
    test: Session[];
    cut: number;
    catalog: ReturnType<typeof readUci>["catalog"];
    only?: string[] | undefined;
  },
): Promise<Record<string, unknown>> {
  return {
    data: split.data,
    cut: isoDay(split.cut),
    ...(await runNextItem({
      train: split.train,
      test: split.test,
      sessions: optionalCount(v, "sessions"),
      catalog: split.catalog,
      shape: UCI_NEXT_ITEM_SHAPE,
      sql: v.sql === true,
      ...(split.only ? { only: split.only } : {}),
      ...configOf(v),
    })),
  };
}

/** Suites; docs/relevance.md#reproduce has the commands behind every reported number. */
const suites: EvalSuite[] = [
  {
    name: "next-item",
    description:
      "protocol (i) on session-rec files: --train FILE --test FILE [--sessions N] [--event-type view|cart|purchase] [--catalog uci] [--sql] [--config JSON|FILE]",
    run(v) {
      if (typeof v.train !== "string" || typeof v.test !== "string")
        throw new UsageError("give --train FILE --test FILE");
      const type = (typeof v["event-type"] === "string" ? v["event-type"] : "view") as EventType;
      return runNextItem({
        train: readSessionFile(v.train, type),
        test: readSessionFile(v.test, type),
        sessions: optionalCount(v, "sessions"),
        catalog: v.catalog === "uci" ? readUci().catalog : undefined,
        shape: v.catalog === "uci" ? UCI_NEXT_ITEM_SHAPE : undefined,
        sql: v.sql === true,
        ...configOf(v),
      });
    },
  },
  {
    name: "uci-next-item",
    description:
      "protocol (i) on UCI invoices, the last --test-days (30) days as the test split [--sessions N] [--methods sr,lastmile] [--sql] [--config JSON|FILE]",
    run(v) {
      const { train, test, cut } = uciSplit(count(v, "test-days", 30));
      return uciNextItem(v, {
        data: "uci-online-retail invoices",
        train,
        test,
        cut,
        catalog: readUci().catalog,
        only: methodsOf(v),
      });
    },
  },
  {
    name: "uci-next-item-validation",
    description:
      "protocol (i) on the validation split: the training invoices' last --validation-days (30) days, trained on the invoices before them; never the test split [--sessions N] [--methods sr,lastmile] [--sql] [--config JSON|FILE]",
    run(v) {
      const { catalog, inner } = validationSplits(count(v, "test-days", 30), count(v, "validation-days", 30));
      return uciNextItem(v, {
        data: "uci-online-retail invoices, validation split",
        ...inner,
        catalog,
        only: methodsOf(v),
      });
    },
  },
  {
    name: "uci-overlap-validation",
    description:
      "protocol (i) on the validation split, SR and the merged ranker prediction by prediction: who finds each target, their union, the merged ranker's top --deep (150) [--sessions N]",
    run(v) {
      const { catalog, inner } = validationSplits(count(v, "test-days", 30), count(v, "validation-days", 30));
      const ranker = new LastmileRanker(new LastmileModels(), { shape: UCI_NEXT_ITEM_SHAPE });
      return {
        protocol: "overlap",
        data: "uci-online-retail invoices, validation split (TypeScript lists)",
        cut: isoDay(inner.cut),
        ...overlap(new SequentialRules(), ranker, trainData(inner.train, catalog), inner.test, {
          sessions: optionalCount(v, "sessions"),
          deep: count(v, "deep", 150),
        }),
      };
    },
  },
  {
    name: "uci-next-purchase",
    description:
      "protocol (ii) on UCI customers: train before --cut (2011-09-01), predict what each buys after [--users N] [--sql] [--config JSON|FILE]",
    run(v) {
      return runNextPurchase({
        cut: dateSeconds(v.cut, "2011-09-01"),
        users: optionalCount(v, "users"),
        sql: v.sql === true,
        ...configOf(v),
      });
    },
  },
  {
    name: "otto",
    description: "protocol (iii), the OTTO metric: --file FILE (the OTTO fixture) [--test-days 7] [--seed 42]",
    run(v) {
      return runOtto({
        file: typeof v.file === "string" ? v.file : OTTO_FILE,
        testDays: count(v, "test-days", 7),
        seed: integer(v, "seed", 0) ?? 42,
      });
    },
  },
  {
    name: "convert-uci",
    description: "writes the UCI invoices as session-rec train.tsv / test.tsv: --out DIR [--test-days 30]",
    run(v) {
      if (typeof v.out !== "string") throw new UsageError("give --out DIR");
      return convertUci(v.out, count(v, "test-days", 30));
    },
  },
  {
    name: "tune",
    description:
      "grid search of the ranking config on a validation split carved from the UCI training data (never the test split) [--sessions N] [--users N]",
    run(v) {
      return tune({
        testDays: count(v, "test-days", 30),
        validationDays: count(v, "validation-days", 30),
        sessions: count(v, "sessions", 300),
        users: count(v, "users", 400),
      });
    },
  },
  {
    name: "ab-sim",
    description:
      "the experiments simulation on the UCI test invoices: A/B split and interleaving of popular vs the merged ranker under a known click model, reported from a throwaway Postgres [--sessions N] [--seed 42]",
    run(v) {
      return runAbSim({
        seed: integer(v, "seed", 0) ?? 42,
        sessions: optionalCount(v, "sessions"),
        testDays: count(v, "test-days", 30),
      });
    },
  },
];

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    list: { type: "boolean", default: false },
    sql: { type: "boolean", default: false },
    json: { type: "boolean", default: false },
    train: { type: "string" },
    test: { type: "string" },
    file: { type: "string" },
    out: { type: "string" },
    deep: { type: "string" },
    sessions: { type: "string" },
    users: { type: "string" },
    cut: { type: "string" },
    seed: { type: "string" },
    catalog: { type: "string" },
    "event-type": { type: "string" },
    "test-days": { type: "string" },
    "validation-days": { type: "string" },
    methods: { type: "string" },
    config: { type: "string" },
  },
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
try {
  const report = await suite.run(values);
  console.log(values.json ? JSON.stringify(report) : markdown(report));
} catch (error) {
  if (error instanceof UsageError) {
    console.error(JSON.stringify({ error: { code: "bad_option", message: error.message, usage: suite.description } }));
    process.exit(2);
  }
  console.error(JSON.stringify({ error: { code: "eval_failed", message: (error as Error).message } }));
  process.exit(1);
}
