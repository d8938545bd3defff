/**
 * Throttling controllers: latency samples in; delay before the next block,
 * queue depth and request size out. The control laws are documented in
 * docs/throttle.md; the comments here say how the code follows them.
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
import { booleanOption, choiceOption, integerOption, invalidOption, numberOption, objectOption } from '../options.js';
import { LatencyEstimator, type LatencyEstimatorOptions } from './estimator.js';
import { LatencyHistogram, type HistogramSummary } from './histogram.js';

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
   * while its own blocks are drained (see the quiet checks in docs/throttle.md).
   */
  deviceIos?: number;
  /**
   * Probes only, optional: the writes alone among `deviceIos`, given only
   * when the job itself does not write to that storage. While boosted,
   * `canary` ends the boost at the first write it did not make.
   */
  deviceWrites?: number;
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
    /** Quiet checks (and calibrations) that counted the storage's I/O; how many found it in use by others; time boosted, ms. */
    boost: { checks: number; busy: number; endedByWrites: number; boostedMs: number; enabled: boolean; deviceCounters: boolean };
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
  decide(): ThrottleDecision;
  report(): ThrottleReport;
}

export const CONTROLLER_NAMES = ['canary', 'threshold', 'aimd', 'parda', 'off'] as const;
export type ControllerName = (typeof CONTROLLER_NAMES)[number];
/** The controller used when none is named (see docs/throttle.md for why). */
export const DEFAULT_CONTROLLER: ControllerName = 'canary';

export interface ThrottleOptions {
  /** Latency the controller aims for (throttling limit), ms. Default 20. */
  targetLatencyMs?: number;
  /** Default 1. */
  minQueueDepth?: number;
  /** Default 32. */
  maxQueueDepth?: number;
  /** Default min(64 KiB, maxBlockSize). */
  minBlockSize?: number;
  /** Default max(1 MiB, minBlockSize). */
  maxBlockSize?: number;
  /** Block sizes stay multiples of this (the source's sector size). Default 4096. */
  alignment?: number;
  /** Upper bound of any delay, ms. Default 500. */
  maxDelayMs?: number;
  estimator?: LatencyEstimatorOptions;
  threshold?: {
    /** kp: the delay is multiplied by exp(kp · throttling value) (default 0.5). */
    gain?: number;
    /** ki: ln(delay) grows by ki per round trip spent at twice the target (default 0.25). */
    integralGain?: number;
  };
  aimd?: {
    /** Window factor on a round above target (default 0.5). */
    decreaseFactor?: number;
    /** Bytes added per round below target while blocks are shrunk (default minBlockSize). */
    increaseBytes?: number;
  };
  parda?: {
    /** Smoothing γ of the window rule (default 0.5). */
    gamma?: number;
    /** β of the window rule, bytes (default minBlockSize / 4). */
    betaBytes?: number;
  };
  canary?: {
    /**
     * Recalibrate: pause now and then, measure the probes' idle latency and
     * set the target to `factor` times it (default true). False keeps
     * targetLatencyMs for the whole job.
     */
    calibrate?: boolean;
    /**
     * The probe latency that counts as harm: factor × the idle probes'
     * `quantile` (default 1 × the 90th percentile). The window rule keeps the share
     * of probes slower than that at its idle level.
     */
    factor?: number;
    /** Default 0.9. */
    quantile?: number;
    /** Probes per round of the window rule (default 16). */
    probesPerRound?: number;
    /** Time between calibration pauses, ms (default 10000). */
    calibrateEveryMs?: number;
    /** Longest calibration pause, ms (default 300). */
    pauseMs?: number;
    /** Idle probes a calibration needs (default 48). */
    calibrationProbes?: number;
    /**
     * Calibrations the harm latency is taken from (default 3): the lowest of
     * their `quantile`s. Anything that disturbs a calibration (our own I/O
     * not yet drained, a probe place read cold) only makes it slower, so the
     * lowest of the last few is the one to trust; 1 keeps the last alone.
     */
    calibrationsKept?: number;
    /**
     * The tail rule: a probe slower than `tailFactor` × the harm latency is a
     * tail probe, and the window also shrinks while more than `tailShare` of
     * the probes are (defaults 2 and 0.02; tailFactor 0 turns it off).
     * Production's bound is on its p99: the share above the idle p90 alone
     * can stay at its idle level while the slowest few percent grow.
     */
    tailFactor?: number;
    tailShare?: number;
    /**
     * Go faster while nobody else uses the storage (default true): when a
     * quiet check (our blocks drained for a few ms) sees no I/O on the
     * storage but the probes', run `boostQueueDepth` largest blocks until the
     * next check finds someone. Needs probes that carry `deviceIos`.
     */
    boost?: boolean;
    /**
     * Quiet checks in a row that start a boost (default 2; the second
     * `boostCheckEveryMs` after the first): one 200 ms window without
     * foreign I/O happens to a light load too (1 in 55 at 20 requests per
     * second), and a boost that meets it costs that load its p99.
     */
    boostQuietChecks?: number;
    /** Largest blocks in flight while boosted (default 4). */
    boostQueueDepth?: number;
    /** Time between quiet checks while boosted, ms (default 50). */
    boostCheckEveryMs?: number;
    /** Time between quiet checks while not boosted, ms (default 500). */
    checkEveryMs?: number;
    /**
     * When a boost ends (someone else is back), go on from the window the
     * last check that found someone else had (default true), not from the
     * window grown while the storage was quiet before the boost began.
     */
    resumeBusyWindow?: boolean;
    /**
     * β of the canary's window rule, bytes (default 4 KiB, whatever the
     * smallest request). It is also the floor: however slow the probes, the
     * rule (r ≥ ¼) keeps W at β / (1 − ¼) or more, and paced blocks then run
     * at that window over their latency (5.3 KiB / 0.2 ms: ~27 MB/s).
     */
    betaBytes?: number;
  };
}

