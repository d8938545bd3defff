/**
 * vitest globalSetup of the s3 project: starts one Ceph cluster with the RADOS
 * Gateway (start.sh) for the whole run and stops it (stop.sh, by the PIDs in
 * its pid files) at the end. Tests read where it is with inject('rgw'); when
 * Ceph is not installed or does not start, `skip` says why and the S3 tests
 * skip with that reason.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import type { TestProject } from 'vitest/node';

export interface RgwInfo {
  /** Why there is no gateway (the S3 tests skip), or undefined when it runs. */
  skip?: string | undefined;
  endpoint: string;
  accessKeyId: string;
  secretAccessKey: string;
  region: string;
  /** The cluster's directory (ceph.conf, run/*.pid): for tests that stop and restart radosgw. */
  dir: string;
}

declare module 'vitest' {
  export interface ProvidedContext {
    rgw: RgwInfo;
  }
}

const HERE = import.meta.dirname;
const NEEDED = ['ceph-mon', 'ceph-osd', 'radosgw', 'ceph-authtool', 'monmaptool', 'radosgw-admin', 'curl', 'uuidgen'];

function missingTools(): string[] {
  return NEEDED.filter((c) => spawnSync('sh', ['-c', 'command -v "$1"', 'sh', c], { stdio: 'ignore' }).status !== 0);
}

/** A port that is free now (the kernel's choice). */
async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

export default async function setup(project: TestProject): Promise<() => void> {
  const none: RgwInfo = { endpoint: '', accessKeyId: '', secretAccessKey: '', region: '', dir: '' };
  const missing = missingTools();
  if (missing.length > 0) {
    project.provide('rgw', {
      ...none,
      skip: `Ceph RGW is not installed (missing ${missing.join(', ')}; Debian: ceph-mon ceph-osd radosgw ceph-common curl uuid-runtime)`,
    });
    return () => undefined;
  }
  // The cluster's files live on disk (/var/tmp), not in a tmpfs /tmp.
  const dir = join(mkdtempSync('/var/tmp/lowtide-rgw-'), 'cluster');
  const rgwPort = await freePort();
  // The mon needs two consecutive ports (msgr2 and v1).
  let monPort = await freePort();
  if (monPort > 65000) monPort = 40000 + (monPort % 20000);
  const env = { ...process.env, RGW_DIR: dir, RGW_PORT: String(rgwPort), MON_PORT: String(monPort), OSD_SIZE_GB: '4' };
  const started = spawnSync('bash', [join(HERE, 'start.sh')], { env, encoding: 'utf8', timeout: 180_000 });
  const stop = (): void => {
    spawnSync('bash', [join(HERE, 'stop.sh')], { env, stdio: 'ignore', timeout: 120_000 });
    rmSync(join(dir, '..'), { recursive: true, force: true });
  };
  if (started.status !== 0) {
    stop();
    project.provide('rgw', {
      ...none,
      skip: `Ceph RGW did not start: ${(started.stderr || started.stdout).trim().split('\n').slice(-3).join(' | ')}`,
    });
    return () => undefined;
  }
  const vars = Object.fromEntries(
    [...readFileSync(join(dir, 'env'), 'utf8').matchAll(/^export (\w+)=(.*)$/gm)].map((m) => [m[1]!, m[2]!]),
  );
  project.provide('rgw', {
    endpoint: vars.S3_ENDPOINT!,
    accessKeyId: vars.S3_ACCESS_KEY!,
    secretAccessKey: vars.S3_SECRET_KEY!,
    region: vars.S3_REGION ?? 'us-east-1',
    dir,
  });
  return stop;
}
