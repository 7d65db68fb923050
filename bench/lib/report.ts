// A suite's report: the one JSON object `--json` prints, and the readable tables printed otherwise. Tables are
// built from the report itself: any object with `p50Ms` and `rps` is a measurement row, any object with
// `rpsRatio` a relative row, so a new suite needs no rendering code.
import { type MachineInfo, machineLine } from "./machine.ts";
import type { Floor } from "./suite.ts";

export interface Report {
  suite: string;
  command: string;
  startedAt: string;
  durationS: number;
  machine: MachineInfo;
  runner: string;
  floor: Floor;
  results: Record<string, unknown>;
  relative: Record<string, unknown>;
  notes: string[];
}

type Row = Record<string, unknown>;

const isObject = (v: unknown): v is Row => typeof v === "object" && v !== null && !Array.isArray(v);

function collect(value: unknown, label: string, match: (o: Row) => boolean, out: Array<[string, Row]>): void {
  if (!isObject(value)) return;
  if (match(value)) {
    out.push([label, value]);
    return;
  }
  for (const [key, child] of Object.entries(value)) collect(child, label ? `${label}.${key}` : key, match, out);
}

const MEASUREMENT_KEYS = new Set([
  "path",
  "connections",
  "durationS",
  "requests",
  "rps",
  "p50Ms",
  "p90Ms",
  "p99Ms",
  "maxMs",
  "meanMs",
  "errors",
  "non2xx",
]);

function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) =>
    cells
      .map((cell, i) =>
        i === 0 || Number.isNaN(Number(cell)) ? cell.padEnd(widths[i] ?? 0) : cell.padStart(widths[i] ?? 0),
      )
      .join("  ")
      .trimEnd();
  return [line(header), ...rows.map(line)].join("\n");
}

/** Numbers in `results` outside any measurement (e.g. per-probe medians), as "label = value" lines. */
function otherFigures(value: unknown, label: string, out: string[]): void {
  if (!isObject(value) || ("p50Ms" in value && "rps" in value)) return;
  for (const [key, child] of Object.entries(value)) {
    const name = label ? `${label}.${key}` : key;
    if (typeof child === "number") out.push(`${name} = ${child}`);
    else otherFigures(child, name, out);
  }
}

const fmt = (v: unknown) => (typeof v === "number" ? String(v) : typeof v === "string" ? v : "");

export function renderText(report: Report): string {
  const measurements: Array<[string, Row]> = [];
  const isMeasurement = (o: Row) => "p50Ms" in o && "rps" in o;
  collect(report.results, "", isMeasurement, measurements);
  // The floor rows are usually results rows too (the same objects): show each measurement once.
  const floorRows: Array<[string, Row]> = [];
  collect(report.floor, "floor", isMeasurement, floorRows);
  for (const [label, row] of floorRows) {
    const same = measurements.find(([, r]) => r === row);
    if (same) same[0] = `${same[0]} (${label})`;
    else measurements.unshift([label, row]);
  }
  const relatives: Array<[string, Row]> = [];
  collect(report.relative, "", (o) => "rpsRatio" in o, relatives);

  const parts = [
    `${report.suite}: ${report.command}`,
    `started ${report.startedAt}, ${report.durationS} s`,
    `machine: ${machineLine(report.machine)}, commit ${report.machine.gitCommit.slice(0, 12)}` +
      `${report.machine.gitDirty ? " (uncommitted changes)" : ""}, load average ${report.machine.loadAvg1m}`,
    `runner:  ${report.runner}`,
    "",
    table(
      [
        "measurement",
        "path",
        "conns",
        "requests",
        "rps",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "mean ms",
        "errors",
        "non2xx",
        "also",
      ],
      measurements.map(([label, m]) => [
        label,
        fmt(m.path),
        fmt(m.connections),
        fmt(m.requests),
        fmt(m.rps),
        fmt(m.p50Ms),
        fmt(m.p90Ms),
        fmt(m.p99Ms),
        fmt(m.maxMs),
        fmt(m.meanMs),
        fmt(m.errors),
        fmt(m.non2xx),
        Object.entries(m)
          .filter(([k]) => !MEASUREMENT_KEYS.has(k))
          .map(([k, v]) => `${k}=${fmt(v)}`)
          .join(" "),
      ]),
    ),
  ];
  if (relatives.length) {
    parts.push(
      "",
      table(
        ["relative", "against", "added p50 ms", "added p99 ms", "rps ratio"],
        relatives.map(([label, r]) => [label, fmt(r.against), fmt(r.addedP50Ms), fmt(r.addedP99Ms), fmt(r.rpsRatio)]),
      ),
    );
  }
  const others: string[] = [];
  otherFigures(report.results, "", others);
  if (others.length) parts.push("", "other figures:", ...others.map((line) => `  ${line}`));
  if (report.notes.length) parts.push("", "notes:", ...report.notes.map((n) => `  - ${n}`));
  return `${parts.join("\n")}\n`;
}
