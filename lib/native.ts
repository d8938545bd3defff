/**
 * The ONLY module that loads the addon. It gives the binding TypeScript types;
 * everything else imports `native` from here.
 */
import { createRequire } from 'node:module';
import { LowtideError } from './errors.js';
import { packageRoot } from './package.js';

export interface NativeSourceInfo {
  size: number;
  logicalSectorSize: number;
  physicalSectorSize: number;
  direct: boolean;
  kind: 'file' | 'block';
}

export interface NativeSourceHandle {
  info(): NativeSourceInfo;
  /** Drops this handle's reference; running readers keep the descriptor until they end. */
  close(): void;
  /** One read of `length` bytes at `offset` on the thread pool; resolves with its latency in ns (the pread alone). */
  probe(offset: number, length: number): Promise<number>;
}

export interface NativeFileMapping {
  size: number;
  /** statfs f_type of the file's file system. */
  fsMagic: number;
  /** XFS: the file's data is on the realtime device. */
  realtime: boolean;
  devMajor: number;
  devMinor: number;
  /** The block device node of the file's st_dev, or null (deviceReason says why). */
  device: string | null;
  deviceReason: string;
  /** False when FIEMAP is refused here (fiemapReason says why). */
  fiemap: boolean;
  fiemapReason: string;
  fiemapErrno: number;
  /** 4-tuples [logical, physical, length, flags] sorted by logical offset. */
  extents: Float64Array;
}

export interface NativeReaderOptions {
  blockSize: number;
  maxBlockSize: number;
  queueDepth: number;
  maxQueueDepth: number;
  heldBuffers: number;
  ordered: boolean;
  engine: 'auto' | 'io_uring' | 'threads';
  pacingNs: number;
  /**
   * Cut requests at multiples of blockSize from each extent's start, not at
   * absolute multiples (extents that are pieces of a guest view, each within
   * one maxBlockSize unit of guest offsets).
   */
  splitWithinExtents?: boolean | undefined;
}

export interface NativeReaderStats {
  requestsCompleted: number;
  bytesDelivered: number;
  bytesRead: number;
  queueDepth: number;
  blockSize: number;
  inFlight: number;
  maxInFlight: number;
  pacingNs: number;
}

/**
 * A running read. `next()` resolves with a batch of completed blocks as a
 * Float64Array of 5-tuples [slot, offset, length, byteOffsetInBuffer, latencyNs],
 * or null at the end. Each delivered slot must be given back with release().
 */
export interface NativeReader {
  readonly buffer: ArrayBuffer;
  readonly slotSize: number;
  readonly slotCount: number;
  readonly engine: 'io_uring' | 'threads';
  next(): Promise<Float64Array | null>;
  release(slot: number): boolean;
  setQueueDepth(queueDepth: number): void;
  setBlockSize(blockSize: number): void;
  /** Minimum time between two read submissions, in nanoseconds (0: none). */
  setPacing(ns: number): void;
  /**
   * Adds the reads handed to the kernel, so far and from now on, to the
   * 64-bit counter at `map[8 * index]` (a writable mapShared() buffer),
   * atomically: other processes read it. Once per reader.
   */
  shareReads(map: ArrayBuffer, index: number): void;
  stats(): NativeReaderStats;
  close(): Promise<void>;
}

// --- partition tables and FAT (native/napi/volume.cc) --------------------------
// Every byte offset is an offset on the source (file or block device), not inside the volume.

export interface NativePartition {
  /** Linux numbering: MBR 1-4 primary, 5+ logical; GPT slot + 1; 0 = whole disk. */
  index: number;
  start: number;
  size: number;
  /** MBR type byte (0 for GPT and whole disk). */
  mbrType: number;
  bootable: boolean;
  /** An MBR extended container (its logical partitions are listed separately). */
  extended: boolean;
  logical: boolean;
  /** GPT type GUID, '' otherwise. */
  typeGuid: string;
  uniqueGuid: string;
  attributes: bigint;
  /** GPT partition name, '' otherwise. */
  name: string;
  /** Friendly name of the type, '' when unknown. */
  typeName: string;
  /** fat12/fat16/fat32/ntfs/exfat/ext/xfs/btrfs/swap/unknown; '' for an extended container. */
  fs: string;
  truncated: boolean;
}

export interface NativePartitionTable {
  kind: 'mbr' | 'gpt' | 'none';
  sectorSize: number;
  diskSize: number;
  diskGuid: string;
  mbrSignature: number;
  gptBackupUsed: boolean;
  partitions: NativePartition[];
  warnings: string[];
}

export interface NativeFsInfo {
  present: boolean;
  valid: boolean;
  freeCount: number | null;
  nextFree: number | null;
  offset: number;
}

