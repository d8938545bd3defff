/**
 * lowtide's public API: sources, the jobs (image, backup, restore, several
 * backups), a repository and what is done with it (list, verify, prune,
 * files and extraction), and errors. Controllers, estimators, histograms,
 * file-system and extent helpers are in `lowtide/advanced`.
 *
 * Jobs take one options object. Functions that open something (openSource,
 * openRepository, initRepository, describeDisk) take its path first.
 */
export { LowtideError, ErrorCodes, type ErrorCode, type LowtideErrorDetails } from './errors.js';
export { version } from './package.js';
export { setWorkerThreads, workerPoolStats } from './pool.js';
export { parseSize } from './options.js';
export {
  openSource,
  ioUringAvailable,
  Source,
  type SourceInfo,
  type OpenSourceOptions,
  type DirectMode,
  type EngineName,
} from './io/source.js';
export type { DirtyBitmap, DiskFormat, VirtualDiskInfo, VirtualDiskLayer } from './io/guest.js';
export type { Block, ReadOptions, ReaderStats } from './io/reader.js';
export type { Extent } from './io/extents.js';
export type { RepoKeys } from './repo/crypto.js';
export {
  mapFile,
  type OffsetTable,
  type OffsetRun,
  type DeviceRun,
  type ZeroRun,
  type FileRun,
  type FiemapFlagName,
} from './io/offset-table.js';
export type { ReadFrom, DeviceReadReport, DeviceReadLayer, ReadFallback } from './jobs/device-read.js';
export {
  imageSource,
  type ImageOptions,
  type ImageProgress,
  type ImageSummary,
  type LatencySummary,
} from './jobs/image.js';
export { backup, type BackupOptions, type BackupProgress, type BackupResult } from './jobs/backup.js';
export { restore, type RestoreOptions, type RestoreProgress, type RestoreResult } from './jobs/restore.js';
export { backupMany, type BackupManyOptions, type BackupManyResult, type BackupJobEvent } from './jobs/backup-many.js';
export {
  backupVm,
  recoverVm,
  describeVm,
  defaultStateDir,
  type VmBackupOptions,
  type VmBackupProgress,
  type VmBackupPhase,
  type VmBackupResult,
  type VmBackupRecord,
  type VmDiskBackup,
  type VmDiskCbt,
  type VmRecoverOptions,
  type VmRecoveryReport,
  type DescribeVmOptions,
} from './jobs/vm-backup.js';
export type { VmDisk, VmIdentity } from './snapshot/qemu.js';
export { STORAGE_KINDS, type StorageKind, type StorageSnapshotHandle } from './snapshot/storage/types.js';
export {
  initRepository,
  openRepository,
  Repository,
  type InitOptions,
  type OpenOptions,
  type RepositoryLocation,
  type RepoLock,
  type S3RepositoryOptions,
} from './repo/repository.js';
export type { ObjectStorage, StoredObject } from './repo/storage/types.js';
export type { RemoteWrites } from './throttle/types.js';
export type { PackLocation } from './repo/storage/packs.js';
export type {
  Manifest,
  ManifestPartition,
  ManifestThrottle,
  BackupStats,
  SourceIdentity,
  RepoConfig,
} from './repo/format.js';
export {
  verifyRepository,
  pruneRepository,
  type VerifyReport,
  type VerifyProblem,
  type VerifyOptions,
  type PruneOptions,
  type PruneReport,
} from './repo/maintenance.js';
export {
  listFiles,
  extractPath,
  describeDisk,
  listBackupFiles,
  extractFromBackup,
  type FileListing,
  type ListFilesOptions,
  type ExtractPathOptions,
  type ExtractOptions,
  type ExtractResult,
  type BackupExtractResult,
  type DiskInfo,
  type DiskPartitionInfo,
} from './jobs/files.js';
export type { BackupChoice, ListBackupFilesOptions, ExtractFromBackupOptions } from './jobs/files/backup.js';
export type { VolumeChoice } from './jobs/files/extract.js';
export {
  THROTTLE_PRESETS,
  type ThrottleSettings,
  type MultiJobThrottleSettings,
  type ThresholdLaw,
  type ThrottlePresetName,
} from './throttle/job-settings.js';
export { CONTROLLER_NAMES, DEFAULT_CONTROLLER, type ControllerName } from './throttle/types.js';
export type { JobThrottleReport, ThrottleState } from './throttle/job-throttle.js';
export type { ThrottleReport, BoostReport, DistributionEntry } from './throttle/types.js';
export type { HistogramSummary } from './throttle/histogram.js';
export type { PlannedPartition, ExcludedEntry } from './fs/plan.js';
export type { FileSystemKind, PartitionTableKind, WalkStats, ExcludedPath } from './fs/types.js';
export type { LocalLock } from './repo/lock.js';
export type { IndexReader, IndexWriter, StoredChunk } from './repo/repository.js';
