/**
 * A backup's chunk index file (docs/repository-format.md): its sequential
 * reader, which checks the whole file's SHA-256 at the end, and its writer.
 * Repository.openIndex() and createIndex() open them.
 */
import { createHash, type Hash } from 'node:crypto';
import { rename, unlink, type FileHandle } from 'node:fs/promises';
import { LowtideError } from '../errors.js';
import { repoWriteError, writeFully } from './files.js';
import { DIGEST_SIZE, INDEX_HEADER_SIZE, indexHeader, parseIndexHeader, ZERO_DIGEST, type Manifest } from './format.js';

/** Index entries read or buffered at a time. */
const INDEX_READ_ENTRIES = 4096;

/** Sequential reader of a chunk index; checks the whole file's SHA-256 at the end. */
export class IndexReader {
  readonly chunkCount: number;
  #buf = Buffer.alloc(0);
  #bufStart = 0; // entry number of #buf[0]
  readonly #hasher: Hash = createHash('sha256');
  #position = INDEX_HEADER_SIZE;
  #next = 0;

  constructor(
    private readonly fh: FileHandle,
    private readonly path: string,
    private readonly manifest: Manifest,
  ) {
    this.chunkCount = manifest.chunkCount;
  }

  async init(): Promise<void> {
    const header = Buffer.alloc(INDEX_HEADER_SIZE);
    const { bytesRead } = await this.fh.read(header, 0, INDEX_HEADER_SIZE, 0);
    const h = parseIndexHeader(header.subarray(0, bytesRead), this.path);
    if (h.chunkCount !== this.manifest.chunkCount || h.chunkSize !== this.manifest.chunkSize) {
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
    while (i >= this.#bufStart + this.#buf.length / DIGEST_SIZE) await this.#fill();
    this.#next = i + 1;
    const e = this.#buf.subarray((i - this.#bufStart) * DIGEST_SIZE, (i - this.#bufStart + 1) * DIGEST_SIZE);
    return e.equals(ZERO_DIGEST) ? null : e;
  }

  async #fill(): Promise<void> {
    const start = this.#bufStart + this.#buf.length / DIGEST_SIZE;
    const n = Math.min(INDEX_READ_ENTRIES, this.chunkCount - start);
    const buf = Buffer.alloc(n * DIGEST_SIZE);
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
    while (this.#bufStart + this.#buf.length / DIGEST_SIZE < this.chunkCount) await this.#fill();
    const extra = Buffer.alloc(1);
    const { bytesRead } = await this.fh.read(extra, 0, 1, this.#position);
    const digest = this.#hasher.digest('hex');
    if (bytesRead !== 0 || digest !== this.manifest.index.sha256) {
      throw new LowtideError('REPO_CORRUPT', `the chunk index of backup ${this.manifest.id} is damaged`, {
        path: this.path,
      });
    }
  }

  /** The entry of chunk `i` read where it is (random access, after verify()); null for a zero chunk. */
  async entryAt(i: number): Promise<Buffer | null> {
    const b = Buffer.alloc(DIGEST_SIZE);
    const { bytesRead } = await this.fh.read(b, 0, DIGEST_SIZE, INDEX_HEADER_SIZE + i * DIGEST_SIZE);
    if (bytesRead !== DIGEST_SIZE)
      throw new LowtideError('REPO_CORRUPT', `the chunk index of backup ${this.manifest.id} is truncated`, {
        path: this.path,
      });
    return b.equals(ZERO_DIGEST) ? null : b;
  }

  async close(): Promise<void> {
    await this.fh.close();
  }
}

/** Writes a chunk index sequentially into tmp/, computing its SHA-256. */
export class IndexWriter {
  #buf = Buffer.alloc(INDEX_READ_ENTRIES * DIGEST_SIZE);
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
  ) {}

  async start(): Promise<void> {
    await this.#write(indexHeader(this.chunkSize, this.chunkCount));
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
    (digest ?? ZERO_DIGEST).copy(this.#buf, this.#used);
    this.#used += DIGEST_SIZE;
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
