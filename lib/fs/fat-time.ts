/** FAT date/time fields to Date. FAT stores local time without a zone. */

function fromParts(date: number, time: number, extraMs: number): Date | null {
  const day = date & 0x1f;
  const month = (date >> 5) & 0x0f;
  const year = 1980 + (date >> 9);
  const seconds = (time & 0x1f) * 2;
  const minutes = (time >> 5) & 0x3f;
  const hours = time >> 11;
  if (day === 0 || month === 0 || month > 12 || hours > 23 || minutes > 59 || seconds > 59) return null;
  return new Date(year, month - 1, day, hours, minutes, seconds, extraMs);
}

/** A date/time pair; null when the date is unset or invalid. */
export function fatDateTime(date: number, time: number, tenths = 0): Date | null {
  // The "tenths" byte counts 10 ms units from 0 to 199.
  const extra = tenths <= 199 ? tenths * 10 : 0;
  return fromParts(date, time, extra);
}

/** The FAT epoch (1980-01-01 00:00 local), used when a modification time is unset. */
export function fatEpoch(): Date {
  return new Date(1980, 0, 1, 0, 0, 0, 0);
}
