/**
 * Random access to a backup's chunk index (entry i at byte 32 + 32·i), for
 * reading single files. The whole index is checked against the manifest's
 * digest once, when opened, by a streaming pass (bounded memory); lookups
 * then read the same open file.
 */
import { LowtideError } from '../errors.js';
import type { Manifest } from './format.js';
import type { IndexReader, Repository } from './repository.js';
import type { PackLocation } from './storage/packs.js';

export class IndexLookup {
  private constructor(
    private readonly reader: IndexReader,
    private readonly manifest: Manifest,
  ) {}

  static async open(repo: Repository, manifest: Manifest): Promise<IndexLookup> {
    const reader = await repo.openIndex(manifest);
    try {
      await reader.verify();
    } catch (err) {
      await reader.close();
      throw err;
    }
    return new IndexLookup(reader, manifest);
  }

  /** The digest of chunk i (and in a packed repository where its record is), or null for a zero chunk. */
  async entry(i: number): Promise<{ digest: Buffer; location: PackLocation | undefined } | null> {
    if (!Number.isSafeInteger(i) || i < 0 || i >= this.manifest.chunkCount) {
      throw new LowtideError(
        'OUT_OF_RANGE',
        `chunk ${i} is outside backup ${this.manifest.id} (${this.manifest.chunkCount} chunks)`,
      );
    }
    return this.reader.entryAt(i);
  }

  async close(): Promise<void> {
    await this.reader.close();
  }
}
