/**
 * A sorted, merged list of extents kept as [offset, length] pairs in one
 * growing Float64Array: 16 bytes an extent and no object per extent, so a
 * plan of millions of fragments stays small. Extents are merged as they are
 * appended; every operation is a single forward pass without recursion.
 */
import { LowtideError } from '../errors.js';
import type { Extent } from './extents.js';

/** Extents as an array of objects or as an ExtentList. */
export type Extents = readonly Extent[] | ExtentList;

export class ExtentList implements Iterable<Extent> {
  #pairs: Float64Array;
  #count = 0;
  #total = 0;

  /** `capacity`: extents to make room for up front (the list grows past it when needed). */
  constructor(capacity = 16) {
    this.#pairs = new Float64Array(Math.max(2, capacity * 2));
  }

  /**
   * `base` minus the extents `fill` passes to its `remove` callback, which
   * must come in offset order and must not overlap: nothing is kept of them,
   * so the removed extents may be a stream of millions. `capacity`: the
   * expected number of extents of the result.
   */
  static subtractStream(
    base: ExtentList,
    capacity: number,
    fill: (remove: (offset: number, length: number) => void) => void,
  ): ExtentList {
    const out = new ExtentList(capacity);
    let i = 0;
    // What of base extent i is left to pass on starts at `pos`.
    let pos = base.length > 0 ? base.offsetAt(0) : 0;
    let last = -1;
    fill((offset, length) => {
      if (length <= 0) return;
      if (offset < last) {
        throw new LowtideError('INTERNAL', `removed extent at ${offset} comes after one ending at ${last}`);
      }
      last = offset + length;
      while (i < base.length && base.endAt(i) <= offset) {
        out.push(pos, base.endAt(i) - pos);
        i++;
        if (i < base.length) pos = base.offsetAt(i);
      }
      while (i < base.length && base.offsetAt(i) < last) {
        if (offset > pos) out.push(pos, offset - pos);
        if (base.endAt(i) > last) {
          pos = Math.max(pos, last);
          break;
        }
        i++;
        if (i < base.length) pos = base.offsetAt(i);
      }
    });
    if (i < base.length) {
      out.push(pos, base.endAt(i) - pos);
      for (i++; i < base.length; i++) out.push(base.offsetAt(i), base.lengthAt(i));
    }
    return out;
  }

  /** An ExtentList of `extents`: itself when it is one; else sorted and merged. */
  static from(extents: Extents): ExtentList {
    if (extents instanceof ExtentList) return extents;
    const sorted = extents.filter((e) => e.length > 0).sort((a, b) => a.offset - b.offset);
    const out = new ExtentList(sorted.length);
    for (const e of sorted) out.push(e.offset, e.length);
    return out;
  }

  /** Number of extents. */
  get length(): number {
    return this.#count;
  }

  /** Sum of the lengths. */
  get totalLength(): number {
    return this.#total;
  }

  offsetAt(i: number): number {
    return this.#pairs[2 * i]!;
  }

  lengthAt(i: number): number {
    return this.#pairs[2 * i + 1]!;
  }

  endAt(i: number): number {
    return this.#pairs[2 * i]! + this.#pairs[2 * i + 1]!;
  }

