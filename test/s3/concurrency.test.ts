/**
 * Many writers, one S3 repository, no server of ours: concurrent backups of
 * different disks and of the same disk, prune while a backup runs, the
 * gateway restarted under a backup, and a backup killed with SIGKILL.
 */
import { existsSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  lowtideS3,
  lowtideS3Async,
  newBucket,
  restoresExactly as checkRestore,
  rgw,
  s3Client,
  s3Writers,
  sharedImage,
  startRadosgw,
  stopRadosgw,
  verifyOk,
} from '../helpers/s3.js';
import { skipReason } from '../helpers/system.js';
import { TempDir } from '../helpers/tmp.js';
import { pruneWhileBackupRuns, twoPairsAtOnce } from '../helpers/writers.js';

describe.skipIf(skipReason('many writers on S3', rgw().skip))('many writers, one S3 repository (Ceph RGW)', () => {
  const work = new TempDir('lowtide-s3-many-');
  let client: S3Client;
  let bucket: string;
  let ep: string[];
  beforeAll(async () => {
    client = s3Client();
    bucket = await newBucket(client);
    ep = ['--s3-endpoint', rgw().endpoint];
  });
  afterAll(() => {
    client?.destroy();
    work.remove();
  });

  async function keys(prefix: string): Promise<string[]> {
    const out: string[] = [];
    let token: string | undefined;
    do {
      const r = await client.send(
        new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }),
      );
      for (const o of r.Contents ?? []) out.push(o.Key!);
      token = r.IsTruncated ? r.NextContinuationToken : undefined;
    } while (token !== undefined);
    return out;
  }

  async function waitForKey(prefix: string): Promise<void> {
    for (let i = 0; i < 600; i++) {
      if ((await keys(prefix)).length > 0) return;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`no ${prefix} appeared`);
  }

  function init(name: string): string {
    const repo = `s3://${bucket}/${name}`;
    // One object per chunk (format version 1); packs.test.ts has the same cases with packs.
    const r = lowtideS3(['init', repo, '--chunk-size', '64K', '--pack-size', '0', ...ep]);
    expect(r.status, r.stderr).toBe(0);
    return repo;
  }

  const image = (name: string, seed: number, mib?: number, shared?: number): string =>
    sharedImage(work, name, seed, mib, shared);
  const restoresExactly = (repo: string, id: string, source: string): void => checkRestore(work, repo, id, source);

  const writers = s3Writers(
    work,
    () => client,
    () => bucket,
  );

  it('two backups of different disks at once, and the same disk twice at once', async () => {
    const repo = init('many');
    await twoPairsAtOnce(writers, repo);
    // 2 MiB shared + 6 MiB each of a and b, in 64 KiB chunks, stored once each.
    expect((await keys('many/chunks/')).length).toBe(32 + 96 + 96);
  });

  it('prune while a backup runs: nothing the backup needs is deleted', async () => {
    const repo = init('prune');
    const r = await pruneWhileBackupRuns(writers, repo);
    expect(r.during.chunksRemoved).toBe(0);
    expect(r.during.chunksKept).toMatch(/1 backup\(s\) running/);
    // With no backup running, prune deletes what nothing needs (no chunk of the slow backup).
    expect(r.after.chunksRemoved).toBe(0);
    restoresExactly(repo, r.second, r.d);
  });

  it('a backup meets a running prune: REPO_LOCKED, nothing written', async () => {
    const repo = init('locked');
    await client.send(
      new (await import('@aws-sdk/client-s3')).PutObjectCommand({
        Bucket: bucket,
        Key: 'locked/locks/prune.json',
        Body: JSON.stringify({ pid: 1, host: 'elsewhere', purpose: 'lowtide prune', since: new Date().toISOString() }),
      }),
    );
    const r = lowtideS3(['backup', image('e.img', 9, 1, 0), '--repo', repo, ...ep]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/\[REPO_LOCKED\].*being pruned by lowtide prune \(pid 1 on elsewhere/);
    expect(await keys('locked/backups/')).toEqual([]);
    expect(await keys('locked/locks/')).toEqual(['locked/locks/prune.json']);
  });

  it('radosgw stopped and started again during a backup: the backup retries and completes', async () => {
    const repo = init('restart');
    const src = image('r.img', 11, 8, 0);
    const job = lowtideS3Async(['backup', src, '--repo', repo, '--rate-limit', '2', ...ep]);
    await waitForKey('restart/locks/backup-');
    await stopRadosgw();
    await new Promise((r) => setTimeout(r, 1500));
    await startRadosgw();
    const r = await job.done;
    // Retried through the outage: complete and exact. (A failure would have
    // to be a clear error with no manifest; within the retry budget there is none.)
    expect(r.status, r.stderr).toBe(0);
    restoresExactly(repo, r.stdout.trim(), src);
    verifyOk(repo);
  });

  it('SIGKILL of lowtide mid-backup: no manifest, the repository stays sound, the next backup works', async () => {
    const repo = init('killed');
    const src = image('k.img', 13, 8, 0);
    const job = lowtideS3Async(['backup', src, '--repo', repo, '--rate-limit', '2', ...ep]);
    await waitForKey('killed/chunks/');
    const pid = job.child.pid!;
    job.child.kill('SIGKILL');
    await job.done;
    expect(await keys('killed/backups/')).toEqual([]);
    verifyOk(repo);
    const r = lowtideS3(['backup', src, '--repo', repo, ...ep]);
    expect(r.status, r.stderr).toBe(0);
    restoresExactly(repo, r.stdout.trim(), src);
    // The killed process's staging directory was removed by the next run.
    expect(readdirSync(tmpdir()).filter((n) => n.startsWith(`lowtide-stage.${pid}.`))).toEqual([]);
    expect(existsSync(src)).toBe(true);
  });
});
