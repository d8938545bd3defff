/**
 * A backup into a gateway on this host: the gateway's OSD writes what the
 * job uploads to a disk here. Where that disk is the source's, the canary
 * must take those writes for the job's own (uploads counted, the boosts
 * not ended by them); where it is another, it must stop counting them once
 * it sees the source's storage did not write them.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import type { S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backup, initRepository } from '../../lib/index.js';
import { storageDevices } from '../../lib/throttle/index.js';
import { VERIFY_BYTES } from '../../lib/throttle/uploads.js';
import { newBucket, repoOptions, rgw, s3Client } from '../helpers/s3.js';
import { hasCommand, loopUnavailableReason, skipReason } from '../helpers/system.js';
import { TempDir, patternBytes } from '../helpers/tmp.js';

const MiB = 1024 * 1024;
/** Incompressible source bytes: more than two verification spans of uploads. */
const SOURCE_BYTES = 3 * VERIFY_BYTES;

function randomFile(path: string): void {
  const parts: Buffer[] = [];
  for (let i = 0; i < SOURCE_BYTES / (16 * MiB); i++) parts.push(patternBytes(16 * MiB, 1000 + i));
  writeFileSync(path, Buffer.concat(parts));
}

const devices = (p: string): string[] =>
  storageDevices(p)
    .map((d) => basename(d))
    .sort();

describe.skipIf(skipReason('uploads to a gateway on this host', rgw().skip))(
  'uploads to a gateway on this host',
  () => {
    let client: S3Client;
    let bucket: string;
    beforeAll(async () => {
      client = s3Client();
      bucket = await newBucket(client);
    });
    afterAll(() => client?.destroy());

    it('on the source’s disk: counted as the job’s own writes, and they end no boost', async () => {
      // Beside the gateway's cluster directory: the same file system.
      const work = new TempDir('lowtide-up-', dirname(dirname(rgw().dir)));
      try {
        const src = work.file('source.bin');
        randomFile(src);
        // Written back now: its writeback during the backup would be someone else's writes.
        execFileSync('sync', ['-f', src]);
        const reason =
          devices(src).length === 0
            ? `${src} has no block device under it`
            : devices(src).join() !== devices(rgw().dir).join()
              ? `the source (${devices(src).join()}) and the gateway (${devices(rgw().dir).join()}) are on different disks`
              : undefined;
        if (skipReason('uploads on the source’s disk', reason)) return;
        const url = `s3://${bucket}/same-disk`;
        await initRepository(repoOptions(url), { chunkSize: MiB });
        const b = await backup({ source: src, repository: repoOptions(url) });
        const t = b.manifest.throttle;
        expect(t.storageDevices).toEqual(devices(src));
        expect(t.uploadsOnThisHost?.stopped).toBeUndefined();
        expect(t.uploadsOnThisHost!.countedBytes).toBeGreaterThanOrEqual(b.manifest.stats.bytesStored);
        // The gateway writes ~1 % more than it is given: next to none of its
        // writes look like someone else's (a journal write of the system's may).
        expect(t.probes!.boost.foreignWriteBytes).toBeLessThan(0.05 * b.manifest.stats.bytesStored);
        expect(t.probes!.boost.endedByWrites).toBeLessThanOrEqual(2);
      } finally {
        work.remove();
      }
    });

    it('on another disk: counting stops once the source’s storage has not written them', async () => {
      const shm =
        spawnSync('findmnt', ['-n', '-o', 'FSTYPE', '--target', '/dev/shm'], { encoding: 'utf8' })
          .stdout?.split('\n')[0]
          ?.trim() === 'tmpfs';
      const reason =
        loopUnavailableReason() ??
        (hasCommand('mkfs.ext4') ? undefined : 'mkfs.ext4 is missing (e2fsprogs)') ??
        (shm ? undefined : '/dev/shm is not tmpfs here');
      if (skipReason('uploads on another disk', reason)) return;
      // ext4 on a loop device over tmpfs: a storage only this test writes to.
      const base = `/dev/shm/lowtide-up-${process.pid}`;
      const img = `${base}.img`;
      const mnt = `${base}.mnt`;
      let loop: string | undefined;
      let mounted = false;
      try {
        execFileSync('truncate', ['-s', `${SOURCE_BYTES / MiB + 64}M`, img]);
        execFileSync('mkfs.ext4', ['-q', '-F', '-E', 'lazy_itable_init=0,lazy_journal_init=0', img]);
        loop = execFileSync('losetup', ['--find', '--show', img], { encoding: 'utf8' }).trim();
        mkdirSync(mnt, { recursive: true });
        execFileSync('mount', [loop, mnt]);
        mounted = true;
        const src = join(mnt, 'source.bin');
        randomFile(src);
        execFileSync('sync', ['-f', src]);
        const url = `s3://${bucket}/other-disk`;
        await initRepository(repoOptions(url), { chunkSize: MiB });
        const b = await backup({ source: src, repository: repoOptions(url) });
        const t = b.manifest.throttle;
        expect(t.storageDevices).toEqual([basename(loop)]);
        expect(t.uploadsOnThisHost?.stopped).toMatch(/land elsewhere/);
        // Stopped at the first check, after one span of acknowledged uploads (and what was in flight then).
        expect(t.uploadsOnThisHost!.countedBytes).toBeLessThan(b.manifest.stats.bytesStored);
      } finally {
        if (mounted) spawnSync('umount', [mnt], { stdio: 'ignore' });
        if (loop) spawnSync('losetup', ['--detach', loop], { stdio: 'ignore' });
        rmSync(mnt, { recursive: true, force: true });
        rmSync(img, { force: true });
      }
    });
  },
);
