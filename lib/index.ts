/** lowtide's public API: re-exports only. */
export { LowtideError, ErrorCodes, type ErrorCode } from './errors.js';
export { version } from './package.js';
export { setWorkerThreads, workerPoolStats } from './pool.js';
export {
  openSource,
  ioUringAvailable,
  Source,
  type SourceInfo,
  type OpenSourceOptions,
  type DirectMode,
  type EngineName,
} from './io/source.js';
export { BlockReader, type Block, type ReadOptions, type ReaderStats } from './io/reader.js';
export {
  type Extent,
  mergeExtents,
  splitExtents,
  subtractExtents,
  intersectExtents,
  totalLength,
  validateExtents,
} from './io/extents.js';
export { parseSize } from './options.js';
export {
  imageSource,
  type ImageOptions,
  type ImageProgress,
  type ImageSummary,
  type LatencySummary,
} from './jobs/image.js';
export { LatencyHistogram } from './throttle/histogram.js';
export { initRepository, openRepository, Repository, type InitOptions } from './repo/repository.js';
export type { Manifest, BackupStats, SourceIdentity, RepoConfig } from './repo/format.js';
export {
  verifyRepository,
  pruneRepository,
  selectKept,
  type VerifyReport,
  type VerifyProblem,
  type VerifyOptions,
  type PruneOptions,
  type PruneReport,
} from './repo/maintenance.js';
export { backup, type BackupOptions, type BackupProgress, type BackupResult } from './jobs/backup.js';
export { restore, type RestoreOptions, type RestoreProgress, type RestoreResult } from './jobs/restore.js';
export { backupMany, type BackupManyOptions, type BackupManyResult, type BackupJobEvent } from './jobs/backup-many.js';
export {
  planImage,
  type ImagePlan,
  type PlanOptions,
  type PlannedPartition,
  type OverlayWrite,
  type ExcludedEntry,
} from './fs/plan.js';
export {
  listFiles,
  extractPath,
  describeDisk,
  listBackupFiles,
  extractFromBackup,
  type FileListing,
  type ExtractOptions,
  type ExtractResult,
  type BackupExtractResult,
  type DiskInfo,
} from './jobs/files.js';
export { JobThrottle, probeIdleLatency, type JobThrottleReport, type ThrottleState } from './throttle/job-throttle.js';
export {
  resolveThrottleSettings,
  THROTTLE_PRESETS,
  type ThrottleSettings,
  type ThresholdLaw,
  type ThrottlePresetName,
} from './throttle/job-settings.js';
export { createController } from './throttle/create-controller.js';
export {
  CONTROLLER_NAMES,
  DEFAULT_CONTROLLER,
  type ControllerName,
  type ThrottleController,
  type ThrottleDecision,
  type ThrottleReport,
  type LatencySample,
} from './throttle/types.js';
export { AdmissionGate, RateLimiter, autoTargetLatencyMs } from './throttle/limits.js';
export { readPartitions, openVolume, FatVolume, AllocationMap } from './fs/index.js';
export type { Partition, PartitionTable, DirEntry, FatVolumeInfo, FatType } from './fs/index.js';
// Types that the functions and classes above take or return.
export type { LowtideErrorDetails } from './errors.js';
export type { AdmissionGateOptions, AutoTargetOptions, RateLimiterOptions } from './throttle/limits.js';
export type { AllocationMapInit } from './fs/allocation-map.js';
export type { BoostReport, DistributionEntry } from './throttle/types.js';
export type {
  ClusterRun,
  ExcludedPath,
  ExclusionPlan,
  FileSystemKind,
  FsInfo,
  PartitionTableKind,
  WalkStats,
} from './fs/types.js';
export type { DiskPartitionInfo } from './jobs/files.js';
export type { HistogramSummary } from './throttle/histogram.js';
export type { IndexReader, IndexWriter, StoredChunk } from './repo/repository.js';
export type {
  LatencyEstimator,
  LatencyEstimatorOptions,
  SampleVerdict,
  WindowPercentiles,
} from './throttle/estimator.js';
export type { OpenVolumeOptions } from './fs/volume.js';
export type { ProbeTarget, ThrottleBounds, ThrottledReader } from './throttle/job-throttle.js';
export type { ResolvedThrottleOptions, ThrottleOptions } from './throttle/controller-options.js';
export type { ResolvedThrottleSettings } from './throttle/job-settings.js';
export type { VolumeChoice } from './jobs/files/extract.js';
export type { WriteLock } from './repo/lock.js';
