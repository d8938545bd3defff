/** Which clusters of a FAT volume are in use, as a bitmap. */
import { LowtideError } from '../errors.js';
import type { Extent } from '../io/extents.js';

export interface AllocationMapInit {
  /** Bit (c - 2) is cluster c, least significant bit first. */
  readonly bitmap: Uint8Array;
  readonly clusterCount: number;
  readonly clusterSize: number;
  /** Source offset of cluster 2. */
  readonly dataOffset: number;
  readonly usedClusters: number;
  readonly freeClusters: number;
  readonly badClusters: number;
}

/**
 * The allocation map of a FAT volume: a cluster is in use when its FAT entry
 * is neither free nor the bad-cluster marker. Clusters are numbered from 2.
 */
export class AllocationMap {
  readonly bitmap: Uint8Array;
  readonly firstCluster = 2;
  readonly clusterCount: number;
  readonly clusterSize: number;
  readonly dataOffset: number;
  readonly usedClusters: number;
  readonly freeClusters: number;
  readonly badClusters: number;

  constructor(init: AllocationMapInit) {
    if (init.bitmap.length * 8 < init.clusterCount) {
      throw new LowtideError('INVALID_ARGUMENT', `bitmap: expected at least ${Math.ceil(init.clusterCount / 8)} bytes, got ${init.bitmap.length}`);
    }
    this.bitmap = init.bitmap;
    this.clusterCount = init.clusterCount;
    this.clusterSize = init.clusterSize;
    this.dataOffset = init.dataOffset;
    this.usedClusters = init.usedClusters;
    this.freeClusters = init.freeClusters;
    this.badClusters = init.badClusters;
  }

  /** Last valid cluster number. */
  get lastCluster(): number {
    return this.clusterCount + 1;
  }

  /** Bytes of the clusters in use. */
  get usedBytes(): number {
    return this.usedClusters * this.clusterSize;
  }

  private check(cluster: number): void {
    if (!Number.isSafeInteger(cluster) || cluster < 2 || cluster > this.clusterCount + 1) {
      throw new LowtideError('INVALID_ARGUMENT', `cluster: expected an integer from 2 to ${this.clusterCount + 1}, got ${String(cluster)}`);
    }
  }

  isAllocated(cluster: number): boolean {
    this.check(cluster);
    const j = cluster - 2;
    return ((this.bitmap[j >>> 3]! >>> (j & 7)) & 1) === 1;
  }

  /** Source offset of a cluster. */
  clusterOffset(cluster: number): number {
    this.check(cluster);
    return this.dataOffset + (cluster - 2) * this.clusterSize;
  }

  /** Runs of consecutive used clusters, in cluster order. */
  *runs(): Generator<{ cluster: number; count: number }> {
    const n = this.clusterCount;
    const bm = this.bitmap;
    let start = -1;
    let j = 0;
    while (j < n) {
      const byte = bm[j >>> 3]!;
      // Whole bytes that continue the current state are skipped at once.
      if ((j & 7) === 0 && j + 8 <= n) {
        if (byte === 0 && start < 0) {
          j += 8;
          continue;
        }
        if (byte === 0xff && start >= 0) {
          j += 8;
          continue;
        }
      }
      const used = ((byte >>> (j & 7)) & 1) === 1;
      if (used && start < 0) start = j;
      else if (!used && start >= 0) {
        yield { cluster: start + 2, count: j - start };
        start = -1;
      }
      j++;
    }
    if (start >= 0) yield { cluster: start + 2, count: n - start };
  }

  /** Merged source byte extents of the clusters in use, in offset order. */
  extents(): Extent[] {
    const out: Extent[] = [];
    for (const r of this.runs()) {
      out.push({ offset: this.dataOffset + (r.cluster - 2) * this.clusterSize, length: r.count * this.clusterSize });
    }
    return out;
  }
}
