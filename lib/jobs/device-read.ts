/**
 * A job's reads of a file source straight from the block device under its
 * file system (readFrom: 'device'): the file is synced, mapped (mapFile), the
 * device opened read-only with O_DIRECT, and the planned extents split along
 * the offset table as they are read (the reader cuts its requests where the
 * table's runs end; nothing is kept per extent of the plan). What cannot be read from the device (holes and unwritten
 * extents, flagged extents, file systems whose offsets are not device offsets)
 * is read through the file. At the end the file is mapped again: a file whose
 * size or layout changed while it was read from under its file system was
 * not read consistently, and the job fails with SOURCE_CHANGED.
 *
 * A virtual disk (format 'qcow2') composes two maps: its segments map the
 * planned guest extents to ranges of its layer files (L1/L2 tables, through
 * the backing chain), and each layer file has its own offset table from those
 * file ranges to its device. A compressed cluster's bytes are read like data
 * (from the device where the table allows), then decompressed; zero clusters
 * cost no read.
 */
import { open } from 'node:fs/promises';
import { LowtideError, toLowtideError } from '../errors.js';
import { firstEndingAfter } from '../io/extents.js';
import { ExtentList, type Extents } from '../io/extent-list.js';
import { mapFile, sameOffsetTable, type OffsetRun, type OffsetTable } from '../io/offset-table.js';
import type { BlockReader, ReadOptions } from '../io/reader.js';
import { openSource, type Source } from '../io/source.js';

export type ReadFrom = 'device' | 'file';

/** Bytes read through the file instead of the device, for one reason. */
export interface ReadFallback {
  reason: string;
  /** Runs of the offset table (parts of them) read through the file for this reason. */
  runs: number;
  bytes: number;
}

/** Where a job's bytes came from when it read from the device. */
export interface DeviceReadReport {
  /** The block device read, or null when nothing could be read from one. */
  device: string | null;
  fileSystem: string;
  /** Why no byte was read from the device (absent when some could be). */
  reason?: string | undefined;
  /** Planned bytes read from the device. */
  bytesFromDevice: number;
  /** Planned bytes read through the file (holes and unwritten extents included). */
  bytesFromFile: number;
  fallbacks: ReadFallback[];
  /**
   * A virtual disk: the same per file of its backing chain (layer 0 is the
   * image named). The fields above sum them up; `device` is the first device
   * read from.
   */
  layers?: DeviceReadLayer[] | undefined;
}

/** Where one file of a virtual disk's chain was read from. */
export interface DeviceReadLayer {
  path: string;
  device: string | null;
  fileSystem: string;
  reason?: string | undefined;
  bytesFromDevice: number;
  bytesFromFile: number;
}

function fallbackReason(run: OffsetRun, table: OffsetTable): string | undefined {
  if (run.kind === 'zero') return run.reason === 'hole' ? 'hole (zeros)' : 'unwritten extent (zeros)';
  if (run.kind === 'file') return run.reason;
  return table.deviceMappable ? undefined : (table.reason ?? 'not device-mappable');
}

const runStart = (r: OffsetRun): number => r.offset;
const runLength = (r: OffsetRun): number => r.length;

/** Calls `fn` with each extent's offset and length, making no object per extent of an ExtentList. */
function forEachExtent(extents: Extents, fn: (offset: number, length: number) => void): void {
  if (extents instanceof ExtentList) {
    for (let i = 0; i < extents.length; i++) fn(extents.offsetAt(i), extents.lengthAt(i));
  } else for (const e of extents) fn(e.offset, e.length);
}

/**
 * Counts the planned bytes by where they are read from, one pass over the
 * extents (in any order) with nothing kept per extent.
 */
function account(extents: Extents, table: OffsetTable): Omit<DeviceReadReport, 'device' | 'fileSystem'> {
  const byReason = new Map<string, ReadFallback>();
  let bytesFromDevice = 0;
  let bytesFromFile = 0;
  const runs = table.runs;
  // The run the previous extent ended in: sorted extents move forward from it.
  let hint = 0;
  forEachExtent(extents, (offset, length) => {
    const end = offset + length;
    let covered = 0;
    const endsAfter = (k: number): boolean => k >= runs.length || runs[k]!.offset + runs[k]!.length > offset;
    let i = hint;
    if (!(endsAfter(i) && (i === 0 || !endsAfter(i - 1)))) i = firstEndingAfter(runs, offset, runStart, runLength);
    for (; i < runs.length && runs[i]!.offset < end; i++) {
      const run = runs[i]!;
      const n = Math.min(end, run.offset + run.length) - Math.max(offset, run.offset);
      if (n <= 0) continue;
      covered += n;
      const reason = fallbackReason(run, table);
      if (reason === undefined) {
        bytesFromDevice += n;
        continue;
      }
      bytesFromFile += n;
      addFallback(byReason, reason, 1, n);
    }
    hint = i > 0 ? i - 1 : 0;
    if (covered < length) {
      bytesFromFile += length - covered;
      addFallback(byReason, 'outside the mapped file', 1, length - covered);
    }
  });
  return {
    ...(table.deviceMappable ? {} : { reason: table.reason }),
    bytesFromDevice,
    bytesFromFile,
    fallbacks: [...byReason.values()],
  };
}

