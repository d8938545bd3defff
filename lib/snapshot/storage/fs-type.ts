/** The name of the file system a path is on, from statfs(2)'s magic number. */
import { statfs } from 'node:fs/promises';

const MAGIC: ReadonlyMap<number, string> = new Map([
  [0x58465342, 'xfs'],
  [0x9123683e, 'btrfs'],
  [0xef53, 'ext2/3/4'],
  [0x01021994, 'tmpfs'],
  [0x6969, 'nfs'],
  [0x65735546, 'fuse'],
  [0x794c7630, 'overlayfs'],
  [0x2fc12fc1, 'zfs'],
  [0x4d44, 'vfat'],
  [0x5346544e, 'ntfs'],
  [0xf15f, 'ecryptfs'],
  [0x858458f6, 'ramfs'],
]);

export async function fileSystemName(path: string): Promise<string> {
  const s = await statfs(path);
  return MAGIC.get(Number(s.type)) ?? `unknown file system 0x${Number(s.type).toString(16)}`;
}
