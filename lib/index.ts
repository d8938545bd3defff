/** lowtide's public API: re-exports only. */
export { LowtideError, ErrorCodes, type ErrorCode } from './errors.js';
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
export {
  initRepository,
  openRepository,
  Repository,
  type InitOptions,
} from './repo/repository.js';
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
