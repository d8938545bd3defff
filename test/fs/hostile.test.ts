import { writeFileSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { planImage } from '../../lib/fs/plan.js';
import { layout } from '../fixtures/fat/corrupt.js';
import { imageSource } from '../../lib/jobs/image.js';
import { backup, initRepository } from '../../lib/index.js';
import { listFiles } from '../../lib/jobs/files.js';
import { skipReason } from '../helpers/system.js';
import { haveTools, mkfs, Mtools, patch, pseudoRandom, readAt, sfdisk, Workdir } from '../fixtures/fat/tools.js';

const MiB = 1024 * 1024;
const missing = haveTools('mkfs.fat', 'mcopy', 'sfdisk') ? undefined : 'needs dosfstools, mtools and sfdisk';

/** An MBR partition entry (LBA only; CHS left as sfdisk wrote it or zero). */
function mbrEntry(image: string, slot: number, type: number, startSector: number, sectors: number): void {
  const e = Buffer.alloc(16);
  e[4] = type;
  e.writeUInt32LE(startSector, 8);
  e.writeUInt32LE(sectors, 12);
  patch(image, 446 + 16 * slot, e);
}

describe.skipIf(skipReason('hostile disk images', missing))('hostile images: nothing dropped silently', () => {
  const work = new Workdir('lowtide-hostile-');
  afterAll(() => work.cleanup());

  it("a partition inside another FAT partition's free clusters is copied, with a warning", async () => {
    const disk = work.path('overlap.img');
    writeFileSync(disk, Buffer.alloc(24 * MiB));
    sfdisk(disk, 'label: dos\nstart=2048, size=40960, type=6\n');
    mkfs(disk, 24 * MiB, { fat: 16, sectorsPerCluster: 4, offsetSectors: 2048, kib: 20 * 1024 });
    new Mtools(disk, 2048 * 512).put('/A.BIN', pseudoRandom(100 * 1024, 3), work.dir);
    // Partition 2: 2 MiB at 12 MiB, inside partition 1's free clusters, holding data.
    const p2 = { start: 12 * MiB, size: 2 * MiB };
    mbrEntry(disk, 1, 0x83, p2.start / 512, p2.size / 512);
    const data = pseudoRandom(p2.size, 9);
    patch(disk, p2.start, data);

    const plan = await planImage({ source: disk });
    expect(plan.partitions.map((p) => p.index)).toEqual([1, 2]);
    expect(plan.warnings.join('\n')).toMatch(/partitions 1 and 2 overlap/);
    const out = work.path('overlap-out.img');
    await imageSource({ source: disk, output: out });
    expect(readAt(out, p2.start, p2.size).equals(data)).toBe(true);
    // Free clusters of partition 1 outside partition 2 are still left out.
    expect(plan.bytesToRead).toBeLessThan(8 * MiB);
  });

  it('bytes of a FAT partition past the end of its volume are copied', async () => {
    const disk = work.path('tail.img');
    writeFileSync(disk, Buffer.alloc(24 * MiB));
    sfdisk(disk, 'label: dos\nstart=2048, size=40960, type=6\n');
    // The volume covers 16 of the partition's 20 MiB.
    mkfs(disk, 24 * MiB, { fat: 16, sectorsPerCluster: 4, offsetSectors: 2048, kib: 16 * 1024 });
    const tailAt = MiB + 16 * MiB;
    const tail = pseudoRandom(4 * MiB, 5);
    patch(disk, tailAt, tail);
    const out = work.path('tail-out.img');
    await imageSource({ source: disk, output: out });
    expect(readAt(out, tailAt, tail.length).equals(tail)).toBe(true);
  });

  it('300k free fragments: planned by used blocks, with --strict and --exclude, no stack overflow', async () => {
    const img = work.path('fragments.img');
    mkfs(img, 320 * MiB, { fat: 32, sectorsPerCluster: 1 });
    new Mtools(img).put('/KEEP.TXT', 'keep', work.dir);
    new Mtools(img).put('/DROP.TXT', 'drop', work.dir);
    const l = layout(img);
    // Every other cluster from 100 on allocated (a one-cluster chain): a free fragment between each.
    const fat = readAt(img, l.fatOffset, l.fatBytes);
    let fragments = 0;
    for (let c = 100; c < l.clusterCount + 2; c += 2) {
      fat.writeUInt32LE(0x0fffffff, c * 4);
      fragments++;
    }
    for (let k = 0; k < l.fatCount; k++) patch(img, l.fatOffset + k * l.fatBytes, fat);
    expect(fragments).toBeGreaterThan(300_000);
    const plan = await planImage({ source: img, strict: true, exclude: ['/DROP.TXT'] });
    expect(plan.partitions[0]?.mode ?? 'used').toBe('used');
    expect(plan.warnings).toEqual([]);
    expect(plan.excluded.map((e) => e.path)).toEqual(['/DROP.TXT']);
    expect(plan.extents.length).toBeGreaterThan(300_000);
    // Free clusters are not read: about half the data area.
    expect(plan.bytesToRead).toBeLessThan(200 * MiB);
  }, 120_000);

  it('directories nested past the path limit are a clear error in files; backup still completes', async () => {
    const img = work.path('deep.img');
    mkfs(img, 16 * MiB, { fat: 16 });
    const mt = new Mtools(img);
    let path = '';
    for (let i = 0; i < 90; i++) {
      path += '/' + 'd'.repeat(200) + i;
      mt.mkdir(path);
    }
    const err = await listFiles({ source: img }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'UNSUPPORTED' });
    expect((err as Error).message).toMatch(/longer than the limit of 16384 bytes/);
    const repo = work.path('repo-deep');
    await initRepository(repo);
    const b = await backup({ source: img, repository: repo });
    expect(b.manifest.plan.mode).toBe('used');
    expect(b.manifest.catalog).toBeNull();
    expect(b.manifest.filesystems!.warnings.join('\n')).toMatch(/no file catalog: .*longer than the limit/);
  }, 120_000);
});
