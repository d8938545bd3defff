import { writeFileSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { backup, initRepository, restore, type Extent } from '../../lib/index.js';
import { intersectExtents } from '../../lib/advanced.js';
import { planImage } from '../../lib/fs/plan.js';
import { openVolume } from '../../lib/fs/volume.js';
import { cmp, lowtide } from '../helpers/cli.js';
import { skipReason } from '../helpers/system.js';
import { getFatEntry, layout } from '../fixtures/fat/corrupt.js';
import { populate } from '../fixtures/fat/populate.js';
import { fsck, haveTools, mkfs, Mtools, pseudoRandom, Workdir } from '../fixtures/fat/tools.js';

const MiB = 1024 * 1024;
const missing = haveTools('mkfs.fat', 'fsck.fat', 'mcopy', 'mdir') ? undefined : 'needs dosfstools and mtools';

describe.skipIf(skipReason('images and backups with exclusions', missing))('--exclude', () => {
  const work = new Workdir('lowtide-exclude-');
  afterAll(() => work.cleanup());

  it('leaves excluded files out of a valid image, never reading them, and the backup restores the same image', async () => {
    const src = work.path('vol.img');
    writeFileSync(src, pseudoRandom(40 * MiB, 3));
    mkfs(src, 40 * MiB, { fat: 32, sectorsPerCluster: 1, label: 'EXCL' });
    const mt = new Mtools(src);
    const pop = populate(mt, work.dir, { clusterSize: 512, seed: 4 });
    const patterns = ['/frag/big.bin', '/Docs', '**/*.dat', '/nothing-like-this'];
    const gone = (p: string): boolean =>
      p === '/frag/big.bin' || p === '/Docs' || p.startsWith('/Docs/') || p.toLowerCase().endsWith('.dat');

    // Extents of the excluded files and the free clusters, from the source.
    const vol = await openVolume(src);
    const excludedExtents: Extent[] = [];
    for (const [path] of pop.files)
      if (gone(path) && pop.files.get(path)!.length > 0) excludedExtents.push(...(await vol.fileExtents(path)));
    vol.close();
    const l = layout(src);
    const free: Extent[] = [];
    for (let c = 2; c < l.clusterCount + 2; c++)
      if (getFatEntry(src, l, c) === 0)
        free.push({ offset: l.dataOffset + (c - 2) * l.clusterSize, length: l.clusterSize });

    const plan = await planImage({ source: src, exclude: patterns });
    expect(intersectExtents(plan.extents, excludedExtents)).toEqual([]);
    expect(intersectExtents(plan.extents, free)).toEqual([]);
    expect(plan.warnings).toContain('exclude pattern "/nothing-like-this" matched nothing');

    const out = work.path('out.img');
    const args = ['image', src, out, '--json', ...patterns.flatMap((p) => ['--exclude', p])];
    const r = lowtide(args);
    expect(r.status).toBe(0);
    const s = JSON.parse(r.stdout) as {
      bytesRead: number;
      plan: { excluded: { path: string }[]; bytesExcluded: number };
    };
    expect(s.bytesRead).toBe(plan.bytesToRead);
    expect(s.plan.bytesExcluded).toBe([...pop.files].filter(([p]) => gone(p)).reduce((n, [, d]) => n + d.length, 0));
    expect(fsck(out).clean).toBe(true);
    const mo = new Mtools(out);
    const kept = mt.paths().filter((p) => !gone(p));
    expect(mo.paths().sort()).toEqual(kept.sort());
    for (const [path, data] of pop.files) if (!gone(path)) expect(mo.get(path).equals(data)).toBe(true);

    // The same exclusions through a backup give the same image.
    const repo = work.path('repo');
    await initRepository(repo);
    const b = await backup({ source: src, repository: repo, exclude: patterns });
    const restored = work.path('restored.img');
    await restore({ repository: repo, backup: b.id, target: restored });
    expect(cmp(out, restored)).toBe(true);
    const list = lowtide(['files', '--repo', repo, b.id, '--json']);
    expect((JSON.parse(list.stdout) as { entries: { path: string }[] }).entries.map((e) => e.path).sort()).toEqual(
      kept.sort(),
    );
  });

  it('bad patterns and a partition that does not exist are usage errors', () => {
    const src = work.path('small.img');
    mkfs(src, 8 * MiB, { fat: 16, sectorsPerCluster: 1 });
    expect(lowtide(['image', src, work.path('x.img'), '--exclude', '/']).status).toBe(2);
    const r = lowtide(['image', src, work.path('y.img'), '--exclude', '7:/a']);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/names partition 7/);
    expect(lowtide(['image', src, work.path('z.img'), '--exclude', '/a', '--all-blocks']).status).toBe(2);
  });
});
