/**
 * The last step of a backup's chunk pipeline: hash a whole chunk, detect a
 * zero chunk, and store the chunk unless the repository has it already.
 */
import type { BackupStats } from '../../repo/format.js';
import type { Repository } from '../../repo/repository.js';

export class ChunkStore {
  /** Chunk directories (the digest's first two hex digits) of chunks stored or found there: synced before the commit. */
  readonly touchedDirs = new Set<string>();
  readonly #repo: Repository;
  readonly #stats: BackupStats;
  /** Stores running now, by digest: a second chunk with the same content waits for the first. */
  readonly #running = new Map<string, Promise<void>>();

  /** Reports the bytes of each stored chunk as the job's own writes (canary's quiet checks). */
  readonly #ownWrite: (bytes: number) => void;

  constructor(repo: Repository, stats: BackupStats, ownWrite: (bytes: number) => void = () => undefined) {
    this.#repo = repo;
    this.#stats = stats;
    this.#ownWrite = ownWrite;
  }

  /**
   * Hashes and stores one whole chunk; `done` gives its buffer back.
   * Resolves to the digest to record, or null for a zero chunk.
   */
  async store(data: Buffer, done: () => void, parentEntry: Buffer | null): Promise<Buffer | null> {
    try {
      const digest = await this.#repo.chunkDigest(data, true);
      if (digest === null) {
        this.#stats.chunksZero++;
        return null;
      }
      // The parent's chunk, unless it went missing from the repository: then it is stored again.
      if (parentEntry !== null && parentEntry.equals(digest) && (await this.#repo.hasChunk(digest.toString('hex')))) {
        this.#stats.chunksReused++;
        return digest;
      }
      await this.#put(digest.toString('hex'), data);
      return digest;
    } finally {
      done();
    }
  }

  async #put(hex: string, data: Buffer): Promise<void> {
    const stats = this.#stats;
    const running = this.#running.get(hex);
    if (running) {
      await running;
      stats.chunksReused++;
      return;
    }
    const store = this.#repo.putChunk(hex, data).then((r) => {
      if (r.written) {
        stats.chunksNew++;
        stats.bytesNew += data.length;
        stats.bytesStored += r.storedBytes;
        this.#ownWrite(r.storedBytes);
        this.touchedDirs.add(hex.slice(0, 2));
      } else {
        stats.chunksReused++;
        // Another writer may have stored it just now, its directory not yet synced.
        this.touchedDirs.add(hex.slice(0, 2));
      }
    });
    this.#running.set(hex, store);
    try {
      await store;
    } finally {
      this.#running.delete(hex);
    }
  }
}
