/**
 * The options of the throttling controllers, their defaults (the reasons
 * for each are in docs/throttle.md, "Options and defaults"), and their
 * validation.
 */
import { booleanOption, choiceOption, integerOption, invalidOption, numberOption, objectOption } from '../options.js';
import type { LatencyEstimatorOptions } from './estimator.js';

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
    /**
     * 'integral' (default): the delay is an integral part times exp(kp ·
     * throttling value), which brings the latency to the threshold.
     * 'proportional': the delay is the throttling value times the threshold
     * times `proportionalGain`, and 0 at or below the threshold: the classic
     * rule as written (docs/throttle.md).
     */
    law?: 'proportional' | 'integral';
    /** 'proportional' law: delay = proportionalGain · throttling value · threshold (default 1). */
    proportionalGain?: number;
    /** 'integral' law, kp: the delay is multiplied by exp(kp · throttling value) (default 0.5). */
    gain?: number;
    /** 'integral' law, ki: ln(delay) grows by ki per round trip spent at twice the target (default 0.25). */
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
     * Go faster while nobody else uses the storage (default true): while
     * the quiet checks (our reads drained for a few ms) count someone
     * else's I/O at a rate clearly below `quietIops`, run `boostQueueDepth`
     * largest blocks. Needs probes that carry `deviceIos`.
     */
    boost?: boolean;
    /**
     * Checks of the last 3 s needed before a boost starts (default 2; after
     * a quiet one the next comes `boostCheckEveryMs` later).
     */
    boostQuietChecks?: number;
    /**
     * Someone else's I/Os per second that are never taken for an idle
     * storage (default 20): the checks must count improbably few for a load
     * of this rate (Poisson, 1 in 1000) to start a boost. A system's own
     * background (a journal write now and then, a few I/Os a second) is
     * boosted; a light production load of 20 requests a second is not.
     */
    quietIops?: number;
    /** Largest blocks in flight while boosted (default 4). */
    boostQueueDepth?: number;
    /**
     * Someone else's I/Os per second below which the storage counts as
     * lightly loaded (default 0: off; e.g. 1000 to try it): while the checks (and
     * the reads counted while running) find improbably few for a load of
     * this rate (Poisson, 1 in 1000), and no burst above it, the job keeps
     * at least `lightQueueDepth` requests of `lightBlockSize` in flight,
     * with no delay, whatever the probes say (unless it writes to that
     * storage). The window rule alone holds a job beside a light load at
     * its slowest; this floor moves far more, but production's p99 beside
     * it rose several times in bench:impact (docs/throttle.md), so it is
     * not the default.
     */
    lightIops?: number;
    /** Requests in flight under a light load (default 1). */
    lightQueueDepth?: number;
    /** Request size under a light load, bytes (default 256 KiB, within minBlockSize..maxBlockSize). */
    lightBlockSize?: number;
    /** Time between quiet checks while boosted, ms (default 50). */
    boostCheckEveryMs?: number;
    /**
     * Count someone else's reads while the job runs, where the probes carry
     * the counts for it (`deviceReadsSubmitted`, `ownReadsSubmitted`; default
     * true): a boost then starts without a check, ends within a probe of a
     * burst, runs `countedBoostQueueDepth` blocks, and is checked every
     * `countedCheckEveryMs`.
     */
    counted?: boolean;
    /** Largest blocks in flight while boosted with reads counted (default 8). */
    countedBoostQueueDepth?: number;
    /** Time between quiet checks while boosted with reads counted, ms (default 500). */
    countedCheckEveryMs?: number;
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
  threshold: { law: 'proportional' | 'integral'; proportionalGain: number; gain: number; integralGain: number };
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
    quietIops: number;
    boostQueueDepth: number;
    lightIops: number;
    lightQueueDepth: number;
    lightBlockSize: number;
    boostCheckEveryMs: number;
    counted: boolean;
    countedBoostQueueDepth: number;
    countedCheckEveryMs: number;
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
  thresholdProportionalGain: 1,
  thresholdGain: 0.5,
  thresholdIntegralGain: 0.25,
  aimdDecreaseFactor: 0.5,
  pardaGamma: 0.5,
  // Harm is a probe slower than the idle probes' p90: counted in the tail,
  // as production's p99 is (see "Choosing H" in docs/throttle.md).
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
  canaryCountedBoostQueueDepth: 8,
  canaryCountedCheckEveryMs: 500,
  canaryCheckEveryMs: 500,
  canaryBetaBytes: 4 * 1024,
  /** Quiet a check must see to start boosting, and to stay boosted, ms. */
  canaryEnterQuietMs: 200,
  canaryStayQuietMs: 10,
  canaryQuietIops: 20,
  canaryLightIops: 0,
  canaryLightQueueDepth: 1,
  canaryLightBlockSize: 256 * 1024,
  /** Quiet checks older than this are forgotten, ms. */
  canaryQuietHorizonMs: 3000,
} as const;

/** Largest values accepted, matching the block reader's own limits. */
const MAX_QUEUE_DEPTH = 1024;
const MAX_BLOCK_SIZE = 64 * 1024 * 1024;

