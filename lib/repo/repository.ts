/**
 * A backup repository in a local directory: config, content-addressed chunks,
 * backup manifests with their chunk indexes, the writer lock, temporary files.
 */
import type { VerifyOptions, VerifyReport, PruneOptions, PruneReport } from './maintenance.js';
import type { BackupExtractResult, ExtractFromBackupOptions, ListBackupFilesOptions } from '../jobs/files/backup.js';
import type { FileListing } from '../jobs/files.js';
import { randomUUID } from 'node:crypto';
import { constants as fsc } from 'node:fs';
import { lstat, mkdir, open, readdir, readFile, unlink, writeFile, type FileHandle } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { LowtideError, toLowtideError } from '../errors.js';
import { native } from '../native.js';
import { integerOption, objectOption, stringOption } from '../options.js';
import { compress, decompressInto, giveBuffer, requireZstd, takeBuffer } from './compress.js';
import {
  checkDirectory,
  openRegularFile,
  readSmallFile,
  readWhole,
  repoWriteError,
  syncDir,
  TEMP_NAME_PATTERN,
  tempName,
  writeAtomic,
} from './files.js';
import {
  BACKUP_ID_PATTERN,
  BACKUPS_DIR,
  catalogFileName,
  CHUNK_HEADER_SIZE,
  chunkHeader,
  CHUNKS_DIR,
  ChunkEncoding,
  CONFIG_FILE,
  DEFAULT_CHUNK_SIZE,
  DEFAULT_ZSTD_LEVEL,
  DIGEST_SIZE,
  INDEX_HEADER_SIZE,
  indexFileName,
  LOCKS_DIR,
  manifestFileName,
  MAX_CHUNK_SIZE,
  MIN_CHUNK_SIZE,
  parseChunkHeader,
  REPO_FORMAT,
  REPO_VERSION,
  TMP_DIR,
  validateConfig,
  validateManifest,
  type Manifest,
  type RepoConfig,
} from './format.js';
import { acquireBackupLock, acquirePruneLock } from './lock.js';
import { IndexReader, IndexWriter } from './index-file.js';
import { acquireRemoteLock, type RepoLock } from './storage/lease.js';
import { isS3Url, resolveS3Options, S3Storage, type S3RepositoryOptions } from './storage/s3.js';
import {
  cacheDirectory,
  loadKnownChunks,
  newPruneEpoch,
  readPruneEpoch,
  saveKnownChunks,
} from './storage/known-chunks.js';
import { createStage, type Stage } from './storage/stage.js';
import type { ObjectStorage } from './storage/types.js';

export { IndexReader, IndexWriter } from './index-file.js';
export type { RepoLock } from './storage/lease.js';
export type { S3RepositoryOptions } from './storage/s3.js';

/**
 * Where a repository is: a directory path, an `s3://bucket/prefix` URL, or
 * the options of an S3 repository (endpoint, credentials, ...).
 */
export type RepositoryLocation = string | S3RepositoryOptions;

/** The object storage of an s3:// location, or undefined for a directory path. */
function remoteStorage(location: unknown, name: string): ObjectStorage | undefined {
  if (typeof location === 'string' && !isS3Url(location)) return undefined;
  if (typeof location !== 'string' && (typeof location !== 'object' || location === null)) return undefined;
  return new S3Storage(resolveS3Options(location, name));
}

export interface InitOptions {
  /** Power of two from 64 KiB to 8 MiB (default 1 MiB). */
  chunkSize?: number | undefined;
  /** zstd level 1..19 (default 3). */
  zstdLevel?: number | undefined;
}

