/**
 * verify and prune.
 *
 * verify re-reads every chunk file, decompresses it and recomputes its digest,
 * then walks every backup's chunk index and names the backups that need a
 * missing or damaged chunk.
 *
 * prune removes backups by a retention rule, then deletes the chunks no
 * remaining backup needs. It holds the prune lock, so no backup starts while
 * it runs; when backups were running as it started, it deletes backups but
 * no chunk. A restore of a kept backup can run concurrently (its chunks are
 * never removed). A restore of a backup being pruned may fail with CHUNK_MISSING.
 */
import { unlink } from 'node:fs/promises';
import { LowtideError, toLowtideError } from '../errors.js';
import { functionOption, integerOption, objectOption, signalOption } from '../options.js';
import { openRegularFile } from './files.js';
import type { IndexReader } from './index-file.js';
import {
  BACKUP_ID_PATTERN,
  DIGEST_SIZE,
  INDEX_HEADER_SIZE,
  indexEntrySize,
  indexFileName,
  parseIndexHeader,
  ZERO_DIGEST,
  type Manifest,
} from './format.js';
import { withRepository, type RepositoryLocation, type Repository } from './repository.js';
import { decodePackedLocation, PACKS_IN_FLIGHT, type PackLocation } from './storage/packs.js';

const PARALLEL = 4;
/** Chunks deleted at once (one request on S3). */
const DELETE_BATCH = 1000;

async function mapLimit<T>(
  items: AsyncIterable<T>,
  limit: number,
  fn: (item: T) => Promise<void>,
  signal?: AbortSignal,
): Promise<void> {
  const running = new Set<Promise<void>>();
  let failure: unknown;
  for await (const item of items) {
    if (signal?.aborted) throw new LowtideError('ABORTED', 'aborted', { cause: signal.reason });
    const p: Promise<void> = fn(item)
      .catch((err: unknown) => {
        failure ??= err;
      })
      .finally(() => running.delete(p));
    running.add(p);
    if (running.size >= limit) await Promise.race(running);
    if (failure !== undefined) break;
  }
  await Promise.all(running);
  if (failure !== undefined) throw failure;
}

export interface VerifyProblem {
  digest: string;
  problem: 'missing' | 'corrupt';
  message: string;
  /** Backups that need this chunk. */
  backups: string[];
}

export interface VerifyReport {
  ok: boolean;
  chunksChecked: number;
  bytesChecked: number;
  backupsChecked: number;
  problems: VerifyProblem[];
  /** Backups that cannot be restored intact. */
  damagedBackups: string[];
  /** Manifests or chunk indexes that could not be read. */
  damagedManifests: { id: string; message: string }[];
  seconds: number;
}

export interface VerifyOptions {
  /** The repository: a path, an s3:// location, or one already open. */
  repository: RepositoryLocation | Repository;
  /** The passphrase of an encrypted repository (default: LOWTIDE_PASSWORD from the environment). */
  password?: string | undefined;
  signal?: AbortSignal | undefined;
  onProgress?: ((p: { chunksChecked: number; bytesChecked: number }) => void) | undefined;
}

/** Reads every chunk and checks it against its id, and every backup's chunks are there. */
export async function verifyRepository(options: VerifyOptions): Promise<VerifyReport> {
  const opts = objectOption('options', options);
  const signal = signalOption('signal', opts.signal);
  const onProgress = functionOption<(p: { chunksChecked: number; bytesChecked: number }) => void>(
    'onProgress',
    opts.onProgress,
  );
  return withRepository(opts.repository, opts.password, (repo) =>
    repo.isPacked ? verifyPacked(repo, signal, onProgress) : verifyLoose(repo, signal, onProgress),
  );
}

