/**
 * File-level access to FAT volumes in disks and images: describe a disk's
 * partitions and file systems, list files, extract a file or a tree.
 * Sources are only read; extracted files appear complete or not at all.
 * The same for the FAT volumes inside a backup: files/backup.ts.
 */
import { basename } from 'node:path';
import { toLowtideError } from '../errors.js';
import { openSource } from '../io/source.js';
import { formatOption, type DiskFormat } from '../io/guest.js';
import { objectOption, stringOption } from '../options.js';
import type { PlannedPartition } from '../fs/plan.js';
import { readPartitions } from '../fs/partitions.js';
import { openVolume, type FatVolume } from '../fs/volume.js';
import type { DirEntry } from '../fs/types.js';
import {
  extractTarget,
  extractTree,
  partitionOption,
  resolveExtractOptions,
  safeName,
  volumePath,
  writeExtracted,
  type ExtractOptions,
  type ExtractResult,
  type VolumeChoice,
} from './files/extract.js';

export type { ExtractOptions, ExtractResult, VolumeChoice } from './files/extract.js';
export { listBackupFiles, extractFromBackup, type BackupExtractResult } from './files/backup.js';

export interface DiskPartitionInfo {
  index: number;
  start: number;
  size: number;
  type: string;
  typeName: string | null;
  name: string | null;
  fileSystem: string | null;
  fat?: NonNullable<PlannedPartition['fat']> & { dirty: boolean };
  /** Why a FAT partition could not be parsed. */
  error?: string;
}

export interface DiskInfo {
  table: string;
  partitions: DiskPartitionInfo[];
  warnings: string[];
}

/** The file system's numbers of FAT partition `index` of `path`. */
async function fatInfo(path: string, index: number, format: DiskFormat): Promise<DiskPartitionInfo['fat']> {
  const vol = await openVolume(path, { partition: index, format });
  try {
    const info = vol.info();
    const map = await vol.allocationMap();
    return {
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
}

/**
 * Partition table and, for FAT partitions, the file system's numbers; with
 * `format` 'qcow2' (or 'auto' on a qcow2 file), of the guest disk.
 */
export async function describeDisk(path: string, options: { format?: DiskFormat | undefined } = {}): Promise<DiskInfo> {
  stringOption('source', path);
  const format = formatOption('options.format', objectOption('options', options).format);
  let table;
  try {
    table = await readPartitions(path, { format });
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
        d.fat = await fatInfo(path, p.index, format);
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
  /** Why the name shown is not the name as stored (refused long name, escaped 8.3 name). */
  unsafeName?: string;
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
    ...(e.unsafeName === undefined ? {} : { unsafeName: e.unsafeName }),
  };
}

function openChosenVolume(source: string, partition: number | undefined, format: DiskFormat): Promise<FatVolume> {
  return openVolume(source, partition === undefined ? { format } : { partition, format });
}

export interface ListFilesOptions extends VolumeChoice {
  /** Disk, partition or image holding the FAT volume (opened read-only). */
  source: string;
  /** How the source is read (default 'raw'; see openSource). */
  format?: DiskFormat | undefined;
}

export interface ExtractPathOptions extends ExtractOptions {
  /** Disk, partition or image holding the FAT volume (opened read-only). */
  source: string;
  /** How the source is read (default 'raw'; see openSource). */
  format?: DiskFormat | undefined;
}

/** Every file and directory of a FAT volume, depth first. */
export async function listFiles(options: ListFilesOptions): Promise<FileListing[]> {
  const opts = objectOption('options', options);
  const source = stringOption('source', opts.source);
  const format = formatOption('format', opts.format);
  const vol = await openChosenVolume(source, partitionOption(opts), format);
  try {
    return (await vol.files()).map(listing);
  } finally {
    vol.close();
  }
}

/** Copies a file or directory tree out of a FAT volume. */
export async function extractPath(options: ExtractPathOptions): Promise<ExtractResult> {
  const source = stringOption('source', objectOption('options', options).source);
  const format = formatOption('format', objectOption('options', options).format);
  const { path, dest, force, signal, partition } = resolveExtractOptions(options);
  const vol = await openChosenVolume(source, partition, format);
  let src;
  try {
    src = await openSource(source, { format });
  } catch (err) {
    vol.close();
    throw err;
  }
  const result: ExtractResult = { dest: '', files: 0, directories: 0, bytes: 0 };
  try {
    const normalized = volumePath(path);
    const top = normalized === '/' ? undefined : await vol.stat(normalized);
    const target = await extractTarget(dest, () => (top ? safeName(top.name, normalized) : basename(source) + '-root'));
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

    const prefix = top ? top.path : '';
    const below = async (): Promise<DirEntry[]> =>
      (await vol.files()).filter((e) => prefix === '' || e.path.startsWith(prefix + '/'));
    await extractTree(top, target, below, writeFile, result);
    return result;
  } finally {
    await src.close();
    vol.close();
  }
}
