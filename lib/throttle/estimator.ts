/**
 * Per-sample latency estimation: an exponentially weighted moving average
 * (EWMA) and percentiles over a sliding window.
 *
 * Cost: observe() is O(1) (one EWMA step, one ring-buffer write). The window
 * percentiles are computed on demand by selection (quickselect) over at most
 * `windowSamples` values, O(windowSamples), and cached until the next sample,
 * so asking for them once per block costs a few microseconds.
 *
 * Garbage samples (the policy, in one place):
 * - NaN, ±Infinity, negative, zero, or not a number: ignored, counted in
 *   `invalid`. A block read cannot complete in zero time; a zero is a clock or
 *   bookkeeping error, not a fast device.
 * - Larger than `maxLatencyNs` (default 10 s): clamped to it and counted in
 *   `clamped`. A read that slow is a stalled device: the controllers must back
 *   off, but one absurd value (1e15 ns) must not dominate the EWMA for long.
 * - A completion time `atNs` that is missing, not finite, or earlier than the
 *   latest one seen is replaced by the latest one (the clock never runs back).
 */
import { numberOption } from '../options.js';
import { nearestRank } from './histogram.js';

export interface LatencyEstimatorOptions {
  /** EWMA weight of a new sample, 0 < alpha ≤ 1 (default 0.2: about the last 5 samples). */
  alpha?: number;
  /** Capacity of the sliding window in samples (default 512). */
  windowSamples?: number;
  /** Age limit of the sliding window in milliseconds (default 2000). */
  windowMs?: number;
  /** Samples above this are clamped to it (default 10 s = 1e10 ns). */
  maxLatencyNs?: number;
}

export const ESTIMATOR_DEFAULTS = {
  alpha: 0.2,
  windowSamples: 512,
  windowMs: 2000,
  maxLatencyNs: 10e9,
} as const;

/** Windowed percentiles in nanoseconds; all 0 when the window is empty. */
export interface WindowPercentiles {
  count: number;
  p50Ns: number;
  p95Ns: number;
  p99Ns: number;
}

/** What observe() did with a sample. */
export type SampleVerdict = 'ok' | 'clamped' | 'invalid';

/**
 * Returns the latency to use for a raw sample, or undefined for garbage.
 * Shared by the estimator and the controllers so that both apply one policy.
 */
export function sanitizeLatencyNs(latencyNs: unknown, maxLatencyNs: number): number | undefined {
  if (typeof latencyNs !== 'number' || !Number.isFinite(latencyNs) || latencyNs <= 0) return undefined;
  return latencyNs > maxLatencyNs ? maxLatencyNs : latencyNs;
}

export class LatencyEstimator {
  readonly alpha: number;
  readonly windowSamples: number;
  readonly windowNs: number;
  readonly maxLatencyNs: number;

  private ewma = 0;
  private lastValue = 0;
  private latestAtNs = 0;
  private n = 0;
  private invalidCount = 0;
  private clampedCount = 0;

  // Ring buffer of the last `windowSamples` accepted samples.
  private readonly values: Float64Array;
  private readonly times: Float64Array;
  private head = 0; // next write position
  private filled = 0; // valid entries (≤ windowSamples)

  // Scratch space for selection, and the cached result.
  private readonly scratch: Float64Array;
  private cached: WindowPercentiles | undefined;
  private cachedMedian: { k: number; ns: number } | undefined;

  constructor(options: LatencyEstimatorOptions = {}) {
    this.alpha = numberOption('estimator.alpha', options.alpha, ESTIMATOR_DEFAULTS.alpha, 0, 1, true);
    const samples = numberOption(
      'estimator.windowSamples',
      options.windowSamples,
      ESTIMATOR_DEFAULTS.windowSamples,
      1,
      1 << 20,
    );
    this.windowSamples = Math.floor(samples);
    this.windowNs =
      numberOption('estimator.windowMs', options.windowMs, ESTIMATOR_DEFAULTS.windowMs, 0, Number.MAX_VALUE, true) *
      1e6;
    this.maxLatencyNs = numberOption(
      'estimator.maxLatencyNs',
      options.maxLatencyNs,
      ESTIMATOR_DEFAULTS.maxLatencyNs,
      0,
      Number.MAX_VALUE,
      true,
    );
    this.values = new Float64Array(this.windowSamples);
    this.times = new Float64Array(this.windowSamples);
    this.scratch = new Float64Array(this.windowSamples);
  }

