/**
 * `lowtide/advanced`: the parts the jobs are made of, for tools that build
 * their own: block readers, extent arithmetic, throttle controllers and
 * their estimators, latency histograms, partition tables, FAT volumes and
 * image plans. The jobs and the repository are in `lowtide`.
 */
export { BlockReader } from './io/reader.js';
export { FiemapFlags, splitByTable, sameOffsetTable, type MappedExtent } from './io/offset-table.js';
export {
  mergeExtents,
  splitExtents,
  subtractExtents,
  intersectExtents,
  totalLength,
  validateExtents,
  type ExtentInput,
} from './io/extents.js';
export { ExtentList, type Extents } from './io/extent-list.js';
export { LatencyHistogram } from './throttle/histogram.js';
export { JobThrottle, probeIdleLatency } from './throttle/job-throttle.js';
export type { ProbeTarget, ThrottleBounds, ThrottledReader } from './throttle/job-throttle.js';
export { resolveThrottleSettings } from './throttle/job-settings.js';
export type { ResolvedThrottleSettings } from './throttle/job-settings.js';
export { createController } from './throttle/create-controller.js';
export type { ThrottleController, ThrottleDecision, LatencySample } from './throttle/types.js';
export type { ResolvedThrottleOptions, ThrottleOptions } from './throttle/controller-options.js';
export { AdmissionGate, RateLimiter, autoTargetLatencyMs } from './throttle/limits.js';
export type { AdmissionGateOptions, AutoTargetOptions, RateLimiterOptions } from './throttle/limits.js';
export type {
  LatencyEstimator,
  LatencyEstimatorOptions,
  SampleVerdict,
  WindowPercentiles,
} from './throttle/estimator.js';
export { readPartitions, openVolume, FatVolume, AllocationMap } from './fs/index.js';
export type { Partition, PartitionTable, DirEntry, FatVolumeInfo, FatType } from './fs/index.js';
export type { OpenVolumeOptions } from './fs/volume.js';
export type { AllocationMapInit } from './fs/allocation-map.js';
export type { ClusterRun, ExclusionPlan, FsInfo } from './fs/types.js';
export { planImage, type ImagePlan, type PlanOptions, type OverlayWrite } from './fs/plan.js';
export { selectKept } from './repo/maintenance.js';
export {
  QmpClient,
  type QmpConnectOptions,
  type QmpEvent,
  type QmpCommands,
  type QmpCommandName,
  type QmpBlockInfo,
  type QmpDirtyBitmap,
  type QmpBlockNode,
  type QmpBlockJob,
  type QmpImageInfo,
  type QmpTransactionAction,
} from './snapshot/qmp.js';
export { listVmDisks, vmIdentity, takeVmSnapshot, commitOverlay, type OverlayPlan } from './snapshot/qemu.js';
export { storageProvider, ReflinkStorage, BtrfsStorage } from './snapshot/storage/index.js';
export type { StorageSnapshot, StorageSnapshotProvider } from './snapshot/storage/types.js';
export { GuestAgentClient, type GuestAgentCommands } from './snapshot/qga.js';