/** Syncs `path` (delayed allocations get device blocks) and maps it. */
async function syncAndMap(path: string): Promise<OffsetTable> {
  try {
    const fh = await open(path, 'r');
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
  } catch (err) {
    throw toLowtideError(err, 'IO_ERROR', `cannot sync ${path} before mapping it`);
  }
  return mapFile(path);
}

function addFallback(byReason: Map<string, ReadFallback>, reason: string, runs: number, bytes: number): void {
  const f = byReason.get(reason) ?? { reason, runs: 0, bytes: 0 };
  f.runs += runs;
  f.bytes += bytes;
  byReason.set(reason, f);
}

/** One file read (a raw source, or one layer of a virtual disk): its table and the extents read of it. */
interface MappedFile {
  table: OffsetTable;
  /** Where the planned bytes of the file are read from. */
  counted: Omit<DeviceReadReport, 'device' | 'fileSystem'>;
  /** Whether some of them are read from the device. */
  usesDevice: boolean;
}

export class DeviceRead {
  readonly #files: MappedFile[];
  /** The devices opened, by path. */
  readonly #devices: Map<string, Source>;
  readonly #report: DeviceReadReport;

  private constructor(files: MappedFile[], devices: Map<string, Source>, report: DeviceReadReport) {
    this.#files = files;
    this.#devices = devices;
    this.#report = report;
  }

  /**
   * Syncs and maps `source` (a regular file; for a virtual disk, each file
   * of its chain) and opens the devices under them for the planned
   * `extents`. Fails when the source is a block device or a device cannot
   * be opened.
   */
  static async prepare(source: Source, planned: Extents): Promise<DeviceRead> {
    if (source.kind !== 'file') {
      throw new LowtideError(
        'INVALID_ARGUMENT',
        `readFrom: 'device' reads a file's blocks from the device under its file system; ${source.path} is a block device already`,
      );
    }
    const files: MappedFile[] = [];
    let guest: ReturnType<Source['guestReads']> | undefined;
    if (source.virtualDisk === undefined) {
      const table = await syncAndMap(source.path);
      if (table.size !== source.size) {
        throw new LowtideError(
          'SOURCE_CHANGED',
          `${source.path} changed size while it was opened (${source.size} then ${table.size} bytes)`,
          { path: source.path },
        );
      }
      files.push(mappedFile(table, planned));
    } else {
      guest = source.guestReads(planned);
      const layers = source.virtualDisk.layers;
      for (let i = 0; i < layers.length; i++) {
        const layer = layers[i]!;
        const table = await syncAndMap(layer.path);
        if (table.size !== layer.fileSize) {
          throw new LowtideError(
            'SOURCE_CHANGED',
            `${layer.path} changed size while it was opened (${layer.fileSize} then ${table.size} bytes)`,
            { path: layer.path },
          );
        }
        files.push(
          mappedFile(
            table,
            guest.layers[i]!,
            guest.compressed.filter((c) => c.layer === i),
          ),
        );
      }
    }
    const devices = new Map<string, Source>();
    try {
      for (const f of files) {
        const t = f.table;
        if (!f.usesDevice || devices.has(t.device!)) continue;
        try {
          devices.set(t.device!, await openSource(t.device!, { direct: 'on' }));
        } catch (err) {
          const e = toLowtideError(err, 'OPEN_FAILED');
          throw new LowtideError(
            e.code,
            `cannot open ${t.device} (the device under ${t.path}) read-only with O_DIRECT: ${e.message}`,
            { cause: err, path: t.device! },
          );
        }
      }
    } catch (err) {
      await Promise.all([...devices.values()].map((d) => d.close()));
      throw err;
    }
    return new DeviceRead(files, devices, reportOf(files, guest));
  }

