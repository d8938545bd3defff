/**
 * The `reflink` storage snapshot: a FICLONE clone of each frozen file into a
 * hidden directory beside it (`.lowtide-snapshot-<id>/`, same directory, so
 * the same file system). Takes milliseconds on XFS made with `-m reflink=1`
 * and on btrfs; other file systems are refused by check() before any VM
 * snapshot is taken.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open, rmdir, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { LowtideError, toLowtideError } from '../../errors.js';
import { native } from '../../native.js';
import { fileSystemName } from './fs-type.js';
import type { StorageSnapshot, StorageSnapshotHandle, StorageSnapshotProvider } from './types.js';

export const SNAPSHOT_DIR_PREFIX = '.lowtide-snapshot-';

async function ignoreMissing(p: Promise<unknown>): Promise<void> {
  try {
    await p;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}

async function syncDirectory(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

export class ReflinkStorage implements StorageSnapshotProvider {
  readonly kind = 'reflink' as const;

  async check(files: readonly string[]): Promise<void> {
    for (const dir of new Set(files.map((f) => dirname(f)))) {
      const probe = join(dir, `.lowtide-probe-${process.pid}-${randomBytes(6).toString('hex')}`);
      const clone = `${probe}.clone`;
      try {
        const fh = await open(probe, 'wx', 0o600);
        try {
          await fh.write(Buffer.alloc(4096, 0x5a), 0, 4096, 0);
        } finally {
          await fh.close();
        }
        await native.cloneFile(probe, clone);
      } catch (err) {
        const e = toLowtideError(err, 'IO_ERROR');
        // The file system refused the ioctl (an errno); not, say, an addon that failed to load.
        if (e.code === 'UNSUPPORTED' && e.errno !== undefined) {
          const fs = await fileSystemName(dir).catch(() => 'an unknown file system');
          throw new LowtideError(
            'UNSUPPORTED',
            `storage reflink: ${dir} is on ${fs}, which cannot clone files (FICLONE); ` +
              'reflink needs XFS made with reflink=1 or btrfs',
            { cause: err, path: dir },
          );
        }
        throw new LowtideError(e.code, `storage reflink: cannot test cloning in ${dir}: ${e.message}`, {
          cause: err,
          path: dir,
        });
      } finally {
        await unlink(clone).catch(() => undefined);
        await unlink(probe).catch(() => undefined);
      }
    }
  }

  async plan(files: readonly string[], id: string): Promise<StorageSnapshotHandle> {
    const paths: Record<string, string> = {};
    const locations = new Set<string>();
    for (const f of files) {
      const dir = join(dirname(f), `${SNAPSHOT_DIR_PREFIX}${id}`);
      locations.add(dir);
      paths[f] = join(dir, basename(f));
    }
    return { kind: 'reflink', id, paths, locations: [...locations] };
  }

  async create(handle: StorageSnapshotHandle): Promise<StorageSnapshot> {
    try {
      for (const dir of handle.locations) await mkdir(dir, { mode: 0o700 });
      for (const [file, clone] of Object.entries(handle.paths)) await native.cloneFile(file, clone);
      for (const dir of handle.locations) await syncDirectory(dir);
      for (const dir of new Set(handle.locations.map((d) => dirname(d)))) await syncDirectory(dir);
    } catch (err) {
      await this.delete(handle).catch(() => undefined);
      throw toLowtideError(err, 'IO_ERROR', 'storage reflink: taking the snapshot');
    }
    return { handle, paths: { ...handle.paths } };
  }

  async delete(handle: StorageSnapshotHandle): Promise<void> {
    try {
      for (const clone of Object.values(handle.paths)) await ignoreMissing(unlink(clone));
      for (const dir of handle.locations) await ignoreMissing(rmdir(dir));
    } catch (err) {
      throw toLowtideError(err, 'IO_ERROR', 'storage reflink: deleting the snapshot');
    }
  }

  describe(handle: StorageSnapshotHandle): string {
    return `reflink clones in ${handle.locations.join(', ')}`;
  }
}
