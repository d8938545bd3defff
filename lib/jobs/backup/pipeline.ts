/**
 * A backup's chunk pipeline: read the planned extents, assemble whole
 * chunks, hash them (zero chunks are not stored), store the new ones, and
 * append every chunk's digest to the index in chunk order. Chunks with
 * nothing to read are the parent's (outside the changed extents) or zero.
 * At most CHUNKS_IN_FLIGHT chunks are hashed and stored at once, each holding
 * one read buffer: memory does not grow with the source.
 */
import { LowtideError } from '../../errors.js';
import type { Block, BlockReader } from '../../io/reader.js';
import type { Source } from '../../io/source.js';
import type { BackupStats } from '../../repo/format.js';
import type { IndexReader, IndexWriter, Repository } from '../../repo/repository.js';
import { LatencyHistogram } from '../../throttle/histogram.js';
import { throttledReader, type ReadSettings } from '../options.js';
import type { JobThrottle } from '../../throttle/job-throttle.js';
import { AssemblyBuffers, coverageCounter, membership, overlayCursor, PartialChunk } from './assembly.js';
import type { BackupPlan } from './plan.js';
import { ChunkStore } from './store.js';
import type { DeviceRead } from '../device-read.js';

/** Chunks being hashed/compressed/stored at once (each holds one read buffer). */
export const CHUNKS_IN_FLIGHT = 12;

export interface PipelineInput {
  repo: Repository;
  source: Source;
  plan: BackupPlan;
  /** Receives every chunk's digest (null: a zero chunk), in chunk order. */
  index: IndexWriter;
  parentIndex: IndexReader | undefined;
  throttle: JobThrottle;
  read: ReadSettings;
  signal: AbortSignal | undefined;
  /** Read from the device under the file (readFrom: 'device'). */
  device?: DeviceRead | undefined;
}

export class ChunkPipeline {
  readonly stats: BackupStats;
  readonly latency = new LatencyHistogram();
  /** Bytes read so far. */
  bytesDone = 0;
  readonly #in: PipelineInput;
  readonly #cs: number;
  readonly #store: ChunkStore;
  readonly #buffers: AssemblyBuffers;
  readonly #covered: (i: number) => number;
  readonly #isChanged: ((i: number) => boolean) | undefined;
  readonly #overlayOf: ReturnType<typeof overlayCursor>;
  /** Every queued chunk's digest, in chunk order, until it is appended to the index. */
  readonly #pending: Promise<Buffer | null>[] = [];
  /** The next chunk to queue. */
  #next = 0;
  #partial: PartialChunk | undefined;

  constructor(input: PipelineInput) {
    const { plan, repo } = input;
    this.#in = input;
    this.#cs = repo.chunkSize;
    this.stats = {
      bytesRead: 0,
      bytesNew: 0,
      bytesStored: 0,
      chunks: plan.chunkCount,
      chunksZero: 0,
      chunksNew: 0,
      chunksReused: 0,
      chunksFromParent: 0,
    };
    // Chunks stored on the source's storage are the job's own writes (canary's quiet checks).
    this.#store = new ChunkStore(repo, this.stats, repo.isRemote ? undefined : input.throttle.ownWrites(repo.path));
    this.#buffers = new AssemblyBuffers(this.#cs);
    this.#covered = coverageCounter(plan.extents, this.#cs);
    this.#isChanged = plan.changedChunks !== undefined ? membership(plan.changedChunks, this.#cs) : undefined;
    this.#overlayOf = overlayCursor(plan.image.overlay);
  }

  /** Chunk directories that got a new chunk. */
  get touchedDirs(): ReadonlySet<string> {
    return this.#store.touchedDirs;
  }

