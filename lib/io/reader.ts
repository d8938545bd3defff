/**
 * BlockReader: an async iterator of blocks read by the native engine, with
 * the latency of each read. Queue depth and request size can change while it runs.
 */
import { LowtideError, toLowtideError } from '../errors.js';
import {
  native,
  type NativeReader,
  type NativeReaderOptions,
  type NativeReaderStats,
  type NativeSourceHandle,
} from '../native.js';
import { booleanOption, choiceOption, integerOption, signalOption } from '../options.js';
import { ExtentList, type Extents } from './extent-list.js';
import type { EngineName } from './source.js';

export interface ReadOptions {
  /** Request size in bytes (default 1 MiB); a multiple of the sector size. */
  blockSize?: number | undefined;
  /**
   * Largest request size setBlockSize() may ask for later (default: blockSize).
   * No request ever crosses a multiple of it.
   */
  maxBlockSize?: number | undefined;
  /** Reads in flight (default 32). */
  queueDepth?: number | undefined;
  /** Largest queue depth setQueueDepth() may ask for later (default: max(queueDepth, 64)). */
  maxQueueDepth?: number | undefined;
  /** Blocks the consumer may hold with retain() besides those in flight (default 4). */
  heldBuffers?: number | undefined;
  /** Deliver blocks in extent order (default true); false delivers in completion order. */
  ordered?: boolean | undefined;
  /** 'auto' (default: io_uring where available), 'io_uring' (required) or 'threads'. */
  engine?: EngineName | undefined;
  /** Minimum time between read submissions from the start, ms (default 0); see setPacing(). */
  pacingMs?: number | undefined;
  signal?: AbortSignal | undefined;
}

export const MAX_BLOCK_SIZE = 64 * 1024 * 1024;
export const MAX_QUEUE_DEPTH = 1024;

/** One block of the source. */
export interface Block {
  /** Byte offset in the source. */
  readonly offset: number;
  readonly length: number;
  /**
   * The bytes. Valid until the iterator moves on, unless retain() was called;
   * then until release(). Copy it to keep it longer.
   */
  readonly data: Buffer;
  /** Submit-to-complete time of the read, in nanoseconds. */
  readonly latencyNs: number;
  /** Keeps `data` valid past the next iteration step; call release() when done. */
  retain(): void;
  /** Gives the buffer back to the reader. Idempotent. */
  release(): void;
}

export interface ReaderStats extends NativeReaderStats {
  engine: 'io_uring' | 'threads';
}

/**
 * @internal Where a BlockReader's blocks come from: the native engine over
 * one file or device, or a guest view (lib/io/guest.ts) over several.
 */
export interface BlockStream {
  readonly engine: 'io_uring' | 'threads';
  /** The next batch of blocks in delivery order, or null at the end. */
  next(): Promise<StreamBlock[] | null>;
  setQueueDepth(queueDepth: number): void;
  setBlockSize(blockSize: number): void;
  setPacing(ns: number): void;
  /** NativeReader.shareReads, for every engine of the stream (those to come too). */
  shareReads(map: ArrayBuffer, index: number): void;
  stats(): NativeReaderStats;
  close(): Promise<void>;
}

/** @internal One block of a BlockStream; release() gives its buffer back. */
export interface StreamBlock {
  readonly offset: number;
  readonly length: number;
  readonly data: Buffer;
  readonly latencyNs: number;
  release(): void;
}

/**
 * @internal Where a native stream reads from a device instead of its source:
 * one device offset per extent (-1: the source), or an offset table's runs
 * as [offset, length, device offset] triples (deviceRuns in offset-table.ts).
 */
export type DeviceTarget =
  { handle: NativeSourceHandle; offsets: Float64Array } | { handle: NativeSourceHandle; runs: Float64Array };

