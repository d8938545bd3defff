/**
 * Failure and bad input for the repository: SIGKILL of a running backup at
 * random moments, a repository on a tiny file system that fills up,
 * cancellation, and damaged or foreign repository files.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import {
  closeSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  rmSync,
  statSync,
  truncateSync,
  watch,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  LowtideError,
  backup,
  initRepository,
  openRepository,
  pruneRepository,
  restore,
  verifyRepository,
  type Manifest,
} from '../../lib/index.js';
import { CLI, cmp, lowtide } from '../helpers/cli.js';
import { attachLoop, detachLoop, hasCommand, loopUnavailableReason, skipReason } from '../helpers/system.js';
import { TempDir, patternBytes, writeSparseFile } from '../helpers/tmp.js';

const MiB = 1024 * 1024;
const CHUNK = MiB; // the default chunk size, used by every repository here
const tmp = new TempDir('lowtide-failures-');
afterAll(() => tmp.remove());

function freshDir(name: string): string {
  const d = tmp.file(name);
  mkdirSync(d);
  return d;
}

/** Seeded PRNG (mulberry32), so a failing run can be repeated with the same seed. */
function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const ZERO_CHUNK = Buffer.alloc(CHUNK);

/** Per-chunk SHA-256 (hex) of a file, null for an all-zero chunk: what a backup of it must record. */
function chunkDigests(path: string): (string | null)[] {
  const fd = openSync(path, 'r');
  try {
    const size = statSync(path).size;
    const buf = Buffer.alloc(CHUNK);
    const out: (string | null)[] = [];
    for (let o = 0; o < size; o += CHUNK) {
      const n = readSync(fd, buf, 0, Math.min(CHUNK, size - o), o);
      const c = buf.subarray(0, n);
      out.push(c.equals(ZERO_CHUNK.subarray(0, n)) ? null : createHash('sha256').update(c).digest('hex'));
    }
    return out;
  } finally {
    closeSync(fd);
  }
}

/** The chunk list a backup's index records (null = zero chunk), read through the repository. */
async function indexDigests(repoPath: string, m: Manifest): Promise<(string | null)[]> {
  const repo = await openRepository(repoPath);
  const index = await repo.openIndex(m);
  try {
    const out: (string | null)[] = [];
    for (let i = 0; i < m.chunkCount; i++) out.push((await index.entry(i))?.toString('hex') ?? null);
    await index.verify();
    return out;
  } finally {
    await index.close();
  }
}

function overwrite(path: string, offset: number, data: Buffer): void {
  const fd = openSync(path, 'r+');
  try {
    writeSync(fd, data, 0, data.length, offset);
  } finally {
    closeSync(fd);
  }
}

function chunkFileCount(repoPath: string): number {
  const root = join(repoPath, 'chunks');
  return readdirSync(root).reduce((n, p) => n + readdirSync(join(root, p)).length, 0);
}

function manifestsIn(repoPath: string): string[] {
  return readdirSync(join(repoPath, 'backups')).filter((f) => f.endsWith('.json'));
}

/** Every manifest has its index, and backups/ holds nothing but manifests and indexes. */
function expectBackupsDirConsistent(repoPath: string): { orphanIndexes: number } {
  const names = readdirSync(join(repoPath, 'backups'));
  for (const n of names)
    expect(n, `unexpected file backups/${n}`).toMatch(/^\d{8}T\d{6}Z-[0-9a-f]{6}\.(json|index|catalog)$/);
  for (const n of names.filter((x) => x.endsWith('.json'))) {
    expect(names, `manifest ${n} without its index`).toContain(n.replace(/\.json$/, '.index'));
  }
  return {
    orphanIndexes: names.filter((n) => n.endsWith('.index') && !names.includes(n.replace(/\.index$/, '.json'))).length,
  };
}

async function expectVerifyOk(repoPath: string): Promise<void> {
  const report = await verifyRepository({ repository: await openRepository(repoPath) });
  expect(report.ok, JSON.stringify({ problems: report.problems, damaged: report.damagedManifests })).toBe(true);
}

interface ChildResult {
  pid: number | undefined;
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

const children = new Set<ChildProcess>();
afterAll(() => {
  // Only if a test failed half-way: end the children this file started, by PID.
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});

interface KillPlan {
  /** SIGKILL this long after the spawn. */
  afterMs?: number;
  /** SIGKILL `extraMs` after a file ending in `suffix` appears in `dir` (inotify). */
  onNewFile?: { dir: string; suffix: string; extraMs: number };
}

/** Runs the CLI and kills it as planned unless it has exited by then. */
function runCli(args: string[], kill: KillPlan = {}): Promise<ChildResult> {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const killNow = (): void => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  };
  const timers: NodeJS.Timeout[] = [];
  if (kill.afterMs !== undefined) timers.push(setTimeout(killNow, kill.afterMs));
  const on = kill.onNewFile;
  const watcher = on
    ? watch(on.dir, (_event, name) => {
        if (typeof name === 'string' && name.endsWith(on.suffix)) {
          if (on.extraMs <= 0) killNow();
          else timers.push(setTimeout(killNow, on.extraMs));
        }
      })
    : undefined;
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    // 'close': the process has been reaped (its flock is gone) and its output is complete.
    child.once('close', (code, signal) => {
      for (const t of timers) clearTimeout(t);
      watcher?.close();
      children.delete(child);
      resolve({ pid: child.pid, code, signal, stdout, stderr });
    });
  });
}

