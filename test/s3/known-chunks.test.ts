/**
 * The persistent known-chunks index of an S3 repository: a backup of another
 * disk with mostly the same chunks asks the storage about (almost) none of
 * them; after a prune from another machine (another cache directory) the
 * index is not trusted, and restores stay exact.
 */
import { readdirSync, writeFileSync } from 'node:fs';
import type { S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backup, initRepository, openRepository, pruneRepository, restore } from '../../lib/index.js';
import type { S3Storage } from '../../lib/repo/storage/s3.js';
import { cmp } from '../helpers/cli.js';
import { newBucket, repoOptions, rgw, s3Client } from '../helpers/s3.js';
import { skipReason } from '../helpers/system.js';
import { patternBytes, TempDir } from '../helpers/tmp.js';

const KiB = 1024;

describe.skipIf(skipReason('the known-chunks index', rgw().skip))('the known-chunks index (Ceph RGW)', () => {
  const work = new TempDir('lowtide-s3-known-');
  let client: S3Client;
  let bucket: string;
  beforeAll(async () => {
    client = s3Client();
    bucket = await newBucket(client);
  });
  afterAll(() => {
    client?.destroy();
    work.remove();
  });

  /** 64 chunks of 64 KiB: 56 the same in every image, then 8 of its own. */
  function image(name: string, seed: number): string {
    const path = work.file(name);
    writeFileSync(path, Buffer.concat([patternBytes(56 * 64 * KiB, 1000), patternBytes(8 * 64 * KiB, seed)]));
    return path;
  }

  /**
   * A backup through a repository of its own with `cacheDir`; the HEAD
   * requests it sent (one per chunk it asked about, and 2 of its lease's checks).
   */
  async function backupCounting(url: string, source: string, cacheDir: string): Promise<{ id: string; heads: number }> {
    const repo = await openRepository(repoOptions(url, { cacheDir }));
    try {
      const { id } = await backup({ source, repository: repo });
      return { id, heads: (repo.storage as S3Storage).requests.head };
    } finally {
      repo.close();
    }
  }

  async function restoresExactly(url: string, id: string, source: string): Promise<void> {
    const out = work.file(`restore-${id}.img`);
    await restore({ repository: repoOptions(url), backup: id, target: out });
    expect(cmp(out, source)).toBe(true);
  }

  it('a second disk HEADs only its new chunks; a prune elsewhere makes the index untrusted', async () => {
    const url = `s3://${bucket}/known`;
    // One object per chunk (format version 1): chunks are asked about with HEAD.
    (await initRepository(repoOptions(url), { chunkSize: 64 * KiB, packSize: 0 })).close();
    const here = work.file('cache-here');
    const elsewhere = work.file('cache-elsewhere');

    const a = image('a.img', 1);
    const first = await backupCounting(url, a, here);
    expect(first.heads).toBeGreaterThanOrEqual(64); // nothing known yet: every chunk is asked about
    expect(readdirSync(here).filter((n) => n.endsWith('.known-chunks'))).toHaveLength(1);

    // Another disk, no parent: only its 8 chunks of its own are unknown.
    const b = image('b.img', 2);
    const second = await backupCounting(url, b, here);
    expect(second.heads).toBeLessThanOrEqual(8 + 2);
    // Without the index (another machine) the same backup asks about every chunk.
    const c = image('c.img', 2);
    expect((await backupCounting(url, c, elsewhere)).heads).toBeGreaterThanOrEqual(64);

    // a changes; from the other machine, prune keeps one backup per disk: a's old 8 chunks go.
    writeFileSync(a, Buffer.concat([patternBytes(56 * 64 * KiB, 1000), patternBytes(8 * 64 * KiB, 3)]));
    await backupCounting(url, a, elsewhere);
    const repo = await openRepository(repoOptions(url, { cacheDir: elsewhere }));
    try {
      const pruned = await pruneRepository({ repository: repo, keepLast: 1 });
      expect(pruned.removed).toEqual([first.id]);
      expect(pruned.chunksRemoved).toBe(8);
    } finally {
      repo.close();
    }

    // Here the index still lists a's old chunks: it must not be trusted, or they would not be stored again.
    const d = image('d.img', 1);
    const fourth = await backupCounting(url, d, here);
    expect(fourth.heads).toBeGreaterThanOrEqual(64);
    await restoresExactly(url, fourth.id, d);
    await restoresExactly(url, second.id, b);
    const check = await openRepository(repoOptions(url));
    try {
      expect((await check.verify()).ok).toBe(true);
    } finally {
      check.close();
    }
  });
});
