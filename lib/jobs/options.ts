/**
 * The options jobs share, resolved by one function each so that every job
 * checks them alike: how a job reads its source (ReadSettings) and how it is
 * cancelled and reports progress (JobControl). Throttle settings are resolved
 * by resolveThrottleSettings / singleJobThrottleSettings. Each job calls these
 * from its own resolve...Options(), once, before it touches anything.
 */
import type { Extents } from '../io/extent-list.js';
import { MAX_QUEUE_DEPTH, type BlockReader } from '../io/reader.js';
import type { DirectMode, EngineName, Source } from '../io/source.js';
import { formatOption, type DiskFormat } from '../io/guest.js';
import { choiceOption, functionOption, integerOption, signalOption } from '../options.js';
import type { JobThrottle } from '../throttle/job-throttle.js';
import type { DeviceRead, ReadFrom } from './device-read.js';

/** How a job reads its source. */
export interface ReadSettings {
  /** Most reads in flight; the throttle may use fewer. */
  queueDepth: number;
  engine: EngineName;
  direct: DirectMode;
  /**
   * 'file' (default) reads a file source through its file system; 'device'
   * reads its blocks from the block device under it where the offset table
   * allows (see device-read.ts).
   */
  readFrom: ReadFrom;
  /** How the source is read: raw, or the guest disk of a virtual disk (see openSource). */
  format: DiskFormat;
}

/** Cancellation and progress reports of a job whose progress reports are of type P. */
export interface JobControl<P> {
  signal: AbortSignal | undefined;
  onProgress: ((progress: P) => void) | undefined;
  /** Minimum time between two progress reports, ms. */
  progressIntervalMs: number;
}

/** queueDepth (default 32), engine, direct, readFrom and format of a job's options. */
export function resolveReadSettings(opts: Record<string, unknown>): ReadSettings {
  return {
    queueDepth: integerOption('queueDepth', opts.queueDepth, 32, 1, MAX_QUEUE_DEPTH),
    engine: choiceOption<EngineName>('engine', opts.engine, ['auto', 'io_uring', 'threads'], 'auto'),
    direct: choiceOption<DirectMode>('direct', opts.direct, ['auto', 'on', 'off'], 'auto'),
    readFrom: choiceOption<ReadFrom>('readFrom', opts.readFrom, ['device', 'file'], 'file'),
    format: formatOption('format', opts.format),
  };
}

/**
 * A reader of `extents` under the job's throttle: it starts with the
 * throttle's decision in force and follows every later one. `heldBuffers`:
 * blocks the job keeps past the next read (retain()) at most.
 */
export function throttledReader(
  source: Source,
  extents: Extents,
  throttle: JobThrottle,
  options: {
    read: ReadSettings;
    maxBlockSize: number;
    signal: AbortSignal | undefined;
    heldBuffers: number;
    /** Read the extents through the device under the file, as mapped (readFrom: 'device'). */
    device?: DeviceRead | undefined;
  },
): BlockReader {
  const readOptions = {
    ...throttle.readerOptions(),
    maxBlockSize: options.maxBlockSize,
    maxQueueDepth: options.read.queueDepth,
    engine: options.read.engine,
    signal: options.signal,
    heldBuffers: options.heldBuffers,
  };
  const d = options.device;
  const reader = d !== undefined ? d.reader(source, extents, readOptions) : source.read(extents, readOptions);
  throttle.attach(reader);
  return reader;
}

/** signal, onProgress and progressIntervalMs (default 200 ms) of a job's options. */
export function resolveJobControl<P>(opts: Record<string, unknown>): JobControl<P> {
  return {
    signal: signalOption('signal', opts.signal),
    onProgress: functionOption<(progress: P) => void>('onProgress', opts.onProgress),
    progressIntervalMs: integerOption('progressIntervalMs', opts.progressIntervalMs, 200, 0),
  };
}
