/**
 * The `canary`'s calibrations: where its harm latency H comes from.
 *
 * Now and then the canary pauses its own blocks; the probes that complete
 * once the blocks in flight have drained are idle ones, and their
 * `quantile` (the p90 by default) times `factor` is one calibration's H.
 * H in force is the lowest of the last `calibrationsKept` calibrations:
 * whatever disturbs a calibration (blocks not quite drained, the storage
 * still busy with them, a place read cold) makes it slower, never faster.
 * With H goes the share of that calibration's idle probes slower than H:
 * the share of slow probes the window rule allows the job.
 */

/** One calibration: the harm latency it gives and the share of its idle probes slower than that. */
export interface Calibration {
  harmNs: number;
  slowShare: number;
}

export interface CalibrationOptions {
  /** False: H stays where it started (a fixed target) and no calibration is ever due. */
  calibrate: boolean;
  factor: number;
  quantile: number;
  /** Idle probes that complete a calibration. */
  calibrationProbes: number;
  calibrationsKept: number;
  calibrateEveryMs: number;
  /** Longest pause of one calibration, ms. */
  pauseMs: number;
  /** Time between calibrations until `calibrationsKept` were taken, ms (at most calibrateEveryMs). */
  earlyEveryMs: number;
}

/**
 * Idle probes a calibration needs to count: a quantile q needs a few samples
 * beyond it, 3 / (1 − q) (30 for the p90), at least 8, and no more than a
 * calibration collects.
 */
export function probesNeeded(calibrationProbes: number, quantile: number): number {
  return Math.max(8, Math.min(calibrationProbes, 3 / (1 - quantile)));
}

/** The calibration from idle probe latencies: H = factor × their quantile (nearest rank). */
export function calibrate(idleNs: readonly number[], factor: number, quantile: number): Calibration {
  const sorted = [...idleNs].sort((a, b) => a - b);
  const harmNs = factor * sorted[Math.min(sorted.length - 1, Math.floor(quantile * sorted.length))]!;
  return { harmNs, slowShare: sorted.filter((x) => x > harmNs).length / sorted.length };
}

/** The calibration in force among the kept ones: the lowest H (a disturbed calibration is only ever slower). */
export function lowestCalibration(kept: readonly Calibration[]): Calibration {
  return kept.reduce((a, b) => (b.harmNs < a.harmNs ? b : a));
}

/** The canary's calibration state: when the next is due, the idle probes of the one under way, the kept ones. */
export class HarmCalibration {
  readonly #o: CalibrationOptions;
  #harmNs: number;
  #idleSlowShare = 0;
  #count = 0;
  #nextNs: number | undefined;
  #idle: number[] = [];
  readonly #kept: Calibration[] = [];

  /** `harmNs`: H until a calibration says otherwise (and for good with calibrate off). */
  constructor(options: CalibrationOptions, harmNs: number) {
    this.#o = options;
    this.#harmNs = harmNs;
  }

  /** The harm latency in force, ns. */
  get harmNs(): number {
    return this.#harmNs;
  }

  /** Share of idle probes slower than `harmNs`, in the calibration it came from (0 until one). */
  get idleSlowShare(): number {
    return this.#idleSlowShare;
  }

  /** Calibrations that counted (had enough idle probes). */
  get count(): number {
    return this.#count;
  }

  /**
   * Whether a calibration is due at `nowNs`. The first is due at the first
   * call: before the job's first blocks are out, the pause costs nothing.
   */
  due(nowNs: number): boolean {
    if (!this.#o.calibrate) return false;
    this.#nextNs ??= nowNs;
    return nowNs >= this.#nextNs;
  }

  /** A calibration pause begins. */
  begin(): void {
    this.#idle = [];
  }

  /**
   * Time after the pause began from which probes count as idle: twice the
   * job's smoothed latency (its blocks in flight have drained), at least
   * 10 ms, at most half the pause.
   */
  settleNs(jobSmoothedNs: number): number {
    return Math.min(Math.max(2 * jobSmoothedNs, 10e6), (this.#o.pauseMs * 1e6) / 2);
  }

  addIdle(latencyNs: number): void {
    this.#idle.push(latencyNs);
  }

  /** Enough idle probes, or the longest pause over. */
  done(elapsedNs: number): boolean {
    return this.#idle.length >= this.#o.calibrationProbes || elapsedNs >= this.#o.pauseMs * 1e6;
  }

  /**
   * The pause ended at `nowNs`: with enough idle probes, a new calibration is
   * kept and H becomes the lowest kept one (with too few, H stays). The first
   * `calibrationsKept` come `earlyEveryMs` apart: the one at the start is the
   * likeliest to be disturbed, and the lowest of the kept ones is only a
   * check on it once there are several. Then one every `calibrateEveryMs`.
   */
  finish(nowNs: number): void {
    const o = this.#o;
    if (this.#idle.length >= probesNeeded(o.calibrationProbes, o.quantile)) {
      this.#kept.push(calibrate(this.#idle, o.factor, o.quantile));
      if (this.#kept.length > o.calibrationsKept) this.#kept.shift();
      const best = lowestCalibration(this.#kept);
      this.#harmNs = best.harmNs;
      this.#idleSlowShare = best.slowShare;
      this.#count++;
    }
    const everyMs =
      this.#kept.length < o.calibrationsKept ? Math.min(o.earlyEveryMs, o.calibrateEveryMs) : o.calibrateEveryMs;
    this.#nextNs = nowNs + everyMs * 1e6;
    this.#idle = [];
  }
}
