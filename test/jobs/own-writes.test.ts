/**
 * The canary's own-write accounting against real counters: an ext4 file
 * system on a loop device over a file on tmpfs, where nothing but the test
 * does I/O (a loop device whose backing file has no block device counts as
 * itself). An image job reads a file there and writes its image beside it:
 * the quiet checks must take none of the job's writes (their writeback,
 * journal and metadata) for someone else's, and boost. A writer beside it
 * must be found. (Its own allocation may read a block bitmap now and then:
 * a rate of foreign I/O far below what counts as someone.)
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { closeSync, fsyncSync, mkdirSync, openSync, rmSync, writeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { basename, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backupMany, imageSource, initRepository, openRepository } from '../../lib/index.js';
import { lowtideAsync } from '../helpers/cli.js';
import { hasCommand, loopUnavailableReason, skipReason } from '../helpers/system.js';

const MiB = 1024 * 1024;
const SOURCE_MIB = 768;
const PAIR_MIB = 256;

function unavailable(): string | undefined {
  return (
    loopUnavailableReason() ??
    (hasCommand('mkfs.ext4') ? undefined : 'mkfs.ext4 is missing (e2fsprogs)') ??
    (spawnSync('findmnt', ['-n', '-o', 'FSTYPE', '--target', '/dev/shm'], { encoding: 'utf8' })
      .stdout?.split('\n')[0]
      ?.trim() === 'tmpfs'
      ? undefined
      : '/dev/shm is not tmpfs here')
  );
}

describe('own writes against real counters (ext4 on a loop device over tmpfs)', () => {
  const reason = unavailable();
  const base = `/dev/shm/lowtide-own-${process.pid}`;
  const img = `${base}.img`;
  const mnt = `${base}.mnt`;
  let loop: string | undefined;
  let mounted = false;
  const source = join(mnt, 'source.bin');
  /** The sources of the two image commands at once. */
  const pairSources = ['p.bin', 'q.bin'].map((n) => join(mnt, n));

  beforeAll(() => {
    if (reason) return;
    const fd = openSync(img, 'w');
    closeSync(fd);
    execFileSync('truncate', ['-s', `${2 * SOURCE_MIB + 4 * PAIR_MIB + 512}M`, img]);
    // Everything initialised now: no lazy inode-table writes during the test.
    execFileSync('mkfs.ext4', ['-q', '-F', '-E', 'lazy_itable_init=0,lazy_journal_init=0', img]);
    loop = execFileSync('losetup', ['--find', '--show', img], { encoding: 'utf8' }).trim();
    mkdirSync(mnt, { recursive: true });
    execFileSync('mount', [loop, mnt]);
    mounted = true;
    // Written now, each out before the next, while the free space is in one
    // piece: a file written into the holes an earlier test's repository
    // left comes out in pieces of ~1 MiB, and a read across two pieces is
    // two reads for the device (someone else's to the count, which stops).
    for (const [f, mib] of [[source, SOURCE_MIB] as const, ...pairSources.map((f) => [f, PAIR_MIB] as const)]) {
      const out = openSync(f, 'w');
      for (let i = 0; i < mib; i += 16) writeSync(out, randomBytes(16 * MiB));
      fsyncSync(out);
      closeSync(out);
    }
  }, 120_000);

  afterAll(() => {
    if (mounted) spawnSync('umount', [mnt], { stdio: 'ignore' });
    if (loop) spawnSync('losetup', ['--detach', loop], { stdio: 'ignore' });
    rmSync(mnt, { recursive: true, force: true });
    rmSync(img, { force: true });
  });

  it('an image written beside its source on the same storage: no foreign I/O seen, boosted', async () => {
    if (skipReason('own writes on a loop device', reason)) return;
    const r = await imageSource({ source, output: join(mnt, 'out.img'), force: true });
    const t = r.throttle;
    const b = t.probes!.boost;
    rmSync(join(mnt, 'out.img'));
    expect(t.storageDevices).toEqual([basename(loop!)]);
    expect(t.ownWriteBytes).toBe(r.bytesWritten);
    expect(b.deviceCounters).toBe(true);
    // The storage is one device right under the source: others' reads are
    // counted while the job runs, and checks are few (the calibration is one).
    expect(b.checks).toBeGreaterThanOrEqual(1);
    expect(b.running.counted).toBe(true);
    expect(b.running.countedMs).toBeGreaterThan(0);
    expect(b.running.reads / (b.running.countedMs / 1000)).toBeLessThan(20);
    // None of the job's writes is taken for someone else's; a read the
    // job's own allocation makes (a block bitmap) may be, now and then.
    expect(b.foreignWriteBytes).toBe(0);
    expect(b.endedByWrites).toBe(0);
    // Below canary.quietIops (20/s), the rate it takes for someone else at
    // work, or fewer than a burst (3) over the little drained time of a
    // short job's checks (two such reads in 96 ms are 20.8/s); the job's own
    // writes, counted as foreign, were hundreds a second.
    const seen = Math.round((b.foreignIops * b.drainedMs) / 1000);
    expect(seen < 3 || b.foreignIops < 20, `${seen} foreign I/Os in ${b.drainedMs} ms drained`).toBe(true);
    // A short job spends its first checks finding the storage quiet.
    expect(b.boostedMs).toBeGreaterThan(0.25 * r.seconds * 1000);
  }, 120_000);

  it('two backups at once from the same storage, into a repository there: neither is someone else to the other', async () => {
    if (skipReason('jobs at once on a loop device', reason)) return;
    // Two sources of 192 MiB: with the repository they fit beside the first source.
    const sources = ['a.bin', 'b.bin'].map((n) => join(mnt, n));
    for (const f of sources) {
      const out = openSync(f, 'w');
      for (let i = 0; i < 192; i += 16) writeSync(out, randomBytes(16 * MiB));
      closeSync(out);
    }
    execFileSync('sync', ['-f', sources[0]!]);
    const repoPath = join(mnt, 'repo');
    await initRepository(repoPath);
    try {
      const r = await backupMany({ sources, repository: repoPath, parallel: 2 });
      expect(
        r.results.map((x) => x.ok),
        JSON.stringify(r.results),
      ).toEqual([true, true]);
      const repo = await openRepository(repoPath);
      try {
        for (const { id } of r.results) {
          const t = (await repo.readManifest(id!)).throttle;
          const b = t.probes!.boost;
          expect(t.storageDevices).toEqual([basename(loop!)]);
          // Each job's reads are counted while the other runs: the other's
          // reads (~1700 a second when they counted) are not someone else's.
          // What is left are reads the two jobs' chunk writes make the file
          // system do (its block bitmaps): 10-30 a second over these short jobs.
          expect(b.running.counted).toBe(true);
          expect(b.running.stopped).toBeUndefined();
          expect(b.running.reads / (b.running.countedMs / 1000)).toBeLessThan(100);
          // Nor are the other's chunk writes.
          expect(b.foreignWriteBytes).toBe(0);
          expect(b.endedByWrites).toBe(0);
        }
      } finally {
        repo.close();
      }
    } finally {
      rmSync(repoPath, { recursive: true, force: true });
      for (const f of sources) rmSync(f, { force: true });
    }
  }, 120_000);

  it('two image commands at once (two processes) from the same storage: neither is someone else to the other', async () => {
    if (skipReason('processes at once on a loop device', reason)) return;
    const sources = pairSources;
    const outputs = sources.map((f) => `${f}.img`);
    try {
      // Capped at 150 MB/s, each takes ~1.7 s: the two overlap for most of it.
      const runs = sources.map((f, i) =>
        lowtideAsync(['image', f, outputs[i]!, '--rate-limit', '150', '--json', '--no-progress']),
      );
      const results = await Promise.all(runs.map((r) => r.done));
      for (const r of results) {
        expect(r.status, r.stderr).toBe(0);
        const t = (JSON.parse(r.stdout) as Awaited<ReturnType<typeof imageSource>>).throttle;
        const b = t.probes!.boost;
        expect(t.storageDevices).toEqual([basename(loop!)]);
        // The other process's reads (hundreds a second at this rate) are
        // not someone else's; what is left are reads the two outputs'
        // allocation makes the file system do.
        expect(b.running.counted).toBe(true);
        expect(b.running.stopped).toBeUndefined();
        expect(b.running.countedMs).toBeGreaterThan(500);
        expect(b.running.reads / (b.running.countedMs / 1000)).toBeLessThan(40);
        // Nor are its writes.
        expect(b.foreignWriteBytes).toBe(0);
        expect(b.endedByWrites).toBe(0);
      }
    } finally {
      for (const f of outputs) rmSync(f, { force: true });
    }
  }, 120_000);

  it('a writer beside it on the same storage is someone else: its writes are counted as such', async () => {
    if (skipReason('a foreign writer on a loop device', reason)) return;
    // 4 KiB direct writes over the same 80 MiB, one after the other (some
    // thousands a second here), for as long as the job runs.
    const other = join(mnt, 'other.bin');
    const writer = spawn(
      'sh',
      [
        '-c',
        'while :; do dd if=/dev/zero of="$1" bs=4k count=20000 oflag=direct conv=notrunc status=none; done',
        'sh',
        other,
      ],
      {
        stdio: 'ignore',
        detached: true,
      },
    );
    try {
      const r = await imageSource({ source, output: join(mnt, 'out2.img'), force: true });
      const b = r.throttle.probes!.boost;
      expect(b.busy + b.endedByWrites).toBeGreaterThan(0);
      // The writer's rate depends on the machine (thousands a second when
      // idle, a few under other work): what matters is that it is counted.
      expect(b.foreignIops).toBeGreaterThan(0);
      expect(b.foreignWriteBytes).toBeGreaterThan(0);
    } finally {
      process.kill(-writer.pid!, 'SIGKILL');
    }
  }, 120_000);
});
