/**
 * The offset table of a regular file: which bytes of the block device under
 * its file system hold which bytes of the file (FIEMAP), and which parts must
 * be read through the file instead, and why.
 *
 * Only file systems whose FIEMAP physical offsets are byte offsets on the
 * device named by the file's st_dev are device-mappable: XFS (data device)
 * and ext2/3/4. Elsewhere (btrfs: offsets in its own logical address space,
 * over several devices and RAID profiles; tmpfs, network and FUSE file
 * systems: no device at all) the table says why and every read goes through
 * the file. A partition's own offset is already in FIEMAP's offsets when the
 * file system is on that partition: the device is the partition.
 */
import { LowtideError, toLowtideError } from '../errors.js';
import { native, type NativeFileMapping } from '../native.js';
import { stringOption } from '../options.js';
import { firstEndingAfter, mergeExtents, type Extent } from './extents.js';

/** FIEMAP_EXTENT_* flags by name (linux/fiemap.h). */
export const FiemapFlags = {
  LAST: 0x1,
  UNKNOWN: 0x2,
  DELALLOC: 0x4,
  ENCODED: 0x8,
  DATA_ENCRYPTED: 0x80,
  NOT_ALIGNED: 0x100,
  DATA_INLINE: 0x200,
  DATA_TAIL: 0x400,
  UNWRITTEN: 0x800,
  MERGED: 0x1000,
  SHARED: 0x2000,
} as const;

export type FiemapFlagName = keyof typeof FiemapFlags;

/**
 * Flags that make a read at the physical offset wrong: the data is not (yet)
 * there as plain bytes. UNWRITTEN is not among them: it reads as zeros.
 */
const FILE_ONLY_FLAGS: readonly FiemapFlagName[] = [
  'UNKNOWN',
  'DELALLOC',
  'ENCODED',
  'DATA_ENCRYPTED',
  'NOT_ALIGNED',
  'DATA_INLINE',
  'DATA_TAIL',
];

/** Bytes of the file at a device offset. */
export interface DeviceRun {
  kind: 'device';
  /** Offset in the file. */
  offset: number;
  length: number;
  /** Byte offset on `OffsetTable.device`. */
  deviceOffset: number;
  /** FIEMAP flags of the extent, by name (e.g. SHARED for reflinked blocks). */
  flags: FiemapFlagName[];
}

/** Bytes of the file that read as zeros: a hole, or an allocated but unwritten extent. */
export interface ZeroRun {
  kind: 'zero';
  offset: number;
  length: number;
  reason: 'hole' | 'unwritten';
}

/** Bytes that must be read through the file; `reason` says why. */
export interface FileRun {
  kind: 'file';
  offset: number;
  length: number;
  reason: string;
  flags: FiemapFlagName[];
}

export type OffsetRun = DeviceRun | ZeroRun | FileRun;

export interface OffsetTable {
  path: string;
  /** The file's size when it was mapped. */
  size: number;
  /** 'xfs', 'ext4' (also ext2/3), 'btrfs', 'tmpfs', ... or the statfs magic in hex. */
  fileSystem: string;
  /** The block device node under the file system, or null. */
  device: string | null;
  /** True when runs of kind 'device' may be read from `device`. */
  deviceMappable: boolean;
  /** Why the file is not device-mappable (absent when it is). */
  reason?: string | undefined;
  /** Runs in file order, covering exactly the mapped ranges. */
  runs: OffsetRun[];
  bytesOnDevice: number;
  bytesZero: number;
  bytesThroughFile: number;
}

const FS_NAMES: ReadonlyMap<number, string> = new Map([
  [0x58465342, 'xfs'],
  [0xef53, 'ext4'],
  [0x9123683e, 'btrfs'],
  [0x01021994, 'tmpfs'],
  [0x6969, 'nfs'],
  [0x65735546, 'fuse'],
  [0x794c7630, 'overlayfs'],
  [0x2fc12fc1, 'zfs'],
  [0xf2f52010, 'f2fs'],
]);

/** File systems whose FIEMAP physical offsets are offsets on the device of st_dev. */
const DEVICE_MAPPABLE = new Set(['xfs', 'ext4']);

function fileSystemName(magic: number): string {
  return FS_NAMES.get(magic) ?? `0x${magic.toString(16)}`;
}

function flagNames(flags: number): FiemapFlagName[] {
  return (Object.keys(FiemapFlags) as FiemapFlagName[]).filter((n) => n !== 'LAST' && (flags & FiemapFlags[n]) !== 0);
}

