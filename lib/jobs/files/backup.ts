/**
 * Files inside a backup, from its catalog: listing reads no chunk at all,
 * extracting reads only the chunks under the files' extents.
 */
import type { FileHandle } from 'node:fs/promises';
import { LowtideError } from '../../errors.js';
import { objectOption, stringOption } from '../../options.js';
import { passwordOption } from '../../repo/crypto.js';
import { readCatalog, type CatalogEntry } from '../../repo/catalog.js';
import type { Manifest } from '../../repo/format.js';
import { IndexLookup } from '../../repo/index-lookup.js';
import {
  checkRepositoryOption,
  withRepository,
  type Repository,
  type RepositoryLocation,
} from '../../repo/repository.js';
import type { FileListing } from '../files.js';
import {
  extractTarget,
  extractTree,
  partitionOption,
  resolveExtractOptions,
  safeName,
  volumePath,
  writeExtracted,
  type ExtractOptions,
  type ExtractResult,
  type VolumeChoice,
} from './extract.js';

export interface BackupExtractResult extends ExtractResult {
  /** Chunks read from the repository (each verified against its digest). */
  chunksRead: number;
}

/** Which backup. */
export interface BackupChoice {
  /** The repository: a path, or one already open. */
  repository: RepositoryLocation | Repository;
  /** The passphrase of an encrypted repository (default: LOWTIDE_PASSWORD from the environment). */
  password?: string | undefined;
  /** The backup's id. */
  backup: string;
}

export interface ListBackupFilesOptions extends BackupChoice, VolumeChoice {}

export interface ExtractFromBackupOptions extends BackupChoice, ExtractOptions {}

function resolveBackupChoice(opts: Record<string, unknown>): BackupChoice {
  return {
    repository: checkRepositoryOption(opts.repository),
    password: passwordOption(opts.password),
    backup: stringOption('backup', opts.backup),
  };
}

async function backupCatalog(
  repo: Repository,
  choice: BackupChoice,
): Promise<{ manifest: Manifest; path: string; sha256: string }> {
  const manifest = await repo.readManifest(choice.backup);
  if (!manifest.catalog) {
    throw new LowtideError(
      'UNSUPPORTED',
      `backup ${manifest.id} has no file catalog (it holds no FAT volume that was read by used blocks)`,
    );
  }
  return { manifest, path: await repo.catalogFile(manifest), sha256: manifest.catalog.sha256 };
}

/** Chooses the partition like openVolume does: the only one, or the one asked for. */
function pickPartition(entries: CatalogEntry[], wanted: number | undefined, id: string): number {
  const parts = [...new Set(entries.map((e) => e.partition))].sort((a, b) => a - b);
  if (wanted !== undefined) {
    if (!parts.includes(wanted)) {
      throw new LowtideError(
        'INVALID_ARGUMENT',
        `partition: expected one of ${parts.join(', ') || '(none)'} in backup ${id}, got ${wanted}`,
      );
    }
    return wanted;
  }
  if (parts.length === 1) return parts[0]!;
  throw new LowtideError(
    'INVALID_ARGUMENT',
    `partition: backup ${id} has ${parts.length} FAT partitions (${parts.join(', ')}); choose one`,
  );
}

/** The catalog entries of one partition of a backup. */
async function catalogEntries(repo: Repository, choice: BackupChoice, partition: number | undefined) {
  const c = await backupCatalog(repo, choice);
  const all: CatalogEntry[] = [];
  for await (const e of readCatalog(c.path, c.sha256, c.manifest.size)) all.push(e);
  const picked = pickPartition(all, partition, c.manifest.id);
  return { ...c, entries: all.filter((e) => e.partition === picked) };
}

/** Files and directories of a FAT volume inside a backup, from its catalog: no chunk is read. */
export async function listBackupFiles(options: ListBackupFilesOptions): Promise<FileListing[]> {
  const opts = objectOption('options', options);
  const choice = resolveBackupChoice(opts);
  const partition = partitionOption(opts);
  const { entries } = await withRepository(choice.repository, choice.password, (repo) =>
    catalogEntries(repo, choice, partition),
  );
  return entries.map((e) => ({
    path: e.path,
    name: e.path.slice(e.path.lastIndexOf('/') + 1),
    shortName: e.shortName,
    size: e.size,
    isDirectory: e.isDirectory,
    readOnly: (e.attributes & 0x01) !== 0,
    hidden: (e.attributes & 0x02) !== 0,
    system: (e.attributes & 0x04) !== 0,
    archive: (e.attributes & 0x20) !== 0,
    attributes: e.attributes,
    modified: e.modified,
    ...(e.unsafeName === undefined ? {} : { unsafeName: e.unsafeName }),
  }));
}