  /** Feeds one sample. `atNs` is its monotonic completion time. O(1). */
  observe(latencyNs: number, atNs?: number): SampleVerdict {
    const v = sanitizeLatencyNs(latencyNs, this.maxLatencyNs);
    if (v === undefined) {
      this.invalidCount++;
      return 'invalid';
    }
    const verdict: SampleVerdict = v < latencyNs ? 'clamped' : 'ok';
    if (verdict === 'clamped') this.clampedCount++;
    if (typeof atNs === 'number' && Number.isFinite(atNs) && atNs > this.latestAtNs) this.latestAtNs = atNs;

    // EWMA: s ← s + α(v − s); the first sample initialises it.
    this.ewma = this.n === 0 ? v : this.ewma + this.alpha * (v - this.ewma);
    this.lastValue = v;
    this.n++;

    this.values[this.head] = v;
    this.times[this.head] = this.latestAtNs;
    this.head = (this.head + 1) % this.windowSamples;
    if (this.filled < this.windowSamples) this.filled++;
    this.cached = undefined;
    this.cachedMedian = undefined;
    return verdict;
  }

  /** Accepted samples so far (clamped ones included). */
  get count(): number {
    return this.n;
  }
  get invalid(): number {
    return this.invalidCount;
  }
  get clamped(): number {
    return this.clampedCount;
  }
  /** EWMA of the accepted samples in ns; 0 before the first one. */
  get smoothedNs(): number {
    return this.ewma;
  }
  /** The last accepted sample in ns; 0 before the first one. */
  get lastNs(): number {
    return this.lastValue;
  }
  /** The latest completion time seen (ns). */
  get nowNs(): number {
    return this.latestAtNs;
  }

  /**
   * Median of the last `k` accepted samples (at most the window's capacity),
   * whatever their age; 0 before the first one. O(k). Unlike percentiles(),
   * a gap in time (the process stopped, then the samples in flight all
   * complete late) does not empty the window down to the late samples.
   */
  recentMedianNs(k = 9): number {
    const m = Math.min(Math.max(1, Math.floor(k)), this.filled);
    if (m === 0) return 0;
    // Asked for on every paced decision (each block and probe): cached until the next sample.
    if (this.cachedMedian?.k === m) return this.cachedMedian.ns;
    const a = this.scratch.subarray(0, m);
    for (let i = 0; i < m; i++) a[i] = this.values[(this.head - 1 - i + this.windowSamples) % this.windowSamples]!;
    a.sort();
    this.cachedMedian = { k: m, ns: a[(m - 1) >> 1]! };
    return this.cachedMedian.ns;
  }

  /**
   * p50/p95/p99 of the samples in the window: the last `windowSamples`
   * samples that completed at most `windowMs` before the latest one.
   */
  percentiles(): WindowPercentiles {
    if (this.cached) return this.cached;
    // Copy the samples young enough into the scratch buffer.
    const oldest = this.latestAtNs - this.windowNs;
    let m = 0;
    for (let i = 0; i < this.filled; i++) {
      if (this.times[i]! >= oldest) this.scratch[m++] = this.values[i]!;
    }
    if (m === 0) {
      this.cached = { count: 0, p50Ns: 0, p95Ns: 0, p99Ns: 0 };
      return this.cached;
    }
    // Select the largest rank first; the smaller ranks then lie in the
    // left part, so each later selection works on a shorter range.
    const k99 = nearestRank(99, m) - 1;
    const k95 = nearestRank(95, m) - 1;
    const k50 = nearestRank(50, m) - 1;
    select(this.scratch, 0, m - 1, k99);
    select(this.scratch, 0, k99, k95);
    select(this.scratch, 0, k95, k50);
    this.cached = { count: m, p50Ns: this.scratch[k50]!, p95Ns: this.scratch[k95]!, p99Ns: this.scratch[k99]! };
    return this.cached;
  }
}

/**
 * Quickselect: rearranges a[lo..hi] so that a[k] holds the value it would
 * have if the range were sorted, smaller-or-equal values before it and
 * greater-or-equal after. Median-of-three pivot; deterministic; O(n) average.
 */
function select(a: Float64Array, lo: number, hi: number, k: number): void {
  while (hi > lo) {
    const mid = lo + ((hi - lo) >> 1);
    // Order a[lo], a[mid], a[hi] and use the median as the pivot.
    if (a[mid]! < a[lo]!) swap(a, mid, lo);
    if (a[hi]! < a[lo]!) swap(a, hi, lo);
    if (a[hi]! < a[mid]!) swap(a, hi, mid);
    const pivot = a[mid]!;
    // Hoare partition.
    let i = lo;
    let j = hi;
    while (i <= j) {
      while (a[i]! < pivot) i++;
      while (a[j]! > pivot) j--;
      if (i <= j) {
        swap(a, i, j);
        i++;
        j--;
      }
    }
    // Now a[lo..j] ≤ pivot ≤ a[i..hi], and a[j+1..i-1] == pivot.
    if (k <= j) hi = j;
    else if (k >= i) lo = i;
    else return;
  }
}

function swap(a: Float64Array, i: number, j: number): void {
  const t = a[i]!;
  a[i] = a[j]!;
  a[j] = t;
}
