/**
 * Writers of a local repository (docs/repository-format.md, "Writers of a
 * local repository"): any number of backups at once, prune exclusive against
 * them, with flock(2) locks that the kernel drops when their holder dies,
 * however it dies.
 *
 * - A backup takes a shared flock on locks/write.lock, checks that no prune
 *   holds locks/prune.lock, and creates its lease locks/backup-<16 hex>.json
 *   (who it is), which it holds with an exclusive flock until it ends and
 *   then deletes. A lease whose flock nobody holds belongs to a backup that
 *   died: it is stale at once.
 * - prune takes an exclusive flock on locks/prune.lock (one prune at a time,
 *   and backups that start now are refused), then tries an exclusive flock
 *   on locks/write.lock. When it gets it no backup runs or can start: it
 *   prunes fully. When it does not, backups are running: it deletes backups
 *   but sweeps nothing (`runningBackups` names them), as on S3.
 * - An older lowtide takes an exclusive flock on locks/write.lock for both
 *   backup and prune, so it never runs beside a backup of this one.
 *
 * The content of a lock file (host, PID, purpose, time) is for messages, and
 * for write.lock it tells the next exclusive holder whether the last one
 * ended cleanly: a clean release empties it.
 *
 * Descriptors are plain fds, not FileHandles: a FileHandle that becomes
 * unreachable is closed by the garbage collector, which would drop the flock
 * while its holder still runs. A lock lasts until release() or process exit
 * (libuv opens every file with O_CLOEXEC, so child processes do not inherit it).
 */
import { randomBytes } from 'node:crypto';
import { close, constants as fsc, fstat, ftruncate, open, read, readdir, unlink, write } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { LowtideError } from '../errors.js';
import { native } from '../native.js';
import { checkDirectory, fileKind, repoWriteError } from './files.js';
import { LOCK_FILE, LOCKS_DIR, PRUNE_LOCK_FILE } from './format.js';
import type { RepoLock } from './storage/lease.js';

const openFd = promisify(open);
const closeFd = promisify(close);
const fstatFd = promisify(fstat);
const truncateFd = promisify(ftruncate);
const readFd = promisify(read);
const readDir = promisify(readdir);
const unlinkPath = promisify(unlink);
const writeFd = promisify(write) as (fd: number, data: string, position: number) => Promise<unknown>;

/** Lease file names of running backups in locks/. */
export const LEASE_FILE_PATTERN = /^backup-[0-9a-f]{16}\.json$/;

export class LocalLock implements RepoLock {
  #writeFd: number | undefined;
  #pruneFd: number | undefined;
  #leaseFd: number | undefined;
  #beforeRelease: (() => Promise<void>) | undefined;
  /** Temporary files left in tmp/ by writers that did not finish, removed when this lock was taken. */
  staleFilesRemoved = { files: 0, bytes: 0 };
  /** prune: the backups running when the prune lock was taken (prune then sweeps nothing). */
  runningBackups: string[] = [];
  /** prune: leases of backups that died, removed when the lock was taken. */
  staleLeases = 0;

  constructor(
    readonly kind: 'backup' | 'prune',
    fds: { write?: number | undefined; prune?: number | undefined; lease?: number | undefined },
    /** This backup's lease file. */
    readonly leasePath?: string,
    /** What an exclusive holder of write.lock that did not release cleanly left in it, if anything. */
    readonly staleHolder?: string,
  ) {
    this.#writeFd = fds.write;
    this.#pruneFd = fds.prune;
    this.#leaseFd = fds.lease;
  }

  /** True when this prune holds write.lock exclusively: no backup runs, chunks may be swept. */
  get exclusive(): boolean {
    return this.kind === 'prune' && this.#writeFd !== undefined;
  }

  /** A flock stays valid while the descriptor is open: nothing to check. */
  check(): void {}

  /** Work to finish before the lock is dropped; if it fails, write.lock keeps its content (see staleHolder). */
  beforeRelease(fn: () => Promise<void>): void {
    this.#beforeRelease = fn;
  }

  async release(): Promise<void> {
    const clean = this.#beforeRelease
      ? await this.#beforeRelease().then(
          () => true,
          () => false,
        )
      : true;
    this.#beforeRelease = undefined;
    await this.#drop(clean);
  }

  /** Drops the locks but leaves write.lock's content, so the next holder treats this end as unclean. */
  async abandon(): Promise<void> {
    await this.#drop(false);
  }

  async #drop(clean: boolean): Promise<void> {
    const lease = this.#leaseFd;
    const write = this.#writeFd;
    const prune = this.#pruneFd;
    this.#leaseFd = this.#writeFd = this.#pruneFd = undefined;
    if (lease !== undefined) {
      // Our own lease: its name was made here. Unlinked while still locked,
      // so a prune never sees it free before it is gone.
      if (this.leasePath !== undefined) await unlinkPath(this.leasePath).catch(() => undefined);
      await closeFd(lease).catch(() => undefined);
    }
    if (write !== undefined) {
      if (clean && this.kind === 'prune') await truncateFd(write, 0).catch(() => undefined);
      await closeFd(write).catch(() => undefined); // closing the last descriptor drops the flock
    }
    if (prune !== undefined) {
      if (clean) await truncateFd(prune, 0).catch(() => undefined);
      await closeFd(prune).catch(() => undefined);
    }
  }
}

