import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { native } from '../../lib/native.js';
import { compressIfWorthIt, decompress } from '../../lib/repo/compress.js';
import { hasCommand, skipReason } from '../helpers/system.js';
import { patternBytes } from '../helpers/tmp.js';

const MiB = 1024 * 1024;
const text = Buffer.from('lowtide repository chunk text. '.repeat(40_000)).subarray(0, MiB);

/** Runs the zstd tool on `input`; returns its stdout. */
function zstdTool(args: string[], input: Buffer): Buffer {
  const r = spawnSync('zstd', args, { input, maxBuffer: 64 * MiB });
  if (r.status !== 0) throw new Error(`zstd ${args.join(' ')} failed: ${r.stderr.toString()}`);
  return r.stdout;
}

describe('compressIfWorthIt', () => {
  it('stores random data raw, compresses text, and compresses data that is random only in part', async () => {
    expect(await compressIfWorthIt(patternBytes(MiB, 1), 3)).toBeNull();
    const packed = await compressIfWorthIt(text, 3);
    expect(packed).not.toBeNull();
    expect(packed!.data.length).toBeLessThan(text.length / 10);
    expect((await decompress(packed!.data)).equals(text)).toBe(true);
    packed!.release();
    const half = Buffer.concat([patternBytes(MiB / 2, 2), Buffer.alloc(MiB / 2)]);
    const p2 = await compressIfWorthIt(half, 3);
    expect(p2).not.toBeNull();
    expect((await decompress(p2!.data)).equals(half)).toBe(true);
    p2!.release();
    // Small inputs are simply compressed (no sampling), and kept raw if that does not help.
    expect(await compressIfWorthIt(patternBytes(1000, 3), 3)).toBeNull();
    expect(await compressIfWorthIt(Buffer.alloc(1000), 3)).not.toBeNull();
  });

  it('reuses output buffers only after release: results held at once never share memory', async () => {
    const inputs = Array.from({ length: 20 }, (_, i) => Buffer.concat([patternBytes(MiB / 2, 10 + i), Buffer.alloc(MiB / 2, i)]));
    const held = await Promise.all(inputs.map((d) => compressIfWorthIt(d, 3)));
    for (const [i, p] of held.entries()) expect((await decompress(p!.data)).equals(inputs[i]!)).toBe(true);
    for (const p of held) p!.release();
    // Released buffers come back; what they now hold is the new data.
    const again = await Promise.all(inputs.slice(0, 5).map((d) => compressIfWorthIt(d, 3)));
    for (const [i, p] of again.entries()) expect((await decompress(p!.data)).equals(inputs[i]!)).toBe(true);
    for (const p of again) p!.release();
  });
});

describe('zstd (system libzstd)', () => {
  it('is loaded', () => {
    expect(native.zstdInfo().version).toMatch(/^1\.\d+\.\d+$/);
  });

  const noTool = hasCommand('zstd') ? undefined : 'the zstd tool is missing (Debian package zstd)';
  it.skipIf(skipReason('zstd frames against the zstd tool', noTool))('writes frames the zstd tool reads, and reads the frames it writes (with and without a recorded size)', async () => {
    const data = Buffer.concat([text, patternBytes(300_000, 4)]);
    for (const level of [1, 3, 19]) {
      const ours = await native.zstdCompress(data, level);
      expect(zstdTool(['-d', '-c'], ours).equals(data)).toBe(true);
    }
    // A frame that records its size (from a file) and one that does not (a pipe).
    const theirs = zstdTool(['-c', '-3'], data);
    expect((await decompress(theirs)).equals(data)).toBe(true);
    const streamed = zstdTool(['-c', '-3', '--no-content-size'], data);
    expect((await decompress(streamed)).equals(data)).toBe(true);
    // Without a recorded size the limit holds while decoding.
    await expect(decompress(streamed, data.length - 1)).rejects.toThrow(/more than the \d+ bytes expected/);
    // Concatenated frames decompress to the concatenation.
    const two = Buffer.concat([await native.zstdCompress(text, 3), streamed]);
    expect((await decompress(two)).equals(Buffer.concat([text, data]))).toBe(true);
  });

  it('rejects corrupt input, truncated frames and results larger than the limit', async () => {
    const frame = await native.zstdCompress(text, 3);
    await expect(decompress(Buffer.from('not a zstd frame at all'))).rejects.toMatchObject({ name: 'LowtideError', code: 'INVALID_ARGUMENT' });
    await expect(decompress(frame.subarray(0, frame.length - 5))).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await expect(decompress(frame, MiB - 1)).rejects.toThrow(/more than the 1048575 bytes expected/);
    expect((await decompress(frame, MiB)).equals(text)).toBe(true);
    const damaged = Buffer.from(frame);
    damaged[Math.floor(damaged.length / 2)]! ^= 0xff;
    const r = await decompress(damaged).then((b) => (b.equals(text) ? 'same' : 'different'), (e: { code?: string }) => e.code);
    // Either zstd notices (its own checks) or the bytes differ, which the chunk digest then catches.
    expect(r).not.toBe('same');
  });

  it('rejects bad arguments with INVALID_ARGUMENT', () => {
    expect(() => native.zstdCompress('x' as unknown as Uint8Array, 3)).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    expect(() => native.zstdCompress(text, 0)).toThrow(/level must be 1\.\.22/);
    expect(() => native.zstdDecompress(text, -1)).toThrow(/maxSize/);
  });
});
