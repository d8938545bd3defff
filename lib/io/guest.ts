/**
 * Virtual disks: the guest's view of a qcow2 image and its backing chain.
 *
 * The native side (native/qcow2) parses the images and resolves a guest range
 * into segments: data at an offset of one layer's file, compressed clusters,
 * zeros, and ranges no layer holds. Reads of the guest view are reads of the
 * layers' files through the native engine (aligned O_DIRECT reads, many in
 * flight, one engine per layer), mapped back to guest offsets; compressed
 * clusters are decompressed natively; zeros cost no read.
 */
import { LowtideError, toLowtideError } from '../errors.js';
import {
  native,
  type NativeGuestHandle,
  type NativeReaderOptions,
  type NativeReaderStats,
  type NativeSourceHandle,
} from '../native.js';
import { choiceOption } from '../options.js';
import { firstEndingAfter, type Extent } from './extents.js';
import type { Extents } from './extent-list.js';
import { splitByTable, type OffsetTable } from './offset-table.js';
import { nativeStream, type BlockStream, type StreamBlock } from './reader.js';

/**
 * How a source is read: 'raw' (the bytes of the file or device), 'qcow2' (the
 * guest disk of a qcow2 image; its backing chain is followed) or 'auto' (a
 * regular file with a qcow2 header is read as qcow2, under the probing rule:
 * backing files only beside the image, never raw; a block device is raw).
 */
export type DiskFormat = 'raw' | 'qcow2' | 'auto';

export function formatOption(name: string, value: unknown): DiskFormat {
  return choiceOption<DiskFormat>(name, value, ['raw', 'qcow2', 'auto'], 'raw');
}

/** One file of a virtual disk's backing chain (layer 0 is the image named). */
export interface VirtualDiskLayer {
  path: string;
  format: 'qcow2' | 'raw';
  /** Guest bytes this layer covers. */
  size: number;
  fileSize: number;
  /** qcow2 only. */
  version?: number | undefined;
  clusterSize?: number | undefined;
  extendedL2?: boolean | undefined;
  compression?: 'deflate' | 'zstd' | undefined;
  dirty?: boolean | undefined;
  backingFile?: string | null | undefined;
  backingFormat?: string | null | undefined;
  bitmapsExtension?: boolean | undefined;
  /** Internal snapshots in the image (not read; the guest disk is the active state). */
  snapshots?: number | undefined;
}

/** A persistent dirty bitmap of a qcow2 image. */
export interface DirtyBitmap {
  name: string;
  /** Bytes of guest disk per bit. */
  granularity: number;
  /** Flagged in use: the image was not closed cleanly or is open in QEMU; its content is not valid. */
  inUse: boolean;
  /** Recording writes (QEMU's 'auto' flag). */
  enabled: boolean;
}

export interface VirtualDiskInfo {
  format: 'qcow2';
  /** The format was detected ('auto'), not named. */
  probed: boolean;
  virtualSize: number;
  clusterSize: number;
  /** Guest bytes held by some layer of the chain (data and compressed clusters). */
  allocatedBytes: number;
  layers: VirtualDiskLayer[];
  /** The image's persistent dirty bitmaps. */
  bitmaps: DirtyBitmap[];
}

const enum Kind {
  Unallocated = 0,
  Zero = 1,
  Data = 2,
  Compressed = 3,
}

export interface GuestSegment {
  guest: number;
  length: number;
  kind: Kind;
  layer: number;
  host: number;
}

/** @internal The parts of an opened virtual disk a Source keeps. */
export interface GuestParts {
  handle: NativeGuestHandle;
  /** One native source per layer file, opened for the read engine. */
  layers: NativeSourceHandle[];
  info: VirtualDiskInfo;
  /** The whole guest disk's segments, mapped once when it was opened (plans and reads reuse them). */
  segments: GuestSegment[];
  /** The guest ranges some layer holds, from `segments`. */
  allocation: Extent[];
}

/**
 * @internal Reads of one layer file from the block device under its file
 * system: the device (opened read-only) and the layer's offset table.
 */
export interface LayerDevice {
  device: NativeSourceHandle;
  table: OffsetTable;
}

const MAP_STEP = 1 << 30;

