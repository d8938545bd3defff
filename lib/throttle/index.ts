/** lib/throttle: latency samples in; delays, queue depths and request sizes out. */
export {
  LatencyHistogram,
  HISTOGRAM_MAX_NS,
  HISTOGRAM_RELATIVE_ERROR,
  nearestRank,
  type HistogramSummary,
} from './histogram.js';
export {
  LatencyEstimator,
  ESTIMATOR_DEFAULTS,
  sanitizeLatencyNs,
  type LatencyEstimatorOptions,
  type WindowPercentiles,
  type SampleVerdict,
} from './estimator.js';
export { createController } from './create-controller.js';
export {
  resolveThrottleOptions,
  THROTTLE_DEFAULTS,
  type ThrottleOptions,
  type ResolvedThrottleOptions,
} from './controller-options.js';
export { boundDecision } from './decision.js';
export {
  CONTROLLER_NAMES,
  DEFAULT_CONTROLLER,
  type ControllerName,
  type LatencySample,
  type ThrottleDecision,
  type ThrottleController,
  type ThrottleReport,
  type DistributionEntry,
  type BoostReport,
} from './types.js';
export {
  AdmissionGate,
  RateLimiter,
  autoTargetLatencyMs,
  type AdmissionGateOptions,
  type RateLimiterOptions,
  type AutoTargetOptions,
} from './limits.js';
export { parseDiskstats, diskActivity, type DiskStats, type DiskActivity } from './diskstats.js';
export { StorageIoCounter, storageDevices } from './storage-counters.js';
export {
  JobThrottle,
  probeIdleLatency,
  type JobThrottleReport,
  type ThrottleState,
  type ThrottleBounds,
  type ProbeTarget,
  type ThrottledReader,
} from './job-throttle.js';
export {
  resolveThrottleSettings,
  singleJobThrottleSettings,
  PROBE_INTERVAL_MS,
  type ThrottleSettings,
  type ResolvedThrottleSettings,
} from './job-settings.js';
