/**
 * The limits around the controllers:
 * - AdmissionGate: the admission limit (no new task starts on a storage while
 *   its latency is above it), the lower of the two limits;
 * - RateLimiter: a fixed cap in bytes per second (token bucket);
 * - autoTargetLatencyMs: the throttling limit derived from an idle probe.
 */
import { LowtideError } from '../errors.js';
import { invalidOption, numberOption } from '../options.js';
import { LatencyEstimator } from './estimator.js';
import { LatencyHistogram } from './histogram.js';

export interface AdmissionGateOptions {
  /** No new task starts while the storage's latency estimate is above this, ms. */
  admissionLimitMs: number;
}

/**
 * Answers whether a new task may start on a storage, given the storage's
 * current latency estimate. An unknown estimate (no samples yet: 0, or NaN,
 * negative, infinite) admits: there is no evidence of load, and refusing
 * would deadlock a job whose first task is what would produce the samples.
 */
export class AdmissionGate {
  readonly admissionLimitMs: number;

  constructor(options: AdmissionGateOptions) {
    this.admissionLimitMs =
      numberOption('admissionLimitMs', options?.admissionLimitMs, undefined, 0, 600_000, true) ??
      invalidOption('admissionLimitMs', 'a number greater than 0', undefined);
  }

  /**
   * `estimate` is a latency in ms, or an estimator whose smoothed latency is
   * used. True when a new task may start.
   */
  mayStart(estimate: number | LatencyEstimator): boolean {
    const ms = estimate instanceof LatencyEstimator ? estimate.smoothedNs / 1e6 : estimate;
    if (typeof ms !== 'number' || !Number.isFinite(ms) || ms <= 0) return true;
    return ms <= this.admissionLimitMs;
  }
}

export interface RateLimiterOptions {
  /** The cap, bytes per second. */
  bytesPerSecond: number;
  /**
   * Bytes that may go out at once after an idle spell (the bucket's size).
   * Default: 50 ms worth of the rate, at least 1 MiB.
   */
  burstBytes?: number | undefined;
}

/**
 * A token bucket: tokens accrue at `bytesPerSecond` up to `burstBytes`; a
 * block takes as many tokens as it has bytes. When the bucket does not hold
 * enough, the block still takes them (the balance goes negative) and the
 * caller waits until the balance is back to zero. Reserving ahead like this
 * keeps the long-run rate exactly at the cap even for blocks larger than the
 * bucket, and needs no timer: the caller passes the monotonic time.
 */
export class RateLimiter {
  readonly bytesPerSecond: number;
  readonly burstBytes: number;
  private tokens: number;
  private lastNs: number | undefined;

  constructor(options: RateLimiterOptions) {
    this.bytesPerSecond =
      numberOption('bytesPerSecond', options?.bytesPerSecond, undefined, 0, Number.MAX_VALUE, true) ??
      invalidOption('bytesPerSecond', 'a number greater than 0', undefined);
    const burstDefault = Math.max(1024 * 1024, this.bytesPerSecond * 0.05);
    this.burstBytes = numberOption('burstBytes', options.burstBytes, burstDefault, 0, Number.MAX_VALUE, true);
    this.tokens = this.burstBytes;
  }

  /**
   * Takes `bytes` at monotonic time `nowNs` and returns how long to wait
   * before sending them, in ms (0 when the bucket held enough). Garbage
   * (NaN, negative or infinite bytes) takes nothing; a time that runs back
   * counts as no time passing.
   */
  reserve(bytes: number, nowNs: number): number {
    if (typeof nowNs === 'number' && Number.isFinite(nowNs)) {
      if (this.lastNs === undefined) this.lastNs = nowNs;
      if (nowNs > this.lastNs) {
        this.tokens = Math.min(this.burstBytes, this.tokens + ((nowNs - this.lastNs) / 1e9) * this.bytesPerSecond);
        this.lastNs = nowNs;
      }
    }
    if (typeof bytes !== 'number' || !Number.isFinite(bytes) || bytes <= 0) return 0;
    this.tokens -= bytes;
    return this.tokens >= 0 ? 0 : (-this.tokens / this.bytesPerSecond) * 1e3;
  }
}

export interface AutoTargetOptions {
  /** Target = multiplier × idle median (default 1). */
  multiplier?: number | undefined;
  /**
   * A percentile of the probe used as a floor of the target (default none).
   * The probe is short (a few dozen reads), so a high percentile is its
   * largest sample: one stall of the device, or of whatever else shares it,
   * would set the target.
   */
  floorPercentile?: number | undefined;
  /** Lower bound, ms (default 0.25). */
  minMs?: number | undefined;
  /** Upper bound, ms (default 1000). */
  maxMs?: number | undefined;
}

/**
 * The throttling limit for `--latency-target auto`, from a short probe of the
 * storage: reads at queue depth 1 with the job's largest request size, their
 * latencies recorded into `probe`.
 *
 *     target = clamp(multiplier · p50, minMs, maxMs)        (multiplier 1)
 *
 * The median latency of one largest block, alone in the queue: a job held
 * there keeps about one request in flight and none waiting, so a production
 * request waits behind at most one of ours; on an idle device that is still
 * (nearly) full throughput for a single-queue device, and the window
 * controllers shrink requests below the largest size as soon as production's
 * own requests add to the latency. The median, not a tail percentile: the
 * probe runs beside production and is short (a p99 of 32 samples is their
 * maximum), so one stalled read sets a tail floor, and on a virtual disk that
 * floor can be 20 to 70 times the median (13 to 42 ms for a 0.6 ms median):
 * a target the job never reaches, as aggressive as no throttle at all.
 * `{ multiplier: 2, floorPercentile: 99 }` gives the rule max(2 · p50, p99).
 * The `threshold` controller, which never shrinks requests, may then sit at
 * its longest delay while production runs: a target at the largest block's
 * own median leaves it no room (its known weakness, see docs/throttle.md).
 */
export function autoTargetLatencyMs(probe: LatencyHistogram, options: AutoTargetOptions = {}): number {
  if (!(probe instanceof LatencyHistogram) || probe.count === 0) {
    throw new LowtideError('INVALID_ARGUMENT', 'probe: expected a LatencyHistogram with at least one sample');
  }
  const multiplier = numberOption('multiplier', options.multiplier, 1, 0, 1000, true);
  const floorPercentile = numberOption('floorPercentile', options.floorPercentile, 0, 0, 100);
  const minMs = numberOption('minMs', options.minMs, 0.25, 0, 600_000, true);
  const maxMs = numberOption('maxMs', options.maxMs, 1000, minMs, 600_000);
  const floor = floorPercentile > 0 ? probe.percentile(floorPercentile) : 0;
  const ms = Math.max(multiplier * probe.percentile(50), floor) / 1e6;
  return Math.min(maxMs, Math.max(minMs, ms));
}

/**
 * Bytes a job writing through the page cache lets pile up before it starts
 * their writeback when nothing paces it (EarlyWriteback; a throttled job
 * uses JobThrottle.writebackStepBytes).
 */
export const UNPACED_WRITEBACK_STEP_BYTES = 64 * 1024 * 1024;
