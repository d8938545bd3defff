/** A FAT12/16/32 volume on a disk image or block device, read on demand and never written. */
import { LowtideError, toLowtideError } from '../errors.js';
import type { Extent } from '../io/extents.js';
import { describe, integerOption, objectOption, stringOption } from '../options.js';
import { AllocationMap } from './allocation-map.js';
import { matchExclusions, parseExcludePattern } from './exclude.js';
import { fatDateTime, fatEpoch } from './fat-time.js';
import {
  native as fsNative,
  type NativeAllocationMap,
  type NativeDirEntry,
  type NativeVolumeHandle,
  type NativeVolumeInfo,
} from '../native.js';
import { readPartitions } from './partitions.js';
import { formatOption, type DiskFormat } from '../io/guest.js';
import type {
  ClusterRun,
  DirEntry,
  ExclusionPlan,
  FatVolumeInfo,
  OverlayWrite,
  Partition,
  WalkStats,
} from './types.js';

export interface OpenVolumeOptions {
  /**
   * Partition number as readPartitions() reports it (Linux numbering; 0 is the
   * whole disk of a disk without a table). Without it: the whole source if it
   * has no table, else its only FAT partition.
   */
  partition?: number | undefined;
  /** Alternatively, the volume's byte offset on the source (no table is read). */
  offset?: number | undefined;
  /** With `offset`: the volume's length in bytes (default: to the end). */
  size?: number | undefined;
  /** How the source is read (default 'raw'; see openSource): 'qcow2' opens a volume of the guest disk. */
  format?: DiskFormat | undefined;
}

const nonFat = new Set(['ntfs', 'exfat', 'ext', 'xfs', 'btrfs', 'swap']);

function toEntry(e: NativeDirEntry): DirEntry {
  return {
    path: e.path,
    name: e.name,
    shortName: e.shortName,
    size: e.size,
    attributes: e.attributes,
    isDirectory: e.isDirectory,
    readOnly: (e.attributes & 0x01) !== 0,
    hidden: (e.attributes & 0x02) !== 0,
    system: (e.attributes & 0x04) !== 0,
    archive: (e.attributes & 0x20) !== 0,
    modified: fatDateTime(e.modifyDate, e.modifyTime) ?? fatEpoch(),
    created: fatDateTime(e.createDate, e.createTime, e.createTenths),
    accessed: fatDateTime(e.accessDate, 0),
    firstCluster: e.firstCluster,
    entryOffset: e.entryOffset,
    lfnOffset: e.lfnOffset,
    lfnSlots: e.lfnSlots,
    ...(e.unsafeName === undefined ? {} : { unsafeName: e.unsafeName }),
  };
}

function toInfo(i: NativeVolumeInfo): FatVolumeInfo {
  const bpbLabel = i.bpbLabel === '' || i.bpbLabel === 'NO NAME' ? null : i.bpbLabel;
  return {
    type: i.type,
    partitionOffset: i.partitionOffset,
    volumeSize: i.volumeSize,
    bytesPerSector: i.bytesPerSector,
    sectorsPerCluster: i.sectorsPerCluster,
    clusterSize: i.clusterSize,
    reservedSectors: i.reservedSectors,
    fatCount: i.fatCount,
    fatSectors: i.fatSectors,
    rootEntries: i.rootEntries,
    totalSectors: i.totalSectors,
    clusterCount: i.clusterCount,
    fatOffset: i.fatOffset,
    fatBytes: i.fatBytes,
    rootDirOffset: i.rootDirOffset,
    rootDirBytes: i.rootDirBytes,
    dataOffset: i.dataOffset,
    rootCluster: i.rootCluster,
    activeFat: i.activeFat,
    mirroring: i.mirroring,
    media: i.media,
    volumeId: i.volumeId,
    oemName: i.oemName,
    label: i.label ?? bpbLabel,
    dirty: i.dirty,
    bootDirty: i.bootDirty,
    fatDirty: i.fatDirty,
    fatHardError: i.fatHardError,
    fsInfo: i.fsInfo.present
      ? { valid: i.fsInfo.valid, freeCount: i.fsInfo.freeCount, nextFree: i.fsInfo.nextFree, offset: i.fsInfo.offset }
      : null,
    warnings: i.warnings,
  };
}

