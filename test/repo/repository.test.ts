import { readdirSync, readFileSync, statSync, writeFileSync, openSync, writeSync, closeSync, mkdirSync } from 'node:fs';
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
} from '../../lib/index.js';
import { CLI, cmp, lowtide } from '../helpers/cli.js';
import {
  attachLoop,
  detachLoop,
  hasCommand,
  loopUnavailableReason,
  skipReason,
  traceFileCalls,
} from '../helpers/system.js';
import { TempDir, patternBytes, writeSparseFile } from '../helpers/tmp.js';

const MiB = 1024 * 1024;
const tmp = new TempDir();
afterAll(() => tmp.remove());

function chunkFiles(repo: string): string[] {
  const root = join(repo, 'chunks');
  return readdirSync(root).flatMap((p) => readdirSync(join(root, p)).map((f) => join(root, p, f)));
}

/** A source with random chunks, a zero region, a repeated chunk and an odd-sized tail. */
function makeSource(path: string, size = 24 * MiB + 4096 + 512): void {
  const pieces = [
    { offset: 0, data: patternBytes(6 * MiB, 1) },
    { offset: 10 * MiB, data: patternBytes(MiB, 2) },
    { offset: 11 * MiB, data: patternBytes(MiB, 2) }, // same content as the chunk before
    { offset: 20 * MiB + 100, data: patternBytes(3 * MiB, 3) },
  ].map((p) => ({ offset: p.offset, data: p.data.subarray(0, Math.max(0, size - 1000 - p.offset)) }));
  pieces.push({ offset: size - 1000, data: patternBytes(1000, 4) });
  writeSparseFile(
    path,
    size,
    pieces.filter((p) => p.data.length > 0),
  );
}

/** A directory `name` with makeSource's source and a repository holding one backup of it. */
async function backedUpSource(
  name: string,
): Promise<{ dir: string; src: string; repoPath: string; first: Awaited<ReturnType<typeof backup>> }> {
  const dir = tmp.file(name);
  mkdirSync(dir);
  const src = join(dir, 'src.img');
  makeSource(src);
  const repoPath = join(dir, 'repo');
  await initRepository(repoPath);
  const first = await backup({ source: src, repository: repoPath });
  return { dir, src, repoPath, first };
}

function overwrite(path: string, offset: number, data: Buffer): void {
  const fd = openSync(path, 'r+');
  writeSync(fd, data, 0, data.length, offset);
  closeSync(fd);
}

