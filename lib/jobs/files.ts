/**
 * File-level access to FAT volumes in disks and images: describe a disk's
 * partitions and file systems, list files, extract a file or a tree.
 * Sources are only read; extracted files appear complete or not at all.
 */
import { randomBytes } from 'node:crypto';
import { constants as fsc } from 'node:fs';
import { lstat, mkdir, open, rename, unlink, utimes, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { LowtideError, toLowtideError } from '../errors.js';
import { openSource } from '../io/source.js';
import { booleanOption, integerOption, objectOption, signalOption, stringOption } from '../options.js';
import { readPartitions } from '../fs/partitions.js';
import { openVolume, type FatVolume } from '../fs/volume.js';
import type { DirEntry, FatType } from '../fs/types.js';
import { openRepository, Repository } from '../repo/repository.js';
import { readCatalog, type CatalogEntry } from '../repo/catalog.js';
import { IndexLookup } from '../repo/index-lookup.js';
import type { Manifest } from '../repo/format.js';

export interface DiskPartitionInfo {
  index: number;
  start: number;
  size: number;
  type: string;
  typeName: string | null;
  name: string | null;
  fileSystem: string | null;
  fat?: {
    type: FatType;
    clusterSize: number;
    totalClusters: number;
    usedClusters: number;
    freeClusters: number;
    badClusters: number;
    label: string | null;
    dirty: boolean;
  };
  /** Why a FAT partition could not be parsed. */
  error?: string;
}

export interface DiskInfo {
  table: string;
  partitions: DiskPartitionInfo[];
  warnings: string[];
}

/** Partition table and, for FAT partitions, the file system's numbers. */
export async function describeDisk(path: string): Promise<DiskInfo> {
  stringOption('source', path);
  let table;
  try {
    table = await readPartitions(path);
  } catch (err) {
    return { table: 'unreadable', partitions: [], warnings: [toLowtideError(err, 'PARTITION_CORRUPT').message] };
  }
  const partitions: DiskPartitionInfo[] = [];
  for (const p of table.partitions) {
    const d: DiskPartitionInfo = {
      index: p.index,
      start: p.start,
      size: p.size,
      type: p.type,
      typeName: p.typeName,
      name: p.name,
      fileSystem: p.fileSystem,
    };
    if (p.fileSystem === 'fat12' || p.fileSystem === 'fat16' || p.fileSystem === 'fat32') {
      try {
        const vol = await openVolume(path, { partition: p.index });
        try {
          const info = vol.info();
          const map = await vol.allocationMap();
          d.fat = {
            type: info.type,
            clusterSize: info.clusterSize,
            totalClusters: info.clusterCount,
            usedClusters: map.usedClusters,
            freeClusters: map.freeClusters,
            badClusters: map.badClusters,
            label: info.label,
            dirty: info.dirty,
          };
        } finally {
          vol.close();
        }
      } catch (err) {
        d.error = toLowtideError(err, 'FAT_CORRUPT').message;
      }
    }
    partitions.push(d);
  }
  return { table: table.kind, partitions, warnings: [...table.warnings] };
}

export interface FileListing {
  path: string;
  name: string;
  shortName: string;
  size: number;
  isDirectory: boolean;
  readOnly: boolean;
  hidden: boolean;
  system: boolean;
  archive: boolean;
  attributes: number;
  /** ISO 8601; FAT stores local time, read as local time. */
  modified: string;
}

function listing(e: DirEntry): FileListing {
  return {
    path: e.path,
    name: e.name,
    shortName: e.shortName,
    size: e.isDirectory ? 0 : e.size,
    isDirectory: e.isDirectory,
    readOnly: e.readOnly,
    hidden: e.hidden,
    system: e.system,
    archive: e.archive,
    attributes: e.attributes,
    modified: e.modified.toISOString(),
  };
}

export interface VolumeChoice {
  /** Partition number; optional when the disk has one FAT volume. */
  partition?: number;
}

async function volumeOf(source: string, options: VolumeChoice): Promise<FatVolume> {
  const opts = objectOption('options', options);
  const partition = opts.partition === undefined ? undefined : integerOption('partition', opts.partition, 0, 0);
  return openVolume(source, partition === undefined ? {} : { partition });
}

/** Every file and directory of a FAT volume, depth first. */
export async function listFiles(source: string, options: VolumeChoice = {}): Promise<FileListing[]> {
  stringOption('source', source);
  const vol = await volumeOf(source, options);
  try {
    return (await vol.files()).map(listing);
  } finally {
    vol.close();
  }
}

export interface ExtractOptions extends VolumeChoice {
  force?: boolean;
  signal?: AbortSignal;
}

export interface ExtractResult {
  dest: string;
  files: number;
  directories: number;
  bytes: number;
}

function safeName(name: string, where: string): string {
  if (name === '' || name === '.' || name === '..' || name.includes('/') || name.includes('\0')) {
    throw new LowtideError('FAT_CORRUPT', `unsafe name ${JSON.stringify(name)} in ${where}`);
  }
  return name;
}

/**
 * Writes one extracted file: into a temporary file beside `to`, synced, then
 * renamed, so `to` appears complete or not at all. `fill` writes the bytes and
 * returns how many; the mtime is set afterwards.
 */
async function writeExtracted(
  to: string,
  options: { force: boolean; signal: AbortSignal | undefined; size: number; modified: Date; what: string },
  fill: (fh: FileHandle) => Promise<number>,
): Promise<void> {
  const { force, signal } = options;
  if (signal?.aborted) throw new LowtideError('ABORTED', 'extract was aborted', { cause: signal.reason });
  const there = await lstat(to).catch(() => undefined);
  if (there && !force) throw new LowtideError('OUTPUT_EXISTS', `${to} exists; pass force (--force) to replace it`, { path: to });
  if (there?.isDirectory()) throw new LowtideError('OUTPUT_EXISTS', `${to} is a directory`, { path: to });
  const tmp = join(dirname(to), `.${basename(to)}.${randomBytes(4).toString('hex')}.lowtide-partial`);
  const fh = await open(tmp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, 0o644);
  let done = false;
  try {
    const written = await fill(fh);
    if (written !== options.size) {
      throw new LowtideError('FAT_CORRUPT', `${options.what}: ${written} bytes of data for a ${options.size}-byte file`);
    }
    await fh.sync();
    await fh.close();
    await rename(tmp, to);
    done = true;
    await utimes(to, options.modified, options.modified).catch(() => undefined);
  } catch (err) {
    throw toLowtideError(err, 'WRITE_FAILED', `extracting ${options.what}`);
  } finally {
    if (!done) {
      await fh.close().catch(() => undefined);
      await unlink(tmp).catch(() => undefined);
    }
  }
}

/** Copies a file or directory tree out of a FAT volume. */
export async function extractPath(source: string, path: string, dest: string, options: ExtractOptions = {}): Promise<ExtractResult> {
  stringOption('source', source);
  stringOption('path', path);
  stringOption('dest', dest);
  const opts = objectOption('options', options);
  const force = booleanOption('force', opts.force, false);
  const signal = signalOption('signal', opts.signal);
  const vol = await volumeOf(source, { partition: opts.partition as number | undefined });
  const src = await openSource(source);
  const result: ExtractResult = { dest: '', files: 0, directories: 0, bytes: 0 };
  try {
    const normalized = '/' + path.split('/').filter((x) => x !== '').join('/');
    const top = normalized === '/' ? undefined : await vol.stat(normalized);
    let target = resolve(dest);
    const existing = await lstat(target).catch(() => undefined);
    if (existing?.isDirectory()) target = join(target, top ? safeName(top.name, normalized) : basename(source) + '-root');
    result.dest = target;

    const writeFile = async (e: DirEntry, to: string): Promise<void> => {
      await writeExtracted(to, { force, signal, size: e.size, modified: e.modified, what: e.path }, async (fh) => {
        const extents = e.size > 0 ? await vol.fileExtents(e.path) : [];
        let pos = 0;
        if (extents.length === 0) return 0;
        for await (const b of src.read(extents, { blockSize: 1 << 20, queueDepth: 8, signal })) {
          await fh.write(b.data, 0, b.length, pos);
          pos += b.length;
        }
        return pos;
      });
      result.files++;
      result.bytes += e.size;
    };

    if (top && !top.isDirectory) {
      await writeFile(top, target);
      return result;
    }
    const prefix = top ? top.path : '';
    await mkdir(target, { recursive: true });
    result.directories++;
    const entries = (await vol.files()).filter((e) => prefix === '' || e.path.startsWith(prefix + '/'));
    for (const e of entries) {
      const rel = e.path.slice(prefix.length + 1).split('/').map((n) => safeName(n, e.path));
      const to = join(target, ...rel);
      if (e.isDirectory) {
        await mkdir(to, { recursive: true });
        result.directories++;
      } else {
        await writeFile(e, to);
      }
    }
    return result;
  } finally {
    await src.close();
    vol.close();
  }
}

// --- files inside a backup -----------------------------------------------------


export interface BackupFileOptions extends VolumeChoice {
  signal?: AbortSignal;
}

async function backupCatalog(
  repository: string | Repository,
  backupId: string,
): Promise<{ repo: Repository; manifest: Manifest; path: string; sha256: string }> {
  const repo = repository instanceof Repository ? repository : await openRepository(stringOption('repository', repository));
  const manifest = await repo.readManifest(stringOption('backup', backupId));
  if (!manifest.catalog) {
    throw new LowtideError('UNSUPPORTED', `backup ${manifest.id} has no file catalog (it holds no FAT volume that was read by used blocks)`);
  }
  return { repo, manifest, path: join(repo.backupsDir, manifest.catalog.file), sha256: manifest.catalog.sha256 };
}

/** Chooses the partition like openVolume does: the only one, or the one asked for. */
function pickPartition(entries: CatalogEntry[], wanted: number | undefined, id: string): number {
  const parts = [...new Set(entries.map((e) => e.partition))].sort((a, b) => a - b);
  if (wanted !== undefined) {
    if (!parts.includes(wanted)) {
      throw new LowtideError('INVALID_ARGUMENT', `partition: expected one of ${parts.join(', ') || '(none)'} in backup ${id}, got ${wanted}`);
    }
    return wanted;
  }
  if (parts.length === 1) return parts[0]!;
  throw new LowtideError('INVALID_ARGUMENT', `partition: backup ${id} has ${parts.length} FAT partitions (${parts.join(', ')}); choose one`);
}

async function catalogEntries(repository: string | Repository, backupId: string, options: VolumeChoice) {
  const c = await backupCatalog(repository, backupId);
  const all: CatalogEntry[] = [];
  for await (const e of readCatalog(c.path, c.sha256)) all.push(e);
  const opts = objectOption('options', options);
  const wanted = opts.partition === undefined ? undefined : integerOption('partition', opts.partition, 0, 0);
  const partition = pickPartition(all, wanted, c.manifest.id);
  return { ...c, entries: all.filter((e) => e.partition === partition) };
}

/** Files and directories of a FAT volume inside a backup, from its catalog: no chunk is read. */
export async function listBackupFiles(repository: string | Repository, backupId: string, options: VolumeChoice = {}): Promise<FileListing[]> {
  const { entries } = await catalogEntries(repository, backupId, options);
  return entries.map((e) => ({
    path: e.path,
    name: e.path.slice(e.path.lastIndexOf('/') + 1),
    shortName: e.shortName,
    size: e.size,
    isDirectory: e.isDirectory,
    readOnly: (e.attributes & 0x01) !== 0,
    hidden: (e.attributes & 0x02) !== 0,
    system: (e.attributes & 0x04) !== 0,
    archive: (e.attributes & 0x20) !== 0,
    attributes: e.attributes,
    modified: e.modified,
  }));
}

export interface BackupExtractResult extends ExtractResult {
  /** Chunks read from the repository (each verified against its digest). */
  chunksRead: number;
}

/**
 * Copies a file or directory tree out of a FAT volume inside a backup,
 * reading only the chunks under the files' extents.
 */
export async function extractFromBackup(
  repository: string | Repository,
  backupId: string,
  path: string,
  dest: string,
  options: ExtractOptions = {},
): Promise<BackupExtractResult> {
  stringOption('path', path);
  stringOption('dest', dest);
  const opts = objectOption('options', options);
  const force = booleanOption('force', opts.force, false);
  const signal = signalOption('signal', opts.signal);
  const { repo, manifest, entries } = await catalogEntries(repository, backupId, {
    ...(opts.partition !== undefined ? { partition: opts.partition as number } : {}),
  });
  const index = await IndexLookup.open(repo, manifest);
  const cs = manifest.chunkSize;
  let cached: { i: number; data: Buffer } | undefined;
  let chunksRead = 0;
  const chunk = async (i: number): Promise<Buffer> => {
    if (cached?.i === i) return cached.data;
    const d = await index.entry(i);
    const length = Math.min(cs, manifest.size - i * cs);
    const data = d === null ? Buffer.alloc(length) : await repo.getChunk(d.toString('hex'), length);
    if (d) chunksRead++;
    cached = { i, data };
    return data;
  };

  const lower = (p: string): string => p.toLowerCase();
  const normalized = '/' + path.split('/').filter((x) => x !== '').join('/');
  const top = normalized === '/' ? undefined : entries.find((e) => lower(e.path) === lower(normalized));
  if (normalized !== '/' && !top) throw new LowtideError('NOT_FOUND', `${normalized} is not in backup ${manifest.id}`);
  let target = resolve(dest);
  const existing = await lstat(target).catch(() => undefined);
  if (existing?.isDirectory()) target = join(target, top ? safeName(top.path.slice(top.path.lastIndexOf('/') + 1), normalized) : `${manifest.id}-root`);
  const result: BackupExtractResult = { dest: target, files: 0, directories: 0, bytes: 0, chunksRead: 0 };

  const writeFile = async (e: CatalogEntry, to: string): Promise<void> => {
    const modified = new Date(e.modified);
    await writeExtracted(to, { force, signal, size: e.size, modified, what: e.path }, async (fh) => {
      let pos = 0;
      for (const [offset, length] of e.extents) {
        let at = offset;
        while (at < offset + length) {
          const i = Math.floor(at / cs);
          const data = await chunk(i);
          const from = at - i * cs;
          const n = Math.min(offset + length - at, data.length - from);
          await fh.write(data, from, n, pos);
          pos += n;
          at += n;
        }
      }
      return pos;
    });
    result.files++;
    result.bytes += e.size;
  };

  try {
    if (top && !top.isDirectory) {
      await writeFile(top, target);
    } else {
      const prefix = top ? top.path : '';
      await mkdir(target, { recursive: true });
      result.directories++;
      for (const e of entries.filter((x) => prefix === '' || lower(x.path).startsWith(lower(prefix) + '/'))) {
        const rel = e.path.slice(prefix.length + 1).split('/').map((n) => safeName(n, e.path));
        const to = join(target, ...rel);
        if (e.isDirectory) {
          await mkdir(to, { recursive: true });
          result.directories++;
        } else {
          await writeFile(e, to);
        }
      }
    }
  } finally {
    await index.close();
  }
  result.chunksRead = chunksRead;
  return result;
}
