/**
 * File-level access to FAT volumes in disks and images: describe a disk's
 * partitions and file systems, list files, extract a file or a tree.
 * Sources are only read; extracted files appear complete or not at all.
 */
import { randomBytes } from 'node:crypto';
import { constants as fsc } from 'node:fs';
import { lstat, mkdir, open, rename, unlink, utimes } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { LowtideError, toLowtideError } from '../errors.js';
import { openSource } from '../io/source.js';
import { booleanOption, integerOption, objectOption, signalOption, stringOption } from '../options.js';
import { readPartitions } from '../fs/partitions.js';
import { openVolume, type FatVolume } from '../fs/volume.js';
import type { DirEntry, FatType } from '../fs/types.js';

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
      if (signal?.aborted) throw new LowtideError('ABORTED', 'extract was aborted', { cause: signal.reason });
      const there = await lstat(to).catch(() => undefined);
      if (there && !force) throw new LowtideError('OUTPUT_EXISTS', `${to} exists; pass force (--force) to replace it`, { path: to });
      if (there?.isDirectory()) throw new LowtideError('OUTPUT_EXISTS', `${to} is a directory`, { path: to });
      const tmp = join(dirname(to), `.${basename(to)}.${randomBytes(4).toString('hex')}.lowtide-partial`);
      const fh = await open(tmp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, 0o644);
      let done = false;
      try {
        const extents = e.size > 0 ? await vol.fileExtents(e.path) : [];
        let pos = 0;
        if (extents.length > 0) {
          for await (const b of src.read(extents, { blockSize: 1 << 20, queueDepth: 8, signal })) {
            await fh.write(b.data, 0, b.length, pos);
            pos += b.length;
          }
        }
        if (pos !== e.size) throw new LowtideError('FAT_CORRUPT', `${e.path}: read ${pos} bytes of ${e.size}`);
        await fh.sync();
        await fh.close();
        await rename(tmp, to);
        done = true;
        await utimes(to, e.modified, e.modified).catch(() => undefined);
        result.files++;
        result.bytes += e.size;
      } catch (err) {
        throw toLowtideError(err, 'WRITE_FAILED', `extracting ${e.path}`);
      } finally {
        if (!done) {
          await fh.close().catch(() => undefined);
          await unlink(tmp).catch(() => undefined);
        }
      }
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
