/**
 * A backup's chunk index file (docs/repository-format.md): its sequential
 * reader, which checks the whole file's SHA-256 at the end, and its writer.
 * Repository.openIndex() and createIndex() open them.
 */
import { createHash, type Hash } from 'node:crypto';
import { rename, unlink, type FileHandle } from 'node:fs/promises';
import { LowtideError } from '../errors.js';
import { repoWriteError, writeFully } from './files.js';
import {
  DIGEST_SIZE,
  INDEX_HEADER_SIZE,
  indexEntrySize,
  indexHeader,
  parseIndexHeader,
  ZERO_DIGEST,
  type Manifest,
} from './format.js';
import { decodePackedLocation, encodePackedEntry, type PackLocation } from './storage/packs.js';

/** Index entries read or buffered at a time. */
const INDEX_READ_ENTRIES = 4096;

/**
 * Sequential reader of a chunk index; checks the whole file's SHA-256 at the
 * end. `version` is the index version the file must have: 1 (ids), or 2 (ids
 * and where their records are, in a packed repository).
 */
export class IndexReader {
  readonly chunkCount: number;
  readonly #entrySize: number;
  #buf = Buffer.alloc(0);
  #bufStart = 0; // entry number of #buf[0]
  readonly #hasher: Hash = createHash('sha256');
  #position = INDEX_HEADER_SIZE;
  #next = 0;

  constructor(
    private readonly fh: FileHandle,
    private readonly path: string,
    private readonly manifest: Manifest,
    readonly version: 1 | 2 = 1,
  ) {
    this.chunkCount = manifest.chunkCount;
    this.#entrySize = indexEntrySize(version);
  }

  async init(): Promise<void> {
    const header = Buffer.alloc(INDEX_HEADER_SIZE);
    const { bytesRead } = await this.fh.read(header, 0, INDEX_HEADER_SIZE, 0);
    const h = parseIndexHeader(header.subarray(0, bytesRead), this.path);
    if (
      h.chunkCount !== this.manifest.chunkCount ||
      h.chunkSize !== this.manifest.chunkSize ||
      h.version !== this.version
    ) {
      throw new LowtideError('REPO_CORRUPT', `${this.path} does not match its manifest`);
    }
    this.#hasher.update(header);
  }