function toAllocationMap(m: NativeAllocationMap): AllocationMap {
  return new AllocationMap({
    bitmap: m.bitmap,
    clusterCount: m.clusterCount,
    clusterSize: m.clusterSize,
    dataOffset: m.dataOffset,
    usedClusters: m.used,
    freeClusters: m.free,
    badClusters: m.bad,
  });
}

function pathArg(name: string, value: unknown): string {
  if (typeof value !== 'string') {
    throw new LowtideError('INVALID_ARGUMENT', `${name}: expected a path from the volume root, got ${describe(value)}`);
  }
  return value;
}

/** An open FAT volume. Close it when done (or use `await using`). */
export class FatVolume {
  readonly source: string;
  /** The partition it was opened from; null when opened by offset. */
  readonly partition: Partition | null;
  #handle: NativeVolumeHandle | undefined;
  #info: FatVolumeInfo;

  /** @internal use openVolume() */
  constructor(source: string, partition: Partition | null, handle: NativeVolumeHandle) {
    this.source = source;
    this.partition = partition;
    this.#handle = handle;
    this.#info = toInfo(handle.info());
  }

  #h(): NativeVolumeHandle {
    if (!this.#handle) throw new LowtideError('CLOSED', `the volume on ${this.source} is closed`);
    return this.#handle;
  }

