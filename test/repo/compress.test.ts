import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { native } from '../../lib/native.js';
import { decompress } from '../../lib/repo/compress.js';
import { CHUNK_HEADER_SIZE, ChunkEncoding, parseChunkHeader } from '../../lib/repo/format.js';
import { toLowtideError } from '../../lib/errors.js';
import { hasCommand, skipReason } from '../helpers/system.js';
import { TempDir, patternBytes } from '../helpers/tmp.js';

const MiB = 1024 * 1024;
const noTool = hasCommand('zstd') ? undefined : 'the zstd tool is missing (Debian package zstd)';
const text = Buffer.from('lowtide repository chunk text. '.repeat(40_000)).subarray(0, MiB);

/** Runs the zstd tool on `input`; returns its stdout. */
function zstdTool(args: string[], input: Buffer): Buffer {
  const r = spawnSync('zstd', args, { input, maxBuffer: 64 * MiB });
  if (r.status !== 0) throw new Error(`zstd ${args.join(' ')} failed: ${r.stderr.toString()}`);
  return r.stdout;
}

describe('storeChunkFile (one native task per chunk file)', () => {
  const tmp = new TempDir();
  afterAll(() => tmp.remove());
  let n = 0;
  /** Stores `data` as a new chunk file; returns the result and the file's bytes. */
  async function store(data: Buffer, level = 3) {
    const dir = tmp.file(`c${n++}`);
    mkdirSync(join(dir, 'tmp'), { recursive: true });
    mkdirSync(join(dir, 'chunks'));
    const final = join(dir, 'chunks', 'ab', 'chunk');
    const r = await native.storeChunkFile(data, level, join(dir, 'tmp', 'w.tmp'), final);
    expect(readdirSync(join(dir, 'tmp'))).toEqual([]);
    return { r, file: readFileSync(final), final, dir };
  }
  /** The plain bytes of a chunk file, decoded with the zstd tool (an independent decoder). */
  function plainOf(file: Buffer): Buffer {
    const h = parseChunkHeader(file, 'test');
    const body = file.subarray(CHUNK_HEADER_SIZE);
    const plain = h.encoding === ChunkEncoding.Zstd ? zstdTool(['-d', '-c'], body) : body;
    expect(plain.length).toBe(h.plainLength);
    return plain;
  }

  it.skipIf(skipReason('chunk files against the zstd tool', noTool))(
    'stores random data raw, compresses text and data random only in part; the zstd tool decodes them',
    async () => {
      const random = await store(patternBytes(MiB, 1));
      expect(random.r).toEqual({ written: true, storedBytes: MiB + CHUNK_HEADER_SIZE, encoding: 'raw' });
      expect(plainOf(random.file).equals(patternBytes(MiB, 1))).toBe(true);
      const t = await store(text);
      expect(t.r.encoding).toBe('zstd');
      expect(t.r.storedBytes).toBe(t.file.length);
      expect(t.file.length).toBeLessThan(text.length / 10);
      expect(plainOf(t.file).equals(text)).toBe(true);
      const half = Buffer.concat([patternBytes(MiB / 2, 2), Buffer.alloc(MiB / 2)]);
      const h = await store(half);
      expect(h.r.encoding).toBe('zstd');
      expect(plainOf(h.file).equals(half)).toBe(true);
      // Small inputs are simply compressed (no sampling), and kept raw if that does not help.
      expect((await store(patternBytes(1000, 3))).r.encoding).toBe('raw');
      const zeros = await store(Buffer.alloc(1000));
      expect(zeros.r.encoding).toBe('zstd');
      expect(plainOf(zeros.file).equals(Buffer.alloc(1000))).toBe(true);
    },
  );

  it.skipIf(skipReason('chunk files against the zstd tool', noTool))(
    'keeps tasks running at once apart: each file holds its own data',
    async () => {
      const inputs = Array.from({ length: 24 }, (_, i) =>
        Buffer.concat([patternBytes(MiB / 2, 10 + i), Buffer.alloc(MiB / 2, i)]),
      );
      const stored = await Promise.all(inputs.map((d) => store(d)));
      for (const [i, s] of stored.entries()) expect(plainOf(s.file).equals(inputs[i]!)).toBe(true);
    },
  );

  it('writes nothing when the chunk exists, creates a missing directory, and removes its temporary file on failure', async () => {
    const first = await store(text);
    const again = await native.storeChunkFile(patternBytes(MiB, 5), 3, join(first.dir, 'tmp', 'w2.tmp'), first.final);
    expect(again).toEqual({ written: false, storedBytes: 0, encoding: 'raw' });
    expect(readFileSync(first.final).equals(first.file)).toBe(true);
    expect(readdirSync(join(first.dir, 'tmp'))).toEqual([]);
    // The prefix directory did not exist before the first store.
    expect(readdirSync(join(first.dir, 'chunks'))).toEqual(['ab']);
    // A file where the chunk's directory should be: the existence check fails (IO_ERROR).
    writeFileSync(join(first.dir, 'chunks', 'cd'), 'not a directory');
    const notDir = await native
      .storeChunkFile(text, 3, join(first.dir, 'tmp', 'w3.tmp'), join(first.dir, 'chunks', 'cd', 'x'))
      .catch((e: unknown) => e);
    expect(toLowtideError(notDir).code).toBe('IO_ERROR');
    // No directory above the chunk's either: written, then the rename and the mkdir fail;
    // WRITE_FAILED naming the directory, and no temporary file left.
    const where = join(first.dir, 'gone', 'ef');
    const err = await native
      .storeChunkFile(text, 3, join(first.dir, 'tmp', 'w4.tmp'), join(where, 'x'))
      .catch((e: unknown) => e);
    expect(toLowtideError(err).code).toBe('WRITE_FAILED');
    expect((err as Error).message).toContain(`creating ${where}`);
    expect(readdirSync(join(first.dir, 'tmp'))).toEqual([]);
  });
});

