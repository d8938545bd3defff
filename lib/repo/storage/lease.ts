/**
 * Leases: how writers of a remote repository exclude each other without a
 * server of ours (docs/repository-format.md, "Many writers").
 *
 * - Every backup writes `locks/backup-<random>.json` and rewrites it every
 *   HEARTBEAT_MS while it runs; it deletes it when it ends. Backups do not
 *   exclude each other.
 * - prune creates `locks/prune.json` with If-None-Match: * (one prune at a
 *   time), rewrites it every HEARTBEAT_MS, and deletes it when it ends.
 * - Both write their own object first and then look for the other kind: a
 *   backup that finds a live prune lock gives up (REPO_LOCKED); a prune that
 *   finds a live backup lease deletes backups but no chunk. Since each writes
 *   before it reads (and S3 reads see every completed write), at least one of
 *   a backup and a prune that overlap sees the other.
 * - A lease not rewritten for STALE_MS (by the storage's clock, compared with
 *   the time of the object the reader has just written) belongs to a process
 *   that died; it is ignored, and prune deletes it. A writer that could not
 *   renew its own lease for STALE_MS / 2 stops before it commits anything.
 */
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { LowtideError } from '../../errors.js';
import type { ObjectStorage, StoredObject } from './types.js';

export const HEARTBEAT_MS = 30_000;
export const STALE_MS = 5 * 60_000;
export const PRUNE_LOCK_KEY = 'locks/prune.json';
export const BACKUP_LEASE_PREFIX = 'locks/backup-';
const LEASE_NAME = /^locks\/backup-[0-9a-f]{16}\.json$/;

/** A writer's hold on a repository (local flocks and lease files, or a remote lease). */
export interface RepoLock {
  /** Temporary files a writer that did not finish had left, removed when the lock was taken. */
  staleFilesRemoved: { files: number; bytes: number };
  /** prune: the backups running when the prune lock was taken; prune then deletes no chunk. */
  runningBackups: string[];
  /** Throws when the hold can no longer be trusted (a remote lease that could not be renewed). */
  check(): void;
  release(): Promise<void>;
}

export class RemoteLock implements RepoLock {
  staleFilesRemoved = { files: 0, bytes: 0 };
  runningBackups: string[] = [];
  #timer: NodeJS.Timeout | undefined;
  #lastRenewed = Date.now();
  #released = false;
  #beforeRelease: (() => Promise<void>) | undefined;

  constructor(
    private readonly storage: ObjectStorage,
    readonly key: string,
    private readonly body: () => Buffer,
  ) {}

  start(): void {
    this.#lastRenewed = Date.now();
    this.#timer = setInterval(() => {
      const t = Date.now();
      this.storage.put(this.key, this.body()).then(
        () => {
          this.#lastRenewed = t;
        },
        () => undefined,
      );
    }, HEARTBEAT_MS);
    this.#timer.unref();
  }

  check(): void {
    const since = Date.now() - this.#lastRenewed;
    if (since > STALE_MS / 2) {
      throw new LowtideError(
        'REPO_LOCKED',
        `the lease ${this.key} in ${this.storage.location} could not be renewed for ${Math.round(since / 1000)} s; another writer may have taken it as dead, so nothing is committed`,
      );
    }
  }

  /** Work to finish while the lease is still held (a failure there is ignored). */
  beforeRelease(fn: () => Promise<void>): void {
    this.#beforeRelease = fn;
  }

  async release(): Promise<void> {
    if (this.#released) return;
    this.#released = true;
    await this.#beforeRelease?.().catch(() => undefined);
    clearInterval(this.#timer);
    await this.storage.delete([this.key]).catch(() => undefined);
  }
}

function fresh(o: StoredObject, now: Date): boolean {
  return now.getTime() - o.modified.getTime() < STALE_MS;
}

async function describeHolder(storage: ObjectStorage, key: string): Promise<string> {
  try {
    const data = await storage.get(key, undefined, 64 * 1024);
    const info = JSON.parse(data?.toString('utf8') ?? '') as {
      pid: number;
      host: string;
      purpose: string;
      since: string;
    };
    return `${info.purpose} (pid ${info.pid} on ${info.host}, since ${info.since})`;
  } catch {
    return 'another process';
  }
}

/** The storage's time now: the time of an object just written. */
async function storageNow(storage: ObjectStorage, key: string): Promise<Date> {
  return (await storage.head(key))?.modified ?? new Date();
}

export async function acquireRemoteLock(
  storage: ObjectStorage,
  purpose: string,
  kind: 'backup' | 'prune',
): Promise<RemoteLock> {
  const since = new Date().toISOString();
  const body = (): Buffer =>
    Buffer.from(
      JSON.stringify({ pid: process.pid, host: hostname(), purpose, since, renewed: new Date().toISOString() }) + '\n',
    );
  if (kind === 'backup') {
    const lock = new RemoteLock(storage, `${BACKUP_LEASE_PREFIX}${randomBytes(8).toString('hex')}.json`, body);
    await storage.put(lock.key, body());
    try {
      const [now, prune] = await Promise.all([storageNow(storage, lock.key), storage.head(PRUNE_LOCK_KEY)]);
      if (prune && fresh(prune, now)) {
        throw new LowtideError(
          'REPO_LOCKED',
          `the repository ${storage.location} is being pruned by ${await describeHolder(storage, PRUNE_LOCK_KEY)}`,
        );
      }
    } catch (err) {
      await lock.release();
      throw err;
    }
    lock.start();
    return lock;
  }
  const lock = new RemoteLock(storage, PRUNE_LOCK_KEY, body);
  let taken = await storage.putIfAbsent(PRUNE_LOCK_KEY, body());
  if (!taken) {
    const held = await storage.head(PRUNE_LOCK_KEY);
    // A prune lock that is not renewed belongs to a prune that died: compare
    // its time with the storage's time now (a probe object written and removed).
    const probe = `locks/probe-${randomBytes(8).toString('hex')}`;
    await storage.put(probe, Buffer.alloc(0));
    const now = await storageNow(storage, probe);
    await storage.delete([probe]);
    if (held && fresh(held, now)) {
      throw new LowtideError(
        'REPO_LOCKED',
        `the repository ${storage.location} is being pruned by ${await describeHolder(storage, PRUNE_LOCK_KEY)}`,
      );
    }
    await storage.delete([PRUNE_LOCK_KEY]);
    taken = await storage.putIfAbsent(PRUNE_LOCK_KEY, body());
    if (!taken) {
      throw new LowtideError('REPO_LOCKED', `the repository ${storage.location} is being pruned by another process`);
    }
  }
  try {
    const now = await storageNow(storage, PRUNE_LOCK_KEY);
    const stale: string[] = [];
    for await (const o of storage.list(BACKUP_LEASE_PREFIX)) {
      if (!LEASE_NAME.test(o.key)) continue;
      if (fresh(o, now)) lock.runningBackups.push(await describeHolder(storage, o.key));
      else stale.push(o.key);
    }
    // Leases of backups that died: nobody renews them any more.
    await storage.delete(stale);
  } catch (err) {
    await lock.release();
    throw err;
  }
  lock.start();
  return lock;
}
