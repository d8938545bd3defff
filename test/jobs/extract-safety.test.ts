import { existsSync, mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { backup, extractFromBackup, initRepository } from '../../lib/index.js';
import { extractPath, listBackupFiles, listFiles } from '../../lib/jobs/files.js';
import { openVolume } from '../../lib/fs/volume.js';
import { CatalogWriter } from '../../lib/repo/catalog.js';
import { lowtide } from '../helpers/cli.js';
import { skipReason } from '../helpers/system.js';
import { haveTools, mkfs, Mtools, patch, pseudoRandom, Workdir } from '../fixtures/fat/tools.js';

const MiB = 1024 * 1024;
const missing = haveTools('mkfs.fat', 'mcopy') ? undefined : 'needs dosfstools and mtools';

/** Replaces a backup's catalog by `lines` (CatalogEntry objects) and names the new digest in its manifest. */
async function rewriteCatalog(repo: string, id: string, lines: object[]): Promise<void> {
  const manifestPath = join(repo, 'backups', `${id}.json`);
  const m = JSON.parse(readFileSync(manifestPath, 'utf8')) as {
    catalog: { file: string; sha256: string; entries: number };
  };
  const w = await CatalogWriter.create(join(repo, 'tmp'), 1);
  await w.addFrame(Buffer.from(lines.map((l) => JSON.stringify(l) + '\n').join('')), lines.length);
  m.catalog.sha256 = await w.finish(join(repo, 'backups', m.catalog.file));
  m.catalog.entries = lines.length;
  writeFileSync(manifestPath, JSON.stringify(m));
}

describe.skipIf(skipReason('extraction from hostile catalogs', missing))('extract --repo safety', () => {
  const work = new Workdir('lowtide-extract-safety-');
  afterAll(() => work.cleanup());

  it('an extent past the image end is REPO_CORRUPT at once, with no partial file left', async () => {
    const img = work.path('odd.img');
    const size = 4 * MiB + 3 * 512; // not a multiple of the chunk size
    writeFileSync(img, '');
    writeFileSync(img, Buffer.alloc(size));
    mkfs(img, size, { fat: 16, sectorsPerCluster: 1 });
    new Mtools(img).put('/a.bin', pseudoRandom(5000, 1), work.dir);
    const repo = work.path('repo-odd');
    await initRepository(repo, { chunkSize: 64 * 1024 });
    const b = await backup({ source: img, repository: repo });
    expect(b.manifest.size).toBe(size);
    const base = {
      partition: 0,
      shortName: 'EVIL.BIN',
      isDirectory: false,
      attributes: 32,
      modified: '2026-01-01T00:00:00.000Z',
    };
    await rewriteCatalog(repo, b.id, [
      { ...base, path: '/evil.bin', size: 4096, extents: [[size - 1024, 4096]] },
      { ...base, path: '/far.bin', size: 4096, extents: [[size + 10 * MiB, 4096]] },
    ]);
    const out = work.path('out-odd');
    mkdirSync(out);
    for (const name of ['/evil.bin', '/far.bin']) {
      const dest = join(out, name.slice(1));
      const started = Date.now();
      const err = await extractFromBackup({
        repository: repo,
        backup: b.id,
        path: name,
        dest,
        signal: AbortSignal.timeout(5000),
      }).catch((e: unknown) => e);
      // The catalog's own check finds it when the repository is read.
      expect(err).toMatchObject({ code: 'REPO_CORRUPT' });
      expect((err as Error).message).toMatch(/past the image's end|outside the/);
      expect(Date.now() - started).toBeLessThan(4000);
      expect(existsSync(dest)).toBe(false);
    }
    expect(readdirSync(out)).toEqual([]);
  }, 30_000);

  /**
   * A volume whose names are hostile: an 8.3 name holding '/', one holding a
   * control character, and a long name "..", made by mtools and patched.
   */
  async function hostileNames(): Promise<string> {
    const img = work.path('names.img');
    mkfs(img, 8 * MiB, { fat: 16, sectorsPerCluster: 1 });
    const mt = new Mtools(img);
    mt.mkdir('/SUB');
    mt.put('/SUB/INNER.TXT', 'inner', work.dir);
    mt.put('/EVILXNAM.TXT', 'slash', work.dir);
    mt.put('/CTRLXNAM.TXT', 'control', work.dir);
    mt.put('/dots name', 'dots', work.dir);
    const vol = await openVolume(img);
    const root = await vol.list('/');
    vol.close();
    const at = (n: string) => root.find((e) => e.shortName === n)!;
    patch(img, at('EVILXNAM.TXT').entryOffset + 4, Buffer.from('/'));
    patch(img, at('CTRLXNAM.TXT').entryOffset + 4, [0x01]);
    // Long name ".." in the first long-name slot (units 1 and 2, then the terminator).
    const dots = root.find((e) => e.name === 'dots name')!;
    patch(img, dots.lfnOffset + 1, [0x2e, 0, 0x2e, 0, 0, 0]);
    return img;
  }

  it('8.3 and long names with "/", control characters or ".." are escaped or refused, and say so', async () => {
    const img = await hostileNames();
    const listed = await listFiles({ source: img });
    const paths = listed.map((e) => e.path).sort();
    expect(paths).toContain('/EVIL%2FNAM.TXT');
    expect(paths).toContain('/CTRL%01NAM.TXT');
    expect(paths).not.toContain('/EVIL/NAM.TXT');
    expect(paths.some((p) => p.split('/').includes('..'))).toBe(false);
    const evil = listed.find((e) => e.path === '/EVIL%2FNAM.TXT')!;
    expect(evil.unsafeName).toContain("holds '/'");
    expect(listed.find((e) => e.path === '/CTRL%01NAM.TXT')!.unsafeName).toContain('control character');
    const dots = listed.find((e) => e.unsafeName?.includes('long name'))!;
    expect(dots.unsafeName).toContain('".."');
    expect(dots.name).toMatch(/^DOTSNA~1$/i);
    for (const e of listed)
      expect(
        e.path
          .split('/')
          .slice(1)
          .every((n) => n !== '' && n !== '.' && n !== '..'),
      ).toBe(true);

    // Extraction puts every file inside the destination, under the escaped names.
    const out = work.path('names-out');
    const r = await extractPath({ source: img, path: '/', dest: out });
    expect(r.files).toBe(4);
    expect(readdirSync(out).sort()).toEqual(['CTRL%01NAM.TXT', 'DOTSNA~1', 'EVIL%2FNAM.TXT', 'SUB']);
    expect(readFileSync(join(out, 'EVIL%2FNAM.TXT'), 'utf8')).toBe('slash');
    expect(readdirSync(out + '/SUB')).toEqual(['INNER.TXT']);

    // A backup's catalog has the same names; extraction from it likewise.
    const repo = work.path('repo-names');
    await initRepository(repo);
    const b = await backup({ source: img, repository: repo });
    expect((await listBackupFiles({ repository: repo, backup: b.id })).map((e) => e.path).sort()).toEqual(paths);
    // ...and says which names had to be escaped, as the listing of the disk does.
    const cli = lowtide(['files', b.id, '--repo', repo, '--json']);
    expect(cli.status, cli.stderr).toBe(0);
    const fromRepo = (JSON.parse(cli.stdout) as { entries: { path: string; unsafeName?: string }[] }).entries;
    const why = (entries: { path: string; unsafeName?: string }[]) =>
      Object.fromEntries(entries.filter((e) => e.unsafeName !== undefined).map((e) => [e.path, e.unsafeName]));
    expect(why(fromRepo)).toEqual(why(listed));
    expect(Object.keys(why(fromRepo)).sort()).toEqual(['/CTRL%01NAM.TXT', '/DOTSNA~1', '/EVIL%2FNAM.TXT']);
    const out2 = work.path('names-out-repo');
    await extractFromBackup({ repository: repo, backup: b.id, path: '/', dest: out2 });
    expect(readdirSync(out2).sort()).toEqual(['CTRL%01NAM.TXT', 'DOTSNA~1', 'EVIL%2FNAM.TXT', 'SUB']);
  }, 60_000);

  it('a catalog name with a control character or ".." is refused by extract, saying which', async () => {
    const img = work.path('plain.img');
    mkfs(img, 4 * MiB, { fat: 16, sectorsPerCluster: 1 });
    new Mtools(img).put('/A.TXT', 'a', work.dir);
    const repo = work.path('repo-plain');
    await initRepository(repo);
    const b = await backup({ source: img, repository: repo });
    const base = {
      partition: 0,
      shortName: 'X',
      size: 0,
      isDirectory: false,
      attributes: 32,
      modified: '2026-01-01T00:00:00.000Z',
      extents: [],
    };
    for (const [path, why] of [
      ['/a\u0007b', 'control character'],
      ['/d/../../escape', "'..'"],
    ] as const) {
      await rewriteCatalog(repo, b.id, [{ ...base, path }]);
      const out = work.path(`plain-out-${why.length}`);
      const err = await extractFromBackup({ repository: repo, backup: b.id, path: '/', dest: out }).catch(
        (e: unknown) => e,
      );
      expect(err).toMatchObject({ code: 'REPO_CORRUPT' });
      expect((err as Error).message).toContain(why);
      expect(existsSync(work.path('escape'))).toBe(false);
    }
  });

  it('never follows a symbolic link in the destination', async () => {
    const img = work.path('link.img');
    mkfs(img, 4 * MiB, { fat: 16, sectorsPerCluster: 1 });
    const mt = new Mtools(img);
    mt.mkdir('/SUB');
    mt.put('/SUB/F.TXT', 'data', work.dir);
    const outside = work.path('outside');
    mkdirSync(outside);
    const out = work.path('link-out');
    mkdirSync(join(out, 'link.img-root'), { recursive: true });
    symlinkSync(outside, join(out, 'link.img-root', 'SUB'));
    const err = await extractPath({ source: img, path: '/', dest: out, force: true }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'OUTPUT_EXISTS' });
    expect((err as Error).message).toContain('symbolic link');
    expect(readdirSync(outside)).toEqual([]);

    // The destination itself a link to a directory: refused too.
    const linked = work.path('linked-out');
    symlinkSync(outside, linked);
    const err2 = await extractPath({ source: img, path: '/SUB', dest: linked, force: true }).catch((e: unknown) => e);
    expect(err2).toMatchObject({ code: 'OUTPUT_EXISTS' });
    expect(readdirSync(outside)).toEqual([]);
  });
});
