/**
 * The file catalog of a backup: every file and directory of the FAT volumes
 * it holds, with each file's extents on the image. It is written with the
 * backup, so listing files needs no chunk at all and extracting a file reads
 * only the chunks under its extents.
 *
 * File format (backups/<id>.catalog): a sequence of frames, each
 * [u32 LE length][one zstd frame]; every frame decompresses to UTF-8 JSON
 * lines. The first line of the first frame is the header
 * {"format":"lowtide-catalog","version":1}; every other line is a CatalogEntry.
 */
import { createHash, type Hash } from 'node:crypto';
import { constants as fsc } from 'node:fs';
import { open, rename, unlink, type FileHandle } from 'node:fs/promises';
import { LowtideError } from '../errors.js';
import { compress, decompress } from './compress.js';
import { openRegularFile, repoWriteError, tempName, writeFully } from './files.js';
import { CatalogEntrySchema, parseWith, type CatalogEntry } from './schema.js';

export const CATALOG_FORMAT = 'lowtide-catalog';
export const CATALOG_VERSION = 1;

export type { CatalogEntry } from './schema.js';

/** Plain bytes per frame (about: a frame ends with a whole line). */
export const FRAME_BYTES = 1 << 20;

export class CatalogWriter {
  #position = 0;
  #count = 0;
  readonly #hash: Hash = createHash('sha256');

  private constructor(
    private readonly fh: FileHandle,
    readonly tmpPath: string,
    private readonly level: number,
  ) {}

  /** A new catalog in `tmpDir`, its header frame written. */
  static async create(tmpDir: string, level: number): Promise<CatalogWriter> {
    const tmp = tempName(tmpDir, 'catalog');
    let fh: FileHandle;
    try {
      fh = await open(tmp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, 0o644);
    } catch (err) {
      throw repoWriteError(err, `creating ${tmp}`);
    }
    const w = new CatalogWriter(fh, tmp, level);
    try {
      await w.#writeFrame(Buffer.from(JSON.stringify({ format: CATALOG_FORMAT, version: CATALOG_VERSION }) + '\n'));
    } catch (err) {
      await w.abort();
      throw err;
    }
    return w;
  }

  get entries(): number {
    return this.#count;
  }

  /** Whole JSON lines of `entries` CatalogEntries (each ending in a newline), written as one frame. */
  async addFrame(text: Buffer, entries: number): Promise<void> {
    if (text.length === 0) return;
    await this.#writeFrame(text);
    this.#count += entries;
  }

  async #writeFrame(plain: Buffer): Promise<void> {
    const frame = await compress(plain, this.level);
    const len = Buffer.alloc(4);
    len.writeUInt32LE(frame.length, 0);
    this.#hash.update(len).update(frame);
    try {
      await writeFully(this.fh, [len, frame], this.#position);
    } catch (err) {
      throw repoWriteError(err, `writing ${this.tmpPath}`);
    }
    this.#position += len.length + frame.length;
  }

  /** Syncs and moves the catalog into place; returns its SHA-256. */
  async finish(finalPath: string): Promise<string> {
    try {
      await this.fh.sync();
      await this.fh.close();
      await rename(this.tmpPath, finalPath);
    } catch (err) {
      throw repoWriteError(err, `writing ${finalPath}`);
    }
    return this.#hash.digest('hex');
  }

  async abort(): Promise<void> {
    await this.fh.close().catch(() => undefined);
    await unlink(this.tmpPath).catch(() => undefined);
  }
}

/** Largest frame (compressed, and each decompressed): writers make frames of about FRAME_BYTES. */
const MAX_FRAME_BYTES = 256 * 1024 * 1024;

/**
 * Reads a catalog, checking every line against the schema as it goes and the
 * whole file's digest at the end. The file must be a regular file (not a
 * link, FIFO or device). With `imageSize`, every extent must lie inside the
 * image. Anything wrong is REPO_CORRUPT naming the file (and the line).
 */
export async function* readCatalog(path: string, sha256: string, imageSize?: number): AsyncGenerator<CatalogEntry> {
  let fh: FileHandle;
  try {
    ({ fh } = await openRegularFile(path, 'the file catalog', 'REPO_CORRUPT'));
  } catch (err) {
    if (err instanceof LowtideError) throw err;
    throw new LowtideError('REPO_CORRUPT', `cannot open the file catalog ${path}`, { cause: err, path });
  }
  const hash = createHash('sha256');
  let position = 0;
  let header = true;
  let lineNumber = 0;
  try {
    for (;;) {
      const len = Buffer.alloc(4);
      const { bytesRead } = await fh.read(len, 0, 4, position);
      if (bytesRead === 0) break;
      if (bytesRead !== 4) throw new LowtideError('REPO_CORRUPT', `${path} is truncated`, { path });
      const n = len.readUInt32LE(0);
      if (n > MAX_FRAME_BYTES) throw new LowtideError('REPO_CORRUPT', `${path}: bad frame length ${n}`, { path });
      const frame = Buffer.alloc(n);
      const r = await fh.read(frame, 0, n, position + 4);
      if (r.bytesRead !== n) throw new LowtideError('REPO_CORRUPT', `${path} is truncated`, { path });
      hash.update(len);
      hash.update(frame);
      position += 4 + n;
      let text: string;
      try {
        text = (await decompress(frame, MAX_FRAME_BYTES)).toString('utf8');
      } catch (err) {
        throw new LowtideError('REPO_CORRUPT', `${path}: a frame does not decompress`, { cause: err, path });
      }
      for (const line of text.split('\n')) {
        if (line === '') continue;
        lineNumber++;
        const where = `${path}, line ${lineNumber}`;
        let raw: unknown;
        try {
          raw = JSON.parse(line);
        } catch {
          throw new LowtideError('REPO_CORRUPT', `${where} is not valid JSON`, { path });
        }
        if (header) {
          const h = raw as { format?: unknown; version?: unknown } | null;
          if (h === null || typeof h !== 'object' || h.format !== CATALOG_FORMAT || h.version !== CATALOG_VERSION) {
            throw new LowtideError('REPO_FORMAT', `${path} is not a version ${CATALOG_VERSION} lowtide catalog`, {
              path,
            });
          }
          header = false;
          continue;
        }
        const e = parseWith(CatalogEntrySchema, raw, 'REPO_CORRUPT', where, path);
        if (imageSize !== undefined) {
          for (const [offset, length] of e.extents) {
            if (offset + length > imageSize) {
              throw new LowtideError(
                'REPO_CORRUPT',
                `${where}: ${e.path} has an extent [${offset}, ${length}] past the image's end (${imageSize} bytes)`,
                { path },
              );
            }
          }
        }
        yield e;
      }
    }
    if (header) throw new LowtideError('REPO_CORRUPT', `${path} is empty: it has no catalog header`, { path });
    if (hash.digest('hex') !== sha256)
      throw new LowtideError('REPO_CORRUPT', `the file catalog ${path} is damaged`, { path });
  } finally {
    await fh.close();
  }
}
