/**
 * Sources: a regular file or block device opened read-only, and the block
 * reader over it.
 */
import { LowtideError, toLowtideError } from '../errors.js';
import { native, type NativeReaderOptions, type NativeSourceHandle } from '../native.js';
import { choiceOption, objectOption, stringOption } from '../options.js';
import { BlockReader, type DeviceTarget, type ReadOptions } from './reader.js';
import { type Extent, validateExtents } from './extents.js';
import { ExtentList, type Extents } from './extent-list.js';
import { deviceRuns, type MappedExtent, type OffsetTable } from './offset-table.js';
import {
  bitmapExtents,
  formatOption,
  GuestStream,
  guestReads,
  openGuest,
  type DiskFormat,
  type GuestParts,
  type GuestReads,
  type LayerDevice,
  type VirtualDiskInfo,
} from './guest.js';

export type DirectMode = 'auto' | 'on' | 'off';
export type EngineName = 'auto' | 'io_uring' | 'threads';

export interface OpenSourceOptions {
  /**
   * O_DIRECT: 'auto' (default) uses it where the file system accepts it and
   * falls back to buffered reads; 'on' requires it; 'off' never uses it.
   */
  direct?: DirectMode | undefined;
  /**
   * 'raw' (default): the bytes of the file or device. 'qcow2': the guest disk
   * of a qcow2 image, following its backing chain. 'auto': a regular file
   * with a qcow2 header is read as qcow2, but then a backing file is followed
   * only when it lies beside the image and is qcow2 (a guest can write a qcow2
   * header into its raw disk); a block device is always raw.
   */
  format?: DiskFormat | undefined;
}

export interface SourceInfo {
  path: string;
  kind: 'file' | 'block';
  size: number;
  /** Logical sector size: the alignment of offsets and lengths for direct reads. */
  sectorSize: number;
  physicalSectorSize: number;
  /** True when reads bypass the page cache (O_DIRECT). */
  direct: boolean;
  /** 'qcow2' when the source is read as the guest disk of a virtual disk. */
  format: 'raw' | 'qcow2';
  /** The virtual disk's facts (format 'qcow2' only). */
  virtualDisk?: VirtualDiskInfo | undefined;
}

export class Source implements SourceInfo {
  readonly path: string;
  readonly kind: 'file' | 'block';
  readonly size: number;
  readonly sectorSize: number;
  readonly physicalSectorSize: number;
  readonly direct: boolean;
  readonly format: 'raw' | 'qcow2';
  readonly virtualDisk: VirtualDiskInfo | undefined;
  /**
   * @internal Bytes probe() may read from: the file's (or device's) own size,
   * which a virtual disk's guest size exceeds.
   */
  readonly probeSize: number;
  #handle: NativeSourceHandle | undefined;
  #guest: GuestParts | undefined;
  readonly #readers = new Set<BlockReader>();

  /** @internal use openSource() */
  constructor(path: string, handle: NativeSourceHandle, guest?: GuestParts) {
    const info = handle.info();
    this.path = path;
    this.kind = info.kind;
    this.size = guest ? guest.info.virtualSize : info.size;
    this.probeSize = info.size;
    this.format = guest ? 'qcow2' : 'raw';
    this.virtualDisk = guest?.info;
    this.#guest = guest;
    this.sectorSize = info.logicalSectorSize;
    this.physicalSectorSize = info.physicalSectorSize;
    this.direct = info.direct;
    this.#handle = handle;
  }

  get closed(): boolean {
    return this.#handle === undefined;
  }

  info(): SourceInfo {
    return {
      path: this.path,
      kind: this.kind,
      size: this.size,
      sectorSize: this.sectorSize,
      physicalSectorSize: this.physicalSectorSize,
      direct: this.direct,
      format: this.format,
      ...(this.virtualDisk ? { virtualDisk: this.virtualDisk } : {}),
    };
  }

