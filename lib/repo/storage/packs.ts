/**
 * Pack files of a remote repository (format version 2,
 * docs/repository-format.md "Packs"): chunk records, each exactly the bytes
 * of a chunk object, written one after another into `packs/<32 hex>` objects
 * of about the repository's pack size, so that the storage handles one
 * request per pack instead of one per chunk.
 *
 * A backup's chunk index names, for every chunk, its record: the pack, the
 * offset and the length. Index entries (and the records of the known-chunks
 * index) are 64 bytes: the chunk id (32), the pack name (16 raw bytes), the
 * offset (u64 LE), the length (u32 LE) and 4 reserved zero bytes.
 */
import { randomBytes } from 'node:crypto';
import { LowtideError } from '../../errors.js';
import type { ObjectStorage } from './types.js';

export const PACKS_DIR = 'packs';
/** Bytes of an index entry (and known-chunks record) of a packed repository. */
export const PACKED_ENTRY_SIZE = 64;
/** Packs being uploaded at once by one repository (each holds its bytes in memory). */
export const PACKS_IN_FLIGHT = 3;
export const DEFAULT_PACK_SIZE = 16 * 1024 * 1024;
export const MIN_PACK_SIZE = 1024 * 1024;
export const MAX_PACK_SIZE = 256 * 1024 * 1024;

const PACK_NAME = /^[0-9a-f]{32}$/;

/** Where a chunk's record is. */
export interface PackLocation {
  /** The pack's name: 32 lowercase hex characters. */
  pack: string;
  offset: number;
  length: number;
}

/** True for a pack name (the last part of `packs/<name>`). */
export function isPackName(name: string): boolean {
  return PACK_NAME.test(name);
}

export function packKey(pack: string): string {
  if (!PACK_NAME.test(pack)) throw new LowtideError('INTERNAL', `not a pack name: ${JSON.stringify(pack)}`);
  return `${PACKS_DIR}/${pack}`;
}

/** Writes an index entry of a packed repository into `out` at `at`: id, then where its record is. */
export function encodePackedEntry(out: Buffer, at: number, digest: Buffer, loc: PackLocation): void {
  digest.copy(out, at, 0, 32);
  out.write(loc.pack, at + 32, 16, 'hex');
  out.writeBigUInt64LE(BigInt(loc.offset), at + 48);
  out.writeUInt32LE(loc.length, at + 56);
  out.writeUInt32LE(0, at + 60);
}

/**
 * Where the record of a 64-byte entry is; `where` names the entry for the
 * message when it cannot be a record (REPO_CORRUPT).
 */
export function decodePackedLocation(entry: Buffer, where: string): PackLocation {
  const offset = Number(entry.readBigUInt64LE(48));
  const length = entry.readUInt32LE(56);
  if (length === 0 || !Number.isSafeInteger(offset) || offset > Number.MAX_SAFE_INTEGER - length) {
    throw new LowtideError('REPO_CORRUPT', `${where}: not a chunk record (offset ${offset}, length ${length})`);
  }
  return { pack: entry.toString('hex', 32, 48), offset, length };
}

/**
 * Fills packs with records and uploads them (If-None-Match: *), at most
 * PACKS_IN_FLIGHT at once: room() waits while that many are being uploaded,
 * so memory stays bounded (about PACKS_IN_FLIGHT + 1 packs, and the records
 * the callers place while they wait). A record is copied into the pack's
 * buffer when it is placed; the buffers are reused once their upload has
 * ended (fresh memory costs a page fault per page). A record's location is
 * known when place() returns; it is durable once its pack's upload
 * succeeded (`onUploaded`). flush() uploads the pack being filled and waits
 * for every upload; the first failure is thrown by every later call
 * (nothing that names a record of a failed pack may be committed).
 */
export class PackWriter {
  #buffer: Buffer | undefined;
  readonly #spare: Buffer[] = [];
  #ids: string[] = [];
  #locations: PackLocation[] = [];
  #bytes = 0;
  #name = newPackName();
  readonly #uploads = new Set<Promise<void>>();
  #failure: unknown;

  /**
   * `recordBound`: the size of the largest record expected (a pack's buffer
   * has room for packSize bytes and one such record, the one that crosses
   * that size; a larger record grows it).
   */
  constructor(
    private readonly storage: ObjectStorage,
    private readonly packSize: number,
    private readonly onUploaded: (ids: readonly string[], locations: readonly PackLocation[]) => void,
    private readonly recordBound = 0,
  ) {}

  /**
   * Appends one record (the chunk object's bytes) for chunk `id` and returns
   * where it is; a pack that is full starts its upload. Call room() next.
   */
  place(id: string, record: Uint8Array): PackLocation {
    this.#throwIfFailed();
    const loc = { pack: this.#name, offset: this.#bytes, length: record.length };
    this.#room(record.length).set(record, this.#bytes);
    this.#ids.push(id);
    this.#locations.push(loc);
    this.#bytes += record.length;
    if (this.#bytes >= this.packSize) this.#startUpload();
    return loc;
  }

  /** Waits while PACKS_IN_FLIGHT packs are being uploaded. */
  async room(): Promise<void> {
    while (this.#uploads.size >= PACKS_IN_FLIGHT) await Promise.race(this.#uploads);
    this.#throwIfFailed();
  }

  /** Uploads the pack being filled (if any) and waits for every upload. */
  async flush(): Promise<void> {
    if (this.#bytes > 0) this.#startUpload();
    await Promise.allSettled([...this.#uploads]);
    this.#throwIfFailed();
  }

  /** Waits for the uploads under way and drops the pack being filled (a job that failed). */
  async settle(): Promise<void> {
    this.#ids = [];
    this.#locations = [];
    this.#bytes = 0;
    await Promise.allSettled([...this.#uploads]);
  }

  #throwIfFailed(): void {
    if (this.#failure !== undefined) throw this.#failure;
  }

  /** The current pack's buffer, with room for `more` bytes after those placed. */
  #room(more: number): Buffer {
    const need = this.#bytes + more;
    let b = this.#buffer ?? this.#spare.pop();
    if (b === undefined || b.length < need) {
      const grown = Buffer.allocUnsafeSlow(Math.max(need, this.packSize + Math.max(more, this.recordBound)));
      if (b !== undefined && this.#bytes > 0) b.copy(grown, 0, 0, this.#bytes);
      b = grown;
    }
    this.#buffer = b;
    return b;
  }

  #startUpload(): void {
    const name = this.#name;
    const buffer = this.#buffer!;
    const ids = this.#ids;
    const locations = this.#locations;
    const body = buffer.subarray(0, this.#bytes);
    this.#buffer = undefined;
    this.#ids = [];
    this.#locations = [];
    this.#bytes = 0;
    this.#name = newPackName();
    const upload: Promise<void> = this.storage
      .putIfAbsent(packKey(name), body, { verifiedOnRead: true })
      .then((written) => {
        if (!written) throw new LowtideError('INTERNAL', `pack ${name} exists already in ${this.storage.location}`);
        this.onUploaded(ids, locations);
      })
      .catch((err: unknown) => {
        this.#failure ??= err;
      })
      .finally(() => {
        this.#uploads.delete(upload);
        // The request has ended (every retry included): its bytes may be overwritten.
        if (this.#spare.length < PACKS_IN_FLIGHT) this.#spare.push(buffer);
      });
    this.#uploads.add(upload);
  }
}

function newPackName(): string {
  return randomBytes(16).toString('hex');
}
