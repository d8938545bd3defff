import { describe, expect, it } from 'vitest';
import { compressIfWorthIt, decompress } from '../../lib/repo/compress.js';
import { patternBytes } from '../helpers/tmp.js';

const MiB = 1024 * 1024;

describe('compressIfWorthIt', () => {
  it('stores random data raw, compresses text, and compresses data that is random only in part', async () => {
    expect(await compressIfWorthIt(patternBytes(MiB, 1), 3)).toBeNull();
    const text = Buffer.from('lowtide repository chunk text. '.repeat(40_000)).subarray(0, MiB);
    const packed = await compressIfWorthIt(text, 3);
    expect(packed).not.toBeNull();
    expect(packed!.length).toBeLessThan(text.length / 10);
    expect((await decompress(packed!)).equals(text)).toBe(true);
    const half = Buffer.concat([patternBytes(MiB / 2, 2), Buffer.alloc(MiB / 2)]);
    const p2 = await compressIfWorthIt(half, 3);
    expect(p2).not.toBeNull();
    expect((await decompress(p2!)).equals(half)).toBe(true);
    // Small inputs are simply compressed (no sampling), and kept raw if that does not help.
    expect(await compressIfWorthIt(patternBytes(1000, 3), 3)).toBeNull();
    expect(await compressIfWorthIt(Buffer.alloc(1000), 3)).not.toBeNull();
  });
});