  /**
   * The byte ranges that hold data: for a virtual disk, the guest ranges some
   * layer of its chain holds (the rest reads as zeros and is never read);
   * for a raw source, all of it.
   */
  async allocation(): Promise<Extent[]> {
    if (this.#handle === undefined) throw new LowtideError('CLOSED', `${this.path}: the source is closed`);
    if (this.#guest === undefined) return [{ offset: 0, length: this.size }];
    return this.#guest.allocation.map((e) => ({ ...e }));
  }

  /**
   * The guest ranges that the qcow2 image's persistent dirty bitmap `name`
   * marks as written. Rejects with BITMAP_IN_USE when the bitmap is flagged
   * in use (its content is not valid), NOT_FOUND when there is none of that
   * name, UNSUPPORTED for a raw source.
   */
  async bitmapExtents(name: string): Promise<Extent[]> {
    stringOption('name', name);
    if (this.#handle === undefined) throw new LowtideError('CLOSED', `${this.path}: the source is closed`);
    if (this.#guest === undefined) {
      throw new LowtideError(
        'UNSUPPORTED',
        `${this.path}: dirty bitmaps are read from qcow2 images only (format 'qcow2')`,
      );
    }
    return bitmapExtents(this.#guest.handle, name);
  }

  /**
   * Reads `extents` (default: the whole source) and yields blocks as they
   * complete. Extents may be in any order and need not be aligned; each must
   * lie inside the source.
   */
  read(extents?: Extents, options: ReadOptions = {}): BlockReader {
    return this.#read(extents ?? [{ offset: 0, length: this.size }], options, undefined);
  }

  /**
   * @internal What the guest ranges `extents` of a virtual disk are read
   * from: ranges of each layer file, compressed and zero bytes.
   */
  guestReads(extents: Extents): GuestReads {
    if (this.#handle === undefined) throw new LowtideError('CLOSED', `${this.path}: the source is closed`);
    if (this.#guest === undefined) {
      throw new LowtideError('INVALID_ARGUMENT', `${this.path}: not a virtual disk (format 'raw')`);
    }
    return guestReads(this.#guest, extents);
  }

  /**
   * @internal Like read() on a virtual disk, but each layer file with an
   * entry in `devices` has its blocks read from the device under its file
   * system, as that layer's offset table says (readFrom: 'device').
   */
  readGuestThrough(
    devices: readonly ({ device: Source; table: OffsetTable } | undefined)[],
    extents: Extents,
    options: ReadOptions = {},
  ): BlockReader {
    if (this.#guest === undefined) {
      throw new LowtideError('INVALID_ARGUMENT', `${this.path}: not a virtual disk (format 'raw')`);
    }
    const layers = devices.map((d): LayerDevice | undefined => {
      if (d === undefined) return undefined;
      const handle = d.device.#handle;
      if (handle === undefined) throw new LowtideError('CLOSED', `${d.device.path}: the device is closed`);
      return { device: handle, runs: deviceRuns(d.table, d.device.size) };
    });
    return this.#read(extents, options, undefined, layers);
  }

  /**
   * @internal Like read() on a regular file, but the bytes `table` (the
   * file's offset table, mapFile) places on `device` are read from there: the
   * reader cuts its requests where the table's runs end, so the extents are
   * split as they are read (a compact plan stays compact).
   */
  readFromDevice(device: Source, table: OffsetTable, extents: Extents, options: ReadOptions = {}): BlockReader {
    if (this.#guest !== undefined) {
      throw new LowtideError(
        'INVALID_ARGUMENT',
        `${this.path}: the extents of a virtual disk are guest offsets, not offsets in its files`,
      );
    }
    const handle = device.#handle;
    if (handle === undefined) throw new LowtideError('CLOSED', `${device.path}: the device is closed`);
    return this.#read(extents, options, { handle, runs: deviceRuns(table, device.size) });
  }

  /**
   * Like read(), but the extents with a `deviceOffset` other than -1 are read
   * from `device` (a block device opened with openSource) at that offset: a
   * file's blocks read straight from the device under its file system, as an
   * offset table (mapFile) says. Blocks carry offsets in this source, in one
   * sequence, under one queue depth, request size and pacing.
   */
  readThrough(device: Source, extents: readonly MappedExtent[], options: ReadOptions = {}): BlockReader {
    if (!(device instanceof Source)) {
      throw new LowtideError('INVALID_ARGUMENT', `device: expected a Source, got ${typeof device}`);
    }
    if (this.#guest !== undefined) {
      throw new LowtideError(
        'INVALID_ARGUMENT',
        `${this.path}: the extents of a virtual disk are guest offsets, not offsets in its files; read it with readFrom: 'device'`,
      );
    }
    const deviceHandle = device.#handle;
    if (deviceHandle === undefined) throw new LowtideError('CLOSED', `${device.path}: the device is closed`);
    validateExtents(extents);
    const offsets = new Float64Array(extents.length);
    extents.forEach((e, i) => {
      const d = e.deviceOffset;
      if (d !== -1 && (!Number.isSafeInteger(d) || d < 0 || d + e.length > device.size)) {
        throw new LowtideError(
          'OUT_OF_RANGE',
          `extents[${i}]: device range [${d}, ${d + e.length}) is not inside ${device.path} (${device.size} bytes)`,
          { offset: d, path: device.path },
        );
      }
      offsets[i] = d;
    });
    return this.#read(extents, options, { handle: deviceHandle, offsets });
  }

  #read(
    list: Extents,
    options: ReadOptions,
    device: DeviceTarget | undefined,
    layerDevices: readonly (LayerDevice | undefined)[] = [],
  ): BlockReader {
    const handle = this.#handle;
    if (handle === undefined) throw new LowtideError('CLOSED', `${this.path}: the source is closed`);
    const pastEnd = (offset: number, length: number): LowtideError =>
      new LowtideError(
        'OUT_OF_RANGE',
        `extent [${offset}, ${offset + length}) reaches past the end of ${this.path} (${this.size} bytes)`,
        { offset, path: this.path },
      );
    if (list instanceof ExtentList) {
      // Sorted and merged: the last extent ends furthest.
      const n = list.length;
      if (n > 0 && list.endAt(n - 1) > this.size) throw pastEnd(list.offsetAt(n - 1), list.lengthAt(n - 1));
    } else {
      validateExtents(list);
      for (const e of list) if (e.offset + e.length > this.size) throw pastEnd(e.offset, e.length);
    }
    // (The reader calls onEnd from its constructor when the native reader refuses to start.)
    let reader: BlockReader | undefined = undefined;
    const guest = this.#guest;
    const from = guest ? (config: NativeReaderOptions) => new GuestStream(guest, list, config, layerDevices) : handle;
    reader = new BlockReader(
      from,
      list,
      { ...objectOption('options', options) },
      this.sectorSize,
      () => {
        if (reader !== undefined) this.#readers.delete(reader);
      },
      device,
    );
    this.#readers.add(reader);
    return reader;
  }

  /**
   * Reads `length` bytes (default one 4 KiB page, at least a sector) at
   * `offset` and discards them; resolves with the read's latency in
   * nanoseconds. Throttles use it to measure what other small requests meet
   * on the storage. Offset and length must be multiples of the sector size.
   * The read is of the file or device itself (for a virtual disk, its
   * image file: offsets up to `probeSize`), not of the guest disk.
   */
  async probe(offset: number, length = Math.max(4096, this.sectorSize)): Promise<number> {
    const handle = this.#handle;
    if (handle === undefined) throw new LowtideError('CLOSED', `${this.path}: the source is closed`);
    try {
      return await handle.probe(offset, length);
    } catch (err) {
      throw toLowtideError(err, 'IO_ERROR');
    }
  }

  /** Stops every running read (waiting for reads in flight) and closes the descriptor. */
  async close(): Promise<void> {
    const handle = this.#handle;
    if (handle === undefined) return;
    this.#handle = undefined;
    await Promise.all([...this.#readers].map((r) => r.close()));
    handle.close();
    if (this.#guest) {
      for (const l of this.#guest.layers) if (l !== handle) l.close();
      this.#guest.handle.close();
      this.#guest = undefined;
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/**
 * Opens a regular file or block device read-only; with `format` 'qcow2' (or
 * 'auto' on a qcow2 file), its guest disk.
 */
export async function openSource(path: string, options: OpenSourceOptions = {}): Promise<Source> {
  stringOption('path', path);
  const opts = objectOption('options', options);
  const direct = choiceOption<DirectMode>('direct', opts.direct, ['auto', 'on', 'off'], 'auto');
  const format = formatOption('format', opts.format);
  const guest = await openGuest(path, format, direct);
  if (guest !== undefined) return new Source(path, guest.layers[0]!, guest);
  let handle: NativeSourceHandle;
  try {
    handle = await native.openSource(path, direct);
  } catch (err) {
    throw toLowtideError(err, 'OPEN_FAILED');
  }
  return new Source(path, handle);
}

/** True when this kernel allows io_uring (otherwise reads use the thread pool). */
export function ioUringAvailable(): boolean {
  return native.ioUringAvailable();
}