describe('SIGKILL of a running backup', () => {
  it('at 24 random moments: verify stays clean, every listed backup restores its version exactly, the next backup succeeds and cleans tmp/', async () => {
    const seed = Number(process.env.LOWTIDE_KILL_SEED ?? 20261125);
    const rand = prng(seed);
    const dir = freshDir('sigkill');
    const src = join(dir, 'src.img');
    const size = 48 * MiB + 4608; // a short last chunk
    writeSparseFile(src, size, [
      { offset: 0, data: patternBytes(14 * MiB, 1) },
      // 14..22 MiB: zeros (zero chunks)
      { offset: 22 * MiB, data: patternBytes(18 * MiB + 300, 2) },
      // 40 MiB + 300 .. 43 MiB + 7: zeros, not chunk-aligned
      { offset: 43 * MiB + 7, data: patternBytes(5 * MiB + 4601, 3) },
    ]);
    expect(statSync(src).size).toBe(size);

    // Every version of the source, as the chunk list a backup of it must record.
    const versions: (string | null)[][] = [chunkDigests(src)];
    const versionOf = new Map<string, number>(); // backup id -> version it must match

    // How long a full backup takes here (every chunk new), to spread the kills over it.
    const scratch = join(dir, 'scratch-repo');
    expect(lowtide(['init', scratch]).status).toBe(0);
    let t0 = Date.now();
    expect(lowtide(['backup', src, '--repo', scratch, '--queue-depth', '2']).status).toBe(0);
    const fullMs = Date.now() - t0;
    t0 = Date.now(); // and how much of that is starting node and loading lowtide
    expect(lowtide(['list', '--repo', scratch]).status).toBe(0);
    const startMs = Math.min(Date.now() - t0, fullMs);
    rmSync(scratch, { recursive: true });

    const repoPath = join(dir, 'repo');
    await initRepository(repoPath);
    const restoreAndCompare = async (m: Manifest): Promise<void> => {
      const out = join(dir, `restored-${m.id}.img`);
      await restore({ repository: repoPath, backup: m.id, target: out });
      try {
        expect(statSync(out).size).toBe(size);
        expect(chunkDigests(out), `backup ${m.id} restores version ${versionOf.get(m.id)}`).toEqual(
          versions[versionOf.get(m.id)!],
        );
      } finally {
        rmSync(out, { force: true });
      }
    };

    const ITERATIONS = 24;
    const log = {
      modified: 0,
      finished: 0,
      killedStarting: 0, // before it took the writer lock
      killedReading: 0, // holding the lock, no chunk written yet
      killedWritingChunks: 0, // new chunks stored, no manifest
      killedBeforeManifest: 0, // its index already in backups/, no manifest
      killedAfterCommit: 0, // manifest written, killed before it exited
    };
    const finishedMs: number[] = []; // how long the runs that were not killed took
    for (let it = 0; it < ITERATIONS; it++) {
      // Often change the source, sometimes a few MiB, sometimes most of it (sometimes to zeros),
      // so that backups have new chunks to write when they are killed.
      if (it > 0 && rand() < 0.5) {
        const length = Math.floor((rand() < 0.5 ? 1 + rand() * 5 : 16 + rand() * 16) * MiB) + Math.floor(rand() * 4096);
        const offset = Math.floor(rand() * (size - length));
        overwrite(src, offset, rand() < 0.15 ? Buffer.alloc(length) : patternBytes(length, 1000 + it));
        versions.push(chunkDigests(src));
        log.modified++;
      }
      const current = versions.length - 1;
      const chunksBefore = chunkFileCount(repoPath);
      const known = new Set(manifestsIn(repoPath));
      const orphansBefore = expectBackupsDirConsistent(repoPath).orphanIndexes;
      // Kills while node starts, then spread over the whole backup and a little past its end; some
      // aimed at the end of the runs that finished; and some at the moment the index is committed
      // (between the index's rename into backups/ and the manifest's, or just after).
      const p = rand();
      const nearEnd =
        finishedMs.length > 0
          ? finishedMs[Math.floor(rand() * finishedMs.length)]! * (0.85 + rand() * 0.15)
          : undefined;
      let kill: KillPlan;
      if (p < 0.15) kill = { afterMs: Math.floor(rand() * startMs) };
      else if (p < 0.3)
        kill = { onNewFile: { dir: join(repoPath, 'backups'), suffix: '.index', extraMs: Math.floor(rand() * 4) } };
      else if (p < 0.45 && nearEnd !== undefined) kill = { afterMs: Math.floor(nearEnd) };
      else kill = { afterMs: Math.floor(startMs + rand() * (fullMs - startMs) * 1.15) };
      const started = Date.now();
      const r = await runCli(['backup', src, '--repo', repoPath, '--queue-depth', '2'], kill);
      if (r.signal === null) finishedMs.push(Date.now() - started);
      const ctx = `iteration ${it} (seed ${seed}, kill ${JSON.stringify(kill)}, full backup ~${fullMs} ms): ${r.stderr.trim()}`;
      if (r.signal === null)
        expect(r.code, ctx).toBe(0); // not killed: it must have succeeded
      else expect(r.signal, ctx).toBe('SIGKILL');

      const { orphanIndexes } = expectBackupsDirConsistent(repoPath);
      const added = manifestsIn(repoPath).filter((n) => !known.has(n));
      expect(added.length, ctx).toBeLessThanOrEqual(1);
      const heldLock = readdirSync(join(repoPath, 'locks'))
        .filter((n) => n.startsWith('backup-'))
        .some((n) => readFileSync(join(repoPath, 'locks', n), 'utf8').includes(`"pid":${r.pid},`));
      if (r.signal === null) {
        expect(added, ctx).toEqual([`${r.stdout.trim()}.json`]);
        log.finished++;
      } else if (added.length === 1) log.killedAfterCommit++;
      else if (orphanIndexes > orphansBefore) log.killedBeforeManifest++;
      else if (chunkFileCount(repoPath) > chunksBefore) log.killedWritingChunks++;
      else if (heldLock) log.killedReading++;
      else log.killedStarting++;

      // verify: no damaged chunk, manifest or index (chunks a killed backup left behind are fine).
      await expectVerifyOk(repoPath);
      const repo = await openRepository(repoPath);
      const { backups, damaged } = await repo.listBackups();
      expect(damaged, ctx).toEqual([]);
      expect(backups.map((b) => `${b.id}.json`).sort()).toEqual(manifestsIn(repoPath).sort());
      for (const b of backups) {
        if (!versionOf.has(b.id)) {
          // A backup that committed in this iteration read the version that was current.
          versionOf.set(b.id, current);
          await restoreAndCompare(b);
        } else {
          // Older backups: their indexes (checked whole by verify above) still name exactly
          // their version's chunks, each of which verify found intact; all are restored at the end.
          expect(await indexDigests(repoPath, b), `backup ${b.id}`).toEqual(versions[versionOf.get(b.id)!]);
        }
      }
    }
    const leftInTmp = readdirSync(join(repoPath, 'tmp')).length;
    console.info(
      `[sigkill] seed ${seed}, full backup ~${fullMs} ms (start ~${startMs} ms), ${ITERATIONS} runs: ${JSON.stringify(log)}; ${leftInTmp} files left in tmp/`,
    );

    // A normal backup succeeds, and takes the lock, which clears what dead writers left in tmp/.
    const last = lowtide(['backup', src, '--repo', repoPath]);
    expect(last.status, last.stderr).toBe(0);
    const lastId = last.stdout.trim();
    versionOf.set(lastId, versions.length - 1);
    expect(readdirSync(join(repoPath, 'tmp'))).toEqual([]);

    // Every backup restores to its version, for real.
    const { backups } = await (await openRepository(repoPath)).listBackups();
    expect(backups.map((b) => b.id)).toContain(lastId);
    for (const b of backups) await restoreAndCompare(b);
    const out = join(dir, 'latest.img');
    await restore({ repository: repoPath, backup: lastId, target: out });
    expect(cmp(src, out)).toBe(true);

    // prune keeping everything removes only what dead writers left: orphan chunks and indexes.
    const pr = await pruneRepository({ repository: await openRepository(repoPath), keepLast: 1000 });
    expect(pr.removed).toEqual([]);
    expect(expectBackupsDirConsistent(repoPath).orphanIndexes).toBe(0);
    const live = new Set<string>();
    for (const b of backups) for (const d of await indexDigests(repoPath, b)) if (d) live.add(d);
    expect(chunkFileCount(repoPath)).toBe(live.size);
    await expectVerifyOk(repoPath);
  }, 180_000);
});

