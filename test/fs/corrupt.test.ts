/**
 * Damaged file systems made on purpose: never a crash or a hang, always a
 * LowtideError with the right code (and the byte offset of the damage).
 */
import * as fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LowtideError } from '../../lib/errors.js';
import { openVolume, readPartitions, type FatVolume } from '../../lib/fs/index.js';
import {
  chainOf,
  getFatEntry,
  layout,
  setFatEntry,
  setFileSize,
  setFirstCluster,
  type Layout,
} from '../fixtures/fat/corrupt.js';
import { extract, haveTools, mkfs, Mtools, patch, pseudoRandom, readAt, Workdir } from '../fixtures/fat/tools.js';

const tools = haveTools('mkfs.fat', 'mcopy', 'mmd');
if (!tools) console.warn('skipping corrupt-input tests: dosfstools or mtools are not installed');

const MiB = 1 << 20;
const kinds = [
  { fat: 12 as const, bytes: 4 * MiB, spc: 4 },
  { fat: 16 as const, bytes: 32 * MiB, spc: 4 },
  { fat: 32 as const, bytes: 64 * MiB, spc: 1 },
];

async function rejectsWith(p: Promise<unknown>, code: string, message?: RegExp): Promise<LowtideError> {
  let caught: unknown;
  try {
    await p;
  } catch (err) {
    caught = err;
  }
  expect(caught, 'expected a rejection').toBeInstanceOf(LowtideError);
  const e = caught as LowtideError;
  expect(e.code, e.message).toBe(code);
  if (message) expect(e.message).toMatch(message);
  return e;
}

async function withVolume<T>(image: string, fn: (v: FatVolume) => Promise<T>): Promise<T> {
  const v = await openVolume(image, { offset: 0 });
  try {
    return await fn(v);
  } finally {
    v.close();
  }
}

