/**
 * The image job: copies a source to an image file with aligned reads,
 * leaving all-zero blocks as holes. The output appears only when complete:
 * it is written to a temporary file beside it, synced, then renamed.
 */
import { randomBytes } from 'node:crypto';
import { constants as fsc } from 'node:fs';
import { lstat, open, rename, stat, unlink, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { LowtideError, toLowtideError } from '../errors.js';
import { native } from '../native.js';
import {
  booleanOption,
  choiceOption,
  functionOption,
  integerOption,
  objectOption,
  signalOption,
  stringOption,
} from '../options.js';
import { openSource, type DirectMode, type EngineName } from '../io/source.js';
import { MAX_BLOCK_SIZE, MAX_QUEUE_DEPTH, type Block } from '../io/reader.js';
import { LatencyHistogram } from '../throttle/histogram.js';
import { planImage, type ImagePlan } from '../fs/plan.js';
import { EarlyWriteback } from './writeback.js';
import { JobThrottle, type JobThrottleReport, type ThrottleState } from '../throttle/job-throttle.js';
import { singleJobThrottleSettings, type ThrottleSettings } from '../throttle/job-settings.js';

export interface ImageOptions extends ThrottleSettings {
  /** Largest read request size (default 1 MiB); the throttle may use smaller ones. */
  blockSize?: number;
  /** Most reads in flight (default 32); the throttle may use fewer. */
  queueDepth?: number;
  engine?: EngineName;
  direct?: DirectMode;
  /** Replace an existing output file (default false: OUTPUT_EXISTS). */
  force?: boolean;
  /** Leave all-zero blocks as holes (default true). */
  sparse?: boolean;
  /** Copy every block instead of only what FAT file systems use (default false). */
  allBlocks?: boolean;
  /** Files and directories to leave out of FAT volumes (see planImage). */
  exclude?: readonly string[];
  /** An unparseable file system is an error instead of a full copy with a warning. */
  strict?: boolean;
  signal?: AbortSignal;
  onProgress?: (progress: ImageProgress) => void;
  /** Minimum time between progress callbacks (default 200 ms). */
  progressIntervalMs?: number;
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

export interface LatencySummary {
  count: number;
  meanMs: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
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
  /** Source bytes per second over the whole job, in MB/s (10^6). */
  mbPerSecond: number;
  latency: LatencySummary;
  engine: 'io_uring' | 'threads';
  direct: boolean;
  blockSize: number;
  queueDepth: number;
  throttle: JobThrottleReport;
}

/** Writes kept in flight to the output (each holds one read buffer). */
const WRITES_IN_FLIGHT = 4;

export function summarizeLatency(h: LatencyHistogram): LatencySummary {
  const ms = (ns: number): number => Math.round(ns / 1e3) / 1e3;
  return {
    count: h.count,
    meanMs: ms(h.mean),
    p50Ms: ms(h.percentile(50)),
    p99Ms: ms(h.percentile(99)),
    maxMs: ms(h.max),
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
    throw new LowtideError('UNSUPPORTED', `output ${output} exists and is not a regular file; images are written to files`);
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

async function syncDirectory(dir: string): Promise<void> {
  const h = await open(dir, fsc.O_RDONLY | fsc.O_DIRECTORY);
  try {
    await h.sync();
  } finally {
    await h.close();
  }
}

function writeError(err: unknown, output: string): LowtideError {
  const code = (err as NodeJS.ErrnoException).code;
  return toLowtideError(err, code === 'ENOSPC' || code === 'EDQUOT' ? 'NO_SPACE' : 'WRITE_FAILED', `writing ${output}`);
}

/** Copies `sourcePath` to the image file `outputPath`. */
export async function imageSource(sourcePath: string, outputPath: string, options: ImageOptions = {}): Promise<ImageSummary> {
  stringOption('source', sourcePath);
  stringOption('output', outputPath);
  const opts = objectOption('options', options);
  const blockSize = integerOption('blockSize', opts.blockSize, 1 << 20, 512, MAX_BLOCK_SIZE);
  if (blockSize % 512 !== 0) {
    // Every sector size is a multiple of 512; the exact one is checked once the source is open.
    throw new LowtideError('INVALID_ARGUMENT', `blockSize: expected a multiple of the sector size (512 bytes), got ${blockSize}`);
  }
  const queueDepth = integerOption('queueDepth', opts.queueDepth, 32, 1, MAX_QUEUE_DEPTH);
  const engine = choiceOption<EngineName>('engine', opts.engine, ['auto', 'io_uring', 'threads'], 'auto');
  const direct = choiceOption<DirectMode>('direct', opts.direct, ['auto', 'on', 'off'], 'auto');
  const force = booleanOption('force', opts.force, false);
  const sparse = booleanOption('sparse', opts.sparse, true);
  const signal = signalOption('signal', opts.signal);
  const onProgress = functionOption<(p: ImageProgress) => void>('onProgress', opts.onProgress);
  const progressIntervalMs = integerOption('progressIntervalMs', opts.progressIntervalMs, 200, 0);
  const throttleSettings = singleJobThrottleSettings(opts);

  const allBlocks = booleanOption('allBlocks', opts.allBlocks, false);
  const strict = booleanOption('strict', opts.strict, false);

  const output = resolve(outputPath);
  await checkOutput(sourcePath, output, force);
  const plan = await planImage(sourcePath, {
    allBlocks,
    strict,
    ...(opts.exclude !== undefined ? { exclude: opts.exclude as readonly string[] } : {}),
  });
  const source = await openSource(sourcePath, { direct });
  const temp = join(dirname(output), `.${basename(output)}.${randomBytes(6).toString('hex')}.lowtide-partial`);
  let out: FileHandle | undefined;
  let renamed = false;
  const started = process.hrtime.bigint();
  const latency = new LatencyHistogram();
  let bytesDone = 0;
  let bytesWritten = 0;
  let bytesSkipped = 0;
  let jobThrottle: JobThrottle | undefined;
  try {
    try {
      out = await open(temp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, 0o644);
      await out.truncate(source.size);
    } catch (err) {
      throw writeError(err, output);
    }
    const throttle = (jobThrottle = await JobThrottle.create(
      throttleSettings,
      { maxQueueDepth: queueDepth, maxBlockSize: blockSize, minBlockSize: 64 * 1024, alignment: Math.max(4096, source.sectorSize) },
      source,
      signal,
    ));
    const reader = source.read(plan.extents, {
      ...throttle.readerOptions(),
      maxBlockSize: blockSize,
      maxQueueDepth: queueDepth,
      engine,
      signal,
      heldBuffers: WRITES_IN_FLIGHT + 2,
    });
    throttle.attach(reader);
    const ownWrite = throttle.ownWrites(temp);
    const pending = new Set<Promise<void>>();
    const writeback = new EarlyWriteback(out.fd);
    let failure: unknown;
    const elapsed = (): number => Number(process.hrtime.bigint() - started) / 1e9;
    let lastReport = 0;
    const report = (force = false): void => {
      if (!onProgress) return;
      const t = elapsed();
      if (!force && (t - lastReport) * 1000 < progressIntervalMs) return;
      lastReport = t;
      onProgress({
        bytesDone,
        bytesTotal: plan.bytesToRead,
        bytesWritten,
        bytesSkipped,
        elapsedSeconds: t,
        bytesPerSecond: t > 0 ? bytesDone / t : 0,
        latencyP50Ms: latency.percentile(50) / 1e6,
        throttle: throttle.state(),
      });
    };
    const write = (block: Block, fh: FileHandle): void => {
      block.retain();
      const p = fh
        .write(block.data, 0, block.length, block.offset)
        .then(
          ({ bytesWritten: n }) => {
            if (n !== block.length) throw new LowtideError('WRITE_FAILED', `short write to ${output} at ${block.offset}`);
            bytesWritten += n;
            ownWrite(n);
            writeback.wrote(n);
          },
          (err: unknown) => {
            throw writeError(err, output);
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
        latency.record(block.latencyNs);
        throttle.observe(block.latencyNs, block.length);
        bytesDone += block.length;
        if (sparse && native.isZero(block.data)) {
          bytesSkipped += block.length;
        } else {
          write(block, out);
          if (pending.size >= WRITES_IN_FLIGHT) await Promise.race(pending);
        }
        if (failure !== undefined) break;
        report();
      }
    } finally {
      await Promise.all(pending);
    }
    if (failure !== undefined) throw failure;
    const stats = reader.stats();
    try {
      // Metadata changed by exclusions goes over what was copied.
      for (const w of plan.overlay) {
        const { bytesWritten: n } = await out.write(w.data, 0, w.data.length, w.offset);
        if (n !== w.data.length) throw new LowtideError('WRITE_FAILED', `short write to ${output} at ${w.offset}`);
      }
      await out.sync();
      await out.close();
      out = undefined;
      await rename(temp, output);
      renamed = true;
      await syncDirectory(dirname(output));
    } catch (err) {
      throw writeError(err, output);
    }
    report(true);
    const seconds = elapsed();
    return {
      source: sourcePath,
      output,
      size: source.size,
      bytesRead: stats.bytesRead,
      bytesWritten,
      bytesSkipped,
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
      mbPerSecond: seconds > 0 ? source.size / seconds / 1e6 : 0,
      latency: summarizeLatency(latency),
      engine: stats.engine,
      direct: source.direct,
      blockSize,
      queueDepth,
      throttle: throttle.report(),
    };
  } finally {
    if (out) await out.close().catch(() => undefined);
    if (!renamed) await unlink(temp).catch(() => undefined);
    await jobThrottle?.stop();
    await source.close();
  }
}
