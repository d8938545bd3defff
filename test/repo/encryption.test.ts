import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  backup,
  extractFromBackup,
  imageSource,
  initRepository,
  listBackupFiles,
  openRepository,
  pruneRepository,
  restore,
  verifyRepository,
} from '../../lib/index.js';
import { cmp, lowtide } from '../helpers/cli.js';
import { rejection } from '../helpers/errors.js';
import { skipReason } from '../helpers/system.js';
import { haveTools, mkfs, Mtools, pseudoRandom, Workdir } from '../fixtures/fat/tools.js';

const MiB = 1024 * 1024;
const PASSWORD = 'correct horse battery staple';
/** Written to the source in clear: no object of the repository may contain it. */
const KNOWN = 'LOWTIDE-KNOWN-PLAINTEXT-0123456789-';
const missing = haveTools('mkfs.fat', 'mcopy', 'mdir') ? undefined : 'needs dosfstools and mtools';

function allFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((d) =>
    d.isDirectory() ? allFiles(join(dir, d.name)) : [join(dir, d.name)],
  );
}

function flipByte(path: string, offset: number): void {
  const b = readFileSync(path);
  b[offset] = (b[offset] ?? 0) ^ 0x01;
  writeFileSync(path, b);
}

describe.skipIf(skipReason('encrypted repositories (FAT sources)', missing))('encrypted repository', () => {
  const work = new Workdir('lowtide-crypt-');
  const saved = process.env.LOWTIDE_PASSWORD;
  beforeAll(() => {
    delete process.env.LOWTIDE_PASSWORD;
  });
  afterAll(() => {
    if (saved !== undefined) process.env.LOWTIDE_PASSWORD = saved;
    work.cleanup();
  });

  const src = work.path('src.img');
  const repo = work.path('repo');
  const known = Buffer.from(KNOWN.repeat(Math.ceil((3 * MiB) / KNOWN.length))).subarray(0, 3 * MiB);

  it('round trip: backup, incremental, restore, verify, files, extract, prune (cmp)', async () => {
    writeFileSync(src, pseudoRandom(24 * MiB, 3));
    mkfs(src, 24 * MiB, { fat: 16, sectorsPerCluster: 4, label: 'CRYPT' });
    const mt = new Mtools(src);
    mt.put('/known.txt', known, work.dir);
    mt.put('/random.bin', pseudoRandom(2 * MiB, 4), work.dir);

    const r = await initRepository(repo, { encryption: 'aes-256-gcm', password: PASSWORD, chunkSize: 256 * 1024 });
    expect(r.isEncrypted).toBe(true);
    expect(r.config.hash).toBe('hmac-sha256');
    r.close();
    const keys = readdirSync(join(repo, 'keys'));
    expect(keys).toHaveLength(1);
    expect(keys[0]).toMatch(/^[0-9a-f]{16}\.json$/);

    // A used-blocks backup restores to the image `lowtide image` makes of the source.
    const expected = async (name: string): Promise<string> => {
      const out = work.path(name);
      await imageSource({ source: src, output: out });
      return out;
    };
    const first = await backup({ source: src, repository: repo, password: PASSWORD });
    expect(first.manifest.catalog).not.toBeNull();
    const out1 = work.path('out1.img');
    await restore({ repository: repo, password: PASSWORD, backup: first.id, target: out1 });
    expect(cmp(await expected('image1.img'), out1)).toBe(true);

    mt.put('/second.txt', 'a second file\r\n', work.dir);
    const second = await backup({ source: src, repository: repo, password: PASSWORD });
    expect(second.manifest.parent).toBe(first.id);
    expect(second.manifest.stats.chunksNew).toBeLessThan(8);
    const out2 = work.path('out2.img');
    await restore({ repository: repo, password: PASSWORD, backup: second.id, target: out2 });
    const image2 = await expected('image2.img');
    expect(cmp(image2, out2)).toBe(true);

    const report = await verifyRepository({ repository: repo, password: PASSWORD });
    expect(report.ok).toBe(true);
    expect(report.backupsChecked).toBe(2);

    const listing = await listBackupFiles({ repository: repo, password: PASSWORD, backup: second.id });
    const names = JSON.stringify(listing);
    expect(names).toContain('known.txt');
    expect(names).toContain('second.txt');
    const dest = work.path('extracted');
    await extractFromBackup({ repository: repo, password: PASSWORD, backup: second.id, path: '/known.txt', dest });
    expect(readFileSync(dest).equals(known)).toBe(true);

    const pruned = await pruneRepository({ repository: repo, password: PASSWORD, keepLast: 1 });
    expect(pruned.removed).toEqual([first.id]);
    const out3 = work.path('out3.img');
    await restore({ repository: repo, password: PASSWORD, backup: 'latest', target: out3 });
    expect(cmp(image2, out3)).toBe(true);
  });

  it('no object holds the plaintext, and chunk names are not the content hashes', () => {
    const needle = Buffer.from(KNOWN);
    const files = allFiles(repo);
    expect(files.length).toBeGreaterThan(10);
    for (const f of files) {
      expect(readFileSync(f).includes(needle), relative(repo, f)).toBe(false);
      expect(readFileSync(f).includes(Buffer.from('known.txt')), relative(repo, f)).toBe(false);
    }
    // A chunk of nothing but the pattern: its SHA-256 names no object.
    const chunk = known.subarray(0, 256 * 1024);
    const sha = createHash('sha256').update(chunk).digest('hex');
    expect(files.some((f) => f.includes(sha))).toBe(false);
    // Manifests are not JSON in clear.
    const manifest = files.find((f) => f.endsWith('.json') && f.includes('/backups/'));
    expect(manifest).toBeDefined();
    expect(() => JSON.parse(readFileSync(manifest as string, 'utf8')) as unknown).toThrow();
  });

  it('a missing or wrong passphrase is a clear error', async () => {
    const none = await rejection(openRepository(repo));
    expect(none.code).toBe('PASSWORD_REQUIRED');
    expect(none.message).toContain('LOWTIDE_PASSWORD');
    expect(none.message).toContain('--password-file');
    const wrong = await rejection(openRepository(repo, { password: 'wrong' }));
    expect(wrong.code).toBe('BAD_PASSWORD');
    const job = await rejection(restore({ repository: repo, backup: 'latest', target: work.path('x.img') }));
    expect(job.code).toBe('PASSWORD_REQUIRED');
    const initNone = await rejection(initRepository(work.path('repo-nopw'), { encryption: 'aes-256-gcm' }));
    expect(initNone.code).toBe('PASSWORD_REQUIRED');
    const again = await rejection(initRepository(repo, { encryption: 'aes-256-gcm', password: PASSWORD }));
    expect(again.code).toBe('REPO_EXISTS');
  });

  it('a flipped byte in a chunk: verify names it, restore refuses (CHUNK_CORRUPT)', async () => {
    const r = await openRepository(repo, { password: PASSWORD });
    const m = await r.readManifest('latest');
    const index = await r.openIndex(m);
    let hex = '';
    for (let i = 0; i < m.chunkCount && hex === ''; i++) hex = (await index.entry(i))?.toString('hex') ?? '';
    await index.close();
    r.close();
    const path = join(repo, 'chunks', hex.slice(0, 2), hex);
    const original = readFileSync(path);
    flipByte(path, 40);
    try {
      const report = await verifyRepository({ repository: repo, password: PASSWORD });
      expect(report.ok).toBe(false);
      expect(report.problems.map((p) => p.digest)).toEqual([hex]);
      expect(report.problems[0]?.message).toContain('fails authentication');
      const err = await rejection(
        restore({ repository: repo, password: PASSWORD, backup: m.id, target: work.path('bad.img') }),
      );
      expect(err.code).toBe('CHUNK_CORRUPT');
      expect(err.message).toContain(hex);
    } finally {
      writeFileSync(path, original);
    }
  });

  it('a chunk moved to another name fails authentication (the name is authenticated)', async () => {
    const chunks = allFiles(join(repo, 'chunks')).filter((f) => statSync(f).size > 1000);
    const [a, b] = chunks as [string, string];
    const tmp = `${a}.saved`;
    renameSync(a, tmp);
    renameSync(b, a);
    try {
      const report = await verifyRepository({ repository: repo, password: PASSWORD });
      expect(report.problems.some((p) => p.problem === 'corrupt' && a.endsWith(p.digest))).toBe(true);
    } finally {
      renameSync(a, b);
      renameSync(tmp, a);
    }
  });

  it('a flipped byte in a manifest or an index is REPO_CORRUPT', async () => {
    const backups = join(repo, 'backups');
    const id = (readdirSync(backups).find((n) => n.endsWith('.json')) as string).slice(0, -5);
    const manifest = join(backups, `${id}.json`);
    const indexFile = join(backups, `${id}.index`);
    for (const [file, offset] of [
      [manifest, 30],
      [indexFile, 50],
    ] as const) {
      const original = readFileSync(file);
      flipByte(file, offset);
      try {
        const err = await rejection(
          restore({ repository: repo, password: PASSWORD, backup: id, target: work.path('bad2.img') }),
        );
        expect(err.code).toBe('REPO_CORRUPT');
        expect(err.message).toContain('fails authentication');
        expect(err.message).toContain(file);
        const report = await verifyRepository({ repository: repo, password: PASSWORD });
        expect(report.ok).toBe(false);
      } finally {
        writeFileSync(file, original);
      }
    }
    expect((await verifyRepository({ repository: repo, password: PASSWORD })).ok).toBe(true);
  });

  it('CLI: init --encryption with --password-file, LOWTIDE_PASSWORD, clear errors', () => {
    const cliRepo = work.path('cli-repo');
    const pwFile = work.path('pw.txt');
    writeFileSync(pwFile, `${PASSWORD}\n`);
    const init = lowtide(['init', cliRepo, '--encryption', 'aes-256-gcm', '--password-file', pwFile]);
    expect(init.status, init.stderr).toBe(0);
    expect(init.stdout).toContain('encrypted');
    const b = lowtide(['backup', src, '--repo', cliRepo, '--password-file', pwFile, '--throttle', 'off']);
    expect(b.status, b.stderr).toBe(0);
    const noPw = lowtide(['list', '--repo', cliRepo]);
    expect(noPw.status).not.toBe(0);
    expect(noPw.stderr).toContain('PASSWORD_REQUIRED');
    process.env.LOWTIDE_PASSWORD = 'wrong';
    try {
      const bad = lowtide(['list', '--repo', cliRepo]);
      expect(bad.stderr).toContain('BAD_PASSWORD');
      process.env.LOWTIDE_PASSWORD = PASSWORD;
      const ok = lowtide(['list', '--repo', cliRepo, '--json']);
      expect(ok.status, ok.stderr).toBe(0);
      expect((JSON.parse(ok.stdout) as { backups: unknown[] }).backups).toHaveLength(1);
    } finally {
      delete process.env.LOWTIDE_PASSWORD;
    }
  });
});
