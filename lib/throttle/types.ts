/**
 * What every throttling controller takes and gives: latency samples in;
 * delay before the next block, queue depth and request size out. The
 * control laws are documented in docs/throttle.md.
 *
 * Contract with the job that drives a controller:
 * - observe() once for every completed block (read or write) with its
 *   latency, its size and its monotonic completion time;
 * - decide() once before issuing each block; the job waits `delayMs` since
 *   it issued the previous block (pacing), keeps at most `queueDepth` blocks
 *   in flight and makes the next request `blockSize` bytes long;
 * - report() at the end (or whenever) for the manifest and `--json`.
 *
 * Every decision is clamped to the configured bounds, and garbage samples
 * (NaN, ±Infinity, negative, zero, absurdly large) are ignored or clamped
 * before any arithmetic (see estimator.ts), so no input can produce NaN, a
 * negative delay, or a queue depth or block size out of bounds.
 */
import type { ResolvedThrottleOptions } from './controller-options.js';
import type { LatencyEstimator } from './estimator.js';
import type { HistogramSummary } from './histogram.js';

export const CONTROLLER_NAMES = ['canary', 'threshold', 'aimd', 'parda', 'off'] as const;
export type ControllerName = (typeof CONTROLLER_NAMES)[number];
/** The controller used when none is named (see docs/throttle.md for why). */
export const DEFAULT_CONTROLLER: ControllerName = 'canary';

/** One completed block. */
export interface LatencySample {
  /** Submit-to-complete time in nanoseconds. */
  latencyNs: number;
  /** Bytes the block carried. */
  bytes: number;
  /** Monotonic completion time in nanoseconds (any origin, never decreasing). */
  atNs: number;
  /**
   * Probes only, optional: I/Os the storage under the source has completed
   * so far (reads and writes, merged ones included: /sys/block/X/stat),
   * read after this probe completed. `canary` counts others' I/O with it
   * while its own reads are drained (see the quiet checks in docs/throttle.md).
   */
  deviceIos?: number;
  /**
   * Probes only, optional: reads the storage was given so far (completed,
   * merged and in flight), read after this probe completed, and then the
   * reads the job has submitted so far (its blocks and probes). Present only
   * where the first counts the second one for one (see ForeignReads).
   */
  deviceReadsSubmitted?: number;
  ownReadsSubmitted?: number;
  /**
   * With them: how many jobs' reads `ownReadsSubmitted` sums (the job and
   * its siblings on the same storage; default 1). Each may have its queue
   * of reads not yet at the device.
   */
  ownReadsJobs?: number;
  /**
   * With them: the siblings' share of `ownReadsSubmitted` (other jobs on the
   * same storage, job-registry.ts), absent when there are none. While the
   * job's own reads are drained (a quiet check), the siblings' go on: they
   * are not someone else's either.
   */
  siblingReadsSubmitted?: number;
  /**
   * With them, where the storage reads metadata of its own for the job's
   * reads (btrfs: its checksum tree): the bytes the job's reads moved so far,
   * and the bytes that explain one such read (StorageIoCounter.readMetaBytes).
   */
  ownReadBytes?: number;
  readMetaBytes?: number;
  /** With them: the largest read the device takes as one request (larger ones may count twice). */
  deviceMaxRequestBytes?: number;
  /** Probes only, optional: the writes alone among `deviceIos`. */
  deviceWrites?: number;
  /** Probes only, optional: the bytes the storage has written so far. */
  deviceWriteBytes?: number;
  /**
   * Probes only, optional: the bytes and the number of writes the job has
   * reported writing to that storage so far (JobThrottle.ownWrites). Device
   * writes beyond them (and their metadata) are someone else's.
   */
  ownWriteBytes?: number;
  ownWrites?: number;
  /**
   * Probes only, optional: the system's data not yet written (Dirty +
   * Writeback in /proc/meminfo), the most of the job's own writes that can
   * still reach the storage later.
   */
  unwrittenBytes?: number;
}

/** What to do for the next block. */
export interface ThrottleDecision {
  /** Minimum time between issuing the previous block and the next one, in ms. */
  delayMs: number;
  /** Blocks to keep in flight at most. */
  queueDepth: number;
  /** Size of the next request in bytes (a multiple of `alignment`). */
  blockSize: number;
}

