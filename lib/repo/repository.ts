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
import { dirname, join, resolve } from 'node:path';
import { LowtideError, toLowtideError } from '../errors.js';
import { native } from '../native.js';
import { choiceOption, integerOption, objectOption, stringOption } from '../options.js';
import { decompressInto, giveBuffer, requireZstd, takeBuffer } from './compress.js';
import {
  createKey,
  ENCRYPTION_ALGORITHM,
  KEY_ID_PATTERN,
  KEYS_DIR,
  MAX_KEY_FILE_BYTES,
  openKey,
  openObject,
  passwordOption,
  SEAL_OVERHEAD,
  sealObject,
  type RepoKeys,
} from './crypto.js';
import {
  checkDirectory,
  openRegularFile,
  readSmallBytes,
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
  CHUNKS_DIR,
  ChunkEncoding,
  CONFIG_FILE,
  DEFAULT_CHUNK_SIZE,
  DEFAULT_ZSTD_LEVEL,
  INDEX_HEADER_SIZE,
  indexEntrySize,
  indexFileName,
  LOCKS_DIR,
  manifestFileName,
  MAX_CHUNK_SIZE,
  MIN_CHUNK_SIZE,
  parseChunkHeader,
  REPO_FORMAT,
  REPO_VERSION,
  REPO_VERSION_PACKED,
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
import {
  DEFAULT_PACK_SIZE,
  isPackName,
  MAX_PACK_SIZE,
  MIN_PACK_SIZE,
  PACKS_DIR,
  packKey,
  PackWriter,
  type PackLocation,
} from './storage/packs.js';
import type { ObjectStorage } from './storage/types.js';
import type { RemoteWrites } from '../throttle/types.js';

export { IndexReader, IndexWriter } from './index-file.js';
export type { RepoLock } from './storage/lease.js';
export type { S3RepositoryOptions } from './storage/s3.js';
export type { PackLocation } from './storage/packs.js';

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

export interface OpenOptions {
  /**
   * The passphrase of an encrypted repository (default: the environment's
   * LOWTIDE_PASSWORD). An unencrypted repository ignores it.
   */
  password?: string | undefined;
}

export interface InitOptions extends OpenOptions {
  /** Power of two from 64 KiB to 8 MiB (default 1 MiB). */
  chunkSize?: number | undefined;
  /** zstd level 1..19 (default 3). */
  zstdLevel?: number | undefined;
  /** `'aes-256-gcm'`: encrypt and authenticate everything stored (needs `password`); default `'none'`. */
  encryption?: 'none' | 'aes-256-gcm' | undefined;
  /**
   * S3 repositories: the bytes a writer fills each pack object with, from 1 MiB
   * to 256 MiB (default 16 MiB); 0 stores one object per chunk (format
   * version 1). Local repositories have one file per chunk (0 only).
   */
  packSize?: number | undefined;
}

/** How to give the passphrase of an encrypted repository, for messages. */
const PASSWORD_HOW = 'set LOWTIDE_PASSWORD or use --password-file FILE (the `password` option in the API)';

export async function initRepository(path: RepositoryLocation, options: InitOptions = {}): Promise<Repository> {
  const storage = remoteStorage(path, 'path');
  if (storage === undefined) stringOption('path', path);
  const opts = objectOption('options', options);
  const encryption = choiceOption('encryption', opts.encryption, ['none', ENCRYPTION_ALGORITHM], 'none');
  const password = encryption === 'none' ? undefined : passwordOption(opts.password);
  if (encryption !== 'none' && password === undefined) {
    storage?.close();
    throw new LowtideError('PASSWORD_REQUIRED', `an encrypted repository needs a passphrase: ${PASSWORD_HOW}`);
  }
  const chunkSize = integerOption('chunkSize', opts.chunkSize, DEFAULT_CHUNK_SIZE, MIN_CHUNK_SIZE, MAX_CHUNK_SIZE);
  if ((chunkSize & (chunkSize - 1)) !== 0) {
    throw new LowtideError(
      'INVALID_ARGUMENT',
      `chunkSize: expected a power of two from 64 KiB to 8 MiB, got ${chunkSize}`,
    );
  }
  const level = integerOption('zstdLevel', opts.zstdLevel, DEFAULT_ZSTD_LEVEL, 1, 19);
  const packSize = integerOption('packSize', opts.packSize, storage ? DEFAULT_PACK_SIZE : 0, 0, MAX_PACK_SIZE);
  if (packSize !== 0 && (storage === undefined || packSize < MIN_PACK_SIZE)) {
    storage?.close();
    throw new LowtideError(
      'INVALID_ARGUMENT',
      storage === undefined
        ? `packSize: a local repository has one file per chunk (0), got ${packSize}`
        : `packSize: expected 0 or a size from 1 MiB to 256 MiB, got ${packSize}`,
    );
  }
  const config: RepoConfig = {
    format: REPO_FORMAT,
    version: packSize === 0 ? REPO_VERSION : REPO_VERSION_PACKED,
    id: randomUUID(),
    created: new Date().toISOString(),
    chunkSize,
    hash: encryption === 'none' ? 'sha256' : 'hmac-sha256',
    compression: { algorithm: 'zstd', level },
    ...(encryption === 'none' ? {} : { encryption: { algorithm: ENCRYPTION_ALGORITHM } }),
    ...(packSize === 0 ? {} : { packSize }),
  };
  // The master key is made before anything is written (scrypt takes a while).
  const key = password === undefined ? undefined : await createKey(password, config.id);
  if (storage !== undefined) return initRemote(storage, config, key);
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
    if (key) await mkdir(join(root, KEYS_DIR));
  } catch (err) {
    throw repoWriteError(err, `creating ${root}`);
  }
  if (key) {
    await writeAtomic(join(root, TMP_DIR), join(root, KEYS_DIR, `${key.keys.keyId}.json`), [key.file], {
      dir: join(root, KEYS_DIR),
    });
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
  return new Repository(root, config, undefined, key?.keys);
}

/**
 * An S3 repository is created by writing its config.json (if absent) into a
 * bucket that must exist; any object under the prefix already makes it
 * REPO_EXISTS. Chunks, backups and locks have no directories to create.
 */
async function initRemote(
  storage: ObjectStorage,
  config: RepoConfig,
  key: { keys: RepoKeys; file: Buffer } | undefined,
): Promise<Repository> {
  try {
    await storage.check();
    for await (const o of storage.list('')) {
      throw new LowtideError(
        'REPO_EXISTS',
        `${storage.location} is not empty (it holds ${o.key}); a repository needs an empty prefix`,
      );
    }
    if (key && !(await storage.putIfAbsent(`${KEYS_DIR}/${key.keys.keyId}.json`, key.file))) {
      throw new LowtideError('REPO_EXISTS', `${storage.location} already holds a repository`);
    }
    const written = await storage.putIfAbsent(CONFIG_FILE, Buffer.from(JSON.stringify(config, null, 2) + '\n'));
    if (!written) throw new LowtideError('REPO_EXISTS', `${storage.location} already holds a repository`);
  } catch (err) {
    storage.close();
    throw err;
  }
  return new Repository(storage.location, config, storage, key?.keys);
}

/**
 * A `repository` option: a Repository as it is, a path or s3:// location
 * opened with `password` (a wrong type names the option).
 */
export async function repositoryOption(value: unknown, name = 'repository', password?: unknown): Promise<Repository> {
  if (value instanceof Repository) return value;
  const options = { password: passwordOption(password) };
  if (typeof value === 'object' && value !== null) return openRepository(value as S3RepositoryOptions, options);
  return openRepository(stringOption(name, value), options);
}

/**
 * Runs `fn` on the repository a `repository` option names and closes it
 * afterwards, on success and on error, when it was opened here (its staging
 * directory and S3 client go with it); a Repository passed in stays open.
 */
export async function withRepository<T>(
  value: unknown,
  password: unknown,
  fn: (repo: Repository) => Promise<T>,
  name = 'repository',
): Promise<T> {
  const repo = await repositoryOption(value, name, password);
  try {
    return await fn(repo);
  } finally {
    if (repo !== value) repo.close();
  }
}

/**
 * The master key of an encrypted repository: the first key file that
 * `password` opens. PASSWORD_REQUIRED without a passphrase, BAD_PASSWORD when
 * it opens none.
 */
async function unlockRepository(
  where: string,
  config: RepoConfig,
  password: string | undefined,
  listKeys: () => Promise<string[]>,
  readKey: (name: string) => Promise<Buffer | undefined>,
): Promise<RepoKeys | undefined> {
  if (config.encryption === undefined) return undefined;
  if (password === undefined) {
    throw new LowtideError('PASSWORD_REQUIRED', `the repository ${where} is encrypted: ${PASSWORD_HOW}`);
  }
  const names = (await listKeys()).filter((n) => n.endsWith('.json') && KEY_ID_PATTERN.test(n.slice(0, -5))).sort();
  if (names.length === 0) {
    throw new LowtideError('REPO_CORRUPT', `the encrypted repository ${where} has no key file in ${KEYS_DIR}/`);
  }
  for (const n of names) {
    const data = await readKey(n);
    if (data === undefined) continue;
    const keys = await openKey(data, `${where}/${KEYS_DIR}/${n}`, n.slice(0, -5), password, config.id);
    if (keys) return keys;
  }
  throw new LowtideError('BAD_PASSWORD', `the passphrase does not open the encrypted repository ${where}`);
}

/** Checks a `repository` option without opening it: a Repository, a path, an s3:// URL or S3 options. */
export function checkRepositoryOption(value: unknown, name = 'repository'): RepositoryLocation | Repository {
  if (value instanceof Repository) return value;
  if (typeof value === 'object' && value !== null) return resolveS3Options(value, name);
  const s = stringOption(name, value);
  if (isS3Url(s)) resolveS3Options(s, name);
  return s;
}

async function openRemote(storage: ObjectStorage, password: string | undefined): Promise<Repository> {
  try {
    // The bucket, the configuration and the key files' names at once (each
    // request waits for the network); the bucket's error comes first.
    const listKeys = async (): Promise<string[]> => {
      const names: string[] = [];
      for await (const o of storage.list(`${KEYS_DIR}/`)) names.push(o.key.slice(KEYS_DIR.length + 1));
      return names;
    };
    const [checked, got, keyNames] = await Promise.allSettled([
      storage.check(),
      storage.get(CONFIG_FILE, undefined, MAX_CONFIG_BYTES),
      listKeys(),
    ]);
    if (checked.status === 'rejected') throw checked.reason;
    if (got.status === 'rejected') throw got.reason;
    const data = got.value;
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
    const config = validateConfig(raw, where);
    const keys = await unlockRepository(
      storage.location,
      config,
      password,
      async () => {
        if (keyNames.status === 'rejected') throw keyNames.reason;
        return keyNames.value;
      },
      (n) => storage.get(`${KEYS_DIR}/${n}`, undefined, MAX_KEY_FILE_BYTES),
    );
    return new Repository(storage.location, config, storage, keys);
  } catch (err) {
    storage.close();
    throw err;
  }
}

export async function openRepository(path: RepositoryLocation, options: OpenOptions = {}): Promise<Repository> {
  const password = passwordOption(objectOption('options', options).password);
  const storage = remoteStorage(path, 'repository');
  if (storage !== undefined) return openRemote(storage, password);
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
  if (config.version !== REPO_VERSION) {
    throw new LowtideError(
      'REPO_FORMAT',
      `${configPath}: repository format version ${config.version} (chunks in packs) is read from object storage only`,
    );
  }
  // What readers need besides the configuration; tmp/ and locks/ are checked by writers (lock()).
  for (const d of [CHUNKS_DIR, BACKUPS_DIR]) await requireDirectory(root, d);
  const keys = await unlockRepository(
    root,
    config,
    password,
    async () => {
      await requireDirectory(root, KEYS_DIR);
      return readdir(join(root, KEYS_DIR));
    },
    (n) => readSmallBytes(join(root, KEYS_DIR, n), `key file ${n}`, 'REPO_CORRUPT', MAX_KEY_FILE_BYTES),
  );
  return new Repository(root, config, undefined, keys);
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

/**
 * Span buffers are pooled by size class, few of them so that the pool's
 * buffers are reused: 1 MiB for a span of one record, else whole 4 MiB
 * (a restore's runs are at most RUN_MAX_BYTES plus a record).
 */
function spanBufferSize(length: number): number {
  const MiB = 1024 * 1024;
  return length <= MiB ? MiB : Math.ceil(length / (4 * MiB)) * 4 * MiB;
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
  readonly #knownChunks = new Map<string, PackLocation | null>();
  /**
   * Packed: chunks this process put into packs that are not uploaded yet
   * (reused by later chunks; durable once their pack is, see #packs).
   */
  readonly #pendingChunks = new Map<string, PackLocation>();
  /** Packed: the writer of this process's packs (created with the first new chunk). */
  #packs: PackWriter | undefined;
  /** Buffers that chunk objects are encoded into, reused (fresh memory costs a page fault per page). */
  readonly #recordBuffers: Buffer[] = [];
  /** Where #knownChunks is kept between runs, and the prune epoch it was read under. */
  #knownEpoch: { dir: string; epoch: string } | undefined;
  /** True once this prune has started a new prune epoch (before it deletes its first chunk). */
  #epochStarted = false;
  /** The master key of an encrypted repository. */
  readonly #keys: RepoKeys | undefined;
  /** The last index or catalog downloaded (decrypted), if small: objects never change. */
  #lastDownload: { key: string; data: Buffer } | undefined;

  /**
   * `path` is the directory, or the s3:// location of a remote repository
   * (with its storage); `keys` the master key of an encrypted one.
   */
  constructor(
    readonly path: string,
    readonly config: RepoConfig,
    storage?: ObjectStorage,
    keys?: RepoKeys,
  ) {
    this.#storage = storage;
    this.#keys = keys;
    if ((config.encryption === undefined) !== (keys === undefined)) {
      throw new LowtideError('INTERNAL', `${path}: an encrypted repository needs its key, an unencrypted one has none`);
    }
  }

  /** True for an encrypted repository. */
  get isEncrypted(): boolean {
    return this.#keys !== undefined;
  }

  /**
   * The id of a chunk's plain bytes (SHA-256, or HMAC-SHA256 with the
   * repository's MAC key when it is encrypted), computed in the worker pool;
   * null when `zeroCheck` and every byte is zero.
   */
  chunkDigest(data: Uint8Array, zeroCheck: boolean): Promise<Buffer | null> {
    return native.digest(data, zeroCheck, this.#keys?.macKey);
  }

  /**
   * Whether indexes and catalogs are built and read in a local staging
   * directory: for a remote repository, and for an encrypted one (they are
   * stored sealed, whole).
   */
  get #usesStage(): boolean {
    return this.#storage !== undefined || this.#keys !== undefined;
  }

  /** True for a repository on object storage. */
  get isRemote(): boolean {
    return this.#storage !== undefined;
  }

  /** A remote repository's writes so far (for a job's throttle); undefined for a local one. */
  get remoteWrites(): RemoteWrites | undefined {
    return this.#storage?.writes;
  }

  /** True for a repository whose chunks are records in packs (format version 2). */
  get isPacked(): boolean {
    return this.config.packSize !== undefined;
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
    return this.#usesStage ? this.#staged.tmpDir : join(this.path, TMP_DIR);
  }

  /** backups/ of a local repository (where its manifests are, also when indexes are built in a staging directory). */
  get #backupsHome(): string {
    return join(this.path, BACKUPS_DIR);
  }

  /** Where indexes and catalogs are written before the commit (a remote or encrypted repository's staging directory). */
  get backupsDir(): string {
    return this.#usesStage ? this.#staged.backupsDir : join(this.path, BACKUPS_DIR);
  }

  /**
   * A local file with a backup's catalog: the file in backups/, or for a
   * remote repository a copy downloaded into the staging directory.
   */
  async catalogFile(manifest: Manifest): Promise<string> {
    if (!this.#usesStage) return this.catalogPath(manifest);
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
    if (!this.#usesStage) return { path: join(this.backupsDir, name), staged: false };
    return { path: await this.#download(`${BACKUPS_DIR}/${name}`, what), staged: true };
  }

  /**
   * Copies an object (decrypted) into the staging directory; REPO_CORRUPT
   * when it is missing.
   */
  async #download(key: string, what: string): Promise<string> {
    // Objects are immutable: the last small one read is kept (a backup opens its parent's index three times).
    const cached = this.#lastDownload?.key === key ? this.#lastDownload.data : undefined;
    const data = cached ?? (await this.#readObject(key, what, MAX_MANIFEST_BYTES));
    if (data !== undefined && data.length <= DOWNLOAD_CACHE_BYTES) this.#lastDownload = { key, data };
    if (data === undefined) {
      throw new LowtideError('REPO_CORRUPT', `${what} (${this.#objectPath(key)}) is missing`);
    }
    const path = tempName(this.tmpDir, 'get');
    await writeFile(path, data, { flag: 'wx', mode: 0o600 });
    return path;
  }

  /** Where an object (a key relative to the repository) is, for messages and local reads. */
  #objectPath(key: string): string {
    return this.#storage ? `${this.path}/${key}` : join(this.path, ...key.split('/'));
  }

  /**
   * A whole object of at most `maxBytes` plain bytes, decrypted and
   * authenticated in an encrypted repository (REPO_CORRUPT when that fails);
   * undefined when it does not exist. Local files are read as regular files only.
   */
  async #readObject(key: string, what: string, maxBytes: number): Promise<Buffer | undefined> {
    const path = this.#objectPath(key);
    const max = maxBytes + (this.#keys ? SEAL_OVERHEAD : 0);
    let data: Buffer | undefined;
    if (this.#storage) data = await this.#storage.get(key, undefined, max);
    else {
      try {
        data = await readSmallBytes(path, what, 'REPO_CORRUPT', max);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
        throw err;
      }
    }
    if (data === undefined || !this.#keys) return data;
    return openObject(this.#keys, key, data, 'REPO_CORRUPT', what, path);
  }

  /**
   * Writes an object whole (sealed in an encrypted repository): remotely only
   * if absent (false when it was there), locally atomically into its
   * directory, which is synced.
   */
  async #writeObject(key: string, plain: Buffer): Promise<boolean> {
    const data = this.#keys ? await sealObject(this.#keys, key, plain) : plain;
    if (this.#storage) return this.#storage.putIfAbsent(key, data);
    const path = this.#objectPath(key);
    await writeAtomic(join(this.path, TMP_DIR), path, [data], { dir: dirname(path) });
    return true;
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
        remote.beforeRelease(async () => {
          // A job that failed: its unfinished pack is dropped, and nothing of it stays known.
          await this.#packs?.settle();
          this.#packs = undefined;
          this.#pendingChunks.clear();
          await this.#saveKnownChunks();
        });
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
    const tmpDir = join(this.path, TMP_DIR);
    for (const d of await readdir(tmpDir, { withFileTypes: true })) {
      if (!d.isFile() || !TEMP_NAME_PATTERN.test(d.name)) continue;
      if (deadOnly && processRuns(Number(d.name.split('.')[1]))) continue;
      const path = join(tmpDir, d.name);
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
    for (const [hex, loc] of await loadKnownChunks(dir, this.config.id, epoch, this.isPacked)) {
      this.#knownChunks.set(hex, loc ?? null);
    }
    this.#knownEpoch = { dir, epoch };
  }

  async #saveKnownChunks(): Promise<void> {
    if (this.#knownEpoch === undefined) return;
    await saveKnownChunks(
      this.#knownEpoch.dir,
      this.config.id,
      this.#knownEpoch.epoch,
      this.#knownChunks,
      this.isPacked,
    );
  }

  /** Packed: where the record of a chunk this process stored or knows of is (INTERNAL when it knows none). */
  #locationOf(hex: string): PackLocation {
    const loc = this.#pendingChunks.get(hex) ?? this.#knownChunks.get(hex);
    if (!loc) throw new LowtideError('INTERNAL', `no record of chunk ${hex} is known in ${this.path}`);
    return loc;
  }

  async hasChunk(hex: string): Promise<boolean> {
    if (this.#storage) {
      if (this.#knownChunks.has(hex)) return true;
      // Packed: no object per chunk to ask about; a chunk not known is stored again.
      if (this.isPacked) return this.#pendingChunks.has(hex);
      const there = (await this.#storage.head(chunkKey(hex))) !== undefined;
      if (there) this.#knownChunks.set(hex, null);
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
        tempName(join(this.path, TMP_DIR), 'w'),
        this.chunkPath(hex),
        this.#keys?.encryptionKey,
        this.#keys ? chunkKey(hex) : undefined,
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
    // The bytes a local repository's chunk file holds (native/repo/chunk_file.cc), in one native
    // task: sampled first (incompressible data is stored raw), compressed, sealed.
    const room = this.#recordBuffers.pop() ?? Buffer.allocUnsafeSlow(this.chunkSize + CHUNK_OBJECT_OVERHEAD);
    try {
      let n: number;
      try {
        n = await native.encodeChunk(
          plain,
          room,
          this.config.compression.level,
          this.#keys?.encryptionKey,
          this.#keys ? chunkKey(hex) : undefined,
        );
      } catch (err) {
        throw toLowtideError(err, 'INTERNAL');
      }
      return await this.#storeRemoteRecord(storage, hex, room.subarray(0, n));
    } finally {
      if ((this.#recordBuffers.length + 1) * room.length <= RECORD_BUFFER_BYTES_KEPT) this.#recordBuffers.push(room);
    }
  }

  /** Stores one encoded chunk object: as a record of the pack being filled (copied there), or as its own object. */
  async #storeRemoteRecord(storage: ObjectStorage, hex: string, body: Buffer): Promise<StoredChunk> {
    if (this.isPacked) {
      // Another chunk with these bytes may have been put meanwhile.
      if (await this.hasChunk(hex)) return { written: false, storedBytes: 0 };
      this.#packs ??= new PackWriter(
        storage,
        this.config.packSize!,
        (ids, locations) => {
          ids.forEach((id, i) => {
            this.#knownChunks.set(id, locations[i]!);
            this.#pendingChunks.delete(id);
          });
        },
        this.chunkSize + CHUNK_OBJECT_OVERHEAD,
      );
      // Known (for the index and later chunks) as soon as it has a place.
      this.#pendingChunks.set(hex, this.#packs.place(hex, body));
      await this.#packs.room();
      return { written: true, storedBytes: body.length };
    }
    const written = await storage.putIfAbsent(chunkKey(hex), body, { verifiedOnRead: true });
    this.#knownChunks.set(hex, null);
    return written ? { written: true, storedBytes: body.length } : { written: false, storedBytes: 0 };
  }

  /** Remembers every chunk a backup's index names as present (a remote backup's parent). */
  async rememberChunksOf(m: Manifest): Promise<void> {
    if (!this.#storage) return;
    const index = await this.openIndex(m);
    try {
      for (let i = 0; i < m.chunkCount; i++) {
        const e = await index.entry(i);
        if (e !== null) this.#knownChunks.set(e.toString('hex'), index.location(i) ?? null);
      }
    } finally {
      await index.close();
    }
  }

  async syncChunkDirs(prefixes: Iterable<string>): Promise<void> {
    // An object is durable when its PUT succeeds; packs are uploaded now.
    if (this.#storage) return this.#packs?.flush();
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
  async getChunk(hex: string, expectedLength?: number, location?: PackLocation): Promise<Buffer> {
    const lease = await this.leaseChunk(hex, expectedLength, location);
    try {
      return Buffer.from(lease.data);
    } finally {
      lease.release();
    }
  }

  /**
   * getChunk() into reused buffers: `data` is valid until release(), which
   * must be called once the caller is done with it (restore, verify). In a
   * packed repository, `location` says where the chunk's record is (its
   * backup's index does); without it, a record this process knows of.
   */
  async leaseChunk(
    hex: string,
    expectedLength?: number,
    location?: PackLocation,
  ): Promise<{ data: Buffer; release(): void }> {
    const loc = this.isPacked ? (location ?? this.#locationOf(hex)) : undefined;
    const path = loc ? this.#recordPath(loc) : this.chunkPath(hex);
    // A chunk file is at most its header and the plain data (zstd is stored
    // only when smaller), sealed in an encrypted repository.
    const cap = this.#chunkCap(expectedLength);
    const taken: Buffer[] = [];
    const release = (): void => {
      for (const b of taken.splice(0)) giveBuffer(b);
    };
    try {
      let file: Buffer;
      let size: number;
      try {
        await this.#checkPrefix(hex);
        if (loc && loc.length > cap) {
          throw new LowtideError('REPO_CORRUPT', `the record of chunk ${hex} (${loc.length} bytes) is too large`);
        }
        if (this.#storage) {
          // Read into a reused buffer (the body is at most `cap` bytes).
          const into = (): Buffer => {
            if (taken.length === 0) taken.push(takeBuffer(cap));
            return taken[0]!;
          };
          const got = loc
            ? await this.#storage.get(packKey(loc.pack), { offset: loc.offset, length: loc.length }, cap, into)
            : await this.#storage.get(chunkKey(hex), undefined, cap, into);
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
      const plain = await this.#openChunk(hex, file, size, expectedLength, path, taken);
      return { data: plain, release };
    } catch (err) {
      release();
      throw err;
    }
  }

  /**
   * Packed: the chunks of records in one pack, read with one request (the
   * span from the first to the last of them); each result is the chunk's
   * lease (as from leaseChunk()) or the error that chunk alone would have given.
   */
  async leaseRecords(
    records: readonly { hex: string; expectedLength: number; location: PackLocation }[],
  ): Promise<({ data: Buffer; release(): void } | LowtideError)[]> {
    const pack = records[0]!.location.pack;
    if (records.some((r) => r.location.pack !== pack))
      throw new LowtideError('INTERNAL', 'leaseRecords: records of several packs');
    const start = Math.min(...records.map((r) => r.location.offset));
    const span = Math.max(...records.map((r) => r.location.offset + r.location.length)) - start;
    // The span is read into a reused buffer that its records' leases share
    // (a record stored plain is a view into it): back to the pool once the
    // last of them is released.
    let shared: Buffer | undefined;
    let holders = records.length;
    const drop = (): void => {
      if (--holders === 0 && shared) giveBuffer(shared);
    };
    const into = (length: number): Buffer => (shared ??= takeBuffer(spanBufferSize(length)));
    let bytes: Buffer | undefined;
    try {
      bytes = await this.storage.get(packKey(pack), { offset: start, length: span }, span, into);
    } catch (err) {
      if (shared) giveBuffer(shared);
      const e = toLowtideError(err, 'IO_ERROR', `reading ${this.#recordPath(records[0]!.location)}`);
      return records.map(() => e);
    }
    if (bytes === undefined) {
      if (shared) giveBuffer(shared);
      return records.map(
        ({ hex, location }) =>
          new LowtideError('CHUNK_MISSING', `chunk ${hex} is missing from the repository`, {
            path: this.#recordPath(location),
          }),
      );
    }
    const got = bytes;
    // Each record's bytes, taken before any is opened (in place): a record
    // named twice (a chunk repeated in the run) is opened in place once, the
    // others open a copy of it.
    const seen = new Set<number>();
    const opening = records.map(({ hex, expectedLength, location }) => {
      const taken: Buffer[] = [];
      let held = true;
      const release = (): void => {
        for (const b of taken.splice(0)) giveBuffer(b);
        if (held) drop();
        held = false;
      };
      const at = location.offset - start;
      let file = got.subarray(at, at + location.length);
      if (seen.has(location.offset) && file.length <= this.#chunkCap(expectedLength)) {
        const copy = takeBuffer(this.#chunkCap(expectedLength));
        taken.push(copy);
        file = copy.subarray(0, file.copy(copy));
      }
      seen.add(location.offset);
      return { hex, expectedLength, location, file, taken, release };
    });
    return Promise.all(
      opening.map(async ({ hex, expectedLength, location, file, taken, release }) => {
        const path = this.#recordPath(location);
        try {
          if (file.length !== location.length || location.length > this.#chunkCap(expectedLength)) {
            throw new LowtideError('CHUNK_CORRUPT', `chunk ${hex}: its pack ${location.pack} ends before its record`, {
              path,
            });
          }
          const data = await this.#openChunk(hex, file, file.length, expectedLength, path, taken);
          return { data, release };
        } catch (err) {
          release();
          return toLowtideError(err, 'CHUNK_CORRUPT');
        }
      }),
    );
  }

  /** The largest chunk object (or record) of this repository, for a chunk of at least `expectedLength` bytes. */
  #chunkCap(expectedLength?: number): number {
    return CHUNK_HEADER_SIZE + Math.max(this.chunkSize, expectedLength ?? 0) + (this.#keys ? SEAL_OVERHEAD : 0);
  }

  /** Where a record is, for messages. */
  #recordPath(loc: PackLocation): string {
    return `${this.path}/${packKey(loc.pack)} at ${loc.offset} (${loc.length} bytes)`;
  }

  /**
   * The plain bytes of a chunk object (or record) read into `file[0, size)`:
   * opened (encrypted repository), its header checked, decompressed (into a
   * buffer added to `taken`) and checked against its id. CHUNK_CORRUPT naming
   * the chunk otherwise.
   */
  async #openChunk(
    hex: string,
    file: Buffer,
    size: number,
    expectedLength: number | undefined,
    path: string,
    taken: Buffer[],
  ): Promise<Buffer> {
    const cap = this.#chunkCap(expectedLength);
    if (size > cap)
      throw new LowtideError(
        'CHUNK_CORRUPT',
        `chunk ${hex} is larger (${size} bytes) than any chunk of this repository`,
        { path },
      );
    if (this.#keys) {
      // Authenticated before a byte of it is used (in place: a view into `file`).
      file = await openObject(this.#keys, chunkKey(hex), file.subarray(0, size), 'CHUNK_CORRUPT', `chunk ${hex}`, path);
      size = file.length;
    }
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
    const digest = await this.chunkDigest(plain, false);
    if (digest === null || digest.toString('hex') !== hex) {
      throw new LowtideError('CHUNK_CORRUPT', `chunk ${hex} does not match its digest (its content is damaged)`, {
        path,
      });
    }
    return plain;
  }

  /**
   * Checks a record of a packed repository read with its pack (verify): the
   * chunk's plain length, or CHUNK_CORRUPT naming the chunk.
   */
  async checkRecord(hex: string, record: Buffer, location: PackLocation): Promise<number> {
    const taken: Buffer[] = [];
    try {
      if (record.length > this.#chunkCap()) {
        throw new LowtideError(
          'CHUNK_CORRUPT',
          `chunk ${hex} is larger (${record.length} bytes) than any chunk of this repository`,
        );
      }
      return (await this.#openChunk(hex, record, record.length, undefined, this.#recordPath(location), taken)).length;
    } finally {
      for (const b of taken) giveBuffer(b);
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
    const ids: string[] = [];
    for (const n of names.filter((x) => x.endsWith('.json')).sort()) {
      const id = n.slice(0, -5);
      if (!BACKUP_ID_PATTERN.test(id)) {
        const path = this.#objectPath(`${BACKUPS_DIR}/${n}`);
        damaged.push({
          id,
          error: new LowtideError('REPO_CORRUPT', `${path} is not a backup: its name is not a backup id`, { path }),
        });
        continue;
      }
      ids.push(id);
    }
    // Remote: a few requests at once (each waits for the network).
    const results = new Array<Manifest | LowtideError>(ids.length);
    let next = 0;
    const reader = async (): Promise<void> => {
      for (let i = next++; i < ids.length; i = next++) {
        try {
          results[i] = await this.readManifest(ids[i]!);
        } catch (err) {
          results[i] = toLowtideError(err, 'REPO_CORRUPT');
        }
      }
    };
    await Promise.all(Array.from({ length: this.#storage ? MANIFESTS_AT_ONCE : 1 }, reader));
    ids.forEach((id, i) => {
      const r = results[i]!;
      if (r instanceof LowtideError) damaged.push({ id, error: r });
      else backups.push(r);
    });
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
      return await readdir(this.#backupsHome);
    } catch (err) {
      throw toLowtideError(err, 'REPO_CORRUPT', `listing ${this.#backupsHome}`);
    }
  }

  /** Removes names from backups/ (indexes and catalogs without a manifest); a missing one is no error. */
  async removeBackupFiles(names: readonly string[]): Promise<void> {
    if (this.#storage) return this.#storage.delete(names.map((n) => `${BACKUPS_DIR}/${n}`));
    for (const n of names) await unlink(join(this.#backupsHome, n)).catch(() => undefined);
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

  /** Packed: every object in packs/, and what is there that cannot be a pack (`unexpected` says why). */
  async *packEntries(): AsyncGenerator<{ name: string; size: number; unexpected?: string }> {
    for await (const o of this.storage.list(`${PACKS_DIR}/`)) {
      const name = o.key.slice(PACKS_DIR.length + 1);
      if (isPackName(name)) yield { name, size: o.size };
      else yield { name, size: o.size, unexpected: `unexpected object ${this.path}/${o.key} among the packs` };
    }
  }

  /** Packed: a whole pack (undefined when it does not exist); REPO_CORRUPT past `maxBytes`. */
  async readPack(name: string, maxBytes: number): Promise<Buffer | undefined> {
    return this.storage.get(packKey(name), undefined, maxBytes);
  }

  /** Packed: deletes packs (after starting a new prune epoch); `sizes` gives their bytes. */
  async deletePacks(
    names: readonly string[],
    sizes: ReadonlyMap<string, number>,
  ): Promise<{ packs: number; bytes: number }> {
    const storage = this.storage;
    if (names.length === 0) return { packs: 0, bytes: 0 };
    // Known-chunks indexes made before may name records in these packs: drop them all.
    if (!this.#epochStarted) {
      await newPruneEpoch(storage);
      this.#epochStarted = true;
    }
    await storage.delete(names.map(packKey));
    const gone = new Set(names);
    for (const [hex, loc] of this.#knownChunks) if (loc && gone.has(loc.pack)) this.#knownChunks.delete(hex);
    return { packs: names.length, bytes: names.reduce((n, p) => n + (sizes.get(p) ?? 0), 0) };
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
    const key = `${BACKUPS_DIR}/${manifestFileName(id)}`;
    const path = this.#objectPath(key);
    let text: string;
    try {
      const data = await this.#readObject(key, `the manifest of backup ${id}`, MAX_MANIFEST_BYTES);
      if (data === undefined) throw Object.assign(new Error('missing'), { code: 'ENOENT' });
      text = data.toString('utf8');
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
    const staged = this.#usesStage
      ? await this.#download(`${BACKUPS_DIR}/${indexFileName(checkedId(m.id))}`, what)
      : undefined;
    const path = staged ?? this.indexPath(m);
    const version = this.isPacked ? 2 : 1;
    const expected = INDEX_HEADER_SIZE + indexEntrySize(version) * m.chunkCount;
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
    const reader = new IndexReader(fh, path, m, version);
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
    const w = new IndexWriter(
      fh,
      tmp,
      this.chunkSize,
      chunkCount,
      this.isPacked ? (digest) => this.#locationOf(digest.toString('hex')) : undefined,
    );
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
    if (this.#usesStage) return this.#commitStaged(manifest, finalIndex, lock);
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
   * From the staging directory (remote or encrypted): the catalog and the
   * index are uploaded (sealed when encrypted), then the manifest, last and
   * remotely only if absent: it is the commit point. Every chunk was written
   * before (each PUT is durable when it succeeds; local chunk directories
   * were synced by the caller).
   */
  async #commitStaged(manifest: Manifest, indexFile: string, lock: RepoLock | undefined): Promise<void> {
    const id = checkedId(manifest.id);
    const upload = async (file: string, name: string): Promise<void> => {
      try {
        if (!(await this.#writeObject(`${BACKUPS_DIR}/${name}`, await readFile(file)))) {
          throw new LowtideError('INTERNAL', `${this.path}/${BACKUPS_DIR}/${name} exists already`);
        }
      } finally {
        await unlink(file).catch(() => undefined);
      }
    };
    const uploads = [upload(indexFile, indexFileName(id))];
    if (manifest.catalog) uploads.push(upload(join(this.backupsDir, catalogFileName(id)), catalogFileName(id)));
    const done = await Promise.allSettled(uploads);
    for (const d of done) if (d.status === 'rejected') throw d.reason;
    lock?.check();
    if (
      !(await this.#writeObject(
        `${BACKUPS_DIR}/${manifestFileName(id)}`,
        Buffer.from(JSON.stringify(manifest, null, 2) + '\n'),
      ))
    ) {
      throw new LowtideError('INTERNAL', `backup ${id} exists already in ${this.path}`);
    }
  }

  /**
   * Writes a VM record, `vms/<runId>.json` (sealed in an encrypted
   * repository): atomically in a local repository, only if absent in a
   * remote one. Returns where it is.
   */
  async writeVmRecord(runId: string, record: unknown): Promise<string> {
    if (!/^[0-9A-Za-z-]{1,80}$/.test(runId))
      throw new LowtideError('INTERNAL', `not a run id: ${JSON.stringify(runId)}`);
    const key = `${VMS_DIR}/${runId}.json`;
    if (!this.#storage) {
      try {
        await mkdir(join(this.path, VMS_DIR), { recursive: true });
      } catch (err) {
        throw repoWriteError(err, `creating ${join(this.path, VMS_DIR)}`);
      }
    }
    if (!(await this.#writeObject(key, Buffer.from(JSON.stringify(record, null, 2) + '\n')))) {
      throw new LowtideError('INTERNAL', `${this.#objectPath(key)} exists already`);
    }
    return this.#objectPath(key);
  }

  /** A VM record written by writeVmRecord() (decrypted); undefined when there is none. */
  async readVmRecord(runId: string): Promise<unknown> {
    const key = `${VMS_DIR}/${runId}.json`;
    const data = await this.#readObject(key, `the VM record ${runId}`, MAX_MANIFEST_BYTES);
    if (data === undefined) return undefined;
    try {
      return JSON.parse(data.toString('utf8'));
    } catch {
      throw new LowtideError('REPO_CORRUPT', `${this.#objectPath(key)} is not valid JSON`);
    }
  }

  /** The run ids of the VM records in the repository (`vms/<runId>.json`), unsorted. */
  async vmRecordIds(): Promise<string[]> {
    const names: string[] = [];
    if (this.#storage) {
      for await (const o of this.#storage.list(`${VMS_DIR}/`)) names.push(o.key.slice(VMS_DIR.length + 1));
    } else {
      try {
        names.push(...(await readdir(join(this.path, VMS_DIR))));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT')
          throw toLowtideError(err, 'IO_ERROR', `listing ${join(this.path, VMS_DIR)}`);
      }
    }
    return names.filter((n) => /^[0-9A-Za-z-]{1,80}\.json$/.test(n)).map((n) => n.slice(0, -'.json'.length));
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
      await unlink(join(this.#backupsHome, manifestFileName(m.id)));
      await syncDir(this.#backupsHome);
      for (const name of [indexFileName(m.id), catalogFileName(m.id)]) {
        await unlink(join(this.#backupsHome, name)).catch((err: unknown) => {
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
/** Where VM records are (docs/repository-format.md, "VM records"). */
const VMS_DIR = 'vms';

/** Manifests of a remote repository read at once by listBackups(). */
const MANIFESTS_AT_ONCE = 8;

/** Largest object #download() keeps for the next call (an index of 1 TiB of 1 MiB chunks is 64 MiB). */
const DOWNLOAD_CACHE_BYTES = 16 * 1024 * 1024;

/** Chunk directories synced at once before a manifest is written. */
const SYNC_DIRS_AT_ONCE = 8;
/** Room a chunk object needs beyond its plaintext (native/repo/chunk_file.h): header, nonce and tag. */
const CHUNK_OBJECT_OVERHEAD = CHUNK_HEADER_SIZE + SEAL_OVERHEAD;
/** Bytes of encoding buffers a remote repository keeps for reuse (enough for the chunks a backup has in flight). */
const RECORD_BUFFER_BYTES_KEPT = 32 * 1024 * 1024;
