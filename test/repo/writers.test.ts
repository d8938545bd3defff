/**
 * Many writers, one local repository: concurrent `lowtide backup` processes
 * of different disks and of the same disk, prune while a backup runs, an
 * older lowtide's exclusive lock refused while backups run, SIGKILL of one
 * writer, and chunk files never replaced by a second writer.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, constants as fsc, existsSync, openSync, readdirSync, readFileSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { native } from '../../lib/native.js';
import { cmp, lowtide, lowtideAsync, type CliResult } from '../helpers/cli.js';
import { patternBytes, TempDir } from '../helpers/tmp.js';
import { pruneWhileBackupRuns, sharedImage, twoPairsAtOnce, type Writers } from '../helpers/writers.js';

const work = new TempDir('lowtide-writers-');
const children = new Set<ChildProcess>();

afterEach(async () => {
  for (const c of children) {
    c.kill('SIGKILL');
    await new Promise((r) => c.once('close', r));
  }
  children.clear();
});
afterAll(() => work.remove());

/** A CLI run in the background, killed after the test if it still runs. */
function background(args: string[]): { child: ChildProcess; done: Promise<CliResult> } {
  const run = lowtideAsync(args);
  children.add(run.child);
  void run.done.then(() => children.delete(run.child));
  return run;
}

function init(name: string): string {
  const repo = work.file(name);
  const r = lowtide(['init', repo, '--chunk-size', '64K']);
  expect(r.status, r.stderr).toBe(0);
  return repo;
}

const image = (name: string, seed: number, mib?: number, shared?: number): string =>
  sharedImage(work, name, seed, mib, shared);

const leases = (repo: string): string[] => readdirSync(join(repo, 'locks')).filter((n) => n.startsWith('backup-'));

/** Waits until `n` backup leases exist at once (the backups holding them overlap). */
async function waitForLeases(repo: string, n: number): Promise<void> {
  for (let i = 0; i < 1200; i++) {
    if (leases(repo).length >= n) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`${n} backup leases never existed at once in ${repo}`);
}

function chunkFiles(repo: string): string[] {
  const root = join(repo, 'chunks');
  return readdirSync(root).flatMap((p) => readdirSync(join(root, p)));
}

let restores = 0;
function restoresExactly(repo: string, id: string, source: string): void {
  const out = work.file(`restore-${restores++}.img`);
  const r = lowtide(['restore', id, out, '--repo', repo]);
  expect(r.status, r.stderr).toBe(0);
  expect(cmp(out, source)).toBe(true);
}

function verifyOk(repo: string): void {
  const r = lowtide(['verify', '--repo', repo]);
  expect(r.status, r.stdout + r.stderr).toBe(0);
}

const writers: Writers = {
  work,
  run: (args) => lowtide(args),
  start: background,
  waitForLeases: (repo, n) => waitForLeases(repo, n),
  manifests: async (repo) => manifests(repo).map((n) => n.slice(0, -'.json'.length)),
  leases: async (repo) => leases(repo),
  restoresExactly,
  verifyOk,
};

function manifests(repo: string): string[] {
  return readdirSync(join(repo, 'backups'))
    .filter((n) => n.endsWith('.json'))
    .sort();
}