export interface ResolvedThrottleOptions {
  targetLatencyMs: number;
  minQueueDepth: number;
  maxQueueDepth: number;
  minBlockSize: number;
  maxBlockSize: number;
  alignment: number;
  maxDelayMs: number;
  estimator: LatencyEstimatorOptions;
  threshold: { gain: number; integralGain: number };
  aimd: { decreaseFactor: number; increaseBytes: number };
  parda: { gamma: number; betaBytes: number };
  canary: {
    calibrate: boolean;
    factor: number;
    quantile: number;
    probesPerRound: number;
    calibrateEveryMs: number;
    pauseMs: number;
    calibrationProbes: number;
    calibrationsKept: number;
    tailFactor: number;
    tailShare: number;
    boost: boolean;
    boostQuietChecks: number;
    boostQueueDepth: number;
    boostCheckEveryMs: number;
    checkEveryMs: number;
    betaBytes: number;
    resumeBusyWindow: boolean;
  };
}

export const THROTTLE_DEFAULTS = {
  targetLatencyMs: 20,
  minQueueDepth: 1,
  maxQueueDepth: 32,
  minBlockSize: 64 * 1024,
  maxBlockSize: 1024 * 1024,
  alignment: 4096,
  maxDelayMs: 500,
  thresholdGain: 0.5,
  thresholdIntegralGain: 0.25,
  aimdDecreaseFactor: 0.5,
  pardaGamma: 0.5,
  // The idle probes' p90: bench:impact, 6 runs each in one run
  // (impact-2026-11-26T11-54-03-764Z): phased 1.35x against 1.59x with
  // 1.25 x the median, steady 1.39x against 1.42x, at 365 and 195 MB/s
  // against 422 and 235.
  canaryFactor: 1,
  canaryQuantile: 0.9,
  canaryProbesPerRound: 16,
  canaryCalibrateEveryMs: 10_000,
  canaryPauseMs: 300,
  canaryCalibrationProbes: 48,
  canaryCalibrationsKept: 3,
  /** Until `calibrationsKept` calibrations were taken, the next one is this soon (ms). */
  canaryEarlyCalibrationMs: 1000,
  canaryTailFactor: 2,
  canaryTailShare: 0.02,
  canaryBoostQuietChecks: 2,
  canaryBoostQueueDepth: 4,
  canaryBoostCheckEveryMs: 50,
  canaryCheckEveryMs: 500,
  canaryBetaBytes: 4 * 1024,
  /** Quiet a check must see to start boosting, and to stay boosted, ms. */
  canaryEnterQuietMs: 200,
  canaryStayQuietMs: 10,
} as const;

/** Largest values accepted, matching the block reader's own limits. */
const MAX_QUEUE_DEPTH = 1024;
const MAX_BLOCK_SIZE = 64 * 1024 * 1024;