  /**
   * Appends [offset, offset + length): it must not start before the last
   * extent does. Touching or overlapping the last extent extends it; empty
   * extents are dropped.
   */
  push(offset: number, length: number): void {
    if (length <= 0) return;
    const n = this.#count;
    if (n > 0) {
      const lastOffset = this.#pairs[2 * n - 2]!;
      const lastEnd = lastOffset + this.#pairs[2 * n - 1]!;
      if (offset < lastOffset) {
        throw new LowtideError(
          'INTERNAL',
          `extent at ${offset} appended after one at ${lastOffset}: extents must come in offset order`,
        );
      }
      if (offset <= lastEnd) {
        const end = Math.max(lastEnd, offset + length);
        this.#total += end - lastEnd;
        this.#pairs[2 * n - 1] = end - lastOffset;
        return;
      }
    }
    if (2 * n + 2 > this.#pairs.length) {
      const grown = new Float64Array(this.#pairs.length * 2);
      grown.set(this.#pairs);
      this.#pairs = grown;
    }
    this.#pairs[2 * n] = offset;
    this.#pairs[2 * n + 1] = length;
    this.#count = n + 1;
    this.#total += length;
  }

  /** The pairs [offset0, length0, offset1, ...] as a view (not a copy). */
  flat(): Float64Array {
    return this.#pairs.subarray(0, 2 * this.#count);
  }

  *[Symbol.iterator](): Iterator<Extent> {
    for (let i = 0; i < this.#count; i++) yield { offset: this.#pairs[2 * i]!, length: this.#pairs[2 * i + 1]! };
  }

  toArray(): Extent[] {
    const out: Extent[] = new Array<Extent>(this.#count);
    for (let i = 0; i < this.#count; i++) out[i] = { offset: this.#pairs[2 * i]!, length: this.#pairs[2 * i + 1]! };
    return out;
  }

  /** Bytes of this list inside [from, to). */
  bytesWithin(from: number, to: number): number {
    let n = 0;
    for (let i = this.#firstEndingAfter(from); i < this.#count && this.offsetAt(i) < to; i++) {
      n += Math.min(to, this.endAt(i)) - Math.max(from, this.offsetAt(i));
    }
    return n;
  }

  /** Index of the first extent that ends after `offset` (binary search). */
  #firstEndingAfter(offset: number): number {
    let lo = 0;
    let hi = this.#count;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.endAt(mid) <= offset) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** The parts of this list not covered by `remove`. */
  subtract(remove: Extents): ExtentList {
    const b = ExtentList.from(remove);
    const out = new ExtentList(this.#count);
    let j = 0;
    for (let i = 0; i < this.#count; i++) {
      let start = this.offsetAt(i);
      const end = this.endAt(i);
      while (j < b.length && b.endAt(j) <= start) j++;
      for (let k = j; k < b.length && b.offsetAt(k) < end; k++) {
        if (b.offsetAt(k) > start) out.push(start, b.offsetAt(k) - start);
        start = Math.max(start, b.endAt(k));
        if (start >= end) break;
      }
      if (start < end) out.push(start, end - start);
    }
    return out;
  }

  /** The parts covered by both this list and `other`. */
  intersect(other: Extents): ExtentList {
    const b = ExtentList.from(other);
    const out = new ExtentList();
    let i = 0;
    let j = 0;
    while (i < this.#count && j < b.length) {
      const start = Math.max(this.offsetAt(i), b.offsetAt(j));
      const end = Math.min(this.endAt(i), b.endAt(j));
      if (start < end) out.push(start, end - start);
      if (this.endAt(i) < b.endAt(j)) i++;
      else j++;
    }
    return out;
  }

  /** The bytes covered by this list or `other`. */
  union(other: Extents): ExtentList {
    const b = ExtentList.from(other);
    const out = new ExtentList(this.#count + b.length);
    let i = 0;
    let j = 0;
    while (i < this.#count || j < b.length) {
      if (j >= b.length || (i < this.#count && this.offsetAt(i) <= b.offsetAt(j))) {
        out.push(this.offsetAt(i), this.lengthAt(i));
        i++;
      } else {
        out.push(b.offsetAt(j), b.lengthAt(j));
        j++;
      }
    }
    return out;
  }

  /**
   * This list with every gap shorter than `gap` bytes closed: fewer, larger
   * extents covering at least the same bytes.
   */
  joinGaps(gap: number): ExtentList {
    const out = new ExtentList();
    for (let i = 0; i < this.#count; i++) {
      const n = out.length;
      if (n > 0 && this.offsetAt(i) - out.endAt(n - 1) < gap) {
        out.push(out.endAt(n - 1), this.endAt(i) - out.endAt(n - 1));
      } else out.push(this.offsetAt(i), this.lengthAt(i));
    }
    return out;
  }
}