/** Validates `options` and fills in the defaults. Throws LowtideError INVALID_ARGUMENT. */
export function resolveThrottleOptions(options: ThrottleOptions = {}): ResolvedThrottleOptions {
  const o = objectOption('throttle options', options) as ThrottleOptions;
  const targetLatencyMs = numberOption(
    'targetLatencyMs',
    o.targetLatencyMs,
    THROTTLE_DEFAULTS.targetLatencyMs,
    0,
    600_000,
    true,
  );
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
      law: choiceOption('threshold.law', th.law, ['integral', 'proportional'] as const, 'integral'),
      proportionalGain: numberOption(
        'threshold.proportionalGain',
        th.proportionalGain,
        THROTTLE_DEFAULTS.thresholdProportionalGain,
        0,
        1000,
      ),
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
      probesPerRound: integerOption(
        'canary.probesPerRound',
        ca.probesPerRound,
        THROTTLE_DEFAULTS.canaryProbesPerRound,
        1,
        10_000,
      ),
      calibrateEveryMs: numberOption(
        'canary.calibrateEveryMs',
        ca.calibrateEveryMs,
        THROTTLE_DEFAULTS.canaryCalibrateEveryMs,
        0,
        86_400_000,
        true,
      ),
      pauseMs: numberOption('canary.pauseMs', ca.pauseMs, THROTTLE_DEFAULTS.canaryPauseMs, 0, 60_000, true),
      calibrationProbes: integerOption(
        'canary.calibrationProbes',
        ca.calibrationProbes,
        THROTTLE_DEFAULTS.canaryCalibrationProbes,
        1,
        10_000,
      ),
      calibrationsKept: integerOption(
        'canary.calibrationsKept',
        ca.calibrationsKept,
        THROTTLE_DEFAULTS.canaryCalibrationsKept,
        1,
        100,
      ),
      tailFactor:
        ca.tailFactor === 0 ||
        ca.tailFactor === undefined ||
        (typeof ca.tailFactor === 'number' && ca.tailFactor >= 1 && ca.tailFactor <= 100)
          ? (ca.tailFactor ?? THROTTLE_DEFAULTS.canaryTailFactor)
          : invalidOption('canary.tailFactor', '0 (off) or a number from 1 up to 100', ca.tailFactor),
      tailShare: numberOption('canary.tailShare', ca.tailShare, THROTTLE_DEFAULTS.canaryTailShare, 0.001, 0.5),
      boost: booleanOption('canary.boost', ca.boost, true),
      boostQuietChecks: integerOption(
        'canary.boostQuietChecks',
        ca.boostQuietChecks,
        THROTTLE_DEFAULTS.canaryBoostQuietChecks,
        1,
        100,
      ),
      quietIops: numberOption('canary.quietIops', ca.quietIops, THROTTLE_DEFAULTS.canaryQuietIops, 0.1, 1e6),
      boostQueueDepth: integerOption(
        'canary.boostQueueDepth',
        ca.boostQueueDepth,
        THROTTLE_DEFAULTS.canaryBoostQueueDepth,
        1,
        MAX_QUEUE_DEPTH,
      ),
      lightIops: numberOption('canary.lightIops', ca.lightIops, THROTTLE_DEFAULTS.canaryLightIops, 0, 1e7),
      lightQueueDepth: integerOption(
        'canary.lightQueueDepth',
        ca.lightQueueDepth,
        THROTTLE_DEFAULTS.canaryLightQueueDepth,
        1,
        MAX_QUEUE_DEPTH,
      ),
      lightBlockSize: integerOption(
        'canary.lightBlockSize',
        ca.lightBlockSize,
        THROTTLE_DEFAULTS.canaryLightBlockSize,
        1,
        MAX_BLOCK_SIZE,
      ),
      boostCheckEveryMs: numberOption(
        'canary.boostCheckEveryMs',
        ca.boostCheckEveryMs,
        THROTTLE_DEFAULTS.canaryBoostCheckEveryMs,
        1,
        60_000,
      ),
      counted: booleanOption('canary.counted', ca.counted, true),
      countedBoostQueueDepth: integerOption(
        'canary.countedBoostQueueDepth',
        ca.countedBoostQueueDepth,
        THROTTLE_DEFAULTS.canaryCountedBoostQueueDepth,
        1,
        MAX_QUEUE_DEPTH,
      ),
      countedCheckEveryMs: numberOption(
        'canary.countedCheckEveryMs',
        ca.countedCheckEveryMs,
        THROTTLE_DEFAULTS.canaryCountedCheckEveryMs,
        1,
        60_000,
      ),
      checkEveryMs: numberOption(
        'canary.checkEveryMs',
        ca.checkEveryMs,
        THROTTLE_DEFAULTS.canaryCheckEveryMs,
        1,
        86_400_000,
      ),
      betaBytes: numberOption(
        'canary.betaBytes',
        ca.betaBytes,
        THROTTLE_DEFAULTS.canaryBetaBytes,
        0,
        MAX_BLOCK_SIZE,
        true,
      ),
      resumeBusyWindow: booleanOption('canary.resumeBusyWindow', ca.resumeBusyWindow, true),
    },
  };
}
