/**
 * An encrypted repository in a bucket of a real Ceph RADOS Gateway: round
 * trip, no plaintext in any object, a missing or wrong passphrase and a
 * flipped byte in an object are clear errors.
 */
import { writeFileSync } from 'node:fs';
import { GetObjectCommand, ListObjectsV2Command, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backup, initRepository, openRepository, restore, verifyRepository } from '../../lib/index.js';
import { cmp } from '../helpers/cli.js';
import { newBucket, repoOptions, rgw, s3Client } from '../helpers/s3.js';
import { rejection } from '../helpers/errors.js';
import { skipReason } from '../helpers/system.js';
import { pseudoRandom, Workdir } from '../fixtures/fat/tools.js';

const MiB = 1024 * 1024;
const PASSWORD = 'an s3 passphrase';
const KNOWN = 'LOWTIDE-KNOWN-PLAINTEXT-IN-A-BUCKET-';

describe.skipIf(skipReason('encrypted S3 repositories', rgw().skip))('encrypted S3 repository (Ceph RGW)', () => {
  const work = new Workdir('lowtide-s3-crypt-');
  const saved = process.env.LOWTIDE_PASSWORD;
  let client: S3Client;
  let bucket: string;
  beforeAll(async () => {
    delete process.env.LOWTIDE_PASSWORD;
    client = s3Client();
    bucket = await newBucket(client);
  });
  afterAll(() => {
    if (saved !== undefined) process.env.LOWTIDE_PASSWORD = saved;
    client?.destroy();
    work.cleanup();
  });

  async function objects(prefix: string): Promise<{ key: string; body: Buffer }[]> {
    const out: { key: string; body: Buffer }[] = [];
    let token: string | undefined;
    do {
      const r = await client.send(
        new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token, MaxKeys: 100 }),
      );
      for (const o of r.Contents ?? []) {
        const got = await client.send(new GetObjectCommand({ Bucket: bucket, Key: o.Key }));
        out.push({ key: o.Key!, body: Buffer.from(await got.Body!.transformToByteArray()) });
      }
      token = r.IsTruncated ? r.NextContinuationToken : undefined;
    } while (token !== undefined);
    return out;
  }

  it('round trip, no plaintext in the bucket, clear errors', async () => {
    const url = `s3://${bucket}/enc`;
    const src = work.path('src.img');
    const known = Buffer.from(KNOWN.repeat(Math.ceil(MiB / KNOWN.length))).subarray(0, MiB);
    writeFileSync(src, Buffer.concat([pseudoRandom(3 * MiB, 5), known, Buffer.alloc(MiB), pseudoRandom(MiB, 6)]));

    const repo = await initRepository(repoOptions(url), {
      encryption: 'aes-256-gcm',
      password: PASSWORD,
      chunkSize: 256 * 1024,
      // One object per chunk (format version 1); packs.test.ts has encrypted packs.
      packSize: 0,
    });
    repo.close();
    const first = await backup({ source: src, repository: repoOptions(url), password: PASSWORD });
    // Incremental: one changed chunk.
    const data = pseudoRandom(6 * MiB, 5);
    data.set(pseudoRandom(3 * MiB, 5));
    data.set(known, 3 * MiB);
    data.fill(0, 4 * MiB, 5 * MiB);
    data.set(pseudoRandom(MiB, 6), 5 * MiB);
    data.set(pseudoRandom(1000, 7), 100);
    writeFileSync(src, data);
    const second = await backup({ source: src, repository: repoOptions(url), password: PASSWORD });
    expect(second.manifest.parent).toBe(first.id);
    expect(second.manifest.stats.chunksNew).toBe(1);
    const out = work.path('out.img');
    await restore({ repository: repoOptions(url), password: PASSWORD, backup: second.id, target: out });
    expect(cmp(src, out)).toBe(true);
    expect((await verifyRepository({ repository: repoOptions(url), password: PASSWORD })).ok).toBe(true);

    // Every object of the repository, read back from the bucket: no plaintext.
    const all = await objects('enc/');
    expect(all.some((o) => o.key.startsWith('enc/keys/'))).toBe(true);
    expect(all.filter((o) => o.key.startsWith('enc/chunks/')).length).toBeGreaterThan(10);
    for (const o of all) {
      expect(o.body.includes(Buffer.from(KNOWN)), o.key).toBe(false);
      expect(o.body.includes(Buffer.from('src.img')), o.key).toBe(false);
    }

    expect((await rejection(openRepository(repoOptions(url)))).code).toBe('PASSWORD_REQUIRED');
    expect((await rejection(openRepository(repoOptions(url), { password: 'wrong' }))).code).toBe('BAD_PASSWORD');

    // A flipped byte in a chunk object the second backup needs: verify names it, restore refuses.
    const needed = new Set<string>();
    const opened = await openRepository(repoOptions(url), { password: PASSWORD });
    try {
      const index = await opened.openIndex(second.manifest);
      for (let i = 0; i < second.manifest.chunkCount; i++) {
        const e = await index.entry(i);
        if (e !== null) needed.add(e.toString('hex'));
      }
      await index.close();
    } finally {
      opened.close();
    }
    const chunk = all.find(
      (o) => o.key.startsWith('enc/chunks/') && needed.has(o.key.slice(o.key.lastIndexOf('/') + 1)),
    )!;
    const hex = chunk.key.slice(chunk.key.lastIndexOf('/') + 1);
    const altered = Buffer.from(chunk.body);
    altered[altered.length - 5] = (altered[altered.length - 5] ?? 0) ^ 1;
    await client.send(new PutObjectCommand({ Bucket: bucket, Key: chunk.key, Body: altered }));
    const report = await verifyRepository({ repository: repoOptions(url), password: PASSWORD });
    expect(report.ok).toBe(false);
    expect(report.problems.map((p) => [p.digest, p.backups.includes(second.id)])).toEqual([[hex, true]]);
    const bad = await rejection(
      restore({ repository: repoOptions(url), password: PASSWORD, backup: second.id, target: work.path('bad.img') }),
    );
    expect(bad.code).toBe('CHUNK_CORRUPT');
    await client.send(new PutObjectCommand({ Bucket: bucket, Key: chunk.key, Body: chunk.body }));

    // A flipped byte in a manifest object.
    const manifestKey = `enc/backups/${second.id}.json`;
    const manifest = all.find((o) => o.key === manifestKey)!;
    const m2 = Buffer.from(manifest.body);
    m2[20] = (m2[20] ?? 0) ^ 1;
    await client.send(new PutObjectCommand({ Bucket: bucket, Key: manifestKey, Body: m2 }));
    const err = await rejection(
      restore({ repository: repoOptions(url), password: PASSWORD, backup: second.id, target: work.path('bad2.img') }),
    );
    expect(err.code).toBe('REPO_CORRUPT');
    expect(err.message).toContain('fails authentication');
    await client.send(new PutObjectCommand({ Bucket: bucket, Key: manifestKey, Body: manifest.body }));
    expect((await verifyRepository({ repository: repoOptions(url), password: PASSWORD })).ok).toBe(true);
  });
});
