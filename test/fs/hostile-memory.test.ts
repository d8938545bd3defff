/**
 * Small images built to take memory: directories thousands deep with long
 * names, and a volume with millions of free fragments. The CLI runs as a
 * child process under /usr/bin/time, which reports its peak resident set
 * size and the time it took.
 */
import { spawnSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { backup, initRepository } from '../../lib/index.js';
import { listFiles } from '../../lib/jobs/files.js';
import { buildDeepTree } from '../fixtures/fat/deep.js';
import { buildFragmentedVolume } from '../fixtures/fat/fragments.js';
import { fsck, haveTools, Workdir } from '../fixtures/fat/tools.js';
import { CLI, lowtideMeasured, timeMissing, type Measured } from '../helpers/cli.js';
import { skipReason } from '../helpers/system.js';

const MiB = 1024 * 1024;
const missing = !haveTools('mkfs.fat', 'fsck.fat') ? 'needs dosfstools' : timeMissing();

describe.skipIf(skipReason('deep directory trees', missing))('hostile images: memory of deep trees', () => {
  const work = new Workdir('lowtide-deep-');
  afterAll(() => work.cleanup());

  it('a tree 60 deep with 255-character names lists every level with its full path', async () => {
    const img = work.path('deep60.img');
    const tree = buildDeepTree(img, 60);
    const report = fsck(img);
    expect(report.clean).toBe(true);
    expect(report.files).toBe(61);
    const listing = await listFiles({ source: img });
    expect(listing).toHaveLength(61);
    for (let level = 1; level <= 60; level++) {
      expect(listing[level - 1]!.path).toBe(`/${tree.name}`.repeat(level));
      expect(listing[level - 1]!.isDirectory).toBe(true);
    }
    expect(listing[60]!.path).toBe(`/${tree.name}`.repeat(60) + '/BOTTOM.TXT');
    // The same paths in a backup's catalog.
    const repo = work.path('repo60');
    await initRepository(repo);
    const b = await backup({ source: img, repository: repo });
    expect(b.manifest.catalog).not.toBeNull();
  }, 120_000);

  it('4000 deep with 255-character names: files and backup stay under 200 MiB, with a clear error', () => {
    const img = work.path('deep4000.img');
    buildDeepTree(img, 4000);
    const report = fsck(img);
    expect(report.clean).toBe(true);
    expect(report.files).toBe(4001);

    const files = lowtideMeasured(['files', img]);
    expect(files.status).toBe(1);
    expect(files.stderr).toMatch(/UNSUPPORTED.*longer than the limit of 16384 bytes \(directories nested too deep\)/);
    expect(files.peakRssBytes).toBeLessThan(200 * MiB);

    const repo = work.path('repo4000');
    expect(spawnSync(process.execPath, [CLI, 'init', repo]).status).toBe(0);
    const b = lowtideMeasured(['backup', img, '--repo', repo, '--json']);
    expect(b.status, b.stderr).toBe(0);
    expect(b.peakRssBytes).toBeLessThan(200 * MiB);
    const manifest = JSON.parse(b.stdout) as { catalog: unknown; filesystems: { warnings: string[] } };
    // The image is backed up whole; the catalog is left out, and said so.
    expect(manifest.catalog).toBeNull();
    expect(manifest.filesystems.warnings.join('\n')).toMatch(/no file catalog: .*longer than the limit/);
  }, 300_000);
});

describe.skipIf(skipReason('8 million free fragments', missing))('hostile images: memory of free fragments', () => {
  const work = new Workdir('lowtide-fragments-');
  afterAll(() => work.cleanup());

  it('8 million free fragments: image and backup stay under 500 MiB and copy every used cluster', () => {
    // 8 GiB of 512-byte clusters, every other one used: sparse on disk but for its FATs.
    const img = work.path('fragments.img');
    const vol = buildFragmentedVolume(img, 8 * 1024 * MiB);
    expect(vol.freeFragments).toBeGreaterThan(8_000_000);
    const source = fsck(img);
    expect(source.clean, source.output).toBe(true);
    expect(source.usedClusters).toBe(vol.usedClusters);
    const report = (what: string, m: Measured): void =>
      console.log(`${what}: ${m.seconds} s, peak RSS ${(m.peakRssBytes / MiB).toFixed(0)} MiB`);

    const out = work.path('image.img');
    const im = lowtideMeasured(['image', img, out, '--json'], 900_000);
    report(`image of ${vol.freeFragments} free fragments`, im);
    expect(im.status, im.stderr).toBe(0);
    expect(im.peakRssBytes).toBeLessThan(500 * MiB);
    const summary = JSON.parse(im.stdout) as { bytesNotRead: number; plan: { extentCount: number } };
    // Free clusters are never read, so the plan keeps one extent per used cluster.
    expect(summary.bytesNotRead).toBe(vol.freeFragments * 512);
    expect(summary.plan.extentCount).toBeGreaterThan(8_000_000);
    const imaged = fsck(out);
    expect(imaged.clean, imaged.output).toBe(true);
    expect(imaged.usedClusters).toBe(source.usedClusters);
    rmSync(out);

    const repo = work.path('repo');
    expect(spawnSync(process.execPath, [CLI, 'init', repo]).status).toBe(0);
    const b = lowtideMeasured(['backup', img, '--repo', repo, '--json'], 900_000);
    report(`backup of ${vol.freeFragments} free fragments`, b);
    expect(b.status, b.stderr).toBe(0);
    expect(b.peakRssBytes).toBeLessThan(500 * MiB);
    const manifest = JSON.parse(b.stdout) as {
      chunkSize: number;
      stats: { bytesRead: number };
      plan: { extents: [number, number][]; gapsJoinedBelow?: number };
      catalog: unknown;
      filesystems: { warnings: string[] };
    };
    expect(manifest.stats.bytesRead).toBe(8 * 1024 * MiB - vol.freeFragments * 512);
    // Too many extents to list: the manifest joins gaps below a chunk.
    expect(manifest.plan.gapsJoinedBelow).toBe(manifest.chunkSize);
    expect(manifest.plan.extents.length).toBeLessThan(10);
    // A file of more fragments than a catalog lists: no catalog, and said so.
    expect(manifest.catalog).toBeNull();
    expect(manifest.filesystems.warnings.join('\n')).toMatch(
      /no file catalog: .*FRAG0000\.BIN: more than 1048576 fragments/,
    );

    const restored = work.path('restored.img');
    const r = lowtideMeasured(['restore', 'latest', restored, '--repo', repo], 900_000);
    report('restore', r);
    expect(r.status, r.stderr).toBe(0);
    const back = fsck(restored);
    expect(back.clean, back.output).toBe(true);
    expect(back.usedClusters).toBe(source.usedClusters);
  }, 3_600_000);
});
