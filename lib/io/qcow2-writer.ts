/**
 * Writes a guest disk as a qcow2 image (version 3, 64 KiB clusters, 16-bit
 * refcounts, no backing file): data clusters are appended as the guest bytes
 * arrive, clusters of zeros are left unallocated (they read as zeros), and
 * the metadata (L2 tables, L1 table, refcount blocks and table, header) is
 * written after the data by finish(). Every cluster of the file is
 * referenced once, so `qemu-img check` finds no leak and no error.
 *
 * Guest ranges are written once each, in any order; writes of different
 * clusters may be in flight together (a cluster's place in the file is
 * chosen before its write is awaited).
 */
import type { FileHandle } from 'node:fs/promises';
import { LowtideError } from '../errors.js';
import { native } from '../native.js';

/** 64 KiB clusters, qemu-img's default. */
const DEFAULT_CLUSTER_BITS = 16;
const HEADER_LENGTH = 104;
/** QCOW_OFLAG_COPIED: the cluster's refcount is 1 (written in place). */
const COPIED = 1n << 63n;

export class Qcow2Writer {
  readonly #out: FileHandle;
  readonly #size: number;
  readonly #bits: number;
  readonly #cluster: number;
  /** L2 entries per table (8 bytes each). */
  readonly #l2Entries: number;
  /** L2 tables by L1 index: host cluster numbers (0: unallocated). */
  readonly #l2 = new Map<number, Float64Array>();
  /** The next free cluster (0 is the header). */
  #next = 1;
  #finished = false;

  /**
   * `out`: an empty file opened for writing; `virtualSize`: the guest disk's
   * bytes. `clusterBits` (9 to 21, default 16) is for tests: small clusters
   * need many L2 tables and refcount blocks for a few MiB of data.
   */
  constructor(out: FileHandle, virtualSize: number, clusterBits = DEFAULT_CLUSTER_BITS) {
    if (!Number.isSafeInteger(virtualSize) || virtualSize <= 0) {
      throw new LowtideError('INVALID_ARGUMENT', `a qcow2 image needs a virtual size above 0, got ${virtualSize}`);
    }
    if (!Number.isInteger(clusterBits) || clusterBits < 9 || clusterBits > 21) {
      throw new LowtideError('INVALID_ARGUMENT', `qcow2 cluster bits: expected 9 to 21, got ${clusterBits}`);
    }
    this.#out = out;
    this.#size = virtualSize;
    this.#bits = clusterBits;
    this.#cluster = 2 ** clusterBits;
    this.#l2Entries = this.#cluster / 8;
  }

