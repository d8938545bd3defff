/**
 * The restore job: writes a backup's image to a file (sparse: zero chunks
 * become holes; written to a temporary file and renamed when complete) or to
 * a block device (zeros written too). Every chunk's digest is checked before
 * it is written.
 */
import { constants as fsc } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { lstat, open, rename, unlink, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import { LowtideError, toLowtideError } from '../errors.js';
import { booleanOption, functionOption, integerOption, objectOption, signalOption, stringOption } from '../options.js';
import type { Manifest } from '../repo/format.js';
import { openRepository, Repository } from '../repo/repository.js';
import { openSource } from '../io/source.js';
import { native } from '../native.js';
import { EarlyWriteback } from './writeback.js';
import { JobThrottle, type JobThrottleReport, type ThrottleState } from '../throttle/job-throttle.js';
import { singleJobThrottleSettings, type ThrottleSettings } from '../throttle/job-settings.js';

export interface RestoreOptions extends ThrottleSettings {
  repository: string | Repository;
  /** Backup id or 'latest'. */
  backup: string;
  /** Image file to create, or a block device to overwrite. */
  target: string;
  /** Replace an existing target file (default false). Block devices are always overwritten. */
  force?: boolean;
  /** Most chunk writes in flight (default 8); the throttle may use fewer. */
  queueDepth?: number;
  signal?: AbortSignal;
  onProgress?: (p: RestoreProgress) => void;
  progressIntervalMs?: number;
}

export interface RestoreProgress {
  bytesDone: number;
  bytesTotal: number;
  elapsedSeconds: number;
  bytesPerSecond: number;
  throttle: ThrottleState;
}

export interface RestoreResult {
  backup: string;
  target: string;
  targetKind: 'file' | 'block';
  size: number;
  bytesWritten: number;
  /** Bytes of zero chunks left as holes (files only). */
  bytesSkipped: number;
  chunksVerified: number;
  seconds: number;
  mbPerSecond: number;
  /** Block device targets: written with O_DIRECT (aligned writes, no page cache). */
  direct: boolean;
  /** Write latency as the throttle saw it. */
  throttle: JobThrottleReport;
}

async function blockDeviceGeometry(path: string): Promise<{ size: number; sectorSize: number }> {
  const src = await openSource(path, { direct: 'off' });
  try {
    return { size: src.size, sectorSize: src.sectorSize };
  } finally {
    await src.close();
  }
}

export async function restore(options: RestoreOptions): Promise<RestoreResult> {
  const opts = objectOption('options', options);
  if (!(opts.repository instanceof Repository)) stringOption('repository', opts.repository);
  const backupId = stringOption('backup', opts.backup);
  const target = resolve(stringOption('target', opts.target));
  const force = booleanOption('force', opts.force, false);
  const signal = signalOption('signal', opts.signal);
  const onProgress = functionOption<(p: RestoreProgress) => void>('onProgress', opts.onProgress);
  const progressIntervalMs = integerOption('progressIntervalMs', opts.progressIntervalMs, 200, 0);
  const maxWrites = integerOption('queueDepth', opts.queueDepth, 8, 1, 256);
  const throttleSettings = singleJobThrottleSettings(opts);

  const repo = opts.repository instanceof Repository ? opts.repository : await openRepository(opts.repository as string);
  const manifest: Manifest = await repo.readManifest(backupId);

  // Check the chunk index as a whole before touching the target.
  const check = await repo.openIndex(manifest);
  try {
    await check.verify();
  } finally {
    await check.close();
  }

  let targetKind: 'file' | 'block' = 'file';
  let existing;
  try {
    existing = await lstat(target);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw toLowtideError(err, 'WRITE_FAILED', `checking ${target}`);
  }
  if (existing?.isBlockDevice()) targetKind = 'block';
  else if (existing?.isDirectory()) throw new LowtideError('INVALID_ARGUMENT', `target ${target} is a directory`);
  else if (existing && !existing.isFile()) throw new LowtideError('UNSUPPORTED', `target ${target} is neither a file nor a block device`);
  else if (existing && !force) {
    throw new LowtideError('OUTPUT_EXISTS', `target ${target} exists; pass force (--force) to replace it`, { path: target });
  }

  const writePath =
    targetKind === 'block' ? target : join(dirname(target), `.${basename(target)}.${randomBytes(6).toString('hex')}.lowtide-partial`);
  let fh: FileHandle | undefined;
  let done = false;
  const t0 = process.hrtime.bigint();
  const elapsed = (): number => Number(process.hrtime.bigint() - t0) / 1e9;
  const cs = manifest.chunkSize;
  const zeroChunk = targetKind === 'block' ? native.alignedBuffer(cs) : undefined;
  // Block devices: aligned O_DIRECT writes from a pool of aligned buffers; a
  // tail shorter than a sector (an image whose size is not a multiple of it)
  // goes through a second, buffered descriptor.
  let direct = false;
  let sectorSize = 512;
  let tailFh: FileHandle | undefined;
  const alignedPool: Buffer[] = [];
  let bytesWritten = 0;
  let bytesSkipped = 0;
  let bytesDone = 0;
  let chunksVerified = 0;
  let lastReport = -Infinity;
  const report = (forceReport = false): void => {
    if (!onProgress) return;
    const t = elapsed();
    if (!forceReport && (t - lastReport) * 1000 < progressIntervalMs) return;
    lastReport = t;
    onProgress({
      bytesDone,
      bytesTotal: manifest.size,
      elapsedSeconds: t,
      bytesPerSecond: t > 0 ? bytesDone / t : 0,
      throttle: jobThrottle.state(),
    });
  };
  // Writes are the production side here: with a block device target, its idle
  // latency is probed by reading it; an image file gets the default target.
  // With `canary`, that source is also probed while the restore runs.
  const probe = targetKind === 'block' ? await openSource(target, { direct: 'auto' }) : undefined;
  let throttle: JobThrottle | undefined;
  let index;
  try {
    throttle = await JobThrottle.create(throttleSettings, { maxQueueDepth: maxWrites, maxBlockSize: cs, minBlockSize: cs, alignment: 512 }, probe, signal);
    index = await repo.openIndex(manifest);
  } catch (err) {
    await probe?.close();
    throw err;
  }
  const jobThrottle = throttle;
  try {
    jobThrottle.startProbes();
    try {
      if (targetKind === 'block') {
        const geo = await blockDeviceGeometry(writePath);
        const size = geo.size;
        sectorSize = geo.sectorSize;
        try {
          fh = await open(writePath, fsc.O_WRONLY | fsc.O_DIRECT);
          direct = true;
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'EINVAL') throw err;
          fh = await open(writePath, fsc.O_WRONLY);
        }
        if (size < manifest.size) {
          throw new LowtideError(
            'TARGET_TOO_SMALL',
            `target ${target} has ${size} bytes; backup ${manifest.id} needs ${manifest.size}`,
          );
        }
      } else {
        fh = await open(writePath, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, 0o644);
        await fh.truncate(manifest.size);
      }
    } catch (err) {
      throw toLowtideError(err, (err as NodeJS.ErrnoException).code === 'ENOSPC' ? 'NO_SPACE' : 'WRITE_FAILED', `opening ${target}`);
    }
    const out = fh;
    const ownWrite = jobThrottle.ownWrites(writePath);
    // Through the page cache (files; block devices without O_DIRECT): start
    // writeback as the image grows, as `image` does (lib/jobs/writeback.ts).
    const writeback = direct ? undefined : new EarlyWriteback(out.fd);
    /** Writes `length` bytes of `data` at `offset` of the target, aligned when direct. */
    const writeAt = async (data: Buffer, length: number, offset: number): Promise<void> => {
      ownWrite(length);
      if (writeback) {
        const { bytesWritten: n } = await out.write(data, 0, length, offset);
        if (n !== length) throw new Error(`short write at ${offset}`);
        writeback.wrote(n);
        return;
      }
      const aligned = length - (length % sectorSize);
      if (aligned > 0) {
        let buf = data;
        let pooled = false;
        if (data !== zeroChunk) {
          buf = alignedPool.pop() ?? native.alignedBuffer(cs);
          pooled = true;
          data.copy(buf, 0, 0, aligned);
        }
        try {
          const { bytesWritten: n } = await out.write(buf, 0, aligned, offset);
          if (n !== aligned) throw new Error(`short write at ${offset}`);
        } finally {
          if (pooled) alignedPool.push(buf);
        }
      }
      if (aligned < length) {
        tailFh ??= await open(writePath, fsc.O_WRONLY);
        const { bytesWritten: n } = await tailFh.write(data, aligned, length - aligned, offset + aligned);
        if (n !== length - aligned) throw new Error(`short write at ${offset + aligned}`);
      }
    };
    const inFlight = new Set<Promise<void>>();
    let failure: unknown;
    const writeChunk = async (i: number, entry: Buffer): Promise<void> => {
      const length = Math.min(cs, manifest.size - i * cs);
      const hex = entry.toString('hex');
      let lease: { data: Buffer; release(): void };
      try {
        lease = await repo.leaseChunk(hex, length);
      } catch (err) {
        const e = toLowtideError(err, 'CHUNK_CORRUPT');
        throw new LowtideError(e.code, `backup ${manifest.id} at offset ${i * cs}: ${e.message}`, { offset: i * cs, cause: e });
      }
      chunksVerified++;
      try {
        const w0 = process.hrtime.bigint();
        await writeAt(lease.data, length, i * cs);
        jobThrottle.observe(Number(process.hrtime.bigint() - w0), length);
      } catch (err) {
        throw toLowtideError(err, (err as NodeJS.ErrnoException).code === 'ENOSPC' ? 'NO_SPACE' : 'WRITE_FAILED', `writing ${target}`);
      } finally {
        lease.release();
      }
      bytesWritten += length;
      bytesDone += length;
      report();
    };
    let lastIssue = 0;
    for (let i = 0; i < manifest.chunkCount && failure === undefined; i++) {
      if (signal?.aborted) throw new LowtideError('ABORTED', 'the restore was aborted', { cause: signal.reason });
      const entry = await index.entry(i);
      const length = Math.min(cs, manifest.size - i * cs);
      if (entry === null) {
        if (zeroChunk) {
          await writeAt(zeroChunk, length, i * cs).catch((err: unknown) => {
            throw toLowtideError(err, (err as NodeJS.ErrnoException).code === 'ENOSPC' ? 'NO_SPACE' : 'WRITE_FAILED', `writing ${target}`);
          });
          bytesWritten += length;
        } else {
          bytesSkipped += length;
        }
        bytesDone += length;
        continue;
      }
      // Throttle: at most queueDepth writes in flight, spaced by the pacing delay.
      while (inFlight.size >= jobThrottle.decision.queueDepth) await Promise.race(inFlight);
      // Re-read the pacing while waiting: a controller may shorten it (the end of a canary pause).
      let wait: number;
      while ((wait = lastIssue + jobThrottle.pacingMs() - performance.now()) > 0) await sleep(Math.min(wait, 20));
      lastIssue = performance.now();
      const p: Promise<void> = writeChunk(i, Buffer.from(entry))
        .catch((err: unknown) => {
          failure ??= err;
        })
        .finally(() => inFlight.delete(p));
      inFlight.add(p);
    }
    await Promise.all(inFlight);
    if (failure !== undefined) throw failure;
    try {
      if (tailFh) {
        await tailFh.sync();
        await tailFh.close();
        tailFh = undefined;
      }
      await out.sync();
      await out.close();
      fh = undefined;
      if (targetKind === 'file') {
        await rename(writePath, target);
        const d = await open(dirname(target), fsc.O_RDONLY | fsc.O_DIRECTORY);
        await d.sync().finally(() => d.close());
      }
      done = true;
    } catch (err) {
      throw toLowtideError(err, 'WRITE_FAILED', `finishing ${target}`);
    }
    report(true);
    const seconds = elapsed();
    return {
      backup: manifest.id,
      target,
      targetKind,
      size: manifest.size,
      bytesWritten,
      bytesSkipped,
      chunksVerified,
      direct,
      seconds,
      mbPerSecond: seconds > 0 ? manifest.size / seconds / 1e6 : 0,
      throttle: jobThrottle.report(),
    };
  } finally {
    await jobThrottle.stop();
    await probe?.close();
    await index.close().catch(() => undefined);
    if (fh) await fh.close().catch(() => undefined);
    if (tailFh) await tailFh.close().catch(() => undefined);
    if (!done && targetKind === 'file') await unlink(writePath).catch(() => undefined);
  }
}
