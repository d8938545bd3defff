import { describe, expect, it } from 'vitest';
import type { Extent } from '../../lib/index.js';
import { intersectExtents, mergeExtents, splitExtents, subtractExtents, totalLength } from '../../lib/advanced.js';
import { ExtentList } from '../../lib/io/extent-list.js';
import { patternBytes } from '../helpers/tmp.js';

/** Oracle: a byte map of which offsets an extent list covers. */
function coverage(extents: Iterable<Extent>, size: number): Uint8Array {
  const m = new Uint8Array(size);
  for (const e of extents) m.fill(1, e.offset, e.offset + e.length);
  return m;
}

function randomExtents(seed: number, n: number, size: number): Extent[] {
  const r = patternBytes(n * 8, seed);
  const out: Extent[] = [];
  for (let i = 0; i < n; i++) {
    const offset = r.readUInt16LE(i * 8) % size;
    const length = r.readUInt16LE(i * 8 + 2) % 200;
    out.push({ offset, length: Math.min(length, size - offset) });
  }
  return out;
}

describe('extent helpers against a byte-map oracle', () => {
  const SIZE = 4000;
  for (let seed = 1; seed <= 40; seed++) {
    it(`random lists, seed ${seed}`, () => {
      const a = randomExtents(seed, 30, SIZE);
      const b = randomExtents(seed + 1000, 30, SIZE);
      const ca = coverage(a, SIZE);
      const cb = coverage(b, SIZE);

      const merged = mergeExtents(a);
      expect(coverage(merged, SIZE)).toEqual(ca);
      for (let i = 1; i < merged.length; i++) {
        // sorted, disjoint and not touching
        expect(merged[i]!.offset).toBeGreaterThan(merged[i - 1]!.offset + merged[i - 1]!.length);
      }
      expect(merged.every((e) => e.length > 0)).toBe(true);
      expect(totalLength(merged)).toBe(ca.reduce((s, x) => s + x, 0));

      const diff = subtractExtents(a, b);
      expect(coverage(diff, SIZE)).toEqual(ca.map((x, i) => (x && !cb[i] ? 1 : 0)));

      const inter = intersectExtents(a, b);
      expect(coverage(inter, SIZE)).toEqual(ca.map((x, i) => (x && cb[i] ? 1 : 0)));

      const split = splitExtents(merged, 64);
      expect(coverage(split, SIZE)).toEqual(ca);
      for (const e of split) {
        expect(Math.floor(e.offset / 64)).toBe(Math.floor((e.offset + e.length - 1) / 64));
      }
    });
  }

  it('rejects malformed extents with a message naming the element', () => {
    expect(() =>
      mergeExtents([
        { offset: 0, length: 1 },
        { offset: 1.5, length: 1 },
      ]),
    ).toThrow(/extents\[1\]: expected an extent \{offset, length\} of non-negative safe integers/);
    expect(() => splitExtents([{ offset: 0, length: 10 }], 0)).toThrow(/blockSize: expected a positive integer, got 0/);
  });
});

/** Sorted, with no two extents touching or overlapping, and none empty. */
function expectCanonical(list: ExtentList): void {
  for (let i = 0; i < list.length; i++) {
    expect(list.lengthAt(i)).toBeGreaterThan(0);
    if (i > 0) expect(list.offsetAt(i)).toBeGreaterThan(list.endAt(i - 1));
  }
}

describe('ExtentList against a byte-map oracle', () => {
  const SIZE = 4000;
  for (let seed = 1; seed <= 30; seed++) {
    it(`random lists, seed ${seed}`, () => {
      const a = ExtentList.from(randomExtents(seed, 30, SIZE));
      const bArray = randomExtents(seed + 1000, 30, SIZE);
      const b = ExtentList.from(bArray);
      const ca = coverage(a, SIZE);
      const cb = coverage(b, SIZE);
      expect(ca).toEqual(coverage(randomExtents(seed, 30, SIZE), SIZE));
      expectCanonical(a);
      expect(a.totalLength).toBe(ca.reduce((s, x) => s + x, 0));
      expect(a.toArray()).toEqual([...a]);
      expect(a.flat().length).toBe(2 * a.length);

      const checks: [ExtentList, (x: number, y: number) => boolean][] = [
        [a.subtract(b), (x, y) => x === 1 && y === 0],
        [a.intersect(b), (x, y) => x === 1 && y === 1],
        [a.union(b), (x, y) => x === 1 || y === 1],
      ];
      for (const [list, rule] of checks) {
        expectCanonical(list);
        expect(coverage(list, SIZE)).toEqual(ca.map((x, i) => (rule(x, cb[i]!) ? 1 : 0)));
      }

      // The streamed subtraction: the removed extents one at a time, in order.
      const streamed = ExtentList.subtractStream(a, 1, (remove) => {
        for (const e of b) remove(e.offset, e.length);
      });
      expectCanonical(streamed);
      expect(streamed.toArray()).toEqual(a.subtract(b).toArray());

      // Gaps below 50 bytes closed: covers at least the same, every gap left is 50 or more.
      const joined = a.joinGaps(50);
      expectCanonical(joined);
      const cj = coverage(joined, SIZE);
      expect(ca.every((x, i) => x === 0 || cj[i] === 1)).toBe(true);
      for (let i = 1; i < joined.length; i++)
        expect(joined.offsetAt(i) - joined.endAt(i - 1)).toBeGreaterThanOrEqual(50);

      // Bytes inside a window.
      expect(a.bytesWithin(1000, 2500)).toBe(ca.subarray(1000, 2500).reduce((s, x) => s + x, 0));
    });
  }

  it('merges touching extents as they are appended and refuses them out of order', () => {
    const l = new ExtentList(1);
    l.push(0, 10);
    l.push(10, 5);
    l.push(12, 1);
    l.push(20, 0);
    l.push(30, 2);
    expect(l.toArray()).toEqual([
      { offset: 0, length: 15 },
      { offset: 30, length: 2 },
    ]);
    expect(l.totalLength).toBe(17);
    expect(() => l.push(29, 1)).toThrow(/must come in offset order/);
  });

  it('a million one-byte fragments take 16 bytes each', () => {
    const n = 1_000_000;
    const l = ExtentList.subtractStream(ExtentList.from([{ offset: 0, length: 2 * n }]), n, (remove) => {
      for (let i = 0; i < n; i++) remove(2 * i + 1, 1);
    });
    expect(l.length).toBe(n);
    expect(l.totalLength).toBe(n);
    expect(l.flat().buffer.byteLength).toBe(16 * n);
  });
});