describe.skipIf(!tools).each(kinds)('corrupt FAT$fat', ({ fat, bytes, spc }) => {
  let work: Workdir;
  let base: string;
  let l: Layout;
  let n = 0;
  const fresh = (): string => {
    const p = work.path(`c${n++}.img`);
    fs.copyFileSync(base, p);
    return p;
  };
  const entry = async (image: string, path: string) => withVolume(image, (v) => v.stat(path));

  beforeAll(() => {
    work = new Workdir();
    base = work.path('base.img');
    mkfs(base, bytes, { fat, sectorsPerCluster: spc, label: 'CORRUPT' });
    const mt = new Mtools(base);
    l = layout(base);
    mt.put('/A.BIN', pseudoRandom(l.clusterSize * 5, 1), work.dir);
    mt.put('/B.BIN', pseudoRandom(l.clusterSize * 3, 2), work.dir);
    for (const d of ['/Docs', '/Docs/a', '/Docs/a/b', '/Docs/a/b/c']) mt.mkdir(d);
    mt.put('/Docs/a/b/c/leaf.txt', 'leaf', work.dir);
    mt.put('/long name file.txt', 'long', work.dir);
  });
  afterAll(() => work?.cleanup());

  it('the clean base volume walks without error', async () => {
    await withVolume(base, async (v) => {
      expect((await v.files()).length).toBe(8);
      expect(await v.compareFatCopies()).toBeNull();
    });
  });

  it('detects a chain that loops (and that the FAT copies then differ)', async () => {
    const img = fresh();
    const a = await entry(img, '/A.BIN');
    const chain = chainOf(img, l, a.firstCluster);
    setFatEntry(img, l, chain[chain.length - 1]!, chain[1]!, 0);
    const e = await rejectsWith(
      withVolume(img, (v) => v.files()),
      'FAT_CORRUPT',
      /loops back: FAT entry of cluster \d+ links to cluster/,
    );
    expect(e.offset).toBe(l.fatOffset + Math.floor((chain[chain.length - 1]! * fat) / 8));
    await rejectsWith(
      withVolume(img, (v) => v.readFile('/A.BIN')),
      'FAT_CORRUPT',
      /loops back/,
    );
    await rejectsWith(
      withVolume(img, (v) => v.chain(a.firstCluster)),
      'FAT_CORRUPT',
      /loops back/,
    );
    expect(await withVolume(img, (v) => v.compareFatCopies())).toBe(
      l.fatOffset + l.fatBytes + Math.floor((chain[chain.length - 1]! * fat) / 8),
    );
  });

  it('detects cross-linked files', async () => {
    const img = fresh();
    const a = await entry(img, '/A.BIN');
    const b = await entry(img, '/B.BIN');
    const bc = chainOf(img, l, b.firstCluster);
    setFatEntry(img, l, bc[bc.length - 1]!, chainOf(img, l, a.firstCluster)[2]!);
    await rejectsWith(
      withVolume(img, (v) => v.files()),
      'FAT_CORRUPT',
      /cross-link/,
    );
    // One file alone is still readable: its own chain is fine.
    expect((await withVolume(img, (v) => v.readFile('/A.BIN'))).length).toBe(l.clusterSize * 5);
  });

  it('detects cluster numbers past the end, free and bad clusters inside a chain', async () => {
    for (const [value, re] of [
      [l.clusterCount + 5, /past the last cluster/],
      [0, /marked free inside the chain/],
      [fat === 32 ? 0x0ffffff7 : fat === 16 ? 0xfff7 : 0xff7, /bad cluster marker/],
      [1, /reserved value 1/],
    ] as const) {
      const img = fresh();
      const a = await entry(img, '/A.BIN');
      setFatEntry(img, l, chainOf(img, l, a.firstCluster)[1]!, value);
      await rejectsWith(
        withVolume(img, (v) => v.files()),
        'FAT_CORRUPT',
        re,
      );
      await rejectsWith(
        withVolume(img, (v) => v.fileExtents('/A.BIN')),
        'FAT_CORRUPT',
        re,
      );
    }
  });

  it('counts bad clusters as not in use', async () => {
    const img = fresh();
    const before = await withVolume(img, (v) => v.allocationMap());
    const free = [...Array(l.clusterCount).keys()].map((i) => i + 2).filter((c) => !before.isAllocated(c));
    setFatEntry(img, l, free[0]!, fat === 32 ? 0x0ffffff7 : fat === 16 ? 0xfff7 : 0xff7);
    setFatEntry(img, l, free[1]!, fat === 32 ? 0x0ffffff7 : fat === 16 ? 0xfff7 : 0xff7);
    const after = await withVolume(img, (v) => v.allocationMap());
    expect(after.badClusters).toBe(2);
    expect(after.usedClusters).toBe(before.usedClusters);
    expect(after.freeClusters).toBe(before.freeClusters - 2);
    expect(after.isAllocated(free[0]!)).toBe(false);
  });

  it('detects a first cluster outside the volume', async () => {
    const img = fresh();
    const a = await entry(img, '/A.BIN');
    setFirstCluster(img, a.entryOffset, l.clusterCount + 2);
    const e = await rejectsWith(
      withVolume(img, (v) => v.files()),
      'FAT_CORRUPT',
      /first cluster \d+ is outside clusters/,
    );
    expect(e.offset).toBe(a.entryOffset);
  });

  it('detects a file larger than its chain', async () => {
    const img = fresh();
    const b = await entry(img, '/B.BIN');
    setFileSize(img, b.entryOffset, l.clusterSize * 9);
    await rejectsWith(
      withVolume(img, (v) => v.files()),
      'FAT_CORRUPT',
      /needs 9 clusters but its chain has 3/,
    );
    await rejectsWith(
      withVolume(img, (v) => v.readFile('/B.BIN')),
      'FAT_CORRUPT',
      /larger than its cluster chain/,
    );
  });

  it('detects a directory that contains its own ancestor', async () => {
    const img = fresh();
    const a = await entry(img, '/Docs/a');
    const c = await entry(img, '/Docs/a/b/c');
    setFirstCluster(img, c.entryOffset, a.firstCluster);
    const e = await rejectsWith(
      withVolume(img, (v) => v.files()),
      'FAT_CORRUPT',
      /its own ancestor \/Docs\/a/,
    );
    expect(e.offset).toBe(c.entryOffset);
    // A directory pointing at the root (cluster 0) as a subdirectory.
    const img2 = fresh();
    setFirstCluster(img2, c.entryOffset, 0);
    await rejectsWith(
      withVolume(img2, (v) => v.files()),
      'FAT_CORRUPT',
      /first cluster 0/,
    );
  });

  it('ignores a long name whose checksum does not match (falls back to the 8.3 name)', async () => {
    const img = fresh();
    const e = await entry(img, '/long name file.txt');
    expect(e.lfnSlots).toBeGreaterThan(0);
    const sum = readAt(img, e.lfnOffset + 13, 1)[0]!;
    for (let i = 0; i < e.lfnSlots; i++) patch(img, e.lfnOffset + i * 32 + 13, [(sum + 1) & 0xff]);
    const { entries, stats } = await withVolume(img, (v) => v.scan());
    expect(stats.orphanLongNames).toBe(1);
    const byShort = entries.find((x) => x.shortName === e.shortName)!;
    expect(byShort.name).toBe(e.shortName);
    expect(byShort.lfnSlots).toBe(0);
  });

  it('reports the dirty bits and an invalid FSInfo', async () => {
    const img = fresh();
    const dirtyByte = fat === 32 ? 0x41 : 0x25;
    patch(img, dirtyByte, [1]);
    if (fat !== 12) {
      const f1 = getFatEntry(img, l, 1);
      setFatEntry(img, l, 1, fat === 32 ? f1 & ~0x08000000 : f1 & ~0x8000);
    }
    if (fat === 32) patch(img, 512, [0, 0, 0, 0]);
    await withVolume(img, async (v) => {
      const info = v.info();
      expect(info.dirty).toBe(true);
      expect(info.bootDirty).toBe(true);
      expect(info.fatDirty).toBe(fat !== 12);
      if (fat === 32) {
        expect(info.fsInfo).toMatchObject({ valid: false, freeCount: null });
        expect(info.warnings.join('\n')).toMatch(/FSInfo sector has bad signatures/);
      }
    });
  });

  const bpbCases: [string, number, number[], RegExp][] = [
    ['bytes per sector', 0x0b, [0xe8, 0x03], /bytes per sector 1000 is not a power of two/],
    ['bytes per sector 256', 0x0b, [0x00, 0x01], /bytes per sector 256/],
    ['sectors per cluster', 0x0d, [3], /sectors per cluster 3 is not a power of two/],
    ['reserved sectors', 0x0e, [0, 0], /reserved sector count is 0/],
    ['FAT count', 0x10, [0], /number of FATs is 0/],
    [
      'total sectors',
      fat === 12 ? 0x13 : 0x20,
      fat === 12 ? [0xff, 0xff] : [0xff, 0xff, 0xff, 0x0f],
      /exceed the volume size/,
    ],
  ];
  if (fat === 32) {
    bpbCases.push(
      ['root cluster 0', 0x2c, [0, 0, 0, 0], /root cluster 0 is outside clusters/],
      ['root cluster past the end', 0x2c, [0xff, 0xff, 0xff, 0x0f], /root cluster \d+ is outside/],
      ['FAT32 version', 0x2a, [1, 0], /unsupported FAT32 version/],
      ['active FAT', 0x28, [0x83, 0], /active FAT 3 does not exist/],
      ['FAT length', 0x24, [1, 0, 0, 0], /FAT of 1 sectors is too small/],
      ['root entries on FAT32', 0x11, [0x10, 0], /fixed root entries/],
    );
  } else {
    bpbCases.push(
      ['root entries', 0x11, [0, 0], /no root directory entries/],
      ['FAT length', 0x16, [1, 0], /FAT of 1 sectors is too small/],
    );
  }
  it.each(bpbCases)('rejects a bogus BPB field: %s', async (_name, offset, bytes_, re) => {
    const img = fresh();
    patch(img, offset, bytes_);
    const e = await rejectsWith(openVolume(img, { offset: 0 }), 'FAT_CORRUPT', re);
    expect(typeof e.offset).toBe('number');
    expect(e.message).toMatch(/FAT boot sector at byte offset \d+/);
  });

  it('rejects truncated images', async () => {
    const half = work.path('half.img');
    extract(base, 0, Math.floor(bytes / 2), half);
    await rejectsWith(openVolume(half, { offset: 0 }), 'FAT_CORRUPT', /exceed the volume size/);
    // Still recognised as a table-less FAT disk; opening it reports the damage.
    const t = await readPartitions(half);
    expect(t.partitions).toEqual([expect.objectContaining({ index: 0, fileSystem: `fat${fat}` })]);
    await rejectsWith(openVolume(half), 'FAT_CORRUPT', /cannot open the FAT partition 0 .*exceed the volume size/);
    const tiny = work.path('tiny.img');
    extract(base, 0, 300, tiny);
    await rejectsWith(openVolume(tiny, { offset: 0 }), 'FAT_CORRUPT', /smaller than one boot sector/);
    await rejectsWith(openVolume(tiny, { offset: 1000 }), 'OUT_OF_RANGE');
  });

  it('survives random damage to the metadata: never a crash or hang, only LowtideErrors', async () => {
    // The boot sector, the FAT entries in use, the root directory and the first directories.
    const rootStart = l.fatOffset + l.fatCount * l.fatBytes;
    const regions: [number, number][] = [
      [0, 90],
      [l.fatOffset, 96],
      [rootStart, l.dataOffset - rootStart + l.clusterSize * 12],
    ];
    const allowed = new Set(['FAT_CORRUPT', 'NOT_FOUND', 'INVALID_ARGUMENT']);
    let seed = 1000 + fat;
    let failures = 0;
    const started = Date.now();
    for (let round = 0; round < 150; round++) {
      const img = work.path('fuzz.img');
      fs.copyFileSync(base, img);
      const noise = pseudoRandom(16, seed++);
      const hits = 1 + (noise[0]! % 6);
      for (let k = 0; k < hits; k++) {
        const [from, len] = regions[(noise[14]! + k) % regions.length]!;
        const pos = from + (noise.readUInt32LE(1 + (k % 3) * 4) % len);
        patch(img, pos, [noise[13 + (k % 3)]!]);
      }
      try {
        const v = await openVolume(img, { offset: 0 });
        try {
          await v.allocationMap();
          const files = await v.files().catch((e: unknown) => {
            if (!(e instanceof LowtideError) || !allowed.has(e.code)) throw e;
            failures++;
            return [];
          });
          for (const f of files.slice(0, 20)) {
            if (f.isDirectory) await v.list(f.path).catch(expectLowtide(allowed));
            else await v.readFile(f.path).catch(expectLowtide(allowed));
          }
        } finally {
          v.close();
        }
      } catch (e) {
        expectLowtide(allowed)(e);
        failures++;
      }
    }
    expect(Date.now() - started).toBeLessThan(60_000);
    expect(failures).toBeGreaterThan(0);
  });
});

