/**
 * The `btrfs` storage snapshot: a read-only snapshot of the subvolume that
 * holds the frozen files (`btrfs subvolume snapshot -r`), placed inside that
 * subvolume as `.lowtide-snapshot-<id>`, deleted with
 * `btrfs subvolume delete`. One snapshot per subvolume the files are on.
 */
import { execFile } from 'node:child_process';
import { lstat, stat } from 'node:fs/promises';
import { dirname, join, relative } from 'node:path';
import { promisify } from 'node:util';
import { LowtideError } from '../../errors.js';
import { fileSystemName } from './fs-type.js';
import { SNAPSHOT_DIR_PREFIX } from './reflink.js';
import type { StorageSnapshot, StorageSnapshotHandle, StorageSnapshotProvider } from './types.js';

const run = promisify(execFile);

/** The inode number of every btrfs subvolume's root directory. */
const SUBVOLUME_ROOT_INODE = 256;

async function btrfs(args: string[], what: string): Promise<void> {
  try {
    await run('btrfs', args, { timeout: 120_000 });
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: string };
    if (e.code === 'ENOENT') throw new LowtideError('UNSUPPORTED', `storage btrfs: the btrfs command is not installed`);
    throw new LowtideError('IO_ERROR', `storage btrfs: ${what}: ${(e.stderr ?? e.message).trim()}`, { cause: err });
  }
}

/** The root directory of the btrfs subvolume that holds `file`. */
async function subvolumeRoot(file: string): Promise<string> {
  let dir = dirname(file);
  const dev = (await stat(dir)).dev;
  for (;;) {
    const s = await stat(dir);
    if (s.dev !== dev) break;
    if (s.ino === SUBVOLUME_ROOT_INODE) return dir;
    const up = dirname(dir);
    if (up === dir) break;
    dir = up;
  }
  throw new LowtideError('UNSUPPORTED', `storage btrfs: no btrfs subvolume root above ${file}`, { path: file });
}

async function exists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch {
    return false;
  }
}

export class BtrfsStorage implements StorageSnapshotProvider {
  readonly kind = 'btrfs' as const;

  async check(files: readonly string[]): Promise<void> {
    for (const f of files) {
      const fs = await fileSystemName(f);
      if (fs !== 'btrfs')
        throw new LowtideError('UNSUPPORTED', `storage btrfs: ${f} is on ${fs}, not btrfs`, { path: f });
      await subvolumeRoot(f);
    }
    await btrfs(['--version'], 'checking the btrfs command');
  }

  async plan(files: readonly string[], id: string): Promise<StorageSnapshotHandle> {
    const paths: Record<string, string> = {};
    const locations = new Set<string>();
    for (const f of files) {
      const root = await subvolumeRoot(f);
      const snap = join(root, `${SNAPSHOT_DIR_PREFIX}${id}`);
      locations.add(snap);
      paths[f] = join(snap, relative(root, f));
    }
    return { kind: 'btrfs', id, paths, locations: [...locations] };
  }

  async create(handle: StorageSnapshotHandle): Promise<StorageSnapshot> {
    try {
      for (const snap of handle.locations)
        await btrfs(['subvolume', 'snapshot', '-r', dirname(snap), snap], 'snapshot');
    } catch (err) {
      await this.delete(handle).catch(() => undefined);
      throw err;
    }
    return { handle, paths: { ...handle.paths } };
  }

  async delete(handle: StorageSnapshotHandle): Promise<void> {
    for (const snap of handle.locations) {
      if (await exists(snap)) await btrfs(['subvolume', 'delete', snap], `deleting ${snap}`);
    }
  }

  describe(handle: StorageSnapshotHandle): string {
    return `btrfs read-only snapshots ${handle.locations.join(', ')}`;
  }
}