describe('backup and restore round trips', () => {
  it.each([64 * 1024, MiB, 8 * MiB])(
    'chunk size %i: restore is byte-identical; zero chunks are not stored; duplicates once',
    async (chunkSize) => {
      const dir = tmp.file(`rt-${chunkSize}`);
      mkdirSync(dir);
      const src = join(dir, 'src.img');
      makeSource(src);
      const repoPath = join(dir, 'repo');
      await initRepository(repoPath, { chunkSize });
      const { id, manifest } = await backup({ source: src, repository: repoPath });
      expect(manifest.stats.bytesRead).toBeGreaterThanOrEqual(statSync(src).size);
      const size = statSync(src).size;
      expect(manifest.chunkCount).toBe(Math.ceil(size / chunkSize));
      // Every stored chunk is a distinct non-zero chunk of the source.
      const data = readFileSync(src);
      const distinct = new Set<string>();
      for (let o = 0; o < size; o += chunkSize) {
        const c = data.subarray(o, Math.min(size, o + chunkSize));
        if (c.some((b) => b !== 0)) distinct.add(c.toString('base64'));
      }
      expect(chunkFiles(repoPath)).toHaveLength(distinct.size);
      expect(manifest.stats.chunksNew).toBe(distinct.size);

      const out = join(dir, 'restored.img');
      const r = await restore({ repository: repoPath, backup: id, target: out });
      expect(cmp(src, out)).toBe(true);
      if (chunkSize <= MiB) {
        // Sparse: holes where the zero chunks were (8 MiB chunks have none here).
        expect(r.bytesSkipped).toBeGreaterThan(0);
        expect(statSync(out).blocks * 512).toBeLessThan(size - 8 * MiB);
      }
    },
  );

  it('incremental without a changed list stores only new chunks; both backups restore exactly', async () => {
    const { dir, src, repoPath, first } = await backedUpSource('incr');
    const v1 = readFileSync(src);
    const before = chunkFiles(repoPath).length;
    overwrite(src, 2 * MiB + 5, patternBytes(10, 50)); // chunk 2
    overwrite(src, 15 * MiB, patternBytes(MiB + 1, 51)); // chunks 15 and 16
    const second = await backup({ source: src, repository: repoPath });
    expect(second.manifest.parent).toBe(first.id);
    expect(second.manifest.stats.chunksNew).toBe(3);
    expect(chunkFiles(repoPath).length).toBe(before + 3);
    const out1 = join(dir, 'v1.img');
    const out2 = join(dir, 'v2.img');
    await restore({ repository: repoPath, backup: first.id, target: out1 });
    await restore({ repository: repoPath, backup: 'latest', target: out2 });
    expect(readFileSync(out1).equals(v1)).toBe(true);
    expect(cmp(src, out2)).toBe(true);
  });

  it('with a changed-extent list only those chunks are read, the rest comes from the parent', async () => {
    const { dir, src, repoPath, first } = await backedUpSource('changed');
    overwrite(src, 3 * MiB + 17, patternBytes(300, 60));
    overwrite(src, 21 * MiB - 10, patternBytes(20, 61)); // crosses a chunk boundary
    const changed = [
      { offset: 3 * MiB + 17, length: 300 },
      { offset: 21 * MiB - 10, length: 20 },
    ];
    const second = await backup({ source: src, repository: repoPath, changed });
    expect(second.manifest.plan.mode).toBe('changed');
    expect(second.manifest.stats.bytesRead).toBe(3 * MiB); // chunks 3, 20 and 21
    expect(second.manifest.stats.chunksFromParent).toBe(first.manifest.chunkCount - 3);
    const out = join(dir, 'out.img');
    await restore({ repository: repoPath, backup: second.id, target: out });
    expect(cmp(src, out)).toBe(true);
    // Without the change in the list, the change would be missed: the list is trusted.
    await expect(backup({ source: src, repository: repoPath, changed, parent: null })).rejects.toThrow(
      /needs a parent backup/,
    );
  });

  it('a damaged parent index: the incremental backs up in full, says why, and restores exactly', async () => {
    const { dir, src, repoPath, first } = await backedUpSource('damaged-parent');
    const indexPath = join(repoPath, 'backups', first.manifest.index.file);
    // One entry byte flipped: the index no longer matches its digest in the manifest.
    const index = readFileSync(indexPath);
    index[index.length - 5]! ^= 0xff;
    writeFileSync(indexPath, index);
    overwrite(src, 3 * MiB + 17, patternBytes(300, 70));
    const changed = [{ offset: 3 * MiB + 17, length: 300 }];
    const second = await backup({ source: src, repository: repoPath, changed, parent: first.id });
    const why = new RegExp(
      `the index of parent backup ${first.id} is damaged \\(.*\\): backed up in full without a parent`,
    );
    expect(second.fallback).toMatch(why);
    expect(second.manifest.plan.fallback).toBe(second.fallback);
    expect(second.manifest.plan.mode).not.toBe('changed');
    expect(second.manifest.parent).toBeNull();
    expect(second.manifest.stats.chunksFromParent).toBe(0);
    expect(second.manifest.stats.bytesRead).toBe(statSync(src).size);
    const out = join(dir, 'out.img');
    await restore({ repository: repoPath, backup: second.id, target: out });
    expect(cmp(src, out)).toBe(true);
    // A truncated index, through the CLI: the same, and a warning.
    writeFileSync(indexPath, index.subarray(0, 100));
    overwrite(src, 9 * MiB, patternBytes(100, 71));
    const r = lowtide(['backup', src, '--repo', repoPath, '--parent', first.id, '--json']);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toMatch(new RegExp(`lowtide: warning: ${why.source}`));
    const third = JSON.parse(r.stdout) as { parent: string | null; plan: { fallback?: string } };
    expect(third.parent).toBeNull();
    expect(third.plan.fallback).toMatch(/has 100 bytes, expected/);
    await restore({ repository: repoPath, backup: 'latest', target: out, force: true });
    expect(cmp(src, out)).toBe(true);
  });

  it('restores to a block device of the same size, writing zeros too', async () => {
    if (skipReason('restore to a loop device', loopUnavailableReason())) return;
    const dir = tmp.file('dev');
    mkdirSync(dir);
    const src = join(dir, 'src.img');
    makeSource(src, 16 * MiB);
    const repoPath = join(dir, 'repo');
    await initRepository(repoPath);
    const { id } = await backup({ source: src, repository: repoPath });
    const disk = join(dir, 'disk.img');
    writeFileSync(disk, patternBytes(16 * MiB, 77)); // old garbage that must be overwritten
    const dev = attachLoop(disk, { readOnly: false });
    try {
      const r = await restore({ repository: repoPath, backup: id, target: dev });
      expect(r.targetKind).toBe('block');
      expect(r.direct).toBe(true); // aligned O_DIRECT writes
      expect(cmp(src, disk)).toBe(true);

      // An image whose size is not a multiple of the sector size: the tail is written too,
      // and nothing past the image's end is touched.
      const odd = join(dir, 'odd.img');
      writeFileSync(odd, patternBytes(5 * MiB + 777, 78));
      const oddBackup = await backup({ source: odd, repository: repoPath });
      writeFileSync(disk, patternBytes(16 * MiB, 79));
      await restore({ repository: repoPath, backup: oddBackup.id, target: dev });
      const after = readFileSync(disk);
      expect(after.subarray(0, 5 * MiB + 777).equals(readFileSync(odd))).toBe(true);
      expect(after.subarray(5 * MiB + 777).equals(patternBytes(16 * MiB, 79).subarray(5 * MiB + 777))).toBe(true);
      const small = join(dir, 'small.img');
      writeFileSync(small, Buffer.alloc(8 * MiB));
      const dev2 = attachLoop(small, { readOnly: false });
      try {
        const err = await restore({ repository: repoPath, backup: id, target: dev2 }).catch((e: unknown) => e);
        expect((err as LowtideError).code).toBe('TARGET_TOO_SMALL');
        expect((err as LowtideError).message).toContain(`needs ${16 * MiB}`);
      } finally {
        detachLoop(dev2);
      }
    } finally {
      detachLoop(dev);
    }
  });
});

