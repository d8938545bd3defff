/**
 * The backup job: reads a source in chunk-sized blocks, stores chunks the
 * repository does not have yet, and commits a manifest once every chunk it
 * names is durable. With a parent and a list of changed extents it reads only
 * the chunks those extents touch and takes every other chunk from the parent.
 */
import { realpath } from 'node:fs/promises';
import { LowtideError, toLowtideError } from '../errors.js';
import { native } from '../native.js';
import {
  booleanOption,
  choiceOption,
  functionOption,
  integerOption,
  objectOption,
  signalOption,
  stringOption,
} from '../options.js';
import { intersectExtents, mergeExtents, totalLength, validateExtents, type Extent } from '../io/extents.js';
import { planImage, type ImagePlan, type OverlayWrite } from '../fs/plan.js';
import { openVolume } from '../fs/volume.js';
import { CatalogWriter, FRAME_BYTES as CATALOG_FRAME_BYTES } from '../repo/catalog.js';
import { join } from 'node:path';
import { MAX_QUEUE_DEPTH } from '../io/reader.js';
import { openSource, type DirectMode, type EngineName, type Source } from '../io/source.js';
import { newBackupId, type BackupStats, type Manifest, type SourceIdentity } from '../repo/format.js';
import { openRepository, Repository, type IndexReader, type IndexWriter } from '../repo/repository.js';
import { LatencyHistogram } from '../throttle/histogram.js';
import { summarizeLatency } from './image.js';
import { JobThrottle, type ThrottleState } from '../throttle/job-throttle.js';
import { resolveThrottleSettings, singleJobThrottleSettings, type ThrottleSettings } from '../throttle/job-settings.js';
import { randomBytes } from 'node:crypto';

export interface BackupOptions extends ThrottleSettings {
  /** File or block device to back up (opened read-only). */
  source: string;
  /** Repository path or an open Repository. */
  repository: string | Repository;
  /**
   * Parent backup id; 'auto' (default) picks the latest backup of the same
   * source; null makes a backup without a parent (chunks are still deduplicated).
   */
  parent?: string | null;
  /** Extents changed since the parent (changed-block tracking); only the chunks they touch are read. */
  changed?: readonly Extent[];
  /** Read every block (default false: only what FAT file systems use, everything else in full). */
  allBlocks?: boolean;
  /** Files and directories to leave out of FAT volumes (see planImage). */
  exclude?: readonly string[];
  /** An unparseable file system is an error instead of a full copy with a warning. */
  strict?: boolean;
  /** Most reads in flight (default 32); the throttle may use fewer. */
  queueDepth?: number;
  engine?: EngineName;
  direct?: DirectMode;
  signal?: AbortSignal;
  onProgress?: (p: BackupProgress) => void;
  progressIntervalMs?: number;
}

export interface BackupProgress {
  bytesDone: number;
  bytesTotal: number;
  chunksNew: number;
  bytesStored: number;
  elapsedSeconds: number;
  bytesPerSecond: number;
  latencyP50Ms: number;
  throttle: ThrottleState;
}

export interface BackupResult {
  id: string;
  manifest: Manifest;
}

/** Internal: set by backupMany(), which already holds the repository's writer lock. */
export const LOCK_HELD = Symbol('lowtide.lockHeld');

/** Chunks being hashed/compressed/stored at once (each holds one read buffer). */
const CHUNKS_IN_FLIGHT = 12;

async function sourceIdentity(source: Source): Promise<SourceIdentity> {
  return {
    path: source.path,
    realPath: await realpath(source.path).catch(() => source.path),
    kind: source.kind,
    size: source.size,
  };
}

async function chooseParent(
  repo: Repository,
  identity: SourceIdentity,
  parent: string | null | undefined,
): Promise<Manifest | undefined> {
  if (parent === null) return undefined;
  if (parent === undefined || parent === 'auto') {
    const { backups } = await repo.listBackups();
    for (let i = backups.length - 1; i >= 0; i--) {
      const b = backups[i]!;
      if (b.source.realPath === identity.realPath && b.size === identity.size && b.chunkSize === repo.chunkSize) return b;
    }
    return undefined;
  }
  const m = await repo.readManifest(parent);
  if (m.size !== identity.size) {
    throw new LowtideError(
      'INVALID_ARGUMENT',
      `parent: backup ${m.id} is of a ${m.size}-byte source, but ${identity.path} has ${identity.size} bytes`,
    );
  }
  return m;
}

