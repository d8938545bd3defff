/**
 * Small images built to take memory: directories thousands deep with long
 * names. The CLI runs as a child process under /usr/bin/time, which reports
 * its peak resident set size.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { backup, initRepository } from '../../lib/index.js';
import { listFiles } from '../../lib/jobs/files.js';
import { buildDeepTree } from '../fixtures/fat/deep.js';
import { fsck, haveTools, Workdir } from '../fixtures/fat/tools.js';
import { CLI } from '../helpers/cli.js';
import { skipReason } from '../helpers/system.js';

const MiB = 1024 * 1024;
const TIME = '/usr/bin/time';
const missing = !haveTools('mkfs.fat', 'fsck.fat')
  ? 'needs dosfstools'
  : !existsSync(TIME)
    ? 'needs /usr/bin/time (Debian package time) to read a child process peak RSS'
    : undefined;

interface Measured {
  status: number;
  stdout: string;
  stderr: string;
  peakRssBytes: number;
}

/** Runs the built CLI; its peak RSS as /usr/bin/time reports it (the last stderr line). */
function lowtideMeasured(args: string[]): Measured {
  const r = spawnSync(TIME, ['-f', 'peak-rss-kib %M', process.execPath, CLI, ...args], {
    encoding: 'utf8',
    timeout: 300_000,
    maxBuffer: 64 * MiB,
  });
  const m = /peak-rss-kib (\d+)\s*$/.exec(r.stderr);
  if (!m) throw new Error(`no peak RSS from ${TIME}: ${r.stderr.slice(-2000)}`);
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr, peakRssBytes: Number(m[1]) * 1024 };
}

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