export async function initRepository(path: RepositoryLocation, options: InitOptions = {}): Promise<Repository> {
  const storage = remoteStorage(path, 'path');
  if (storage === undefined) stringOption('path', path);
  const opts = objectOption('options', options);
  const chunkSize = integerOption('chunkSize', opts.chunkSize, DEFAULT_CHUNK_SIZE, MIN_CHUNK_SIZE, MAX_CHUNK_SIZE);
  if ((chunkSize & (chunkSize - 1)) !== 0) {
    throw new LowtideError(
      'INVALID_ARGUMENT',
      `chunkSize: expected a power of two from 64 KiB to 8 MiB, got ${chunkSize}`,
    );
  }
  const level = integerOption('zstdLevel', opts.zstdLevel, DEFAULT_ZSTD_LEVEL, 1, 19);
  const config: RepoConfig = {
    format: REPO_FORMAT,
    version: REPO_VERSION,
    id: randomUUID(),
    created: new Date().toISOString(),
    chunkSize,
    hash: 'sha256',
    compression: { algorithm: 'zstd', level },
  };
  if (storage !== undefined) return initRemote(storage, config);
  const root = resolve(path as string);
  try {
    const entries = await readdir(root);
    if (entries.length > 0) {
      throw new LowtideError(
        'REPO_EXISTS',
        `${root} exists and is not empty; a repository needs an empty or new directory`,
      );
    }
  } catch (err) {
    if (err instanceof LowtideError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOTDIR') throw new LowtideError('REPO_EXISTS', `${root} exists and is not a directory`);
    if (code !== 'ENOENT') throw repoWriteError(err, `checking ${root}`);
  }
  try {
    await mkdir(root, { recursive: true });
    for (const d of [CHUNKS_DIR, BACKUPS_DIR, LOCKS_DIR, TMP_DIR]) await mkdir(join(root, d));
  } catch (err) {
    throw repoWriteError(err, `creating ${root}`);
  }
  // The config is written last: a directory without it is not a repository.
  await writeAtomic(
    join(root, TMP_DIR),
    join(root, CONFIG_FILE),
    [Buffer.from(JSON.stringify(config, null, 2) + '\n')],
    {
      dir: root,
    },
  );
  return new Repository(root, config);
}

/**
 * An S3 repository is created by writing its config.json (if absent) into a
 * bucket that must exist; any object under the prefix already makes it
 * REPO_EXISTS. Chunks, backups and locks have no directories to create.
 */
async function initRemote(storage: ObjectStorage, config: RepoConfig): Promise<Repository> {
  try {
    await storage.check();
    for await (const o of storage.list('')) {
      throw new LowtideError(
        'REPO_EXISTS',
        `${storage.location} is not empty (it holds ${o.key}); a repository needs an empty prefix`,
      );
    }
    const written = await storage.putIfAbsent(CONFIG_FILE, Buffer.from(JSON.stringify(config, null, 2) + '\n'));
    if (!written) throw new LowtideError('REPO_EXISTS', `${storage.location} already holds a repository`);
  } catch (err) {
    storage.close();
    throw err;
  }
  return new Repository(storage.location, config, storage);
}

/** A `repository` option: a Repository as it is, a path or s3:// location opened (a wrong type names the option). */
export async function repositoryOption(value: unknown, name = 'repository'): Promise<Repository> {
  if (value instanceof Repository) return value;
  if (typeof value === 'object' && value !== null) return openRepository(value as S3RepositoryOptions);
  return openRepository(stringOption(name, value));
}

/** Checks a `repository` option without opening it: a Repository, a path, an s3:// URL or S3 options. */
export function checkRepositoryOption(value: unknown, name = 'repository'): RepositoryLocation | Repository {
  if (value instanceof Repository) return value;
  if (typeof value === 'object' && value !== null) return resolveS3Options(value, name);
  const s = stringOption(name, value);
  if (isS3Url(s)) resolveS3Options(s, name);
  return s;
}

async function openRemote(storage: ObjectStorage): Promise<Repository> {
  try {
    await storage.check();
    const data = await storage.get(CONFIG_FILE, undefined, MAX_CONFIG_BYTES);
    const where = `${storage.location}/${CONFIG_FILE}`;
    if (data === undefined) {
      throw new LowtideError(
        'REPO_NOT_FOUND',
        `no lowtide repository at ${storage.location} (run \`lowtide init ${storage.location}\` first)`,
      );
    }
    let raw: unknown;
    try {
      raw = JSON.parse(data.toString('utf8'));
    } catch {
      throw new LowtideError('REPO_FORMAT', `${where} is not valid JSON`);
    }
    return new Repository(storage.location, validateConfig(raw, where), storage);
  } catch (err) {
    storage.close();
    throw err;
  }
}

export async function openRepository(path: RepositoryLocation): Promise<Repository> {
  const storage = remoteStorage(path, 'repository');
  if (storage !== undefined) return openRemote(storage);
  stringOption('repository', path);
  const root = resolve(path as string);
  const configPath = join(root, CONFIG_FILE);
  let text: string;
  try {
    text = await readSmallFile(configPath, 'the repository configuration', 'REPO_FORMAT', MAX_CONFIG_BYTES);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') {
      throw new LowtideError(
        'REPO_NOT_FOUND',
        `no lowtide repository at ${root} (run \`lowtide init ${path as string}\` first)`,
      );
    }
    throw toLowtideError(err, 'REPO_FORMAT', `reading ${configPath}`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw new LowtideError('REPO_FORMAT', `${configPath} is not valid JSON`);
  }
  const config = validateConfig(raw, configPath);
  // What readers need besides the configuration; tmp/ and locks/ are checked by writers (lock()).
  for (const d of [CHUNKS_DIR, BACKUPS_DIR]) await requireDirectory(root, d);
  return new Repository(root, config);
}

/** Largest config.json read: it is a few hundred bytes. */
const MAX_CONFIG_BYTES = 64 * 1024;
/**
 * Largest manifest read. A manifest holds its backup's extent list, long for
 * a fragmented file system (about 45 bytes per extent as written); this is
 * about the longest string JavaScript can hold.
 */
const MAX_MANIFEST_BYTES = 512 * 1024 * 1024;

/** A subdirectory of the repository, which must be a directory and not a link (REPO_CORRUPT otherwise). */
async function requireDirectory(root: string, name: string): Promise<void> {
  const path = join(root, name);
  try {
    await checkDirectory(path, `${name}/ of the repository`, 'REPO_CORRUPT');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new LowtideError('REPO_CORRUPT', `the repository ${root} has no ${name}/ directory`, { path });
    }
    throw toLowtideError(err, 'REPO_CORRUPT', `checking ${path}`);
  }
}

export interface StoredChunk {
  /** True when this call wrote the chunk; false when it was already there. */
  written: boolean;
  /** Bytes the chunk file takes. */
  storedBytes: number;
}

