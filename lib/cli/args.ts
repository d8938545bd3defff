/** Parsers of command-line values; a bad value is a usage error naming the flag. */
import { InvalidArgumentError, Option } from 'commander';
import { parseSize } from '../index.js';

export function sizeArg(name: string) {
  return (text: string): number => {
    try {
      return parseSize(name, text);
    } catch (err) {
      throw new InvalidArgumentError((err as Error).message);
    }
  };
}

export function intArg(name: string, min: number, max: number) {
  return (text: string): number => {
    const n = Number(text);
    if (!/^\d+$/.test(text.trim()) || !Number.isSafeInteger(n) || n < min || n > max) {
      throw new InvalidArgumentError(`${name}: expected an integer from ${min} to ${max}, got ${JSON.stringify(text)}`);
    }
    return n;
  };
}

export function numberArg(name: string, min: number) {
  return (text: string): number => {
    const n = Number(text);
    if (text.trim() === '' || !Number.isFinite(n) || n < min) {
      throw new InvalidArgumentError(`${name}: expected a number of at least ${min}, got ${JSON.stringify(text)}`);
    }
    return n;
  };
}

/** For a repeatable flag: every value, in order. */
export function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

/** --format: how a source is read (raw bytes, or the guest disk of a virtual disk). */
export function sourceFormatOption(): Option {
  return new Option(
    '--format <format>',
    'how the source is read: raw, qcow2 (the guest disk of a qcow2 image and its backing chain) or auto ' +
      '(qcow2 detected on regular files; then backing files only beside the image)',
  )
    .choices(['raw', 'qcow2', 'auto'])
    .default('raw');
}