  /**
   * The entry of chunk `i` (null for a zero chunk). Entries must be asked for
   * in increasing order; skipped ones are still hashed.
   */
  async entry(i: number): Promise<Buffer | null> {
    if (i < this.#next - 1 || i >= this.chunkCount) throw new LowtideError('INTERNAL', `index entry ${i} out of order`);
    while (i >= this.#bufStart + this.#buf.length / this.#entrySize) await this.#fill();
    this.#next = i + 1;
    const at = (i - this.#bufStart) * this.#entrySize;
    const e = this.#buf.subarray(at, at + DIGEST_SIZE);
    return e.equals(ZERO_DIGEST) ? null : e;
  }

  /**
   * Where the record of chunk `i` is (version 2), for the entry entry(i) has
   * just returned (not null); undefined in a version 1 index.
   */
  location(i: number): PackLocation | undefined {
    if (this.version === 1) return undefined;
    const at = (i - this.#bufStart) * this.#entrySize;
    if (at < 0 || at >= this.#buf.length) throw new LowtideError('INTERNAL', `index entry ${i} is not at hand`);
    return decodePackedLocation(this.#buf.subarray(at, at + this.#entrySize), this.#entryWhere(i));
  }

  #entryWhere(i: number): string {
    return `entry ${i} of the chunk index of backup ${this.manifest.id}`;
  }

  async #fill(): Promise<void> {
    const start = this.#bufStart + this.#buf.length / this.#entrySize;
    const n = Math.min(INDEX_READ_ENTRIES, this.chunkCount - start);
    const buf = Buffer.alloc(n * this.#entrySize);
    const { bytesRead } = await this.fh.read(buf, 0, buf.length, this.#position);
    if (bytesRead !== buf.length)
      throw new LowtideError('REPO_CORRUPT', `${this.path} is truncated`, { path: this.path });
    this.#position += bytesRead;
    this.#hasher.update(buf);
    this.#buf = buf;
    this.#bufStart = start;
  }

  /** Reads whatever was not asked for and checks the file's digest. */
  async verify(): Promise<void> {
    while (this.#bufStart + this.#buf.length / this.#entrySize < this.chunkCount) await this.#fill();
    const extra = Buffer.alloc(1);
    const { bytesRead } = await this.fh.read(extra, 0, 1, this.#position);
    const digest = this.#hasher.digest('hex');
    if (bytesRead !== 0 || digest !== this.manifest.index.sha256) {
      throw new LowtideError('REPO_CORRUPT', `the chunk index of backup ${this.manifest.id} is damaged`, {
        path: this.path,
      });
    }
  }

  /**
   * The entry of chunk `i` read where it is (random access, after verify()):
   * its id and, in a version 2 index, where its record is; null for a zero chunk.
   */
  async entryAt(i: number): Promise<{ digest: Buffer; location: PackLocation | undefined } | null> {
    const size = this.#entrySize;
    const b = Buffer.alloc(size);
    const { bytesRead } = await this.fh.read(b, 0, size, INDEX_HEADER_SIZE + i * size);
    if (bytesRead !== size)
      throw new LowtideError('REPO_CORRUPT', `the chunk index of backup ${this.manifest.id} is truncated`, {
        path: this.path,
      });
    const digest = b.subarray(0, DIGEST_SIZE);
    if (digest.equals(ZERO_DIGEST)) return null;
    return { digest, location: this.version === 1 ? undefined : decodePackedLocation(b, this.#entryWhere(i)) };
  }

  async close(): Promise<void> {
    await this.fh.close();
  }
}

/**
 * Writes a chunk index sequentially into tmp/, computing its SHA-256. With
 * `locate` (a packed repository) the index is version 2: every id is written
 * with where its record is.
 */
export class IndexWriter {
  readonly #entrySize: number;
  readonly #buf: Buffer;
  #used = 0;
  #position = 0;
  #written = 0;
  readonly #hasher: Hash = createHash('sha256');
  sha256 = '';

  constructor(
    private readonly fh: FileHandle,
    readonly tmpPath: string,
    readonly chunkSize: number,
    readonly chunkCount: number,
    private readonly locate?: (digest: Buffer) => PackLocation,
  ) {
    this.#entrySize = indexEntrySize(locate ? 2 : 1);
    this.#buf = Buffer.alloc(INDEX_READ_ENTRIES * this.#entrySize);
  }

  async start(): Promise<void> {
    await this.#write(indexHeader(this.chunkSize, this.chunkCount, this.locate ? 2 : 1));
  }

  async #write(b: Buffer): Promise<void> {
    this.#hasher.update(b);
    try {
      await writeFully(this.fh, [b], this.#position);
    } catch (err) {
      throw repoWriteError(err, `writing ${this.tmpPath}`);
    }
    this.#position += b.length;
  }

  /** Appends the next entry: a 32-byte digest, or null for a zero chunk. */
  async append(digest: Buffer | null): Promise<void> {
    if (digest === null) this.#buf.fill(0, this.#used, this.#used + this.#entrySize);
    else if (this.locate) encodePackedEntry(this.#buf, this.#used, digest, this.locate(digest));
    else digest.copy(this.#buf, this.#used);
    this.#used += this.#entrySize;
    this.#written++;
    if (this.#used === this.#buf.length) await this.#flush();
  }

  async #flush(): Promise<void> {
    if (this.#used === 0) return;
    await this.#write(Buffer.from(this.#buf.subarray(0, this.#used)));
    this.#used = 0;
  }

  /** Flushes, syncs and moves the index to `finalPath`. */
  async finish(finalPath: string): Promise<void> {
    if (this.#written !== this.chunkCount) {
      throw new LowtideError('INTERNAL', `index has ${this.#written} entries, expected ${this.chunkCount}`);
    }
    await this.#flush();
    try {
      await this.fh.sync();
      await this.fh.close();
      await rename(this.tmpPath, finalPath);
    } catch (err) {
      throw repoWriteError(err, `writing ${finalPath}`);
    }
  }

  /** The digest of the whole file, valid after all entries were appended. */
  digestHex(): string {
    if (!this.sha256) {
      // Flushing happens in finish(); compute on a clone so finish() still works.
      const h = this.#hasher.copy();
      h.update(this.#buf.subarray(0, this.#used));
      this.sha256 = h.digest('hex');
    }
    return this.sha256;
  }

  async abort(): Promise<void> {
    await this.fh.close().catch(() => undefined);
    await unlink(this.tmpPath).catch(() => undefined);
  }
}