/** Validates `options` and fills in the defaults. Throws LowtideError INVALID_ARGUMENT. */
export function resolveThrottleOptions(options: ThrottleOptions = {}): ResolvedThrottleOptions {
  const o = objectOption('throttle options', options) as ThrottleOptions;
  const targetLatencyMs = numberOption('targetLatencyMs', o.targetLatencyMs, THROTTLE_DEFAULTS.targetLatencyMs, 0, 600_000, true);
  const maxDelayMs = numberOption('maxDelayMs', o.maxDelayMs, THROTTLE_DEFAULTS.maxDelayMs, 0, 600_000);
  const alignment = integerOption('alignment', o.alignment, THROTTLE_DEFAULTS.alignment, 1, MAX_BLOCK_SIZE);

  const minQueueDepth = integerOption(
    'minQueueDepth',
    o.minQueueDepth,
    Math.min(THROTTLE_DEFAULTS.minQueueDepth, typeof o.maxQueueDepth === 'number' ? o.maxQueueDepth : Infinity),
    1,
    MAX_QUEUE_DEPTH,
  );
  const maxQueueDepth = integerOption(
    'maxQueueDepth',
    o.maxQueueDepth,
    Math.max(THROTTLE_DEFAULTS.maxQueueDepth, minQueueDepth),
    minQueueDepth,
    MAX_QUEUE_DEPTH,
  );

  const blockSize = (name: string, value: unknown, fallback: number, min: number): number => {
    const v = integerOption(name, value, fallback, min, MAX_BLOCK_SIZE);
    if (v % alignment !== 0) invalidOption(name, `a multiple of alignment (${alignment} bytes)`, v);
    return v;
  };
  // Each default adapts to the other bound when only one is given, and to
  // the alignment (rounded up to a multiple of it).
  const alignUp = (v: number): number => Math.ceil(v / alignment) * alignment;
  const minDefault = Math.min(
    alignUp(THROTTLE_DEFAULTS.minBlockSize),
    typeof o.maxBlockSize === 'number' ? o.maxBlockSize : Infinity,
  );
  const minBlockSize = blockSize('minBlockSize', o.minBlockSize, minDefault, 1);
  const maxBlockSize = blockSize(
    'maxBlockSize',
    o.maxBlockSize,
    Math.max(alignUp(THROTTLE_DEFAULTS.maxBlockSize), minBlockSize),
    minBlockSize,
  );

  const th = objectOption('threshold', o.threshold);
  const ai = objectOption('aimd', o.aimd);
  const pa = objectOption('parda', o.parda);
  const ca = objectOption('canary', o.canary);
  return {
    targetLatencyMs,
    minQueueDepth,
    maxQueueDepth,
    minBlockSize,
    maxBlockSize,
    alignment,
    maxDelayMs,
    estimator: objectOption('estimator', o.estimator) as LatencyEstimatorOptions,
    threshold: {
      gain: numberOption('threshold.gain', th.gain, THROTTLE_DEFAULTS.thresholdGain, 0, 100),
      integralGain: numberOption(
        'threshold.integralGain',
        th.integralGain,
        THROTTLE_DEFAULTS.thresholdIntegralGain,
        0,
        100,
      ),
    },
    aimd: {
      decreaseFactor: numberOption(
        'aimd.decreaseFactor',
        ai.decreaseFactor,
        THROTTLE_DEFAULTS.aimdDecreaseFactor,
        0,
        1,
        true,
      ),
      increaseBytes: numberOption('aimd.increaseBytes', ai.increaseBytes, minBlockSize, 0, MAX_BLOCK_SIZE, true),
    },
    parda: {
      gamma: numberOption('parda.gamma', pa.gamma, THROTTLE_DEFAULTS.pardaGamma, 0, 1, true),
      betaBytes: numberOption('parda.betaBytes', pa.betaBytes, minBlockSize / 4, 0, MAX_BLOCK_SIZE, true),
    },
    canary: {
      calibrate: booleanOption('canary.calibrate', ca.calibrate, true),
      factor: numberOption('canary.factor', ca.factor, THROTTLE_DEFAULTS.canaryFactor, 1, 100),
      quantile: numberOption('canary.quantile', ca.quantile, THROTTLE_DEFAULTS.canaryQuantile, 0.5, 0.999),
      probesPerRound: integerOption('canary.probesPerRound', ca.probesPerRound, THROTTLE_DEFAULTS.canaryProbesPerRound, 1, 10_000),
      calibrateEveryMs: numberOption('canary.calibrateEveryMs', ca.calibrateEveryMs, THROTTLE_DEFAULTS.canaryCalibrateEveryMs, 0, 86_400_000, true),
      pauseMs: numberOption('canary.pauseMs', ca.pauseMs, THROTTLE_DEFAULTS.canaryPauseMs, 0, 60_000, true),
      calibrationProbes: integerOption('canary.calibrationProbes', ca.calibrationProbes, THROTTLE_DEFAULTS.canaryCalibrationProbes, 1, 10_000),
      calibrationsKept: integerOption('canary.calibrationsKept', ca.calibrationsKept, THROTTLE_DEFAULTS.canaryCalibrationsKept, 1, 100),
      tailFactor:
        ca.tailFactor === 0 || ca.tailFactor === undefined || (typeof ca.tailFactor === 'number' && ca.tailFactor >= 1 && ca.tailFactor <= 100)
          ? (ca.tailFactor ?? THROTTLE_DEFAULTS.canaryTailFactor)
          : invalidOption('canary.tailFactor', '0 (off) or a number from 1 up to 100', ca.tailFactor),
      tailShare: numberOption('canary.tailShare', ca.tailShare, THROTTLE_DEFAULTS.canaryTailShare, 0.001, 0.5),
      boost: booleanOption('canary.boost', ca.boost, true),
      boostQuietChecks: integerOption('canary.boostQuietChecks', ca.boostQuietChecks, THROTTLE_DEFAULTS.canaryBoostQuietChecks, 1, 100),
      boostQueueDepth: integerOption('canary.boostQueueDepth', ca.boostQueueDepth, THROTTLE_DEFAULTS.canaryBoostQueueDepth, 1, MAX_QUEUE_DEPTH),
      boostCheckEveryMs: numberOption('canary.boostCheckEveryMs', ca.boostCheckEveryMs, THROTTLE_DEFAULTS.canaryBoostCheckEveryMs, 1, 60_000),
      checkEveryMs: numberOption('canary.checkEveryMs', ca.checkEveryMs, THROTTLE_DEFAULTS.canaryCheckEveryMs, 1, 86_400_000),
      betaBytes: numberOption('canary.betaBytes', ca.betaBytes, THROTTLE_DEFAULTS.canaryBetaBytes, 0, MAX_BLOCK_SIZE, true),
      resumeBusyWindow: booleanOption('canary.resumeBusyWindow', ca.resumeBusyWindow, true),
    },
  };
}

function clamp(v: number, lo: number, hi: number): number {
  return v < lo ? lo : v > hi ? hi : v;
}

/**
 * Puts a decision inside the bounds. A non-finite value can only come from a
 * bug, and is replaced by the most cautious choice (longest delay, smallest
 * queue depth and request).
 */
export function boundDecision(d: ThrottleDecision, o: ResolvedThrottleOptions): ThrottleDecision {
  const delayMs = Number.isFinite(d.delayMs) ? clamp(d.delayMs, 0, o.maxDelayMs) : o.maxDelayMs;
  const queueDepth = Number.isFinite(d.queueDepth)
    ? clamp(Math.round(d.queueDepth), o.minQueueDepth, o.maxQueueDepth)
    : o.minQueueDepth;
  const blockSize = Number.isFinite(d.blockSize)
    ? clamp(Math.floor(d.blockSize / o.alignment) * o.alignment, o.minBlockSize, o.maxBlockSize)
    : o.minBlockSize;
  return { delayMs, queueDepth, blockSize };
}

interface DistributionCell {
  decisions: number;
  timeNs: number;
}

function distribution(m: Map<number, DistributionCell>): DistributionEntry[] {
  return [...m.entries()]
    .sort((a, b) => a[0] - b[0])
    .map(([value, c]) => ({ value, decisions: c.decisions, timeMs: c.timeNs / 1e6 }));
}

/** Sample intake, bounds and reporting shared by all controllers. */
abstract class BaseController implements ThrottleController {
  abstract readonly name: ControllerName;
  readonly options: ResolvedThrottleOptions;
  readonly latency: LatencyEstimator;
  protected readonly targetNs: number;

  private readonly histogram = new LatencyHistogram();
  private bytes = 0;
  private decisions = 0;
  private delayedMs = 0;
  private readonly qdDist = new Map<number, DistributionCell>();
  private readonly bsDist = new Map<number, DistributionCell>();
  private previous: ThrottleDecision | undefined;
  /** When the previous decision was taken; undefined while no sample had come back. */
  private previousAtNs: number | undefined;
  /**
   * When the job started, in the samples' clock: the issue time of the first
   * block (its completion time minus its latency). Decisions taken before any
   * sample count from here, not from the clock's origin (which for a real
   * monotonic clock is the boot time).
   */
  private originNs: number | undefined;

