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
  /** Data: where the bytes are in the layer's file; compressed: where its compressed cluster is. */
  host: number;
  /** Compressed: the bytes of the compressed cluster in the file, and the segment's offset in the cluster. */
  csize: number;
  inner: number;
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
 * system: the device (opened read-only) and the runs of the layer's offset
 * table read from it (deviceRuns in offset-table.ts).
 */
export interface LayerDevice {
  device: NativeSourceHandle;
  runs: Float64Array;
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
          csize: flat[i + 5]!,
          inner: flat[i + 6]!,
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

/** The part [guest, guest + length) of segment `s`. */
function piece(s: GuestSegment, guest: number, length: number): GuestSegment {
  // Data: the host offset moves with the guest offset; compressed clusters
  // keep theirs, and the offset in the cluster moves.
  const d = guest - s.guest;
  return {
    ...s,
    guest,
    length,
    host: s.kind === Kind.Data ? s.host + d : s.host,
    inner: s.kind === Kind.Compressed ? s.inner + d : s.inner,
  };
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
      out.push(piece(s, from, to - from));
    }
  }
  return out;
}

/** @internal What the guest ranges `extents` are read from: each layer file's ranges, and the bytes read from no file. */
export interface GuestReads {
  /** Per layer (index in the chain): the ranges of its file that hold data of `extents`, in guest order. */
  layers: Extent[][];
  /**
   * The compressed clusters `extents` touch, in guest order: where each
   * cluster's compressed bytes are in its layer's file (read with the layer's
   * data, then decompressed), and the guest bytes of `extents` in it.
   */
  compressed: { layer: number; host: number; csize: number; guestBytes: number }[];
  /** Guest bytes in compressed clusters. */
  compressedBytes: number;
  /** Guest bytes that read as zeros (zero clusters, or held by no layer). */
  zeroBytes: number;
}

