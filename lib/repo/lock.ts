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
import { close, constants as fsc, ftruncate, open, read, write } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { LowtideError } from '../errors.js';
import { native } from '../native.js';
import { repoWriteError } from './files.js';

const openFd = promisify(open);
const closeFd = promisify(close);
const truncateFd = promisify(ftruncate);
const readFd = promisify(read);
const writeFd = promisify(write) as (fd: number, data: string, position: number) => Promise<unknown>;

export class WriteLock {
  #fd: number | undefined;
  #beforeRelease: (() => Promise<void>) | undefined;
  constructor(
    readonly path: string,
    fd: number,
    /** What a holder that did not release cleanly left in the lock file, if anything. */
    readonly staleHolder?: string,
  ) {
    this.#fd = fd;
  }
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

export async function acquireWriteLock(repoPath: string, purpose: string): Promise<WriteLock> {
  const path = join(repoPath, 'locks', 'write.lock');
  let fd: number;
  try {
    fd = await openFd(path, fsc.O_RDWR | fsc.O_CREAT, 0o644);
  } catch (err) {
    throw repoWriteError(err, `opening ${path}`);
  }
  let locked: boolean;
  try {
    locked = native.tryLockExclusive(fd);
  } catch (err) {
    await closeFd(fd);
    throw err;
  }
  if (!locked) {
    await closeFd(fd);
    let holder = 'another process';
    try {
      const info = JSON.parse(await readFile(path, 'utf8')) as {
        pid: number;
        host: string;
        purpose: string;
        since: string;
      };
      holder = `${info.purpose} (pid ${info.pid} on ${info.host}, since ${info.since})`;
    } catch {
      /* the holder has not written its details yet */
    }
    throw new LowtideError('REPO_LOCKED', `the repository is in use by ${holder}`, { path });
  }
  let staleHolder: string | undefined;
  try {
    const previous = Buffer.alloc(4096);
    const bytesRead = (await readFd(fd, previous, 0, previous.length, 0)).bytesRead;
    if (bytesRead > 0) staleHolder = previous.subarray(0, bytesRead).toString('utf8');
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