/** verify of a repository of chunk objects (version 1): every chunk, then every backup's index. */
async function verifyLoose(
  repo: Repository,
  signal: AbortSignal | undefined,
  onProgress: ((p: { chunksChecked: number; bytesChecked: number }) => void) | undefined,
): Promise<VerifyReport> {
  const t0 = Date.now();
  const present = new Set<string>();
  const corrupt = new Map<string, string>();
  let chunksChecked = 0;
  let bytesChecked = 0;
  await mapLimit(
    repo.chunkEntries(),
    PARALLEL,
    async ({ hex, unexpected }) => {
      if (unexpected !== undefined) {
        corrupt.set(hex, unexpected);
        return;
      }
      present.add(hex);
      try {
        const lease = await repo.leaseChunk(hex);
        bytesChecked += lease.data.length;
        lease.release();
      } catch (err) {
        corrupt.set(hex, toLowtideError(err, 'CHUNK_CORRUPT').message);
      }
      chunksChecked++;
      onProgress?.({ chunksChecked, bytesChecked });
    },
    signal,
  );

  const needs = new Map<string, Set<string>>(); // bad digest -> backups
  const { backups, damagedManifests, damagedBackups } = await walkIndexes(repo, (m, index, i, e) => {
    const hex = e.toString('hex');
    if (!present.has(hex) || corrupt.has(hex)) {
      let s = needs.get(hex);
      if (!s) needs.set(hex, (s = new Set()));
      s.add(m.id);
      return true;
    }
    return false;
  });
  const problems: VerifyProblem[] = [];
  for (const [hex, message] of corrupt) {
    problems.push({ digest: hex, problem: 'corrupt', message, backups: [...(needs.get(hex) ?? [])].sort() });
  }
  for (const [hex, ids] of needs) {
    if (!present.has(hex)) {
      problems.push({ digest: hex, problem: 'missing', message: `chunk ${hex} is missing`, backups: [...ids].sort() });
    }
  }
  return {
    ok: problems.length === 0 && damagedManifests.length === 0,
    chunksChecked,
    bytesChecked,
    backupsChecked: backups.length,
    problems,
    damagedBackups: [...damagedBackups].sort(),
    damagedManifests,
    seconds: (Date.now() - t0) / 1000,
  };
}

/**
 * Every backup's index, entry by entry (zero chunks skipped), then checked
 * whole: `visit` returns true when the entry makes its backup damaged, and
 * throws for an index that contradicts another. An index that cannot be
 * opened, fails its check or makes `visit` throw is a damaged manifest.
 */
async function walkIndexes(
  repo: Repository,
  visit: (m: Manifest, index: IndexReader, i: number, entry: Buffer) => boolean,
): Promise<{
  backups: Manifest[];
  damagedManifests: { id: string; message: string }[];
  damagedBackups: Set<string>;
}> {
  const { backups, damaged } = await repo.listBackups();
  const damagedManifests = damaged.map((d) => ({ id: d.id, message: d.error.message }));
  const damagedBackups = new Set<string>();
  for (const m of backups) {
    let index;
    try {
      index = await repo.openIndex(m);
    } catch (err) {
      damagedManifests.push({ id: m.id, message: toLowtideError(err, 'REPO_CORRUPT').message });
      damagedBackups.add(m.id);
      continue;
    }
    try {
      for (let i = 0; i < m.chunkCount; i++) {
        const e = await index.entry(i);
        if (e !== null && visit(m, index, i, e)) damagedBackups.add(m.id);
      }
      await index.verify();
    } catch (err) {
      damagedManifests.push({ id: m.id, message: toLowtideError(err, 'REPO_CORRUPT').message });
      damagedBackups.add(m.id);
    } finally {
      await index.close();
    }
  }
  return { backups, damagedManifests, damagedBackups };
}

/** A record some backup's index names: its chunk, and the backups that need it. */
interface NamedRecord {
  hex: string;
  location: PackLocation;
  backups: Set<string>;
}

/**
 * verify of a packed repository: every record a backup's index names is
 * read with its pack (each pack whole, once, a few at a time) and checked
 * as a chunk. A missing pack makes its records missing chunks. Records no
 * backup names are not read (like chunks no backup needs).
 */