  constructor(options: ThrottleOptions) {
    this.options = resolveThrottleOptions(options);
    this.latency = new LatencyEstimator(this.options.estimator);
    this.targetNs = this.options.targetLatencyMs * 1e6;
  }

  observe(sample: LatencySample): void {
    const s: Partial<LatencySample> = sample ?? {};
    if (this.latency.observe(s.latencyNs as number, s.atNs) === 'invalid') return;
    const v = this.latency.lastNs; // the sanitised (possibly clamped) value
    this.originNs ??= Math.max(0, this.latency.nowNs - v);
    this.histogram.record(v);
    if (typeof s.bytes === 'number' && Number.isFinite(s.bytes) && s.bytes > 0) this.bytes += s.bytes;
    this.onSample(v);
  }

  /** Probes are for `canary`; the other controllers ignore them. */
  observeProbe(_sample: LatencySample): void {}

  probeState(): { latencyNs: number; targetNs: number } | undefined {
    return undefined;
  }

  /** The latest time the controller has seen (sample completion times). */
  protected nowNs(): number {
    return this.latency.nowNs;
  }

  decide(): ThrottleDecision {
    const d = boundDecision(this.current(), this.options);
    const now = this.nowNs();
    // The time since the previous decision was spent under that decision.
    if (this.previous) {
      const from = this.previousAtNs ?? this.originNs ?? now;
      const dt = Math.max(0, now - from);
      this.cell(this.qdDist, this.previous.queueDepth).timeNs += dt;
      this.cell(this.bsDist, this.previous.blockSize).timeNs += dt;
    }
    this.cell(this.qdDist, d.queueDepth).decisions++;
    this.cell(this.bsDist, d.blockSize).decisions++;
    this.decisions++;
    this.delayedMs += d.delayMs;
    this.previous = d;
    this.previousAtNs = this.latency.count > 0 ? now : undefined;
    return d;
  }

  report(): ThrottleReport {
    return {
      controller: this.name,
      targetLatencyMs: this.options.targetLatencyMs,
      samples: this.latency.count,
      invalidSamples: this.latency.invalid,
      clampedSamples: this.latency.clamped,
      bytes: this.bytes,
      decisions: this.decisions,
      delayedMs: this.delayedMs,
      latency: this.histogram.toJSON(),
      queueDepth: distribution(this.qdDist),
      blockSize: distribution(this.bsDist),
    };
  }

  /** Called with every accepted (sanitised) latency, in ns. */
  protected abstract onSample(latencyNs: number): void;
  /** The unbounded decision now; decide() bounds and records it. */
  protected abstract current(): ThrottleDecision;

  private cell(m: Map<number, DistributionCell>, key: number): DistributionCell {
    let c = m.get(key);
    if (!c) {
      c = { decisions: 0, timeNs: 0 };
      m.set(key, c);
    }
    return c;
  }
}

/** `off`: full queue depth, largest requests, no delay. Still measures and reports. */
class OffController extends BaseController {
  readonly name = 'off' as const;
  protected onSample(): void {}
  protected current(): ThrottleDecision {
    return { delayMs: 0, queueDepth: this.options.maxQueueDepth, blockSize: this.options.maxBlockSize };
  }
}

/**
 * `threshold`: the classic rule. The throttling value is how far a block's
 * latency L is above the threshold T, relative to it:
 *     e = clamp((L − T) / T, −1, 4)
 * The delay before the next block is an integral part I, which remembers
 * how long the latency has been above or below T, times a proportional
 * factor from the current throttling value (ki, kp: gains; Δt: time since
 * the previous sample):
 *     ln I ← ln I + ki · e · min(Δt, τ) / τ,   τ = max(L, T),
 *                                            I within [T / 1000, maxDelay]
 *     d = I · exp(kp · e)                    (0 while I is at its floor)
 * Working on the logarithm makes the loop independent of the device's
 * speed: a change of d by a given factor changes our rate by that factor,
 * whatever the rate. τ is the loop's dead time (a block issued now reports
 * back after L), so the integral moves by at most e^(4·ki) per round trip.
 * The integral brings the latency to T, where a purely proportional rule
 * would settle above it; the proportional factor damps
 * the loop (the device queue integrates the rate difference, so an integral
 * alone would oscillate). Integrating over time rather than per sample makes
 * the response independent of how many blocks are in flight. Queue depth and
 * request size stay at their maxima, as in the commercial tools.
 */
class ThresholdController extends BaseController {
  readonly name = 'threshold' as const;
  private readonly floorMs: number;
  private integralMs: number;
  private delayMs = 0;
  private lastAtNs: number | undefined;

  constructor(options: ThrottleOptions) {
    super(options);
    this.floorMs = Math.min(this.options.targetLatencyMs / 1000, this.options.maxDelayMs);
    this.integralMs = this.floorMs;
  }

  protected onSample(latencyNs: number): void {
    const o = this.options;
    const now = this.latency.nowNs;
    const dtNs = this.lastAtNs === undefined ? 0 : now - this.lastAtNs;
    this.lastAtNs = now;
    const e = clamp((latencyNs - this.targetNs) / this.targetNs, -1, 4);
    // Time is counted in units of the loop's dead time τ = max(L, T): a
    // block issued now reports back after about L. Counting in τ makes the
    // integral move by at most a factor e^(4·ki) per round trip however many
    // samples come back in it, so a deep queue of old blocks cannot wind it
    // up; a sample after a long pause counts for one τ at most.
    const tau = Math.max(latencyNs, this.targetNs);
    const step = (o.threshold.integralGain * e * Math.min(dtNs, tau)) / tau;
    this.integralMs = clamp(this.integralMs * Math.exp(step), this.floorMs, o.maxDelayMs);
    this.delayMs =
      this.integralMs <= this.floorMs ? 0 : clamp(this.integralMs * Math.exp(o.threshold.gain * e), 0, o.maxDelayMs);
  }

