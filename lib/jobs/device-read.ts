/**
 * A job's reads of a file source straight from the block device under its
 * file system (readFrom: 'device'): the file is synced, mapped (mapFile), the
 * device opened read-only with O_DIRECT, and the planned extents split along
 * the offset table. What cannot be read from the device (holes and unwritten
 * extents, flagged extents, file systems whose offsets are not device offsets)
 * is read through the file. At the end the file is mapped again: a file whose
 * size or layout changed while it was read from under its file system was
 * not read consistently, and the job fails with SOURCE_CHANGED.
 */
import { open } from 'node:fs/promises';
import { LowtideError, toLowtideError } from '../errors.js';
import type { Extent } from '../io/extents.js';
import type { Extents } from '../io/extent-list.js';
import {
  mapFile,
  sameOffsetTable,
  splitByTable,
  type MappedExtent,
  type OffsetRun,
  type OffsetTable,
} from '../io/offset-table.js';
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
}

function fallbackReason(run: OffsetRun, table: OffsetTable): string | undefined {
  if (run.kind === 'zero') return run.reason === 'hole' ? 'hole (zeros)' : 'unwritten extent (zeros)';
  if (run.kind === 'file') return run.reason;
  return table.deviceMappable ? undefined : (table.reason ?? 'not device-mappable');
}

/** Counts the planned bytes by where they are read from. */
function account(extents: readonly Extent[], table: OffsetTable): Omit<DeviceReadReport, 'device' | 'fileSystem'> {
  const byReason = new Map<string, ReadFallback>();
  let bytesFromDevice = 0;
  let bytesFromFile = 0;
  const runs = table.runs;
  for (const e of extents) {
    const end = e.offset + e.length;
    // First run ending after e.offset.
    let lo = 0;
    let hi = runs.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (runs[mid]!.offset + runs[mid]!.length <= e.offset) lo = mid + 1;
      else hi = mid;
    }
    let covered = 0;
    for (let i = lo; i < runs.length && runs[i]!.offset < end; i++) {
      const run = runs[i]!;
      const n = Math.min(end, run.offset + run.length) - Math.max(e.offset, run.offset);
      if (n <= 0) continue;
      covered += n;
      const reason = fallbackReason(run, table);
      if (reason === undefined) {
        bytesFromDevice += n;
        continue;
      }
      bytesFromFile += n;
      const f = byReason.get(reason) ?? { reason, runs: 0, bytes: 0 };
      f.runs += 1;
      f.bytes += n;
      byReason.set(reason, f);
    }
    if (covered < e.length) {
      bytesFromFile += e.length - covered;
      const reason = 'outside the mapped file';
      const f = byReason.get(reason) ?? { reason, runs: 0, bytes: 0 };
      f.runs += 1;
      f.bytes += e.length - covered;
      byReason.set(reason, f);
    }
  }
  return {
    ...(table.deviceMappable ? {} : { reason: table.reason }),
    bytesFromDevice,
    bytesFromFile,
    fallbacks: [...byReason.values()],
  };
}

export class DeviceRead {
  readonly table: OffsetTable;
  /** The device, open; undefined when nothing is read from it. */
  readonly device: Source | undefined;
  readonly extents: MappedExtent[];
  readonly #report: DeviceReadReport;

  private constructor(
    table: OffsetTable,
    device: Source | undefined,
    extents: MappedExtent[],
    report: DeviceReadReport,
  ) {
    this.table = table;
    this.device = device;
    this.extents = extents;
    this.#report = report;
  }

  /**
   * Syncs and maps `source` (a regular file) and opens its device for the
   * planned `extents`. Fails when the source is not a file or the device
   * cannot be opened.
   */
  static async prepare(source: Source, planned: Extents): Promise<DeviceRead> {
    const extents = Array.isArray(planned) ? planned : [...planned];
    if (source.kind !== 'file') {
      throw new LowtideError(
        'INVALID_ARGUMENT',
        `readFrom: 'device' reads a file's blocks from the device under its file system; ${source.path} is a block device already`,
      );
    }
    // Delayed allocations have no device blocks yet: write them out (FIEMAP_FLAG_SYNC does so too).
    try {
      const fh = await open(source.path, 'r');
      try {
        await fh.sync();
      } finally {
        await fh.close();
      }
    } catch (err) {
      throw toLowtideError(err, 'IO_ERROR', `cannot sync ${source.path} before mapping it`);
    }
    const table = await mapFile(source.path);
    if (table.size !== source.size) {
      throw new LowtideError(
        'SOURCE_CHANGED',
        `${source.path} changed size while it was opened (${source.size} then ${table.size} bytes)`,
        { path: source.path },
      );
    }
    const pieces = splitByTable(extents, table);
    const usesDevice = table.deviceMappable && table.device !== null && pieces.some((p) => p.deviceOffset !== -1);
    let device: Source | undefined;
    if (usesDevice) {
      try {
        device = await openSource(table.device!, { direct: 'on' });
      } catch (err) {
        const e = toLowtideError(err, 'OPEN_FAILED');
        throw new LowtideError(
          e.code,
          `cannot open ${table.device} (the device under ${source.path}) read-only with O_DIRECT: ${e.message}`,
          { cause: err, path: table.device! },
        );
      }
    }
    const report: DeviceReadReport = {
      device: usesDevice ? table.device : null,
      fileSystem: table.fileSystem,
      ...account(extents, table),
    };
    return new DeviceRead(table, device, pieces, report);
  }

  /**
   * Maps the file again: its size and layout must be what they were when the
   * reads were planned, or what was read from the device is not the file.
   */
  async verifyUnchanged(): Promise<void> {
    const path = this.table.path;
    let again: OffsetTable;
    try {
      again = await mapFile(path);
    } catch (err) {
      throw new LowtideError('SOURCE_CHANGED', `${path} could not be mapped again after it was read from its device`, {
        cause: err,
        path,
      });
    }
    if (again.size !== this.table.size) {
      throw new LowtideError(
        'SOURCE_CHANGED',
        `${path} changed size while it was read from ${this.table.device ?? 'its device'} (${this.table.size} then ${again.size} bytes): the copy is not consistent`,
        { path },
      );
    }
    if (!sameOffsetTable(this.table, again)) {
      throw new LowtideError(
        'SOURCE_CHANGED',
        `the blocks of ${path} moved while it was read from ${this.table.device ?? 'its device'}: the copy is not consistent`,
        { path },
      );
    }
  }

  report(): DeviceReadReport {
    return { ...this.#report, fallbacks: this.#report.fallbacks.map((f) => ({ ...f })) };
  }

  async close(): Promise<void> {
    await this.device?.close();
  }
}
