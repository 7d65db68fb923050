// Strict ISO-8601 date-times for the admin documents (the ranking config's rule windows, the experiments' start and
// end): a zone is required and a date or time that does not exist is refused, where Date.parse would accept
// locale text ("Dec 1"), bare numbers, zone-less local times or roll 2026-02-30 over into March. Pure.

/** ISO-8601 date-time with an explicit zone (`Z` or `±hh:mm`): never a local time whose meaning depends on the host. */
const ISO_TIME = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(?:\.\d{1,9})?)?(?:Z|[+-](\d{2}):(\d{2}))$/;

/** Whether year-month-day names a day the (proleptic Gregorian) calendar has: not 2026-02-30, not month 13. */
export function isCalendarDay(year: number, month: number, day: number): boolean {
  if (month < 1 || month > 12 || day < 1) return false;
  const leap = year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0);
  return day <= (month === 2 ? (leap ? 29 : 28) : [4, 6, 9, 11].includes(month) ? 30 : 31);
}

/**
 * The time of an ISO-8601 date-time with an explicit zone, or null — also for a date or time that does not exist
 * (2026-02-30, 24:00, minute 60, a zone of ±24:00 or more), which Date.parse would roll over into the next day or
 * month.
 */
export function parseIsoTime(v: unknown): number | null {
  if (typeof v !== "string") return null;
  const m = ISO_TIME.exec(v);
  if (!m) return null;
  const [year, month, day, hour, minute, second, zoneHours, zoneMinutes] = m.slice(1, 9).map((x) => Number(x ?? 0));
  if (year === undefined || month === undefined || day === undefined || !isCalendarDay(year, month, day)) return null;
  if (
    (hour as number) > 23 ||
    (minute as number) > 59 ||
    (second as number) > 59 ||
    (zoneHours as number) > 23 ||
    (zoneMinutes as number) > 59
  )
    return null;
  const t = Date.parse(v);
  return Number.isFinite(t) ? t : null;
}
