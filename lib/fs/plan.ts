/**
 * The image planner: which bytes of a disk an image (or backup) must read.
 *
 * For each FAT partition: the boot sector and reserved area, the FATs, the
 * FAT12/16 root directory and the clusters still allocated; free clusters
 * (deleted files' old data included) are never read and come out as holes.
 * Partitions with another or an unknown file system, and space outside
 * partitions (tables, gaps, EBRs), are read in full. With exclusions, the
 * excluded files are deleted on a copy-on-write overlay (the source is never
 * written): the overlay's sectors are written over the image, and the freed
 * clusters are not read.
 */
import { open } from 'node:fs/promises';
import { LowtideError, toLowtideError } from '../errors.js';
import { type Extent } from '../io/extents.js';
import { ExtentList } from '../io/extent-list.js';
import { openSource, type Source } from '../io/source.js';
import { formatOption, type DiskFormat } from '../io/guest.js';
import { booleanOption, objectOption, stringOption } from '../options.js';
import { readPartitions } from './partitions.js';
import { parseExcludePattern } from './exclude.js';
import { openVolume } from './volume.js';
import type { AllocationMap } from './allocation-map.js';
import type { FatType, OverlayWrite, Partition, PartitionTableKind } from './types.js';

export interface PlanOptions {
  /** The disk, partition or image to plan (opened read-only). */
  source: string;
  /** Read every block; no file-system parsing decides anything (default false). */
  allBlocks?: boolean | undefined;
  /**
   * Paths to leave out, from the volume root with '/': case-insensitive, long or
   * 8.3 names, '*' and '?' within a name, '**' across directories; a directory
   * takes its subtree. "N:pattern" limits a pattern to partition N.
   */
  exclude?: readonly string[] | undefined;
  /** An unparseable file system is an error instead of being copied in full with a warning. */
  strict?: boolean | undefined;
  /**
   * How the source is read (default 'raw'; see openSource). A virtual disk is
   * planned on its guest disk, and only the ranges its chain holds are read.
   */
  format?: DiskFormat | undefined;
}

/** A sector-aligned write over the image: metadata changed by the overlay. */
export type { OverlayWrite } from './types.js';

export interface ExcludedEntry {
  partition: number;
  path: string;
  size: number;
  isDirectory: boolean;
}

export interface PlannedPartition {
  index: number;
  start: number;
  size: number;
  fileSystem: string | null;
  /** 'used': only allocated data; 'all': copied in full; 'container': an MBR extended container. */
  mode: 'used' | 'all' | 'container';
  /** Bytes of this partition the plan reads. */
  bytesToRead: number;
  fat: {
    type: FatType;
    clusterSize: number;
    totalClusters: number;
    usedClusters: number;
    freeClusters: number;
    badClusters: number;
    label: string | null;
  } | null;
  warnings: string[];
}

export interface ImagePlan {
  source: string;
  size: number;
  table: PartitionTableKind | 'unreadable' | 'not-parsed';
  /** What to read from the source: sorted, merged, compact (16 bytes an extent). */
  extents: ExtentList;
  bytesToRead: number;
  overlay: OverlayWrite[];
  partitions: PlannedPartition[];
  excluded: ExcludedEntry[];
  bytesExcluded: number;
  warnings: string[];
}

interface ParsedPattern {
  partition: number | undefined;
  glob: string;
  text: string;
}

function parsePatterns(patterns: readonly string[]): ParsedPattern[] {
  if (!Array.isArray(patterns)) {
    throw new LowtideError('INVALID_ARGUMENT', `exclude: expected an array of patterns, got ${typeof patterns}`);
  }
  return patterns.map((p, i) => {
    if (typeof p !== 'string' || p.trim() === '') {
      throw new LowtideError(
        'INVALID_ARGUMENT',
        `exclude[${i}]: expected a non-empty pattern, got ${JSON.stringify(p)}`,
      );
    }
    const parsed = parseExcludePattern(p);
    return { partition: parsed.partition, glob: parsed.glob, text: p };
  });
}

