/**
 * The restore job: writes a backup's image to a file (sparse: zero chunks
 * become holes; written to a temporary file and renamed when complete;
 * from object storage with O_DIRECT where the file system allows it) or to
 * a block device (zeros written too). Every chunk's digest is checked before
 * it is written.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { dirname, resolve } from 'node:path';
import { LowtideError, toLowtideError } from '../errors.js';
import { booleanOption, choiceOption, integerOption, objectOption, stringOption } from '../options.js';
import { passwordOption } from '../repo/crypto.js';
import type { Manifest } from '../repo/format.js';
import {
  checkRepositoryOption,
  Repository,
  withRepository,
  type IndexReader,
  type PackLocation,
  type RepositoryLocation,
} from '../repo/repository.js';
import { openSource } from '../io/source.js';
import { resolveJobControl, type JobControl } from './options.js';
import { writeError } from './output.js';
import { ProgressReporter, Stopwatch } from './progress.js';
import { RestoreTarget, targetKind } from './restore/target.js';
import { JobThrottle, type JobThrottleReport, type ThrottleState } from '../throttle/job-throttle.js';
import {
  singleJobThrottleSettings,
  type ResolvedThrottleSettings,
  type ThrottleSettings,
} from '../throttle/job-settings.js';

export interface RestoreOptions extends ThrottleSettings {
  repository: RepositoryLocation | Repository;
  /** The passphrase of an encrypted repository (default: LOWTIDE_PASSWORD from the environment). */
  password?: string | undefined;
  /** Backup id or 'latest'. */
  backup: string;
  /** Image file to create, or a block device to overwrite. */
  target: string;
  /** Replace an existing target file (default false). Block devices are always overwritten. */
  force?: boolean | undefined;
  /**
   * 'raw' (default): the image's bytes. 'qcow2' (an image file only): a
   * qcow2 image (version 3, 64 KiB clusters, no backing file) whose guest
   * disk is the image; clusters of zeros are left unallocated.
   */
  format?: 'raw' | 'qcow2' | undefined;
  /** Most chunk writes in flight (default 8); the throttle may use fewer. */
  queueDepth?: number | undefined;
  signal?: AbortSignal | undefined;
  onProgress?: ((p: RestoreProgress) => void) | undefined;
  progressIntervalMs?: number | undefined;
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
  /** 'raw', or 'qcow2': the target is a qcow2 image of the backup. */
  format: 'raw' | 'qcow2';
  size: number;
  bytesWritten: number;
  /** Bytes of zero chunks left as holes (files only). */
  bytesSkipped: number;
  chunksVerified: number;
  seconds: number;
  mbPerSecond: number;
  /**
   * Written with O_DIRECT (aligned writes, no page cache): block devices, and
   * raw image files restored from object storage whose file system allows it.
   */
  direct: boolean;
  /** Write latency as the throttle saw it. */
  throttle: JobThrottleReport;
  /** Partial files a killed restore to the same target had left, removed before writing. */
  removedPartials: string[];
}

/** A restore's options, checked, with their defaults filled in. */
interface ResolvedRestoreOptions {
  repository: RepositoryLocation | Repository;
  password: string | undefined;
  backup: string;
  /** The target, as an absolute path. */
  target: string;
  force: boolean;
  format: 'raw' | 'qcow2';
  control: JobControl<RestoreProgress>;
  /** Most chunk writes in flight. */
  queueDepth: number;
  throttle: ResolvedThrottleSettings;
}

function resolveRestoreOptions(options: unknown): ResolvedRestoreOptions {
  const opts = objectOption('options', options);
  const repository = checkRepositoryOption(opts.repository);
  const password = passwordOption(opts.password);
  const backup = stringOption('backup', opts.backup);
  const target = resolve(stringOption('target', opts.target));
  const force = booleanOption('force', opts.force, false);
  const format = choiceOption<'raw' | 'qcow2'>('format', opts.format, ['raw', 'qcow2'], 'raw');
  const control = resolveJobControl<RestoreProgress>(opts);
  const queueDepth = integerOption('queueDepth', opts.queueDepth, 8, 1, 256);
  const throttle = singleJobThrottleSettings(opts);
  return { repository, password, backup, target, force, format, control, queueDepth, throttle };
}

/** Checks a backup's chunk index as a whole (before anything is written). */
async function verifyIndex(repo: Repository, manifest: Manifest): Promise<void> {
  const check = await repo.openIndex(manifest);
  try {
    await check.verify();
  } finally {
    await check.close();
  }
}

interface RestoreCounts {
  bytesWritten: number;
  bytesSkipped: number;
  bytesDone: number;
  chunksVerified: number;
}

/** What writing the chunks needs. */
interface ChunkWrites {
  repo: Repository;
  manifest: Manifest;
  index: IndexReader;
  out: RestoreTarget;
  throttle: JobThrottle;
  /** Reports a write to the target as the job's own (canary's quiet checks). */
  ownWrite: (bytes: number) => void;
  signal: AbortSignal | undefined;
  counts: RestoreCounts;
  progress: ProgressReporter<RestoreProgress>;
  /** Writes to the target in flight: at most the throttle's queue depth. */
  slots: WriteSlots;
}

