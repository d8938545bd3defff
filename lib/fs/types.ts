/**
 * The partition and FAT model in TypeScript terms. Byte offsets are offsets
 * on the source (file or block device) unless a name says otherwise.
 */
import type { AllocationMap } from './allocation-map.js';

/** A file system recognised at the start of a partition (FAT is parsed; the others are names only). */
export type FileSystemKind =
  'fat12' | 'fat16' | 'fat32' | 'ntfs' | 'exfat' | 'ext' | 'xfs' | 'btrfs' | 'swap' | 'unknown';

export type PartitionTableKind = 'mbr' | 'gpt' | 'none';

export interface Partition {
  /**
   * Number as Linux gives it: MBR primaries 1-4, logical partitions from 5,
   * GPT entry slot + 1. 0 is the whole disk of a table-less ("superfloppy") disk.
   */
  readonly index: number;
  /** First byte. */
  readonly start: number;
  /** Length in bytes (as the table says; see `truncated`). */
  readonly size: number;
  /** MBR type as "0x0c", GPT type GUID, or '' for a whole disk. */
  readonly type: string;
  /** Friendly name of the type, null when unknown. */
  readonly typeName: string | null;
  /** GPT partition name, null for MBR. */
  readonly name: string | null;
  /** GPT unique partition GUID, null for MBR. */
  readonly uniqueGuid: string | null;
  /** GPT attribute bits, 0n for MBR. */
  readonly attributes: bigint;
  /** File system found at its start; null for an extended container. */
  readonly fileSystem: FileSystemKind | null;
  readonly bootable: boolean;
  /** An MBR extended container: it holds the logical partitions, which are listed on their own. */
  readonly extended: boolean;
  readonly logical: boolean;
  /** The table says it reaches past the end of the disk. */
  readonly truncated: boolean;
}

export interface PartitionTable {
  readonly kind: PartitionTableKind;
  /** Logical sector size the table is written in. */
  readonly sectorSize: number;
  readonly diskSize: number;
  /** GPT disk GUID, null for MBR. */
  readonly diskGuid: string | null;
  /** MBR disk identifier (also present in a protective MBR), null if none. */
  readonly mbrSignature: number | null;
  /** The primary GPT header or entries were damaged and the backup at the last LBA was used. */
  readonly gptBackupUsed: boolean;
  readonly partitions: readonly Partition[];
  readonly warnings: readonly string[];
}

export type FatType = 'fat12' | 'fat16' | 'fat32';

export interface FatVolumeInfo {
  readonly type: FatType;
  /** Offset of the volume (its boot sector) on the source. */
  readonly partitionOffset: number;
  /** Bytes available to the volume. */
  readonly volumeSize: number;
  readonly bytesPerSector: number;
  readonly sectorsPerCluster: number;
  readonly clusterSize: number;
  readonly reservedSectors: number;
  readonly fatCount: number;
  /** Length of one FAT in sectors. */
  readonly fatSectors: number;
  /** Fixed root directory entries (FAT12/16), 0 on FAT32. */
  readonly rootEntries: number;
  readonly totalSectors: number;
  /** Data clusters, numbered 2 .. clusterCount + 1. */
  readonly clusterCount: number;
  /** Source offset of FAT #0. */
  readonly fatOffset: number;
  /** Bytes of one FAT. */
  readonly fatBytes: number;
  /** Source offset and size of the fixed root directory (FAT12/16; size 0 on FAT32). */
  readonly rootDirOffset: number;
  readonly rootDirBytes: number;
  /** Source offset of cluster 2. */
  readonly dataOffset: number;
  /** First cluster of the root directory (FAT32), 0 otherwise. */
  readonly rootCluster: number;
  /** The FAT copy that is read (FAT32 with mirroring off may name another than 0). */
  readonly activeFat: number;
  /** FAT32: all copies are kept in step (BPB_ExtFlags bit 7 clear); always true on FAT12/16. */
  readonly mirroring: boolean;
  readonly media: number;
  readonly volumeId: number;
  readonly oemName: string;
  /** Volume label: from the root directory, else from the boot sector, null when none. */
  readonly label: string | null;
  /** The boot sector dirty bit or the FAT[1] clean-shutdown bit says the volume was not unmounted cleanly. */
  readonly dirty: boolean;
  readonly bootDirty: boolean;
  readonly fatDirty: boolean;
  readonly fatHardError: boolean;
  /** FAT32 FSInfo (null on FAT12/16 or when the BPB names none). */
  readonly fsInfo: FsInfo | null;
  readonly warnings: readonly string[];
}