  protected current(): ThrottleDecision {
    return { delayMs: this.delayMs, queueDepth: this.options.maxQueueDepth, blockSize: this.options.maxBlockSize };
  }
}

/**
 * Base of the window controllers (aimd, parda). Their state is one number,
 * the window W: the bytes the job may keep in flight. windowDecision() turns
 * W into a decision, shrinking the knobs in order of cost to throughput:
 * first the queue depth (at the largest request size), then the request size
 * (at the smallest queue depth), and only then a pacing delay.
 *
 * They act once per round, not per sample: a round ends when as many samples
 * have come back as there were blocks in flight when it began (about one
 * round trip, like TCP's once-per-RTT rule), and its mean latency is the
 * signal. Waiting for the blocks issued under the previous window keeps a
 * controller from reacting twice to the same queue.
 */
abstract class WindowController extends BaseController {
  protected window: number;
  protected readonly minWindow: number;
  protected readonly maxWindow: number;
  private decision: ThrottleDecision;
  private roundLength = 1;
  private roundSamples = 0;
  private roundSumNs = 0;

  constructor(options: ThrottleOptions) {
    super(options);
    const o = this.options;
    this.maxWindow = o.maxQueueDepth * o.maxBlockSize;
    // The smallest window paces smallest blocks at 1/64 of their natural rate;
    // maxDelayMs usually binds before that.
    this.minWindow = (o.minQueueDepth * o.minBlockSize) / 64;
    // Start with the smallest queue depth of full-size blocks: cheap on an
    // idle device (one request in flight) and quickly grown from there.
    this.window = o.minQueueDepth * o.maxBlockSize;
    this.decision = this.windowDecision();
    this.roundLength = this.decision.queueDepth;
  }

  protected onSample(latencyNs: number): void {
    this.roundSamples++;
    this.roundSumNs += latencyNs;
    if (this.decision.delayMs > 0) {
      // While pacing, keep the delay in step with the latest latency estimate.
      this.decision = this.windowDecision();
    }
    if (this.roundSamples < this.roundLength) return;
    const mean = this.roundSumNs / this.roundSamples;
    this.roundSamples = 0;
    this.roundSumNs = 0;
    const before = this.decision.queueDepth;
    this.window = clamp(this.nextWindow(mean), this.minWindow, this.maxWindow);
    this.decision = this.windowDecision();
    // The next round waits for the blocks in flight now (issued under the
    // old window) and for a full window of new ones.
    this.roundLength = Math.max(before, this.decision.queueDepth);
  }

  protected current(): ThrottleDecision {
    return this.decision;
  }

  /** The window after a round whose mean latency was `meanNs`. */
  protected abstract nextWindow(meanNs: number): number;

  /** W → (queue depth, request size, delay). */
  private windowDecision(): ThrottleDecision {
    const o = this.options;
    const w = this.window;
    const fullBlocks = w / o.maxBlockSize;
    if (fullBlocks >= o.minQueueDepth) {
      return { delayMs: 0, queueDepth: Math.round(fullBlocks), blockSize: o.maxBlockSize };
    }
    const perRequest = w / o.minQueueDepth;
    if (perRequest >= o.minBlockSize) {
      return { delayMs: 0, queueDepth: o.minQueueDepth, blockSize: perRequest };
    }
    return pacedDecision(o, w, pacingLatencyNs(this.latency));
  }
}

/**
 * A window W below minQueueDepth smallest blocks: smallest blocks, paced.
 * With n = W / minBlockSize blocks in flight on average and latency L each,
 * Little's law gives one block every L / n.
 */
/**
 * The latency L that paces blocks: the median of the last 9 samples, not the
 * EWMA. One sample from a stall (the process stopped or descheduled for 2 s,
 * a device that hung once) moves the EWMA to ~0.4 s; paced blocks then wait
 * the largest delay each, and with one sample per wait the EWMA needs ~40
 * samples, i.e. many seconds, to forget it (bench:impact saw 0 MB/s for 2 s
 * at a time after each SIGSTOP of the job). The median of the last few
 * samples forgets it after a few; by count, not age, because after a stall
 * every sample in a time window is a late one.
 */
function pacingLatencyNs(e: LatencyEstimator): number {
  return e.recentMedianNs(9);
}

function pacedDecision(o: ResolvedThrottleOptions, w: number, latencyNs: number): ThrottleDecision {
  const n = w / o.minBlockSize;
  return { delayMs: latencyNs / n / 1e6, queueDepth: o.minQueueDepth, blockSize: o.minBlockSize };
}

/**
 * `aimd`: additive increase, multiplicative decrease of the window.
 * After each round with mean latency L:
 *     L > T:  W ← max(Wmin, b · W)          (b = decreaseFactor, 0.5)
 *     L ≤ T:  W ← min(Wmax, W + a)
 * where a is one largest block while the window is in queue-depth territory
 * (so the queue depth grows by one per round) and `increaseBytes` (one
 * smallest block) while requests are shrunk or paced.
 */
class AimdController extends WindowController {
  readonly name = 'aimd' as const;
  protected nextWindow(meanNs: number): number {
    const o = this.options;
    if (meanNs > this.targetNs) return this.window * o.aimd.decreaseFactor;
    const step = this.window >= o.minQueueDepth * o.maxBlockSize ? o.maxBlockSize : o.aimd.increaseBytes;
    return this.window + step;
  }
}

/**
 * `parda`: the window rule of PARDA (Gulati et al., FAST'09),
 *     W ← (1 − γ) · W + γ · (T / L · W + β)
 * with L the round's mean latency. Its fixed point is L = T · W / (W − β):
 * the latency settles just above T, and a window that cannot reach T
 * (production alone is slower) settles near β instead of at zero. The ratio
 * T / L is capped at 2 so that one implausibly fast round cannot make the
 * window jump to its maximum.
 */
class PardaController extends WindowController {
  readonly name = 'parda' as const;
  protected nextWindow(meanNs: number): number {
    const { gamma, betaBytes } = this.options.parda;
    const ratio = Math.min(2, this.targetNs / meanNs);
    return (1 - gamma) * this.window + gamma * (ratio * this.window + betaBytes);
  }
}