describe('restore into a file', () => {
  it('starts writeback as the image grows, not only at the final fsync (strace: sync_file_range on the partial file before its fsync)', async () => {
    if (skipReason('writeback tracing', hasCommand('strace') ? undefined : 'strace is not installed')) return;
    const dir = tmp.file('writeback');
    mkdirSync(dir);
    const src = join(dir, 'src.img');
    writeSparseFile(src, 160 * MiB, [{ offset: 0, data: patternBytes(160 * MiB, 17) }]);
    const repoPath = join(dir, 'repo');
    await initRepository(repoPath);
    const { id } = await backup({ source: src, repository: repoPath, throttle: 'off' });
    const out = join(dir, 'restored.img');
    const t = traceFileCalls(
      [CLI, 'restore', id, out, '--repo', repoPath, '--throttle', 'off'],
      ['sync_file_range', 'fsync'],
    );
    expect(t.status, t.stderr.slice(-2000)).toBe(0);
    expect(cmp(src, out)).toBe(true);
    const onPartial = t.calls.filter(([, path]) => path.endsWith('.lowtide-partial'));
    const starts = onPartial.filter(([name]) => name === 'sync_file_range').length;
    // 160 MiB written: a start after every 64 MiB, all before the file's fsync.
    expect(starts).toBe(2);
    expect(onPartial.at(-1)?.[0]).toBe('fsync');
  });
});