async function verifyPacked(
  repo: Repository,
  signal: AbortSignal | undefined,
  onProgress: ((p: { chunksChecked: number; bytesChecked: number }) => void) | undefined,
): Promise<VerifyReport> {
  const t0 = Date.now();
  // pack -> offset -> record
  const packs = new Map<string, Map<number, NamedRecord>>();
  const { backups, damagedManifests, damagedBackups } = await walkIndexes(repo, (m, index, i, e) => {
    const location = index.location(i)!;
    let records = packs.get(location.pack);
    if (!records) packs.set(location.pack, (records = new Map()));
    let r = records.get(location.offset);
    if (!r) records.set(location.offset, (r = { hex: e.toString('hex'), location, backups: new Set() }));
    else if (r.hex !== e.toString('hex') || r.location.length !== location.length) {
      throw new LowtideError(
        'REPO_CORRUPT',
        `the chunk index of backup ${m.id} names chunk ${e.toString('hex')} where another index has chunk ${r.hex}`,
      );
    }
    r.backups.add(m.id);
    return false;
  });
  const present = new Map<string, number>();
  const problems: VerifyProblem[] = [];
  const problem = (r: NamedRecord, kind: 'missing' | 'corrupt', message: string): void => {
    problems.push({ digest: r.hex, problem: kind, message, backups: [...r.backups].sort() });
    for (const id of r.backups) damagedBackups.add(id);
  };
  for await (const p of repo.packEntries()) if (p.unexpected === undefined) present.set(p.name, p.size);
  let chunksChecked = 0;
  let bytesChecked = 0;
  const packLimit = (repo.config.packSize ?? 0) + repo.chunkSize * 2 + 1024 * 1024;
  async function* referenced(): AsyncGenerator<[string, Map<number, NamedRecord>]> {
    yield* packs;
  }
  await mapLimit(
    referenced(),
    PACKS_IN_FLIGHT,
    async ([pack, records]) => {
      let data: Buffer | undefined;
      try {
        data = present.has(pack) ? await repo.readPack(pack, packLimit) : undefined;
      } catch (err) {
        for (const r of records.values()) problem(r, 'corrupt', toLowtideError(err, 'CHUNK_CORRUPT').message);
        return;
      }
      for (const r of records.values()) {
        if (data === undefined) {
          problem(r, 'missing', `chunk ${r.hex} is missing: its pack ${pack} is not in the repository`);
          continue;
        }
        const { offset, length } = r.location;
        try {
          // A copy: an encrypted record is opened in place.
          const record = Buffer.from(data.subarray(offset, offset + length));
          if (record.length !== length)
            throw new LowtideError('CHUNK_CORRUPT', `chunk ${r.hex}: its pack ${pack} ends before its record`);
          bytesChecked += await repo.checkRecord(r.hex, record, r.location);
        } catch (err) {
          problem(r, 'corrupt', toLowtideError(err, 'CHUNK_CORRUPT').message);
        }
        chunksChecked++;
        onProgress?.({ chunksChecked, bytesChecked });
      }
    },
    signal,
  );
  problems.sort((a, b) => (a.digest < b.digest ? -1 : a.digest > b.digest ? 1 : 0));
  return {
    ok: problems.length === 0 && damagedManifests.length === 0,
    chunksChecked,
    bytesChecked,
    backupsChecked: backups.length,
    problems,
    damagedBackups: [...damagedBackups].sort(),
    damagedManifests,
    seconds: (Date.now() - t0) / 1000,
  };
}

export interface PruneOptions {
  /** The repository: a path, an s3:// location, or one already open. */
  repository: RepositoryLocation | Repository;
  /** The passphrase of an encrypted repository (default: LOWTIDE_PASSWORD from the environment). */
  password?: string | undefined;
  /** Keep the newest N backups of each source. */
  keepLast?: number | undefined;
  /** Keep the newest backup of each of the last N days that have backups, per source. */
  keepDaily?: number | undefined;
  /** Keep the newest backup of each of the last N ISO weeks that have backups, per source. */
  keepWeekly?: number | undefined;
  /** Only report what would be removed. */
  dryRun?: boolean | undefined;
  signal?: AbortSignal | undefined;
}

export interface PruneReport {
  kept: string[];
  removed: string[];
  /**
   * Backups whose manifest cannot be read: never removed, and the chunks their
   * chunk index names are kept (prune refuses to run when that index cannot
   * be read either).
   */
  damaged: { id: string; message: string }[];
  chunksRemoved: number;
  /** Packed repositories: the packs deleted (a pack goes when no kept backup needs any chunk in it). */
  packsRemoved?: number | undefined;
  bytesFreed: number;
  /** Temporary files a writer that did not finish had left in tmp/, removed when the lock was taken. */
  staleFilesRemoved: { files: number; bytes: number };
  /**
   * Why no chunk was deleted although backups were removed: backups were
   * running in the (remote) repository, and they may reuse any chunk. The
   * next prune deletes them.
   */
  chunksKept?: string | undefined;
  dryRun: boolean;
}

/**
 * The chunks named by backups/<id>.index, read without its manifest (for a
 * backup whose manifest is damaged): the header says how many entries there
 * are, and the file must hold exactly that many. The digest cannot be checked.
 */