/** Reads a backup's chunks by index, keeping the last one (a file's extents are read in order). */
class ChunkReader {
  chunksRead = 0;
  #cached: { i: number; data: Buffer } | undefined;

  constructor(
    private readonly repo: Repository,
    private readonly manifest: Manifest,
    private readonly index: IndexLookup,
  ) {}

  async chunk(i: number): Promise<Buffer> {
    if (this.#cached?.i === i) return this.#cached.data;
    const cs = this.manifest.chunkSize;
    const d = await this.index.entry(i);
    const length = Math.min(cs, this.manifest.size - i * cs);
    const data =
      d === null ? Buffer.alloc(length) : await this.repo.getChunk(d.digest.toString('hex'), length, d.location);
    if (d) this.chunksRead++;
    this.#cached = { i, data };
    return data;
  }

  /**
   * Writes the image's bytes under `extents` ([offset, length] pairs) one after
   * the other to `fh`; returns how many. An extent outside the image is
   * REPO_CORRUPT; `signal` is checked before every chunk.
   */
  async copy(
    extents: readonly [number, number][],
    fh: FileHandle,
    what: string,
    signal: AbortSignal | undefined,
  ): Promise<number> {
    const cs = this.manifest.chunkSize;
    const size = this.manifest.size;
    let pos = 0;
    for (const ext of extents) {
      const [offset, length] = Array.isArray(ext) ? ext : [NaN, NaN];
      if (
        !Number.isSafeInteger(offset) ||
        !Number.isSafeInteger(length) ||
        offset < 0 ||
        length < 0 ||
        offset + length > size
      ) {
        throw new LowtideError(
          'REPO_CORRUPT',
          `${what}: the catalog gives an extent ${JSON.stringify(ext)} outside the ${size}-byte image of backup ${this.manifest.id}`,
        );
      }
      let at = offset;
      while (at < offset + length) {
        if (signal?.aborted) throw new LowtideError('ABORTED', 'extract was aborted', { cause: signal.reason });
        const i = Math.floor(at / cs);
        const data = await this.chunk(i);
        const from = at - i * cs;
        const n = Math.min(offset + length - at, data.length - from);
        if (n <= 0)
          throw new LowtideError('REPO_CORRUPT', `${what}: chunk ${i} of backup ${this.manifest.id} is short`);
        await fh.write(data, from, n, pos);
        pos += n;
        at += n;
      }
    }
    return pos;
  }
}

/**
 * Copies a file or directory tree out of a FAT volume inside a backup,
 * reading only the chunks under the files' extents.
 */
export async function extractFromBackup(options: ExtractFromBackupOptions): Promise<BackupExtractResult> {
  const choice = resolveBackupChoice(objectOption('options', options));
  const { path, dest, force, signal, partition } = resolveExtractOptions(options);
  return withRepository(choice.repository, choice.password, async (repo) => {
    const { manifest, entries } = await catalogEntries(repo, choice, partition);
    return extractTreeOf(repo, manifest, entries, { path, dest, force, signal });
  });
}

async function extractTreeOf(
  repo: Repository,
  manifest: Manifest,
  entries: CatalogEntry[],
  { path, dest, force, signal }: { path: string; dest: string; force: boolean; signal: AbortSignal | undefined },
): Promise<BackupExtractResult> {
  const index = await IndexLookup.open(repo, manifest);
  try {
    const chunks = new ChunkReader(repo, manifest, index);
    const lower = (p: string): string => p.toLowerCase();
    const normalized = volumePath(path);
    const top = normalized === '/' ? undefined : entries.find((e) => lower(e.path) === lower(normalized));
    if (normalized !== '/' && !top)
      throw new LowtideError('NOT_FOUND', `${normalized} is not in backup ${manifest.id}`);
    const target = await extractTarget(dest, () =>
      top ? safeName(top.path.slice(top.path.lastIndexOf('/') + 1), normalized) : `${manifest.id}-root`,
    );
    const result: BackupExtractResult = { dest: target, files: 0, directories: 0, bytes: 0, chunksRead: 0 };
    const writeFile = async (e: CatalogEntry, to: string): Promise<void> => {
      await writeExtracted(to, { force, signal, size: e.size, modified: new Date(e.modified), what: e.path }, (fh) =>
        chunks.copy(e.extents, fh, e.path, signal),
      );
      result.files++;
      result.bytes += e.size;
    };
    const prefix = top ? top.path : '';
    const below = async (): Promise<CatalogEntry[]> =>
      entries.filter((x) => prefix === '' || lower(x.path).startsWith(lower(prefix) + '/'));
    await extractTree(top, target, below, writeFile, result);
    result.chunksRead = chunks.chunksRead;
    return result;
  } finally {
    await index.close();
  }
}