describe('damage and bad input', () => {
  it('a flipped byte in a chunk: verify names the chunk and the backups; restore fails with CHUNK_CORRUPT and the offset', async () => {
    const dir = tmp.file('flip');
    mkdirSync(dir);
    const src = join(dir, 'src.img');
    makeSource(src);
    const repoPath = join(dir, 'repo');
    await initRepository(repoPath);
    const a = await backup({ source: src, repository: repoPath });
    const b = await backup({ source: src, repository: repoPath, parent: null });
    // Damage the chunk that holds source offset 4 MiB.
    const data = readFileSync(src).subarray(4 * MiB, 5 * MiB);
    const { createHash } = await import('node:crypto');
    const hex = createHash('sha256').update(data).digest('hex');
    const chunk = join(repoPath, 'chunks', hex.slice(0, 2), hex);
    const bytes = readFileSync(chunk);
    bytes[bytes.length - 7]! ^= 0x40;
    writeFileSync(chunk, bytes);

    const report = await verifyRepository({ repository: await openRepository(repoPath) });
    expect(report.ok).toBe(false);
    expect(report.problems).toHaveLength(1);
    expect(report.problems[0]).toMatchObject({ digest: hex, problem: 'corrupt', backups: [a.id, b.id].sort() });
    expect(report.damagedBackups).toEqual([a.id, b.id].sort());

    const cli = lowtide(['verify', '--repo', repoPath]);
    expect(cli.status).toBe(3);
    expect(cli.stdout).toContain(`corrupt chunk ${hex}`);
    expect(cli.stdout).toContain(a.id);

    const err = await restore({ repository: repoPath, backup: a.id, target: join(dir, 'out.img') }).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(LowtideError);
    expect((err as LowtideError).code).toBe('CHUNK_CORRUPT');
    expect((err as LowtideError).offset).toBe(4 * MiB);
    expect(readdirSync(dir).filter((f) => f.includes('out.img'))).toEqual([]);
  });

  it('a missing chunk is reported as missing', async () => {
    const dir = tmp.file('missing');
    mkdirSync(dir);
    const src = join(dir, 'src.img');
    makeSource(src, 4 * MiB);
    const repoPath = join(dir, 'repo');
    await initRepository(repoPath);
    const a = await backup({ source: src, repository: repoPath });
    const victim = chunkFiles(repoPath)[0]!;
    const { unlinkSync } = await import('node:fs');
    unlinkSync(victim);
    const report = await verifyRepository({ repository: await openRepository(repoPath) });
    expect(report.problems.map((p) => [p.problem, p.backups])).toEqual([['missing', [a.id]]]);
    const err = await restore({ repository: repoPath, backup: a.id, target: join(dir, 'o.img') }).catch(
      (e: unknown) => e,
    );
    expect((err as LowtideError).code).toBe('CHUNK_MISSING');
  });

  it('backups run beside a backup; a prune holder gets REPO_LOCKED; a killed holder does not block the next one', async () => {
    const dir = tmp.file('lock');
    mkdirSync(dir);
    const src = join(dir, 'src.img');
    makeSource(src, 2 * MiB);
    const repoPath = join(dir, 'repo');
    const repo = await initRepository(repoPath);
    const running = await repo.lock('test backup');
    try {
      const r = lowtide(['backup', src, '--repo', repoPath]);
      expect(r.stderr).toContain('backed up');
      expect(r.status).toBe(0);
    } finally {
      await running.release();
    }
    const lock = await repo.lock('test holder', 'prune');
    try {
      const r = lowtide(['backup', src, '--repo', repoPath]);
      expect(r.status).toBe(1);
      expect(r.stderr).toMatch(/\[REPO_LOCKED\]: the repository is in use by test holder \(pid \d+/);
    } finally {
      await lock.release();
    }
    // A holder that dies without releasing: the kernel drops its flock.
    const { spawn } = await import('node:child_process');
    const holder = spawn(
      process.execPath,
      [
        '-e',
        `import(${JSON.stringify(join(import.meta.dirname, '../../dist/index.js'))}).then(async (m) => { const r = await m.openRepository(${JSON.stringify(repoPath)}); await r.lock('doomed', 'prune'); console.log('locked'); setInterval(() => {}, 1000); })`,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    await new Promise<void>((res) => holder.stdout.once('data', () => res()));
    expect(lowtide(['backup', src, '--repo', repoPath]).status).toBe(1);
    holder.kill('SIGKILL');
    await new Promise((r) => holder.once('exit', r));
    const ok = lowtide(['backup', src, '--repo', repoPath]);
    expect(ok.stderr).toContain('backed up');
    expect(ok.status).toBe(0);
  });

  it('unknown format version, missing backup, not a repository, existing target', async () => {
    const dir = tmp.file('bad');
    mkdirSync(dir);
    const repoPath = join(dir, 'repo');
    await initRepository(repoPath);
    const cfgPath = join(repoPath, 'config.json');
    const cfg = JSON.parse(readFileSync(cfgPath, 'utf8')) as Record<string, unknown>;
    writeFileSync(cfgPath, JSON.stringify({ ...cfg, version: 99 }));
    const e1 = await openRepository(repoPath).catch((e: unknown) => e);
    expect((e1 as LowtideError).code).toBe('REPO_FORMAT');
    expect((e1 as LowtideError).message).toContain('version 99 is not supported');
    writeFileSync(cfgPath, JSON.stringify(cfg));

    const e2 = await restore({ repository: repoPath, backup: '20200101T000000Z-abcdef', target: join(dir, 'x') }).catch(
      (e: unknown) => e,
    );
    expect((e2 as LowtideError).code).toBe('BACKUP_NOT_FOUND');
    const e3 = await restore({ repository: repoPath, backup: 'latest', target: join(dir, 'x') }).catch(
      (e: unknown) => e,
    );
    expect((e3 as LowtideError).code).toBe('BACKUP_NOT_FOUND');
    const e4 = await openRepository(dir).catch((e: unknown) => e);
    expect((e4 as LowtideError).code).toBe('REPO_NOT_FOUND');
    const e5 = await initRepository(repoPath).catch((e: unknown) => e);
    expect((e5 as LowtideError).code).toBe('REPO_EXISTS');
    const e6 = await initRepository(join(dir, 'r2'), { chunkSize: 100_000 }).catch((e: unknown) => e);
    expect((e6 as LowtideError).message).toBe('chunkSize: expected a power of two from 64 KiB to 8 MiB, got 100000');

    const src = join(dir, 'src.img');
    makeSource(src, MiB);
    const { id } = await backup({ source: src, repository: repoPath });
    const target = join(dir, 'exists.img');
    writeFileSync(target, 'keep me');
    const e7 = await restore({ repository: repoPath, backup: id, target }).catch((e: unknown) => e);
    expect((e7 as LowtideError).code).toBe('OUTPUT_EXISTS');
    expect(readFileSync(target, 'utf8')).toBe('keep me');
  });
});

describe('prune', () => {
  it('keeps the newest backups, removes the chunks only the others needed, leaves a valid repository', async () => {
    const dir = tmp.file('prune');
    mkdirSync(dir);
    const src = join(dir, 'src.img');
    makeSource(src, 8 * MiB);
    const repoPath = join(dir, 'repo');
    await initRepository(repoPath);
    const ids: string[] = [];
    for (let v = 0; v < 3; v++) {
      overwrite(src, v * MiB, patternBytes(MiB, 100 + v));
      ids.push((await backup({ source: src, repository: repoPath })).id);
    }
    const before = chunkFiles(repoPath).length;
    const dry = await pruneRepository({ repository: await openRepository(repoPath), keepLast: 1, dryRun: true });
    expect(dry.removed).toEqual(ids.slice(0, 2));
    expect(chunkFiles(repoPath).length).toBe(before);
    const r = lowtide(['prune', '--repo', repoPath, '--keep-last', '1', '--json']);
    expect(r.status).toBe(0);
    const report = JSON.parse(r.stdout) as { removed: string[]; chunksRemoved: number };
    expect(report.removed).toEqual(ids.slice(0, 2));
    // Chunks 0 and 1 of versions 0 and 1 were overwritten later; other chunks are shared.
    expect(report.chunksRemoved).toBe(2);
    expect(chunkFiles(repoPath).length).toBe(before - 2);
    expect((await verifyRepository({ repository: await openRepository(repoPath) })).ok).toBe(true);
    const out = join(dir, 'out.img');
    await restore({ repository: repoPath, backup: ids[2]!, target: out });
    expect(cmp(src, out)).toBe(true);
    expect(lowtide(['prune', '--repo', repoPath]).status).toBe(2);
  });
});
