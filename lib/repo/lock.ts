/**
 * One writer at a time. The writer holds an exclusive flock(2) on
 * locks/write.lock for as long as it runs; the kernel drops the lock when the
 * process dies, however it dies, so a dead holder never blocks the next writer.
 * The file's content (host, PID, purpose, time) is for the error message, and
 * it tells the next holder whether the last one ended cleanly: a clean release
 * empties the file, so content found when the lock is taken was left by a
 * holder that died (or could not finish its release).
 *
 * The descriptor is a plain fd, not a FileHandle: a FileHandle that becomes
 * unreachable is closed by the garbage collector, which would drop the flock
 * while its holder still runs. A lock lasts until release() or process exit
 * (libuv opens every file with O_CLOEXEC, so child processes do not inherit it).
 */
import { close, constants as fsc, fstat, ftruncate, open, read, write } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { LowtideError } from '../errors.js';
import { native } from '../native.js';
import { checkDirectory, fileKind, repoWriteError } from './files.js';
import { LOCK_FILE, LOCKS_DIR } from './format.js';

const openFd = promisify(open);
const closeFd = promisify(close);
const fstatFd = promisify(fstat);
const truncateFd = promisify(ftruncate);
const readFd = promisify(read);
const writeFd = promisify(write) as (fd: number, data: string, position: number) => Promise<unknown>;

export class WriteLock {
  #fd: number | undefined;
  #beforeRelease: (() => Promise<void>) | undefined;
  /** Temporary files left in tmp/ by a writer that did not finish, removed when this lock was taken. */
  staleFilesRemoved = { files: 0, bytes: 0 };
  constructor(
    readonly path: string,
    fd: number,
    /** What a holder that did not release cleanly left in the lock file, if anything. */
    readonly staleHolder?: string,
  ) {
    this.#fd = fd;
  }
  /** A flock stays valid while the descriptor is open: nothing to check. */
  check(): void {}
  /** Work to finish before the lock is dropped; if it fails, the file keeps its content (see staleHolder). */
  beforeRelease(fn: () => Promise<void>): void {
    this.#beforeRelease = fn;
  }
  async release(): Promise<void> {
    const fd = this.#fd;
    this.#fd = undefined;
    if (fd === undefined) return;
    const clean = this.#beforeRelease
      ? await this.#beforeRelease().then(
          () => true,
          () => false,
        )
      : true;
    if (clean) await truncateFd(fd, 0).catch(() => undefined);
    await closeFd(fd); // closing the last descriptor drops the flock
  }
  /** Drops the lock but leaves the file's content, so the next holder treats this end as unclean. */
  async abandon(): Promise<void> {
    const fd = this.#fd;
    this.#fd = undefined;
    if (fd !== undefined) await closeFd(fd);
  }
}

/** Lock files larger than this are not a holder's note: refused as damaged. */
const MAX_LOCK_FILE = 64 * 1024;

/**
 * Opens locks/write.lock, creating it if missing, and only as a regular file
 * with one name, in a locks/ that is a directory: never through a symbolic
 * link, never a FIFO or device (no wait), never a hard link to a file
 * elsewhere (the lock file is truncated; that must not truncate anything
 * outside the repository).
 */
async function openLockFile(repoPath: string): Promise<{ fd: number; path: string }> {
  const dir = join(repoPath, LOCKS_DIR);
  const path = join(dir, LOCK_FILE);
  try {
    await checkDirectory(dir, 'the lock directory', 'REPO_CORRUPT');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new LowtideError('REPO_CORRUPT', `the repository ${repoPath} has no ${LOCKS_DIR}/ directory`, {
        path: dir,
      });
    }
    throw repoWriteError(err, `checking ${dir}`);
  }
  let fd: number;
  try {
    fd = await openFd(path, fsc.O_RDWR | fsc.O_CREAT | fsc.O_NOFOLLOW | fsc.O_NONBLOCK, 0o644);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ELOOP') {
      throw new LowtideError(
        'REPO_CORRUPT',
        `the writer lock ${path} is a symbolic link; lowtide follows no links inside a repository (remove it)`,
        { path },
      );
    }
    throw repoWriteError(err, `opening ${path}`);
  }
  let problem: string | undefined;
  try {
    const st = await fstatFd(fd);
    if (!st.isFile()) problem = `is ${fileKind(st)}, not a regular file`;
    else if (st.nlink !== 1) problem = `has ${st.nlink} names (hard links); it must have only its own`;
    else if (st.size > MAX_LOCK_FILE) problem = `has ${st.size} bytes; a lock file holds one line`;
  } catch (err) {
    await closeFd(fd);
    throw repoWriteError(err, `checking ${path}`);
  }
  if (problem !== undefined) {
    await closeFd(fd);
    throw new LowtideError('REPO_CORRUPT', `the writer lock ${path} ${problem} (remove it)`, { path });
  }
  return { fd, path };
}

async function readContent(fd: number): Promise<string> {
  const buf = Buffer.alloc(MAX_LOCK_FILE);
  const { bytesRead } = await readFd(fd, buf, 0, buf.length, 0);
  return buf.subarray(0, bytesRead).toString('utf8');
}

export async function acquireWriteLock(repoPath: string, purpose: string): Promise<WriteLock> {
  const { fd, path } = await openLockFile(repoPath);
  let locked: boolean;
  try {
    locked = native.tryLockExclusive(fd);
  } catch (err) {
    await closeFd(fd);
    throw err;
  }
  if (!locked) {
    let holder = 'another process';
    try {
      const info = JSON.parse(await readContent(fd)) as { pid: number; host: string; purpose: string; since: string };
      holder = `${info.purpose} (pid ${info.pid} on ${info.host}, since ${info.since})`;
    } catch {
      /* the holder has not written its details yet */
    }
    await closeFd(fd);
    throw new LowtideError('REPO_LOCKED', `the repository is in use by ${holder}`, { path });
  }
  let staleHolder: string | undefined;
  try {
    const previous = await readContent(fd);
    if (previous.length > 0) staleHolder = previous;
    await truncateFd(fd, 0);
    await writeFd(
      fd,
      JSON.stringify({ pid: process.pid, host: hostname(), purpose, since: new Date().toISOString() }),
      0,
    );
  } catch (err) {
    await closeFd(fd);
    throw repoWriteError(err, `writing ${path}`);
  }
  return new WriteLock(path, fd, staleHolder);
}