/** Why the whole file is read through itself, or undefined when its extents may be read from the device. */
function unmappableReason(m: NativeFileMapping, fileSystem: string): string | undefined {
  if (!m.fiemap) return `${fileSystem}: ${m.fiemapReason}`;
  if (m.device === null) return m.deviceReason;
  if (!DEVICE_MAPPABLE.has(fileSystem)) {
    return fileSystem === 'btrfs'
      ? 'btrfs: FIEMAP gives offsets in its own logical address space (several devices, RAID), not on a device'
      : `${fileSystem}: FIEMAP physical offsets are not known to be offsets on ${m.device}`;
  }
  if (m.realtime) return 'xfs: the file is on the realtime device, not on the data device';
  return undefined;
}

function push(runs: OffsetRun[], run: OffsetRun): void {
  if (run.length <= 0) return;
  const last = runs[runs.length - 1];
  if (last !== undefined && last.kind === run.kind && last.offset + last.length === run.offset) {
    if (last.kind === 'zero' && run.kind === 'zero' && last.reason === run.reason) {
      last.length += run.length;
      return;
    }
    if (
      last.kind === 'device' &&
      run.kind === 'device' &&
      last.deviceOffset + last.length === run.deviceOffset &&
      last.flags.join() === run.flags.join()
    ) {
      last.length += run.length;
      return;
    }
    if (
      last.kind === 'file' &&
      run.kind === 'file' &&
      last.reason === run.reason &&
      last.flags.join() === run.flags.join()
    ) {
      last.length += run.length;
      return;
    }
  }
  runs.push(run);
}

/**
 * The runs of [start, end) from FIEMAP's extents (4-tuples [logical, physical,
 * length, flags], sorted). Gaps are holes. `fileReason`: the whole range is
 * read through the file for that reason (holes stay zeros).
 */
function runsOf(
  extents: Float64Array,
  start: number,
  end: number,
  fileReason: string | undefined,
  runs: OffsetRun[],
): void {
  let pos = start;
  for (let i = 0; i < extents.length; i += 4) {
    const logical = extents[i]!;
    const physical = extents[i + 1]!;
    const length = extents[i + 2]!;
    const flags = extents[i + 3]!;
    const lo = Math.max(logical, pos);
    const hi = Math.min(logical + length, end);
    if (hi <= lo) continue;
    if (lo > pos) push(runs, { kind: 'zero', offset: pos, length: lo - pos, reason: 'hole' });
    const names = flagNames(flags);
    const bad = names.filter((n) => FILE_ONLY_FLAGS.includes(n));
    if (bad.length > 0) {
      push(runs, { kind: 'file', offset: lo, length: hi - lo, reason: `FIEMAP flags ${bad.join(', ')}`, flags: names });
    } else if ((flags & FiemapFlags.UNWRITTEN) !== 0) {
      push(runs, { kind: 'zero', offset: lo, length: hi - lo, reason: 'unwritten' });
    } else if (fileReason !== undefined) {
      push(runs, { kind: 'file', offset: lo, length: hi - lo, reason: fileReason, flags: names });
    } else {
      push(runs, {
        kind: 'device',
        offset: lo,
        length: hi - lo,
        deviceOffset: physical + (lo - logical),
        flags: names,
      });
    }
    pos = hi;
  }
  if (pos < end) push(runs, { kind: 'zero', offset: pos, length: end - pos, reason: 'hole' });
}

/**
 * Maps a regular file (opened read-only) to the block device under its file
 * system: for each byte range of `extents` (default: the whole file, clipped
 * to its size), runs in file order saying where the bytes are. The file's
 * delayed allocations are written out first (FIEMAP_FLAG_SYNC).
 */
export async function mapFile(path: string, extents?: readonly Extent[] | undefined): Promise<OffsetTable> {
  stringOption('path', path);
  const ranges = extents === undefined ? undefined : mergeExtents(extents);
  let first: NativeFileMapping;
  try {
    first = await native.mapFile(path, 0, ranges === undefined ? 0 : 1, true);
  } catch (err) {
    throw toLowtideError(err, 'IO_ERROR');
  }
  const size = first.size;
  const fileSystem = fileSystemName(first.fsMagic);
  const reason = unmappableReason(first, fileSystem);
  const runs: OffsetRun[] = [];
  const wanted = (ranges ?? [{ offset: 0, length: size }])
    .map((r) => ({ offset: r.offset, end: Math.min(r.offset + r.length, size) }))
    .filter((r) => r.end > r.offset);
  if (ranges !== undefined && ranges.some((r) => r.offset + r.length > size)) {
    const bad = ranges.find((r) => r.offset + r.length > size)!;
    throw new LowtideError(
      'OUT_OF_RANGE',
      `extent [${bad.offset}, ${bad.offset + bad.length}) reaches past the end of ${path} (${size} bytes)`,
      { offset: bad.offset, path },
    );
  }
  for (const r of wanted) {
    let m: NativeFileMapping;
    if (ranges === undefined) {
      m = first;
    } else {
      try {
        m = await native.mapFile(path, r.offset, r.end - r.offset, false);
      } catch (err) {
        throw toLowtideError(err, 'IO_ERROR');
      }
    }
    if (!m.fiemap) {
      // No FIEMAP at all: nothing is known about holes either.
      push(runs, {
        kind: 'file',
        offset: r.offset,
        length: r.end - r.offset,
        reason: reason ?? m.fiemapReason,
        flags: [],
      });
      continue;
    }
    runsOf(m.extents, r.offset, r.end, reason, runs);
  }
  let bytesOnDevice = 0;
  let bytesZero = 0;
  let bytesThroughFile = 0;
  for (const run of runs) {
    if (run.kind === 'device') bytesOnDevice += run.length;
    else if (run.kind === 'zero') bytesZero += run.length;
    else bytesThroughFile += run.length;
  }
  return {
    path,
    size,
    fileSystem,
    device: first.device,
    deviceMappable: reason === undefined,
    ...(reason !== undefined ? { reason } : {}),
    runs,
    bytesOnDevice,
    bytesZero,
    bytesThroughFile,
  };
}