async function chunksOfIndex(repo: Repository, id: string, into: Set<string>): Promise<void> {
  const packed = repo.isPacked;
  const entrySize = indexEntrySize(packed ? 2 : 1);
  const what = `the chunk index of backup ${id}`;
  let opened;
  let path: string;
  try {
    const file = await repo.backupFile(indexFileName(id), what);
    path = file.path;
    try {
      opened = await openRegularFile(path, what, 'REPO_CORRUPT');
    } finally {
      if (file.staged) await unlink(path).catch(() => undefined);
    }
  } catch (err) {
    throw toLowtideError(err, 'REPO_CORRUPT', `opening ${what}`);
  }
  const { fh, size } = opened;
  try {
    const header = Buffer.alloc(INDEX_HEADER_SIZE);
    const { bytesRead } = await fh.read(header, 0, INDEX_HEADER_SIZE, 0);
    const { chunkCount, version } = parseIndexHeader(header.subarray(0, bytesRead), path);
    if (version !== (packed ? 2 : 1) || size !== INDEX_HEADER_SIZE + entrySize * chunkCount) {
      throw new LowtideError(
        'REPO_CORRUPT',
        `${what} (${path}) has ${size} bytes, its header says ${chunkCount} chunks`,
        { path },
      );
    }
    const buf = Buffer.alloc(4096 * entrySize);
    for (let position = INDEX_HEADER_SIZE; position < size;) {
      const n = (await fh.read(buf, 0, Math.min(buf.length, size - position), position)).bytesRead;
      if (n === 0 || n % entrySize !== 0)
        throw new LowtideError('REPO_CORRUPT', `${what} (${path}) is truncated`, { path });
      for (let o = 0; o < n; o += entrySize) {
        const e = buf.subarray(o, o + entrySize);
        if (e.subarray(0, DIGEST_SIZE).equals(ZERO_DIGEST)) continue;
        // Packed: what is live is the pack of the record.
        into.add(packed ? decodePackedLocation(e, path).pack : e.toString('hex'));
      }
      position += n;
    }
  } finally {
    await fh.close();
  }
}

function isoWeek(d: Date): string {
  const t = new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate()));
  const day = t.getUTCDay() || 7;
  t.setUTCDate(t.getUTCDate() + 4 - day);
  const yearStart = new Date(Date.UTC(t.getUTCFullYear(), 0, 1));
  const week = Math.ceil(((t.getTime() - yearStart.getTime()) / 86400000 + 1) / 7);
  return `${t.getUTCFullYear()}-W${week}`;
}

/** Which backups a retention rule keeps (pure; newest first within each source). */
export function selectKept(
  backups: readonly Manifest[],
  rule: { keepLast: number; keepDaily: number; keepWeekly: number },
): Set<string> {
  const bySource = new Map<string, Manifest[]>();
  for (const b of backups) {
    const k = b.source.realPath;
    let l = bySource.get(k);
    if (!l) bySource.set(k, (l = []));
    l.push(b);
  }
  const keep = new Set<string>();
  for (const list of bySource.values()) {
    const newest = [...list].sort((a, b) => (a.created < b.created ? 1 : a.created > b.created ? -1 : 0));
    newest.slice(0, rule.keepLast).forEach((b) => keep.add(b.id));
    for (const [n, key] of [
      [rule.keepDaily, (d: Date) => d.toISOString().slice(0, 10)],
      [rule.keepWeekly, isoWeek],
    ] as const) {
      const seen = new Set<string>();
      for (const b of newest) {
        if (seen.size >= n) break;
        const k = key(new Date(b.created));
        if (!seen.has(k)) {
          seen.add(k);
          keep.add(b.id);
        }
      }
    }
  }
  return keep;
}

/** Removes the backups the keep rules do not keep, then the chunks no backup uses. */
export async function pruneRepository(options: PruneOptions): Promise<PruneReport> {
  const opts = objectOption('options', options);
  const keepLast = integerOption('keepLast', opts.keepLast, 0, 0);
  const keepDaily = integerOption('keepDaily', opts.keepDaily, 0, 0);
  const keepWeekly = integerOption('keepWeekly', opts.keepWeekly, 0, 0);
  if (keepLast + keepDaily + keepWeekly === 0) {
    throw new LowtideError(
      'INVALID_ARGUMENT',
      'keepLast: expected at least one of keepLast, keepDaily, keepWeekly to be 1 or more, got none (that would remove every backup)',
    );
  }
  const dryRun = opts.dryRun === true;
  const signal = signalOption('signal', opts.signal);
  return withRepository(opts.repository, opts.password, (repo) =>
    pruneOpen(repo, { keepLast, keepDaily, keepWeekly }, dryRun, signal),
  );
}