/** One row of a queue-depth or block-size distribution. */
export interface DistributionEntry {
  /** The queue depth or block size. */
  value: number;
  /** Decisions that chose it. */
  decisions: number;
  /** Time spent with it in force, from one decision to the next (ms of sample time). */
  timeMs: number;
}

/** `canary`'s quiet checks: how many, what they found, and the time boosted. */
export interface BoostReport {
  /** Quiet checks (and calibrations) that counted the storage's I/O. */
  checks: number;
  /** Checks that found someone else's I/O. */
  busy: number;
  /** Boosts ended by a write the job did not make. */
  endedByWrites: number;
  boostedMs: number;
  /** Time the storage counted as lightly loaded (`canary.lightIops`), boosted time included, ms. */
  lightMs: number;
  enabled: boolean;
  /** Whether the probes carried the storage's I/O count. */
  deviceCounters: boolean;
  /** Someone else's I/Os per second over all checks' drained time. */
  foreignIops: number;
  /** Drained time of all checks, ms. */
  drainedMs: number;
  /** Bytes written by others beside the job's own writes to the storage (counted only while it writes there). */
  foreignWriteBytes: number;
  /**
   * Someone else's reads counted while the job ran (not only in checks),
   * where the storage allows it (one device right under an O_DIRECT source):
   * whether it counted, the reads and the time counted (ms), and why it
   * stopped if it did.
   */
  running: { counted: boolean; reads: number; countedMs: number; stopped?: string };
}

export interface ThrottleReport {
  controller: ControllerName;
  targetLatencyMs: number;
  /** Samples accepted (clamped ones included). */
  samples: number;
  /** Samples ignored as garbage (NaN, infinite, negative, zero). */
  invalidSamples: number;
  /** Samples above the estimator's ceiling, used as the ceiling. */
  clampedSamples: number;
  /** Bytes carried by the accepted samples. */
  bytes: number;
  decisions: number;
  /** Sum of the delays handed out, in ms. */
  delayedMs: number;
  /** Latency of the accepted samples. */
  latency: HistogramSummary;
  /** Ascending by queue depth. */
  queueDepth: DistributionEntry[];
  /** Ascending by block size. */
  blockSize: DistributionEntry[];
  /** `canary` only: the probes and the target they set. */
  probes?: {
    count: number;
    invalid: number;
    smoothedMs: number;
    targetMs: number;
    slowShare: number;
    /** Smoothed share of probes slower than tailFactor × targetMs (0 with the tail rule off). */
    tailShare: number;
    calibrations: number;
    boost: BoostReport;
  };
}

export interface ThrottleController {
  readonly name: ControllerName;
  /** The validated options in force. */
  readonly options: ResolvedThrottleOptions;
  /** The latency estimate (smoothed value and window percentiles), for progress and admission. */
  readonly latency: LatencyEstimator;
  observe(sample: LatencySample): void;
  /**
   * One completed probe: a small read of someone else's kind (4 KiB, one at a
   * time) issued beside the job, whose latency is what production's requests
   * see. Only `canary` acts on probes; the others ignore them.
   */
  observeProbe(sample: LatencySample): void;
  /** `canary`: the probes' smoothed latency and the latency that counts as harm, ns; others: undefined. */
  probeState(): { latencyNs: number; targetNs: number } | undefined;
  /** `canary`: whether it is boosted now (its checks find nobody else on the storage); others: false. */
  readonly boosted?: boolean;
  decide(): ThrottleDecision;
  report(): ThrottleReport;
}

/**
 * What an object storage has been given to write so far, for `canary`'s
 * quiet checks when the storage's server runs on this host (it writes what
 * the job uploads to some disk here, maybe the one the job protects).
 */
export interface RemoteWrites {
  /** Bytes of the write requests started so far (each once, however often retried). */
  readonly bytesStarted: number;
  /** Write requests started so far. */
  readonly requestsStarted: number;
  /** Bytes of the write requests started and not yet ended. */
  readonly bytesInFlight: number;
  /** Whether the server runs on this host: every address of its endpoint is a loopback address or one of this host's. */
  onThisHost(): Promise<boolean>;
}