export class Repository {
  /** Chunk directories this instance renamed chunks into and has not synced yet. */
  readonly #unsyncedDirs = new Set<string>();
  /** Chunk directories (chunks/xx) found to be directories; readers check each once. */
  readonly #checkedPrefixes = new Set<string>();
  /** The object storage of a remote repository; undefined for a local directory. */
  readonly #storage: ObjectStorage | undefined;
  /** A remote repository's local staging directory (created when first needed). */
  #stage: Stage | undefined;
  /**
   * Chunks known to be in a remote repository (stored or seen by this
   * process, or named by a parent's index read for a backup): a backup does
   * not ask the storage about them. The leases keep prune from deleting
   * them while a backup runs.
   */
  readonly #knownChunks = new Set<string>();
  /** Where #knownChunks is kept between runs, and the prune epoch it was read under. */
  #knownEpoch: { dir: string; epoch: string } | undefined;
  /** True once this prune has started a new prune epoch (before it deletes its first chunk). */
  #epochStarted = false;

  /** `path` is the directory, or the s3:// location of a remote repository (with its storage). */
  constructor(
    readonly path: string,
    readonly config: RepoConfig,
    storage?: ObjectStorage,
  ) {
    this.#storage = storage;
  }

  /** True for a repository on object storage. */
  get isRemote(): boolean {
    return this.#storage !== undefined;
  }

  /** The object storage of a remote repository (INTERNAL for a local one). */
  get storage(): ObjectStorage {
    if (!this.#storage) throw new LowtideError('INTERNAL', `${this.path} is a local repository`);
    return this.#storage;
  }

  get #staged(): Stage {
    this.#stage ??= createStage();
    return this.#stage;
  }

  /** Releases what an open repository holds: a remote one's connections and staging directory. */
  close(): void {
    this.#storage?.close();
    this.#stage?.remove();
    this.#stage = undefined;
  }

  /** The backups in the repository, oldest first, and the manifests that could not be read. */
  async list(): Promise<{ backups: Manifest[]; damaged: { id: string; error: LowtideError }[] }> {
    return this.listBackups();
  }

  /** verifyRepository() on this repository. */
  async verify(options: Omit<VerifyOptions, 'repository'> = {}): Promise<VerifyReport> {
    const { verifyRepository } = await import('./maintenance.js');
    return verifyRepository({ ...options, repository: this });
  }

  /** pruneRepository() on this repository. */
  async prune(options: Omit<PruneOptions, 'repository'>): Promise<PruneReport> {
    const { pruneRepository } = await import('./maintenance.js');
    return pruneRepository({ ...options, repository: this });
  }

  /** listBackupFiles() of one of this repository's backups. */
  async files(options: Omit<ListBackupFilesOptions, 'repository'>): Promise<FileListing[]> {
    const { listBackupFiles } = await import('../jobs/files/backup.js');
    return listBackupFiles({ ...options, repository: this });
  }

  /** extractFromBackup() from one of this repository's backups. */
  async extract(options: Omit<ExtractFromBackupOptions, 'repository'>): Promise<BackupExtractResult> {
    const { extractFromBackup } = await import('../jobs/files/backup.js');
    return extractFromBackup({ ...options, repository: this });
  }

  get chunkSize(): number {
    return this.config.chunkSize;
  }

  /** Where temporary files are written (a remote repository's staging directory). */
  get tmpDir(): string {
    return this.#storage ? this.#staged.tmpDir : join(this.path, TMP_DIR);
  }

  /** Where indexes and catalogs are written before the commit (a remote repository's staging directory). */
  get backupsDir(): string {
    return this.#storage ? this.#staged.backupsDir : join(this.path, BACKUPS_DIR);
  }

  /**
   * A local file with a backup's catalog: the file in backups/, or for a
   * remote repository a copy downloaded into the staging directory.
   */
  async catalogFile(manifest: Manifest): Promise<string> {
    if (!this.#storage) return this.catalogPath(manifest);
    return this.#download(
      `${BACKUPS_DIR}/${catalogFileName(checkedId(manifest.id))}`,
      `the catalog of backup ${manifest.id}`,
    );
  }