/** @internal A BlockStream over the native engine reading `extents` of one file or device. */
export function nativeStream(
  handle: NativeSourceHandle,
  extents: Extents,
  config: NativeReaderOptions,
  device?: DeviceTarget | undefined,
): BlockStream {
  // A compact list is handed over as it is kept: no copy of millions of extents.
  let flat: Float64Array;
  if (extents instanceof ExtentList) flat = extents.flat();
  else {
    flat = new Float64Array(extents.length * 2);
    extents.forEach((e, i) => {
      flat[2 * i] = e.offset;
      flat[2 * i + 1] = e.length;
    });
  }
  // With a device: the extents with an offset, or the bytes in runs with one,
  // are read from the device there (offset-table.ts).
  const reader: NativeReader =
    device === undefined
      ? new native.Reader(handle, flat, config)
      : 'runs' in device
        ? new native.Reader(handle, flat, config, device.handle, undefined, device.runs)
        : new native.Reader(handle, flat, config, device.handle, device.offsets);
  return {
    engine: reader.engine,
    async next(): Promise<StreamBlock[] | null> {
      const batch = await reader.next();
      if (batch === null) return null;
      const buf = reader.buffer;
      const out: StreamBlock[] = [];
      for (let i = 0; i < batch.length; i += 5) {
        const slot = batch[i]!;
        const length = batch[i + 2]!;
        out.push({
          offset: batch[i + 1]!,
          length,
          data: Buffer.from(buf, batch[i + 3]!, length),
          latencyNs: batch[i + 4]!,
          release: () => void reader.release(slot),
        });
      }
      return out;
    },
    setQueueDepth: (n) => reader.setQueueDepth(n),
    setBlockSize: (n) => reader.setBlockSize(n),
    setPacing: (ns) => reader.setPacing(ns),
    shareReads: (map, index) => reader.shareReads(map, index),
    stats: () => reader.stats(),
    close: () => reader.close(),
  };
}

class NativeBlock implements Block {
  retained = false;
  released = false;
  constructor(private readonly block: StreamBlock) {}
  get offset(): number {
    return this.block.offset;
  }
  get length(): number {
    return this.block.length;
  }
  get data(): Buffer {
    return this.block.data;
  }
  get latencyNs(): number {
    return this.block.latencyNs;
  }
  retain(): void {
    if (this.released) throw new LowtideError('CLOSED', 'retain() after release()');
    this.retained = true;
  }
  release(): void {
    if (this.released) return;
    this.released = true;
    this.block.release();
  }
}

function checkBlockSize(name: string, value: number, sectorSize: number): void {
  if (value % sectorSize !== 0) {
    throw new LowtideError(
      'INVALID_ARGUMENT',
      `${name}: expected a multiple of the sector size (${sectorSize} bytes), got ${value}`,
    );
  }
}

export class BlockReader implements AsyncIterable<Block> {
  readonly blockSize: number;
  readonly queueDepth: number;
  readonly #native: BlockStream;
  readonly #sectorSize: number;
  readonly #maxBlockSize: number;
  readonly #maxQueueDepth: number;
  readonly #signal: AbortSignal | undefined;
  readonly #onEnd: () => void;
  #batch: NativeBlock[] = [];
  #current: NativeBlock | undefined;
  #done = false;
  #iterating = false;
  #closing: Promise<void> | undefined;
  #abortListener: (() => void) | undefined;

  /**
   * @internal use Source.read(). `source` is the native handle of the file or
   * device, or a function that opens the stream of a guest view.
   */
  constructor(
    source: NativeSourceHandle | ((config: NativeReaderOptions) => BlockStream),
    extents: Extents,
    options: ReadOptions,
    sectorSize: number,
    onEnd: () => void,
    device?: DeviceTarget | undefined,
  ) {
    this.blockSize = integerOption('blockSize', options.blockSize, 1 << 20, 1, MAX_BLOCK_SIZE);
    checkBlockSize('blockSize', this.blockSize, sectorSize);
    this.#maxBlockSize = integerOption(
      'maxBlockSize',
      options.maxBlockSize,
      this.blockSize,
      this.blockSize,
      MAX_BLOCK_SIZE,
    );
    checkBlockSize('maxBlockSize', this.#maxBlockSize, sectorSize);
    this.queueDepth = integerOption('queueDepth', options.queueDepth, 32, 1, MAX_QUEUE_DEPTH);
    this.#maxQueueDepth = integerOption(
      'maxQueueDepth',
      options.maxQueueDepth,
      Math.max(this.queueDepth, 64),
      this.queueDepth,
      MAX_QUEUE_DEPTH,
    );
    const heldBuffers = integerOption('heldBuffers', options.heldBuffers, 4, 1, 4096);
    const ordered = booleanOption('ordered', options.ordered, true);
    const engine = choiceOption<EngineName>('engine', options.engine, ['auto', 'io_uring', 'threads'], 'auto');
    const pacingMs = options.pacingMs ?? 0;
    if (typeof pacingMs !== 'number' || !Number.isFinite(pacingMs) || pacingMs < 0 || pacingMs > 60_000) {
      throw new LowtideError(
        'INVALID_ARGUMENT',
        `pacingMs: expected a number from 0 to 60000, got ${String(pacingMs)}`,
      );
    }
    this.#signal = signalOption('signal', options.signal);
    this.#sectorSize = sectorSize;
    this.#onEnd = onEnd;
    if (this.#signal?.aborted) throw new LowtideError('ABORTED', 'the read was aborted before it started');

    const config: NativeReaderOptions = {
      blockSize: this.blockSize,
      maxBlockSize: this.#maxBlockSize,
      queueDepth: this.queueDepth,
      maxQueueDepth: this.#maxQueueDepth,
      heldBuffers,
      ordered,
      engine,
      pacingNs: Math.round(pacingMs * 1e6),
    };
    try {
      this.#native = typeof source === 'function' ? source(config) : nativeStream(source, extents, config, device);
    } catch (err) {
      onEnd();
      throw toLowtideError(err, 'INTERNAL');
    }
    if (this.#signal) {
      const listener = (): void => void this.close();
      this.#signal.addEventListener('abort', listener, { once: true });
      this.#abortListener = listener;
    }
  }