/**
 * Writes every file and directory of the planned FAT volumes, with each file's
 * extents, to the catalog (excluded entries left out). The walk and the JSON
 * lines are made off the JS thread (Volume.catalogFrames), so the catalog does
 * not hold up the blocks being read meanwhile. Returns false when the plan has
 * no FAT volume (nothing to catalogue).
 */
async function buildCatalog(sourcePath: string, plan: ImagePlan, catalog: CatalogWriter): Promise<boolean> {
  let any = false;
  for (const p of plan.partitions) {
    if (p.mode !== 'used' || p.fat === null) continue;
    any = true;
    const excluded = plan.excluded.filter((e) => e.partition === p.index).map((e) => e.path);
    const vol = await openVolume(sourcePath, { partition: p.index });
    try {
      for (const frame of await vol.catalogFrames(p.index, excluded, CATALOG_FRAME_BYTES)) await catalog.addFrame(frame.text, frame.entries);
    } finally {
      vol.close();
    }
  }
  return any;
}

/** Bytes of `extents` (sorted, merged) inside chunk i; ask for chunks in increasing order. */
function coverageCounter(extents: readonly Extent[], cs: number): (i: number) => number {
  let k = 0;
  return (i: number): number => {
    const start = i * cs;
    const end = start + cs;
    while (k < extents.length && extents[k]!.offset + extents[k]!.length <= start) k++;
    let n = 0;
    for (let j = k; j < extents.length && extents[j]!.offset < end; j++) {
      const e = extents[j]!;
      n += Math.min(end, e.offset + e.length) - Math.max(start, e.offset);
    }
    return n;
  };
}

/** Whether chunk i lies in chunk-aligned extents; ask in increasing order. */
function membership(chunkAligned: readonly Extent[], cs: number): (i: number) => boolean {
  let k = 0;
  return (i: number): boolean => {
    const at = i * cs;
    while (k < chunkAligned.length && chunkAligned[k]!.offset + chunkAligned[k]!.length <= at) k++;
    return k < chunkAligned.length && chunkAligned[k]!.offset <= at;
  };
}

/** Overlay writes touching [start, start+length); ask in increasing order. */
function overlayCursor(writes: readonly OverlayWrite[]): (start: number, length: number) => OverlayWrite[] {
  let k = 0;
  return (start: number, length: number): OverlayWrite[] => {
    while (k < writes.length && writes[k]!.offset + writes[k]!.data.length <= start) k++;
    const out: OverlayWrite[] = [];
    for (let j = k; j < writes.length && writes[j]!.offset < start + length; j++) out.push(writes[j]!);
    return out;
  };
}

function applyWrite(chunk: Buffer, chunkStart: number, w: OverlayWrite): void {
  const from = Math.max(w.offset, chunkStart);
  const to = Math.min(w.offset + w.data.length, chunkStart + chunk.length);
  if (from < to) w.data.copy(chunk, from - chunkStart, from - w.offset, to - w.offset);
}

/**
 * Chunk-sized buffers for chunks assembled from several reads, reused: fresh
 * memory is expensive (page faults, and on virtual machines often host-side
 * faults too, ~1-5 ms per MiB measured here), and a buffer per chunk also
 * feeds the garbage collector. At most CHUNKS_IN_FLIGHT + 1 are in use.
 */
class AssemblyBuffers {
  readonly #free: Buffer[] = [];
  constructor(private readonly size: number) {}
  /** A zero-filled buffer of `length` (≤ size) bytes. */
  take(length: number): Buffer {
    const b = this.#free.pop();
    if (b === undefined) return Buffer.alloc(this.size).subarray(0, length);
    return b.subarray(0, length).fill(0);
  }
  /** Gives back a buffer take() returned. */
  give(b: Buffer): void {
    this.#free.push(Buffer.from(b.buffer, b.byteOffset, this.size));
  }
}

/** Changed extents grown to whole chunks, merged, clipped to the source. */
export function chunkAlignedExtents(extents: readonly Extent[], chunkSize: number, size: number): Extent[] {
  const grown = extents
    .filter((e) => e.length > 0)
    .map((e) => {
      const start = Math.floor(e.offset / chunkSize) * chunkSize;
      const end = Math.min(size, Math.ceil((e.offset + e.length) / chunkSize) * chunkSize);
      return { offset: start, length: end - start };
    });
  return mergeExtents(grown);
}

