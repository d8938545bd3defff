export { readPartitions, toPartitionTable } from './partitions.js';
export { openVolume, FatVolume, type OpenVolumeOptions } from './volume.js';
export { AllocationMap, type AllocationMapInit } from './allocation-map.js';
export type {
  ClusterRun,
  DirEntry,
  FatType,
  FatVolumeInfo,
  FileSystemKind,
  FsInfo,
  Partition,
  PartitionTable,
  PartitionTableKind,
  WalkStats,
} from './types.js';