export interface NativeVolumeInfo {
  type: 'fat12' | 'fat16' | 'fat32';
  partitionOffset: number;
  volumeSize: number;
  bytesPerSector: number;
  sectorsPerCluster: number;
  clusterSize: number;
  reservedSectors: number;
  fatCount: number;
  fatSectors: number;
  rootEntries: number;
  totalSectors: number;
  clusterCount: number;
  fatOffset: number;
  fatBytes: number;
  rootDirOffset: number;
  rootDirBytes: number;
  dataOffset: number;
  rootCluster: number;
  fsInfoSector: number;
  backupBootSector: number;
  activeFat: number;
  mirroring: boolean;
  media: number;
  hiddenSectors: number;
  volumeId: number;
  oemName: string;
  bpbLabel: string;
  fsTypeLabel: string;
  label: string | null;
  dirty: boolean;
  bootDirty: boolean;
  fatDirty: boolean;
  fatHardError: boolean;
  fsInfo: NativeFsInfo;
  warnings: string[];
}

export interface NativeDirEntry {
  path: string;
  name: string;
  shortName: string;
  attributes: number;
  isDirectory: boolean;
  size: number;
  firstCluster: number;
  createDate: number;
  createTime: number;
  createTenths: number;
  accessDate: number;
  modifyDate: number;
  modifyTime: number;
  entryOffset: number;
  lfnOffset: number;
  lfnSlots: number;
  unsafeName?: string;
}

export interface NativeAllocationMap {
  /** Bit (c - 2) of the little-endian bitmap is cluster c. */
  bitmap: Uint8Array;
  firstCluster: number;
  clusterCount: number;
  clusterSize: number;
  dataOffset: number;
  used: number;
  free: number;
  bad: number;
}

export interface NativeWalkStats {
  files: number;
  directories: number;
  clustersOwned: number;
  orphanLongNames: number;
  deletedEntries: number;
  unsafeNames: number;
}

export interface NativeClusterRun {
  cluster: number;
  count: number;
  offset: number;
  length: number;
}

export interface NativeExcludedEntry {
  path: string;
  /** 0 for directories. */
  size: number;
  isDirectory: boolean;
  /** One of the requested paths (false: inside a requested directory). */
  top: boolean;
}

/** The result of planDeletion(): overlay writes, what was freed, and the allocation map after. */
export interface NativeDeletionPlan {
  sectorSize: number;
  /** Source offsets of the overlay sectors, ascending; sector i is writeData[i * sectorSize, (i + 1) * sectorSize). */
  writeOffsets: Float64Array;
  writeData: Buffer;
  freedClusters: number;
  freedBytes: number;
  /** 0 when nothing was freed. */
  lowestFreedCluster: number;
  freedRuns: { offset: number; length: number }[];
  excluded: NativeExcludedEntry[];
  bytesExcluded: number;
  /** Directory slots (8.3 and long-name) marked deleted. */
  entriesMarked: number;
  fsinfo: 'updated' | 'recomputed' | 'none';
  fsinfoFreeBefore: number | null;
  fsinfoFreeAfter: number | null;
  fsinfoNextFreeBefore: number | null;
  fsinfoNextFreeAfter: number | null;
  /** FAT copies written (all of them, or only the active one when FAT32 mirroring is off). */
  fatCopies: number[];
  allocationMap: NativeAllocationMap;
}

export interface NativeVolumeHandle {
  info(): NativeVolumeInfo;
  allocationMap(): Promise<NativeAllocationMap>;
  list(path: string): Promise<NativeDirEntry[]>;
  stat(path: string): Promise<NativeDirEntry>;
  /** checkFiles false: only directory chains are walked (files' chains are neither checked nor counted). */
  walk(checkFiles?: boolean): Promise<{ entries: NativeDirEntry[]; stats: NativeWalkStats }>;
  /** withExtents: each entry's data extents too, in the order of `entries` (none for directories). */
  walk(
    checkFiles: true,
    withExtents: true,
  ): Promise<{ entries: NativeDirEntry[]; extents: { offset: number; length: number }[][]; stats: NativeWalkStats }>;
  chain(cluster: number): Promise<NativeClusterRun[]>;
  fileExtents(path: string): Promise<{ entry: NativeDirEntry; extents: { offset: number; length: number }[] }>;
  /**
   * The backup catalog's JSON lines (lib/repo/catalog.ts CatalogEntry) of every
   * entry not in or under an `excluded` path, walked and formatted off the JS
   * thread, in frames of about `frameBytes`.
   */
  catalog(partition: number, excluded: string[], frameBytes: number): Promise<{ text: Buffer; entries: number }[]>;
  readFile(path: string): Promise<Buffer>;
  /** Source offset of the first byte where a FAT copy differs from FAT 0, or null. */
  compareFats(): Promise<number | null>;
  /**
   * Plans deleting `paths` (and the subtrees of directories among them) on a
   * copy-on-write overlay; the source is never written. Off the JS thread.
   */
  planDeletion(paths: string[]): Promise<NativeDeletionPlan>;
  close(): void;
}