export interface FsInfo {
  /** Signatures correct; when false the counts are null. */
  readonly valid: boolean;
  readonly freeCount: number | null;
  readonly nextFree: number | null;
  readonly offset: number;
}

export interface DirEntry {
  /** Full path from the volume root, '/'-separated, using long names ("/Docs/Report 2024.txt"). */
  readonly path: string;
  /** Long name when there is a valid one, else the 8.3 name (with the NT lower-case flags applied). */
  readonly name: string;
  /** The 8.3 name as stored ("REPORT~1.TXT"). */
  readonly shortName: string;
  readonly size: number;
  /** Attribute byte: 0x01 read-only, 0x02 hidden, 0x04 system, 0x10 directory, 0x20 archive. */
  readonly attributes: number;
  readonly isDirectory: boolean;
  readonly readOnly: boolean;
  readonly hidden: boolean;
  readonly system: boolean;
  readonly archive: boolean;
  /** Last modification (FAT stores local time; it is read as local time). The FAT epoch when unset. */
  readonly modified: Date;
  /** Creation time, null when unset. */
  readonly created: Date | null;
  /** Last access day, null when unset. */
  readonly accessed: Date | null;
  /** First cluster (0 for an empty file). */
  readonly firstCluster: number;
  /** Source offset of the 8.3 directory entry. */
  readonly entryOffset: number;
  /** Source offset of the first long-name slot (== entryOffset when none) and how many there are. */
  readonly lfnOffset: number;
  readonly lfnSlots: number;
  /**
   * Set when the name is not the name as stored: a long name holding '/', NUL or
   * a control character, or "." / "..", is refused (the 8.3 name is used), and
   * such an 8.3 name is escaped (each byte as %XX); says which and why.
   */
  readonly unsafeName?: string;
}

/** A run of consecutive clusters of a chain, with its bytes on the source. */
export interface ClusterRun {
  readonly cluster: number;
  readonly count: number;
  readonly offset: number;
  readonly length: number;
}

export interface WalkStats {
  readonly files: number;
  readonly directories: number;
  /** Clusters reached from the root (directory and file chains). */
  readonly clustersOwned: number;
  /** Long-name runs whose sequence or checksum did not fit (ignored; the 8.3 name is used). */
  readonly orphanLongNames: number;
  readonly deletedEntries: number;
  /** Entries whose long or 8.3 name could not be a path component (see DirEntry.unsafeName). */
  readonly unsafeNames: number;
}

/** A file or directory left out by an exclusion. */
export interface ExcludedPath {
  readonly path: string;
  /** File size; 0 for a directory. */
  readonly size: number;
  readonly isDirectory: boolean;
}

/** One sector of the copy-on-write overlay: write `data` at source `offset`. */
export interface OverlayWrite {
  readonly offset: number;
  readonly data: Buffer;
}

/**
 * Exclusions applied as deletions on a copy-on-write overlay of the source.
 * The source is never written: the reconstructed volume is the source's
 * still-allocated clusters and metadata with `writes` applied on top; the
 * freed clusters are not part of it (never read; holes or zeros).
 */
export interface ExclusionPlan {
  /** The globs that were applied (partition prefixes removed). */
  readonly patterns: readonly string[];
  /** Globs that matched nothing. */
  readonly unmatched: readonly string[];
  /** Changed metadata sectors (FAT entries, directory entries, FSInfo): sorted, non-overlapping, one sector each. */
  readonly writes: readonly OverlayWrite[];
  readonly sectorSize: number;
  readonly freedClusters: number;
  readonly freedBytes: number;
  /** Source byte extents of the freed data clusters, ascending and merged. */
  readonly freedRuns: readonly { readonly offset: number; readonly length: number }[];
  /** The matched entries and everything under matched directories (depth first). */
  readonly excluded: readonly ExcludedPath[];
  /** Sum of the excluded files' sizes. */
  readonly bytesExcluded: number;
  /**
   * FAT32 FSInfo free count: 'updated' (it was right and grew by the freed
   * clusters), 'recomputed' (it was unknown or wrong and was set from the new
   * allocation map) or 'none' (FAT12/16, no valid FSInfo, or nothing freed).
   */
  readonly fsinfo: 'updated' | 'recomputed' | 'none';
  /** FAT copies written: every copy, or only the active one when FAT32 mirroring is off. */
  readonly fatCopies: readonly number[];
  /** The allocation map after the deletion: read only these clusters. */
  readonly allocationMap: AllocationMap;
}
