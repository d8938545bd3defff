/**
 * A fixed-size log-linear latency histogram over nanoseconds.
 *
 * Layout (HDR-style): values below 256 ns get one bucket per nanosecond.
 * Above that, every power of two [2^e, 2^(e+1)) is split into 128 equal
 * buckets of width 2^(e-7). A bucket is therefore at most 1/128 (0.78 %) of
 * the smallest value it holds, and reporting its midpoint is off by at most
 * half of that (0.39 %). The top octave is [2^36, 2^37) ns, so the range ends
 * at about 137 s; larger samples are clamped into the top bucket and counted
 * in `clamped`.
 *
 * Memory is one Float64Array of 3968 counters, whatever the number of
 * samples (Float64 counts stay exact up to 2^53 samples).
 */
import { invalidOption } from '../options.js';

/** Buckets per octave above the linear region: 2^SUB_BITS. */
const SUB_BITS = 7;
const SUB_COUNT = 1 << SUB_BITS; // 128
/** Values below this get one bucket per nanosecond. */
const LINEAR_LIMIT = SUB_COUNT * 2; // 256 = 2^8
const FIRST_EXP = SUB_BITS + 1; // 8: the first log-bucketed octave is [2^8, 2^9)
const LAST_EXP = 36; // the last octave is [2^36, 2^37)
const BUCKET_COUNT = LINEAR_LIMIT + (LAST_EXP - FIRST_EXP + 1) * SUB_COUNT; // 3968
const TWO_POW_32 = 2 ** 32;

/** The largest value the histogram keeps exactly in range (2^37 − 1 ns ≈ 137 s). */
export const HISTOGRAM_MAX_NS = 2 ** (LAST_EXP + 1) - 1;

/** The relative error bound of a reported percentile (half a bucket width). */
export const HISTOGRAM_RELATIVE_ERROR = 1 / (2 * SUB_COUNT);

/** floor(log2(v)) for an integer 1 ≤ v < 2^53, exact (no Math.log2 rounding). */
function floorLog2(v: number): number {
  if (v < TWO_POW_32) return 31 - Math.clz32(v);
  return 63 - Math.clz32(Math.floor(v / TWO_POW_32));
}

/** Bucket index of an integer value 0 ≤ v ≤ HISTOGRAM_MAX_NS. */
function bucketOf(v: number): number {
  if (v < LINEAR_LIMIT) return v;
  const e = floorLog2(v); // FIRST_EXP..LAST_EXP
  const sub = Math.floor(v / 2 ** (e - SUB_BITS)); // SUB_COUNT..2*SUB_COUNT-1
  return LINEAR_LIMIT + (e - FIRST_EXP) * SUB_COUNT + (sub - SUB_COUNT);
}

/** Lowest value and width of bucket `i`. */
function bucketBounds(i: number): { low: number; width: number } {
  if (i < LINEAR_LIMIT) return { low: i, width: 1 };
  const j = i - LINEAR_LIMIT;
  const e = FIRST_EXP + Math.floor(j / SUB_COUNT);
  const width = 2 ** (e - SUB_BITS);
  return { low: (SUB_COUNT + (j % SUB_COUNT)) * width, width };
}

/**
 * Nearest-rank position (1-based) of percentile `p` among `n` values:
 * the smallest rank r with r ≥ p/100 · n. The tiny epsilon keeps floating
 * point noise (99.9 · 1000 = 99900.00000000001) from skipping a rank.
 */
export function nearestRank(p: number, n: number): number {
  const r = Math.ceil((p * n) / 100 - 1e-9);
  return Math.min(n, Math.max(1, r));
}

/** Summary of a histogram in milliseconds, as written to reports. */
export interface HistogramSummary {
  count: number;
  invalid: number;
  clamped: number;
  minMs: number;
  p50Ms: number;
  p90Ms: number;
  p95Ms: number;
  p99Ms: number;
  p999Ms: number;
  maxMs: number;
  meanMs: number;
}

function checkPercentile(p: number): number {
  if (typeof p !== 'number' || Number.isNaN(p)) {
    invalidOption('percentile', 'a number from 0 to 100', p);
  }
  return Math.min(100, Math.max(0, p));
}