/** FAT partition types of an MBR (FAT12, FAT16 <32M, FAT16, FAT32 CHS/LBA, FAT16 LBA). */
const FAT_MBR_TYPES = new Set(['0x01', '0x04', '0x06', '0x0b', '0x0c', '0x0e']);

/**
 * A partition the detector did not recognise, but which claims to be FAT: an
 * MBR FAT type, or "FAT" in a boot sector's file-system-type field.
 */
async function claimsFat(path: string, p: Partition, readSector: SectorReader | undefined): Promise<boolean> {
  if (FAT_MBR_TYPES.has(p.type.toLowerCase())) return true;
  let b: Buffer;
  if (readSector) {
    b = await readSector(p.start);
  } else {
    const fh = await open(path, 'r');
    try {
      b = Buffer.alloc(512);
      const { bytesRead } = await fh.read(b, 0, 512, p.start);
      if (bytesRead < 512) return false;
    } finally {
      await fh.close();
    }
  }
  if (b.length < 512 || b[510] !== 0x55 || b[511] !== 0xaa) return false;
  return b.toString('latin1', 0x36, 0x39) === 'FAT' || b.toString('latin1', 0x52, 0x57) === 'FAT32';
}

/** Reads the 512 bytes at a guest offset (virtual disks). */
type SectorReader = (offset: number) => Promise<Buffer>;

function isFat(p: Partition): boolean {
  return p.fileSystem === 'fat12' || p.fileSystem === 'fat16' || p.fileSystem === 'fat32';
}

/**
 * Partitions (extended containers aside) that share bytes: for each one, the
 * ranges of the others that overlap it. A warning names each pair; the plan
 * then reads every byte of an overlap, whatever either file system says.
 */
function findOverlaps(partitions: readonly Partition[], size: number, warnings: string[]): Map<number, Extent[]> {
  const volumes = partitions
    .filter((p) => !p.extended)
    .map((p) => ({ p, start: p.start, end: Math.min(p.start + p.size, size) }))
    .sort((a, b) => a.start - b.start);
  const out = new Map<number, Extent[]>();
  const add = (index: number, e: Extent): void => {
    const list = out.get(index);
    if (list === undefined) out.set(index, [e]);
    else list.push(e);
  };
  for (let i = 0; i < volumes.length; i++) {
    const a = volumes[i]!;
    for (let j = i + 1; j < volumes.length && volumes[j]!.start < a.end; j++) {
      const b = volumes[j]!;
      const from = b.start;
      const to = Math.min(a.end, b.end);
      if (to <= from) continue;
      warnings.push(
        `partitions ${a.p.index} and ${b.p.index} overlap (bytes ${from} to ${to}, ${to - from} bytes): ` +
          'every byte of the overlap is copied',
      );
      add(a.p.index, { offset: b.start, length: b.end - b.start });
      add(b.p.index, { offset: a.start, length: a.end - a.start });
    }
  }
  return out;
}

/** The free clusters of a FAT partition that are not read: those of `map` in [from, to), less `others`. */
interface FreeClusters {
  map: AllocationMap;
  from: number;
  to: number;
  /** Ranges of partitions overlapping this one: read whatever the map says. */
  others: ExtentList | undefined;
}

/**
 * `whole` less the free clusters, streamed from the allocation maps' bitmaps
 * into the result: no list of the free extents is ever made. Partitions' free
 * clusters are disjoint (overlaps are read), so in partition order they come
 * in offset order.
 */
function readExtents(whole: ExtentList, notRead: FreeClusters[]): ExtentList {
  const sorted = [...notRead].sort((a, b) => a.from - b.from);
  const each = (f: FreeClusters, visit: (offset: number, length: number) => void): void => {
    if (f.others === undefined) return f.map.eachFreeExtent(f.from, f.to, visit);
    const others = f.others;
    let k = 0;
    f.map.eachFreeExtent(f.from, f.to, (offset, length) => {
      let start = offset;
      const end = offset + length;
      while (k < others.length && others.endAt(k) <= start) k++;
      for (let j = k; j < others.length && others.offsetAt(j) < end; j++) {
        if (others.offsetAt(j) > start) visit(start, others.offsetAt(j) - start);
        start = Math.max(start, others.endAt(j));
      }
      if (start < end) visit(start, end - start);
    });
  };
  // Room for every extent up front: growing a list of millions would briefly hold two.
  let capacity = whole.length + 1;
  for (const f of sorted) each(f, () => capacity++);
  return ExtentList.subtractStream(whole, capacity, (remove) => {
    for (const f of sorted) each(f, remove);
  });
}

