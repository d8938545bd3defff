/**
 * One writer at a time. The writer holds an exclusive flock(2) on
 * locks/write.lock for as long as it runs; the kernel drops the lock when the
 * process dies, however it dies, so a dead holder never blocks the next writer.
 * The file's content (host, PID, purpose, time) is only for the error message.
 */
import { constants as fsc } from 'node:fs';
import { open, readFile, type FileHandle } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { LowtideError } from '../errors.js';
import { native } from '../native.js';
import { repoWriteError } from './files.js';

export class WriteLock {
  #fh: FileHandle | undefined;
  constructor(
    readonly path: string,
    fh: FileHandle,
  ) {
    this.#fh = fh;
  }
  async release(): Promise<void> {
    const fh = this.#fh;
    this.#fh = undefined;
    if (!fh) return;
    await fh.truncate(0).catch(() => undefined);
    await fh.close(); // closing the last descriptor drops the flock
  }
}

export async function acquireWriteLock(repoPath: string, purpose: string): Promise<WriteLock> {
  const path = join(repoPath, 'locks', 'write.lock');
  let fh: FileHandle;
  try {
    fh = await open(path, fsc.O_RDWR | fsc.O_CREAT, 0o644);
  } catch (err) {
    throw repoWriteError(err, `opening ${path}`);
  }
  let locked = false;
  try {
    locked = native.tryLockExclusive(fh.fd);
  } catch (err) {
    await fh.close();
    throw err;
  }
  if (!locked) {
    await fh.close();
    let holder = 'another process';
    try {
      const info = JSON.parse(await readFile(path, 'utf8')) as { pid: number; host: string; purpose: string; since: string };
      holder = `${info.purpose} (pid ${info.pid} on ${info.host}, since ${info.since})`;
    } catch {
      /* the holder has not written its details yet */
    }
    throw new LowtideError('REPO_LOCKED', `the repository is in use by ${holder}`, { path });
  }
  try {
    await fh.truncate(0);
    await fh.write(JSON.stringify({ pid: process.pid, host: hostname(), purpose, since: new Date().toISOString() }), 0);
  } catch (err) {
    await fh.close();
    throw repoWriteError(err, `writing ${path}`);
  }
  return new WriteLock(path, fh);
}