  /** Bytes of data clusters written so far. */
  get dataBytes(): number {
    return (this.#next - 1) * this.#cluster;
  }

  /**
   * Writes `length` bytes of `data` at guest `offset` (a multiple of the
   * cluster size; `length` too, unless the range ends the disk). Clusters of
   * zeros are not written.
   */
  async write(data: Buffer, length: number, offset: number): Promise<void> {
    const cluster = this.#cluster;
    const l2Entries = this.#l2Entries;
    if (this.#finished) throw new LowtideError('CLOSED', 'the qcow2 image is finished');
    if (offset % cluster !== 0 || (length % cluster !== 0 && offset + length !== this.#size)) {
      throw new LowtideError('INTERNAL', `qcow2 write of [${offset}, ${offset + length}) is not cluster-aligned`);
    }
    if (offset + length > this.#size) {
      throw new LowtideError('OUT_OF_RANGE', `qcow2 write of [${offset}, ${offset + length}) passes ${this.#size}`);
    }
    // Runs of clusters that are not all zeros, each placed at consecutive clusters of the file.
    const runs: { from: number; to: number; host: number }[] = [];
    for (let at = 0; at < length; at += cluster) {
      const n = Math.min(cluster, length - at);
      if (native.isZero(data.subarray(at, at + n))) continue;
      const guestCluster = (offset + at) / cluster;
      const table = this.#table(Math.floor(guestCluster / l2Entries));
      const slot = guestCluster % l2Entries;
      if (table[slot] !== 0) {
        throw new LowtideError('INTERNAL', `guest cluster at ${offset + at} written twice to the qcow2 image`);
      }
      const host = this.#next++;
      table[slot] = host;
      const last = runs[runs.length - 1];
      if (last !== undefined && last.to === at && last.host + (last.to - last.from) / cluster === host)
        last.to = at + n;
      else runs.push({ from: at, to: at + n, host });
    }
    for (const r of runs) {
      const { bytesWritten } = await this.#out.write(data, r.from, r.to - r.from, r.host * cluster);
      if (bytesWritten !== r.to - r.from) throw new Error(`short write at ${r.host * cluster}`);
    }
  }

  #table(l1Index: number): Float64Array {
    let t = this.#l2.get(l1Index);
    if (t === undefined) this.#l2.set(l1Index, (t = new Float64Array(this.#l2Entries)));
    return t;
  }

  /** Writes the metadata after the data and the header; the image is then complete (not yet synced). */
  async finish(): Promise<void> {
    if (this.#finished) return;
    this.#finished = true;
    const cluster = this.#cluster;
    const bits = this.#bits;
    const l2Entries = this.#l2Entries;
    // 16-bit refcounts.
    const refcountsPerBlock = cluster / 2;
    const guestClusters = Math.ceil(this.#size / cluster);
    const l1Size = Math.ceil(guestClusters / l2Entries);
    const l1Clusters = Math.ceil((l1Size * 8) / cluster);
    const indexes = [...this.#l2.keys()].sort((a, b) => a - b);
    const l2Start = this.#next;
    const l1Start = l2Start + indexes.length;
    const refStart = l1Start + l1Clusters;
    // The refcount blocks and table count themselves: grow them until they cover the file.
    let blocks = 1;
    let tableClusters = 1;
    for (;;) {
      const total = refStart + blocks + tableClusters;
      const b = Math.ceil(total / refcountsPerBlock);
      const t = Math.ceil((b * 8) / cluster);
      if (b === blocks && t === tableClusters) break;
      blocks = b;
      tableClusters = t;
    }
    const total = refStart + blocks + tableClusters;
    const tableStart = refStart + blocks;

    const be64 = (buf: Buffer, at: number, v: bigint): void => void buf.writeBigUInt64BE(v, at);
    const put = async (buf: Buffer, at: number): Promise<void> => {
      const { bytesWritten } = await this.#out.write(buf, 0, buf.length, at * cluster);
      if (bytesWritten !== buf.length) throw new Error(`short write at ${at * cluster}`);
    };
    // L2 tables, and the L1 table pointing at them.
    const l1 = Buffer.alloc(l1Clusters * cluster);
    for (let k = 0; k < indexes.length; k++) {
      const t = this.#l2.get(indexes[k]!)!;
      const l2 = Buffer.alloc(cluster);
      for (let j = 0; j < l2Entries; j++) {
        if (t[j] !== 0) be64(l2, j * 8, (BigInt(t[j]!) << BigInt(bits)) | COPIED);
      }
      await put(l2, l2Start + k);
      be64(l1, indexes[k]! * 8, (BigInt(l2Start + k) << BigInt(bits)) | COPIED);
    }
    await put(l1, l1Start);
    // Refcount 1 for every cluster of the file, and the table of the blocks.
    for (let b = 0; b < blocks; b++) {
      const block = Buffer.alloc(cluster);
      const n = Math.min(refcountsPerBlock, total - b * refcountsPerBlock);
      for (let j = 0; j < n; j++) block.writeUInt16BE(1, j * 2);
      await put(block, refStart + b);
    }
    const table = Buffer.alloc(tableClusters * cluster);
    for (let b = 0; b < blocks; b++) be64(table, b * 8, BigInt(refStart + b) << BigInt(bits));
    await put(table, tableStart);
    // The header last: until it is there, the file is no qcow2 image.
    const h = Buffer.alloc(cluster);
    h.writeUInt32BE(0x514649fb, 0); // 'QFI' 0xfb
    h.writeUInt32BE(3, 4);
    h.writeUInt32BE(bits, 20);
    be64(h, 24, BigInt(this.#size));
    h.writeUInt32BE(l1Size, 36);
    be64(h, 40, BigInt(l1Start * cluster));
    be64(h, 48, BigInt(tableStart * cluster));
    h.writeUInt32BE(tableClusters, 56);
    h.writeUInt32BE(4, 96); // refcount_order: 16-bit refcounts
    h.writeUInt32BE(HEADER_LENGTH, 100);
    // (No header extensions: the end marker's zeros follow the header.)
    await put(h, 0);
    await this.#out.truncate(total * cluster);
  }
}
