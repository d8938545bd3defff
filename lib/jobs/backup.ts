/**
 * The backup job: reads a source in chunk-sized blocks, stores chunks the
 * repository does not have yet, and commits a manifest once every chunk it
 * names is durable. With a parent and a list of changed extents it reads only
 * the chunks those extents touch and takes every other chunk from the parent.
 * The steps are in backup/: plan, pipeline (assembly, store), catalog, commit.
 */
import { LowtideError, toLowtideError } from '../errors.js';
import { booleanOption, objectOption, stringOption } from '../options.js';
import { passwordOption } from '../repo/crypto.js';
import { validateExtents, type Extent } from '../io/extents.js';
import { planImageOf, type PlanOptions } from '../fs/plan.js';
import type { DiskFormat } from '../io/guest.js';
import { openSource, type DirectMode, type EngineName, type Source } from '../io/source.js';
import type { Manifest } from '../repo/format.js';
import {
  checkRepositoryOption,
  repositoryOption,
  Repository,
  type IndexReader,
  type IndexWriter,
  type RepositoryLocation,
} from '../repo/repository.js';
import { resolveJobControl, resolveReadSettings, type JobControl, type ReadSettings } from './options.js';
import { ProgressReporter, Stopwatch } from './progress.js';
import { JobThrottle, type ThrottleState } from '../throttle/job-throttle.js';
import {
  resolveThrottleSettings,
  singleJobThrottleSettings,
  type ResolvedThrottleSettings,
  type ThrottleSettings,
} from '../throttle/job-settings.js';
import { BackupCatalog } from './backup/catalog.js';
import { commitBackup } from './backup/commit.js';
import { ChunkPipeline } from './backup/pipeline.js';
import { DeviceRead, type DeviceReadReport, type ReadFrom } from './device-read.js';
import { checkParentIndex, planBackup, type PlanRequest } from './backup/plan.js';

export interface BackupOptions extends ThrottleSettings {
  /** File or block device to back up (opened read-only). */
  source: string;
  /** Repository path, s3:// location (or S3 options), or an open Repository. */
  repository: RepositoryLocation | Repository;
  /** The passphrase of an encrypted repository (default: LOWTIDE_PASSWORD from the environment). */
  password?: string | undefined;
  /**
   * Parent backup id; 'auto' (default) picks the latest backup of the same
   * source; null makes a backup without a parent (chunks are still deduplicated).
   */
  parent?: string | null | undefined;
  /** Extents changed since the parent (changed-block tracking); only the chunks they touch are read. */
  changed?: readonly Extent[] | undefined;
  /**
   * Instead of `changed`: the persistent dirty bitmap of this name in the
   * qcow2 image (format 'qcow2' or 'auto') gives the changed extents. A
   * bitmap flagged in use is refused (BITMAP_IN_USE).
   */
  changedBitmap?: string | undefined;
  /** Read every block (default false: only what FAT file systems use, everything else in full). */
  allBlocks?: boolean | undefined;
  /** Files and directories to leave out of FAT volumes (see planImage). */
  exclude?: readonly string[] | undefined;
  /** An unparseable file system is an error instead of a full copy with a warning. */
  strict?: boolean | undefined;
  /** Most reads in flight (default 32); the throttle may use fewer. */
  queueDepth?: number | undefined;
  engine?: EngineName | undefined;
  direct?: DirectMode | undefined;
  /**
   * 'file' (default), or 'device': read a file source's blocks straight from
   * the block device under its file system (see ImageOptions.readFrom).
   */
  readFrom?: ReadFrom | undefined;
  /**
   * How the source is read (default 'raw'): 'qcow2' images the guest disk of
   * a qcow2 image and its backing chain; 'auto' detects qcow2 on a regular
   * file under the probing rule (see openSource).
   */
  format?: DiskFormat | undefined;
  signal?: AbortSignal | undefined;
  onProgress?: ((p: BackupProgress) => void) | undefined;
  progressIntervalMs?: number | undefined;
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
  /** Temporary files an earlier writer that did not finish had left in the repository, removed when this backup took the lock. */
  staleFilesRemoved: { files: number; bytes: number };
  /**
   * Set when the backup was read in full instead of building on its parent
   * (the parent's index is damaged): why. The manifest's plan.fallback says the same.
   */
  fallback?: string | undefined;
  /** With readFrom 'device': where the bytes came from. */
  readFrom?: DeviceReadReport | undefined;
}

/** A backup's options, checked, with their defaults filled in. */
interface ResolvedBackupOptions extends PlanRequest {
  source: string;
  repository: RepositoryLocation | Repository;
  password: string | undefined;
  plan: Omit<PlanOptions, 'source'>;
  read: ReadSettings;
  control: JobControl<BackupProgress>;
  throttle: ResolvedThrottleSettings;
  /** One of backupMany()'s jobs: the repository's writer lock is held already. */
  lockHeld: boolean;
  changedBitmap: string | undefined;
}

