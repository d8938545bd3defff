/**
 * Repositories on S3, against a real Ceph RADOS Gateway (the s3 project's
 * globalSetup starts it): the CLI and the API round trip, incrementals,
 * verify, prune, files/extract, and the errors a user meets first.
 */
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { GetObjectCommand, ListObjectsV2Command, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  backup,
  initRepository,
  listBackupFiles,
  openRepository,
  pruneRepository,
  restore,
  verifyRepository,
} from '../../lib/index.js';
import { cmp } from '../helpers/cli.js';
import { lowtideS3, newBucket, repoOptions, rgw, s3Client, s3Env } from '../helpers/s3.js';
import { skipReason } from '../helpers/system.js';
import { haveTools, mkfs, Mtools, pseudoRandom, Workdir } from '../fixtures/fat/tools.js';

const MiB = 1024 * 1024;
const fatTools = haveTools('mkfs.fat', 'mcopy', 'mdir') ? undefined : 'needs dosfstools and mtools';

describe.skipIf(skipReason('S3 repositories', rgw().skip ?? fatTools))('S3 repositories (Ceph RGW)', () => {
  const work = new Workdir('lowtide-s3-');
  let client: S3Client;
  let bucket: string;
  let endpointArgs: string[];
  beforeAll(async () => {
    client = s3Client();
    bucket = await newBucket(client);
    endpointArgs = ['--s3-endpoint', rgw().endpoint];
  });
  afterAll(() => {
    client?.destroy();
    work.cleanup();
  });

  async function keys(prefix: string): Promise<string[]> {
    const out: string[] = [];
    let token: string | undefined;
    do {
      const r = await client.send(
        new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token, MaxKeys: 100 }),
      );
      for (const o of r.Contents ?? []) out.push(o.Key!);
      token = r.IsTruncated ? r.NextContinuationToken : undefined;
    } while (token !== undefined);
    return out;
  }

  it('CLI: init, backup, incremental, list, restore, verify, files, extract, prune', async () => {
    const repo = `s3://${bucket}/cli/repo`;
    const s3 = (args: string[]): ReturnType<typeof lowtideS3> => lowtideS3([...args, ...endpointArgs]);
    let r = s3(['init', '--repo', repo, '--chunk-size', '256K']);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    // The layout: a config.json under the prefix, nothing else yet.
    expect(await keys('cli/repo/')).toEqual(['cli/repo/config.json']);
    r = s3(['init', repo]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/REPO_EXISTS/);

    // A FAT volume with files, old data in its free space.
    const src = work.path('vol.img');
    writeFileSync(src, pseudoRandom(40 * MiB, 3));
    mkfs(src, 40 * MiB, { fat: 32, sectorsPerCluster: 1, label: 'S3TEST' });
    const mt = new Mtools(src);
    mt.mkdir('/docs');
    mt.put('/docs/a.bin', pseudoRandom(3 * MiB, 7), work.dir);
    mt.put('/b.txt', 'hello from the bucket\r\n', work.dir);

    r = s3(['backup', src, '--repo', repo]);
    expect(r.status, r.stderr).toBe(0);
    const first = r.stdout.trim();
    expect(first).toMatch(/^\d{8}T\d{6}Z-[0-9a-f]{6}$/);
    expect(await keys(`cli/repo/backups/${first}`)).toEqual(
      ['catalog', 'index', 'json'].map((x) => `cli/repo/backups/${first}.${x}`),
    );

    // Incremental: one more file.
    mt.put('/docs/c.bin', pseudoRandom(MiB, 9), work.dir);
    r = s3(['backup', src, '--repo', repo, '--json']);
    expect(r.status, r.stderr).toBe(0);
    const second = JSON.parse(r.stdout) as { id: string; parent: string; stats: { chunksNew: number } };
    expect(second.parent).toBe(first);
    expect(second.stats.chunksNew).toBeGreaterThan(0);
    expect(second.stats.chunksNew).toBeLessThanOrEqual(8);

    r = s3(['list', '--repo', repo]);
    expect(r.status).toBe(0);
    expect(r.stdout).toContain(first);
    expect(r.stdout).toContain(second.id);

    // Restores are the image the backup read (`lowtide image` reconstructs the same).
    const imaged = work.path('imaged.img');
    expect(lowtideS3(['image', src, imaged]).status).toBe(0);
    const out = work.path('restored.img');
    r = s3(['restore', second.id, out, '--repo', repo]);
    expect(r.status, r.stderr).toBe(0);
    expect(cmp(out, imaged)).toBe(true);

    r = s3(['verify', '--repo', repo]);
    expect(r.status, r.stderr).toBe(0);

    r = s3(['files', 'latest', '--repo', repo]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain('/docs/c.bin');
    const dest = work.path('extracted');
    r = s3(['extract', 'latest', '/docs', dest, '--repo', repo]);
    expect(r.status, r.stderr).toBe(0);
    expect(readFileSync(`${dest}/c.bin`).equals(pseudoRandom(MiB, 9))).toBe(true);
    expect(readFileSync(`${dest}/a.bin`).equals(pseudoRandom(3 * MiB, 7))).toBe(true);

    // prune: the first backup goes, its chunks that the second does not use too.
    r = s3(['prune', '--repo', repo, '--keep-last', '1', '--json']);
    expect(r.status, r.stderr).toBe(0);
    const pruned = JSON.parse(r.stdout) as { removed: string[]; chunksRemoved: number };
    expect(pruned.removed).toEqual([first]);
    expect((await keys('cli/repo/backups/')).filter((k) => k.includes(first))).toEqual([]);
    expect(await keys('cli/repo/locks/')).toEqual([]);
    const out2 = work.path('restored2.img');
    r = s3(['restore', second.id, out2, '--repo', repo]);
    expect(r.status, r.stderr).toBe(0);
    expect(cmp(out2, imaged)).toBe(true);
    expect(s3(['verify', '--repo', repo]).status).toBe(0);
  });

  it('API: s3:// strings and the options form, local source to S3 and back', async () => {
    const url = `s3://${bucket}/api`;
    await initRepository(repoOptions(url), { chunkSize: 64 * 1024 });
    const src = work.path('raw.img');
    const data = Buffer.concat([pseudoRandom(3 * MiB, 5), Buffer.alloc(MiB), pseudoRandom(MiB + 4096, 6)]);
    writeFileSync(src, data);
    const b = await backup({ source: src, repository: repoOptions(url) });
    expect(b.manifest.stats.chunksZero).toBe(16);
    // The plain string with the usual AWS variables and endpoint.
    const env = s3Env({ AWS_ENDPOINT_URL_S3: rgw().endpoint });
    const saved = { ...process.env };
    Object.assign(process.env, env);
    try {
      const repo = await openRepository(url);
      expect(repo.isRemote).toBe(true);
      const out = work.path('raw.out');
      await restore({ repository: url, backup: b.id, target: out });
      expect(cmp(src, out)).toBe(true);
      const report = await verifyRepository({ repository: repo });
      expect(report.ok).toBe(true);
      expect(report.chunksChecked).toBe(b.manifest.stats.chunksNew);
      repo.close();
    } finally {
      process.env = saved;
    }
  });

  it('jobs close the repositories they open: no staging directory is left, on success or error', async () => {
    const url = `s3://${bucket}/close`;
    const repository = repoOptions(url);
    await initRepository(repository, { chunkSize: 64 * 1024 });
    const src = work.path('close.img');
    writeFileSync(src, pseudoRandom(2 * MiB, 41));
    const stages = (dir: string, pid?: number): string[] =>
      readdirSync(dir).filter((n) => n.startsWith(pid === undefined ? 'lowtide-stage.' : `lowtide-stage.${pid}.`));
    const mine = (): string[] => stages(tmpdir(), process.pid);
    expect(mine()).toEqual([]);
    const first = await backup({ source: src, repository });
    await backup({ source: src, repository });
    expect(mine()).toEqual([]);
    expect((await verifyRepository({ repository })).ok).toBe(true);
    expect(mine()).toEqual([]);
    await restore({ repository, backup: first.id, target: work.path('close.out') });
    expect(cmp(src, work.path('close.out'))).toBe(true);
    expect(mine()).toEqual([]);
    // Errors after the repository was opened (and the index was downloaded).
    await expect(
      restore({ repository, backup: first.id, target: work.path('no-such-dir/close.out') }),
    ).rejects.toThrow();
    expect(mine()).toEqual([]);
    await expect(listBackupFiles({ repository, backup: first.id })).rejects.toThrow(
      expect.objectContaining({ code: 'UNSUPPORTED' }),
    );
    expect(mine()).toEqual([]);
    const pruned = await pruneRepository({ repository, keepLast: 1 });
    expect(pruned.removed).toEqual([first.id]);
    expect(mine()).toEqual([]);
    // A Repository passed in stays open (the caller closes it).
    const open = await openRepository(repository);
    expect((await verifyRepository({ repository: open })).ok).toBe(true);
    expect((await open.listBackups()).backups).toHaveLength(1);
    open.close();
    expect(mine()).toEqual([]);

    // The CLI, with its own temporary directory.
    const tmp = work.path('cli-tmp');
    mkdirSync(tmp);
    const env = s3Env({ TMPDIR: tmp });
    for (const args of [
      ['list', '--repo', url],
      ['verify', '--repo', url],
      ['restore', 'latest', work.path('close-cli.out'), '--repo', url],
      ['prune', '--repo', url, '--keep-last', '1'],
    ]) {
      const r = lowtideS3([...args, ...endpointArgs], env);
      expect(r.status, `${args[0]}: ${r.stderr}`).toBe(0);
      expect(stages(tmp), args[0]).toEqual([]);
    }
    expect(cmp(src, work.path('close-cli.out'))).toBe(true);
  });

  it('a bucket that does not exist, wrong credentials: clear errors', async () => {
    let r = lowtideS3(['init', '--repo', `s3://no-such-bucket-${Date.now()}/x`, ...endpointArgs]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/\[REPO_NOT_FOUND\].*bucket no-such-bucket-\d+ does not exist/);
    r = lowtideS3(['list', '--repo', `s3://no-such-bucket-${Date.now()}/x`, ...endpointArgs]);
    expect(r.stderr).toMatch(/\[REPO_NOT_FOUND\]/);
    r = lowtideS3(['list', '--repo', `s3://${bucket}/nothing-here`, ...endpointArgs]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/\[REPO_NOT_FOUND\].*no lowtide repository at s3:\/\//);
    r = lowtideS3(
      ['list', '--repo', `s3://${bucket}/api`, ...endpointArgs],
      s3Env({ AWS_SECRET_ACCESS_KEY: 'wrong-secret-key-0000000000000000000000' }),
    );
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/\[PERMISSION_DENIED\].*credentials/);
    r = lowtideS3(
      ['list', '--repo', `s3://${bucket}/api`, ...endpointArgs],
      s3Env({ AWS_ACCESS_KEY_ID: 'NOSUCHKEY00000000000' }),
    );
    expect(r.stderr).toMatch(/\[PERMISSION_DENIED\]/);
    r = lowtideS3(['list', '--repo', 's3://Bad_Bucket/x', ...endpointArgs]);
    expect(r.stderr).toMatch(/repository: expected s3:\/\/bucket\/prefix/);
  });

  it('an object altered in the bucket: verify names it, restore refuses it', async () => {
    const url = `s3://${bucket}/tamper`;
    // One object per chunk (format version 1; packs.test.ts has the packed case).
    await initRepository(repoOptions(url), { chunkSize: 64 * 1024, packSize: 0 });
    const src = work.path('tamper.img');
    writeFileSync(src, pseudoRandom(MiB, 77));
    const b = await backup({ source: src, repository: repoOptions(url) });
    const chunk = (await keys('tamper/chunks/')).sort()[3]!;
    const hex = chunk.split('/').pop()!;
    const original = Buffer.from(
      await (await client.send(new GetObjectCommand({ Bucket: bucket, Key: chunk }))).Body!.transformToByteArray(),
    );
    const altered = Buffer.from(original);
    altered[altered.length - 1]! ^= 0x01;
    await client.send(new PutObjectCommand({ Bucket: bucket, Key: chunk, Body: altered }));
    const r = lowtideS3(['verify', '--repo', url, ...endpointArgs]);
    expect(r.status).toBe(3);
    expect(r.stdout + r.stderr).toContain(hex);
    const report = await verifyRepository({ repository: repoOptions(url) });
    expect(report.problems.map((p) => [p.digest, p.problem, p.backups])).toEqual([[hex, 'corrupt', [b.id]]]);
    await expect(restore({ repository: repoOptions(url), backup: b.id, target: work.path('t.out') })).rejects.toThrow(
      expect.objectContaining({ code: 'CHUNK_CORRUPT' }),
    );
  });
});