/**
 * Chunks read from a remote repository at once, ahead of the writes (each
 * holds one chunk): requests to object storage take milliseconds each, so
 * the reads need a deeper window than the writes to the target.
 */
const REMOTE_READS_IN_FLIGHT = 48;

/** A counting semaphore whose limit is read at every acquire (the throttle's queue depth). */
class WriteSlots {
  #busy = 0;
  readonly #waiting: (() => void)[] = [];
  constructor(private readonly limit: () => number) {}
  async acquire(): Promise<void> {
    while (this.#busy >= Math.max(1, this.limit())) await new Promise<void>((r) => this.#waiting.push(r));
    this.#busy++;
  }
  release(): void {
    this.#busy--;
    this.#waiting.shift()?.();
  }
}

/** A chunk to restore: its number, id and (packed) where its record is. */
interface RunChunk {
  i: number;
  hex: string;
  location: PackLocation | undefined;
}

/**
 * Consecutive chunks whose records are in one pack are read with one
 * request for the span that holds them, up to this many bytes (packed
 * repositories; a writer places records in the order their chunks were
 * ready, which is nearly the image's).
 */
const RUN_MAX_BYTES = 4 * 1024 * 1024;

/** Reads a run of chunks (one request when packed) and writes them in order. */
async function writeRun(w: ChunkWrites, run: readonly RunChunk[]): Promise<void> {
  const cs = w.manifest.chunkSize;
  const lengthOf = (i: number): number => Math.min(cs, w.manifest.size - i * cs);
  const leases: ({ data: Buffer; release(): void } | LowtideError)[] =
    run.length > 1
      ? await w.repo.leaseRecords(
          run.map((c) => ({ hex: c.hex, expectedLength: lengthOf(c.i), location: c.location! })),
        )
      : [
          await w.repo
            .leaseChunk(run[0]!.hex, lengthOf(run[0]!.i), run[0]!.location)
            .catch((err: unknown) => toLowtideError(err, 'CHUNK_CORRUPT')),
        ];
  try {
    for (let k = 0; k < run.length; k++) await writeChunk(w, run[k]!.i, leases[k]!);
  } finally {
    for (const l of leases) if (!(l instanceof LowtideError)) l.release();
  }
}

/** Writes chunk i read from the repository (its digest checked), timed for the throttle. */
async function writeChunk(w: ChunkWrites, i: number, lease: { data: Buffer } | LowtideError): Promise<void> {
  const cs = w.manifest.chunkSize;
  const length = Math.min(cs, w.manifest.size - i * cs);
  if (lease instanceof LowtideError) {
    throw new LowtideError(lease.code, `backup ${w.manifest.id} at offset ${i * cs}: ${lease.message}`, {
      offset: i * cs,
      cause: lease,
    });
  }
  w.counts.chunksVerified++;
  try {
    await w.slots.acquire();
    try {
      const w0 = process.hrtime.bigint();
      await w.out.write(lease.data, length, i * cs);
      w.ownWrite(length);
      w.throttle.observe(Number(process.hrtime.bigint() - w0), length);
    } finally {
      w.slots.release();
    }
  } catch (err) {
    throw writeError(err, `writing ${w.out.path}`);
  }
  w.counts.bytesWritten += length;
  w.counts.bytesDone += length;
  w.progress.report();
}

/** A zero chunk: written where the target keeps no holes, else skipped. */
async function writeZeroChunk(w: ChunkWrites, length: number, offset: number): Promise<void> {
  if (w.out.zeroChunk) {
    await w.out.write(w.out.zeroChunk, length, offset).catch((err: unknown) => {
      throw writeError(err, `writing ${w.out.path}`);
    });
    w.ownWrite(length);
    w.counts.bytesWritten += length;
  } else {
    w.counts.bytesSkipped += length;
  }
  w.counts.bytesDone += length;
}

/**
 * Writes every chunk of the backup in order: at most the throttle's queue
 * depth of writes in flight, spaced by its pacing delay. From a remote
 * repository up to REMOTE_READS_IN_FLIGHT chunks are read ahead of them.
 */
async function writeChunks(w: ChunkWrites): Promise<void> {
  const { manifest, throttle, signal } = w;
  const packed = w.repo.isPacked;
  // In chunks; a run of a packed repository counts as its chunks.
  const readAhead = w.repo.isRemote ? REMOTE_READS_IN_FLIGHT : 0;
  const cs = manifest.chunkSize;
  const inFlight = new Map<Promise<void>, number>();
  let chunksInFlight = 0;
  let failure: unknown;
  let lastIssue = 0;
  let lastRun = 1;
  let run: RunChunk[] = [];
  let runStart = Infinity;
  let runEnd = 0;
  const issue = async (): Promise<void> => {
    if (run.length === 0) return;
    const chunks = run;
    run = [];
    runStart = Infinity;
    runEnd = 0;
    while (inFlight.size > 0 && chunksInFlight + chunks.length > Math.max(throttle.decision.queueDepth, readAhead))
      await Promise.race(inFlight.keys());
    // Re-read the pacing while waiting: a controller may shorten it (the end of
    // a canary pause). A run of n chunks is n blocks: the next issue waits n delays.
    let wait: number;
    while ((wait = lastIssue + throttle.pacingMs() * lastRun - performance.now()) > 0) await sleep(Math.min(wait, 20));
    lastIssue = performance.now();
    lastRun = chunks.length;
    chunksInFlight += chunks.length;
    const p: Promise<void> = writeRun(w, chunks)
      .catch((err: unknown) => {
        failure ??= err;
      })
      .finally(() => {
        inFlight.delete(p);
        chunksInFlight -= chunks.length;
      });
    inFlight.set(p, chunks.length);
  };
  for (let i = 0; i < manifest.chunkCount && failure === undefined; i++) {
    if (signal?.aborted) throw new LowtideError('ABORTED', 'the restore was aborted', { cause: signal.reason });
    const entry = await w.index.entry(i);
    if (entry === null) {
      await issue();
      await writeZeroChunk(w, Math.min(cs, manifest.size - i * cs), i * cs);
      continue;
    }
    const location = w.index.location(i);
    const joins =
      packed &&
      run.length > 0 &&
      location !== undefined &&
      location.pack === run[0]!.location!.pack &&
      Math.max(runEnd, location.offset + location.length) - Math.min(runStart, location.offset) <= RUN_MAX_BYTES;
    if (!joins) await issue();
    run.push({ i, hex: entry.toString('hex'), location });
    if (location) {
      runStart = Math.min(runStart, location.offset);
      runEnd = Math.max(runEnd, location.offset + location.length);
    }
    if (!packed) await issue();
  }
  await issue();
  await Promise.all(inFlight.keys());
  if (failure !== undefined) throw failure;
}

export async function restore(options: RestoreOptions): Promise<RestoreResult> {
  const o = resolveRestoreOptions(options);
  return withRepository(o.repository, o.password, (repo) => restoreFrom(repo, o));
}

async function restoreFrom(repo: Repository, o: ResolvedRestoreOptions): Promise<RestoreResult> {
  const manifest = await repo.readManifest(o.backup);
  await verifyIndex(repo, manifest);
  const { kind, path: targetPath } = await targetKind(o.target, o.force);
  const clock = new Stopwatch();
  const out = new RestoreTarget(targetPath, kind, manifest.chunkSize, o.format, repo.isRemote);
  // Writes are the production side: with a block device target, its idle
  // latency is probed by reading it; an image file gets the default target.
  // With `canary`, that source is also probed while the restore runs.
  const probe = out.kind === 'block' ? await openSource(out.path, { direct: 'auto' }) : undefined;
  let throttle: JobThrottle;
  let index: IndexReader;
  try {
    const bounds = {
      maxQueueDepth: o.queueDepth,
      maxBlockSize: manifest.chunkSize,
      minBlockSize: manifest.chunkSize,
      alignment: 512,
    };
    throttle = await JobThrottle.create(o.throttle, bounds, probe, o.control.signal);
    index = await repo.openIndex(manifest);
  } catch (err) {
    await probe?.close();
    throw err;
  }
  const counts: RestoreCounts = { bytesWritten: 0, bytesSkipped: 0, bytesDone: 0, chunksVerified: 0 };
  const progress = new ProgressReporter<RestoreProgress>(o.control, clock, (t) => ({
    bytesDone: counts.bytesDone,
    bytesTotal: manifest.size,
    elapsedSeconds: t,
    bytesPerSecond: t > 0 ? counts.bytesDone / t : 0,
    throttle: throttle.state(),
  }));
  try {
    throttle.startProbes();
    await out.open(manifest, () => throttle.writebackStepBytes());
    // The target's storage: the device itself, or the file system of the file's directory.
    const ownWrite = throttle.ownWrites(out.kind === 'block' ? out.path : dirname(out.path));
    const slots = new WriteSlots(() => throttle.decision.queueDepth);
    await writeChunks({
      repo,
      manifest,
      index,
      out,
      throttle,
      ownWrite,
      signal: o.control.signal,
      counts,
      progress,
      slots,
    });
    await out.finish();
    progress.report(true);
    const seconds = clock.seconds();
    return {
      backup: manifest.id,
      target: o.target,
      targetKind: out.kind,
      format: out.format,
      size: manifest.size,
      bytesWritten: counts.bytesWritten,
      bytesSkipped: counts.bytesSkipped,
      chunksVerified: counts.chunksVerified,
      direct: out.direct,
      seconds,
      mbPerSecond: seconds > 0 ? manifest.size / seconds / 1e6 : 0,
      throttle: throttle.report(),
      removedPartials: out.removedPartials,
    };
  } finally {
    await throttle.stop();
    await probe?.close();
    await index.close().catch(() => undefined);
    await out.close();
  }
}
