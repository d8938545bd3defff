/**
 * Validation helpers for the throttle options, in the same message format as
 * lib/options.ts: the option's name, what was expected, what was given.
 */
import { LowtideError } from '../errors.js';
import { describe } from '../options.js';

export function invalidOption(name: string, expected: string, value: unknown): never {
  throw new LowtideError('INVALID_ARGUMENT', `${name}: expected ${expected}, got ${describe(value)}`);
}

/** A finite number in [min, max] (min exclusive when `minExclusive`). */
export function numberOption(
  name: string,
  value: unknown,
  fallback: number,
  min: number,
  max: number,
  minExclusive = false,
): number {
  if (value === undefined) return fallback;
  const ok =
    typeof value === 'number' &&
    Number.isFinite(value) &&
    (minExclusive ? value > min : value >= min) &&
    value <= max;
  if (!ok) {
    const lower = minExclusive ? `greater than ${min}` : `from ${min}`;
    invalidOption(name, `a number ${lower}${max === Number.MAX_VALUE ? '' : ` up to ${max}`}`, value);
  }
  return value;
}
