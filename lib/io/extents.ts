/**
 * Extents: byte ranges of a source. Plain data; helpers never mutate input.
 */
import { LowtideError } from '../errors.js';

export interface Extent {
  /** First byte. */
  readonly offset: number;
  /** Number of bytes. */
  readonly length: number;
}

function checkExtent(e: Extent, where: string): void {
  if (
    e === null ||
    typeof e !== 'object' ||
    !Number.isSafeInteger(e.offset) ||
    !Number.isSafeInteger(e.length) ||
    e.offset < 0 ||
    e.length < 0 ||
    !Number.isSafeInteger(e.offset + e.length)
  ) {
    throw new LowtideError(
      'INVALID_ARGUMENT',
      `${where}: expected an extent {offset, length} of non-negative safe integers, got ${JSON.stringify(e)}`,
    );
  }
}

/** Validates a list of extents (shape only). */
export function validateExtents(extents: readonly Extent[], where = 'extents'): void {
  if (!Array.isArray(extents)) {
    throw new LowtideError('INVALID_ARGUMENT', `${where}: expected an array of extents, got ${typeof extents}`);
  }
  extents.forEach((e, i) => checkExtent(e, `${where}[${i}]`));
}

/**
 * Extents as an array, or any iterable of them (a plan's compact ExtentList):
 * the helpers below take either.
 */
export type ExtentInput = readonly Extent[] | Iterable<Extent>;

function asArray(extents: ExtentInput): readonly Extent[] {
  return Array.isArray(extents) ? (extents as readonly Extent[]) : [...extents];
}

/** Sum of the lengths. */
export function totalLength(extents: ExtentInput): number {
  let n = 0;
  for (const e of extents) n += e.length;
  return n;
}

/** Sorted by offset, overlapping and touching extents joined, empty ones dropped. */
export function mergeExtents(input: ExtentInput): Extent[] {
  const extents = asArray(input);
  validateExtents(extents);
  const sorted = extents.filter((e) => e.length > 0).sort((a, b) => a.offset - b.offset);
  const out: Extent[] = [];
  for (const e of sorted) {
    const last = out[out.length - 1];
    if (last !== undefined && e.offset <= last.offset + last.length) {
      const end = Math.max(last.offset + last.length, e.offset + e.length);
      out[out.length - 1] = { offset: last.offset, length: end - last.offset };
    } else {
      out.push({ offset: e.offset, length: e.length });
    }
  }
  return out;
}

/**
 * Splits every extent at multiples of `blockSize` (absolute offsets), so that
 * no piece crosses a block boundary. Order is kept.
 */
export function splitExtents(extents: readonly Extent[], blockSize: number): Extent[] {
  validateExtents(extents);
  if (!Number.isSafeInteger(blockSize) || blockSize <= 0) {
    throw new LowtideError('INVALID_ARGUMENT', `blockSize: expected a positive integer, got ${String(blockSize)}`);
  }
  const out: Extent[] = [];
  for (const e of extents) {
    let off = e.offset;
    const end = e.offset + e.length;
    while (off < end) {
      const boundary = (Math.floor(off / blockSize) + 1) * blockSize;
      const next = Math.min(end, boundary);
      out.push({ offset: off, length: next - off });
      off = next;
    }
  }
  return out;
}

/** The parts of `from` not covered by `remove`; the result is merged and sorted. */
export function subtractExtents(from: ExtentInput, remove: ExtentInput): Extent[] {
  const a = mergeExtents(from);
  const b = mergeExtents(remove);
  const out: Extent[] = [];
  let j = 0;
  for (const e of a) {
    let start = e.offset;
    const end = e.offset + e.length;
    while (j < b.length && b[j]!.offset + b[j]!.length <= start) j++;
    let k = j;
    while (k < b.length && b[k]!.offset < end) {
      const r = b[k]!;
      if (r.offset > start) out.push({ offset: start, length: r.offset - start });
      start = Math.max(start, r.offset + r.length);
      if (start >= end) break;
      k++;
    }
    if (start < end) out.push({ offset: start, length: end - start });
  }
  return out;
}

/** Intersection of two extent lists; the result is merged and sorted. */
export function intersectExtents(a: ExtentInput, b: ExtentInput): Extent[] {
  const x = mergeExtents(a);
  const y = mergeExtents(b);
  const out: Extent[] = [];
  let i = 0;
  let j = 0;
  while (i < x.length && j < y.length) {
    const p = x[i]!;
    const q = y[j]!;
    const start = Math.max(p.offset, q.offset);
    const end = Math.min(p.offset + p.length, q.offset + q.length);
    if (start < end) out.push({ offset: start, length: end - start });
    if (p.offset + p.length < q.offset + q.length) i++;
    else j++;
  }
  return out;
}

/**
 * Index of the first of `ranges` (sorted, not overlapping) that ends after
 * `offset`; `ranges.length` when none does. `start` and `length` read a range.
 */
export function firstEndingAfter<T>(
  ranges: readonly T[],
  offset: number,
  start: (r: T) => number,
  length: (r: T) => number,
): number {
  let lo = 0;
  let hi = ranges.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    const r = ranges[mid]!;
    if (start(r) + length(r) <= offset) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
