/** A job's throttle settings (the throttle fields of its options), validated. */
import { LowtideError } from '../errors.js';
import { choiceOption, numberOption, objectOption } from '../options.js';
import type { ThrottleOptions } from './controller-options.js';
import { CONTROLLER_NAMES, DEFAULT_CONTROLLER, type ControllerName } from './types.js';

/** Time between two probes of the `canary` controller (one in flight at a time). */
export const PROBE_INTERVAL_MS = 2;

export interface ThrottleSettings {
  /** Controller: 'canary' (default), 'parda', 'aimd', 'threshold', or 'off' (no control, still measured). */
  throttle?: ControllerName;
  /** Throttling limit in ms, or 'auto' (default): measured from a short idle probe before the job. */
  latencyTarget?: number | 'auto';
  /** Admission limit in ms: no new task starts on a storage whose latency is above it. */
  admissionLimit?: number;
  /** A fixed cap in bytes per second, applied on top of the controller. */
  rateLimit?: number;
  /** `canary`: time between two probes, ms (default PROBE_INTERVAL_MS, 0.5 to 1000). */
  probeIntervalMs?: number;
  /**
   * `threshold`: 'integral' (default) or 'proportional', the classic rule as
   * written: the delay is proportional to how far the smoothed latency is
   * above the threshold, and none below it (docs/throttle.md).
   */
  thresholdLaw?: ThresholdLaw;
}

export type ThresholdLaw = 'integral' | 'proportional';

/**
 * Named throttle settings. `classic`: the classic rule as written, with the
 * defaults Veeam Backup & Replication documents for its storage latency
 * control (a 30 ms throttling limit, a 20 ms limit for starting new tasks).
 */
export const THROTTLE_PRESETS = {
  classic: { throttle: 'threshold', thresholdLaw: 'proportional', latencyTarget: 30, admissionLimit: 20 },
} as const satisfies Record<string, ThrottleSettings>;

export type ThrottlePresetName = keyof typeof THROTTLE_PRESETS;

export interface ResolvedThrottleSettings {
  throttle: ControllerName;
  latencyTarget: number | 'auto';
  admissionLimit: number | undefined;
  rateLimit: number | undefined;
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

/** Validates the throttle settings of a job's options (other fields are ignored). */
export function resolveThrottleSettings(settings: unknown): ResolvedThrottleSettings {
  const s = objectOption('throttle settings', settings);
  const throttle = choiceOption<ControllerName>('throttle', s.throttle, CONTROLLER_NAMES, DEFAULT_CONTROLLER);
  const latencyTarget =
    s.latencyTarget === undefined || s.latencyTarget === 'auto'
      ? 'auto'
      : positiveNumber('latencyTarget', s.latencyTarget)!;
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
    latencyTarget,
    thresholdLaw: choiceOption<ThresholdLaw>('thresholdLaw', s.thresholdLaw, ['integral', 'proportional'], 'integral'),
    // (Only backupMany() acts on it; single jobs reject it, see singleJobThrottleSettings.)
    admissionLimit: positiveNumber('admissionLimit', s.admissionLimit),
    rateLimit: positiveNumber('rateLimit', s.rateLimit),
    probeIntervalMs,
  };
}

/** For a single job: an admission limit would be ignored, so it is an error. */
export function singleJobThrottleSettings(settings: unknown): ResolvedThrottleSettings {
  const r = resolveThrottleSettings(settings);
  if (r.admissionLimit !== undefined) {
    throw new LowtideError(
      'INVALID_ARGUMENT',
      'admissionLimit: only backupMany() uses an admission limit (it decides when the next of several jobs starts); a single job has none',
    );
  }
  return r;
}
