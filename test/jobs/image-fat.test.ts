import { readFileSync, writeFileSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { planImage } from '../../lib/fs/plan.js';
import type { Extent } from '../../lib/index.js';
import { intersectExtents } from '../../lib/advanced.js';
import { cmp, lowtide } from '../helpers/cli.js';
import { skipReason } from '../helpers/system.js';
import { getFatEntry, layout } from '../fixtures/fat/corrupt.js';
import { populate } from '../fixtures/fat/populate.js';
import { extract, fsck, haveTools, mkfs, Mtools, patch, pseudoRandom, sfdisk, Workdir } from '../fixtures/fat/tools.js';

const MiB = 1024 * 1024;
const missing = haveTools('mkfs.fat', 'fsck.fat', 'mcopy', 'mdir', 'sfdisk')
  ? undefined
  : 'needs dosfstools, mtools and fdisk (sfdisk)';
const work = new Workdir('lowtide-image-fat-');
afterAll(() => work.cleanup());

/** Free data clusters as byte extents, decoded from the FAT by the test's own reader. */
function freeClusterExtents(image: string, base = 0): Extent[] {
  const l = layout(image, base);
  const out: Extent[] = [];
  for (let c = 2; c < l.clusterCount + 2; c++) {
    if (getFatEntry(image, l, c) === 0)
      out.push({ offset: l.dataOffset + (c - 2) * l.clusterSize, length: l.clusterSize });
  }
  return out;
}

interface ImageJson {
  size: number;
  bytesRead: number;
  bytesNotRead: number;
  plan: {
    bytesToRead: number;
    warnings: string[];
    partitions: { index: number; mode: string; fileSystem: string | null; fat: { usedClusters: number } | null }[];
  };
}

describe.skipIf(skipReason('FAT-aware imaging', missing))('used-blocks imaging of FAT volumes', () => {
  it.each([
    { fat: 12 as const, size: 4 * MiB, spc: 2 },
    { fat: 16 as const, size: 48 * MiB, spc: 4 },
    { fat: 32 as const, size: 40 * MiB, spc: 1 }, // >= 65525 clusters, as FAT32 needs
  ])('FAT$fat: reads only used clusters, the image is clean and every file reads back', async ({ fat, size, spc }) => {
    const src = work.path(`fat${fat}.img`);
    writeFileSync(src, pseudoRandom(size, fat)); // old data that free clusters keep
    mkfs(src, size, { fat, sectorsPerCluster: spc, label: `FAT${fat}` });
    const mt = new Mtools(src);
    const pop = populate(mt, work.dir, { clusterSize: spc * 512, small: fat === 12 });

    const plan = await planImage({ source: src });
    const free = freeClusterExtents(src);
    expect(free.length).toBeGreaterThan(10);
    // The plan never reads a free cluster.
    expect(intersectExtents(plan.extents, free)).toEqual([]);
    expect(plan.partitions).toHaveLength(1);
    expect(plan.partitions[0]!.mode).toBe('used');

    const out = work.path(`fat${fat}-out.img`);
    const r = lowtide(['image', src, out, '--json']);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const s = JSON.parse(r.stdout) as ImageJson;
    expect(s.bytesRead).toBe(plan.bytesToRead); // the reads counted by the engine
    expect(s.bytesNotRead).toBe(size - plan.bytesToRead);

    const before = fsck(src);
    const after = fsck(out);
    expect(after.clean).toBe(true);
    expect(after.usedClusters).toBe(before.usedClusters);
    expect(s.plan.partitions[0]!.fat!.usedClusters).toBe(before.usedClusters);
    const mo = new Mtools(out);
    expect(mo.paths().sort()).toEqual(mt.paths().sort());
    for (const [path, data] of pop.files) expect(mo.get(path).equals(data)).toBe(true);
    // Old data in free clusters did not travel.
    const img = readFileSync(out);
    for (const e of free.slice(0, 50))
      expect(img.subarray(e.offset, e.offset + e.length).every((b) => b === 0)).toBe(true);
  });

  it('a disk with a FAT partition, an unknown partition and gaps: only the FAT free space is skipped', () => {
    const disk = work.path('mbr.img');
    const size = 64 * MiB;
    writeFileSync(disk, pseudoRandom(size, 99));
    sfdisk(disk, 'label: dos\nstart=2048, size=40960, type=6\nstart=45056, size=40960, type=83\n');
    const fatStart = 2048 * 512;
    mkfs(disk, size, { fat: 16, offsetSectors: 2048, kib: 40960 / 2, sectorsPerCluster: 4 });
    const mt = new Mtools(disk, fatStart);
    const pop = populate(mt, work.dir, { clusterSize: 2048, seed: 7 });
    const out = work.path('mbr-out.img');
    const r = lowtide(['image', disk, out, '--json']);
    expect(r.status).toBe(0);
    const s = JSON.parse(r.stdout) as ImageJson;
    expect(s.plan.partitions.map((p) => [p.index, p.fileSystem, p.mode])).toEqual([
      [1, 'fat16', 'used'],
      [2, 'unknown', 'all'],
    ]);
    const a = readFileSync(disk);
    const b = readFileSync(out);
    // Table, gap before, between and after the partitions, and partition 2: byte-identical.
    for (const [from, to] of [
      [0, fatStart],
      [(2048 + 40960) * 512, size],
    ] as const) {
      expect(b.subarray(from, to).equals(a.subarray(from, to))).toBe(true);
    }
    const vol = work.path('mbr-p1.img');
    extract(out, fatStart, 40960 * 512, vol);
    expect(fsck(vol).clean).toBe(true);
    const mo = new Mtools(out, fatStart);
    for (const [path, data] of pop.files) expect(mo.get(path).equals(data)).toBe(true);
  });

  it('an unparseable FAT is copied in full with a warning; --strict makes it an error', () => {
    const src = work.path('bad.img');
    writeFileSync(src, pseudoRandom(8 * MiB, 5));
    mkfs(src, 8 * MiB, { fat: 16, sectorsPerCluster: 1 });
    patch(src, 0x0d, [3]); // sectors per cluster 3: not a power of two
    const out = work.path('bad-out.img');
    const r = lowtide(['image', src, out, '--json']);
    expect(r.status).toBe(0);
    const s = JSON.parse(r.stdout) as ImageJson;
    expect(s.plan.warnings.join('\n')).toMatch(/copying/);
    expect(cmp(src, out)).toBe(true);
    const strict = lowtide(['image', src, work.path('strict.img'), '--strict']);
    expect(strict.status).toBe(1);
    expect(strict.stderr).toMatch(/\[FAT_CORRUPT\]/);
  });

  it('--all-blocks copies everything, old data included', () => {
    const src = work.path('all.img');
    writeFileSync(src, pseudoRandom(8 * MiB, 6));
    mkfs(src, 8 * MiB, { fat: 16, sectorsPerCluster: 1 });
    const out = work.path('all-out.img');
    const r = lowtide(['image', src, out, '--all-blocks', '--json']);
    expect(r.status).toBe(0);
    expect(cmp(src, out)).toBe(true);
    expect((JSON.parse(r.stdout) as ImageJson).bytesNotRead).toBe(0);
  });
});