/** The segments of the guest ranges `extents`, in order. */
async function mapExtents(handle: NativeGuestHandle, extents: Extents): Promise<GuestSegment[]> {
  const out: GuestSegment[] = [];
  for (const e of extents) {
    for (let off = e.offset; off < e.offset + e.length; off += MAP_STEP) {
      const len = Math.min(MAP_STEP, e.offset + e.length - off);
      let flat: Float64Array;
      try {
        flat = await handle.map(off, len);
      } catch (err) {
        throw toLowtideError(err, 'QCOW2_CORRUPT');
      }
      for (let i = 0; i < flat.length; i += 7) {
        out.push({
          guest: flat[i]!,
          length: flat[i + 1]!,
          kind: flat[i + 2]! as Kind,
          layer: flat[i + 3]!,
          host: flat[i + 4]!,
        });
      }
    }
  }
  return out;
}

/** The guest ranges some layer holds (data and compressed clusters), sorted and merged. */
function allocationOf(segs: readonly GuestSegment[]): Extent[] {
  const out: { offset: number; length: number }[] = [];
  for (const s of segs) {
    if (s.kind !== Kind.Data && s.kind !== Kind.Compressed) continue;
    const last = out[out.length - 1];
    if (last !== undefined && last.offset + last.length === s.guest) last.length += s.length;
    else out.push({ offset: s.guest, length: s.length });
  }
  return out;
}

/**
 * The segments of the guest ranges `extents` (each inside the disk), in
 * order, cut from the disk's segments mapped when it was opened.
 */
export function segmentsOf(parts: GuestParts, extents: Iterable<Extent>): GuestSegment[] {
  const segs = parts.segments;
  const out: GuestSegment[] = [];
  for (const e of extents) {
    const end = e.offset + e.length;
    const first = firstEndingAfter(
      segs,
      e.offset,
      (s) => s.guest,
      (s) => s.length,
    );
    for (let i = first; i < segs.length && segs[i]!.guest < end; i++) {
      const s = segs[i]!;
      const from = Math.max(s.guest, e.offset);
      const to = Math.min(s.guest + s.length, end);
      if (to <= from) continue;
      // Data: the host offset moves with the guest offset; compressed clusters keep theirs.
      const host = s.kind === Kind.Data ? s.host + (from - s.guest) : s.host;
      out.push({ guest: from, length: to - from, kind: s.kind, layer: s.layer, host });
    }
  }
  return out;
}

/** @internal What the guest ranges `extents` are read from: each layer file's ranges, and the bytes read from no file. */
export interface GuestReads {
  /** Per layer (index in the chain): the ranges of its file that hold data of `extents`, in guest order. */
  layers: Extent[][];
  /** Guest bytes in compressed clusters (read through the layer files and decompressed). */
  compressedBytes: number;
  /** Guest bytes that read as zeros (zero clusters, or held by no layer). */
  zeroBytes: number;
}

export function guestReads(parts: GuestParts, extents: readonly Extent[]): GuestReads {
  const layers: Extent[][] = parts.layers.map(() => []);
  let compressedBytes = 0;
  let zeroBytes = 0;
  for (const s of segmentsOf(parts, extents)) {
    if (s.kind === Kind.Data) layers[s.layer]!.push({ offset: s.host, length: s.length });
    else if (s.kind === Kind.Compressed) compressedBytes += s.length;
    else zeroBytes += s.length;
  }
  return { layers, compressedBytes, zeroBytes };
}

/** The guest ranges the dirty bitmap `name` marks, merged. */
export async function bitmapExtents(handle: NativeGuestHandle, name: string): Promise<Extent[]> {
  let flat: Float64Array;
  try {
    flat = await handle.bitmapExtents(name);
  } catch (err) {
    throw toLowtideError(err, 'QCOW2_CORRUPT');
  }
  const out: Extent[] = [];
  for (let i = 0; i < flat.length; i += 2) out.push({ offset: flat[i]!, length: flat[i + 1]! });
  return out;
}

