/**
 * The storage under a remote repository: a flat namespace of immutable
 * objects under one prefix. Keys are relative to the repository
 * (`config.json`, `chunks/3f/3fa9…`, `backups/<id>.json`, `locks/…`).
 */
import type { RemoteWrites } from '../../throttle/types.js';

export interface StoredObject {
  /** The key, relative to the repository. */
  key: string;
  size: number;
  /** When the object was written, by the storage's clock. */
  modified: Date;
}

export interface ObjectStorage {
  /** Where the repository is, for messages: `s3://bucket/prefix`. */
  readonly location: string;
  /** Where the repository's known-chunks index is kept (known-chunks.ts; undefined: the default). */
  readonly cacheDir?: string | undefined;
  /** The bytes written so far, for a job's throttle (a server on this host writes them to its disks). */
  readonly writes?: RemoteWrites | undefined;
  /** Checks that the storage can be reached and exists (a missing bucket is REPO_NOT_FOUND). */
  check(): Promise<void>;
  /**
   * Writes `data` under `key` unless an object is there already; true when
   * this call wrote it. Never overwrites. `verifiedOnRead`: the object checks
   * itself whenever it is read (a chunk object or a pack, whose records are
   * checked against their ids), so the request need not sign its payload.
   */
  putIfAbsent(key: string, data: Buffer, options?: { verifiedOnRead?: boolean | undefined }): Promise<boolean>;
  /** Writes `data` under `key`, replacing what is there (lease objects only). */
  put(key: string, data: Buffer): Promise<void>;
  /**
   * The whole object, or bytes [offset, offset + length) of it; undefined
   * when it does not exist. `into`: gives the buffer (of at least `length`
   * bytes) the body is read into, and the result is a view into it; without
   * it, a new buffer. A retried request may ask again (the same buffer may
   * be given).
   */
  get(
    key: string,
    range?: { offset: number; length: number },
    maxBytes?: number,
    into?: (length: number) => Buffer,
  ): Promise<Buffer | undefined>;
  head(key: string): Promise<StoredObject | undefined>;
  /** Every object whose key starts with `prefix`, in key order, page by page. */
  list(prefix: string): AsyncGenerator<StoredObject>;
  /** Deletes the objects (a missing one is no error), in batches. */
  delete(keys: readonly string[]): Promise<void>;
  /** Drops the connections. */
  close(): void;
}
