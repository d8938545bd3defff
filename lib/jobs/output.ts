/**
 * Files a job writes whole: written under a temporary name beside the target,
 * synced, then renamed over it, so that the target appears complete or not
 * at all.
 */
import { randomBytes } from 'node:crypto';
import { constants as fsc } from 'node:fs';
import { open, rename, unlink, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { toLowtideError, type LowtideError } from '../errors.js';
import { syncDir } from '../repo/files.js';

/** A write that failed, as NO_SPACE when the file system is full, else WRITE_FAILED. */
export function writeError(err: unknown, context: string): LowtideError {
  const code = (err as NodeJS.ErrnoException).code;
  return toLowtideError(err, code === 'ENOSPC' || code === 'EDQUOT' ? 'NO_SPACE' : 'WRITE_FAILED', context);
}

/** A new file under a temporary name beside `target`, renamed over it by commit(). */
export class PartialFile {
  readonly target: string;
  /** The temporary name: `.NAME.RANDOM.lowtide-partial` in the target's directory. */
  readonly path: string;
  #handle: FileHandle | undefined;
  #renamed = false;

  private constructor(target: string, path: string, handle: FileHandle) {
    this.target = target;
    this.path = path;
    this.#handle = handle;
  }

  /** Creates the temporary file (mode 0644); `randomLength` random bytes make its name unique. */
  static async create(target: string, randomLength = 6): Promise<PartialFile> {
    const path = join(
      dirname(target),
      `.${basename(target)}.${randomBytes(randomLength).toString('hex')}.lowtide-partial`,
    );
    return new PartialFile(target, path, await open(path, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, 0o644));
  }

  /** The open file; only until commit(). */
  get handle(): FileHandle {
    if (this.#handle === undefined) throw new Error(`${this.path} is closed`);
    return this.#handle;
  }

  /**
   * Syncs and closes the file and renames it over the target; with
   * `syncDirectory`, then syncs the directory, so that the rename is durable.
   */
  async commit(options: { syncDirectory: boolean }): Promise<void> {
    const h = this.handle;
    await h.sync();
    await h.close();
    this.#handle = undefined;
    await rename(this.path, this.target);
    this.#renamed = true;
    if (options.syncDirectory) await syncDir(dirname(this.target));
  }

  /** Closes the file if it is open and removes it unless commit() renamed it; never throws. */
  async discard(): Promise<void> {
    await this.#handle?.close().catch(() => undefined);
    this.#handle = undefined;
    if (!this.#renamed) await unlink(this.path).catch(() => undefined);
  }
}
