/**
 * The S3 tests' view of the Ceph RADOS Gateway that the s3 project's
 * globalSetup (test/services/ceph-rgw/) started: buckets, CLI runs with the
 * gateway's credentials, radosgw stopped and started again by its PID.
 */
import { spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CreateBucketCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import { expect, inject } from 'vitest';
import { CLI, cmp, lowtideAsync, type CliResult } from './cli.js';
import type { TempDir } from './tmp.js';
import type { Writers } from './writers.js';
import type { S3RepositoryOptions } from '../../lib/index.js';

export function rgw(): ReturnType<typeof inject<'rgw'>> {
  return inject('rgw');
}

export function s3Client(): S3Client {
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  const r = rgw();
  return new S3Client({
    endpoint: r.endpoint,
    region: r.region,
    forcePathStyle: true,
    credentials: { accessKeyId: r.accessKeyId, secretAccessKey: r.secretAccessKey },
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
}

/** A new, empty bucket with a unique name. */
export async function newBucket(client: S3Client): Promise<string> {
  const name = `lowtide-test-${randomBytes(5).toString('hex')}`;
  await client.send(new CreateBucketCommand({ Bucket: name }));
  return name;
}

/** The API's options form of a repository in `bucket`. */
export function repoOptions(url: string, extra: Partial<S3RepositoryOptions> = {}): S3RepositoryOptions {
  const r = rgw();
  return {
    url,
    endpoint: r.endpoint,
    region: r.region,
    accessKeyId: r.accessKeyId,
    secretAccessKey: r.secretAccessKey,
    ...extra,
  };
}

/** The environment a CLI run gets: the usual AWS variables (the endpoint is passed with --s3-endpoint). */
export function s3Env(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const r = rgw();
  return {
    ...process.env,
    AWS_ACCESS_KEY_ID: r.accessKeyId,
    AWS_SECRET_ACCESS_KEY: r.secretAccessKey,
    AWS_REGION: r.region,
    ...extra,
  };
}

export function lowtideS3(args: string[], env: NodeJS.ProcessEnv = s3Env()): CliResult {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 180_000, env });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** A CLI run in the background; `done` resolves when it ends. */
export function lowtideS3Async(
  args: string[],
  env: NodeJS.ProcessEnv = s3Env(),
): { child: ChildProcess; done: Promise<CliResult> } {
  return lowtideAsync(args, env);
}

const RGW_NAME = 'client.rgw.s3';

/** Stops radosgw (SIGTERM to the PID in its pid file) and waits for it to end. */
export async function stopRadosgw(): Promise<void> {
  const pidFile = join(rgw().dir, 'run', `${RGW_NAME}.pid`);
  const pid = Number(readFileSync(pidFile, 'utf8').trim());
  if (readFileSync(`/proc/${pid}/comm`, 'utf8').trim() !== 'radosgw') throw new Error(`pid ${pid} is not radosgw`);
  process.kill(pid, 'SIGTERM');
  for (let i = 0; i < 300; i++) {
    try {
      process.kill(pid, 0);
    } catch {
      return;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  process.kill(pid, 'SIGKILL');
}

/** Starts radosgw again with the cluster's configuration and waits until it answers. */
export async function startRadosgw(): Promise<void> {
  const dir = rgw().dir;
  const r = spawnSync('radosgw', ['-c', join(dir, 'ceph.conf'), '-n', RGW_NAME], { stdio: 'ignore' });
  if (r.status !== 0) throw new Error(`radosgw did not start (${r.status})`);
  for (let i = 0; i < 600; i++) {
    const ok = await fetch(rgw().endpoint)
      .then((res) => res.headers.has('x-amz-request-id'))
      .catch(() => false);
    if (ok) return;
    await new Promise((res) => setTimeout(res, 100));
  }
  throw new Error('radosgw does not answer after a restart');
}

export { sharedImage } from './writers.js';

/** The keys under `prefix` in `bucket`, every page. */
export async function listKeys(client: S3Client, bucket: string, prefix: string): Promise<string[]> {
  const out: string[] = [];
  let token: string | undefined;
  do {
    const r = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }));
    for (const o of r.Contents ?? []) out.push(o.Key!);
    token = r.IsTruncated ? r.NextContinuationToken : undefined;
  } while (token !== undefined);
  return out;
}

/**
 * The many-writers harness (helpers/writers.ts) for repositories `s3://bucket/NAME`
 * of the gateway; a lease is any object under `NAME/locks/`.
 */
export function s3Writers(work: TempDir, client: () => S3Client, bucket: () => string): Writers {
  const ep = (): string[] => ['--s3-endpoint', rgw().endpoint];
  const prefix = (repo: string): string => repo.slice(`s3://${bucket()}/`.length);
  const leases = (repo: string): Promise<string[]> => listKeys(client(), bucket(), `${prefix(repo)}/locks/`);
  return {
    work,
    run: (args) => lowtideS3([...args, ...ep()]),
    start: (args) => lowtideS3Async([...args, ...ep()]),
    async waitForLeases(repo, n) {
      for (let i = 0; i < 600; i++) {
        if ((await leases(repo)).filter((k) => k.includes('/locks/backup-')).length >= n) return;
        await new Promise((r) => setTimeout(r, 50));
      }
      throw new Error(`${n} backup leases never existed at once in ${repo}`);
    },
    async manifests(repo) {
      const dir = `${prefix(repo)}/backups/`;
      return (await listKeys(client(), bucket(), dir))
        .filter((k) => k.endsWith('.json'))
        .map((k) => k.slice(dir.length, -'.json'.length))
        .sort();
    },
    leases,
    restoresExactly: (repo, id, source) => restoresExactly(work, repo, id, source),
    verifyOk,
  };
}

/** `lowtide restore` of backup `id` of an S3 repository (through the CLI) gives exactly `source`. */
export function restoresExactly(work: TempDir, repo: string, id: string, source: string): void {
  const out = work.file(`restore-${randomBytes(4).toString('hex')}.img`);
  const r = lowtideS3(['restore', id, out, '--repo', repo, '--s3-endpoint', rgw().endpoint]);
  expect(r.status, r.stderr).toBe(0);
  expect(cmp(out, source)).toBe(true);
}

/** `lowtide verify` of an S3 repository finds nothing wrong. */
export function verifyOk(repo: string): void {
  const r = lowtideS3(['verify', '--repo', repo, '--s3-endpoint', rgw().endpoint]);
  expect(r.status, r.stdout + r.stderr).toBe(0);
}
