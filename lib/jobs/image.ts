/**
 * The image job: copies a source to an image file with aligned reads,
 * leaving all-zero blocks as holes. The output appears only when complete:
 * it is written to a temporary file beside it, synced, then renamed.
 */
import { lstat, stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { LowtideError, toLowtideError } from '../errors.js';
import { native } from '../native.js';
import { booleanOption, integerOption, objectOption, stringOption } from '../options.js';
import type { DiskFormat } from '../io/guest.js';
import { openSource, type DirectMode, type EngineName, type Source } from '../io/source.js';
import { MAX_BLOCK_SIZE, type Block, type BlockReader } from '../io/reader.js';
import { LatencyHistogram } from '../throttle/histogram.js';
import { planImageOf, type ImagePlan, type PlanOptions } from '../fs/plan.js';
import {
  resolveJobControl,
  resolveReadSettings,
  throttledReader,
  type JobControl,
  type ReadSettings,
} from './options.js';
import { PartialFile, writeError } from './output.js';
import { DeviceRead, type DeviceReadReport, type ReadFrom } from './device-read.js';
import { ProgressReporter, Stopwatch, summarizeLatency, type LatencySummary } from './progress.js';
import { EarlyWriteback } from './writeback.js';
import { JobThrottle, type JobThrottleReport, type ThrottleState } from '../throttle/job-throttle.js';
import {
  singleJobThrottleSettings,
  type ResolvedThrottleSettings,
  type ThrottleSettings,
} from '../throttle/job-settings.js';

export type { LatencySummary } from './progress.js';

export interface ImageOptions extends ThrottleSettings {
  /** File or block device to read (opened read-only). */
  source: string;
  /** Image file to write. */
  output: string;
  /** Largest read request size (default 1 MiB); the throttle may use smaller ones. */
  blockSize?: number | undefined;
  /** Most reads in flight (default 32); the throttle may use fewer. */
  queueDepth?: number | undefined;
  engine?: EngineName | undefined;
  direct?: DirectMode | undefined;
  /**
   * 'file' (default), or 'device': read a file source's blocks straight from
   * the block device under its file system (O_DIRECT, read-only) at the
   * offsets FIEMAP gives; what cannot be read there is read through the file.
   * The job fails with SOURCE_CHANGED if the file's size or layout changed
   * while it was read.
   */
  readFrom?: ReadFrom | undefined;
  /**
   * How the source is read (default 'raw'): 'qcow2' images the guest disk of
   * a qcow2 image and its backing chain; 'auto' detects qcow2 on a regular
   * file under the probing rule (see openSource).
   */
  format?: DiskFormat | undefined;
  /** Replace an existing output file (default false: OUTPUT_EXISTS). */
  force?: boolean | undefined;
  /** Leave all-zero blocks as holes (default true). */
  sparse?: boolean | undefined;
  /** Copy every block instead of only what FAT file systems use (default false). */
  allBlocks?: boolean | undefined;
  /** Files and directories to leave out of FAT volumes (see planImage). */
  exclude?: readonly string[] | undefined;
  /** An unparseable file system is an error instead of a full copy with a warning. */
  strict?: boolean | undefined;
  signal?: AbortSignal | undefined;
  onProgress?: ((progress: ImageProgress) => void) | undefined;
  /** Minimum time between progress callbacks (default 200 ms). */
  progressIntervalMs?: number | undefined;
}

export interface ImageProgress {
  bytesDone: number;
  bytesTotal: number;
  bytesWritten: number;
  bytesSkipped: number;
  elapsedSeconds: number;
  bytesPerSecond: number;
  /** Median read latency so far, milliseconds. */
  latencyP50Ms: number;
  /** The throttle's view now: smoothed latency, delay between reads, queue depth, request size. */
  throttle: ThrottleState;
}

export interface ImageSummary {
  source: string;
  output: string;
  size: number;
  /** Bytes read from the source (including any alignment padding). */
  bytesRead: number;
  /** Bytes of data written to the image. */
  bytesWritten: number;
  /** Bytes of all-zero blocks left as holes. */
  bytesSkipped: number;
  /** Bytes never read: free clusters and excluded files (holes in the image). */
  bytesNotRead: number;
  /** What the planner decided: partitions, file systems, exclusions, warnings. */
  plan: Omit<ImagePlan, 'extents' | 'overlay'> & { extentCount: number; overlaySectors: number };
  seconds: number;
  /** Bytes read per wall-clock second over the whole job, in MB/s (10^6); not the source size over time. */
  mbPerSecond: number;
  latency: LatencySummary;
  engine: 'io_uring' | 'threads';
  direct: boolean;
  blockSize: number;
  queueDepth: number;
  throttle: JobThrottleReport;
  /** With readFrom 'device': where the bytes came from. */
  readFrom?: DeviceReadReport | undefined;
}

/** Writes kept in flight to the output (each holds one read buffer). */
const WRITES_IN_FLIGHT = 4;

/** An image job's options, checked, with their defaults filled in. */
interface ResolvedImageOptions {
  source: string;
  /** The output file, as an absolute path. */
  output: string;
  blockSize: number;
  read: ReadSettings;
  force: boolean;
  sparse: boolean;
  control: JobControl<ImageProgress>;
  throttle: ResolvedThrottleSettings;
  plan: Omit<PlanOptions, 'source'>;
}

/** Checks imageSource()'s arguments; the messages name the option, what was expected and what was given. */
function resolveImageOptions(options: unknown): ResolvedImageOptions {
  const opts = objectOption('options', options);
  const source = stringOption('source', opts.source);
  const output = stringOption('output', opts.output);
  const blockSize = integerOption('blockSize', opts.blockSize, 1 << 20, 512, MAX_BLOCK_SIZE);
  if (blockSize % 512 !== 0) {
    // Every sector size is a multiple of 512; the exact one is checked once the source is open.
    throw new LowtideError(
      'INVALID_ARGUMENT',
      `blockSize: expected a multiple of the sector size (512 bytes), got ${blockSize}`,
    );
  }
  const read = resolveReadSettings(opts);
  const force = booleanOption('force', opts.force, false);
  const sparse = booleanOption('sparse', opts.sparse, true);
  const control = resolveJobControl<ImageProgress>(opts);
  const throttle = singleJobThrottleSettings(opts);
  const allBlocks = booleanOption('allBlocks', opts.allBlocks, false);
  const strict = booleanOption('strict', opts.strict, false);
  const exclude = opts.exclude as readonly string[] | undefined;
  return {
    source,
    output: resolve(output),
    blockSize,
    read,
    force,
    sparse,
    control,
    throttle,
    plan: { allBlocks, strict, ...(exclude !== undefined ? { exclude } : {}) },
  };
}

async function checkOutput(sourcePath: string, output: string, force: boolean): Promise<void> {
  let st;
  try {
    st = await lstat(output);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw toLowtideError(err, 'WRITE_FAILED', `cannot check output ${output}`);
  }
  if (st.isDirectory()) throw new LowtideError('INVALID_ARGUMENT', `output ${output} is a directory`);
  if (!st.isFile()) {
    throw new LowtideError(
      'UNSUPPORTED',
      `output ${output} exists and is not a regular file; images are written to files`,
    );
  }
  const src = await stat(sourcePath).catch(() => undefined);
  if (src && src.ino === st.ino && src.dev === st.dev) {
    throw new LowtideError('INVALID_ARGUMENT', `output ${output} is the source itself`);
  }
  if (!force) {
    throw new LowtideError('OUTPUT_EXISTS', `output ${output} exists; pass force (--force) to replace it`, {
      path: output,
    });
  }
}

/** Bytes counted while the image is copied. */
interface CopyCounts {
  bytesDone: number;
  bytesWritten: number;
  bytesSkipped: number;
  latency: LatencyHistogram;
}

/**
 * Copies every block the reader returns to `out` at its offset, up to
 * WRITES_IN_FLIGHT writes at once; with `sparse`, all-zero blocks are left as
 * holes. Every block's latency goes to the throttle.
 */
async function copyBlocks(
  reader: BlockReader,
  out: PartialFile,
  o: ResolvedImageOptions,
  throttle: JobThrottle,
  counts: CopyCounts,
  progress: ProgressReporter<ImageProgress>,
): Promise<void> {
  const pending = new Set<Promise<void>>();
  const writeback = new EarlyWriteback(out.handle.fd, () => throttle.writebackStepBytes());
  // Writes to the source's storage are the job's own, not someone else's (canary's quiet checks).
  const ownWrite = throttle.ownWrites(out.path);
  let failure: unknown;
  const write = (block: Block): void => {
    block.retain();
    const p = out.handle
      .write(block.data, 0, block.length, block.offset)
      .then(
        ({ bytesWritten: n }) => {
          if (n !== block.length)
            throw new LowtideError('WRITE_FAILED', `short write to ${o.output} at ${block.offset}`);
          counts.bytesWritten += n;
          ownWrite(n);
          writeback.wrote(n);
        },
        (err: unknown) => {
          throw writeError(err, `writing ${o.output}`);
        },
      )
      .catch((err: unknown) => {
        failure ??= err;
      })
      .finally(() => {
        block.release();
        pending.delete(p);
      });
    pending.add(p);
  };
  try {
    for await (const block of reader) {
      counts.latency.record(block.latencyNs);
      throttle.observe(block.latencyNs, block.length);
      counts.bytesDone += block.length;
      if (o.sparse && native.isZero(block.data)) {
        counts.bytesSkipped += block.length;
      } else {
        write(block);
        if (pending.size >= WRITES_IN_FLIGHT) await Promise.race(pending);
      }
      if (failure !== undefined) break;
      progress.report();
    }
  } finally {
    await Promise.all(pending);
  }
  if (failure !== undefined) throw failure;
}

/** Writes the metadata changed by exclusions over what was copied, then makes the image the output. */
async function finishImage(out: PartialFile, plan: ImagePlan, output: string): Promise<void> {
  try {
    for (const w of plan.overlay) {
      const { bytesWritten: n } = await out.handle.write(w.data, 0, w.data.length, w.offset);
      if (n !== w.data.length) throw new LowtideError('WRITE_FAILED', `short write to ${output} at ${w.offset}`);
    }
    await out.commit({ syncDirectory: true });
  } catch (err) {
    throw writeError(err, `writing ${output}`);
  }
}

function imageSummary(
  o: ResolvedImageOptions,
  source: Source,
  plan: ImagePlan,
  counts: CopyCounts,
  reader: BlockReader,
  throttle: JobThrottle,
  seconds: number,
  device: DeviceRead | undefined,
): ImageSummary {
  const stats = reader.stats();
  return {
    source: o.source,
    output: o.output,
    size: source.size,
    bytesRead: stats.bytesRead,
    bytesWritten: counts.bytesWritten,
    bytesSkipped: counts.bytesSkipped,
    bytesNotRead: source.size - plan.bytesToRead,
    plan: {
      source: plan.source,
      size: plan.size,
      table: plan.table,
      bytesToRead: plan.bytesToRead,
      partitions: plan.partitions,
      excluded: plan.excluded,
      bytesExcluded: plan.bytesExcluded,
      warnings: plan.warnings,
      extentCount: plan.extents.length,
      overlaySectors: plan.overlay.length,
    },
    seconds,
    mbPerSecond: seconds > 0 ? stats.bytesRead / seconds / 1e6 : 0,
    latency: summarizeLatency(counts.latency),
    engine: stats.engine,
    direct: source.direct,
    blockSize: o.blockSize,
    queueDepth: o.read.queueDepth,
    throttle: throttle.report(),
    ...(device !== undefined ? { readFrom: device.report() } : {}),
  };
}

/** Copies `options.source` to the image file `options.output`. */
export async function imageSource(options: ImageOptions): Promise<ImageSummary> {
  const o = resolveImageOptions(options);
  await checkOutput(o.source, o.output, o.force);
  const source = await openSource(o.source, { direct: o.read.direct, format: o.read.format });
  let plan: ImagePlan;
  try {
    plan = await planImageOf(source, { ...o.plan, format: o.read.format });
  } catch (err) {
    await source.close();
    throw err;
  }
  const clock = new Stopwatch();
  const counts: CopyCounts = { bytesDone: 0, bytesWritten: 0, bytesSkipped: 0, latency: new LatencyHistogram() };
  let out: PartialFile | undefined;
  let jobThrottle: JobThrottle | undefined;
  let device: DeviceRead | undefined;
  try {
    if (o.read.readFrom === 'device') device = await DeviceRead.prepare(source, plan.extents);
    try {
      out = await PartialFile.create(o.output);
      await out.handle.truncate(source.size);
    } catch (err) {
      throw writeError(err, `writing ${o.output}`);
    }
    const bounds = {
      maxQueueDepth: o.read.queueDepth,
      maxBlockSize: o.blockSize,
      minBlockSize: 64 * 1024,
      alignment: Math.max(4096, source.sectorSize),
    };
    const throttle = (jobThrottle = await JobThrottle.create(o.throttle, bounds, source, o.control.signal));
    const reader = throttledReader(source, plan.extents, throttle, {
      read: o.read,
      maxBlockSize: o.blockSize,
      signal: o.control.signal,
      heldBuffers: WRITES_IN_FLIGHT + 2,
      device,
    });
    const progress = new ProgressReporter<ImageProgress>(
      o.control,
      clock,
      (t) => ({
        bytesDone: counts.bytesDone,
        bytesTotal: plan.bytesToRead,
        bytesWritten: counts.bytesWritten,
        bytesSkipped: counts.bytesSkipped,
        elapsedSeconds: t,
        bytesPerSecond: t > 0 ? counts.bytesDone / t : 0,
        latencyP50Ms: counts.latency.percentile(50) / 1e6,
        throttle: throttle.state(),
      }),
      false,
    );
    await copyBlocks(reader, out, o, throttle, counts, progress);
    await device?.verifyUnchanged();
    await finishImage(out, plan, o.output);
    progress.report(true);
    return imageSummary(o, source, plan, counts, reader, throttle, clock.seconds(), device);
  } finally {
    await out?.discard();
    await jobThrottle?.stop();
    await device?.close();
    await source.close();
  }
}
