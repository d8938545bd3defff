import { readFileSync, readlinkSync, readdirSync, truncateSync, writeFileSync, mkdirSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LowtideError, ioUringAvailable, openSource, type Block, type EngineName } from '../../lib/index.js';
import { attachLoop, detachLoop, loopUnavailableReason, skipReason } from '../helpers/system.js';
import { TempDir, patternBytes } from '../helpers/tmp.js';

const tmp = new TempDir();
// Not a multiple of 4 KiB nor of 512: the tail exercises short reads at EOF.
const SIZE = 5 * 1024 * 1024 + 3 * 4096 + 1234;
const data = patternBytes(SIZE, 7);
const file = tmp.file('source.bin');

beforeAll(() => writeFileSync(file, data));
afterAll(() => tmp.remove());

/** Reads everything a reader yields into a buffer by offset; checks no overlap. */
async function collect(
  blocks: AsyncIterable<Block>,
  size: number,
): Promise<{ buf: Buffer; order: number[]; lengths: number[] }> {
  const buf = Buffer.alloc(size);
  const order: number[] = [];
  const lengths: number[] = [];
  for await (const b of blocks) {
    b.data.copy(buf, b.offset);
    order.push(b.offset);
    lengths.push(b.length);
    expect(b.data.length).toBe(b.length);
    expect(b.latencyNs).toBeGreaterThan(0);
  }
  return { buf, order, lengths };
}

const engines: EngineName[] = ioUringAvailable() ? ['io_uring', 'threads'] : ['threads'];
if (!ioUringAvailable()) console.warn('[skip] io_uring engine tests: the kernel refuses io_uring here');

