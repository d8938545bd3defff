/**
 * A backup into a gateway on this host: the gateway's OSD writes what the
 * job uploads to a disk here. Where that disk is the source's, the canary
 * must take those writes for the job's own (uploads counted, the boosts
 * not ended by them); where it is another, it must stop counting them once
 * it sees the source's storage did not write them.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, openSync, writeSync } from 'node:fs';
import { basename, dirname } from 'node:path';
import type { S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backup, initRepository } from '../../lib/index.js';
import { storageDevices } from '../../lib/throttle/index.js';
import { VERIFY_BYTES } from '../../lib/throttle/uploads.js';
import { newBucket, repoOptions, rgw, s3Client } from '../helpers/s3.js';
import { LoopFs, shmLoopUnavailableReason } from '../helpers/loop-fs.js';
import { skipReason } from '../helpers/system.js';
import { TempDir } from '../helpers/tmp.js';

const MiB = 1024 * 1024;
/** Incompressible source bytes: more than two verification spans of uploads. */
const SOURCE_BYTES = 3 * VERIFY_BYTES;

/** Incompressible bytes, written 16 MiB at a time. */
function randomFile(path: string): void {
  const fd = openSync(path, 'w');
  try {
    for (let i = 0; i < SOURCE_BYTES; i += 16 * MiB) writeSync(fd, randomBytes(16 * MiB));
  } finally {
    closeSync(fd);
  }
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
      if (skipReason('uploads on another disk', shmLoopUnavailableReason('ext4'))) return;
      // ext4 on a loop device over tmpfs: a storage only this test writes to.
      const fs = new LoopFs('ext4', SOURCE_BYTES / MiB + 64, false, '/dev/shm');
      try {
        const src = fs.file('source.bin');
        randomFile(src);
        execFileSync('sync', ['-f', src]);
        const url = `s3://${bucket}/other-disk`;
        await initRepository(repoOptions(url), { chunkSize: MiB });
        const b = await backup({ source: src, repository: repoOptions(url) });
        const t = b.manifest.throttle;
        expect(t.storageDevices).toEqual([basename(fs.loop!)]);
        expect(t.uploadsOnThisHost?.stopped).toMatch(/land elsewhere/);
        // Stopped at the first check, after one span of acknowledged uploads (and what was in flight then).
        expect(t.uploadsOnThisHost!.countedBytes).toBeLessThan(b.manifest.stats.bytesStored);
      } finally {
        fs.remove();
      }
    });
  },
);