/** Opens `path` as a virtual disk; undefined when it is read raw. */
export async function openGuest(
  path: string,
  format: DiskFormat,
  direct: 'auto' | 'on' | 'off',
): Promise<GuestParts | undefined> {
  if (format === 'raw') return undefined;
  let handle: NativeGuestHandle;
  try {
    handle = await native.openGuest(path, format);
  } catch (err) {
    throw toLowtideError(err, 'OPEN_FAILED');
  }
  const layers: NativeSourceHandle[] = [];
  try {
    const info = handle.info();
    if (info.format === 'raw') {
      handle.close();
      return undefined;
    }
    for (const l of info.layers) {
      try {
        layers.push(await native.openSource(l.path, direct));
      } catch (err) {
        throw toLowtideError(err, 'OPEN_FAILED', `${path}: layer ${l.path}`);
      }
    }
    const segments = await mapExtents(handle, [{ offset: 0, length: info.size }]);
    const allocated = allocationOf(segments);
    let bitmaps: DirtyBitmap[];
    try {
      bitmaps = await handle.bitmaps();
    } catch (err) {
      throw toLowtideError(err, 'QCOW2_CORRUPT');
    }
    return {
      handle,
      layers,
      segments,
      allocation: allocated,
      info: {
        format: 'qcow2',
        probed: info.probed,
        virtualSize: info.size,
        clusterSize: info.layers[0]!.clusterSize!,
        allocatedBytes: allocated.reduce((n, e) => n + e.length, 0),
        layers: info.layers.map((l) => ({ ...l })),
        bitmaps,
      },
    };
  } catch (err) {
    for (const l of layers) l.close();
    handle.close();
    throw err;
  }
}

/** Pieces of [offset, offset + length) that cross no multiple of `unit`. */
function* split(offset: number, length: number, unit: number): Generator<[number, number]> {
  const end = offset + length;
  for (let pos = offset; pos < end;) {
    const next = Math.min(end, (Math.floor(pos / unit) + 1) * unit);
    yield [pos, next - pos];
    pos = next;
  }
}

/**
 * @internal The blocks of guest `extents` in guest order: one native stream
 * per layer over that layer's data (split so that no block crosses a
 * multiple of maxBlockSize in guest offsets, as the engine guarantees for a
 * plain source), zeros without a read, compressed clusters read natively.
 */
export class GuestStream implements BlockStream {
  readonly engine: 'io_uring' | 'threads';
  readonly #parts: GuestParts;
  readonly #extents: Extents;
  readonly #config: NativeReaderOptions;
  readonly #devices: readonly (LayerDevice | undefined)[];
  #segments: GuestSegment[] | undefined;
  #index = 0;
  #done = 0; // bytes of segments[index] delivered
  #streams = new Map<number, BlockStream>();
  #pending = new Map<number, StreamBlock[]>();
  #blockSize: number;
  #zeros: Buffer | undefined;
  #closed = false;
  #stats = { zeroBytes: 0, compressedBytes: 0 };

  /** `devices`: per layer, the device to read its file's blocks from (offset table), or undefined: the file. */
  constructor(
    parts: GuestParts,
    extents: Extents,
    config: NativeReaderOptions,
    devices: readonly (LayerDevice | undefined)[] = [],
  ) {
    this.#parts = parts;
    this.#devices = devices;
    this.#extents = extents;
    this.#config = config;
    this.#blockSize = config.blockSize;
    this.engine = native.ioUringAvailable() && config.engine !== 'threads' ? 'io_uring' : 'threads';
  }