/** Lock and lease files larger than this are not a holder's note: refused as damaged. */
const MAX_LOCK_FILE = 64 * 1024;

async function checkLocksDir(repoPath: string): Promise<string> {
  const dir = join(repoPath, LOCKS_DIR);
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
  return dir;
}

/**
 * Checks an open lock or lease file: a regular file with one name, small.
 * Closes the descriptor and throws REPO_CORRUPT naming it otherwise.
 */
async function checkOpened(fd: number, path: string, what: string): Promise<void> {
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
    throw new LowtideError('REPO_CORRUPT', `${what} ${path} ${problem} (remove it)`, { path });
  }
}

/**
 * Opens locks/<name> (write.lock, prune.lock), creating it if missing, and
 * only as a regular file with one name, in a locks/ that is a directory:
 * never through a symbolic link, never a FIFO or device (no wait), never a
 * hard link to a file elsewhere (a lock file is truncated; that must not
 * truncate anything outside the repository).
 */
async function openLockFile(repoPath: string, name: string): Promise<{ fd: number; path: string }> {
  const dir = await checkLocksDir(repoPath);
  const path = join(dir, name);
  const what = name === LOCK_FILE ? 'the writer lock' : 'the prune lock';
  let fd: number;
  try {
    fd = await openFd(path, fsc.O_RDWR | fsc.O_CREAT | fsc.O_NOFOLLOW | fsc.O_NONBLOCK, 0o644);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ELOOP') {
      throw new LowtideError(
        'REPO_CORRUPT',
        `${what} ${path} is a symbolic link; lowtide follows no links inside a repository (remove it)`,
        { path },
      );
    }
    throw repoWriteError(err, `opening ${path}`);
  }
  await checkOpened(fd, path, what);
  return { fd, path };
}

async function readContent(fd: number): Promise<string> {
  const buf = Buffer.alloc(MAX_LOCK_FILE);
  const { bytesRead } = await readFd(fd, buf, 0, buf.length, 0);
  return buf.subarray(0, bytesRead).toString('utf8');
}

/** Who holds a lock, from its file's note. */
async function describe(fd: number, fallback: string): Promise<string> {
  try {
    const info = JSON.parse(await readContent(fd)) as { pid: number; host: string; purpose: string; since: string };
    if (typeof info.purpose !== 'string') return fallback;
    return `${info.purpose} (pid ${info.pid} on ${info.host}, since ${info.since})`;
  } catch {
    return fallback; // the holder has not written its details yet
  }
}

function note(purpose: string): string {
  return JSON.stringify({ pid: process.pid, host: hostname(), purpose, since: new Date().toISOString() });
}

/** Writes this holder's note into a lock file it holds. */
async function writeNote(fd: number, path: string, purpose: string): Promise<void> {
  try {
    await truncateFd(fd, 0);
    await writeFd(fd, note(purpose), 0);
  } catch (err) {
    throw repoWriteError(err, `writing ${path}`);
  }
}

function tryLock(fd: number, shared: boolean): boolean {
  return shared ? native.tryLockShared(fd) : native.tryLockExclusive(fd);
}

/** Takes a flock or closes the descriptor; false when another holder has it. */
async function lockOrClose(fd: number, shared: boolean): Promise<boolean> {
  let locked: boolean;
  try {
    locked = tryLock(fd, shared);
  } catch (err) {
    await closeFd(fd);
    throw err;
  }
  return locked;
}

/**
 * A backup's hold: shared write.lock, no prune running, its own lease file.
 * REPO_LOCKED names the prune (or older lowtide writer) that excludes it.
 */
export async function acquireBackupLock(repoPath: string, purpose: string): Promise<LocalLock> {
  const write = await openLockFile(repoPath, LOCK_FILE);
  if (!(await lockOrClose(write.fd, true))) {
    const holder = await describe(write.fd, 'another process');
    await closeFd(write.fd);
    throw new LowtideError('REPO_LOCKED', `the repository is in use by ${holder}`, { path: write.path });
  }
  try {
    // A prune that holds prune.lock but not write.lock (backups were running
    // when it started) still refuses new backups. The probe's flock goes
    // with its descriptor.
    const prune = await openLockFile(repoPath, PRUNE_LOCK_FILE);
    const free = await lockOrClose(prune.fd, true);
    const holder = free ? '' : await describe(prune.fd, 'another process');
    await closeFd(prune.fd);
    if (!free) {
      throw new LowtideError('REPO_LOCKED', `the repository is being pruned by ${holder}`, { path: prune.path });
    }
    const leasePath = join(repoPath, LOCKS_DIR, `backup-${randomBytes(8).toString('hex')}.json`);
    let lease: number;
    try {
      // O_EXCL: never through a link, never an existing file.
      lease = await openFd(leasePath, fsc.O_RDWR | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW, 0o644);
    } catch (err) {
      throw repoWriteError(err, `creating ${leasePath}`);
    }
    try {
      if (!tryLock(lease, false)) throw new LowtideError('INTERNAL', `${leasePath} is locked by another process`);
      await writeNote(lease, leasePath, purpose);
    } catch (err) {
      await unlinkPath(leasePath).catch(() => undefined);
      await closeFd(lease);
      throw err;
    }
    return new LocalLock('backup', { write: write.fd, lease }, leasePath);
  } catch (err) {
    await closeFd(write.fd).catch(() => undefined);
    throw err;
  }
}