function resolveBackupOptions(options: unknown, lockHeld: boolean): ResolvedBackupOptions {
  const opts = objectOption('options', options);
  const source = stringOption('source', opts.source);
  const repository = checkRepositoryOption(opts.repository);
  const password = passwordOption(opts.password);
  const parent =
    opts.parent === null ? null : opts.parent === undefined ? undefined : stringOption('parent', opts.parent);
  const changed = opts.changed as readonly Extent[] | undefined;
  if (changed !== undefined) validateExtents(changed, 'changed');
  const changedBitmap =
    opts.changedBitmap === undefined ? undefined : stringOption('changedBitmap', opts.changedBitmap);
  if (changedBitmap !== undefined && changed !== undefined) {
    throw new LowtideError('INVALID_ARGUMENT', 'changedBitmap: give either changed or changedBitmap, not both');
  }
  const allBlocks = booleanOption('allBlocks', opts.allBlocks, false);
  const strict = booleanOption('strict', opts.strict, false);
  const exclude = opts.exclude as readonly string[] | undefined;
  const read = resolveReadSettings(opts);
  const control = resolveJobControl<BackupProgress>(opts);
  // backupMany() applies the admission limit itself; a lone backup has no use for one.
  const throttle = lockHeld ? resolveThrottleSettings(opts) : singleJobThrottleSettings(opts);
  return {
    source,
    repository,
    password,
    parent,
    changed,
    plan: { allBlocks, strict, ...(exclude !== undefined ? { exclude } : {}) },
    read,
    control,
    throttle,
    lockHeld,
    changedBitmap,
  };
}

export async function backup(options: BackupOptions): Promise<BackupResult> {
  return runBackup(resolveBackupOptions(options, false));
}

/** One of backupMany()'s jobs: it holds the repository's writer lock for all of them. */
export async function backupUnderHeldLock(options: BackupOptions): Promise<BackupResult> {
  return runBackup(resolveBackupOptions(options, true));
}

async function runBackup(o: ResolvedBackupOptions): Promise<BackupResult> {
  // The plan reads only the source (partition table, boot sectors, FATs): it
  // runs while the repository is opened and locked and the parent is read
  // (with cold caches, both wait for the disk). Awaited in planBackup; until
  // then a failure must not count as unhandled.
  // The plan works on the source the job reads (a virtual disk is opened and mapped once).
  const opening = openSource(o.source, { direct: o.read.direct, format: o.read.format });
  const planning = opening.then((src) => planImageOf(src, { ...o.plan, format: o.read.format }));
  planning.catch(() => undefined);
  const closeUnused = async (): Promise<void> => {
    await opening.then(
      (src) => src.close(),
      () => undefined,
    );
  };
  let repo: Repository;
  try {
    repo = await repositoryOption(o.repository, 'repository', o.password);
  } catch (err) {
    await closeUnused();
    throw err;
  }
  const opened = !(o.repository instanceof Repository);
  let lock;
  try {
    lock = o.lockHeld ? undefined : await repo.lock('lowtide backup');
  } catch (err) {
    if (opened) repo.close();
    await closeUnused();
    throw err;
  }
  let source: Source | undefined;
  let index: IndexWriter | undefined;
  let parentIndex: IndexReader | undefined;
  let catalog: BackupCatalog | undefined;
  let committed = false;
  let jobThrottle: JobThrottle | undefined;
  let device: DeviceRead | undefined;
  try {
    source = await opening;
    if (o.changedBitmap !== undefined) o = { ...o, changed: await source.bitmapExtents(o.changedBitmap) };
    const plan = await checkParentIndex(repo, await planBackup(repo, source, o, planning));
    if (o.read.readFrom === 'device') device = await DeviceRead.prepare(source, plan.extents);
    // The catalog walks the file systems' metadata while the data is read.
    catalog = await BackupCatalog.start(repo, o.source, plan.image);
    const cs = repo.chunkSize;
    const bounds = {
      maxQueueDepth: o.read.queueDepth,
      maxBlockSize: cs,
      minBlockSize: Math.min(64 * 1024, cs),
      alignment: Math.max(4096, source.sectorSize),
    };
    const throttle = (jobThrottle = await JobThrottle.create(o.throttle, bounds, source, o.control.signal));
    const started = new Date();
    const clock = new Stopwatch();
    index = await repo.createIndex(plan.chunkCount);
    parentIndex = plan.parent ? await repo.openIndex(plan.parent) : undefined;
    // Remote: the parent's chunks are not asked about one by one.
    if (plan.parent) await repo.rememberChunksOf(plan.parent);
    const pipeline = new ChunkPipeline({
      repo,
      source,
      plan,
      index,
      parentIndex,
      throttle,
      read: o.read,
      signal: o.control.signal,
      device,
    });
    const progress = new ProgressReporter<BackupProgress>(o.control, clock, (t) => ({
      bytesDone: pipeline.bytesDone,
      bytesTotal: plan.bytesTotal,
      chunksNew: pipeline.stats.chunksNew,
      bytesStored: pipeline.stats.bytesStored,
      elapsedSeconds: t,
      bytesPerSecond: t > 0 ? pipeline.bytesDone / t : 0,
      latencyP50Ms: pipeline.latency.percentile(50) / 1e6,
      throttle: throttle.state(),
    }));
    const reader = await pipeline.run(() => progress.report());
    await device?.verifyUnchanged();
    const record = { repo, source, plan, index, pipeline, reader, throttle, started, clock };
    const manifest = await commitBackup(record, parentIndex, catalog, lock);
    committed = true;
    progress.report(true);
    return {
      id: manifest.id,
      manifest,
      staleFilesRemoved: lock?.staleFilesRemoved ?? { files: 0, bytes: 0 },
      ...(plan.fallback !== undefined ? { fallback: plan.fallback } : {}),
      ...(device !== undefined ? { readFrom: device.report() } : {}),
    };
  } catch (err) {
    throw toLowtideError(err, 'INTERNAL');
  } finally {
    if (!committed) await index?.abort();
    await catalog?.abort();
    await parentIndex?.close().catch(() => undefined);
    await jobThrottle?.stop();
    await device?.close();
    await source?.close();
    await lock?.release();
    if (opened) repo.close();
  }
}