  /** 'io_uring' or 'threads'. */
  get engine(): 'io_uring' | 'threads' {
    return this.#native.engine;
  }

  /** Changes the number of reads kept in flight (1..maxQueueDepth). */
  setQueueDepth(queueDepth: number): void {
    integerOption('queueDepth', queueDepth, 1, 1, this.#maxQueueDepth);
    this.#native.setQueueDepth(queueDepth);
  }

  /** Changes the request size for reads not yet submitted (a multiple of the sector size, ≤ maxBlockSize). */
  setBlockSize(blockSize: number): void {
    integerOption('blockSize', blockSize, this.#sectorSize, this.#sectorSize, this.#maxBlockSize);
    checkBlockSize('blockSize', blockSize, this.#sectorSize);
    this.#native.setBlockSize(blockSize);
  }

  /**
   * Minimum time between two read submissions, in milliseconds (0: none).
   * This is how a throttle's delay reaches the device: reads are spaced out
   * at submission, not held back after they completed.
   */
  setPacing(delayMs: number): void {
    if (typeof delayMs !== 'number' || !Number.isFinite(delayMs) || delayMs < 0 || delayMs > 60_000) {
      throw new LowtideError('INVALID_ARGUMENT', `delayMs: expected a number from 0 to 60000, got ${String(delayMs)}`);
    }
    this.#native.setPacing(Math.round(delayMs * 1e6));
  }

  /**
   * Adds the reads handed to the kernel, so far and from now on, to a
   * counter in memory shared with other processes (see NativeReader.shareReads).
   */
  shareReads(map: ArrayBuffer, index: number): void {
    this.#native.shareReads(map, index);
  }

  /** Reads handed to the kernel so far: completed and in flight. */
  submittedReads(): number {
    const s = this.#native.stats();
    return s.requestsCompleted + s.inFlight;
  }

  stats(): ReaderStats {
    return { ...this.#native.stats(), engine: this.#native.engine };
  }

  /** The next block, or undefined at the end. Releases the previous block unless it was retained. */
  async nextBlock(): Promise<Block | undefined> {
    const prev = this.#current;
    this.#current = undefined;
    if (prev && !prev.retained) prev.release();
    if (this.#batch.length === 0) {
      if (this.#done) {
        // Ended by an abort: say so, every time, rather than look like a normal end.
        this.#throwIfAborted();
        return undefined;
      }
      await this.#fill();
      if (this.#batch.length === 0) return undefined;
    }
    this.#current = this.#batch.shift();
    return this.#current;
  }

  async #fill(): Promise<void> {
    this.#throwIfAborted();
    let batch: StreamBlock[] | null;
    try {
      batch = await this.#native.next();
    } catch (err) {
      await this.#finish();
      throw toLowtideError(err, 'IO_ERROR');
    }
    if (batch === null) {
      await this.#finish();
      this.#throwIfAborted();
      return;
    }
    for (const b of batch) this.#batch.push(new NativeBlock(b));
  }

  #throwIfAborted(): void {
    if (this.#signal?.aborted) {
      throw new LowtideError('ABORTED', 'the read was aborted', { cause: this.#signal.reason });
    }
  }

  async #finish(): Promise<void> {
    if (this.#done) return;
    this.#done = true;
    for (const b of this.#batch) b.release();
    this.#batch = [];
    if (this.#abortListener && this.#signal) this.#signal.removeEventListener('abort', this.#abortListener);
    this.#onEnd();
  }

  /** Stops reading: nothing new is submitted and reads in flight are waited for. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      for (const b of this.#batch) b.release();
      this.#batch = [];
      await this.#native.close();
      await this.#finish();
    })();
    return this.#closing;
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Block> {
    if (this.#iterating) throw new LowtideError('BUSY', 'a BlockReader can be iterated only once');
    this.#iterating = true;
    try {
      for (;;) {
        const block = await this.nextBlock();
        if (block === undefined) return;
        yield block;
      }
    } finally {
      const cur = this.#current;
      this.#current = undefined;
      if (cur && !cur.retained) cur.release();
      if (!this.#done) await this.close();
    }
  }
}