export interface NativeFsBinding {
  /** `format` (default 'raw'): 'qcow2' or 'auto' read a qcow2 image as its guest disk. */
  readPartitions(path: string, format?: 'raw' | 'qcow2' | 'auto'): Promise<NativePartitionTable>;
  /** `size` 0: to the end of the source; a size past the end is cut to it. */
  openVolume(
    path: string,
    offset: number,
    size: number,
    format?: 'raw' | 'qcow2' | 'auto',
  ): Promise<NativeVolumeHandle>;
}

// --- virtual disks (native/napi/guest.cc) ----------------------------------------

export interface NativeGuestLayer {
  path: string;
  format: 'qcow2' | 'raw';
  /** Guest bytes the layer covers. */
  size: number;
  fileSize: number;
  version?: number;
  clusterSize?: number;
  extendedL2?: boolean;
  compression?: 'deflate' | 'zstd';
  dirty?: boolean;
  backingFile?: string | null;
  backingFormat?: string | null;
  bitmapsExtension?: boolean;
  snapshots?: number;
}

export interface NativeGuestInfo {
  format: 'qcow2' | 'raw';
  /** The format was detected ('auto'), not named. */
  probed: boolean;
  size: number;
  layers: NativeGuestLayer[];
}

export interface NativeGuestHandle {
  info(): NativeGuestInfo;
  /**
   * The guest range resolved through the backing chain, as 7-tuples
   * [guest, length, kind, layer, host, csize, inner]; kind 0 unallocated,
   * 1 zero, 2 data (at `host` in layer `layer`'s file), 3 compressed.
   */
  map(offset: number, length: number): Promise<Float64Array>;
  /** Guest bytes (at most 64 MiB), read with pread. */
  read(offset: number, length: number): Promise<Buffer>;
  /** One cluster of qcow2 layer `layer` from the bytes of its compressed cluster at `host` (read elsewhere). */
  decompress(layer: number, host: number, bytes: Uint8Array): Promise<Buffer>;
  /** The persistent dirty bitmaps of the image named (layer 0). */
  bitmaps(): Promise<{ name: string; granularity: number; inUse: boolean; enabled: boolean }[]>;
  /** The guest ranges a bitmap marks, as offset/length pairs; BITMAP_IN_USE, NOT_FOUND. */
  bitmapExtents(name: string): Promise<Float64Array>;
  close(): void;
}