/**
 * prune's hold: exclusive prune.lock, then write.lock exclusively when no
 * backup runs. With write.lock, stale leases are removed (`staleLeases`);
 * without it, the live leases name the running backups.
 */
export async function acquirePruneLock(repoPath: string, purpose: string): Promise<LocalLock> {
  const prune = await openLockFile(repoPath, PRUNE_LOCK_FILE);
  if (!(await lockOrClose(prune.fd, false))) {
    const holder = await describe(prune.fd, 'another process');
    await closeFd(prune.fd);
    throw new LowtideError('REPO_LOCKED', `the repository is being pruned by ${holder}`, { path: prune.path });
  }
  let write: { fd: number; path: string };
  let exclusive: boolean;
  try {
    await writeNote(prune.fd, prune.path, purpose);
    write = await openLockFile(repoPath, LOCK_FILE);
    exclusive = await lockOrClose(write.fd, false);
  } catch (err) {
    await closeFd(prune.fd);
    throw err;
  }
  if (!exclusive) {
    const holder = await describe(write.fd, '');
    await closeFd(write.fd);
    const lock = new LocalLock('prune', { prune: prune.fd });
    try {
      lock.runningBackups = (await scanLeases(repoPath, false)).live;
    } catch (err) {
      await lock.abandon();
      throw err;
    }
    // A writer of an older lowtide holds write.lock exclusively (and writes
    // its note there); a backup between its flock and its lease has none yet.
    if (holder !== '') lock.runningBackups.push(holder);
    if (lock.runningBackups.length === 0) lock.runningBackups.push('a backup that is starting');
    return lock;
  }
  let staleHolder: string | undefined;
  try {
    const previous = await readContent(write.fd);
    if (previous.length > 0) staleHolder = previous;
    await writeNote(write.fd, write.path, purpose);
  } catch (err) {
    await closeFd(write.fd);
    await closeFd(prune.fd);
    throw repoWriteError(err, `writing ${write.path}`);
  }
  const lock = new LocalLock('prune', { write: write.fd, prune: prune.fd }, undefined, staleHolder);
  try {
    lock.staleLeases = (await scanLeases(repoPath, true)).stale;
  } catch (err) {
    await lock.abandon();
    throw err;
  }
  return lock;
}

/**
 * The lease files in locks/: `live` describes those whose flock is held (a
 * backup running), `stale` counts those whose holder died; with `remove`
 * (prune holding write.lock exclusively, so no backup is creating its lease
 * now) the stale ones are deleted. Only names of the lease pattern are
 * looked at; each is opened without following a link and must be a regular
 * file with one name (REPO_CORRUPT otherwise).
 */
export async function scanLeases(repoPath: string, remove: boolean): Promise<{ live: string[]; stale: number }> {
  const dir = await checkLocksDir(repoPath);
  const live: string[] = [];
  let stale = 0;
  let names: string[];
  try {
    names = (await readDir(dir)).filter((n) => LEASE_FILE_PATTERN.test(n)).sort();
  } catch (err) {
    throw repoWriteError(err, `listing ${dir}`);
  }
  for (const name of names) {
    const path = join(dir, name);
    let fd: number;
    try {
      fd = await openFd(path, fsc.O_RDONLY | fsc.O_NOFOLLOW | fsc.O_NONBLOCK);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') continue; // its backup ended meanwhile
      if (code === 'ELOOP') {
        throw new LowtideError(
          'REPO_CORRUPT',
          `the backup lease ${path} is a symbolic link; lowtide follows no links inside a repository (remove it)`,
          { path },
        );
      }
      throw repoWriteError(err, `opening ${path}`);
    }
    await checkOpened(fd, path, 'the backup lease');
    try {
      if (!native.tryLockShared(fd)) {
        live.push(await describe(fd, `a backup (lease ${name})`));
        continue;
      }
      stale++;
      // unlink removes the name only; it never follows a link.
      if (remove) await unlinkPath(path).catch(() => undefined);
    } finally {
      await closeFd(fd);
    }
  }
  return { live, stale };
}