  #start(): GuestSegment[] {
    const segs = segmentsOf(this.#parts, this.#extents);
    const unit = Math.min(this.#config.maxBlockSize, this.#config.blockSize);
    const byLayer = new Map<number, Extent[]>();
    const out: GuestSegment[] = [];
    for (const s of segs) {
      // Split so that no piece crosses a multiple of the request size in guest offsets.
      for (const [g, n] of split(s.guest, s.length, unit)) {
        const piece = { ...s, guest: g, length: n, host: s.kind === Kind.Data ? s.host + (g - s.guest) : s.host };
        out.push(piece);
        if (s.kind === Kind.Data) {
          let list = byLayer.get(s.layer);
          if (list === undefined) byLayer.set(s.layer, (list = []));
          list.push({ offset: piece.host, length: n });
        }
      }
    }
    for (const [layer, list] of byLayer) {
      const handle = this.#parts.layers[layer]!;
      const dev = this.#devices[layer];
      let stream: BlockStream;
      if (dev === undefined) {
        stream = nativeStream(handle, list, this.#config);
      } else {
        // Each piece on its own, so that none is merged across a guest boundary.
        const pieces = list.flatMap((e) => splitByTable([e], dev.table));
        const offsets = Float64Array.from(pieces, (p) => p.deviceOffset);
        stream = nativeStream(handle, pieces, this.#config, { handle: dev.device, offsets });
      }
      this.#streams.set(layer, stream);
      this.#pending.set(layer, []);
    }
    return out;
  }

  async next(): Promise<StreamBlock[] | null> {
    if (this.#closed) return null;
    this.#segments ??= this.#start();
    const segs = this.#segments;
    for (;;) {
      const s = segs[this.#index];
      if (s === undefined) return null;
      if (s.kind === Kind.Data) {
        const pending = this.#pending.get(s.layer)!;
        if (pending.length === 0) {
          const batch = await this.#streams.get(s.layer)!.next();
          if (batch === null) {
            throw new LowtideError(
              'INTERNAL',
              `layer ${s.layer} of the virtual disk ended before guest offset ${s.guest}`,
            );
          }
          pending.push(...batch);
        }
        const out: StreamBlock[] = [];
        while (pending.length > 0 && this.#index < segs.length) {
          const cur = segs[this.#index]!;
          if (cur.kind !== Kind.Data || cur.layer !== s.layer) break;
          const b = pending[0]!;
          if (b.offset !== cur.host + this.#done) {
            throw new LowtideError(
              'INTERNAL',
              `layer ${s.layer}: block at ${b.offset}, expected ${cur.host + this.#done}`,
            );
          }
          pending.shift();
          out.push({ ...b, offset: cur.guest + this.#done, release: () => b.release() });
          this.#done += b.length;
          if (this.#done >= cur.length) {
            this.#index++;
            this.#done = 0;
          }
        }
        if (out.length > 0) return out;
        continue;
      }
      this.#index++;
      if (s.kind === Kind.Compressed) {
        const t0 = process.hrtime.bigint();
        let data: Buffer;
        try {
          data = await this.#parts.handle.read(s.guest, s.length);
        } catch (err) {
          throw toLowtideError(err, 'IO_ERROR');
        }
        this.#stats.compressedBytes += s.length;
        return [
          { offset: s.guest, length: s.length, data, latencyNs: Number(process.hrtime.bigint() - t0), release() {} },
        ];
      }
      // Zeros (a zero cluster, or held by no layer).
      if (this.#zeros === undefined || this.#zeros.length < s.length) this.#zeros = Buffer.alloc(s.length);
      this.#stats.zeroBytes += s.length;
      return [
        { offset: s.guest, length: s.length, data: this.#zeros.subarray(0, s.length), latencyNs: 0, release() {} },
      ];
    }
  }

  setQueueDepth(queueDepth: number): void {
    for (const s of this.#streams.values()) s.setQueueDepth(queueDepth);
  }

  setBlockSize(blockSize: number): void {
    this.#blockSize = blockSize;
    for (const s of this.#streams.values()) s.setBlockSize(blockSize);
  }

  setPacing(ns: number): void {
    for (const s of this.#streams.values()) s.setPacing(ns);
  }

  stats(): NativeReaderStats {
    const all = [...this.#streams.values()].map((s) => s.stats());
    const sum = (f: (x: NativeReaderStats) => number): number => all.reduce((n, x) => n + f(x), 0);
    return {
      requestsCompleted: sum((x) => x.requestsCompleted),
      bytesDelivered: sum((x) => x.bytesDelivered) + this.#stats.zeroBytes + this.#stats.compressedBytes,
      bytesRead: sum((x) => x.bytesRead),
      queueDepth: all[0]?.queueDepth ?? this.#config.queueDepth,
      blockSize: all[0]?.blockSize ?? this.#blockSize,
      inFlight: sum((x) => x.inFlight),
      maxInFlight: Math.max(0, ...all.map((x) => x.maxInFlight)),
      pacingNs: all[0]?.pacingNs ?? 0,
    };
  }

  async close(): Promise<void> {
    this.#closed = true;
    for (const list of this.#pending.values()) for (const b of list.splice(0)) b.release();
    await Promise.all([...this.#streams.values()].map((s) => s.close()));
  }
}
