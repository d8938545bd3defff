/** Partition tables: MBR (with extended/logical partitions), GPT, or none. */
import { toLowtideError } from '../errors.js';
import { objectOption, stringOption } from '../options.js';
import { formatOption, type DiskFormat } from '../io/guest.js';
import { native as fsNative, type NativePartition, type NativePartitionTable } from '../native.js';
import type { FileSystemKind, Partition, PartitionTable } from './types.js';

const fsKinds: ReadonlySet<string> = new Set([
  'fat12',
  'fat16',
  'fat32',
  'ntfs',
  'exfat',
  'ext',
  'xfs',
  'btrfs',
  'swap',
  'unknown',
]);

function hexType(t: number): string {
  return `0x${t.toString(16).padStart(2, '0')}`;
}

function toPartition(kind: NativePartitionTable['kind'], p: NativePartition): Partition {
  const gpt = kind === 'gpt';
  return {
    index: p.index,
    start: p.start,
    size: p.size,
    type: gpt ? p.typeGuid : p.index === 0 ? '' : hexType(p.mbrType),
    typeName: p.typeName === '' ? null : p.typeName,
    name: gpt ? p.name : null,
    uniqueGuid: gpt ? p.uniqueGuid : null,
    attributes: p.attributes,
    fileSystem: p.extended ? null : fsKinds.has(p.fs) ? (p.fs as FileSystemKind) : 'unknown',
    bootable: p.bootable,
    extended: p.extended,
    logical: p.logical,
    truncated: p.truncated,
  };
}

/** Converts the addon's answer (exported for the image planner, which may already hold one). */
export function toPartitionTable(t: NativePartitionTable): PartitionTable {
  return {
    kind: t.kind,
    sectorSize: t.sectorSize,
    diskSize: t.diskSize,
    diskGuid: t.kind === 'gpt' ? t.diskGuid : null,
    mbrSignature: t.kind === 'none' ? null : t.mbrSignature,
    gptBackupUsed: t.gptBackupUsed,
    partitions: t.partitions.map((p) => toPartition(t.kind, p)),
    warnings: t.warnings,
  };
}

/**
 * Reads the partition table of a disk image or block device (read-only);
 * with `format` 'qcow2' (or 'auto' on a qcow2 file), of its guest disk.
 * A disk with a file system and no table ("superfloppy") gives kind 'none'
 * and one partition with index 0 covering the whole disk.
 * Throws LowtideError PARTITION_CORRUPT for an unusable table
 * (e.g. a protective MBR without any valid GPT header, a looping EBR chain).
 */
export async function readPartitions(
  path: string,
  options: { format?: DiskFormat | undefined } = {},
): Promise<PartitionTable> {
  stringOption('path', path);
  const format = formatOption('options.format', objectOption('options', options).format);
  let t: NativePartitionTable;
  try {
    t = await fsNative.readPartitions(path, format);
  } catch (err) {
    throw toLowtideError(err, 'PARTITION_CORRUPT');
  }
  return toPartitionTable(t);
}