export async function backup(options: BackupOptions): Promise<BackupResult> {
  const opts = objectOption('options', options);
  const sourcePath = stringOption('source', opts.source);
  if (!(opts.repository instanceof Repository)) stringOption('repository', opts.repository);
  const parentOpt = opts.parent === null ? null : opts.parent === undefined ? undefined : stringOption('parent', opts.parent);
  const changed = opts.changed as readonly Extent[] | undefined;
  if (changed !== undefined) validateExtents(changed, 'changed');
  const allBlocks = booleanOption('allBlocks', opts.allBlocks, false);
  const strict = booleanOption('strict', opts.strict, false);
  const exclude = opts.exclude as readonly string[] | undefined;
  const queueDepth = integerOption('queueDepth', opts.queueDepth, 32, 1, MAX_QUEUE_DEPTH);
  const engine = choiceOption<EngineName>('engine', opts.engine, ['auto', 'io_uring', 'threads'], 'auto');
  const direct = choiceOption<DirectMode>('direct', opts.direct, ['auto', 'on', 'off'], 'auto');
  const signal = signalOption('signal', opts.signal);
  const onProgress = functionOption<(p: BackupProgress) => void>('onProgress', opts.onProgress);
  const progressIntervalMs = integerOption('progressIntervalMs', opts.progressIntervalMs, 200, 0);
  // backupMany() uses the admission limit itself; a lone backup has no use for one.
  const lockHeld = (options as unknown as Record<symbol, unknown>)[LOCK_HELD] === true;
  const throttleSettings = lockHeld ? resolveThrottleSettings(opts) : singleJobThrottleSettings(opts);

  // The plan reads only the source (partition table, boot sectors, FATs): it
  // runs while the repository is opened and locked and the parent is read
  // (with cold caches, both wait for the disk). Awaited below; until then a
  // failure must not count as unhandled.
  const planning = planImage(sourcePath, { allBlocks, strict, ...(exclude !== undefined ? { exclude } : {}) });
  planning.catch(() => undefined);
  const repo = opts.repository instanceof Repository ? opts.repository : await openRepository(opts.repository as string);
  const cs = repo.chunkSize;
  // backupMany() holds the lock for all of its jobs.
  const lock = lockHeld ? undefined : await repo.lock('lowtide backup');
  let source: Source | undefined;
  let index: IndexWriter | undefined;
  let parentIndex: IndexReader | undefined;
  let catalog: CatalogWriter | undefined;
  let committed = false;
  let jobThrottle: JobThrottle | undefined;
  try {
    source = await openSource(sourcePath, { direct });
    if (cs % source.sectorSize !== 0) {
      throw new LowtideError('UNSUPPORTED', `the repository's chunk size ${cs} is not a multiple of ${source.path}'s sector size ${source.sectorSize}`);
    }
    const identity = await sourceIdentity(source);
    const parent = await chooseParent(repo, identity, parentOpt);
    if (changed !== undefined && parent === undefined) {
      throw new LowtideError('INVALID_ARGUMENT', 'changed: a list of changed extents needs a parent backup of the same source');
    }
    for (const e of changed ?? []) {
      if (e.offset + e.length > source.size) {
        throw new LowtideError('OUT_OF_RANGE', `changed: extent [${e.offset}, ${e.offset + e.length}) reaches past the end of ${source.path} (${source.size} bytes)`);
      }
    }
    const size = source.size;
    const chunkCount = Math.ceil(size / cs);
    const plan: ImagePlan = await planning;
    const changedChunks = changed !== undefined ? chunkAlignedExtents(changed, cs, size) : undefined;
    const readExtents = changedChunks !== undefined ? intersectExtents(plan.extents, changedChunks) : plan.extents;
    const bytesTotal = totalLength(readExtents);
    const covered = coverageCounter(readExtents, cs);
    const isChanged = changedChunks !== undefined ? membership(changedChunks, cs) : undefined;
    const overlayOf = overlayCursor(plan.overlay);
    catalog = await CatalogWriter.create(repo.tmpDir, repo.config.compression.level);
    // The catalog walks the file systems' metadata while the data is read.
    // A catalog that cannot be built (a directory tree the walk rejects) costs
    // file-level restore of this backup, not the backup: it becomes a warning.
    const cataloguing = buildCatalog(sourcePath, plan, catalog).catch((err: unknown) => {
      plan.warnings.push(`no file catalog: ${toLowtideError(err, 'FAT_CORRUPT').message}`);
      return false;
    });

    const throttle = (jobThrottle = await JobThrottle.create(
      throttleSettings,
      { maxQueueDepth: queueDepth, maxBlockSize: cs, minBlockSize: Math.min(64 * 1024, cs), alignment: Math.max(4096, source.sectorSize) },
      source,
      signal,
    ));
    const ownWrite = throttle.ownWrites(repo.path);
    const started = new Date();
    const t0 = process.hrtime.bigint();
    const elapsed = (): number => Number(process.hrtime.bigint() - t0) / 1e9;
    index = await repo.createIndex(chunkCount);
    parentIndex = parent ? await repo.openIndex(parent) : undefined;
    const latency = new LatencyHistogram();
    const stats: BackupStats = {
      bytesRead: 0,
      bytesNew: 0,
      bytesStored: 0,
      chunks: chunkCount,
      chunksZero: 0,
      chunksNew: 0,
      chunksReused: 0,
      chunksFromParent: 0,
    };
    const touchedDirs = new Set<string>();
    const inFlightStores = new Map<string, Promise<void>>();
    let bytesDone = 0;
    let lastReport = -Infinity;
    const report = (force = false): void => {
      if (!onProgress) return;
      const t = elapsed();
      if (!force && (t - lastReport) * 1000 < progressIntervalMs) return;
      lastReport = t;
      onProgress({
        bytesDone,
        bytesTotal,
        chunksNew: stats.chunksNew,
        bytesStored: stats.bytesStored,
        elapsedSeconds: t,
        bytesPerSecond: t > 0 ? bytesDone / t : 0,
        latencyP50Ms: latency.percentile(50) / 1e6,
        throttle: throttle.state(),
      });
    };

    // Results in chunk order: each resolves to the digest to record (null = zero chunk).
    const pending: Promise<Buffer | null>[] = [];
    const writer = index;
    const drain = async (limit: number): Promise<void> => {
      while (pending.length > limit) await writer.append(await pending.shift()!);
    };

    /** Hashes and stores one whole chunk; `done` gives its buffer back. */
    const processChunk = async (data: Buffer, done: () => void, parentEntry: Buffer | null): Promise<Buffer | null> => {
      try {
        const digest = await native.digest(data, true);
        if (digest === null) {
          stats.chunksZero++;
          return null;
        }
        // The parent's chunk, unless it went missing from the repository: then it is stored again.
        if (parentEntry !== null && parentEntry.equals(digest) && (await repo.hasChunk(digest.toString('hex')))) {
          stats.chunksReused++;
          return digest;
        }
        const hex = digest.toString('hex');
        const running = inFlightStores.get(hex);
        if (running) {
          await running;
          stats.chunksReused++;
          return digest;
        }
        const store = repo.putChunk(hex, data).then((r) => {
          if (r.written) {
            stats.chunksNew++;
            stats.bytesNew += data.length;
            stats.bytesStored += r.storedBytes;
            ownWrite(r.storedBytes);
            touchedDirs.add(hex.slice(0, 2));
          } else {
            stats.chunksReused++;
          }
        });
        inFlightStores.set(hex, store);
        try {
          await store;
        } finally {
          inFlightStores.delete(hex);
        }
        return digest;
      } finally {
        done();
      }
    };

    let nextChunk = 0;
    // Chunks with nothing to read: outside the changed extents they are the
    // parent's; otherwise nothing in them is used, and they are zero.
    const fillGap = async (upTo: number): Promise<void> => {
      for (; nextChunk < upTo; nextChunk++) {
        if (isChanged !== undefined && !isChanged(nextChunk)) {
          const e = await parentIndex!.entry(nextChunk);
          stats.chunksFromParent++;
          if (e === null) stats.chunksZero++;
          pending.push(Promise.resolve(e === null ? null : Buffer.from(e)));
        } else {
          stats.chunksZero++;
          pending.push(Promise.resolve(null));
        }
        await drain(CHUNKS_IN_FLIGHT);
      }
    };

    const reader = source.read(readExtents, {
      ...throttle.readerOptions(),
      maxBlockSize: cs,
      maxQueueDepth: queueDepth,
      engine,
      signal,
      heldBuffers: CHUNKS_IN_FLIGHT + 2,
    });
    throttle.attach(reader);
    const startChunk = async (i: number): Promise<Buffer | null> => {
      if (i > nextChunk) await fillGap(i);
      const e = parentIndex ? await parentIndex.entry(i) : null;
      return e === null ? null : Buffer.from(e);
    };
    const submit = (i: number, data: Buffer, done: () => void, parentEntry: Buffer | null): void => {
      const p = processChunk(data, done, parentEntry);
      p.catch(() => undefined); // handled when drained
      pending.push(p);
      nextChunk = i + 1;
    };
    // A chunk read in several requests (the throttle shrank them, or only parts
    // of it are used) is assembled here; unread parts are zero, and metadata
    // changed by exclusions is applied over it.
    const assembly = new AssemblyBuffers(cs);
    let partial: { index: number; buf: Buffer; filled: number; expected: number; parentEntry: Buffer | null } | undefined;
    let pendingWrites: OverlayWrite[] = [];
    let failed: unknown;
    try {
      for await (const block of reader) {
        latency.record(block.latencyNs);
        throttle.observe(block.latencyNs, block.length);
        bytesDone += block.length;
        const i = Math.floor(block.offset / cs);
        const chunkStart = i * cs;
        const chunkLength = Math.min(cs, size - chunkStart);
        const writes = partial?.index === i ? [] : overlayOf(chunkStart, chunkLength);
        if (partial === undefined && block.offset === chunkStart && block.length === chunkLength && writes.length === 0) {
          const parentEntry = await startChunk(i);
          block.retain();
          submit(i, block.data, () => block.release(), parentEntry);
        } else {
          if (partial === undefined || partial.index !== i) {
            if (partial !== undefined) throw new LowtideError('INTERNAL', `chunk ${partial.index} was read only in part`);
            partial = { index: i, buf: assembly.take(chunkLength), filled: 0, expected: covered(i), parentEntry: await startChunk(i) };
            pendingWrites = writes;
          }
          block.data.copy(partial.buf, block.offset - chunkStart);
          partial.filled += block.length;
          if (partial.filled === partial.expected) {
            for (const w of pendingWrites) applyWrite(partial.buf, chunkStart, w);
            const buf = partial.buf;
            submit(i, buf, () => assembly.give(buf), partial.parentEntry);
            partial = undefined;
            pendingWrites = [];
          }
        }
        await drain(CHUNKS_IN_FLIGHT);
        report();
      }
      // An aborted reader can end early without an error: never fill what it did not read from the parent.
      if (signal?.aborted) throw new LowtideError('ABORTED', 'the backup was aborted', { cause: signal.reason });
      if (bytesDone !== bytesTotal) throw new LowtideError('INTERNAL', `the reader ended after ${bytesDone} of ${bytesTotal} bytes`);
      if (partial !== undefined) throw new LowtideError('INTERNAL', `chunk ${partial.index} was read only in part`);
      await fillGap(chunkCount);
      await drain(0);
    } catch (err) {
      failed = err;
    }
    if (failed !== undefined) {
      // Let running stores finish before the lock is released.
      await Promise.allSettled(pending);
      throw failed;
    }
    if (nextChunk !== chunkCount) throw new LowtideError('INTERNAL', `backup read ${nextChunk} of ${chunkCount} chunks`);
    stats.bytesRead = reader.stats().bytesRead;
    if (parentIndex) await parentIndex.verify();
    await repo.syncChunkDirs(touchedDirs);

    const seconds = elapsed();
    const id = newBackupId(started, randomBytes(3).toString('hex'));
    const manifest: Manifest = {
      format: 'lowtide-backup',
      version: 1,
      id,
      created: started.toISOString(),
      source: identity,
      size,
      chunkSize: cs,
      chunkCount,
      index: { file: `${id}.index`, sha256: index.digestHex() },
      plan: {
        mode: changed !== undefined ? 'changed' : plan.table === 'not-parsed' ? 'all' : 'used',
        extents: readExtents.map((e) => [e.offset, e.length]),
      },
      filesystems: {
        table: plan.table,
        partitions: plan.partitions,
        excluded: plan.excluded,
        bytesExcluded: plan.bytesExcluded,
        warnings: plan.warnings,
      },
      parent: parent?.id ?? null,
      stats,
      timing: {
        started: started.toISOString(),
        finished: new Date().toISOString(),
        seconds,
        mbPerSecond: seconds > 0 ? bytesTotal / seconds / 1e6 : 0,
      },
      latency: summarizeLatency(latency),
      engine: reader.engine,
      direct: source.direct,
      throttle: throttle.report() as unknown as Record<string, unknown>,
      catalog: null,
    };
    if (await cataloguing) {
      const file = `${id}.catalog`;
      const sha256 = await catalog.finish(join(repo.backupsDir, file));
      manifest.catalog = { file, sha256, entries: catalog.entries };
    } else {
      await catalog.abort();
    }
    catalog = undefined;
    await repo.commitBackup(manifest, index);
    committed = true;
    report(true);
    return { id, manifest };
  } catch (err) {
    throw toLowtideError(err, 'INTERNAL');
  } finally {
    if (!committed) await index?.abort();
    await catalog?.abort();
    await parentIndex?.close().catch(() => undefined);
    await jobThrottle?.stop();
    await source?.close();
    await lock?.release();
  }
}