export class LatencyHistogram {
  private readonly counts = new Float64Array(BUCKET_COUNT);
  private n = 0;
  private sum = 0;
  private lo = Infinity;
  private hi = -Infinity;
  private invalidCount = 0;
  private clampedCount = 0;

  /**
   * Records one latency in nanoseconds. NaN, ±Infinity and negative values
   * are not recorded and count as `invalid`; values above HISTOGRAM_MAX_NS
   * are recorded as HISTOGRAM_MAX_NS and count as `clamped`. O(1).
   */
  record(latencyNs: number): void {
    if (typeof latencyNs !== 'number' || !Number.isFinite(latencyNs) || latencyNs < 0) {
      this.invalidCount++;
      return;
    }
    let v = latencyNs;
    if (v > HISTOGRAM_MAX_NS) {
      v = HISTOGRAM_MAX_NS;
      this.clampedCount++;
    }
    this.counts[bucketOf(Math.floor(v))]! += 1;
    this.n++;
    this.sum += v;
    if (v < this.lo) this.lo = v;
    if (v > this.hi) this.hi = v;
  }

  /** Number of recorded (valid) samples. */
  get count(): number {
    return this.n;
  }
  /** Samples refused because they were NaN, infinite or negative. */
  get invalid(): number {
    return this.invalidCount;
  }
  /** Samples larger than the range, recorded as HISTOGRAM_MAX_NS. */
  get clamped(): number {
    return this.clampedCount;
  }
  /** Smallest recorded value (exact), 0 when empty. */
  get min(): number {
    return this.n === 0 ? 0 : this.lo;
  }
  /** Largest recorded value (exact after clamping), 0 when empty. */
  get max(): number {
    return this.n === 0 ? 0 : this.hi;
  }
  /** Exact mean of the recorded values, 0 when empty. */
  get mean(): number {
    return this.n === 0 ? 0 : this.sum / this.n;
  }

  /**
   * The nearest-rank percentile `p` (0..100) in nanoseconds, within
   * HISTOGRAM_RELATIVE_ERROR of the exact value; 0 when empty.
   * percentile(0) is the exact minimum and percentile(100) the exact maximum.
   */
  percentile(p: number): number {
    const q = checkPercentile(p);
    if (this.n === 0) return 0;
    const rank = nearestRank(q, this.n);
    if (rank === 1) return this.lo;
    if (rank === this.n) return this.hi;
    let seen = 0;
    for (let i = 0; i < BUCKET_COUNT; i++) {
      seen += this.counts[i]!;
      if (seen >= rank) {
        const { low, width } = bucketBounds(i);
        // The midpoint halves the worst-case error; min/max are known exactly.
        return Math.min(this.hi, Math.max(this.lo, low + width / 2));
      }
    }
    return this.hi; // unreachable: the counts add up to n
  }

  /** Adds every sample of `other` into this histogram. */
  merge(other: LatencyHistogram): this {
    for (let i = 0; i < BUCKET_COUNT; i++) this.counts[i]! += other.counts[i]!;
    this.n += other.n;
    this.sum += other.sum;
    this.lo = Math.min(this.lo, other.lo);
    this.hi = Math.max(this.hi, other.hi);
    this.invalidCount += other.invalidCount;
    this.clampedCount += other.clampedCount;
    return this;
  }

  /** Forgets every sample. */
  reset(): void {
    this.counts.fill(0);
    this.n = 0;
    this.sum = 0;
    this.lo = Infinity;
    this.hi = -Infinity;
    this.invalidCount = 0;
    this.clampedCount = 0;
  }

  /** Percentiles, extremes and mean in milliseconds (all 0 when empty). */
  toJSON(): HistogramSummary {
    const ms = (ns: number): number => ns / 1e6;
    return {
      count: this.n,
      invalid: this.invalidCount,
      clamped: this.clampedCount,
      minMs: ms(this.min),
      p50Ms: ms(this.percentile(50)),
      p90Ms: ms(this.percentile(90)),
      p95Ms: ms(this.percentile(95)),
      p99Ms: ms(this.percentile(99)),
      p999Ms: ms(this.percentile(99.9)),
      maxMs: ms(this.max),
      meanMs: ms(this.mean),
    };
  }
}