  /**
   * A local file with backups/<name>: the file itself, or a downloaded copy
   * (`staged`: the caller unlinks it once it is open).
   */
  async backupFile(name: string, what: string): Promise<{ path: string; staged: boolean }> {
    if (!this.#storage) return { path: join(this.backupsDir, name), staged: false };
    return { path: await this.#download(`${BACKUPS_DIR}/${name}`, what), staged: true };
  }

  /** Downloads an object into the staging directory; REPO_CORRUPT when it is missing. */
  async #download(key: string, what: string): Promise<string> {
    const data = await this.storage.get(key, undefined, MAX_MANIFEST_BYTES);
    if (data === undefined) {
      throw new LowtideError('REPO_CORRUPT', `${what} (${this.path}/${key}) is missing`);
    }
    const path = tempName(this.tmpDir, 'get');
    await writeFile(path, data, { flag: 'wx', mode: 0o600 });
    return path;
  }

  /** backups/<id>.catalog of a backup (the name is derived from its checked id, never read from a file). */
  catalogPath(manifest: Manifest): string {
    return join(this.backupsDir, catalogFileName(checkedId(manifest.id)));
  }

  indexPath(manifest: Manifest): string {
    return join(this.backupsDir, indexFileName(checkedId(manifest.id)));
  }

  chunkDir(hex: string): string {
    return join(this.path, CHUNKS_DIR, hex.slice(0, 2));
  }

  chunkPath(hex: string): string {
    return join(this.path, CHUNKS_DIR, hex.slice(0, 2), hex);
  }

  /**
   * Takes a writer's hold (lock.ts: a backup's lease, or the prune lock) and
   * removes temporary files dead writers left. A writer that died may also
   * have renamed chunks into directories it never synced; a backup syncs the
   * directory of every chunk it stores or finds there (syncChunkDirs) before
   * its manifest names it, and an exclusive prune that finds a dead writer's
   * traces syncs every chunk directory. Chunks a writer stores are synced at
   * the latest when its hold is released, also when the job failed.
   */
  async lock(purpose: string, kind: 'backup' | 'prune' = 'backup'): Promise<RepoLock> {
    if (this.#storage) {
      const remote = await acquireRemoteLock(this.#storage, purpose, kind);
      if (kind === 'backup') {
        // Read after the lease is written: no prune deletes a chunk from now on.
        try {
          await this.#loadKnownChunks(this.#storage);
        } catch (err) {
          await remote.release();
          throw err;
        }
        remote.beforeRelease(() => this.#saveKnownChunks());
      }
      return remote;
    }
    const lock =
      kind === 'backup' ? await acquireBackupLock(this.path, purpose) : await acquirePruneLock(this.path, purpose);
    try {
      // Everything a writer writes into or deletes from must be a directory
      // of the repository, not a link to one elsewhere.
      for (const d of [TMP_DIR, CHUNKS_DIR, BACKUPS_DIR]) await requireDirectory(this.path, d);
      const prefixes: string[] = [];
      for (const d of await readdir(join(this.path, CHUNKS_DIR), { withFileTypes: true })) {
        if (d.isDirectory()) prefixes.push(d.name);
        else if (PREFIX.test(d.name)) {
          const path = join(this.path, CHUNKS_DIR, d.name);
          throw new LowtideError(
            'REPO_CORRUPT',
            `chunk directory ${CHUNKS_DIR}/${d.name} (${path}) is not a directory; lowtide follows no links inside a repository`,
            { path },
          );
        }
      }
      if (lock.exclusive && (lock.staleHolder !== undefined || lock.staleLeases > 0))
        await this.syncChunkDirs(prefixes);
      // Only an exclusive prune knows that no writer runs; a backup removes
      // the files of processes that have ended (writers of one host).
      if (kind === 'backup' || lock.exclusive)
        lock.staleFilesRemoved = await this.#removeTemporaryFiles(!lock.exclusive);
    } catch (err) {
      await lock.abandon();
      throw repoWriteError(err, `preparing ${this.path} for writing`);
    }
    lock.beforeRelease(async () => {
      if (this.#unsyncedDirs.size > 0) await this.syncChunkDirs([...this.#unsyncedDirs]);
    });
    return lock;
  }

  /**
   * Removes the temporary files in tmp/ (a writer that was killed leaves
   * them): regular files named as lowtide names them, nothing else; with
   * `deadOnly`, only those whose writer (the PID in the name) has ended. tmp/
   * was checked to be a directory of the repository, and unlink never
   * follows a link, so nothing outside the repository is touched.
   */
  async #removeTemporaryFiles(deadOnly: boolean): Promise<{ files: number; bytes: number }> {
    let files = 0;
    let bytes = 0;
    for (const d of await readdir(this.tmpDir, { withFileTypes: true })) {
      if (!d.isFile() || !TEMP_NAME_PATTERN.test(d.name)) continue;
      if (deadOnly && processRuns(Number(d.name.split('.')[1]))) continue;
      const path = join(this.tmpDir, d.name);
      const st = await lstat(path).catch(() => undefined);
      if (!st?.isFile()) continue;
      try {
        await unlink(path);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
        throw err;
      }
      files++;
      bytes += st.size;
    }
    return { files, bytes };
  }

  /** The persistent known-chunks index (storage/known-chunks.ts), trusted while the prune epoch is unchanged. */
  async #loadKnownChunks(storage: ObjectStorage): Promise<void> {
    const epoch = await readPruneEpoch(storage);
    const dir = cacheDirectory(storage.cacheDir);
    for (const hex of await loadKnownChunks(dir, this.config.id, epoch)) this.#knownChunks.add(hex);
    this.#knownEpoch = { dir, epoch };
  }

  async #saveKnownChunks(): Promise<void> {
    if (this.#knownEpoch === undefined) return;
    await saveKnownChunks(this.#knownEpoch.dir, this.config.id, this.#knownEpoch.epoch, this.#knownChunks);
  }

  async hasChunk(hex: string): Promise<boolean> {
    if (this.#storage) {
      if (this.#knownChunks.has(hex)) return true;
      const there = (await this.#storage.head(chunkKey(hex))) !== undefined;
      if (there) this.#knownChunks.add(hex);
      return there;
    }
    try {
      return (await lstat(this.chunkPath(hex))).isFile();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw toLowtideError(err, 'IO_ERROR', `checking chunk ${hex}`);
    }
  }

  /**
   * Stores `plain` under `hex` (its SHA-256) unless already present. The chunk
   * file is synced before it is renamed into place; the caller syncs the chunk
   * directories (see syncChunkDirs) before writing a manifest that names it.
   */
  async putChunk(hex: string, plain: Buffer): Promise<StoredChunk> {
    requireZstd();
    if (this.#storage) return this.#putRemoteChunk(hex, plain);
    // One native task (native/repo/chunk_file.cc): existence check, whether
    // and how to compress, temporary file, write, fsync, rename; a missing
    // prefix directory is created.
    let r: { written: boolean; storedBytes: number };
    try {
      r = await native.storeChunkFile(
        plain,
        this.config.compression.level,
        tempName(this.tmpDir, 'w'),
        this.chunkPath(hex),
      );
    } catch (err) {
      throw toLowtideError(err, 'WRITE_FAILED');
    }
    if (!r.written) return { written: false, storedBytes: 0 };
    this.#unsyncedDirs.add(hex.slice(0, 2));
    return { written: true, storedBytes: r.storedBytes };
  }

  /**
   * Remote: a chunk known or found (HEAD) is not sent again; a new one is
   * compressed (raw when that does not make it smaller) and written with
   * If-None-Match: *, so a chunk another writer stored meanwhile (the same
   * bytes) is never overwritten.
   */
  async #putRemoteChunk(hex: string, plain: Buffer): Promise<StoredChunk> {
    const storage = this.storage;
    if (await this.hasChunk(hex)) return { written: false, storedBytes: 0 };
    const packed = await compress(plain, this.config.compression.level);
    const file =
      packed.length < plain.length
        ? Buffer.concat([chunkHeader(ChunkEncoding.Zstd, plain.length), packed])
        : Buffer.concat([chunkHeader(ChunkEncoding.Raw, plain.length), plain]);
    const written = await storage.putIfAbsent(chunkKey(hex), file);
    this.#knownChunks.add(hex);
    return written ? { written: true, storedBytes: file.length } : { written: false, storedBytes: 0 };
  }

  /** Remembers every chunk a backup's index names as present (a remote backup's parent). */
  async rememberChunksOf(m: Manifest): Promise<void> {
    if (!this.#storage) return;
    const index = await this.openIndex(m);
    try {
      for (let i = 0; i < m.chunkCount; i++) {
        const e = await index.entry(i);
        if (e !== null) this.#knownChunks.add(e.toString('hex'));
      }
    } finally {
      await index.close();
    }
  }

  async syncChunkDirs(prefixes: Iterable<string>): Promise<void> {
    if (this.#storage) return; // an object is durable when its PUT succeeds
    try {
      // The prefix directories in parallel (a few at a time): each fsync waits
      // for the device, and an incremental backup touches dozens of them.
      const todo = [...prefixes];
      const worker = async (): Promise<void> => {
        for (let p = todo.pop(); p !== undefined; p = todo.pop()) {
          await syncDir(join(this.path, CHUNKS_DIR, p));
          this.#unsyncedDirs.delete(p);
        }
      };
      await Promise.all(Array.from({ length: Math.min(SYNC_DIRS_AT_ONCE, todo.length) }, worker));
      await syncDir(join(this.path, CHUNKS_DIR));
    } catch (err) {
      throw repoWriteError(err, 'syncing chunk directories');
    }
  }

  /**
   * Reads a chunk, decompresses it and checks its SHA-256. Throws CHUNK_MISSING
   * or CHUNK_CORRUPT (with the chunk's digest in the message).
   */
  async getChunk(hex: string, expectedLength?: number): Promise<Buffer> {
    const lease = await this.leaseChunk(hex, expectedLength);
    try {
      return Buffer.from(lease.data);
    } finally {
      lease.release();
    }
  }

  /**
   * getChunk() into reused buffers: `data` is valid until release(), which
   * must be called once the caller is done with it (restore, verify).
   */
  async leaseChunk(hex: string, expectedLength?: number): Promise<{ data: Buffer; release(): void }> {
    const path = this.chunkPath(hex);
    // A chunk file is at most its header and the plain data (zstd is stored only when smaller).
    const cap = CHUNK_HEADER_SIZE + Math.max(this.chunkSize, expectedLength ?? 0);
    const taken: Buffer[] = [];
    const release = (): void => {
      for (const b of taken.splice(0)) giveBuffer(b);
    };
    try {
      let file: Buffer;
      let size: number;
      try {
        await this.#checkPrefix(hex);
        if (this.#storage) {
          const got = await this.#storage.get(chunkKey(hex), undefined, cap);
          if (got === undefined) throw Object.assign(new Error('missing'), { code: 'ENOENT' });
          file = got;
          size = got.length;
        } else {
          file = takeBuffer(cap);
          taken.push(file);
          size = await readWhole(path, file, `chunk ${hex}`);
        }
      } catch (err) {
        if (err instanceof LowtideError && err.code === 'REPO_CORRUPT') {
          throw new LowtideError('CHUNK_CORRUPT', `chunk ${hex} is larger than any chunk of this repository`, {
            path,
          });
        }
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
          throw new LowtideError('CHUNK_MISSING', `chunk ${hex} is missing from the repository`, { path });
        }
        throw toLowtideError(err, 'IO_ERROR', `reading chunk ${hex}`);
      }
      if (size > cap)
        throw new LowtideError(
          'CHUNK_CORRUPT',
          `chunk ${hex} is larger (${size} bytes) than any chunk of this repository`,
          { path },
        );
      const header = parseChunkHeader(file.subarray(0, size), `chunk ${hex}`);
      const body = file.subarray(CHUNK_HEADER_SIZE, size);
      const want = expectedLength ?? header.plainLength;
      if (header.plainLength !== want || want > cap - CHUNK_HEADER_SIZE) {
        throw new LowtideError('CHUNK_CORRUPT', `chunk ${hex} has ${header.plainLength} bytes, expected ${want}`, {
          path,
        });
      }
      let plain: Buffer;
      if (header.encoding === ChunkEncoding.Zstd) {
        const out = takeBuffer(cap - CHUNK_HEADER_SIZE);
        taken.push(out);
        let n: number;
        try {
          n = await decompressInto(body, out.subarray(0, want));
        } catch (err) {
          throw new LowtideError('CHUNK_CORRUPT', `chunk ${hex} does not decompress to its ${want} bytes`, {
            cause: err,
            path,
          });
        }
        if (n !== want)
          throw new LowtideError('CHUNK_CORRUPT', `chunk ${hex} has ${n} bytes, expected ${want}`, { path });
        plain = out.subarray(0, want);
      } else {
        if (body.length !== want)
          throw new LowtideError('CHUNK_CORRUPT', `chunk ${hex} has ${body.length} bytes, expected ${want}`, { path });
        plain = body;
      }
      const digest = await native.digest(plain, false);
      if (digest === null || digest.toString('hex') !== hex) {
        throw new LowtideError('CHUNK_CORRUPT', `chunk ${hex} does not match its digest (its content is damaged)`, {
          path,
        });
      }
      return { data: plain, release };
    } catch (err) {
      release();
      throw err;
    }
  }

  /** chunks/xx/ must be a directory, not a link; checked once per prefix. A missing one passes (the chunk is missing). */
  async #checkPrefix(hex: string): Promise<void> {
    if (!HEX64.test(hex))
      throw new LowtideError(
        'INVALID_ARGUMENT',
        `chunk: expected 64 lowercase hex characters, got ${JSON.stringify(hex)}`,
      );
    const prefix = hex.slice(0, 2);
    if (this.#storage || this.#checkedPrefixes.has(prefix)) return;
    await checkDirectory(this.chunkDir(hex), `chunk directory ${CHUNKS_DIR}/${prefix}`, 'CHUNK_CORRUPT');
    this.#checkedPrefixes.add(prefix);
  }

  /** All backups, oldest first. Manifests that cannot be read are reported in `damaged`. */
  async listBackups(): Promise<{ backups: Manifest[]; damaged: { id: string; error: LowtideError }[] }> {
    const names = await this.backupNames();
    const backups: Manifest[] = [];
    const damaged: { id: string; error: LowtideError }[] = [];
    for (const n of names.filter((x) => x.endsWith('.json')).sort()) {
      const id = n.slice(0, -5);
      if (!BACKUP_ID_PATTERN.test(id)) {
        const path = this.#storage ? `${this.path}/${BACKUPS_DIR}/${n}` : join(this.backupsDir, n);
        damaged.push({
          id,
          error: new LowtideError('REPO_CORRUPT', `${path} is not a backup: its name is not a backup id`, { path }),
        });
        continue;
      }
      try {
        backups.push(await this.readManifest(id));
      } catch (err) {
        damaged.push({ id, error: toLowtideError(err, 'REPO_CORRUPT') });
      }
    }
    backups.sort((a, b) => (a.created < b.created ? -1 : a.created > b.created ? 1 : a.id < b.id ? -1 : 1));
    return { backups, damaged };
  }

  /** The names in backups/ (manifests, indexes, catalogs and anything else there). */
  async backupNames(): Promise<string[]> {
    if (this.#storage) {
      const names: string[] = [];
      for await (const o of this.#storage.list(`${BACKUPS_DIR}/`)) names.push(o.key.slice(BACKUPS_DIR.length + 1));
      return names;
    }
    try {
      return await readdir(this.backupsDir);
    } catch (err) {
      throw toLowtideError(err, 'REPO_CORRUPT', `listing ${this.backupsDir}`);
    }
  }

  /** Removes names from backups/ (indexes and catalogs without a manifest); a missing one is no error. */
  async removeBackupFiles(names: readonly string[]): Promise<void> {
    if (this.#storage) return this.#storage.delete(names.map((n) => `${BACKUPS_DIR}/${n}`));
    for (const n of names) await unlink(join(this.backupsDir, n)).catch(() => undefined);
  }

  /**
   * Every chunk in the store, and what is there that cannot be a chunk
   * (`unexpected` says why, without reading it).
   */
  async *chunkEntries(): AsyncGenerator<{ hex: string; path: string; size?: number; unexpected?: string }> {
    if (this.#storage) {
      for await (const o of this.#storage.list(`${CHUNKS_DIR}/`)) {
        const [prefix, name, ...rest] = o.key.slice(CHUNKS_DIR.length + 1).split('/');
        const path = `${this.path}/${o.key}`;
        if (name === undefined || rest.length > 0 || !HEX64.test(name)) {
          yield { hex: o.key, path, unexpected: `unexpected object ${path} in the chunk store` };
        } else if (name.slice(0, 2) !== prefix) {
          yield { hex: name, path, unexpected: `chunk ${path} is in the wrong directory` };
        } else yield { hex: name, path, size: o.size };
      }
      return;
    }
    const root = join(this.path, CHUNKS_DIR);
    for (const prefix of (await readdir(root, { withFileTypes: true })).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const dir = join(root, prefix.name);
      if (!prefix.isDirectory()) {
        yield { hex: prefix.name, path: dir, unexpected: `${dir} in the chunk store is not a directory` };
        continue;
      }
      for (const d of (await readdir(dir, { withFileTypes: true })).sort((a, b) => (a.name < b.name ? -1 : 1))) {
        const path = join(dir, d.name);
        if (!HEX64.test(d.name)) yield { hex: d.name, path, unexpected: `unexpected file ${path} in the chunk store` };
        else if (d.name.slice(0, 2) !== prefix.name)
          yield { hex: d.name, path, unexpected: `chunk ${path} is in the wrong directory` };
        else yield { hex: d.name, path };
      }
    }
  }

  /**
   * Deletes chunks by digest. Local: a chunk file (or a link in its place) is
   * unlinked, and its bytes counted; remote: the objects are deleted in batches
   * (`sizes` gives their bytes).
   */
  async deleteChunks(
    hexes: readonly string[],
    sizes?: ReadonlyMap<string, number>,
  ): Promise<{ chunks: number; bytes: number }> {
    if (this.#storage) {
      // Known-chunks indexes made before may list these chunks: drop them all.
      if (!this.#epochStarted && hexes.length > 0) {
        await newPruneEpoch(this.#storage);
        this.#epochStarted = true;
      }
      await this.#storage.delete(hexes.map(chunkKey));
      for (const h of hexes) this.#knownChunks.delete(h);
      return { chunks: hexes.length, bytes: hexes.reduce((n, h) => n + (sizes?.get(h) ?? 0), 0) };
    }
    let chunks = 0;
    let bytes = 0;
    for (const hex of hexes) {
      const path = this.chunkPath(hex);
      const st = await lstat(path).catch(() => undefined);
      if (!st || (!st.isFile() && !st.isSymbolicLink())) continue;
      await unlink(path);
      chunks++;
      bytes += st.size;
    }
    return { chunks, bytes };
  }

  /** A backup's manifest by id, or the newest one for 'latest'. */
  async readManifest(id: string): Promise<Manifest> {
    stringOption('backup', id);
    if (id === 'latest') {
      const { backups } = await this.listBackups();
      const last = backups[backups.length - 1];
      if (!last) throw new LowtideError('BACKUP_NOT_FOUND', `the repository ${this.path} has no backups yet`);
      return last;
    }
    if (!BACKUP_ID_PATTERN.test(id)) {
      throw new LowtideError(
        'BACKUP_NOT_FOUND',
        `no backup ${JSON.stringify(id)} in ${this.path} (ids look like 20261125T174501Z-3fa9c2)`,
      );
    }
    const path = this.#storage
      ? `${this.path}/${BACKUPS_DIR}/${manifestFileName(id)}`
      : join(this.backupsDir, manifestFileName(id));
    let text: string;
    try {
      if (this.#storage) {
        const data = await this.#storage.get(`${BACKUPS_DIR}/${manifestFileName(id)}`, undefined, MAX_MANIFEST_BYTES);
        if (data === undefined) throw Object.assign(new Error('missing'), { code: 'ENOENT' });
        text = data.toString('utf8');
      } else text = await readSmallFile(path, `the manifest of backup ${id}`, 'REPO_CORRUPT', MAX_MANIFEST_BYTES);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        throw new LowtideError('BACKUP_NOT_FOUND', `no backup ${id} in ${this.path}`);
      }
      throw toLowtideError(err, 'REPO_CORRUPT', `reading ${path}`);
    }
    let raw: unknown;
    try {
      raw = JSON.parse(text);
    } catch {
      throw new LowtideError('REPO_CORRUPT', `${path} is not valid JSON`, { path });
    }
    return validateManifest(raw, path, id);
  }

  /** Opens a backup's chunk index for sequential reading, checking its header. */
  async openIndex(m: Manifest): Promise<IndexReader> {
    const what = `the chunk index of backup ${m.id}`;
    const staged = this.#storage
      ? await this.#download(`${BACKUPS_DIR}/${indexFileName(checkedId(m.id))}`, what)
      : undefined;
    const path = staged ?? this.indexPath(m);
    const expected = INDEX_HEADER_SIZE + DIGEST_SIZE * m.chunkCount;
    let fh: FileHandle;
    try {
      let size: number;
      try {
        ({ fh, size } = await openRegularFile(path, what, 'REPO_CORRUPT'));
      } finally {
        // A downloaded copy is read through its open descriptor only.
        if (staged !== undefined) await unlink(staged).catch(() => undefined);
      }
      if (size !== expected) {
        await fh.close();
        throw new LowtideError('REPO_CORRUPT', `${what} (${path}) has ${size} bytes, expected ${expected}`, { path });
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        throw new LowtideError('REPO_CORRUPT', `${what} (${path}) is missing`, { path, cause: err });
      }
      throw toLowtideError(err, 'REPO_CORRUPT', `opening ${what}`);
    }
    const reader = new IndexReader(fh, path, m);
    try {
      await reader.init();
    } catch (err) {
      await fh.close();
      throw err;
    }
    return reader;
  }

  /** Starts writing a new chunk index in tmp/. */
  async createIndex(chunkCount: number): Promise<IndexWriter> {
    const tmp = tempName(this.tmpDir, 'index');
    let fh: FileHandle;
    try {
      fh = await open(tmp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, 0o644);
    } catch (err) {
      throw repoWriteError(err, `creating ${tmp}`);
    }
    const w = new IndexWriter(fh, tmp, this.chunkSize, chunkCount);
    await w.start();
    return w;
  }

  /**
   * Commits a backup: the index file is moved into backups/ and the directory
   * synced (with any file the caller moved there before, such as a catalog),
   * then the manifest is written atomically (the commit point) and the
   * directory synced again. A manifest never becomes durable before its index.
   */
  async commitBackup(manifest: Manifest, index: IndexWriter, lock?: RepoLock): Promise<void> {
    const finalIndex = this.indexPath(manifest);
    await index.finish(finalIndex);
    if (this.#storage) return this.#commitRemote(manifest, finalIndex, lock);
    try {
      await syncDir(this.backupsDir);
    } catch (err) {
      throw repoWriteError(err, `syncing ${this.backupsDir}`);
    }
    await writeAtomic(
      this.tmpDir,
      join(this.backupsDir, manifestFileName(manifest.id)),
      [Buffer.from(JSON.stringify(manifest, null, 2) + '\n')],
      { dir: this.backupsDir },
    );
  }

  /**
   * Remote: the catalog and the index are uploaded, then the manifest, last
   * and only if absent: it is the commit point. Every chunk was written before
   * (each PUT is durable when it succeeds).
   */
  async #commitRemote(manifest: Manifest, indexFile: string, lock: RepoLock | undefined): Promise<void> {
    const storage = this.storage;
    const id = checkedId(manifest.id);
    const upload = async (file: string, name: string): Promise<void> => {
      try {
        if (!(await storage.putIfAbsent(`${BACKUPS_DIR}/${name}`, await readFile(file)))) {
          throw new LowtideError('INTERNAL', `${this.path}/${BACKUPS_DIR}/${name} exists already`);
        }
      } finally {
        await unlink(file).catch(() => undefined);
      }
    };
    if (manifest.catalog) await upload(join(this.backupsDir, catalogFileName(id)), catalogFileName(id));
    await upload(indexFile, indexFileName(id));
    lock?.check();
    if (
      !(await storage.putIfAbsent(
        `${BACKUPS_DIR}/${manifestFileName(id)}`,
        Buffer.from(JSON.stringify(manifest, null, 2) + '\n'),
      ))
    ) {
      throw new LowtideError('INTERNAL', `backup ${id} exists already in ${this.path}`);
    }
  }

  /**
   * Removes a backup's manifest (first: the backup is gone at once), then its
   * index and catalog. Every name is derived from the checked id; unlink never
   * follows a link, so nothing outside backups/ is removed.
   */
  async deleteBackup(id: string): Promise<void> {
    const m = await this.readManifest(id);
    if (this.#storage) {
      await this.#storage.delete([`${BACKUPS_DIR}/${manifestFileName(m.id)}`]);
      await this.#storage.delete([indexFileName(m.id), catalogFileName(m.id)].map((n) => `${BACKUPS_DIR}/${n}`));
      return;
    }
    try {
      await unlink(join(this.backupsDir, manifestFileName(m.id)));
      await syncDir(this.backupsDir);
      for (const name of [indexFileName(m.id), catalogFileName(m.id)]) {
        await unlink(join(this.backupsDir, name)).catch((err: unknown) => {
          if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
        });
      }
    } catch (err) {
      throw repoWriteError(err, `deleting backup ${id}`);
    }
  }
}

const HEX64 = /^[0-9a-f]{64}$/;
const PREFIX = /^[0-9a-f]{2}$/;

/** The key of a chunk in a remote repository (the same layout as a local one). */
function chunkKey(hex: string): string {
  return `${CHUNKS_DIR}/${hex.slice(0, 2)}/${hex}`;
}

/** An id used to name a file: it must be a backup id (never a path). */
function checkedId(id: string): string {
  if (!BACKUP_ID_PATTERN.test(id)) throw new LowtideError('INTERNAL', `not a backup id: ${JSON.stringify(id)}`);
  return id;
}

/** True when a process with this PID runs on this host (ours included). */
function processRuns(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Chunk directories synced at once before a manifest is written. */
const SYNC_DIRS_AT_ONCE = 8;
