export { readPartitions, toPartitionTable } from './partitions.js';
export { openVolume, FatVolume, type OpenVolumeOptions } from './volume.js';
export { AllocationMap, type AllocationMapInit } from './allocation-map.js';
export {
  compileGlob,
  matchExclusions,
  parseExcludePattern,
  type CompiledGlob,
  type ExcludePattern,
  type ExclusionMatch,
  type GlobComponent,
  type MatchableEntry,
} from './exclude.js';
export type {
  ClusterRun,
  DirEntry,
  ExcludedPath,
  ExclusionPlan,
  FatType,
  FatVolumeInfo,
  FileSystemKind,
  FsInfo,
  OverlayWrite,
  Partition,
  PartitionTable,
  PartitionTableKind,
  WalkStats,
} from './types.js';