describe('many writers, one local repository', () => {
  it('two backups of different disks at once, and the same disk twice at once', async () => {
    const repo = init('many');
    /** Two backups, the second started once the first holds its lease, both slowed so that they overlap. */
    const pair = async (x: string, y: string): Promise<[string, string]> => {
      const first = background(['backup', x, '--repo', repo, '--no-parent', '--rate-limit', '4']);
      await waitForLeases(repo, 1);
      const second = background(['backup', y, '--repo', repo, '--no-parent', '--rate-limit', '4']);
      await waitForLeases(repo, 2);
      // An older lowtide takes write.lock exclusively (for backup and prune): refused while backups run.
      const fd = openSync(join(repo, 'locks', 'write.lock'), fsc.O_RDWR);
      try {
        expect(native.tryLockExclusive(fd)).toBe(false);
      } finally {
        closeSync(fd);
      }
      const [r1, r2] = await Promise.all([first.done, second.done]);
      expect(r1.status, r1.stderr).toBe(0);
      expect(r2.status, r2.stderr).toBe(0);
      return [r1.stdout.trim(), r2.stdout.trim()];
    };
    await twoPairsAtOnce(writers, repo, pair);
    expect(readdirSync(join(repo, 'tmp'))).toEqual([]);
    // 2 MiB shared + 6 MiB each of a and b, in 64 KiB chunks, each stored once.
    expect(chunkFiles(repo)).toHaveLength(32 + 96 + 96);
  });

  it('prune while a backup runs: it deletes backups but nothing the backup needs', async () => {
    const repo = init('prune');
    // The slow backup of another disk finds the first backup's chunks stored.
    const r = await pruneWhileBackupRuns(writers, repo);
    expect(r.during.chunksRemoved).toBe(0);
    expect(r.during.chunksKept).toMatch(/1 backup\(s\) running \(lowtide backup \(pid \d+/);
    // With no backup running, prune sweeps: the first backup's chunks the slow one did not need.
    expect(r.after.chunksKept).toBeUndefined();
    restoresExactly(repo, r.second, r.d);
    verifyOk(repo);
  });

  it('a backup meets a running prune: REPO_LOCKED naming it, nothing written', async () => {
    const repo = init('locked');
    const holder = spawn(
      process.execPath,
      [
        '-e',
        `import(${JSON.stringify(join(import.meta.dirname, '../../dist/index.js'))}).then(async (m) => { const r = await m.openRepository(${JSON.stringify(repo)}); await r.lock('a slow prune', 'prune'); console.log('locked'); setInterval(() => {}, 1000); })`,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    children.add(holder);
    await new Promise<void>((res) => holder.stdout!.once('data', () => res()));
    const r = lowtide(['backup', image('e.img', 9, 1, 0), '--repo', repo]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/\[REPO_LOCKED\]: the repository is in use by a slow prune \(pid \d+/);
    expect(manifests(repo)).toEqual([]);
    expect(leases(repo)).toEqual([]);
    const again = lowtide(['prune', '--repo', repo, '--keep-last', '1']);
    expect(again.status).toBe(1);
    expect(again.stderr).toMatch(/\[REPO_LOCKED\]: the repository is being pruned by a slow prune \(pid \d+/);
  });

  it('SIGKILL of one writer: the other completes, the killed lease is stale at once and prune removes it', async () => {
    const repo = init('killed');
    const a = image('ka.img', 21);
    const b = image('kb.img', 22);
    const victim = background(['backup', a, '--repo', repo, '--rate-limit', '2']);
    await waitForLeases(repo, 1);
    const survivor = background(['backup', b, '--repo', repo, '--rate-limit', '4']);
    await waitForLeases(repo, 2);
    const victimLease = readdirSync(join(repo, 'locks')).find(
      (n) =>
        n.startsWith('backup-') && readFileSync(join(repo, 'locks', n), 'utf8').includes(`"pid":${victim.child.pid},`),
    );
    expect(victimLease).toBeDefined();
    victim.child.kill('SIGKILL');
    const killed = await victim.done;
    expect(killed.status).toBe(-1);
    const r = await survivor.done;
    expect(r.status, r.stderr).toBe(0);
    restoresExactly(repo, r.stdout.trim(), b);
    expect(manifests(repo)).toEqual([`${r.stdout.trim()}.json`]);
    // The killed backup's lease stays, but nobody holds its flock: it is stale, not a running backup.
    expect(leases(repo)).toEqual([victimLease]);
    const p = lowtide(['prune', '--repo', repo, '--keep-last', '5', '--json']);
    expect(p.status, p.stderr).toBe(0);
    const pruned = JSON.parse(p.stdout) as { chunksKept?: string; staleFilesRemoved: { files: number } };
    expect(pruned.chunksKept).toBeUndefined();
    expect(leases(repo)).toEqual([]);
    expect(readdirSync(join(repo, 'tmp'))).toEqual([]);
    verifyOk(repo);
    const again = lowtide(['backup', a, '--repo', repo]);
    expect(again.status, again.stderr).toBe(0);
    restoresExactly(repo, again.stdout.trim(), a);
    restoresExactly(repo, r.stdout.trim(), b);
  });

  it('concurrent stores of one chunk write it once; a dangling link in its place is replaced', async () => {
    const dir = work.file('store');
    const repo = init('store');
    const data = patternBytes(64 * 1024, 77);
    const digest = native.digestSync(data).toString('hex');
    const final = join(repo, 'chunks', digest.slice(0, 2), digest);
    const tmpName = (i: number): string =>
      join(repo, 'tmp', `w.${process.pid}.${i.toString(16).padStart(12, '0')}.tmp`);
    const results = await Promise.all(
      Array.from({ length: 8 }, (_, i) => native.storeChunkFile(data, 3, tmpName(i), final)),
    );
    expect(results.filter((x) => x.written)).toHaveLength(1);
    expect(readdirSync(join(repo, 'tmp'))).toEqual([]);
    const before = readFileSync(final);
    verifyOk(repo);

    const other = patternBytes(64 * 1024, 78);
    const hex = native.digestSync(other).toString('hex');
    const path = join(repo, 'chunks', hex.slice(0, 2), hex);
    const { mkdirSync } = await import('node:fs');
    mkdirSync(join(repo, 'chunks', hex.slice(0, 2)), { recursive: true });
    symlinkSync(join(dir, 'nowhere'), path);
    const r = await native.storeChunkFile(other, 3, tmpName(99), path);
    expect(r.written).toBe(true);
    expect(existsSync(join(dir, 'nowhere'))).toBe(false); // the link was replaced, not followed
    expect(readFileSync(final)).toEqual(before);
    verifyOk(repo);
  });
});
