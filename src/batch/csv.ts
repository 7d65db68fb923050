// CSV (RFC 4180): comma-separated, fields optionally in double quotes ("" inside quotes is one quote; quoted fields
// may hold commas and line breaks), lines ending in CRLF or LF, a UTF-8 byte-order mark ignored. Pure; a
// generator, so a large file is never held as one array of rows. Used by the catalogue upload/import and the seed.

export interface CsvRecord {
  fields: string[];
  /** 1-based line on which the record starts (the header is line 1). */
  line: number;
}

export class CsvError extends Error {
  override name = "CsvError";
  readonly line: number;
  constructor(message: string, line: number) {
    super(`${message} (line ${line})`);
    this.line = line;
  }
}

/** The records of `text`, blank lines skipped. Throws CsvError for a quote that is never closed. */
export function* csvRecords(text: string): Generator<CsvRecord> {
  let i = text.charCodeAt(0) === 0xfeff ? 1 : 0;
  let line = 1;
  const n = text.length;
  while (i < n) {
    const start = line;
    const fields: string[] = [];
    let endOfRecord = false;
    while (!endOfRecord) {
      let value = "";
      if (text[i] === '"') {
        i++;
        for (;;) {
          if (i >= n) throw new CsvError("a quoted field is not closed", start);
          const quote = text.indexOf('"', i);
          if (quote === -1) throw new CsvError("a quoted field is not closed", start);
          const chunk = text.slice(i, quote);
          for (let k = chunk.indexOf("\n"); k !== -1; k = chunk.indexOf("\n", k + 1)) line++;
          value += chunk;
          i = quote + 1;
          if (text[i] === '"') {
            value += '"';
            i++;
          } else break;
        }
        // Anything between the closing quote and the separator is kept, as lenient parsers do.
        while (i < n && text[i] !== "," && text[i] !== "\n" && text[i] !== "\r") value += text[i++];
      } else {
        let j = i;
        while (j < n && text[j] !== "," && text[j] !== "\n" && text[j] !== "\r") j++;
        value = text.slice(i, j);
        i = j;
      }
      fields.push(value);
      if (i >= n) endOfRecord = true;
      else if (text[i] === ",") i++;
      else {
        if (text[i] === "\r") i++;
        if (text[i] === "\n") i++;
        line++;
        endOfRecord = true;
      }
    }
    if (fields.length === 1 && fields[0] === "") continue;
    yield { fields, line: start };
  }
}

/** Header + rows as objects keyed by the (trimmed) header names. */
export function* csvObjects(
  text: string,
): Generator<{ row: Record<string, string>; line: number; extra: number; missing: number }> {
  const records = csvRecords(text);
  const first = records.next();
  if (first.done) return;
  const header = first.value.fields.map((h) => h.trim());
  for (const record of records) {
    const row: Record<string, string> = {};
    header.forEach((name, k) => {
      row[name] = record.fields[k] ?? "";
    });
    yield {
      row,
      line: record.line,
      extra: Math.max(0, record.fields.length - header.length),
      missing: Math.max(0, header.length - record.fields.length),
    };
  }
}

/** The header of `text` (trimmed names), or [] for an empty text. */
export function csvHeader(text: string): string[] {
  const first = csvRecords(text).next();
  return first.done ? [] : first.value.fields.map((h) => h.trim());
}
