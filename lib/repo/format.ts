/**
 * The on-disk repository format, version 1. docs/repository-format.md is the
 * prose description; this module is the code that reads and writes it.
 */
import { LowtideError } from '../errors.js';
import {
  ManifestSchema,
  MAX_CHUNK_SIZE,
  parseWith,
  RepoConfigSchema,
  type Manifest,
  type RepoConfig,
} from './schema.js';

export {
  BACKUP_ID_PATTERN,
  MAX_CHUNK_SIZE,
  MIN_CHUNK_SIZE,
  type BackupStats,
  type Manifest,
  type ManifestPartition,
  type ManifestThrottle,
  type RepoConfig,
  type SourceIdentity,
} from './schema.js';

export const REPO_FORMAT = 'lowtide-repository';
/** The format of a repository with one object (or file) per chunk. */
export const REPO_VERSION = 1;
/** The format of a remote repository whose chunks are in packs (docs/repository-format.md, "Packs"). */
export const REPO_VERSION_PACKED = 2;
export const MANIFEST_FORMAT = 'lowtide-backup';
export const MANIFEST_VERSION = 1;

export const DEFAULT_CHUNK_SIZE = 1024 * 1024;
export const DEFAULT_ZSTD_LEVEL = 3;

export const CONFIG_FILE = 'config.json';
export const CHUNKS_DIR = 'chunks';
export const BACKUPS_DIR = 'backups';
export const LOCKS_DIR = 'locks';
export const LOCK_FILE = 'write.lock';
export const PRUNE_LOCK_FILE = 'prune.lock';
export const TMP_DIR = 'tmp';

/**
 * Checks config.json (already parsed). A version other than 1 is REPO_FORMAT
 * with its own message; anything else wrong is a damaged configuration.
 */
export function validateConfig(raw: unknown, where: string): RepoConfig {
  const c = raw as { format?: unknown; version?: unknown } | null;
  if (c === null || typeof c !== 'object' || Array.isArray(c) || c.format !== REPO_FORMAT) {
    throw new LowtideError('REPO_FORMAT', `${where} is not a lowtide repository configuration`);
  }
  if (c.version !== REPO_VERSION && c.version !== REPO_VERSION_PACKED) {
    throw new LowtideError(
      'REPO_FORMAT',
      `${where}: repository format version ${String(c.version)} is not supported (this lowtide reads versions ${REPO_VERSION} and ${REPO_VERSION_PACKED})`,
    );
  }
  const config = parseWith(RepoConfigSchema, raw, 'REPO_FORMAT', `${where}: damaged repository configuration`);
  if ((config.version === REPO_VERSION_PACKED) !== (config.packSize !== undefined)) {
    throw new LowtideError(
      'REPO_FORMAT',
      `${where}: damaged repository configuration: ${config.version === REPO_VERSION_PACKED ? `version ${REPO_VERSION_PACKED} needs packSize` : `packSize needs version ${REPO_VERSION_PACKED}`}`,
    );
  }
  if ((config.hash === 'hmac-sha256') !== (config.encryption !== undefined)) {
    throw new LowtideError(
      'REPO_FORMAT',
      `${where}: damaged repository configuration: hash ${config.hash} does not go with ${config.encryption ? 'encryption' : 'no encryption'}`,
    );
  }
  return config;
}

// --- chunk files -------------------------------------------------------------
// 16-byte header: "LTC1", encoding (u8), 3 reserved bytes, plain length (u64 LE);
// then the payload (raw bytes or one zstd frame).

export const CHUNK_MAGIC = 0x3143544c; // "LTC1" little-endian
export const CHUNK_HEADER_SIZE = 16;
export const ChunkEncoding = { Raw: 0, Zstd: 1 } as const;
export type ChunkEncoding = (typeof ChunkEncoding)[keyof typeof ChunkEncoding];

export interface ChunkHeader {
  encoding: ChunkEncoding;
  plainLength: number;
}

export function parseChunkHeader(buf: Buffer, where: string): ChunkHeader {
  if (buf.length < CHUNK_HEADER_SIZE || buf.readUInt32LE(0) !== CHUNK_MAGIC) {
    throw new LowtideError('CHUNK_CORRUPT', `${where}: not a lowtide chunk (bad header)`);
  }
  const encoding = buf.readUInt8(4) as ChunkEncoding;
  const plainLength = Number(buf.readBigUInt64LE(8));
  if ((encoding !== ChunkEncoding.Raw && encoding !== ChunkEncoding.Zstd) || plainLength > MAX_CHUNK_SIZE) {
    throw new LowtideError('CHUNK_CORRUPT', `${where}: bad chunk header (encoding ${encoding}, length ${plainLength})`);
  }
  return { encoding, plainLength };
}

