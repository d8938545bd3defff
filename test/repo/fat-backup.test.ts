import { readFileSync, writeFileSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { backup, imageSource, initRepository, restore } from '../../lib/index.js';
import { planImage } from '../../lib/fs/plan.js';
import { cmp } from '../helpers/cli.js';
import { skipReason } from '../helpers/system.js';
import { populate } from '../fixtures/fat/populate.js';
import { fsck, haveTools, mkfs, Mtools, pseudoRandom, Workdir } from '../fixtures/fat/tools.js';

const MiB = 1024 * 1024;
const missing = haveTools('mkfs.fat', 'fsck.fat', 'mcopy', 'mdir') ? undefined : 'needs dosfstools and mtools';

describe.skipIf(skipReason('used-blocks backups of FAT volumes', missing))('used-blocks backups', () => {
  const work = new Workdir('lowtide-fat-backup-');
  afterAll(() => work.cleanup());

  it.each([64 * 1024, MiB])(
    'chunk size %i: restores the reconstructed image; incrementals store only what changed',
    async (chunkSize) => {
      const src = work.path(`vol-${chunkSize}.img`);
      writeFileSync(src, pseudoRandom(40 * MiB, 11)); // old data in what will be free space
      mkfs(src, 40 * MiB, { fat: 32, sectorsPerCluster: 1, label: 'BACKUP' });
      const mt = new Mtools(src);
      const pop = populate(mt, work.dir, { clusterSize: 512, seed: 21 });
      const repo = work.path(`repo-${chunkSize}`);
      await initRepository(repo, { chunkSize });

      const plan = await planImage({ source: src });
      const first = await backup({ source: src, repository: repo });
      expect(first.manifest.plan.mode).toBe('used');
      expect(first.manifest.stats.bytesRead).toBe(plan.bytesToRead);
      expect(plan.bytesToRead).toBeLessThan(20 * MiB);

      // The restored backup is the same reconstruction `lowtide image` makes.
      const restored = work.path(`restored-${chunkSize}.img`);
      await restore({ repository: repo, backup: first.id, target: restored });
      const imaged = work.path(`imaged-${chunkSize}.img`);
      await imageSource({ source: src, output: imaged });
      expect(cmp(restored, imaged)).toBe(true);
      expect(fsck(restored).clean).toBe(true);
      const mr = new Mtools(restored);
      for (const [path, data] of pop.files) expect(mr.get(path).equals(data)).toBe(true);

      // Change a little: one new file, one deleted, one rewritten.
      mt.put('/new file.bin', pseudoRandom(3000, 5), work.dir);
      mt.del('/frag/after0.bin');
      mt.put('/README.TXT', 'changed contents\r\n', work.dir);
      const second = await backup({ source: src, repository: repo });
      expect(second.manifest.parent).toBe(first.id);
      // FATs, directories and the new data: a handful of chunks, not the volume.
      expect(second.manifest.stats.chunksNew).toBeLessThanOrEqual(chunkSize === MiB ? 4 : 12);
      const restored2 = work.path(`restored2-${chunkSize}.img`);
      await restore({ repository: repo, backup: second.id, target: restored2 });
      expect(fsck(restored2).clean).toBe(true);
      const m2 = new Mtools(restored2);
      expect(m2.paths().sort()).toEqual(mt.paths().sort());
      expect(m2.get('/new file.bin').equals(pseudoRandom(3000, 5))).toBe(true);
      expect(m2.get('/README.TXT').toString()).toBe('changed contents\r\n');
    },
  );
});

describe.skipIf(skipReason('changed-extent backups of FAT volumes', missing))('changed-extent backups', () => {
  const work = new Workdir('lowtide-fat-changed-');
  afterAll(() => work.cleanup());

  it('chunks read in many pieces with unused clusters between them restore as the used-blocks reconstruction', async () => {
    const src = work.path('vol.img');
    writeFileSync(src, pseudoRandom(40 * MiB, 12)); // old data in what will be free space
    mkfs(src, 40 * MiB, { fat: 32, sectorsPerCluster: 1, label: 'CHANGED' });
    const mt = new Mtools(src);
    populate(mt, work.dir, { clusterSize: 512, seed: 22 });
    // Holes: every other one of many small files deleted, before the first backup.
    mt.mkdir('/h');
    for (let i = 0; i < 80; i++) mt.put(`/h/f${i}.bin`, pseudoRandom(512 * (1 + (i % 3)), 100 + i), work.dir);
    for (let i = 0; i < 80; i += 2) mt.del(`/h/f${i}.bin`);
    const repo = work.path('repo');
    await initRepository(repo, { chunkSize: MiB });
    const first = await backup({ source: src, repository: repo });
    const before = readFileSync(src);

    // New files only (nothing freed, so unchanged bytes keep their meaning):
    // they land in the holes populate() left, between clusters in use.
    for (let i = 0; i < 12; i++) mt.put(`/more${i}.bin`, pseudoRandom(700 + i * 900, 40 + i), work.dir);
    // The changed extents as changed-block tracking reports them: 4 KiB pieces that differ.
    const after = readFileSync(src);
    const changed: { offset: number; length: number }[] = [];
    for (let at = 0; at < after.length; at += 4096) {
      if (after.subarray(at, at + 4096).equals(before.subarray(at, at + 4096))) continue;
      const last = changed.at(-1);
      if (last && last.offset + last.length === at) last.length += 4096;
      else changed.push({ offset: at, length: 4096 });
    }
    expect(changed.length).toBeGreaterThan(3);

    const second = await backup({ source: src, repository: repo, parent: first.id, changed });
    expect(second.manifest.plan.mode).toBe('changed');
    // Several read extents in one chunk, with unused clusters between them.
    const perChunk = new Map<number, number>();
    for (const [offset] of second.manifest.plan.extents)
      perChunk.set(Math.floor(offset / MiB), (perChunk.get(Math.floor(offset / MiB)) ?? 0) + 1);
    expect(Math.max(...perChunk.values())).toBeGreaterThan(2);

    // The oracle: `lowtide image` (which writes each read where it belongs,
    // with no chunks to assemble) gives the image with free clusters zeroed;
    // unchanged chunks came from the parent, whose clusters did not change use.
    const restored = work.path('restored.img');
    await restore({ repository: repo, backup: second.id, target: restored });
    const imaged = work.path('imaged.img');
    await imageSource({ source: src, output: imaged });
    expect(cmp(restored, imaged)).toBe(true);
    expect(fsck(restored).clean).toBe(true);
    const mr = new Mtools(restored);
    for (let i = 0; i < 12; i++) expect(mr.get(`/more${i}.bin`).equals(pseudoRandom(700 + i * 900, 40 + i))).toBe(true);
  });
});

describe.skipIf(skipReason('file-level restore from backups', missing))('files and extract from a backup', () => {
  const work = new Workdir('lowtide-fat-files-');
  afterAll(() => work.cleanup());

  it('lists from the catalog and extracts single files and trees, reading only the chunks they need', async () => {
    const src = work.path('vol.img');
    writeFileSync(src, pseudoRandom(48 * MiB, 17));
    mkfs(src, 48 * MiB, { fat: 16, sectorsPerCluster: 8, label: 'CATALOG' });
    const mt = new Mtools(src);
    const pop = populate(mt, work.dir, { clusterSize: 4096, seed: 9 });
    const repo = work.path('repo');
    await initRepository(repo, { chunkSize: 64 * 1024 });
    const { id, manifest } = await backup({ source: src, repository: repo });
    expect(manifest.catalog?.entries).toBe(mt.paths().length);

    const { lowtide } = await import('../helpers/cli.js');
    const list = lowtide(['files', '--repo', repo, 'latest', '--json']);
    expect(list.status).toBe(0);
    const { entries } = JSON.parse(list.stdout) as { entries: { path: string; size: number; isDirectory: boolean }[] };
    expect(entries.map((e) => e.path).sort()).toEqual(mt.paths().sort());
    for (const e of entries) if (!e.isDirectory) expect(e.size).toBe(pop.files.get(e.path)!.length);

    // One file: the chunks read are exactly those under its extents.
    const { readFileSync } = await import('node:fs');
    const one = work.path('big.bin');
    const x = lowtide(['extract', '--repo', repo, id, '/frag/big.bin', one, '--json']);
    expect(x.status).toBe(0);
    expect(readFileSync(one).equals(pop.files.get('/frag/big.bin')!)).toBe(true);
    const { openVolume } = await import('../../lib/fs/volume.js');
    const vol = await openVolume(src);
    const ext = await vol.fileExtents('/frag/big.bin');
    vol.close();
    const chunks = new Set<number>();
    for (const e of ext)
      for (let c = Math.floor(e.offset / 65536); c <= Math.floor((e.offset + e.length - 1) / 65536); c++) chunks.add(c);
    expect((JSON.parse(x.stdout) as { chunksRead: number }).chunksRead).toBe(chunks.size);

    // The whole tree.
    const tree = work.path('tree');
    expect(lowtide(['extract', '--repo', repo, id, '/', tree]).status).toBe(0);
    const { join } = await import('node:path');
    for (const [path, data] of pop.files) expect(readFileSync(join(tree, path)).equals(data)).toBe(true);

    // A raw (non-FAT) backup has no catalog.
    const raw = work.path('raw.bin');
    writeFileSync(raw, pseudoRandom(MiB, 1));
    const rawBackup = await backup({ source: raw, repository: repo });
    const r = lowtide(['files', '--repo', repo, rawBackup.id]);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('has no file catalog');
  });
});