describe('the writer lock', () => {
  it('is held until released or the holder exits, even when the holder drops its lock and the garbage collector runs', async () => {
    const dir = freshDir('lock-gc');
    const src = join(dir, 'src.img');
    writeSparseFile(src, MiB, [{ offset: 0, data: patternBytes(MiB, 95) }]);
    const repoPath = join(dir, 'repo');
    await initRepository(repoPath);
    const holder = spawn(
      process.execPath,
      [
        '--expose-gc',
        '-e',
        `import(${JSON.stringify(join(import.meta.dirname, '../../dist/index.js'))}).then(async (m) => { const r = await m.openRepository(${JSON.stringify(repoPath)}); await r.lock('forgetful', 'prune'); for (let i = 0; i < 5; i++) { globalThis.gc(); await new Promise((res) => setTimeout(res, 20)); } console.log('collected'); setInterval(() => {}, 1000); })`,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    children.add(holder);
    try {
      await new Promise<void>((res) => holder.stdout!.once('data', () => res()));
      const r = lowtide(['backup', src, '--repo', repoPath]);
      expect(r.status, r.stderr).toBe(1);
      expect(r.stderr).toContain('[REPO_LOCKED]: the repository is in use by forgetful (pid ');
    } finally {
      holder.kill('SIGKILL');
      await new Promise((r) => holder.once('close', r));
      children.delete(holder);
    }
    expect(lowtide(['backup', src, '--repo', repoPath]).status).toBe(0);
  });

  it('after a writer died, the next prune sees its stale lease and syncs every chunk directory (strace); a backup syncs the directories of chunks it finds stored', async () => {
    if (skipReason('fsync tracing', hasCommand('strace') ? undefined : 'strace is not installed')) return;
    const dir = freshDir('stale-lock');
    const src = join(dir, 'src.img');
    writeSparseFile(src, 6 * MiB, [{ offset: 0, data: patternBytes(6 * MiB, 91) }]);
    const repoPath = join(dir, 'repo');
    await initRepository(repoPath);
    await backup({ source: src, repository: repoPath });
    const prefixes = readdirSync(join(repoPath, 'chunks')).sort();

    // A backup that dies holding its lease (it may have renamed chunks into directories it never synced).
    const holder = spawn(
      process.execPath,
      [
        '-e',
        `import(${JSON.stringify(join(import.meta.dirname, '../../dist/index.js'))}).then(async (m) => { const r = await m.openRepository(${JSON.stringify(repoPath)}); await r.lock('doomed'); console.log('locked'); setInterval(() => {}, 1000); })`,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    children.add(holder);
    await new Promise<void>((res) => holder.stdout!.once('data', () => res()));
    holder.kill('SIGKILL');
    await new Promise((r) => holder.once('close', r));
    children.delete(holder);
    const leases = (): string[] => readdirSync(join(repoPath, 'locks')).filter((n) => n.startsWith('backup-'));
    expect(leases()).toHaveLength(1);
    expect(readFileSync(join(repoPath, 'locks', leases()[0]!), 'utf8')).toContain('"purpose":"doomed"');

    /** The chunk directories a CLI command fsyncs. */
    const syncedChunkDirs = (args: string[]): string[] => {
      const r = spawnSync('strace', ['-f', '-qq', '-e', 'trace=fsync', '-y', process.execPath, CLI, ...args], {
        encoding: 'utf8',
      });
      expect(r.status, r.stderr).toBe(0);
      const escaped = repoPath.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
      const re = new RegExp(`fsync\\(\\d+<${escaped}/chunks/([0-9a-f]{2})>`, 'g');
      return [...new Set([...r.stderr.matchAll(re)].map((m) => m[1]!))].sort();
    };
    const prune = ['prune', '--repo', repoPath, '--keep-last', '100'];
    expect(syncedChunkDirs(prune)).toEqual(prefixes);
    expect(leases()).toEqual([]); // the stale lease is gone
    expect(readFileSync(join(repoPath, 'locks', 'write.lock'), 'utf8')).toBe(''); // a clean release empties it
    expect(syncedChunkDirs(prune)).toEqual([]);
    // A backup without a parent (another path) finds every chunk stored, maybe by a writer that has
    // not synced its directory yet: it syncs them all before its manifest names them.
    const copy = join(dir, 'copy.img');
    copyFileSync(src, copy);
    expect(syncedChunkDirs(['backup', copy, '--repo', repoPath])).toEqual(prefixes);
    await expectVerifyOk(repoPath);
  });
});

// --- a repository on a tiny file system -------------------------------------------

interface TinyFs {
  mountPoint: string;
  device: string;
}

/** A ~`sizeMiB` ext4 on a loop device, mounted read-write; always unmounted and detached. */
async function withTinyExt4(name: string, sizeMiB: number, fn: (fs: TinyFs) => Promise<void>): Promise<void> {
  const dir = freshDir(name);
  const image = join(dir, 'fs.img');
  const mountPoint = join(dir, 'mnt');
  mkdirSync(mountPoint);
  writeFileSync(image, '');
  truncateSync(image, sizeMiB * MiB);
  const device = attachLoop(image, { readOnly: false });
  let mounted = false;
  try {
    const mk = spawnSync('mkfs.ext4', ['-q', device], { encoding: 'utf8' });
    if (mk.status !== 0) throw new Error(`mkfs.ext4 ${device}: ${mk.stderr}`);
    const mt = spawnSync('mount', ['-t', 'ext4', device, mountPoint], { encoding: 'utf8' });
    if (mt.status !== 0) throw new Error(`mount ${device}: ${mt.stderr}`);
    mounted = true;
    await fn({ mountPoint, device });
  } finally {
    if (mounted) {
      const um = spawnSync('umount', [mountPoint], { encoding: 'utf8' });
      if (um.status !== 0) console.warn(`umount ${mountPoint}: ${um.stderr}`);
    }
    detachLoop(device);
  }
}

function tinyFsUnavailable(): string | undefined {
  return loopUnavailableReason() ?? (hasCommand('mkfs.ext4') ? undefined : 'mkfs.ext4 is not installed (e2fsprogs)');
}

function writeRandomSource(path: string, size: number): void {
  const fd = openSync(path, 'w');
  try {
    for (let o = 0; o < size; o += 4 * MiB)
      writeSync(fd, randomBytes(Math.min(4 * MiB, size - o)), 0, Math.min(4 * MiB, size - o), o);
  } finally {
    closeSync(fd);
  }
}

describe('a repository on a tiny file system that fills up', () => {
  it('the backup fails with REPO_FULL, writes no manifest, leaves a valid repository; smaller backups and prune still work', async () => {
    if (skipReason('repository on a tiny ext4', tinyFsUnavailable())) return;
    const dir = freshDir('full');
    const big = join(dir, 'big.img');
    writeRandomSource(big, 64 * MiB); // incompressible: stored raw, far more than fits
    const small = join(dir, 'small.img');
    writeSparseFile(small, 16 * MiB, [{ offset: 5 * MiB, data: patternBytes(300 * 1024, 9) }]);
    await withTinyExt4('full-fs', 24, async ({ mountPoint }) => {
      const repoPath = join(mountPoint, 'repo');
      await initRepository(repoPath);

      const err = await backup({ source: big, repository: repoPath, queueDepth: 2 }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(LowtideError);
      expect((err as LowtideError).code).toBe('REPO_FULL');
      expect((err as LowtideError).message).toMatch(/^the repository's file system is full \(/);
      expect(manifestsIn(repoPath)).toEqual([]);
      expect(readdirSync(join(repoPath, 'backups'))).toEqual([]);
      expect(readdirSync(join(repoPath, 'tmp'))).toEqual([]); // the failed writes cleaned up after themselves
      expect(chunkFileCount(repoPath)).toBeGreaterThan(0); // it did fill the file system
      await expectVerifyOk(repoPath);

      const cli = lowtide(['backup', big, '--repo', repoPath]);
      expect(cli.status).toBe(1);
      expect(cli.stderr).toContain('[REPO_FULL]');
      expect(cli.stderr.trim().split('\n')).toHaveLength(1);
      expect(manifestsIn(repoPath)).toEqual([]);
      await expectVerifyOk(repoPath);

      // Without deleting anything, a small backup (one new chunk) either fits or fails just as cleanly.
      const r = await backup({ source: small, repository: repoPath }).catch((e: unknown) => e);
      if (r instanceof LowtideError) {
        expect(r.code).toBe('REPO_FULL');
        expect(manifestsIn(repoPath)).toEqual([]);
        console.info('[full] the small backup did not fit either (REPO_FULL)');
      } else {
        const { id } = r as { id: string };
        const out = join(dir, 'small-restored.img');
        await restore({ repository: repoPath, backup: id, target: out });
        expect(cmp(small, out)).toBe(true);
        console.info('[full] the small backup fitted');
      }
      await expectVerifyOk(repoPath);

      // Fill the last free block: prune must still run (it needs no new space) and free the
      // chunks the failed backups left behind; then a backup fits again.
      const filler = openSync(join(mountPoint, 'filler'), 'w');
      try {
        const block = Buffer.alloc(64 * 1024, 0xa5);
        for (;;) {
          try {
            writeSync(filler, block);
          } catch (e) {
            if ((e as NodeJS.ErrnoException).code === 'ENOSPC') break;
            throw e;
          }
        }
        writeSync(filler, block.subarray(0, 1024)); // and the odd bytes
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOSPC') throw e;
      } finally {
        closeSync(filler);
      }
      const pr = await pruneRepository({ repository: await openRepository(repoPath), keepLast: 1 });
      expect(pr.chunksRemoved).toBeGreaterThan(0);
      rmSync(join(mountPoint, 'filler'));
      const ok = await backup({ source: small, repository: repoPath, parent: null });
      const out = join(dir, 'small-after-prune.img');
      await restore({ repository: repoPath, backup: ok.id, target: out });
      expect(cmp(small, out)).toBe(true);
      await expectVerifyOk(repoPath);
    });
  });

  it('restoring to a file on a file system too small for the image fails with NO_SPACE and leaves no partial file', async () => {
    if (skipReason('restore onto a tiny ext4', tinyFsUnavailable())) return;
    const dir = freshDir('restore-full');
    const src = join(dir, 'src.img');
    writeRandomSource(src, 40 * MiB);
    const repoPath = join(dir, 'repo');
    await initRepository(repoPath);
    const { id } = await backup({ source: src, repository: repoPath });
    await withTinyExt4('restore-full-fs', 16, async ({ mountPoint }) => {
      const target = join(mountPoint, 'restored.img');
      const err = await restore({ repository: repoPath, backup: id, target }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(LowtideError);
      expect((err as LowtideError).code).toBe('NO_SPACE');
      expect(readdirSync(mountPoint).filter((f) => f !== 'lost+found')).toEqual([]);
      const cli = lowtide(['restore', '--repo', repoPath, id, target]);
      expect(cli.status).toBe(1);
      expect(cli.stderr).toContain('[NO_SPACE]');
      expect(readdirSync(mountPoint).filter((f) => f !== 'lost+found')).toEqual([]);
    });
    await expectVerifyOk(repoPath);
  });
});

describe('short writes', () => {
  it('a chunk write that comes back short (file-size limit) fails the backup; no truncated chunk is ever stored', () => {
    if (
      skipReason(
        'short writes under a file-size limit',
        hasCommand('prlimit') ? undefined : 'prlimit is not installed (util-linux)',
      )
    )
      return;
    const dir = freshDir('short-write');
    const src = join(dir, 'src.img');
    writeSparseFile(src, 3 * MiB, [{ offset: 0, data: patternBytes(3 * MiB, 81) }]);
    const repoPath = join(dir, 'repo');
    expect(lowtide(['init', repoPath]).status).toBe(0);
    // A chunk file is 16 + 1 MiB bytes: under a 1 MiB limit its write returns short at 1 MiB,
    // and only writing the rest reports the error (EFBIG; node ignores SIGXFSZ). A full
    // file system does the same when concurrent writes race for its last blocks.
    const r = spawnSync('prlimit', [`--fsize=${MiB}`, process.execPath, CLI, 'backup', src, '--repo', repoPath], {
      encoding: 'utf8',
    });
    expect(r.status, r.stderr).toBe(1);
    expect(r.stderr).toContain('[WRITE_FAILED]');
    expect(r.stderr).toContain('EFBIG');
    expect(manifestsIn(repoPath)).toEqual([]);
    expect(chunkFileCount(repoPath)).toBe(0);
    expect(readdirSync(join(repoPath, 'tmp'))).toEqual([]);
    const v = lowtide(['verify', '--repo', repoPath]);
    expect(v.status, v.stdout).toBe(0);
    const ok = lowtide(['backup', src, '--repo', repoPath]);
    expect(ok.status, ok.stderr).toBe(0);
    expect(lowtide(['restore', '--repo', repoPath, 'latest', join(dir, 'out.img')]).status).toBe(0);
    expect(cmp(src, join(dir, 'out.img'))).toBe(true);
  });
});

// --- cancellation ---------------------------------------------------------------------

describe('cancellation', () => {
  it('aborting a backup half-way: ABORTED, no manifest, tmp/ empty, the lock is free, the next backup works', async () => {
    const dir = freshDir('abort');
    const src = join(dir, 'src.img');
    writeSparseFile(src, 32 * MiB, [{ offset: 0, data: patternBytes(32 * MiB, 31) }]);
    const repoPath = join(dir, 'repo');
    await initRepository(repoPath);
    const ac = new AbortController();
    const err = await backup({
      source: src,
      repository: repoPath,
      queueDepth: 2,
      signal: ac.signal,
      progressIntervalMs: 0,
      onProgress: (p) => {
        if (p.bytesDone >= 8 * MiB) ac.abort();
      },
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LowtideError);
    expect((err as LowtideError).code).toBe('ABORTED');
    expect(readdirSync(join(repoPath, 'backups'))).toEqual([]);
    expect(readdirSync(join(repoPath, 'tmp'))).toEqual([]);
    const n = chunkFileCount(repoPath);
    expect(n).toBeGreaterThan(0);
    expect(n).toBeLessThan(32);
    await expectVerifyOk(repoPath);
    const lock = await (await openRepository(repoPath)).lock('test'); // free, or this throws REPO_LOCKED
    await lock.release();
    const { id } = await backup({ source: src, repository: repoPath });
    await restore({ repository: repoPath, backup: id, target: join(dir, 'out.img') });
    expect(cmp(src, join(dir, 'out.img'))).toBe(true);
  });

  it('aborting at any moment never commits a backup that differs from the source (with a parent, reading everything)', async () => {
    const dir = freshDir('abort-parent');
    const src = join(dir, 'src.img');
    const size = 24 * MiB;
    writeSparseFile(src, size, [{ offset: 0, data: patternBytes(size, 70) }]);
    const repoPath = join(dir, 'repo');
    await initRepository(repoPath);
    let parentId = (await backup({ source: src, repository: repoPath })).id;
    let aborted = 0;
    for (let k = 0; k < 12; k++) {
      // New content everywhere: a chunk taken from the parent would be wrong.
      overwrite(src, 0, patternBytes(size, 71 + k));
      const ac = new AbortController();
      const timer = setTimeout(() => ac.abort(), 5 + k * 25);
      const r = await backup({ source: src, repository: repoPath, queueDepth: 2, signal: ac.signal }).catch(
        (e: unknown) => e,
      );
      clearTimeout(timer);
      if (r instanceof LowtideError) {
        expect(r.code, r.message).toBe('ABORTED');
        aborted++;
      } else {
        const { manifest } = r as { manifest: Manifest };
        expect(manifest.parent).toBe(parentId);
        parentId = manifest.id;
        expect(await indexDigests(repoPath, manifest), `backup ${manifest.id} (abort after ${5 + k * 25} ms)`).toEqual(
          chunkDigests(src),
        );
      }
      expect(readdirSync(join(repoPath, 'tmp'))).toEqual([]);
    }
    console.info(`[abort] ${aborted} of 12 backups aborted, the others completed before the abort`);
    await expectVerifyOk(repoPath);
  });

  it('Ctrl-C (SIGINT) of `lowtide backup`: exit 130, no manifest, tmp/ empty, verify clean', async () => {
    const dir = freshDir('sigint');
    const src = join(dir, 'src.img');
    writeSparseFile(src, 64 * MiB, [{ offset: 0, data: patternBytes(64 * MiB, 41) }]);
    const repoPath = join(dir, 'repo');
    await initRepository(repoPath);
    const child = spawn(process.execPath, [CLI, 'backup', src, '--repo', repoPath, '--queue-depth', '1'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.add(child);
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((r) => child.once('close', (code) => r(code)));
    // Wait until the first chunk is stored, i.e. the backup is under way.
    const deadline = Date.now() + 20_000;
    while (chunkFileCount(repoPath) === 0) {
      if (Date.now() > deadline) throw new Error('the backup never started');
      await new Promise((r) => setTimeout(r, 5));
    }
    child.kill('SIGINT');
    expect(await exited, stderr).toBe(130);
    children.delete(child);
    expect(stderr).toContain('[ABORTED]');
    expect(readdirSync(join(repoPath, 'backups'))).toEqual([]);
    expect(readdirSync(join(repoPath, 'tmp'))).toEqual([]);
    await expectVerifyOk(repoPath);
  });
});

// --- damaged and foreign repository files ------------------------------------------

describe('damaged repository files', () => {
  /** A repository with two backups of two different sources that share some chunks. */
  async function twoBackups(
    name: string,
  ): Promise<{ dir: string; repoPath: string; a: Manifest; b: Manifest; srcA: string; srcB: string }> {
    const dir = freshDir(name);
    const srcA = join(dir, 'a.img');
    const srcB = join(dir, 'b.img');
    writeSparseFile(srcA, 6 * MiB, [{ offset: 0, data: patternBytes(4 * MiB, 51) }]);
    writeSparseFile(srcB, 6 * MiB, [
      { offset: 0, data: patternBytes(2 * MiB, 51) }, // chunks 0 and 1 shared with a
      { offset: 3 * MiB, data: patternBytes(2 * MiB, 52) },
    ]);
    const repoPath = join(dir, 'repo');
    await initRepository(repoPath);
    const a = (await backup({ source: srcA, repository: repoPath })).manifest;
    const b = (await backup({ source: srcB, repository: repoPath })).manifest;
    return { dir, repoPath, a, b, srcA, srcB };
  }

  it('a damaged chunk index: verify names the backup (exit 3), its restore fails with REPO_CORRUPT before touching the target, prune refuses and deletes no chunk', async () => {
    const { dir, repoPath, a, b, srcB } = await twoBackups('bad-index');
    const indexPath = join(repoPath, 'backups', a.index.file);
    const bytes = readFileSync(indexPath);
    bytes[32 + 2 * 32 + 5]! ^= 0x01; // a byte of chunk 2's digest
    writeFileSync(indexPath, bytes);

    const report = await verifyRepository({ repository: await openRepository(repoPath) });
    expect(report.ok).toBe(false);
    expect(report.damagedBackups).toEqual([a.id]);
    expect(report.damagedManifests.map((d) => d.id)).toEqual([a.id]);
    expect(report.damagedManifests[0]!.message).toContain(`the chunk index of backup ${a.id} is damaged`);
    const cli = lowtide(['verify', '--repo', repoPath]);
    expect(cli.status).toBe(3);
    expect(cli.stdout).toContain(`damaged backup ${a.id}`);

    const target = join(dir, 'a-out.img');
    const err = await restore({ repository: repoPath, backup: a.id, target }).catch((e: unknown) => e);
    expect((err as LowtideError).code).toBe('REPO_CORRUPT');
    expect(readdirSync(dir).filter((f) => f.includes('a-out.img'))).toEqual([]);
    await restore({ repository: repoPath, backup: b.id, target: join(dir, 'b-out.img') });
    expect(cmp(srcB, join(dir, 'b-out.img'))).toBe(true);

    // Pruning while a kept backup's index is damaged would sweep the chunks it really needs.
    const chunks = chunkFileCount(repoPath);
    const perr = await pruneRepository({ repository: await openRepository(repoPath), keepLast: 5 }).catch(
      (e: unknown) => e,
    );
    expect((perr as LowtideError).code).toBe('REPO_CORRUPT');
    expect(chunkFileCount(repoPath)).toBe(chunks);

    // A truncated index is damage too.
    writeFileSync(indexPath, bytes.subarray(0, bytes.length - 32));
    const r2 = await verifyRepository({ repository: await openRepository(repoPath) });
    expect(r2.damagedBackups).toEqual([a.id]);
  });

  it('an unreadable manifest: list marks it DAMAGED, verify exits 3 naming it, prune keeps it and every chunk its index names', async () => {
    const { repoPath, a, b } = await twoBackups('bad-manifest');
    writeFileSync(join(repoPath, 'backups', `${a.id}.json`), '{"format": "lowtide-backup", "version": 1, "id"');
    const list = lowtide(['list', '--repo', repoPath]);
    expect(list.status).toBe(0);
    expect(list.stdout).toContain(`${a.id}  DAMAGED: `);
    expect(list.stdout).toContain(b.id);
    const v = lowtide(['verify', '--repo', repoPath]);
    expect(v.status).toBe(3);
    expect(v.stdout).toContain(`damaged backup ${a.id}: `);
    const chunks = chunkFileCount(repoPath);
    const p = lowtide(['prune', '--repo', repoPath, '--keep-last', '1']);
    expect(p.status).toBe(0);
    expect(p.stderr).toContain(`lowtide: warning: kept backup ${a.id} and its chunks: `);
    expect(chunkFileCount(repoPath)).toBe(chunks);
    expect(manifestsIn(repoPath).sort()).toEqual([`${a.id}.json`, `${b.id}.json`].sort());
    // With its index unreadable too, the chunks it needs are unknown: prune refuses and removes nothing.
    writeFileSync(join(repoPath, 'backups', `${a.id}.index`), 'damaged');
    const p2 = lowtide(['prune', '--repo', repoPath, '--keep-last', '1']);
    expect(p2.status).toBe(1);
    expect(p2.stderr).toContain('[REPO_CORRUPT]');
    expect(p2.stderr).toContain(a.id);
    expect(chunkFileCount(repoPath)).toBe(chunks);
  });

  it('a chunk lost from the repository is stored again by the next backup that reads it: that backup is complete, and the old one is whole again', async () => {
    const { dir, repoPath, a, srcA } = await twoBackups('lost-chunk');
    const hex = createHash('sha256')
      .update(readFileSync(srcA).subarray(2 * MiB, 3 * MiB))
      .digest('hex'); // only in a
    rmSync(join(repoPath, 'chunks', hex.slice(0, 2), hex));
    const before = await verifyRepository({ repository: await openRepository(repoPath) });
    expect(before.problems.map((p) => [p.problem, p.digest, p.backups])).toEqual([['missing', hex, [a.id]]]);
    // The next backup of a's source has a as its parent, whose index names the lost chunk.
    const c = await backup({ source: srcA, repository: repoPath });
    expect(c.manifest.parent).toBe(a.id);
    expect(c.manifest.stats.chunksNew).toBe(1);
    await expectVerifyOk(repoPath);
    for (const id of [a.id, c.id]) {
      const out = join(dir, `${id}.img`);
      await restore({ repository: repoPath, backup: id, target: out });
      expect(cmp(srcA, out)).toBe(true);
    }
  });

  it('a manifest of an unknown version: restore fails with REPO_FORMAT naming the version', async () => {
    const { dir, repoPath, a } = await twoBackups('manifest-version');
    const path = join(repoPath, 'backups', `${a.id}.json`);
    writeFileSync(path, JSON.stringify({ ...(JSON.parse(readFileSync(path, 'utf8')) as object), version: 2 }));
    const err = await restore({ repository: repoPath, backup: a.id, target: join(dir, 'x.img') }).catch(
      (e: unknown) => e,
    );
    expect((err as LowtideError).code).toBe('REPO_FORMAT');
    expect((err as LowtideError).message).toContain('manifest version 2 is not supported');
    expect(existsSync(join(dir, 'x.img'))).toBe(false);
  });

  it('a truncated chunk and a chunk with a bad header are reported corrupt; restore fails with CHUNK_CORRUPT at the offset', async () => {
    const { dir, repoPath, a, b } = await twoBackups('bad-chunks');
    const digestAt = (src: string, offset: number): string =>
      createHash('sha256')
        .update(readFileSync(src).subarray(offset, offset + MiB))
        .digest('hex');
    const shared = digestAt(join(dir, 'a.img'), 0); // chunk 0 of both backups
    const onlyB = digestAt(join(dir, 'b.img'), 4 * MiB); // chunk 4 of b
    const path = (hex: string): string => join(repoPath, 'chunks', hex.slice(0, 2), hex);
    truncateSync(path(shared), 100);
    const hb = readFileSync(path(onlyB));
    hb.write('XXXX', 0);
    writeFileSync(path(onlyB), hb);

    const report = await verifyRepository({ repository: await openRepository(repoPath) });
    expect(report.ok).toBe(false);
    const problems = Object.fromEntries(report.problems.map((p) => [p.digest, p]));
    expect(problems[shared]).toMatchObject({ problem: 'corrupt', backups: [a.id, b.id].sort() });
    expect(problems[onlyB]).toMatchObject({ problem: 'corrupt', backups: [b.id] });
    expect(problems[onlyB]!.message).toContain('bad header');
    expect(report.damagedBackups).toEqual([a.id, b.id].sort());

    const ea = await restore({ repository: repoPath, backup: a.id, target: join(dir, 'a-out.img') }).catch(
      (e: unknown) => e,
    );
    expect((ea as LowtideError).code).toBe('CHUNK_CORRUPT');
    expect((ea as LowtideError).offset).toBe(0);
    const cli = lowtide(['restore', '--repo', repoPath, b.id, join(dir, 'b-out.img')]);
    expect(cli.status).toBe(1);
    expect(cli.stderr).toMatch(/\[CHUNK_CORRUPT\]: backup \S+ at offset \d+: chunk [0-9a-f]{64}/);
    expect(readdirSync(dir).filter((f) => f.includes('-out.img'))).toEqual([]);
  });

  it('a chunk file with bytes appended (a few, or more than any chunk holds) is corrupt', async () => {
    const { dir, repoPath, b } = await twoBackups('long-chunks');
    const digestAt = (src: string, offset: number): string =>
      createHash('sha256')
        .update(readFileSync(src).subarray(offset, offset + MiB))
        .digest('hex');
    const path = (hex: string): string => join(repoPath, 'chunks', hex.slice(0, 2), hex);
    const few = digestAt(join(dir, 'b.img'), 4 * MiB);
    const many = digestAt(join(dir, 'a.img'), 0);
    writeFileSync(path(few), Buffer.concat([readFileSync(path(few)), Buffer.from('extra')]));
    writeFileSync(path(many), Buffer.concat([readFileSync(path(many)), Buffer.alloc(2 * MiB, 7)]));
    const repo = await openRepository(repoPath);
    await expect(repo.getChunk(many)).rejects.toMatchObject({
      code: 'CHUNK_CORRUPT',
      message: expect.stringContaining('larger'),
    });
    await expect(repo.getChunk(few)).rejects.toMatchObject({ code: 'CHUNK_CORRUPT' });
    const report = await verifyRepository({ repository: repo });
    const bad = report.problems
      .filter((p) => p.problem === 'corrupt')
      .map((p) => p.digest)
      .sort();
    expect(bad).toEqual([few, many].sort());
    const e = await restore({ repository: repoPath, backup: b.id, target: join(dir, 'b-out.img') }).catch(
      (x: unknown) => x,
    );
    expect((e as LowtideError).code).toBe('CHUNK_CORRUPT');
  });
});

describe('bad input through the CLI', () => {
  it('unknown repository version, no repository, unknown or malformed backup id, unknown parent: exit 1 and one clear line; nothing written', async () => {
    const dir = freshDir('cli-bad');
    const src = join(dir, 'src.img');
    writeSparseFile(src, 2 * MiB, [{ offset: 0, data: patternBytes(MiB, 61) }]);
    const repoPath = join(dir, 'repo');
    await initRepository(repoPath);
    const { id } = await backup({ source: src, repository: repoPath });
    const chunks = chunkFileCount(repoPath);

    const expectError = (args: string[], code: string, text: string): void => {
      const r = lowtide(args);
      expect(r.status, r.stderr).toBe(1);
      expect(r.stderr.trim().split('\n'), r.stderr).toHaveLength(1);
      expect(r.stderr).toContain(`[${code}]`);
      expect(r.stderr).toContain(text);
    };
    expectError(
      ['restore', '--repo', repoPath, '20200101T000000Z-abcdef', join(dir, 'o.img')],
      'BACKUP_NOT_FOUND',
      'no backup 20200101T000000Z-abcdef',
    );
    expectError(
      ['restore', '--repo', repoPath, '../../etc/passwd', join(dir, 'o.img')],
      'BACKUP_NOT_FOUND',
      'ids look like',
    );
    expectError(
      ['backup', src, '--repo', repoPath, '--parent', '20200101T000000Z-abcdef'],
      'BACKUP_NOT_FOUND',
      'no backup 20200101T000000Z-abcdef',
    );
    expectError(['list', '--repo', join(dir, 'nowhere')], 'REPO_NOT_FOUND', 'no lowtide repository at');
    expectError(['backup', src, '--repo', dir], 'REPO_NOT_FOUND', 'no lowtide repository at');
    expect(existsSync(join(dir, 'o.img'))).toBe(false);

    const cfgPath = join(repoPath, 'config.json');
    const cfg = readFileSync(cfgPath, 'utf8');
    // Versions 1 and 2 (packs, S3 only) are known; 3 is not.
    writeFileSync(cfgPath, JSON.stringify({ ...(JSON.parse(cfg) as object), version: 3 }));
    expectError(['backup', src, '--repo', repoPath], 'REPO_FORMAT', 'repository format version 3 is not supported');
    expectError(['restore', '--repo', repoPath, id, join(dir, 'o.img')], 'REPO_FORMAT', 'version 3');
    writeFileSync(cfgPath, '{ not json');
    expectError(['list', '--repo', repoPath], 'REPO_FORMAT', 'is not valid JSON');
    writeFileSync(cfgPath, cfg);

    expect(chunkFileCount(repoPath)).toBe(chunks);
    expect(manifestsIn(repoPath)).toEqual([`${id}.json`]);
    await expectVerifyOk(repoPath);
  });
});