async function pruneOpen(
  repo: Repository,
  rules: { keepLast: number; keepDaily: number; keepWeekly: number },
  dryRun: boolean,
  signal: AbortSignal | undefined,
): Promise<PruneReport> {
  const lock = await repo.lock('lowtide prune', 'prune');
  const running = lock.runningBackups;
  try {
    const { backups, damaged: unreadable } = await repo.listBackups();
    // A backup whose manifest cannot be read stays, and so do the chunks its
    // index names: without them it could never be repaired. If that index
    // cannot be read either, nothing is removed (its chunks are unknown).
    const live = new Set<string>();
    const damaged: { id: string; message: string }[] = [];
    const held = new Set<string>();
    for (const d of unreadable) {
      damaged.push({ id: d.id, message: d.error.message });
      if (!BACKUP_ID_PATTERN.test(d.id)) continue; // not named like a backup: there is no index of it
      try {
        await chunksOfIndex(repo, d.id, live);
      } catch (err) {
        throw new LowtideError(
          'REPO_CORRUPT',
          `cannot prune: the manifest of backup ${d.id} is unreadable (${d.error.message}) and so is its chunk index (${toLowtideError(err, 'REPO_CORRUPT').message}); the chunks it needs are unknown, so nothing is removed; run verify`,
          { cause: err },
        );
      }
      held.add(d.id);
    }
    const keep = selectKept(backups, rules);
    const removed = backups.filter((b) => !keep.has(b.id)).map((b) => b.id);
    const staleFilesRemoved = lock.staleFilesRemoved;
    if (dryRun)
      return { kept: [...keep].sort(), removed, damaged, chunksRemoved: 0, bytesFreed: 0, staleFilesRemoved, dryRun };

    // Mark: every chunk a remaining backup needs; a damaged kept index stops
    // the prune before anything is removed.
    for (const m of backups.filter((b) => keep.has(b.id))) {
      held.add(m.id);
      const index = await repo.openIndex(m);
      try {
        for (let i = 0; i < m.chunkCount; i++) {
          const e = await index.entry(i);
          if (e !== null) live.add(repo.isPacked ? index.location(i)!.pack : e.toString('hex'));
        }
        await index.verify();
      } finally {
        await index.close();
      }
    }
    for (const id of removed) await repo.deleteBackup(id);
    if (running.length > 0) {
      // A running backup may reuse any chunk it finds, and its index is
      // uploaded before its manifest: nothing unnamed is swept now.
      const chunksKept = `no chunks deleted: ${running.length} backup(s) running (${running.join('; ')})`;
      return {
        kept: [...keep].sort(),
        removed,
        damaged,
        chunksRemoved: 0,
        bytesFreed: 0,
        staleFilesRemoved,
        chunksKept,
        dryRun,
      };
    }

    // Sweep chunks, and chunk indexes and catalogs whose manifest is gone (a
    // crashed backup). Only names the format gives are removed; unlink never
    // follows a link.
    let chunksRemoved = 0;
    let bytesFreed = 0;
    let batch: string[] = [];
    const sizes = new Map<string, number>();
    const flush = async (): Promise<void> => {
      const r = await repo.deleteChunks(batch, sizes);
      chunksRemoved += r.chunks;
      bytesFreed += r.bytes;
      batch = [];
      sizes.clear();
    };
    let packsRemoved: number | undefined;
    if (repo.isPacked) {
      // A pack goes whole when no kept backup names a record in it; one that
      // is still needed keeps the records nothing needs any more.
      const dead: string[] = [];
      const packSizes = new Map<string, number>();
      for await (const p of repo.packEntries()) {
        if (signal?.aborted) throw new LowtideError('ABORTED', 'aborted', { cause: signal.reason });
        if (p.unexpected !== undefined || live.has(p.name)) continue;
        dead.push(p.name);
        packSizes.set(p.name, p.size);
      }
      packsRemoved = 0;
      for (let i = 0; i < dead.length; i += DELETE_BATCH) {
        const r = await repo.deletePacks(dead.slice(i, i + DELETE_BATCH), packSizes);
        packsRemoved += r.packs;
        bytesFreed += r.bytes;
      }
    } else {
      for await (const { hex, size, unexpected } of repo.chunkEntries()) {
        if (signal?.aborted) throw new LowtideError('ABORTED', 'aborted', { cause: signal.reason });
        if (unexpected !== undefined || live.has(hex)) continue;
        batch.push(hex);
        if (size !== undefined) sizes.set(hex, size);
        if (batch.length >= DELETE_BATCH) await flush();
      }
      if (batch.length > 0) await flush();
    }
    const orphans = (await repo.backupNames()).filter((name) => {
      const id = name.replace(/\.(index|catalog)$/, '');
      return id !== name && BACKUP_ID_PATTERN.test(id) && !held.has(id);
    });
    await repo.removeBackupFiles(orphans);
    return {
      kept: [...keep].sort(),
      removed,
      damaged,
      chunksRemoved,
      ...(packsRemoved !== undefined ? { packsRemoved } : {}),
      bytesFreed,
      staleFilesRemoved,
      dryRun,
    };
  } finally {
    await lock.release();
  }
}
