/**
 * Random access to a backup's chunk index (entry i at byte 32 + 32·i), for
 * reading single files. The whole index is checked against the manifest's
 * digest once, when opened, by a streaming pass (bounded memory).
 */
import { constants as fsc } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { LowtideError } from '../errors.js';
import { DIGEST_SIZE, INDEX_HEADER_SIZE, ZERO_DIGEST, type Manifest } from './format.js';
import type { Repository } from './repository.js';

export class IndexLookup {
  private constructor(
    private readonly fh: FileHandle,
    private readonly manifest: Manifest,
  ) {}

  static async open(repo: Repository, manifest: Manifest): Promise<IndexLookup> {
    const check = await repo.openIndex(manifest);
    try {
      await check.verify();
    } finally {
      await check.close();
    }
    return new IndexLookup(await open(join(repo.backupsDir, manifest.index.file), fsc.O_RDONLY), manifest);
  }

  /** The digest of chunk i, or null for a zero chunk. */
  async entry(i: number): Promise<Buffer | null> {
    if (!Number.isSafeInteger(i) || i < 0 || i >= this.manifest.chunkCount) {
      throw new LowtideError(
        'OUT_OF_RANGE',
        `chunk ${i} is outside backup ${this.manifest.id} (${this.manifest.chunkCount} chunks)`,
      );
    }
    const b = Buffer.alloc(DIGEST_SIZE);
    const { bytesRead } = await this.fh.read(b, 0, DIGEST_SIZE, INDEX_HEADER_SIZE + i * DIGEST_SIZE);
    if (bytesRead !== DIGEST_SIZE)
      throw new LowtideError('REPO_CORRUPT', `the chunk index of backup ${this.manifest.id} is truncated`);
    return b.equals(ZERO_DIGEST) ? null : b;
  }

  async close(): Promise<void> {
    await this.fh.close();
  }
}