/**
 * `canary` (the default): a window rule driven by what production sees
 * instead of by the job's own latency. Beside the job, one small read at a
 * time (a probe, 4 KiB, at a few fixed places) measures the latency any
 * other small request meets on the storage right now; the job's own blocks
 * mostly measure the queue the job itself builds, which says little about
 * the harm it does to others.
 *
 * Harm is counted in the tail, as production's p99 is: H = factor × the
 * idle probes' `quantile` (default their 90th percentile), and a is the share of
 * idle probes slower than H, at least 5 % (with a fixed target H, a = 5 %). Per round of `probesPerRound` probes, f (an
 * EWMA, α = 0.3 per round) is the share slower than H, and
 *     W ← (1 − γ) · W + γ · (r · W + β),   r = clamp((a + ε) / (f + ε), ¼, 2)
 * with ε = 0.05: PARDA's rule (Gulati et al., FAST'09) with the share of slow
 * probes in place of the latency. The tail rule takes the smaller of r and
 * the same ratio for the share of probes slower than `tailFactor` · H (2 · H,
 * allowed `tailShare`, 2 %): production's bound is on its p99, and the share
 * above H can stay at its idle level while the tail grows. β (4 KiB) is also
 * the window's floor (r ≥ ¼: W ≥ β / (1 − ¼)). One probe slower than 4 · H
 * (a burst of production meeting a large window) halves W at once, once per
 * round.
 * H comes from idle probes: before the job, and again in a short pause every
 * `calibrateEveryMs` (no new blocks of ours for up to `pauseMs`; probes that
 * complete after ours drained are idle; the first three a second apart), so
 * it follows a device whose own speed drifts; H is the lowest of the last
 * `calibrationsKept` (3): a disturbed calibration is only ever slower.
 * W becomes the deepest queue (up to maxQueueDepth) of the smallest requests
 * that hold it: at equal throughput, a production request that lands behind
 * a small request of ours waits for less. Below the smallest block's worth,
 * blocks are paced (Little's law).
 * Without probes it has no signal and keeps its window (JobThrottle runs
 * `parda` instead when it has nothing to probe).
 */
class CanaryController extends BaseController {
  readonly name = 'canary' as const;
  /** Probe latency: smoothed value and window percentiles. */
  readonly probes: LatencyEstimator;
  private window: number;
  private readonly minWindow: number;
  private readonly maxWindow: number;
  private harm: number;
  private slowShare: number;
  /** Share of idle probes slower than `harm` (in the kept calibration `harm` came from). */
  private idleSlowShare: number;
  private roundSamples = 0;
  private roundSlow = 0;
  private roundTail = 0;
  /** EWMA of the share of probes slower than tailFactor × harm. */
  private tailShare = 0;
  private pausedAtNs: number | undefined;
  private nextCalibrationNs: number | undefined;
  private idle: number[] = [];
  /** The last `calibrationsKept` calibrations: harm latency and the share of their idle probes slower. */
  private kept: { harm: number; slowShare: number }[] = [];
  private calibrations = 0;
  private probeCount = 0;
  private lastCutAt = -Infinity;
  private pause: 'calibrate' | 'check' | undefined;
  /** Probes seen with the storage's I/O count; quiet checks need them. */
  private deviceCounters = false;
  private nextCheckNs: number | undefined;
  /** First and last probe of the current pause's quiet window. */
  private quietFrom: { atNs: number; ios: number; probes: number } | undefined;
  private quietTo: { atNs: number; ios: number; probes: number } | undefined;
  private othersSeen = false;
  private lastWrites: number | undefined;
  private busyWrites = 0;
  private boostedSinceNs: number | undefined;
  /** Quiet checks in a row while not boosted. */
  private quietChecks = 0;
  private boostedNs = 0;
  private checks = 0;
  private busyChecks = 0;
  /**
   * The window at the last quiet check that found someone else while not
   * boosted: what the rule held with production there. Until one, the
   * starting window.
   */
  private busyWindow: number;

  constructor(options: ThrottleOptions) {
    super(options);
    const o = this.options;
    this.probes = new LatencyEstimator(o.estimator);
    this.maxWindow = o.maxQueueDepth * o.maxBlockSize;
    this.minWindow = (o.minQueueDepth * o.minBlockSize) / 64;
    // Start small (four smallest blocks) and grow: the rule at most
    // multiplies W by 1.5 per round, so full speed is under a second away.
    this.window = clamp(4 * o.minBlockSize, this.minWindow, this.maxWindow);
    this.busyWindow = this.window;
    // Until a calibration says otherwise (and for good with a fixed target),
    // no probe is expected to be slower than H.
    this.harm = this.targetNs;
    this.idleSlowShare = 0;
    this.slowShare = 0;
  }

  override probeState(): { latencyNs: number; targetNs: number } {
    return { latencyNs: this.probes.smoothedNs, targetNs: this.harm };
  }

  protected override nowNs(): number {
    return Math.max(this.latency.nowNs, this.probes.nowNs);
  }

  protected onSample(): void {}

