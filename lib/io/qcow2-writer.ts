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

const CLUSTER_BITS = 16;
const CLUSTER = 1 << CLUSTER_BITS;
/** L2 entries per table, refcounts (16 bits) per block, table entries per cluster. */
const L2_ENTRIES = CLUSTER / 8;
const REFCOUNTS_PER_BLOCK = CLUSTER / 2;
const HEADER_LENGTH = 104;
/** QCOW_OFLAG_COPIED: the cluster's refcount is 1 (written in place). */
const COPIED = 1n << 63n;

export class Qcow2Writer {
  readonly #out: FileHandle;
  readonly #size: number;
  /** L2 tables by L1 index: host cluster numbers (0: unallocated). */
  readonly #l2 = new Map<number, Float64Array>();
  /** The next free cluster (0 is the header). */
  #next = 1;
  #finished = false;

  /** `out`: an empty file opened for writing; `virtualSize`: the guest disk's bytes. */
  constructor(out: FileHandle, virtualSize: number) {
    if (!Number.isSafeInteger(virtualSize) || virtualSize <= 0) {
      throw new LowtideError('INVALID_ARGUMENT', `a qcow2 image needs a virtual size above 0, got ${virtualSize}`);
    }
    this.#out = out;
    this.#size = virtualSize;
  }

  /** Bytes of data clusters written so far. */
  get dataBytes(): number {
    return (this.#next - 1) * CLUSTER;
  }

  /**
   * Writes `length` bytes of `data` at guest `offset` (a multiple of the
   * cluster size; `length` too, unless the range ends the disk). Clusters of
   * zeros are not written.
   */
  async write(data: Buffer, length: number, offset: number): Promise<void> {
    if (this.#finished) throw new LowtideError('CLOSED', 'the qcow2 image is finished');
    if (offset % CLUSTER !== 0 || (length % CLUSTER !== 0 && offset + length !== this.#size)) {
      throw new LowtideError('INTERNAL', `qcow2 write of [${offset}, ${offset + length}) is not cluster-aligned`);
    }
    if (offset + length > this.#size) {
      throw new LowtideError('OUT_OF_RANGE', `qcow2 write of [${offset}, ${offset + length}) passes ${this.#size}`);
    }
    // Runs of clusters that are not all zeros, each placed at consecutive clusters of the file.
    const runs: { from: number; to: number; host: number }[] = [];
    for (let at = 0; at < length; at += CLUSTER) {
      const n = Math.min(CLUSTER, length - at);
      if (native.isZero(data.subarray(at, at + n))) continue;
      const guestCluster = (offset + at) / CLUSTER;
      const table = this.#table(Math.floor(guestCluster / L2_ENTRIES));
      const slot = guestCluster % L2_ENTRIES;
      if (table[slot] !== 0) {
        throw new LowtideError('INTERNAL', `guest cluster at ${offset + at} written twice to the qcow2 image`);
      }
      const host = this.#next++;
      table[slot] = host;
      const last = runs[runs.length - 1];
      if (last !== undefined && last.to === at && last.host + (last.to - last.from) / CLUSTER === host)
        last.to = at + n;
      else runs.push({ from: at, to: at + n, host });
    }
    for (const r of runs) {
      const { bytesWritten } = await this.#out.write(data, r.from, r.to - r.from, r.host * CLUSTER);
      if (bytesWritten !== r.to - r.from) throw new Error(`short write at ${r.host * CLUSTER}`);
    }
  }

  #table(l1Index: number): Float64Array {
    let t = this.#l2.get(l1Index);
    if (t === undefined) this.#l2.set(l1Index, (t = new Float64Array(L2_ENTRIES)));
    return t;
  }

  /** Writes the metadata after the data and the header; the image is then complete (not yet synced). */
  async finish(): Promise<void> {
    if (this.#finished) return;
    this.#finished = true;
    const guestClusters = Math.ceil(this.#size / CLUSTER);
    const l1Size = Math.ceil(guestClusters / L2_ENTRIES);
    const l1Clusters = Math.ceil((l1Size * 8) / CLUSTER);
    const indexes = [...this.#l2.keys()].sort((a, b) => a - b);
    const l2Start = this.#next;
    const l1Start = l2Start + indexes.length;
    const refStart = l1Start + l1Clusters;
    // The refcount blocks and table count themselves: grow them until they cover the file.
    let blocks = 1;
    let tableClusters = 1;
    for (;;) {
      const total = refStart + blocks + tableClusters;
      const b = Math.ceil(total / REFCOUNTS_PER_BLOCK);
      const t = Math.ceil((b * 8) / CLUSTER);
      if (b === blocks && t === tableClusters) break;
      blocks = b;
      tableClusters = t;
    }
    const total = refStart + blocks + tableClusters;
    const tableStart = refStart + blocks;

    const be64 = (buf: Buffer, at: number, v: bigint): void => void buf.writeBigUInt64BE(v, at);
    const put = async (buf: Buffer, cluster: number): Promise<void> => {
      const { bytesWritten } = await this.#out.write(buf, 0, buf.length, cluster * CLUSTER);
      if (bytesWritten !== buf.length) throw new Error(`short write at ${cluster * CLUSTER}`);
    };
    // L2 tables, and the L1 table pointing at them.
    const l1 = Buffer.alloc(l1Clusters * CLUSTER);
    for (let k = 0; k < indexes.length; k++) {
      const t = this.#l2.get(indexes[k]!)!;
      const l2 = Buffer.alloc(CLUSTER);
      for (let j = 0; j < L2_ENTRIES; j++) {
        if (t[j] !== 0) be64(l2, j * 8, (BigInt(t[j]!) << BigInt(CLUSTER_BITS)) | COPIED);
      }
      await put(l2, l2Start + k);
      be64(l1, indexes[k]! * 8, (BigInt(l2Start + k) << BigInt(CLUSTER_BITS)) | COPIED);
    }
    await put(l1, l1Start);
    // Refcount 1 for every cluster of the file, and the table of the blocks.
    for (let b = 0; b < blocks; b++) {
      const block = Buffer.alloc(CLUSTER);
      const n = Math.min(REFCOUNTS_PER_BLOCK, total - b * REFCOUNTS_PER_BLOCK);
      for (let j = 0; j < n; j++) block.writeUInt16BE(1, j * 2);
      await put(block, refStart + b);
    }
    const table = Buffer.alloc(tableClusters * CLUSTER);
    for (let b = 0; b < blocks; b++) be64(table, b * 8, BigInt(refStart + b) << BigInt(CLUSTER_BITS));
    await put(table, tableStart);
    // The header last: until it is there, the file is no qcow2 image.
    const h = Buffer.alloc(CLUSTER);
    h.writeUInt32BE(0x514649fb, 0); // 'QFI' 0xfb
    h.writeUInt32BE(3, 4);
    h.writeUInt32BE(CLUSTER_BITS, 20);
    be64(h, 24, BigInt(this.#size));
    h.writeUInt32BE(l1Size, 36);
    be64(h, 40, BigInt(l1Start * CLUSTER));
    be64(h, 48, BigInt(tableStart * CLUSTER));
    h.writeUInt32BE(tableClusters, 56);
    h.writeUInt32BE(4, 96); // refcount_order: 16-bit refcounts
    h.writeUInt32BE(HEADER_LENGTH, 100);
    // (No header extensions: the end marker's zeros follow the header.)
    await put(h, 0);
    await this.#out.truncate(total * CLUSTER);
  }
}