describe('encodeChunk (a chunk object in memory, for remote repositories)', () => {
  const tmp = new TempDir();
  afterAll(() => tmp.remove());
  const key = patternBytes(32, 77);
  const inputs = [
    patternBytes(MiB, 1), // incompressible: raw
    text, // compressible: zstd
    Buffer.concat([patternBytes(MiB / 2, 2), Buffer.alloc(MiB / 2)]),
    patternBytes(1000, 3),
    Buffer.alloc(1000),
  ];

  it('gives the bytes storeChunkFile writes, plain and sealed, into a reused buffer', async () => {
    const dst = Buffer.alloc(MiB + 64, 0xee);
    for (const [i, data] of inputs.entries()) {
      const dir = tmp.file(`e${i}`);
      mkdirSync(join(dir, 'ab'), { recursive: true });
      await native.storeChunkFile(data, 3, join(dir, 'w.tmp'), join(dir, 'ab', 'plain'));
      const n = await native.encodeChunk(data, dst, 3);
      expect(dst.subarray(0, n).equals(readFileSync(join(dir, 'ab', 'plain')))).toBe(true);
      // Sealed (random nonces): both open with the key and the name to the same chunk file.
      const aad = `chunks/ab/${i}`;
      await native.storeChunkFile(data, 3, join(dir, 'w.tmp'), join(dir, 'ab', 'sealed'), key, aad);
      const fromFile = readFileSync(join(dir, 'ab', 'sealed'));
      const m = await native.encodeChunk(data, dst, 3, key, aad);
      expect(m).toBe(fromFile.length);
      const sealed = Buffer.from(dst.subarray(0, m));
      const a = await native.unseal(fromFile, key, aad);
      const b = await native.unseal(sealed, key, aad);
      expect(b).toBe(a);
      expect(sealed.subarray(12, 12 + b!).equals(fromFile.subarray(12, 12 + a!))).toBe(true);
      expect(sealed.subarray(12, 12 + b!).equals(readFileSync(join(dir, 'ab', 'plain')))).toBe(true);
      // Another name does not open it.
      expect(await native.unseal(Buffer.from(dst.subarray(0, m)), key, `${aad}x`)).toBeNull();
    }
  });

  it('refuses a destination without room for the worst case (raw, header, nonce and tag)', async () => {
    const data = patternBytes(4096, 5);
    expect(() => native.encodeChunk(data, Buffer.alloc(4096 + 43), 3)).toThrow(/room/);
    await expect(native.encodeChunk(data, Buffer.alloc(4096 + 44), 3, key, 'x')).resolves.toBe(4096 + 44);
    expect(() => native.encodeChunk(data, Buffer.alloc(8192), 0)).toThrow(/level must be 1\.\.22/);
  });
});

describe('zstd (system libzstd)', () => {
  it('is loaded', () => {
    expect(native.zstdInfo().version).toMatch(/^1\.\d+\.\d+$/);
  });

  it.skipIf(skipReason('zstd frames against the zstd tool', noTool))(
    'writes frames the zstd tool reads, and reads the frames it writes (with and without a recorded size)',
    async () => {
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
    },
  );

  it('rejects corrupt input, truncated frames and results larger than the limit', async () => {
    const frame = await native.zstdCompress(text, 3);
    await expect(decompress(Buffer.from('not a zstd frame at all'))).rejects.toMatchObject({
      name: 'LowtideError',
      code: 'INVALID_ARGUMENT',
    });
    await expect(decompress(frame.subarray(0, frame.length - 5))).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await expect(decompress(frame, MiB - 1)).rejects.toThrow(/more than the 1048575 bytes expected/);
    expect((await decompress(frame, MiB)).equals(text)).toBe(true);
    const damaged = Buffer.from(frame);
    damaged[Math.floor(damaged.length / 2)]! ^= 0xff;
    const r = await decompress(damaged).then(
      (b) => (b.equals(text) ? 'same' : 'different'),
      (e: { code?: string }) => e.code,
    );
    // Either zstd notices (its own checks) or the bytes differ, which the chunk digest then catches.
    expect(r).not.toBe('same');
  });

  it('rejects bad arguments with INVALID_ARGUMENT', () => {
    expect(() => native.zstdCompress('x' as unknown as Uint8Array, 3)).toThrow(
      expect.objectContaining({ code: 'INVALID_ARGUMENT' }),
    );
    expect(() => native.zstdCompress(text, 0)).toThrow(/level must be 1\.\.22/);
    expect(() => native.zstdDecompress(text, -1)).toThrow(/maxSize/);
  });
});