export function guestReads(parts: GuestParts, extents: Iterable<Extent>): GuestReads {
  const layers: Extent[][] = parts.layers.map(() => []);
  const compressed: GuestReads['compressed'] = [];
  let compressedBytes = 0;
  let zeroBytes = 0;
  for (const s of segmentsOf(parts, extents)) {
    if (s.kind === Kind.Data) layers[s.layer]!.push({ offset: s.host, length: s.length });
    else if (s.kind === Kind.Compressed) {
      compressedBytes += s.length;
      const last = compressed[compressed.length - 1];
      if (last !== undefined && last.layer === s.layer && last.host === s.host) last.guestBytes += s.length;
      else compressed.push({ layer: s.layer, host: s.host, csize: s.csize, guestBytes: s.length });
    } else zeroBytes += s.length;
  }
  return { layers, compressed, compressedBytes, zeroBytes };
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

/** A piece of the guest view a GuestStream delivers; `fresh`: a compressed piece whose cluster is read (not the one before). */
type StreamPiece = GuestSegment & { fresh: boolean };

/**
 * @internal The blocks of guest `extents` in guest order: one native stream
 * per layer over that layer's data and compressed clusters (split so that no
 * block crosses a multiple of maxBlockSize in guest offsets, as the engine
 * guarantees for a plain source), zeros without a read. Every read of the
 * guest view is a read of a layer's engine (aligned O_DIRECT, counted in its
 * stats, under the same queue depth and pacing): a compressed cluster's bytes
 * are read with the layer's data, then decompressed natively.
 */
export class GuestStream implements BlockStream {
  readonly engine: 'io_uring' | 'threads';
  readonly #parts: GuestParts;
  readonly #extents: Extents;
  readonly #config: NativeReaderOptions;
  readonly #devices: readonly (LayerDevice | undefined)[];
  #segments: StreamPiece[] | undefined;
  #index = 0;
  #done = 0; // bytes of segments[index] delivered
  #streams = new Map<number, BlockStream>();
  #pending = new Map<number, StreamBlock[]>();
  /** Queue depth, block size and pacing in force. */
  readonly #knobs: { queueDepth: number; blockSize: number; pacingNs: number };
  /** Where the layers' engines count their reads for other processes (shareReads()). */
  #shared: { map: ArrayBuffer; index: number } | undefined;
  #zeros: Buffer | undefined;
  /** The compressed cluster last read, decompressed. */
  #cluster: { data: Buffer; latencyNs: number } | undefined;
  #closed = false;
  #stats = { zeroBytes: 0, compressedBytes: 0, compressedReadBytes: 0 };

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
    this.#knobs = { queueDepth: config.queueDepth, blockSize: config.blockSize, pacingNs: config.pacingNs };
    this.engine = native.ioUringAvailable() && config.engine !== 'threads' ? 'io_uring' : 'threads';
  }

  #start(): StreamPiece[] {
    const segs = segmentsOf(this.#parts, this.#extents);
    // Pieces of whole maxBlockSize units of guest offsets: the engine cuts each
    // into requests of the block size in force (from the piece's start, since
    // the piece lies anywhere in its file), so a block size the throttle sets
    // later applies to them too.
    const unit = this.#config.maxBlockSize;
    const config: NativeReaderOptions = { ...this.#config, ...this.#knobs, splitWithinExtents: true };
    const byLayer = new Map<number, Extent[]>();
    const read = (layer: number, offset: number, length: number): void => {
      let list = byLayer.get(layer);
      if (list === undefined) byLayer.set(layer, (list = []));
      list.push({ offset, length });
    };
    const out: StreamPiece[] = [];
    let cluster: GuestSegment | undefined;
    for (const s of segs) {
      // Split so that no piece crosses a multiple of maxBlockSize in guest offsets.
      for (const [g, n] of split(s.guest, s.length, unit)) {
        const p: StreamPiece = { ...piece(s, g, n), fresh: false };
        out.push(p);
        if (s.kind === Kind.Data) read(s.layer, p.host, n);
        else if (s.kind === Kind.Compressed && (cluster?.layer !== s.layer || cluster.host !== s.host)) {
          // A cluster's pieces follow each other: it is read once, for its first.
          p.fresh = true;
          cluster = s;
          read(s.layer, s.host, s.csize);
        }
      }
    }
    for (const [layer, list] of byLayer) {
      const handle = this.#parts.layers[layer]!;
      const dev = this.#devices[layer];
      // With a device, the engine cuts its requests where the table's runs end.
      const stream =
        dev === undefined
          ? nativeStream(handle, list, config)
          : nativeStream(handle, list, config, { handle: dev.device, runs: dev.runs });
      if (this.#shared) stream.shareReads(this.#shared.map, this.#shared.index);
      this.#streams.set(layer, stream);
      this.#pending.set(layer, []);
    }
    return out;
  }

  /** The next block of `layer`'s stream, which must start at `offset` of its file. */
  async #take(layer: number, offset: number): Promise<StreamBlock> {
    const pending = this.#pending.get(layer)!;
    if (pending.length === 0) {
      const batch = await this.#streams.get(layer)!.next();
      if (batch === null) {
        throw new LowtideError(
          'INTERNAL',
          `layer ${layer} of the virtual disk ended before offset ${offset} of its file`,
        );
      }
      pending.push(...batch);
    }
    const b = pending.shift()!;
    if (b.offset !== offset) {
      b.release();
      throw new LowtideError('INTERNAL', `layer ${layer}: block at ${b.offset}, expected ${offset}`);
    }
    return b;
  }

  /** Reads and decompresses the compressed cluster of `s`. */
  async #readCluster(s: GuestSegment): Promise<{ data: Buffer; latencyNs: number }> {
    const blocks: StreamBlock[] = [];
    try {
      let got = 0;
      while (got < s.csize) {
        const b = await this.#take(s.layer, s.host + got);
        blocks.push(b);
        got += b.length;
      }
      const bytes = blocks.length === 1 ? blocks[0]!.data : Buffer.concat(blocks.map((b) => b.data));
      // decompress() copies the bytes before it returns: the blocks go back at once.
      const pending = this.#parts.handle.decompress(s.layer, s.host, bytes);
      const latencyNs = Math.max(0, ...blocks.map((b) => b.latencyNs));
      for (const b of blocks.splice(0)) b.release();
      this.#stats.compressedReadBytes += s.csize;
      return { data: await pending, latencyNs };
    } catch (err) {
      throw toLowtideError(err, 'QCOW2_CORRUPT');
    } finally {
      for (const b of blocks) b.release();
    }
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
        if (pending.length === 0) pending.unshift(await this.#take(s.layer, s.host + this.#done));
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
        if (s.fresh || this.#cluster === undefined) this.#cluster = await this.#readCluster(s);
        const c = this.#cluster;
        if (s.inner + s.length > c.data.length) {
          throw new LowtideError('QCOW2_CORRUPT', `guest offset ${s.guest}: compressed segment outside its cluster`);
        }
        this.#stats.compressedBytes += s.length;
        return [
          {
            offset: s.guest,
            length: s.length,
            data: c.data.subarray(s.inner, s.inner + s.length),
            latencyNs: s.fresh ? c.latencyNs : 0,
            release() {},
          },
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

  // Settings made before the first next() (a throttle applies its decision
  // at once) are kept for the layers' streams, which start then.
  setQueueDepth(queueDepth: number): void {
    this.#knobs.queueDepth = queueDepth;
    for (const s of this.#streams.values()) s.setQueueDepth(queueDepth);
  }

  setBlockSize(blockSize: number): void {
    this.#knobs.blockSize = blockSize;
    for (const s of this.#streams.values()) s.setBlockSize(blockSize);
  }

  setPacing(ns: number): void {
    this.#knobs.pacingNs = ns;
    for (const s of this.#streams.values()) s.setPacing(ns);
  }

  shareReads(map: ArrayBuffer, index: number): void {
    if (this.#shared) return;
    this.#shared = { map, index };
    for (const s of this.#streams.values()) s.shareReads(map, index);
  }

  stats(): NativeReaderStats {
    const all = [...this.#streams.values()].map((s) => s.stats());
    const sum = (f: (x: NativeReaderStats) => number): number => all.reduce((n, x) => n + f(x), 0);
    return {
      requestsCompleted: sum((x) => x.requestsCompleted),
      // Guest bytes: a compressed cluster's bytes read stand for the guest bytes decompressed from them.
      bytesDelivered:
        sum((x) => x.bytesDelivered) -
        this.#stats.compressedReadBytes +
        this.#stats.zeroBytes +
        this.#stats.compressedBytes,
      bytesRead: sum((x) => x.bytesRead),
      queueDepth: all[0]?.queueDepth ?? this.#knobs.queueDepth,
      blockSize: all[0]?.blockSize ?? this.#knobs.blockSize,
      inFlight: sum((x) => x.inFlight),
      maxInFlight: Math.max(0, ...all.map((x) => x.maxInFlight)),
      pacingNs: all[0]?.pacingNs ?? this.#knobs.pacingNs,
    };
  }

  async close(): Promise<void> {
    this.#closed = true;
    for (const list of this.#pending.values()) for (const b of list.splice(0)) b.release();
    await Promise.all([...this.#streams.values()].map((s) => s.close()));
  }
}