// --- chunk index files (backups/<id>.index) -----------------------------------
// 32-byte header: "LTI1", version u32, chunk size u32, reserved u32, chunk count
// u64, reserved u64; then one entry per chunk, all zeros for a zero chunk:
// version 1, the 32-byte id; version 2 (packed repositories), 64 bytes: the
// id and where its record is (storage/packs.ts).

export const INDEX_MAGIC = 0x3149544c; // "LTI1"
export const INDEX_HEADER_SIZE = 32;
export const DIGEST_SIZE = 32;
export const ZERO_DIGEST = Buffer.alloc(DIGEST_SIZE);

/** Bytes per index entry of an index version (1: the id; 2: the id and its record in a pack). */
export function indexEntrySize(version: 1 | 2): number {
  return version === 1 ? DIGEST_SIZE : 64;
}

export function indexHeader(chunkSize: number, chunkCount: number, version: 1 | 2 = 1): Buffer {
  const h = Buffer.alloc(INDEX_HEADER_SIZE);
  h.writeUInt32LE(INDEX_MAGIC, 0);
  h.writeUInt32LE(version, 4);
  h.writeUInt32LE(chunkSize, 8);
  h.writeBigUInt64LE(BigInt(chunkCount), 16);
  return h;
}

export function parseIndexHeader(
  buf: Buffer,
  where: string,
): { chunkSize: number; chunkCount: number; version: 1 | 2 } {
  const version = buf.length < INDEX_HEADER_SIZE ? 0 : buf.readUInt32LE(4);
  if (buf.length < INDEX_HEADER_SIZE || buf.readUInt32LE(0) !== INDEX_MAGIC || (version !== 1 && version !== 2)) {
    throw new LowtideError('REPO_CORRUPT', `${where}: not a lowtide chunk index`);
  }
  return { chunkSize: buf.readUInt32LE(8), chunkCount: Number(buf.readBigUInt64LE(16)), version };
}

// --- manifests (backups/<id>.json) ---------------------------------------------

/** The file names inside backups/ that belong to a backup: always derived from its (checked) id. */
export function manifestFileName(id: string): string {
  return `${id}.json`;
}
export function indexFileName(id: string): string {
  return `${id}.index`;
}
export function catalogFileName(id: string): string {
  return `${id}.catalog`;
}

/**
 * Checks a parsed manifest against the schema and the rules between its
 * fields, before any field is used. `id` is the id its file name gives.
 * A version other than 1 is REPO_FORMAT; anything else REPO_CORRUPT, with
 * the backup's id and what is wrong in the message.
 */
export function validateManifest(raw: unknown, where: string, id?: string): Manifest {
  const m = raw as { format?: unknown; version?: unknown } | null;
  const path = { path: where };
  if (m === null || typeof m !== 'object' || Array.isArray(m) || m.format !== MANIFEST_FORMAT) {
    throw new LowtideError('REPO_CORRUPT', `${where} is not a lowtide backup manifest`, path);
  }
  if (m.version !== MANIFEST_VERSION) {
    throw new LowtideError('REPO_FORMAT', `${where}: manifest version ${String(m.version)} is not supported`, path);
  }
  const man = parseWith(ManifestSchema, raw, 'REPO_CORRUPT', `${where}: damaged manifest`, where);
  const wrong = (what: string): never => {
    throw new LowtideError('REPO_CORRUPT', `${where}: damaged manifest: ${what}`, path);
  };
  if (id !== undefined && man.id !== id) wrong(`it names backup ${man.id}`);
  if (man.chunkCount !== Math.ceil(man.size / man.chunkSize)) {
    wrong(`chunkCount ${man.chunkCount} does not match size ${man.size} in chunks of ${man.chunkSize} bytes`);
  }
  if (man.index.file !== indexFileName(man.id))
    wrong(`index.file is ${JSON.stringify(man.index.file)}, not ${indexFileName(man.id)}`);
  if (man.catalog && man.catalog.file !== catalogFileName(man.id)) {
    wrong(`catalog.file is ${JSON.stringify(man.catalog.file)}, not ${catalogFileName(man.id)}`);
  }
  if (man.parent === man.id) wrong('it names itself as its parent');
  return man;
}

/** Backup ids sort by time: 20261125T174501Z-3fa9c2. */
export function newBackupId(now: Date, random: string): string {
  const iso = now
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d+Z$/, 'Z');
  return `${iso}-${random}`;
}
