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
export {
  createController,
  resolveThrottleOptions,
  boundDecision,
  CONTROLLER_NAMES,
  DEFAULT_CONTROLLER,
  THROTTLE_DEFAULTS,
  type ControllerName,
  type LatencySample,
  type ThrottleDecision,
  type ThrottleController,
  type ThrottleOptions,
  type ResolvedThrottleOptions,
  type ThrottleReport,
  type DistributionEntry,
} from './controller.js';
export {
  AdmissionGate,
  RateLimiter,
  autoTargetLatencyMs,
  type AdmissionGateOptions,
  type RateLimiterOptions,
  type AutoTargetOptions,
} from './limits.js';
export {
  SimulatedDevice,
  type SimulatedDeviceOptions,
  type CompetingLoadPhase,
  type SimulationRunOptions,
  type SimulationResult,
  type SimulationStep,
} from './simulated-device.js';
export { parseDiskstats, diskActivity, type DiskStats, type DiskActivity } from './diskstats.js';
export { StorageIoCounter, storageDevices } from './storage-counters.js';