/** True when two tables of the same file describe the same size and the same runs. */
export function sameOffsetTable(a: OffsetTable, b: OffsetTable): boolean {
  if (a.size !== b.size || a.device !== b.device || a.runs.length !== b.runs.length) return false;
  return a.runs.every((r, i) => JSON.stringify(r) === JSON.stringify(b.runs[i]));
}

/** A piece of a read plan: file bytes, and where to read them (a device offset, or -1: through the file). */
export interface MappedExtent {
  offset: number;
  length: number;
  deviceOffset: number;
}

/**
 * Splits `extents` (file offsets, sorted or not) along the table's runs:
 * device runs get their device offset, everything else (zeros, file runs)
 * -1, read through the file. Bytes outside the table are read through the file.
 */
export function splitByTable(extents: Iterable<Extent>, table: OffsetTable): MappedExtent[] {
  const runs = table.runs;
  const out: MappedExtent[] = [];
  const add = (offset: number, length: number, deviceOffset: number): void => {
    const last = out[out.length - 1];
    if (
      last !== undefined &&
      last.offset + last.length === offset &&
      ((last.deviceOffset === -1 && deviceOffset === -1) ||
        (last.deviceOffset !== -1 && deviceOffset !== -1 && last.deviceOffset + last.length === deviceOffset))
    ) {
      last.length += length;
    } else {
      out.push({ offset, length, deviceOffset });
    }
  };
  for (const e of extents) {
    let pos = e.offset;
    const end = e.offset + e.length;
    let i = firstEndingAfter(
      runs,
      pos,
      (r) => r.offset,
      (r) => r.length,
    );
    while (pos < end) {
      const run = runs[i];
      if (run === undefined || run.offset > pos) {
        // Not in the table: through the file, up to the next run.
        const stop = run === undefined ? end : Math.min(end, run.offset);
        add(pos, stop - pos, -1);
        pos = stop;
        continue;
      }
      const stop = Math.min(end, run.offset + run.length);
      add(pos, stop - pos, run.kind === 'device' && table.deviceMappable ? run.deviceOffset + (pos - run.offset) : -1);
      pos = stop;
      i += 1;
    }
  }
  return out;
}

/**
 * The runs of `table` read from its device, as the native reader takes them
 * (instead of a list of pieces): [offset, length, device offset] triples in
 * file order; bytes outside them are read through the file. The reader cuts
 * each request where a run ends, so a plan of millions of extents is split
 * as it is read, with nothing kept per piece. Empty when the table is not
 * device-mappable. A run reaching past `deviceSize` is OUT_OF_RANGE.
 */
export function deviceRuns(table: OffsetTable, deviceSize: number): Float64Array {
  if (!table.deviceMappable) return new Float64Array(0);
  const device = table.runs.filter((r): r is DeviceRun => r.kind === 'device');
  const out = new Float64Array(device.length * 3);
  device.forEach((r, i) => {
    if (!Number.isSafeInteger(r.deviceOffset) || r.deviceOffset < 0 || r.deviceOffset + r.length > deviceSize) {
      throw new LowtideError(
        'OUT_OF_RANGE',
        `${table.path}: device range [${r.deviceOffset}, ${r.deviceOffset + r.length}) is not inside ${table.device ?? 'its device'} (${deviceSize} bytes)`,
        { offset: r.deviceOffset, path: table.device ?? table.path },
      );
    }
    out[3 * i] = r.offset;
    out[3 * i + 1] = r.length;
    out[3 * i + 2] = r.deviceOffset;
  });
  return out;
}
