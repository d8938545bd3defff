/**
 * Option validation, the one place for it: every check reports a bad value
 * with invalidOption(), "NAME: expected WHAT, got VALUE", so messages name
 * the option, what was expected and what was given.
 */
import { LowtideError } from './errors.js';

export function describe(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'number' || typeof value === 'boolean' || value === null || value === undefined) {
    return String(value);
  }
  if (Array.isArray(value)) return 'an array';
  return `a ${typeof value}`;
}

/** Throws LowtideError INVALID_ARGUMENT: "NAME: expected EXPECTED, got VALUE". */
export function invalidOption(name: string, expected: string, value: unknown): never {
  throw new LowtideError('INVALID_ARGUMENT', `${name}: expected ${expected}, got ${describe(value)}`);
}

/**
 * A finite number from `min` (above it when `minExclusive`) up to `max`;
 * `fallback` when the value is undefined (pass undefined for an optional
 * setting without a default).
 */
export function numberOption<F extends number | undefined>(
  name: string,
  value: unknown,
  fallback: F,
  min: number,
  max: number = Number.MAX_VALUE,
  minExclusive = false,
): number | F {
  if (value === undefined) return fallback;
  const ok =
    typeof value === 'number' && Number.isFinite(value) && (minExclusive ? value > min : value >= min) && value <= max;
  if (!ok) {
    const lower = minExclusive ? `greater than ${min}` : `from ${min}`;
    invalidOption(name, `a number ${lower}${max === Number.MAX_VALUE ? '' : ` up to ${max}`}`, value);
  }
  return value;
}

export function integerOption(
  name: string,
  value: unknown,
  fallback: number,
  min: number,
  max: number = Number.MAX_SAFE_INTEGER,
): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min || value > max) {
    invalidOption(name, `an integer from ${min} to ${max}`, value);
  }
  return value;
}

export function booleanOption(name: string, value: unknown, fallback: boolean): boolean {
  if (value === undefined) return fallback;
  if (typeof value !== 'boolean') invalidOption(name, 'true or false', value);
  return value;
}

export function choiceOption<T extends string>(name: string, value: unknown, choices: readonly T[], fallback: T): T {
  if (value === undefined) return fallback;
  if (typeof value !== 'string' || !(choices as readonly string[]).includes(value)) {
    invalidOption(name, `one of ${choices.map((c) => JSON.stringify(c)).join(', ')}`, value);
  }
  return value as T;
}

export function stringOption(name: string, value: unknown): string {
  if (typeof value !== 'string' || value.length === 0) invalidOption(name, 'a non-empty string', value);
  return value;
}

export function signalOption(name: string, value: unknown): AbortSignal | undefined {
  if (value === undefined) return undefined;
  if (!(value instanceof AbortSignal)) invalidOption(name, 'an AbortSignal', value);
  return value;
}

export function functionOption<F>(name: string, value: unknown): F | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'function') invalidOption(name, 'a function', value);
  return value as F;
}

export function objectOption(name: string, value: unknown): Record<string, unknown> {
  if (value === undefined) return {};
  if (value === null || typeof value !== 'object' || Array.isArray(value)) invalidOption(name, 'an object', value);
  return value as Record<string, unknown>;
}

const sizeUnits: Record<string, number> = {
  '': 1,
  b: 1,
  k: 1024,
  kb: 1024,
  kib: 1024,
  m: 1024 ** 2,
  mb: 1024 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gb: 1024 ** 3,
  gib: 1024 ** 3,
  t: 1024 ** 4,
  tb: 1024 ** 4,
  tib: 1024 ** 4,
};

/** Parses "4096", "64K", "1M", "1MiB", "2g" (binary units) into bytes. */
export function parseSize(name: string, text: string): number {
  const m = /^\s*(\d+)\s*([a-zA-Z]*)\s*$/.exec(text);
  const unit = m ? sizeUnits[m[2]!.toLowerCase()] : undefined;
  if (!m || unit === undefined) invalidOption(name, 'a size such as 4096, 64K, 1M or 1G', text);
  const n = Number(m[1]) * unit;
  if (!Number.isSafeInteger(n)) invalidOption(name, 'a size below 2^53 bytes', text);
  return n;
}