  async #call<T>(what: string, fn: (h: NativeVolumeHandle) => Promise<T>): Promise<T> {
    const h = this.#h();
    try {
      return await fn(h);
    } catch (err) {
      throw toLowtideError(err, 'FAT_CORRUPT', `${what} on ${this.source}`);
    }
  }

  /** Geometry, type, label, dirty state, FSInfo (read when opened). */
  info(): FatVolumeInfo {
    return this.#info;
  }

  /** The allocation map built from the active FAT. */
  async allocationMap(): Promise<AllocationMap> {
    return toAllocationMap(await this.#call('allocation map', (h) => h.allocationMap()));
  }

  /**
   * Every file and directory with its full path (depth first, directory order).
   * Every chain is checked: a cycle, a cross-link, a directory that contains its
   * own ancestor or a file larger than its chain is a LowtideError FAT_CORRUPT.
   */
  async files(): Promise<DirEntry[]> {
    return (await this.scan()).entries;
  }

  /** Like files(), with counts of what the walk saw. */
  async scan(): Promise<{ entries: DirEntry[]; stats: WalkStats }> {
    const r = await this.#call('walk', (h) => h.walk());
    return { entries: r.entries.map(toEntry), stats: r.stats };
  }

  /** Entries of one directory ("/" is the root); names match case-insensitively (long or 8.3). */
  async list(dirPath = '/'): Promise<DirEntry[]> {
    const p = pathArg('dirPath', dirPath);
    return (await this.#call(`list ${p}`, (h) => h.list(p))).map(toEntry);
  }

  /** The entry at a path (NOT_FOUND when missing). */
  async stat(path: string): Promise<DirEntry> {
    const p = pathArg('path', path);
    return toEntry(await this.#call(`stat ${p}`, (h) => h.stat(p)));
  }

  /** A file's bytes. */
  async readFile(path: string): Promise<Buffer> {
    const p = pathArg('path', path);
    return this.#call(`read ${p}`, (h) => h.readFile(p));
  }

  /**
   * Like files(), each entry with its data extents as fileExtents() gives
   * them (empty for directories and empty files), in one pass over the volume.
   */
  async filesWithExtents(): Promise<{ entry: DirEntry; extents: Extent[] }[]> {
    const r = await this.#call('walk', (h) => h.walk(true, true));
    return r.entries.map((e, i) => ({ entry: toEntry(e), extents: r.extents[i]! }));
  }

  /**
   * @internal The backup catalog's lines for this volume (what filesWithExtents()
   * gives, as lib/repo/catalog.ts CatalogEntry JSON lines, entries in or under an
   * `excluded` path left out), built off the JS thread in frames of about
   * `frameBytes`. `modified` is read as local time by the C library.
   */
  async catalogFrames(
    partition: number,
    excluded: string[],
    frameBytes: number,
  ): Promise<{ text: Buffer; entries: number }[]> {
    return this.#call('catalog', (h) => h.catalog(partition, excluded, frameBytes));
  }

  /** Source byte extents of a file's data, in file order, the last one cut to the file size. */
  async fileExtents(path: string): Promise<Extent[]> {
    const p = pathArg('path', path);
    const r = await this.#call(`extents of ${p}`, (h) => h.fileExtents(p));
    return r.extents;
  }

  /** The validated cluster chain starting at `cluster`. */
  async chain(cluster: number): Promise<ClusterRun[]> {
    const c = integerOption('cluster', cluster, 0, 2, this.#info.clusterCount + 1);
    return this.#call(`chain of cluster ${c}`, (h) => h.chain(c));
  }

  /** Source offset of the first byte where a FAT copy differs from FAT #0; null when all agree. */
  async compareFatCopies(): Promise<number | null> {
    return this.#call('FAT comparison', (h) => h.compareFats());
  }

  /**
   * Plans leaving out the files and directories that match `patterns` (see
   * lib/fs/exclude.ts for the glob rules): the matches are deleted on a
   * copy-on-write overlay — their chains freed in every live FAT copy, their
   * directory entries and long-name slots marked deleted, directories with
   * their whole subtree, FSInfo adjusted — and the source is never written.
   * A pattern may carry an `N:` prefix only when N is this volume's partition.
   *
   * Throws LowtideError INVALID_ARGUMENT for a bad pattern, FAT_CORRUPT when
   * the deletion would be unsafe: a chain that loops, leaves the volume or
   * holds a free or bad entry, or a cluster shared by an excluded and a kept
   * file (cross-link; the message names both paths, the cluster and the offset).
   */
  async planExclusions(patterns: readonly string[]): Promise<ExclusionPlan> {
    if (!Array.isArray(patterns)) {
      throw new LowtideError(
        'INVALID_ARGUMENT',
        `patterns: expected an array of glob strings, got ${describe(patterns)}`,
      );
    }
    const globs: string[] = [];
    patterns.forEach((p: unknown, i) => {
      if (typeof p !== 'string') {
        throw new LowtideError('INVALID_ARGUMENT', `patterns[${i}]: expected a glob string, got ${describe(p)}`);
      }
      const parsed = parseExcludePattern(p);
      if (parsed.partition !== undefined && parsed.partition !== this.partition?.index) {
        const mine = this.partition ? `partition ${this.partition.index}` : 'a volume opened by offset';
        throw new LowtideError(
          'INVALID_ARGUMENT',
          `patterns[${i}]: ${JSON.stringify(p)} is for partition ${parsed.partition}, but this volume is ${mine}`,
        );
      }
      globs.push(parsed.glob);
    });
    const h = this.#h();
    // A listing walk (directory chains only): every chain is checked by planDeletion,
    // which names both paths of a cross-link.
    const walked = await this.#call('walk', (hh) => hh.walk(false));
    const { matched, counts } = matchExclusions(walked.entries, globs);
    const r = await this.#call('exclusion plan', () => h.planDeletion(matched.map((e) => e.path)));
    const writes: OverlayWrite[] = [];
    for (let i = 0; i < r.writeOffsets.length; i++) {
      writes.push({ offset: r.writeOffsets[i]!, data: r.writeData.subarray(i * r.sectorSize, (i + 1) * r.sectorSize) });
    }
    return {
      patterns: globs,
      unmatched: globs.filter((_, i) => counts[i] === 0),
      writes,
      sectorSize: r.sectorSize,
      freedClusters: r.freedClusters,
      freedBytes: r.freedBytes,
      freedRuns: r.freedRuns,
      excluded: r.excluded.map((e) => ({ path: e.path, size: e.size, isDirectory: e.isDirectory })),
      bytesExcluded: r.bytesExcluded,
      fsinfo: r.fsinfo,
      fatCopies: r.fatCopies,
      allocationMap: toAllocationMap(r.allocationMap),
    };
  }

  close(): void {
    const h = this.#handle;
    this.#handle = undefined;
    h?.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.close();
  }
}

async function choosePartition(path: string, wanted: number | undefined, format: DiskFormat): Promise<Partition> {
  const table = await readPartitions(path, { format });
  const parts = table.partitions;
  if (wanted === undefined) {
    if (table.kind === 'none' && parts.length === 1) return parts[0]!;
    const fat = parts.filter((p) => p.fileSystem !== null && p.fileSystem.startsWith('fat'));
    if (fat.length === 1) return fat[0]!;
    throw new LowtideError(
      'INVALID_ARGUMENT',
      `options.partition: ${path} has ${fat.length === 0 ? 'no FAT partition' : `${fat.length} FAT partitions`}` +
        ` (partitions: ${parts.map((p) => `${p.index} ${p.fileSystem ?? 'extended'}`).join(', ') || 'none'}); choose one`,
    );
  }
  const p = parts.find((q) => q.index === wanted);
  if (!p) {
    throw new LowtideError(
      'INVALID_ARGUMENT',
      `options.partition: expected one of ${parts.map((q) => q.index).join(', ') || '(no partitions)'}, got ${wanted}`,
    );
  }
  if (p.extended) {
    throw new LowtideError(
      'INVALID_ARGUMENT',
      `options.partition: partition ${wanted} is an extended container, not a volume`,
    );
  }
  if (p.fileSystem !== null && nonFat.has(p.fileSystem)) {
    throw new LowtideError(
      'UNSUPPORTED',
      `partition ${wanted} of ${path} holds ${p.fileSystem}, not a FAT file system`,
    );
  }
  return p;
}

/**
 * Opens a FAT volume read-only: a partition of a disk, a table-less disk, or
 * a volume at a byte offset. Throws LowtideError FAT_CORRUPT when the boot
 * sector or its derived values are invalid, PARTITION_CORRUPT for a bad table.
 */
export async function openVolume(path: string, options: OpenVolumeOptions = {}): Promise<FatVolume> {
  stringOption('path', path);
  const opts = objectOption('options', options);
  const partitionNo = integerOption('options.partition', opts.partition, -1, 0);
  const offset = integerOption('options.offset', opts.offset, -1, 0);
  const size = integerOption('options.size', opts.size, 0, 1);
  const format = formatOption('options.format', opts.format);
  if (partitionNo >= 0 && offset >= 0) {
    throw new LowtideError('INVALID_ARGUMENT', 'options: give either partition or offset, not both');
  }
  if (opts.size !== undefined && offset < 0) {
    throw new LowtideError('INVALID_ARGUMENT', 'options.size: only allowed together with options.offset');
  }
  let partition: Partition | null = null;
  let start = offset >= 0 ? offset : 0;
  let length = size;
  if (offset < 0) {
    partition = await choosePartition(path, partitionNo >= 0 ? partitionNo : undefined, format);
    start = partition.start;
    length = partition.size;
  }
  let handle: NativeVolumeHandle;
  try {
    handle = await fsNative.openVolume(path, start, length, format);
  } catch (err) {
    const where = partition ? `partition ${partition.index} of ${path}` : `volume at offset ${start} of ${path}`;
    throw toLowtideError(err, 'FAT_CORRUPT', `cannot open the FAT ${where}`);
  }
  return new FatVolume(path, partition, handle);
}