/** Plans the reads of an image of `options.source`. The source is only read. */
export async function planImage(options: PlanOptions): Promise<ImagePlan> {
  const opts = objectOption('options', options);
  const sourcePath = stringOption('source', opts.source);
  const format = formatOption('format', opts.format);
  const src = await openSource(sourcePath, { direct: 'off', format });
  try {
    return await planImageOf(src, opts);
  } finally {
    await src.close();
  }
}

/**
 * @internal planImage() on an open `source` (opened with `options.format`):
 * a job plans on the source it reads, so a virtual disk's chain is opened
 * and mapped once.
 */
export async function planImageOf(src: Source, options: Omit<PlanOptions, 'source'>): Promise<ImagePlan> {
  const opts = objectOption('options', options);
  const sourcePath = src.path;
  const allBlocks = booleanOption('allBlocks', opts.allBlocks, false);
  const strict = booleanOption('strict', opts.strict, false);
  const patterns = parsePatterns((opts.exclude as readonly string[] | undefined) ?? []);
  if (allBlocks && patterns.length > 0) {
    throw new LowtideError(
      'INVALID_ARGUMENT',
      'exclude: exclusions need used-blocks imaging; they cannot be combined with allBlocks',
    );
  }
  const format = formatOption('format', opts.format);
  const size = src.size;
  // A virtual disk: only what its chain holds is ever read.
  let allocated: Extent[] | undefined;
  let readSector: SectorReader | undefined;
  const fsFormat: DiskFormat = src.format === 'qcow2' ? format : 'raw';
  if (src.format === 'qcow2') {
    allocated = await src.allocation();
    readSector = async (offset) => {
      const end = Math.min(size, offset + 512);
      const chunks: Buffer[] = [];
      if (end > offset) {
        for await (const b of src.read([{ offset, length: end - offset }], { blockSize: 4096, queueDepth: 1 })) {
          chunks.push(Buffer.from(b.data));
        }
      }
      return Buffer.concat(chunks);
    };
  }
  const whole = ExtentList.from(allocated ?? [{ offset: 0, length: size }]);
  const plan: ImagePlan = {
    source: sourcePath,
    size,
    table: 'not-parsed',
    extents: whole,
    bytesToRead: whole.totalLength,
    overlay: [],
    partitions: [],
    excluded: [],
    bytesExcluded: 0,
    warnings: [],
  };
  if (allBlocks) return plan;

  let table;
  try {
    table = await readPartitions(sourcePath, { format: fsFormat });
  } catch (err) {
    const e = toLowtideError(err, 'PARTITION_CORRUPT');
    if (strict || patterns.length > 0) throw e;
    plan.table = 'unreadable';
    plan.warnings.push(`${e.message}; copying every block`);
    return plan;
  }
  plan.table = table.kind;
  for (const w of table.warnings) plan.warnings.push(w);

  for (const pat of patterns) {
    if (pat.partition !== undefined && !table.partitions.some((p) => p.index === pat.partition && isFat(p))) {
      throw new LowtideError(
        'INVALID_ARGUMENT',
        `exclude: ${JSON.stringify(pat.text)} names partition ${pat.partition}, but the FAT partitions of ${sourcePath} are ${
          table.partitions
            .filter(isFat)
            .map((p) => p.index)
            .join(', ') || 'none'
        }`,
      );
    }
  }

  const wholeDisk: Partition = {
    index: 0,
    start: 0,
    size,
    type: '',
    typeName: null,
    name: null,
    uniqueGuid: null,
    attributes: 0n,
    fileSystem: 'unknown',
    bootable: false,
    extended: false,
    logical: false,
    truncated: false,
  };
  // No partition at all: the disk may still be a (damaged) table-less FAT volume.
  const partitions = table.partitions.length > 0 ? table.partitions : [wholeDisk];
  const notRead: FreeClusters[] = [];
  const overlapping = findOverlaps(partitions, size, plan.warnings);
  const matchedPatterns = new Set<string>();
  for (const p of partitions) {
    const planned: PlannedPartition = {
      index: p.index,
      start: p.start,
      size: p.size,
      fileSystem: p.fileSystem,
      mode: p.extended ? 'container' : 'all',
      bytesToRead: 0,
      fat: null,
      warnings: [],
    };
    if (p !== wholeDisk) plan.partitions.push(planned);
    const mine = patterns.filter((q) => q.partition === undefined || q.partition === p.index);
    if (!p.extended && !isFat(p) && p.fileSystem === 'unknown' && (await claimsFat(sourcePath, p, readSector))) {
      // It says FAT but does not parse: ask the parser why, for the message.
      let why = 'its boot sector is not a valid FAT boot sector';
      try {
        (
          await openVolume(sourcePath, {
            offset: p.start,
            size: Math.max(1, Math.min(p.size, size - p.start)),
            format: fsFormat,
          })
        ).close();
      } catch (err) {
        why = toLowtideError(err, 'FAT_CORRUPT').message;
      }
      const what = p === wholeDisk ? sourcePath : `partition ${p.index} of ${sourcePath}`;
      const e = new LowtideError('FAT_CORRUPT', `${what} looks like FAT but cannot be parsed: ${why}`);
      if (strict || mine.length > 0) throw e;
      const w = `${e.message}; copying all its blocks`;
      planned.warnings.push(w);
      plan.warnings.push(w);
      continue;
    }
    if (p.extended || !isFat(p)) continue;
    try {
      const vol = await openVolume(sourcePath, { partition: p.index, format: fsFormat });
      try {
        const info = vol.info();
        for (const w of info.warnings) planned.warnings.push(w);
        let map;
        if (mine.length > 0) {
          const del = await vol.planExclusions(mine.map((q) => q.glob));
          map = del.allocationMap;
          for (const w of del.writes) plan.overlay.push(w);
          for (const e of del.excluded)
            plan.excluded.push({ partition: p.index, path: e.path, size: e.size, isDirectory: e.isDirectory });
          plan.bytesExcluded += del.bytesExcluded;
          for (const q of mine) if (!del.unmatched.includes(q.glob)) matchedPatterns.add(q.text);
        } else {
          map = await vol.allocationMap();
        }
        planned.fat = {
          type: info.type,
          clusterSize: info.clusterSize,
          totalClusters: info.clusterCount,
          usedClusters: map.usedClusters,
          freeClusters: map.freeClusters,
          badClusters: map.badClusters,
          label: info.label,
        };
        // Within the partition only the free clusters are left out: the reserved area,
        // FATs, root directory, allocated clusters and any space past the volume's end
        // are read. Where another partition overlaps this one, its bytes are read too.
        const others = overlapping.get(p.index);
        notRead.push({
          map,
          from: p.start,
          to: Math.min(p.start + p.size, size),
          others: others === undefined ? undefined : ExtentList.from(others),
        });
        planned.mode = 'used';
      } finally {
        vol.close();
      }
    } catch (err) {
      const e = toLowtideError(err, 'FAT_CORRUPT');
      if (strict || mine.length > 0) throw e;
      planned.mode = 'all';
      const w = `partition ${p.index}: ${e.message}; copying all its blocks`;
      planned.warnings.push(w);
      plan.warnings.push(w);
    }
  }
  for (const q of patterns) {
    if (!matchedPatterns.has(q.text)) plan.warnings.push(`exclude pattern ${JSON.stringify(q.text)} matched nothing`);
  }
  plan.extents = readExtents(whole, notRead);
  plan.bytesToRead = plan.extents.totalLength;
  for (const planned of plan.partitions) {
    const end = Math.min(planned.start + planned.size, size);
    planned.bytesToRead = planned.mode === 'container' ? 0 : plan.extents.bytesWithin(planned.start, end);
  }
  plan.overlay.sort((a, b) => a.offset - b.offset);
  return plan;
}
