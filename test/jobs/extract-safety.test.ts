import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { backup, extractFromBackup, initRepository } from '../../lib/index.js';
import { CatalogWriter } from '../../lib/repo/catalog.js';
import { skipReason } from '../helpers/system.js';
import { haveTools, mkfs, Mtools, pseudoRandom, Workdir } from '../fixtures/fat/tools.js';

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
      const err = await extractFromBackup(repo, b.id, name, dest, { signal: AbortSignal.timeout(5000) }).catch(
        (e: unknown) => e,
      );
      expect(err).toMatchObject({ code: 'REPO_CORRUPT' });
      expect((err as Error).message).toContain('outside the');
      expect(Date.now() - started).toBeLessThan(4000);
      expect(existsSync(dest)).toBe(false);
    }
    expect(readdirSync(out)).toEqual([]);
  }, 30_000);
});