export interface NativeBinding extends NativeFsBinding {
  openSource(path: string, direct: 'auto' | 'on' | 'off'): Promise<NativeSourceHandle>;
  openGuest(path: string, format: 'raw' | 'qcow2' | 'auto'): Promise<NativeGuestHandle>;
  /**
   * With `device` and `deviceOffsets` (one per extent, -1: read from `source`),
   * the extents with an offset are read from the device at that offset; blocks
   * still carry source offsets. Or with `device` and `deviceRuns` instead
   * (deviceOffsets undefined): an offset table's runs as [offset, length,
   * device offset] triples, sorted; requests are cut where runs end and read
   * from the device inside runs with a device offset (-1, or outside every
   * run: from `source`). Extents and runs are both read in place.
   */
  Reader: new (
    source: NativeSourceHandle,
    extents: Float64Array,
    options: NativeReaderOptions,
    device?: NativeSourceHandle,
    deviceOffsets?: Float64Array,
    deviceRuns?: Float64Array,
  ) => NativeReader;
  /**
   * FIEMAP of the bytes [start, start + length) of a regular file (length 0:
   * to its end), opened read-only; `sync` flushes delayed allocations first.
   */
  mapFile(path: string, start: number, length: number, sync: boolean): Promise<NativeFileMapping>;
  isZero(view: ArrayBufferView): boolean;
  /**
   * SHA-256 on the thread pool (HMAC-SHA256 with a 32-byte `macKey`); null
   * when zeroCheck and every byte is zero.
   */
  digest(view: Uint8Array, zeroCheck: boolean, macKey?: Uint8Array): Promise<Buffer | null>;
  /** AES-256-GCM (native/crypto/aead.h): nonce | ciphertext | tag of `view`, with `aad` authenticated. */
  seal(view: Uint8Array, key: Uint8Array, aad: string): Promise<Buffer>;
  /**
   * Authenticates and decrypts a sealed object in place: the plaintext is
   * view[12, 12 + n). Null when the object was altered, or sealed with
   * another key or `aad`.
   */
  unseal(view: Uint8Array, key: Uint8Array, aad: string): Promise<number | null>;
  digestSync(view: Uint8Array): Buffer;
  /** flock(fd, LOCK_EX | LOCK_NB): false when another holder has it. */
  tryLockExclusive(fd: number): boolean;
  /** flock(fd, LOCK_SH | LOCK_NB): false when an exclusive holder has it. */
  tryLockShared(fd: number): boolean;
  /**
   * A copy-on-write clone (FICLONE) of the whole file `source` as the new file
   * `target` (mode 0600), fsync'd. Rejects with UNSUPPORTED when the file
   * system cannot clone, OUTPUT_EXISTS, NOT_FOUND, NO_SPACE or IO_ERROR.
   */
  cloneFile(source: string, target: string): Promise<void>;
  /** A zero-filled Buffer aligned to 4096 bytes (for O_DIRECT writes). */
  alignedBuffer(size: number): Buffer;
  /**
   * The first `size` bytes of a file, mapped MAP_SHARED (read-write or
   * read-only): other processes that map the file see every change at once.
   */
  mapShared(path: string, writable: boolean, size: number): ArrayBuffer;
  /** sync_file_range(SYNC_FILE_RANGE_WRITE): start writeback of a range now, without waiting. */
  startWriteback(fd: number, offset: number, length: number): boolean;
  ioUringAvailable(): boolean;
  /** The number of the addon's worker threads (1..256; default: online CPUs, 2 to 16). */
  setPoolThreads(n: number): void;
  poolStats(): { threads: number; executed: number };
  /** libzstd.so.1, loaded at run time: its version, or why it could not be loaded. */
  zstdInfo(): { version: string; error?: undefined } | { version?: undefined; error: string };
  /** One zstd frame (content size recorded), on the thread pool. */
  zstdCompress(view: Uint8Array, level: number): Promise<Buffer>;
  /** Compresses into `dst` (at least zstdCompressBound(view.length) bytes); resolves with the size. */
  zstdCompressInto(view: Uint8Array, dst: Uint8Array, level: number): Promise<number>;
  /**
   * Writes one chunk file of the repository (native/repo/chunk_file.h): unless
   * finalPath exists, compresses unless a sample says it will not shrink, writes
   * header and body to tmpPath (sealed with `key` and `aad` when given), fsyncs,
   * renames. Rejects with REPO_FULL, WRITE_FAILED, IO_ERROR or INTERNAL.
   */
  storeChunkFile(
    view: Uint8Array,
    level: number,
    tmpPath: string,
    finalPath: string,
    key?: Uint8Array,
    aad?: string,
  ): Promise<{ written: boolean; storedBytes: number; encoding: 'raw' | 'zstd' }>;
  /**
   * The bytes storeChunkFile would write, in memory (a remote repository's
   * chunk object or pack record), written into `dst` (at least
   * view.length + 44 bytes): header and body, compressed unless a sample says
   * it will not shrink, sealed with `key` and `aad` when given. Resolves with
   * their size; rejects with INTERNAL.
   */
  encodeChunk(view: Uint8Array, dst: Uint8Array, level: number, key?: Uint8Array, aad?: string): Promise<number>;
  zstdCompressBound(size: number): number;
  /** Decompresses into `dst`; resolves with the size; rejects on corrupt input or a too small `dst`. */
  zstdDecompressInto(view: Uint8Array, dst: Uint8Array): Promise<number>;
  /** One or more frames; rejects on corrupt input or more than maxSize bytes. */
  zstdDecompress(view: Uint8Array, maxSize: number): Promise<Buffer>;
}

function load(): NativeBinding {
  const require = createRequire(import.meta.url);
  const nodeGypBuild = require('node-gyp-build') as (dir: string) => unknown;
  try {
    return nodeGypBuild(packageRoot) as NativeBinding;
  } catch (err) {
    throw new LowtideError(
      'UNSUPPORTED',
      `lowtide's native addon is not available for ${process.platform}-${process.arch} (Node ${process.versions.node}): ` +
        `${(err as Error).message.split('\n')[0]}. Build it with "npm rebuild lowtide" (needs a C++ compiler, python3 and make)`,
      { cause: err },
    );
  }
}

let binding: NativeBinding | undefined;

/**
 * The addon, loaded on first use: errors, types and the pure helpers import
 * without it, and a missing build is a LowtideError (UNSUPPORTED) at the
 * first call that needs it, not a failure to import the package.
 */
export const native: NativeBinding = new Proxy({} as NativeBinding, {
  get(_target, property) {
    binding ??= load();
    return Reflect.get(binding, property) as unknown;
  },
});
