import { readFileSync, readdirSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { lowtide } from '../helpers/cli.js';
import { skipReason } from '../helpers/system.js';
import { populate, type Populated } from '../fixtures/fat/populate.js';
import { fsck, haveTools, mkfs, Mtools, sfdisk, Workdir } from '../fixtures/fat/tools.js';

const MiB = 1024 * 1024;
const missing = haveTools('mkfs.fat', 'fsck.fat', 'mcopy', 'mdir', 'sfdisk')
  ? undefined
  : 'needs dosfstools, mtools and fdisk (sfdisk)';

describe.skipIf(skipReason('files/extract/inspect', missing))('lowtide files, extract and inspect on FAT', () => {
  const work = new Workdir('lowtide-files-');
  const img = work.path('vol.img');
  let pop: Populated;
  let mt: Mtools;
  beforeAll(() => {
    mkfs(img, 32 * MiB, { fat: 16, sectorsPerCluster: 4, label: 'FILES' });
    mt = new Mtools(img);
    pop = populate(mt, work.dir, { clusterSize: 2048, seed: 3 });
  });
  afterAll(() => work.cleanup());

  it('files --json lists what mdir lists, with the right sizes', () => {
    const r = lowtide(['files', img, '--json']);
    expect(r.status).toBe(0);
    const { entries } = JSON.parse(r.stdout) as { entries: { path: string; size: number; isDirectory: boolean }[] };
    expect(entries.map((e) => e.path).sort()).toEqual(mt.paths().sort());
    for (const e of entries) if (!e.isDirectory) expect(e.size).toBe(pop.files.get(e.path)!.length);
    expect(lowtide(['files', img]).stdout).toContain('/Docs/a/b/c/d/e/f/g/h/deep file.txt');
  });

  it('extract of one file matches mcopy; of a directory, every file in the tree', () => {
    const one = work.path('one.bin');
    const r = lowtide(['extract', img, '/frag/big.bin', one]);
    expect(r.status).toBe(0);
    expect(readFileSync(one).equals(mt.get('/frag/big.bin'))).toBe(true);
    expect(lowtide(['extract', img, '/frag/big.bin', one]).status).toBe(1); // exists
    expect(lowtide(['extract', img, '/frag/big.bin', one, '--force']).status).toBe(0);

    const tree = work.path('tree');
    const t = lowtide(['extract', img, '/', tree, '--json']);
    expect(t.status).toBe(0);
    const res = JSON.parse(t.stdout) as { files: number };
    expect(res.files).toBe(pop.files.size);
    for (const [path, data] of pop.files) expect(readFileSync(join(tree, path)).equals(data)).toBe(true);
    const docs = work.path('docs-out');
    expect(lowtide(['extract', img, '/Docs', docs]).status).toBe(0);
    expect(readdirSync(docs)).toEqual(expect.arrayContaining(['a']));
    expect(statSync(join(docs, 'a', 'empty')).size).toBe(0);
    const missingPath = lowtide(['extract', img, '/no/such/file', work.path('x')]);
    expect(missingPath.status).toBe(1);
    expect(missingPath.stderr).toContain('[NOT_FOUND]');
  });

  it('inspect --json reports partitions with FAT numbers that fsck.fat agrees with', () => {
    const r = lowtide(['inspect', img, '--json']);
    expect(r.status).toBe(0);
    const info = JSON.parse(r.stdout) as {
      partitions: {
        index: number;
        fileSystem: string;
        fat: { usedClusters: number; totalClusters: number; label: string };
      }[];
    };
    expect(info.partitions).toHaveLength(1);
    const f = fsck(img);
    expect(info.partitions[0]!.fat).toMatchObject({
      usedClusters: f.usedClusters,
      totalClusters: f.totalClusters,
      label: 'FILES',
    });
  });
});

describe.skipIf(skipReason('files on a partitioned disk', missing))('partitioned disks', () => {
  const work = new Workdir('lowtide-files2-');
  afterAll(() => work.cleanup());
  it('with two FAT partitions, --partition chooses; without it, a usage error', () => {
    const disk = work.path('two.img');
    writeFileSync(disk, '');
    truncateSync(disk, 40 * MiB);
    sfdisk(disk, 'label: dos\nstart=2048, size=32768, type=6\nstart=36864, size=32768, type=6\n');
    mkfs(disk, 40 * MiB, { fat: 16, offsetSectors: 2048, kib: 16384, sectorsPerCluster: 1 });
    mkfs(disk, 40 * MiB, { fat: 16, offsetSectors: 36864, kib: 16384, sectorsPerCluster: 1 });
    new Mtools(disk, 36864 * 512).put('/second.txt', 'in partition two', work.dir);
    const bad = lowtide(['files', disk]);
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/2 FAT partitions/);
    const r = lowtide(['files', disk, '--partition', '2', '--json']);
    expect(r.status).toBe(0);
    expect((JSON.parse(r.stdout) as { entries: { path: string }[] }).entries.map((e) => e.path)).toEqual([
      '/second.txt',
    ]);
  });
});
