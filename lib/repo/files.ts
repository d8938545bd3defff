/**
 * Durable file operations for the repository: every write goes to a
 * temporary file, is synced, renamed into place, and the directory synced.
 */
import { randomBytes } from 'node:crypto';
import { constants as fsc, type Stats } from 'node:fs';
import { lstat, open, rename, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { LowtideError, toLowtideError, type ErrorCode } from '../errors.js';

/** ENOSPC/EDQUOT → REPO_FULL; anything else → `fallback`. */
export function repoWriteError(err: unknown, what: string, fallback: ErrorCode = 'WRITE_FAILED'): LowtideError {
  if (err instanceof LowtideError) return err;
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ENOSPC' || code === 'EDQUOT') {
    return new LowtideError('REPO_FULL', `the repository's file system is full (${what})`, { cause: err });
  }
  return toLowtideError(err, fallback, what);
}

/** What a file system object is, for messages ("a symbolic link", "a FIFO", ...). */
export function fileKind(st: Stats): string {
  if (st.isFile()) return 'a regular file';
  if (st.isDirectory()) return 'a directory';
  if (st.isSymbolicLink()) return 'a symbolic link';
  if (st.isFIFO()) return 'a FIFO';
  if (st.isSocket()) return 'a socket';
  if (st.isBlockDevice()) return 'a block device';
  if (st.isCharacterDevice()) return 'a character device';
  return 'not a regular file';
}

/**
 * Opens a file inside the repository for reading, and only a regular file:
 * never through a symbolic link in its last component (O_NOFOLLOW), never
 * blocking on a FIFO or a device (O_NONBLOCK, then fstat), and at most
 * `maxBytes` long. A wrong kind of file or size is a LowtideError with `code`
 * whose message names `what` and the path; errors from the OS (ENOENT, EIO,
 * ...) are passed on as they are, for the caller to name.
 */
export async function openRegularFile(
  path: string,
  what: string,
  code: ErrorCode,
  maxBytes = Number.MAX_SAFE_INTEGER,
): Promise<{ fh: FileHandle; size: number }> {
  let fh: FileHandle;
  try {
    fh = await open(path, fsc.O_RDONLY | fsc.O_NOFOLLOW | fsc.O_NONBLOCK);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ELOOP') {
      throw new LowtideError(
        code,
        `${what} (${path}) is a symbolic link; lowtide follows no links inside a repository`,
        { path, cause: err },
      );
    }
    throw err;
  }
  try {
    const st = await fh.stat();
    if (!st.isFile())
      throw new LowtideError(code, `${what} (${path}) is ${fileKind(st)}, not a regular file`, { path });
    if (st.size > maxBytes)
      throw new LowtideError(code, `${what} (${path}) has ${st.size} bytes, more than the ${maxBytes} it may have`, {
        path,
      });
    return { fh, size: st.size };
  } catch (err) {
    await fh.close();
    throw err;
  }
}

/**
 * Checks that `path` is a directory itself, not a symbolic link to one (the
 * directories of a repository are never links, so nothing lowtide writes or
 * deletes in them can land outside it). ENOENT and other OS errors are passed on.
 */
export async function checkDirectory(path: string, what: string, code: ErrorCode): Promise<void> {
  const st = await lstat(path);
  if (!st.isDirectory()) {
    const why = st.isSymbolicLink() ? '; lowtide follows no links inside a repository' : '';
    throw new LowtideError(code, `${what} (${path}) is ${fileKind(st)}, not a directory${why}`, { path });
  }
}

export async function syncDir(dir: string): Promise<void> {
  const h = await open(dir, fsc.O_RDONLY | fsc.O_DIRECTORY);
  try {
    await h.sync();
  } finally {
    await h.close();
  }
}

/**
 * Writes all of `parts` from `position` on. A write that fills the file system
 * can return short without an error; writing the rest then fails with ENOSPC.
 */
export async function writeFully(fh: FileHandle, parts: readonly Uint8Array[], position: number): Promise<void> {
  const total = parts.reduce((n, p) => n + p.length, 0);
  let done = parts.length === 1 ? 0 : (await fh.writev(parts as Uint8Array[], position)).bytesWritten;
  let skip = done;
  for (const part of parts) {
    if (skip >= part.length) {
      skip -= part.length;
      continue;
    }
    let offset = skip;
    skip = 0;
    while (offset < part.length) {
      const { bytesWritten } = await fh.write(part, offset, part.length - offset, position + done);
      if (bytesWritten === 0)
        throw new LowtideError('WRITE_FAILED', `a write made no progress at offset ${position + done}`);
      offset += bytesWritten;
      done += bytesWritten;
    }
  }
  if (done !== total) throw new LowtideError('INTERNAL', `wrote ${done} of ${total} bytes`);
}

/** The names tempName() makes: only files named so are removed from tmp/. */
export const TEMP_NAME_PATTERN = /^[a-z]+\.\d+\.[0-9a-f]{12}\.tmp$/;

export function tempName(tmpDir: string, hint: string): string {
  return join(tmpDir, `${hint}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
}

/** Writes `parts` to `finalPath` atomically. The directory is synced unless syncDirectory is false (the caller batches it). */
export async function writeAtomic(
  tmpDir: string,
  finalPath: string,
  parts: readonly Uint8Array[],
  options: { syncDirectory?: boolean; dir?: string } = {},
): Promise<void> {
  const tmp = tempName(tmpDir, 'w');
  let fh: FileHandle | undefined;
  let done = false;
  try {
    fh = await open(tmp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, 0o644);
    await writeFully(fh, parts, 0);
    await fh.sync();
    await fh.close();
    fh = undefined;
    await rename(tmp, finalPath);
    done = true;
    if (options.syncDirectory !== false && options.dir) await syncDir(options.dir);
  } catch (err) {
    throw repoWriteError(err, `writing ${finalPath}`);
  } finally {
    if (fh) await fh.close().catch(() => undefined);
    if (!done) await unlink(tmp).catch(() => undefined);
  }
}

/** A whole small file inside the repository as UTF-8: a regular file, not a link, at most maxBytes. */
export async function readSmallFile(path: string, what: string, code: ErrorCode, maxBytes: number): Promise<string> {
  return (await readSmallBytes(path, what, code, maxBytes)).toString('utf8');
}

/** readSmallFile() as bytes. */
export async function readSmallBytes(path: string, what: string, code: ErrorCode, maxBytes: number): Promise<Buffer> {
  const { fh, size } = await openRegularFile(path, what, code, maxBytes);
  try {
    const buf = Buffer.allocUnsafe(size);
    let done = 0;
    while (done < size) {
      const { bytesRead } = await fh.read(buf, done, size - done, done);
      if (bytesRead === 0) break;
      done += bytesRead;
    }
    return buf.subarray(0, done);
  } finally {
    await fh.close();
  }
}

/**
 * Reads a whole file into `buf`; returns its size. A file larger than `buf`
 * returns its true size (from fstat) after filling `buf`, so the caller can
 * tell it did not fit.
 */
export async function readWhole(path: string, buf: Buffer, what: string): Promise<number> {
  const { fh, size } = await openRegularFile(path, what, 'CHUNK_CORRUPT');
  try {
    const want = Math.min(size, buf.length);
    let done = 0;
    while (done < want) {
      const { bytesRead } = await fh.read(buf, done, want - done, done);
      if (bytesRead === 0) break;
      done += bytesRead;
    }
    return size > buf.length ? size : done;
  } finally {
    await fh.close();
  }
}