  override observeProbe(sample: LatencySample): void {
    const s: Partial<LatencySample> = sample ?? {};
    if (this.probes.observe(s.latencyNs as number, s.atNs) === 'invalid') return;
    this.probeCount++;
    const v = this.probes.lastNs;
    const now = this.nowNs();
    const o = this.options;
    const ios = typeof s.deviceIos === 'number' && Number.isFinite(s.deviceIos) && s.deviceIos >= 0 ? s.deviceIos : undefined;
    if (ios !== undefined) this.deviceCounters = true;
    const writes = typeof s.deviceWrites === 'number' && Number.isFinite(s.deviceWrites) && s.deviceWrites >= 0 ? s.deviceWrites : undefined;
    const wroteSinceLast = writes !== undefined && this.lastWrites !== undefined && writes > this.lastWrites;
    this.lastWrites = writes;
    if (this.pausedAtNs !== undefined) {
      // Probes that completed after our blocks in flight drained are idle
      // ones; the storage's I/O counted between them is the probes' and others'.
      const settleNs =
        this.pause === 'calibrate'
          ? Math.min(Math.max(2 * this.latency.smoothedNs, 10e6), (o.canary.pauseMs * 1e6) / 2)
          : Math.min(Math.max(1.25 * this.latency.recentMedianNs(), 1e6), 20e6);
      if (now - this.pausedAtNs >= settleNs) {
        if (this.pause === 'calibrate') this.idle.push(v);
        if (ios !== undefined) {
          this.quietFrom ??= { atNs: now, ios, probes: this.probeCount };
          this.quietTo = { atNs: now, ios, probes: this.probeCount };
          if (ios - this.quietFrom.ios > this.probeCount - this.quietFrom.probes) this.othersSeen = true;
        }
      }
      const quietNs = this.quietTo && this.quietFrom ? this.quietTo.atNs - this.quietFrom.atNs : 0;
      const needNs = this.quietNeededNs();
      const done =
        this.pause === 'calibrate'
          ? this.idle.length >= o.canary.calibrationProbes || now - this.pausedAtNs >= o.canary.pauseMs * 1e6
          : this.othersSeen || quietNs >= needNs || now - this.pausedAtNs >= needNs + 50e6;
      if (done) this.endPause(now);
      return;
    }
    if (o.canary.calibrate) {
      // The first calibration is at the first probe: before the job's first
      // blocks are out, the pause costs nothing.
      this.nextCalibrationNs ??= now;
      if (now >= this.nextCalibrationNs) {
        this.startPause('calibrate', now);
        return;
      }
    }
    // A write we did not make is someone else at work: no boost begins on
    // the quiet checks before it, and a boost stops now rather than at the
    // next check.
    if (wroteSinceLast) this.quietChecks = 0;
    if (this.boostedSinceNs !== undefined && wroteSinceLast) {
      this.busyWrites++;
      this.endBoost(now);
      this.nextCheckNs = now + o.canary.checkEveryMs * 1e6;
    }
    if (o.canary.boost && this.deviceCounters) {
      this.nextCheckNs ??= now;
      if (now >= this.nextCheckNs) {
        this.startPause('check', now);
        return;
      }
    }
    // Boosted, the probes wait behind our own deep queue whether or not
    // anyone else is there: they say nothing, and the window rule rests
    // until a quiet check ends the boost.
    if (this.boostedSinceNs !== undefined) return;
    this.roundSamples++;
    if (v > this.harm) this.roundSlow++;
    if (o.canary.tailFactor > 0 && v > o.canary.tailFactor * this.harm) this.roundTail++;
    // A probe far slower than the harm latency (production arriving in a
    // burst, while the window is large) halves the window at once, at most
    // once per round: a round of waiting would let the burst meet our whole
    // queue for tens of milliseconds.
    if (v > 4 * this.harm && this.probeCount - this.lastCutAt >= o.canary.probesPerRound) {
      this.lastCutAt = this.probeCount;
      this.window = clamp(this.window / 2, this.minWindow, this.maxWindow);
      this.slowShare = Math.max(this.slowShare, (this.idleSlowShare + 1) / 2);
    }
    if (this.roundSamples < o.canary.probesPerRound) return;
    this.slowShare += 0.3 * (this.roundSlow / this.roundSamples - this.slowShare);
    this.tailShare += 0.3 * (this.roundTail / this.roundSamples - this.tailShare);
    this.roundSamples = 0;
    this.roundSlow = 0;
    this.roundTail = 0;
    // At least 5 %: with no slow idle probe at all (a quiet device), the rule
    // must still grow the window when the probes stay fast.
    const allowed = Math.max(this.idleSlowShare, 0.05);
    const eps = 0.05;
    let ratio = clamp((allowed + eps) / (this.slowShare + eps), 0.25, 2);
    if (o.canary.tailFactor > 0) {
      // The same rule on the tail, with ε at half the allowed share: the
      // smaller of the two ratios wins.
      const t = o.canary.tailShare;
      ratio = Math.min(ratio, clamp((1.5 * t) / (this.tailShare + t / 2), 0.25, 2));
    }
    const { gamma } = o.parda;
    this.window = clamp((1 - gamma) * this.window + gamma * (ratio * this.window + o.canary.betaBytes), this.minWindow, this.maxWindow);
  }

  /**
   * Quiet time a check must see to boost: long to start (a light load of a
   * few requests per second must show itself: at 20 IOPS, 200 ms pass
   * without a request once in 55 tries), short to stay boosted (any load
   * found ends the boost).
   */
  private quietNeededNs(): number {
    return (this.boostedSinceNs !== undefined ? THROTTLE_DEFAULTS.canaryStayQuietMs : THROTTLE_DEFAULTS.canaryEnterQuietMs) * 1e6;
  }

  private startPause(kind: 'calibrate' | 'check', now: number): void {
    this.pausedAtNs = now;
    this.pause = kind;
    this.idle = [];
    this.quietFrom = undefined;
    this.quietTo = undefined;
    this.othersSeen = false;
    this.roundSamples = 0;
    this.roundSlow = 0;
    this.roundTail = 0;
  }

