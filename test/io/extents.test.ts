import { describe, expect, it } from 'vitest';
import type { Extent } from '../../lib/index.js';
import { intersectExtents, mergeExtents, splitExtents, subtractExtents, totalLength } from '../../lib/advanced.js';
import { patternBytes } from '../helpers/tmp.js';

/** Oracle: a byte map of which offsets an extent list covers. */
function coverage(extents: readonly Extent[], size: number): Uint8Array {
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