describe.each(engines)('engine %s', (engine) => {
  it.each([
    [4096, 1],
    [4096, 8],
    [65536, 4],
    [65536, 32],
    [1 << 20, 1],
    [1 << 20, 32],
    [3 * 1024 * 1024, 2],
  ])('whole file, block %i, queue depth %i', async (blockSize, queueDepth) => {
    const src = await openSource(file);
    try {
      expect(src.size).toBe(SIZE);
      const reader = src.read(undefined, { blockSize, queueDepth, engine });
      expect(reader.engine).toBe(engine);
      const { buf, order, lengths } = await collect(reader, SIZE);
      expect(buf.equals(data)).toBe(true);
      // Ordered by default, split at absolute block boundaries.
      expect(order).toEqual([...order].sort((a, b) => a - b));
      expect(lengths.every((l) => l <= blockSize)).toBe(true);
      expect(order.every((o) => o % blockSize === 0)).toBe(true);
      const stats = reader.stats();
      expect(stats.maxInFlight).toBeLessThanOrEqual(queueDepth);
      if (engine === 'io_uring' && SIZE / blockSize >= queueDepth) expect(stats.maxInFlight).toBe(queueDepth);
    } finally {
      await src.close();
    }
  });

  it('buffered mode reads the same bytes', async () => {
    const src = await openSource(file, { direct: 'off' });
    try {
      expect(src.direct).toBe(false);
      const { buf } = await collect(src.read(undefined, { blockSize: 1 << 16, queueDepth: 8, engine }), SIZE);
      expect(buf.equals(data)).toBe(true);
    } finally {
      await src.close();
    }
  });

  it('extents in any order, unaligned, delivered in extent order', async () => {
    const extents = [
      { offset: 4 * 1024 * 1024 + 17, length: 100_001 },
      { offset: 1, length: 1000 },
      { offset: 65536, length: 4096 },
      { offset: SIZE - 999, length: 999 },
      { offset: 2 * 1024 * 1024 - 3, length: 7 },
      { offset: 10, length: 0 },
    ];
    const src = await openSource(file);
    try {
      const seen: { offset: number; bytes: Buffer }[] = [];
      for await (const b of src.read(extents, { blockSize: 65536, queueDepth: 4, engine })) {
        seen.push({ offset: b.offset, bytes: Buffer.from(b.data) });
      }
      // Reassemble each extent from its pieces, in order.
      let i = 0;
      for (const e of extents.filter((x) => x.length > 0)) {
        const parts: Buffer[] = [];
        let at = e.offset;
        while (at < e.offset + e.length) {
          const piece = seen[i++]!;
          expect(piece.offset).toBe(at);
          parts.push(piece.bytes);
          at += piece.bytes.length;
        }
        expect(Buffer.concat(parts).equals(data.subarray(e.offset, e.offset + e.length))).toBe(true);
      }
      expect(i).toBe(seen.length);
    } finally {
      await src.close();
    }
  });

  it('unordered delivery covers every byte once', async () => {
    const src = await openSource(file);
    try {
      const { buf, lengths } = await collect(
        src.read(undefined, { blockSize: 65536, queueDepth: 16, ordered: false, engine }),
        SIZE,
      );
      expect(buf.equals(data)).toBe(true);
      expect(lengths.reduce((a, b) => a + b, 0)).toBe(SIZE);
    } finally {
      await src.close();
    }
  });

  it('a shorter pacing interval applies at once, also while the reader waits out a long one', async () => {
    // canary pauses the job with a 500 ms interval and then returns to well
    // under a millisecond: the reader must not wait for the long interval's
    // timer (it did, and issued only when something else woke it: 4 MB/s
    // for seconds in bench:impact).
    const src = await openSource(file);
    try {
      const reader = src.read(undefined, { blockSize: 4096, queueDepth: 1, pacingMs: 5000, engine });
      const first = await reader.nextBlock();
      expect(first).toBeDefined();
      // Let the reader go to sleep on its 5 s interval, then shorten it.
      await new Promise((r) => setTimeout(r, 50));
      reader.setPacing(1);
      const t0 = performance.now();
      for (let i = 0; i < 20; i++) expect(await reader.nextBlock()).toBeDefined();
      // 20 blocks 1 ms apart: ~20 ms; waiting for the old timer: > 4.9 s.
      expect(performance.now() - t0).toBeLessThan(2500);
      await reader.close();
    } finally {
      await src.close();
    }
  });

  it('queue depth and request size change while reading', async () => {
    const src = await openSource(file);
    try {
      const reader = src.read(undefined, {
        blockSize: 1 << 16,
        queueDepth: 2,
        maxQueueDepth: 16,
        heldBuffers: 1,
        engine,
      });
      const buf = Buffer.alloc(SIZE);
      let n = 0;
      const after: number[] = [];
      let switched = false;
      for await (const b of reader) {
        b.data.copy(buf, b.offset);
        if (switched) after.push(b.length);
        if (++n === 1) {
          reader.setBlockSize(4096);
          reader.setQueueDepth(16);
          switched = true;
          expect(reader.stats().queueDepth).toBe(16);
          expect(reader.stats().blockSize).toBe(4096);
        }
      }
      expect(buf.equals(data)).toBe(true);
      // Reads submitted before the change keep their size; later ones are small.
      // (at most 16 + 1 slots were read ahead at 64 KiB)
      expect(after.filter((l) => l <= 4096).length).toBeGreaterThan(1000);
      expect(() => reader.setQueueDepth(0)).toThrow(/queueDepth: expected an integer from 1 to 16, got 0/);
      expect(() => reader.setBlockSize(1000)).toThrow(/blockSize/);
    } finally {
      await src.close();
    }
  });

  it('retained blocks stay valid while later blocks arrive', async () => {
    const src = await openSource(file);
    try {
      const held: Block[] = [];
      for await (const b of src.read(undefined, { blockSize: 65536, queueDepth: 4, heldBuffers: 4, engine })) {
        if (held.length < 3) {
          b.retain();
          held.push(b);
        }
      }
      for (const b of held) {
        expect(b.data.equals(data.subarray(b.offset, b.offset + b.length))).toBe(true);
        b.release();
      }
    } finally {
      await src.close();
    }
  });

  it('a source truncated under the reader gives SHORT_READ with the offset', async () => {
    const f = tmp.file(`shrinking-${engine}.bin`);
    writeFileSync(f, data);
    const src = await openSource(f);
    try {
      truncateSync(f, 1024 * 1024);
      const err = await collect(src.read(undefined, { blockSize: 1 << 20, queueDepth: 4, engine }), SIZE).catch(
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(LowtideError);
      expect((err as LowtideError).code).toBe('SHORT_READ');
      expect((err as LowtideError).offset).toBe(1024 * 1024);
      expect((err as LowtideError).message).toContain('truncated');
    } finally {
      await src.close();
    }
  });

  it('aborting stops the read with ABORTED', async () => {
    const src = await openSource(file);
    try {
      const ac = new AbortController();
      let n = 0;
      const err = await (async () => {
        for await (const _ of src.read(undefined, { blockSize: 4096, queueDepth: 4, signal: ac.signal, engine })) {
          if (++n === 3) ac.abort();
        }
      })().catch((e: unknown) => e);
      expect(err).toBeInstanceOf(LowtideError);
      expect((err as LowtideError).code).toBe('ABORTED');
      expect(n).toBeLessThan(SIZE / 4096);
    } finally {
      await src.close();
    }
  });

  it('closing the source while reads are in flight is safe', async () => {
    for (let round = 0; round < 20; round++) {
      const src = await openSource(file);
      const reader = src.read(undefined, { blockSize: 65536, queueDepth: 32, engine });
      const it = reader[Symbol.asyncIterator]();
      await it.next();
      const closing = src.close();
      // Whatever the reader does now, it ends without crashing.
      const rest = await (async () => {
        let r = await it.next();
        while (!r.done) r = await it.next();
      })().then(
        () => 'ended',
        (e: unknown) => (e as LowtideError).code,
      );
      await closing;
      expect(['ended', 'CLOSED']).toContain(rest);
      expect(() => src.read()).toThrow(/closed/);
    }
  });

  it('breaking out of the loop releases the reader', async () => {
    const src = await openSource(file);
    try {
      for (let i = 0; i < 50; i++) {
        for await (const _ of src.read(undefined, { blockSize: 4096, queueDepth: 8, engine })) break;
      }
    } finally {
      await src.close();
    }
  });
});

describe('sources are opened read-only', () => {
  it('the descriptor has O_RDONLY (and O_DIRECT when direct)', async () => {
    const src = await openSource(file);
    try {
      // Find our descriptor for the file and read its flags (octal) from fdinfo.
      const fds = readdirSync('/proc/self/fd').filter((fd) => {
        try {
          return readlinkSync(`/proc/self/fd/${fd}`) === file;
        } catch {
          return false;
        }
      });
      expect(fds.length).toBeGreaterThan(0);
      for (const fd of fds) {
        const info = readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8');
        const flags = parseInt(/flags:\s+([0-7]+)/.exec(info)![1]!, 8);
        expect(flags & 0o3).toBe(0); // O_ACCMODE == O_RDONLY
        if (src.direct) expect(flags & 0o40000).toBe(0o40000); // O_DIRECT
      }
      expect(src.direct).toBe(true); // the test file systems accept O_DIRECT
    } finally {
      await src.close();
    }
  });
});

/** Mappings of this process that the kernel may back with huge pages: start address → size. */
function hugeEligibleMappings(): Map<string, number> {
  const out = new Map<string, number>();
  let current: { start: string; size: number } | undefined;
  for (const line of readFileSync('/proc/self/smaps', 'utf8').split('\n')) {
    const m = /^([0-9a-f]+)-([0-9a-f]+) /.exec(line);
    if (m) current = { start: m[1]!, size: Number(BigInt(`0x${m[2]}`) - BigInt(`0x${m[1]}`)) };
    else if (current && /^THPeligible:\s+1/.test(line)) out.set(current.start, current.size);
  }
  return out;
}

describe('read buffers', () => {
  const thp = (() => {
    try {
      return readFileSync('/sys/kernel/mm/transparent_hugepage/enabled', 'utf8');
    } catch {
      return '';
    }
  })();
  const reason = /\[(always|madvise)\]/.test(thp) ? undefined : 'transparent huge pages are disabled here';
  if (reason) console.warn(`[skip] huge-page read buffers: ${reason}`);
  // A sparse source: reading its holes costs no disk I/O.
  const big = tmp.file('sparse-640m.bin');
  beforeAll(() => {
    writeFileSync(big, data);
    truncateSync(big, 640 << 20);
  });
  /** Mappings of 8 MiB or more that appeared while the first block of `extents` was read. */
  async function slabMappings(
    path: string,
    extents: { offset: number; length: number }[],
  ): Promise<[string, number][]> {
    const before = hugeEligibleMappings();
    const src = await openSource(path);
    try {
      for await (const _ of src.read(extents, { blockSize: 1 << 20, queueDepth: 8 })) {
        return [...hugeEligibleMappings()].filter(([start, size]) => !before.has(start) && size >= 8 << 20);
      }
      throw new Error('the reader gave no block');
    } finally {
      await src.close();
    }
  }
  it.skipIf(reason !== undefined)(
    'of a long read live in their own 2 MiB-aligned mapping that may use huge pages',
    async () => {
      const fresh = await slabMappings(big, [{ offset: 0, length: 640 << 20 }]);
      expect(fresh.length).toBeGreaterThan(0);
      for (const [start] of fresh) expect(BigInt(`0x${start}`) % BigInt(2 << 20)).toBe(0n);
    },
  );
  it.skipIf(reason !== undefined)(
    'of a short read stay in ordinary pages (a huge page is zeroed whole on first touch)',
    async () => {
      // 64 scattered 64 KiB requests: with huge pages each would touch a 2 MiB page of its own.
      const extents = Array.from({ length: 64 }, (_, i) => ({ offset: i * (8 << 20), length: 64 << 10 }));
      expect(await slabMappings(big, extents)).toEqual([]);
    },
  );
});

describe('probe reads', () => {
  it('time one small read and give its latency; bad places are clear errors', async () => {
    const src = await openSource(file);
    try {
      for (const off of [0, 4096, 5 * 1024 * 1024]) {
        const ns = await src.probe(off);
        expect(ns).toBeGreaterThan(0);
        expect(ns).toBeLessThan(10e9);
      }
      expect(await src.probe(8192, 65536)).toBeGreaterThan(0);
      await expect(src.probe(100)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
      await expect(src.probe(0, 1000)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
      await expect(src.probe(-4096)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
      // The last whole page and beyond: the file's size is not a multiple of 4 KiB.
      await expect(src.probe(Math.floor(SIZE / 4096) * 4096)).rejects.toMatchObject({ code: 'OUT_OF_RANGE' });
      await expect(src.probe(Math.floor(SIZE / 4096) * 4096 + 8192)).rejects.toMatchObject({ code: 'OUT_OF_RANGE' });
    } finally {
      await src.close();
    }
    await expect(src.probe(0)).rejects.toMatchObject({ code: 'CLOSED' });
  });
});

describe('bad input', () => {
  it('missing path', async () => {
    const err = await openSource(tmp.file('nope')).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LowtideError);
    expect((err as LowtideError).code).toBe('NOT_FOUND');
    expect((err as LowtideError).message).toContain(tmp.file('nope'));
  });
  it('directory', async () => {
    const d = tmp.file('a-dir');
    mkdirSync(d);
    const err = await openSource(d).catch((e: unknown) => e);
    expect((err as LowtideError).code).toBe('NOT_A_SOURCE');
    expect((err as LowtideError).message).toContain('is a directory');
  });
  it('zero-length file', async () => {
    const f = tmp.file('empty');
    writeFileSync(f, '');
    const err = await openSource(f).catch((e: unknown) => e);
    expect((err as LowtideError).code).toBe('EMPTY_SOURCE');
  });
  it('path of the wrong type', async () => {
    await expect(openSource(42 as unknown as string)).rejects.toThrow(/path: expected a non-empty string, got 42/);
    await expect(openSource(file, { direct: 'maybe' as 'on' })).rejects.toThrow(
      /direct: expected one of "auto", "on", "off", got "maybe"/,
    );
  });
  it('block size not a multiple of the sector size, queue depth 0, bad extents', async () => {
    const src = await openSource(file);
    try {
      const code = (fn: () => unknown): string => {
        try {
          fn();
        } catch (e) {
          return `${(e as LowtideError).code}: ${(e as Error).message}`;
        }
        return 'no error';
      };
      expect(code(() => src.read(undefined, { blockSize: 1000 }))).toBe(
        `INVALID_ARGUMENT: blockSize: expected a multiple of the sector size (${src.sectorSize} bytes), got 1000`,
      );
      expect(code(() => src.read(undefined, { queueDepth: 0 }))).toBe(
        'INVALID_ARGUMENT: queueDepth: expected an integer from 1 to 1024, got 0',
      );
      expect(code(() => src.read(undefined, { blockSize: 1.5 }))).toMatch(/^INVALID_ARGUMENT: blockSize/);
      expect(code(() => src.read([{ offset: SIZE - 10, length: 11 }]))).toMatch(
        /^OUT_OF_RANGE: extent \[\d+, \d+\) reaches past the end/,
      );
      expect(code(() => src.read([{ offset: -1, length: 1 }]))).toMatch(/^INVALID_ARGUMENT: extents\[0\]/);
      expect(code(() => src.read(undefined, { engine: 'magic' as 'auto' }))).toMatch(/^INVALID_ARGUMENT: engine/);
    } finally {
      await src.close();
    }
  });
});

describe('loop device', () => {
  const reason = loopUnavailableReason();
  it.skipIf(skipReason('loop device reads', reason))(
    'reads a read-only loop device exactly, with its sector sizes',
    async () => {
      const img = tmp.file('loop.img');
      const size = 8 * 1024 * 1024;
      const bytes = patternBytes(size, 99);
      writeFileSync(img, bytes);
      const dev = attachLoop(img);
      try {
        for (const engine of engines) {
          const src = await openSource(dev);
          try {
            expect(src.kind).toBe('block');
            expect(src.size).toBe(size);
            expect(src.sectorSize).toBe(512);
            expect(src.direct).toBe(true);
            for (const [blockSize, queueDepth] of [
              [4096, 1],
              [65536, 8],
              [1 << 20, 32],
            ] as const) {
              const { buf } = await collect(src.read(undefined, { blockSize, queueDepth, engine }), size);
              expect(buf.equals(bytes)).toBe(true);
            }
            const { buf } = await collect(src.read([{ offset: 777, length: 5000 }], { engine }), size);
            expect(buf.subarray(777, 5777).equals(bytes.subarray(777, 5777))).toBe(true);
          } finally {
            await src.close();
          }
        }
      } finally {
        detachLoop(dev);
      }
    },
  );
});