  private endPause(now: number): void {
    const o = this.options;
    if (this.pause === 'calibrate') {
      // A quantile needs a few samples beyond it; fewer, and the last value stays.
      if (this.idle.length >= Math.max(8, Math.min(o.canary.calibrationProbes, 3 / (1 - o.canary.quantile)))) {
        const sorted = [...this.idle].sort((a, b) => a - b);
        const harm = o.canary.factor * sorted[Math.min(sorted.length - 1, Math.floor(o.canary.quantile * sorted.length))]!;
        this.kept.push({ harm, slowShare: sorted.filter((x) => x > harm).length / sorted.length });
        if (this.kept.length > o.canary.calibrationsKept) this.kept.shift();
        // The lowest: a disturbed calibration is only ever slower.
        const best = this.kept.reduce((a, b) => (b.harm < a.harm ? b : a));
        this.harm = best.harm;
        this.idleSlowShare = best.slowShare;
        this.calibrations++;
      }
      // The first few come quickly: the one at the start is the likeliest to
      // be disturbed (seen: 1.2 ms against 0.16 ms ten seconds later, and the
      // job ran at 7.9x production's p99 until then), and the lowest of the
      // kept ones is only a check on it once there are several.
      const everyMs = this.kept.length < o.canary.calibrationsKept ? Math.min(THROTTLE_DEFAULTS.canaryEarlyCalibrationMs, o.canary.calibrateEveryMs) : o.canary.calibrateEveryMs;
      this.nextCalibrationNs = o.canary.calibrateEveryMs > 0 ? now + everyMs * 1e6 : Infinity;
    }
    // Every pause is a quiet check: with our blocks drained, the storage's
    // I/O beyond our probes' is someone else's. None at all over the quiet
    // window: boost; any: back to the window rule (where it was before).
    if (o.canary.boost && this.quietFrom && this.quietTo) {
      const quietNs = this.quietTo.atNs - this.quietFrom.atNs;
      this.checks++;
      if (this.othersSeen) {
        this.busyChecks++;
        this.quietChecks = 0;
        if (this.boostedSinceNs === undefined) this.busyWindow = this.window;
        this.endBoost(now);
      } else if (this.pause === 'check') {
        // Quiet long enough: boost (or stay boosted). Not long enough (probes
        // too slow to fill the window): not boosted.
        if (quietNs < this.quietNeededNs()) {
          this.quietChecks = 0;
          this.endBoost(now);
        } else if (this.boostedSinceNs === undefined && ++this.quietChecks >= o.canary.boostQuietChecks) {
          this.boostedSinceNs = now;
          this.quietChecks = 0;
        }
      }
    }
    // Boosted, or one quiet check short of it: the next check soon.
    const soon = this.boostedSinceNs !== undefined || this.quietChecks > 0;
    this.nextCheckNs = now + (soon ? o.canary.boostCheckEveryMs : o.canary.checkEveryMs) * 1e6;
    this.pausedAtNs = undefined;
    this.pause = undefined;
    this.idle = [];
  }

  /**
   * Someone else is back (a write we did not make, or a check that was not
   * quiet). The window was last set by the rule before the boost, while the
   * storage was quiet and the window grew up to ×1.5 a round until a check
   * started the boost (up to 700 ms): resuming there meets production's
   * first requests with a deep queue for the rounds it takes to shrink.
   * Resume from the window the rule held the last time a check found
   * production instead (bench:impact A/B, phased load, 6 runs each:
   * production p99 1.38x with this against 1.60x without, at 575 against
   * 684 MB/s; impact-2026-11-27T00-21-31-130Z).
   */
  private endBoost(now: number): void {
    if (this.boostedSinceNs === undefined) return;
    this.boostedNs += Math.max(0, now - this.boostedSinceNs);
    this.boostedSinceNs = undefined;
    if (this.options.canary.resumeBusyWindow) this.window = Math.min(this.window, this.busyWindow);
  }

  protected current(): ThrottleDecision {
    const o = this.options;
    if (this.pausedAtNs !== undefined) {
      // Calibrating: nothing new of ours until the pause ends.
      return { delayMs: o.maxDelayMs, queueDepth: o.minQueueDepth, blockSize: o.minBlockSize };
    }
    if (this.boostedSinceNs !== undefined) {
      return { delayMs: 0, queueDepth: clamp(o.canary.boostQueueDepth, o.minQueueDepth, o.maxQueueDepth), blockSize: o.maxBlockSize };
    }
    const w = this.window;
    if (w >= o.minQueueDepth * o.minBlockSize) {
      // The deepest queue of the smallest requests that holds W: a production
      // request that lands behind one of ours waits for less.
      const align = o.alignment;
      const size = clamp(Math.floor(w / o.maxQueueDepth / align) * align, o.minBlockSize, o.maxBlockSize);
      return { delayMs: 0, queueDepth: clamp(Math.round(w / size), o.minQueueDepth, o.maxQueueDepth), blockSize: size };
    }
    // Paced with our own smoothed latency; before any, the probes'.
    return pacedDecision(o, w, this.latency.count > 0 ? pacingLatencyNs(this.latency) : this.probes.smoothedNs || this.harm);
  }

  override report(): ThrottleReport {
    const base = super.report();
    return {
      ...base,
      probes: {
        count: this.probeCount,
        invalid: this.probes.invalid,
        smoothedMs: this.probes.smoothedNs / 1e6,
        targetMs: this.harm / 1e6,
        slowShare: this.slowShare,
        tailShare: this.tailShare,
        calibrations: this.calibrations,
        boost: {
          checks: this.checks,
          busy: this.busyChecks,
          endedByWrites: this.busyWrites,
          boostedMs: (this.boostedNs + (this.boostedSinceNs !== undefined ? Math.max(0, this.nowNs() - this.boostedSinceNs) : 0)) / 1e6,
          enabled: this.options.canary.boost,
          deviceCounters: this.deviceCounters,
        },
      },
    };
  }
}

/**
 * Creates a controller by name ('canary', 'threshold', 'aimd', 'parda' or 'off').
 * Throws LowtideError INVALID_ARGUMENT for an unknown name or a bad option.
 */
export function createController(
  name: ControllerName | string = DEFAULT_CONTROLLER,
  options: ThrottleOptions = {},
): ThrottleController {
  switch (choiceOption('throttle', name, CONTROLLER_NAMES, DEFAULT_CONTROLLER)) {
    case 'off':
      return new OffController(options);
    case 'threshold':
      return new ThresholdController(options);
    case 'aimd':
      return new AimdController(options);
    case 'parda':
      return new PardaController(options);
    case 'canary':
      return new CanaryController(options);
  }
}
