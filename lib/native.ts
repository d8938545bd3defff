/**
 * The ONLY module that loads the addon. It gives the binding TypeScript types;
 * everything else imports `native` from here.
 */
import { createRequire } from 'node:module';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface NativeSourceInfo {
  size: number;
  logicalSectorSize: number;
  physicalSectorSize: number;
  direct: boolean;
  kind: 'file' | 'block';
}

export interface NativeSourceHandle {
  info(): NativeSourceInfo;
  /** Drops this handle's reference; running readers keep the descriptor until they end. */
  close(): void;
}

export interface NativeReaderOptions {
  blockSize: number;
  maxBlockSize: number;
  queueDepth: number;
  maxQueueDepth: number;
  heldBuffers: number;
  ordered: boolean;
  engine: 'auto' | 'io_uring' | 'threads';
}

export interface NativeReaderStats {
  requestsCompleted: number;
  bytesDelivered: number;
  bytesRead: number;
  queueDepth: number;
  blockSize: number;
  inFlight: number;
  maxInFlight: number;
}

/**
 * A running read. `next()` resolves with a batch of completed blocks as a
 * Float64Array of 5-tuples [slot, offset, length, byteOffsetInBuffer, latencyNs],
 * or null at the end. Each delivered slot must be given back with release().
 */
export interface NativeReader {
  readonly buffer: ArrayBuffer;
  readonly slotSize: number;
  readonly slotCount: number;
  readonly engine: 'io_uring' | 'threads';
  next(): Promise<Float64Array | null>;
  release(slot: number): boolean;
  setQueueDepth(queueDepth: number): void;
  setBlockSize(blockSize: number): void;
  stats(): NativeReaderStats;
  close(): Promise<void>;
}

export interface NativeBinding {
  openSource(path: string, direct: 'auto' | 'on' | 'off'): Promise<NativeSourceHandle>;
  Reader: new (source: NativeSourceHandle, extents: Float64Array, options: NativeReaderOptions) => NativeReader;
  isZero(view: ArrayBufferView): boolean;
  /** SHA-256 on the thread pool; null when zeroCheck and every byte is zero. */
  digest(view: Uint8Array, zeroCheck: boolean): Promise<Buffer | null>;
  digestSync(view: Uint8Array): Buffer;
  /** flock(fd, LOCK_EX | LOCK_NB): false when another holder has it. */
  tryLockExclusive(fd: number): boolean;
  ioUringAvailable(): boolean;
}

/** The package root: one level above lib/ (sources) or dist/ (compiled). */
export const packageRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..');

function load(): NativeBinding {
  const require = createRequire(import.meta.url);
  const nodeGypBuild = require('node-gyp-build') as (dir: string) => unknown;
  return nodeGypBuild(packageRoot) as NativeBinding;
}

export const native: NativeBinding = load();
