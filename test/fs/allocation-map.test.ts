import * as fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AllocationMap, openVolume } from '../../lib/fs/index.js';
import { layout } from '../fixtures/fat/corrupt.js';
import { haveTools, mkfs, pseudoRandom, Workdir } from '../fixtures/fat/tools.js';

describe('AllocationMap', () => {
  const make = (bits: string): AllocationMap => {
    const bitmap = new Uint8Array(Math.ceil(bits.length / 8));
    [...bits].forEach((b, j) => {
      if (b === '1') bitmap[j >> 3]! |= 1 << (j & 7);
    });
    const used = [...bits].filter((b) => b === '1').length;
    return new AllocationMap({
      bitmap,
      clusterCount: bits.length,
      clusterSize: 4096,
      dataOffset: 1 << 20,
      usedClusters: used,
      freeClusters: bits.length - used,
      badClusters: 0,
    });
  };

  it('merges used clusters into byte extents', () => {
    const m = make('0110000011111111111111111000000000000001');
    expect([...m.runs()]).toEqual([
      { cluster: 3, count: 2 },
      { cluster: 10, count: 17 },
      { cluster: 41, count: 1 },
    ]);
    expect(m.extents()).toEqual([
      { offset: (1 << 20) + 4096, length: 2 * 4096 },
      { offset: (1 << 20) + 8 * 4096, length: 17 * 4096 },
      { offset: (1 << 20) + 39 * 4096, length: 4096 },
    ]);
    expect(m.isAllocated(2)).toBe(false);
    expect(m.isAllocated(3)).toBe(true);
    expect(m.clusterOffset(2)).toBe(1 << 20);
    expect(m.usedBytes).toBe(20 * 4096);
    expect(m.lastCluster).toBe(41);
  });

  it('handles all-used, all-free and partial last bytes', () => {
    expect(make('1'.repeat(37)).extents()).toEqual([{ offset: 1 << 20, length: 37 * 4096 }]);
    expect(make('0'.repeat(37)).extents()).toEqual([]);
    expect([...make('00000000' + '11111111' + '1').runs()]).toEqual([{ cluster: 10, count: 9 }]);
  });

  it('finds the same runs as a bit-by-bit walk, word edges, set bits past the last cluster and all', () => {
    let x = 12345;
    const rnd = (): number => {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      return (x >>> 0) / 2 ** 32;
    };
    for (let t = 0; t < 200; t++) {
      const n = 1 + Math.floor(rnd() * 300);
      // Long runs and short ones: the state flips with a probability of its own per map.
      const p = [0.01, 0.1, 0.5, 0.9][t % 4]!;
      let on = rnd() < 0.5;
      let bits = '';
      for (let j = 0; j < n; j++) {
        if (rnd() < p) on = !on;
        bits += on ? '1' : '0';
      }
      const m = make(bits);
      // Bits past the last cluster (in the last byte) are set: they must not count.
      if (n % 8 !== 0) m.bitmap[m.bitmap.length - 1]! |= 0xff << (n % 8);
      const expected: { cluster: number; count: number }[] = [];
      for (let j = 0; j < n;) {
        if (bits[j] === '0') {
          j++;
          continue;
        }
        let k = j;
        while (k < n && bits[k] === '1') k++;
        expected.push({ cluster: j + 2, count: k - j });
        j = k;
      }
      expect([...m.runs()]).toEqual(expected);
      expect(m.extents()).toEqual(
        expected.map((r) => ({ offset: (1 << 20) + (r.cluster - 2) * 4096, length: r.count * 4096 })),
      );
    }
  });

  it('rejects cluster numbers outside the volume with a message naming them', () => {
    const m = make('1010');
    expect(() => m.isAllocated(1)).toThrow(/cluster: expected an integer from 2 to 5, got 1/);
    expect(() => m.isAllocated(6)).toThrow(/got 6/);
    expect(() => m.isAllocated(2.5)).toThrow(/got 2.5/);
  });
});

const tools = haveTools('mkfs.fat');
if (!tools) console.warn('skipping the 32 GiB allocation-map timing: mkfs.fat is not installed');

describe.skipIf(!tools)('allocation map of a 32 GiB FAT32 volume', () => {
  let work: Workdir;
  let image: string;
  const expected = { used: 0, free: 0, bad: 0 };

  beforeAll(() => {
    work = new Workdir();
    image = work.path('big.img');
    // 4 KiB clusters: 8 Mi clusters, a 32 MiB FAT.
    mkfs(image, 32 * 1024 * 1024 * 1024, { fat: 32, sectorsPerCluster: 8 });
    const l = layout(image);
    // Fill FAT #0 with a mix of free, bad, end-of-chain and link entries
    // (upper 4 bits set at random: they must be ignored).
    const fd = fs.openSync(image, 'r+');
    try {
      const chunkEntries = 1 << 20;
      const noise = pseudoRandom(chunkEntries * 4, 77);
      const buf = Buffer.alloc(chunkEntries * 4);
      for (let first = 0; first < l.clusterCount + 2; first += chunkEntries) {
        const n = Math.min(chunkEntries, l.clusterCount + 2 - first);
        for (let i = 0; i < n; i++) {
          const c = first + i;
          const r = noise[(i * 4 + first) % noise.length]!;
          let v: number;
          if (c < 3)
            v = c === 0 ? 0x0ffffff8 : 0x0fffffff; // media, clean bits, root dir end
          else if (r < 100) v = 0;
          else if (r < 104) v = 0x0ffffff7;
          else if (r < 180) v = 0x0fffffff;
          else v = 2 + ((c * 2654435761) % l.clusterCount);
          const hi = (noise[(i * 4 + 1) % noise.length]! & 0xf0) << 24;
          buf.writeUInt32LE(c < 3 ? v : (v | hi) >>> 0, i * 4);
          if (c >= 2) {
            if (v === 0) expected.free++;
            else if (v === 0x0ffffff7) expected.bad++;
            else expected.used++;
          }
        }
        fs.writeSync(fd, buf, 0, n * 4, l.fatOffset + first * 4);
      }
    } finally {
      fs.closeSync(fd);
    }
  });
  afterAll(() => work?.cleanup());

  it('agrees with the FAT and takes well under 100 ms', async () => {
    const v = await openVolume(image, { offset: 0 });
    try {
      expect(v.info().clusterCount).toBeGreaterThan(8_000_000);
      await v.allocationMap(); // warm the page cache
      const times: number[] = [];
      let map: AllocationMap | undefined;
      for (let i = 0; i < 5; i++) {
        const t0 = process.hrtime.bigint();
        map = await v.allocationMap();
        times.push(Number(process.hrtime.bigint() - t0) / 1e6);
      }
      const best = Math.min(...times);
      console.log(
        `allocation map of ${v.info().clusterCount} clusters (32 MiB FAT): best ${best.toFixed(1)} ms, runs ${times.map((t) => t.toFixed(1)).join(', ')} ms`,
      );
      expect(map!.usedClusters).toBe(expected.used);
      expect(map!.freeClusters).toBe(expected.free);
      expect(map!.badClusters).toBe(expected.bad);
      expect(best).toBeLessThan(100);
    } finally {
      v.close();
    }
  });
});