  /**
   * Reads, stores and indexes every chunk; `onBlock` is called after each
   * block. Returns the reader, finished. On failure, waits for the stores
   * that are running before it throws.
   */
  async run(onBlock: () => void): Promise<BlockReader> {
    const { source, plan, throttle, read, signal, device, repo } = this.#in;
    // Uploads to a server on this host are the job's own writes too.
    await throttle.ownUploads(repo.remoteWrites);
    const reader = throttledReader(source, plan.extents, throttle, {
      read,
      device,
      maxBlockSize: this.#cs,
      signal,
      heldBuffers: CHUNKS_IN_FLIGHT + 2,
    });
    try {
      for await (const block of reader) {
        this.latency.record(block.latencyNs);
        throttle.observe(block.latencyNs, block.length);
        this.bytesDone += block.length;
        await this.#take(block);
        await this.#drain(CHUNKS_IN_FLIGHT);
        onBlock();
      }
      this.#checkAllRead();
      await this.#fillGap(plan.chunkCount);
      await this.#drain(0);
    } catch (err) {
      await Promise.allSettled(this.#pending);
      throw err;
    }
    if (this.#next !== plan.chunkCount)
      throw new LowtideError('INTERNAL', `backup read ${this.#next} of ${plan.chunkCount} chunks`);
    this.stats.bytesRead = reader.stats().bytesRead;
    return reader;
  }

  /** A block that is a whole chunk goes on as it is; any other is copied into the chunk being assembled. */
  async #take(block: Block): Promise<void> {
    const cs = this.#cs;
    const i = Math.floor(block.offset / cs);
    const chunkStart = i * cs;
    const chunkLength = Math.min(cs, this.#in.source.size - chunkStart);
    const writes = this.#partial?.index === i ? [] : this.#overlayOf(chunkStart, chunkLength);
    if (
      this.#partial === undefined &&
      block.offset === chunkStart &&
      block.length === chunkLength &&
      writes.length === 0
    ) {
      const parentEntry = await this.#startChunk(i);
      block.retain();
      this.#submit(i, block.data, () => block.release(), parentEntry);
      return;
    }
    if (this.#partial?.index !== i) {
      if (this.#partial !== undefined) throw this.#readInPart(this.#partial);
      const buf = this.#buffers.take(chunkLength);
      const expected = this.#covered(i);
      this.#partial = new PartialChunk(i, chunkStart, buf, expected, writes, await this.#startChunk(i));
    }
    const partial = this.#partial;
    if (partial.add(block)) {
      this.#submit(i, partial.buf, () => this.#buffers.give(partial.buf), partial.parentEntry);
      this.#partial = undefined;
    }
  }

  /** After the last block: everything planned was read, and no chunk is left in part. */
  #checkAllRead(): void {
    const { signal, plan } = this.#in;
    // An aborted reader can end early without an error: never fill what it did not read from the parent.
    if (signal?.aborted) throw new LowtideError('ABORTED', 'the backup was aborted', { cause: signal.reason });
    if (this.bytesDone !== plan.bytesTotal)
      throw new LowtideError('INTERNAL', `the reader ended after ${this.bytesDone} of ${plan.bytesTotal} bytes`);
    if (this.#partial !== undefined) throw this.#readInPart(this.#partial);
  }

  #readInPart(partial: PartialChunk): LowtideError {
    return new LowtideError('INTERNAL', `chunk ${partial.index} was read only in part`);
  }

  /** Queues the chunks before chunk i, then returns the parent's digest of chunk i. */
  async #startChunk(i: number): Promise<Buffer | null> {
    if (i > this.#next) await this.#fillGap(i);
    const e = this.#in.parentIndex ? await this.#in.parentIndex.entry(i) : null;
    return e === null ? null : Buffer.from(e);
  }

  /**
   * Queues the chunks up to `upTo` that have nothing to read: outside the
   * changed extents they are the parent's; otherwise nothing in them is
   * used, and they are zero.
   */
  async #fillGap(upTo: number): Promise<void> {
    for (; this.#next < upTo; this.#next++) {
      if (this.#isChanged !== undefined && !this.#isChanged(this.#next)) {
        const e = await this.#in.parentIndex!.entry(this.#next);
        this.stats.chunksFromParent++;
        if (e === null) this.stats.chunksZero++;
        this.#pending.push(Promise.resolve(e === null ? null : Buffer.from(e)));
      } else {
        this.stats.chunksZero++;
        this.#pending.push(Promise.resolve(null));
      }
      await this.#drain(CHUNKS_IN_FLIGHT);
    }
  }

  /** Queues whole chunk i for storing; `done` gives its buffer back. */
  #submit(i: number, data: Buffer, done: () => void, parentEntry: Buffer | null): void {
    const p = this.#store.store(data, done, parentEntry);
    p.catch(() => undefined); // handled when drained
    this.#pending.push(p);
    this.#next = i + 1;
  }

  /** Appends digests to the index, oldest first, until at most `limit` chunks are queued. */
  async #drain(limit: number): Promise<void> {
    while (this.#pending.length > limit) await this.#in.index.append(await this.#pending.shift()!);
  }
}