  /** A reader of the planned `extents` of `source` (the one prepared for), from the devices where it can. */
  reader(source: Source, extents: Extents, options: ReadOptions): BlockReader {
    const deviceOf = (f: MappedFile): Source | undefined =>
      f.usesDevice ? this.#devices.get(f.table.device!) : undefined;
    if (source.virtualDisk !== undefined) {
      const layers = this.#files.map((f) => {
        const d = deviceOf(f);
        return d === undefined ? undefined : { device: d, table: f.table };
      });
      return source.readGuestThrough(layers, extents, options);
    }
    const f = this.#files[0]!;
    const d = deviceOf(f);
    return d === undefined ? source.read(extents, options) : source.readFromDevice(d, f.table, extents, options);
  }

  /**
   * Maps the files again: their size and layout must be what they were when
   * the reads were planned, or what was read from the device is not the file.
   */
  async verifyUnchanged(): Promise<void> {
    for (const { table } of this.#files) {
      const path = table.path;
      let again: OffsetTable;
      try {
        again = await mapFile(path);
      } catch (err) {
        throw new LowtideError(
          'SOURCE_CHANGED',
          `${path} could not be mapped again after it was read from its device`,
          { cause: err, path },
        );
      }
      if (again.size !== table.size) {
        throw new LowtideError(
          'SOURCE_CHANGED',
          `${path} changed size while it was read from ${table.device ?? 'its device'} (${table.size} then ${again.size} bytes): the copy is not consistent`,
          { path },
        );
      }
      if (!sameOffsetTable(table, again)) {
        throw new LowtideError(
          'SOURCE_CHANGED',
          `the blocks of ${path} moved while it was read from ${table.device ?? 'its device'}: the copy is not consistent`,
          { path },
        );
      }
    }
  }

  report(): DeviceReadReport {
    const r = this.#report;
    return {
      ...r,
      fallbacks: r.fallbacks.map((f) => ({ ...f })),
      ...(r.layers !== undefined ? { layers: r.layers.map((l) => ({ ...l })) } : {}),
    };
  }

  async close(): Promise<void> {
    await Promise.all([...this.#devices.values()].map((d) => d.close()));
  }
}

/**
 * A file to read, with its planned extents counted by where they are read
 * from; a virtual disk's layer also with its compressed clusters, whose guest
 * bytes count as read from the device when all of their compressed bytes are.
 */
function mappedFile(
  table: OffsetTable,
  extents: Extents,
  compressed: readonly { host: number; csize: number; guestBytes: number }[] = [],
): MappedFile {
  const counted = account(extents, table);
  for (const c of compressed) {
    const a = account([{ offset: c.host, length: c.csize }], table);
    if (a.bytesFromDevice === c.csize) {
      counted.bytesFromDevice += c.guestBytes;
      continue;
    }
    counted.bytesFromFile += c.guestBytes;
    const reason = `compressed clusters: ${a.fallbacks[0]?.reason ?? 'through the file'}`;
    const f = counted.fallbacks.find((x) => x.reason === reason);
    if (f !== undefined) {
      f.runs++;
      f.bytes += c.guestBytes;
    } else counted.fallbacks.push({ reason, runs: 1, bytes: c.guestBytes });
  }
  const usesDevice = table.deviceMappable && table.device !== null && counted.bytesFromDevice > 0;
  return { table, counted, usesDevice };
}

/** The report of a prepared read: one file, or a virtual disk's chain summed up with one entry per file. */
function reportOf(files: readonly MappedFile[], guest: ReturnType<Source['guestReads']> | undefined): DeviceReadReport {
  const counted = files.map((f) => ({ f, a: f.counted }));
  const deviceOf = (f: MappedFile): string | null => (f.usesDevice ? f.table.device : null);
  if (guest === undefined) {
    const { f, a } = counted[0]!;
    return { device: deviceOf(f), fileSystem: f.table.fileSystem, ...a };
  }
  const byReason = new Map<string, ReadFallback>();
  let bytesFromDevice = 0;
  let bytesFromFile = 0;
  for (const { a } of counted) {
    bytesFromDevice += a.bytesFromDevice;
    bytesFromFile += a.bytesFromFile;
    for (const fb of a.fallbacks) addFallback(byReason, fb.reason, fb.runs, fb.bytes);
  }
  if (guest.zeroBytes > 0) {
    bytesFromFile += guest.zeroBytes;
    addFallback(byReason, 'zero clusters (zeros)', 1, guest.zeroBytes);
  }
  const used = counted.find(({ f }) => f.usesDevice);
  const reasons = [...new Set(counted.map(({ a }) => a.reason).filter((x): x is string => x !== undefined))];
  return {
    device: used === undefined ? null : deviceOf(used.f),
    fileSystem: (used ?? counted[0]!).f.table.fileSystem,
    ...(used === undefined && reasons.length > 0 ? { reason: reasons.join('; ') } : {}),
    bytesFromDevice,
    bytesFromFile,
    fallbacks: [...byReason.values()],
    layers: counted.map(({ f, a }) => ({
      path: f.table.path,
      device: deviceOf(f),
      fileSystem: f.table.fileSystem,
      ...(a.reason !== undefined ? { reason: a.reason } : {}),
      bytesFromDevice: a.bytesFromDevice,
      bytesFromFile: a.bytesFromFile,
    })),
  };
}