function expectLowtide(allowed: Set<string>): (e: unknown) => void {
  return (e: unknown) => {
    expect(e).toBeInstanceOf(LowtideError);
    expect(allowed.has((e as LowtideError).code), (e as Error).message).toBe(true);
  };
}

describe.skipIf(!tools)('FAT32 mirroring flags', () => {
  let work: Workdir;
  beforeAll(() => {
    work = new Workdir();
  });
  afterAll(() => work?.cleanup());

  it('reads only the active FAT when mirroring is off', async () => {
    const img = work.path('mirror.img');
    mkfs(img, 64 * MiB, { fat: 32, sectorsPerCluster: 1 });
    const mt = new Mtools(img);
    mt.put('/A.BIN', pseudoRandom(2048, 5), work.dir);
    const l = layout(img);
    const a = await withVolume(img, (v) => v.stat('/A.BIN'));
    // Damage FAT #0 only, then declare FAT #1 the active one.
    const chain = chainOf(img, l, a.firstCluster);
    setFatEntry(img, l, chain[chain.length - 1]!, chain[0]!, 0);
    await rejectsWith(
      withVolume(img, (v) => v.files()),
      'FAT_CORRUPT',
      /loops back/,
    );
    patch(img, 0x28, [0x81, 0x00]);
    await withVolume(img, async (v) => {
      expect(v.info()).toMatchObject({ mirroring: false, activeFat: 1 });
      expect((await v.readFile('/A.BIN')).equals(pseudoRandom(2048, 5))).toBe(true);
      expect((await v.allocationMap()).usedClusters).toBe(1 + 4);
    });
  });
});
