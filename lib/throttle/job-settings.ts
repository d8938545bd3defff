/** A job's throttle settings (the throttle fields of its options), validated. */
import { LowtideError } from '../errors.js';
import { choiceOption, numberOption, objectOption } from '../options.js';
import type { ThrottleOptions } from './controller-options.js';
import { CONTROLLER_NAMES, DEFAULT_CONTROLLER, type ControllerName } from './types.js';

/** Time between two probes of the `canary` controller (one in flight at a time). */
export const PROBE_INTERVAL_MS = 2;

/** The throttle settings of a single job (imageSource, backup, restore). */
export interface ThrottleSettings {
  /** Controller: 'canary' (default), 'parda', 'aimd', 'threshold', or 'off' (no control, still measured). */
  throttle?: ControllerName | undefined;
  /** Throttling limit in ms, or 'auto' (default): measured from a short idle probe before the job. */
  latencyTargetMs?: number | 'auto' | undefined;
  /** A fixed cap in bytes per second, applied on top of the controller. */
  rateLimitBytesPerSecond?: number | undefined;
  /** `canary`: time between two probes, ms (default PROBE_INTERVAL_MS, 0.5 to 1000). */
  probeIntervalMs?: number | undefined;
  /**
   * `threshold`: 'integral' (default) or 'proportional', the classic rule as
   * written: the delay is proportional to how far the smoothed latency is
   * above the threshold, and none below it (docs/throttle.md).
   */
  thresholdLaw?: ThresholdLaw | undefined;
}

/** The throttle settings of backupMany(): a single job's, and the admission limit for starting the next job. */
export interface MultiJobThrottleSettings extends ThrottleSettings {
  /** Admission limit in ms: no new job starts on a storage whose latency is above it. */
  admissionLimitMs?: number | undefined;
}

export type ThresholdLaw = 'integral' | 'proportional';

/**
 * Named throttle settings. `classic`: the classic rule as written, with the
 * defaults Veeam Backup & Replication documents for its storage latency
 * control (a 30 ms throttling limit, a 20 ms limit for starting new tasks).
 */
export const THROTTLE_PRESETS = {
  classic: { throttle: 'threshold', thresholdLaw: 'proportional', latencyTargetMs: 30, admissionLimitMs: 20 },
} as const satisfies Record<string, MultiJobThrottleSettings>;

export type ThrottlePresetName = keyof typeof THROTTLE_PRESETS;

export interface ResolvedThrottleSettings {
  throttle: ControllerName;
  latencyTargetMs: number | 'auto';
  admissionLimitMs: number | undefined;
  rateLimitBytesPerSecond: number | undefined;
  probeIntervalMs: number;
  thresholdLaw: ThresholdLaw;
  /**
   * Experiments only (bench:impact's BENCH_CANARY_VARIANTS): overrides of the
   * `canary` controller's tuning (docs/throttle.md), checked by the
   * controller's own option validation. No public option sets it.
   */
  canaryTuning?: Omit<NonNullable<ThrottleOptions['canary']>, 'calibrate'>;
}

/** A number greater than 0, or undefined. */
function positiveNumber(name: string, value: unknown): number | undefined {
  return numberOption(name, value, undefined, 0, Number.MAX_VALUE, true);
}

/** Names the throttle settings had before their units were part of them. */
const RENAMED: Record<string, string> = {
  latencyTarget: 'latencyTargetMs',
  admissionLimit: 'admissionLimitMs',
  rateLimit: 'rateLimitBytesPerSecond',
};

/** Validates the throttle settings of a job's options (other fields are ignored). */
export function resolveThrottleSettings(settings: unknown): ResolvedThrottleSettings {
  const s = objectOption('throttle settings', settings);
  for (const [was, now] of Object.entries(RENAMED)) {
    if (s[was] !== undefined) throw new LowtideError('INVALID_ARGUMENT', `${was}: this option is now called ${now}`);
  }
  const throttle = choiceOption<ControllerName>('throttle', s.throttle, CONTROLLER_NAMES, DEFAULT_CONTROLLER);
  const latencyTargetMs =
    s.latencyTargetMs === undefined || s.latencyTargetMs === 'auto'
      ? 'auto'
      : positiveNumber('latencyTargetMs', s.latencyTargetMs)!;
  const probeIntervalMs = numberOption('probeIntervalMs', s.probeIntervalMs, PROBE_INTERVAL_MS, 0.5, 1000);
  // Only canary probes: with another controller the setting would be ignored.
  if (s.probeIntervalMs !== undefined && throttle !== 'canary') {
    throw new LowtideError(
      'INVALID_ARGUMENT',
      `probeIntervalMs: only the canary controller probes, and throttle is '${throttle}'`,
    );
  }
  if (s.thresholdLaw !== undefined && throttle !== 'threshold') {
    throw new LowtideError(
      'INVALID_ARGUMENT',
      `thresholdLaw: only the threshold controller has a law, and throttle is '${throttle}'`,
    );
  }
  return {
    throttle,
    latencyTargetMs,
    thresholdLaw: choiceOption<ThresholdLaw>('thresholdLaw', s.thresholdLaw, ['integral', 'proportional'], 'integral'),
    // (Only backupMany() acts on it; single jobs reject it, see singleJobThrottleSettings.)
    admissionLimitMs: positiveNumber('admissionLimitMs', s.admissionLimitMs),
    rateLimitBytesPerSecond: positiveNumber('rateLimitBytesPerSecond', s.rateLimitBytesPerSecond),
    probeIntervalMs,
  };
}

/** For a single job: an admission limit would be ignored, so it is an error. */
export function singleJobThrottleSettings(settings: unknown): ResolvedThrottleSettings {
  const r = resolveThrottleSettings(settings);
  if (r.admissionLimitMs !== undefined) {
    throw new LowtideError(
      'INVALID_ARGUMENT',
      'admissionLimitMs: only backupMany() uses an admission limit (it decides when the next of several jobs starts); a single job has none',
    );
  }
  return r;
}
