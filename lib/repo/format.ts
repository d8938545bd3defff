/**
 * The on-disk repository format, version 1. docs/repository-format.md is the
 * prose description; this module is the code that reads and writes it.
 */
import { LowtideError } from '../errors.js';

export const REPO_FORMAT = 'lowtide-repository';
export const REPO_VERSION = 1;
export const MANIFEST_FORMAT = 'lowtide-backup';
export const MANIFEST_VERSION = 1;

export const MIN_CHUNK_SIZE = 64 * 1024;
export const MAX_CHUNK_SIZE = 8 * 1024 * 1024;
export const DEFAULT_CHUNK_SIZE = 1024 * 1024;
export const DEFAULT_ZSTD_LEVEL = 3;

export const CONFIG_FILE = 'config.json';
export const CHUNKS_DIR = 'chunks';
export const BACKUPS_DIR = 'backups';
export const LOCKS_DIR = 'locks';
export const TMP_DIR = 'tmp';

/** config.json */
export interface RepoConfig {
  format: typeof REPO_FORMAT;
  version: number;
  id: string;
  created: string;
  chunkSize: number;
  hash: 'sha256';
  compression: { algorithm: 'zstd'; level: number };
}

export function validateConfig(raw: unknown, where: string): RepoConfig {
  const c = raw as Partial<RepoConfig> | null;
  if (c === null || typeof c !== 'object' || c.format !== REPO_FORMAT) {
    throw new LowtideError('REPO_FORMAT', `${where} is not a lowtide repository configuration`);
  }
  if (c.version !== REPO_VERSION) {
    throw new LowtideError(
      'REPO_FORMAT',
      `${where}: repository format version ${String(c.version)} is not supported (this lowtide reads version ${REPO_VERSION})`,
    );
  }
  const cs = c.chunkSize;
  if (
    typeof cs !== 'number' ||
    !Number.isSafeInteger(cs) ||
    cs < MIN_CHUNK_SIZE ||
    cs > MAX_CHUNK_SIZE ||
    (cs & (cs - 1)) !== 0 ||
    c.hash !== 'sha256' ||
    c.compression?.algorithm !== 'zstd' ||
    typeof c.compression.level !== 'number' ||
    typeof c.id !== 'string'
  ) {
    throw new LowtideError('REPO_FORMAT', `${where}: damaged repository configuration`);
  }
  return c as RepoConfig;
}

// --- chunk files -------------------------------------------------------------
// 16-byte header: "LTC1", encoding (u8), 3 reserved bytes, plain length (u64 LE);
// then the payload (raw bytes or one zstd frame).

export const CHUNK_MAGIC = 0x3143544c; // "LTC1" little-endian
export const CHUNK_HEADER_SIZE = 16;
export const ChunkEncoding = { Raw: 0, Zstd: 1 } as const;
export type ChunkEncoding = (typeof ChunkEncoding)[keyof typeof ChunkEncoding];

export function chunkHeader(encoding: ChunkEncoding, plainLength: number): Buffer {
  const h = Buffer.alloc(CHUNK_HEADER_SIZE);
  h.writeUInt32LE(CHUNK_MAGIC, 0);
  h.writeUInt8(encoding, 4);
  h.writeBigUInt64LE(BigInt(plainLength), 8);
  return h;
}

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
// u64, reserved u64; then one 32-byte SHA-256 per chunk, all zeros for a zero chunk.

export const INDEX_MAGIC = 0x3149544c; // "LTI1"
export const INDEX_HEADER_SIZE = 32;
export const DIGEST_SIZE = 32;
export const ZERO_DIGEST = Buffer.alloc(DIGEST_SIZE);

export function indexHeader(chunkSize: number, chunkCount: number): Buffer {
  const h = Buffer.alloc(INDEX_HEADER_SIZE);
  h.writeUInt32LE(INDEX_MAGIC, 0);
  h.writeUInt32LE(1, 4);
  h.writeUInt32LE(chunkSize, 8);
  h.writeBigUInt64LE(BigInt(chunkCount), 16);
  return h;
}

export function parseIndexHeader(buf: Buffer, where: string): { chunkSize: number; chunkCount: number } {
  if (buf.length < INDEX_HEADER_SIZE || buf.readUInt32LE(0) !== INDEX_MAGIC || buf.readUInt32LE(4) !== 1) {
    throw new LowtideError('REPO_CORRUPT', `${where}: not a lowtide chunk index`);
  }
  return { chunkSize: buf.readUInt32LE(8), chunkCount: Number(buf.readBigUInt64LE(16)) };
}

// --- manifests (backups/<id>.json) ---------------------------------------------

export interface SourceIdentity {
  /** The path given to the backup. */
  path: string;
  /** Resolved path (symlinks followed). */
  realPath: string;
  kind: 'file' | 'block';
  size: number;
}

export interface BackupStats {
  /** Bytes read from the source. */
  bytesRead: number;
  /** Plain bytes of chunks stored by this backup. */
  bytesNew: number;
  /** Bytes those chunks take in the repository (compressed, with headers). */
  bytesStored: number;
  chunks: number;
  chunksZero: number;
  chunksNew: number;
  chunksReused: number;
  /** Chunks taken from the parent without reading (changed-extent backups). */
  chunksFromParent: number;
}

export interface Manifest {
  format: typeof MANIFEST_FORMAT;
  version: number;
  id: string;
  created: string;
  source: SourceIdentity;
  size: number;
  chunkSize: number;
  chunkCount: number;
  /** backups/<id>.index and the SHA-256 of that whole file. */
  index: { file: string; sha256: string };
  /** How the extents to read were chosen. */
  plan: {
    mode: 'all' | 'used' | 'changed';
    /** The extents that were read, as [offset, length] pairs. */
    extents: [number, number][];
  };
  /** Partitions and file systems as planned: table, per-partition mode and FAT numbers, exclusions, warnings. */
  filesystems: Record<string, unknown>;
  parent: string | null;
  stats: BackupStats;
  timing: { started: string; finished: string; seconds: number; mbPerSecond: number };
  latency: { count: number; meanMs: number; p50Ms: number; p99Ms: number; maxMs: number };
  engine: string;
  direct: boolean;
  /** The throttle's report (controller, target, delays, queue-depth and block-size distributions). */
  throttle: Record<string, unknown> | null;
  /** backups/<id>.catalog: the files of the FAT volumes, for file-level restore; null when there are none. */
  catalog: { file: string; sha256: string; entries: number } | null;
}

export function validateManifest(raw: unknown, where: string): Manifest {
  const m = raw as Partial<Manifest> | null;
  if (m === null || typeof m !== 'object' || m.format !== MANIFEST_FORMAT) {
    throw new LowtideError('REPO_CORRUPT', `${where} is not a lowtide backup manifest`);
  }
  if (m.version !== MANIFEST_VERSION) {
    throw new LowtideError('REPO_FORMAT', `${where}: manifest version ${String(m.version)} is not supported`);
  }
  if (
    typeof m.id !== 'string' ||
    typeof m.size !== 'number' ||
    typeof m.chunkSize !== 'number' ||
    typeof m.chunkCount !== 'number' ||
    m.chunkCount !== Math.ceil(m.size / m.chunkSize) ||
    typeof m.index?.file !== 'string' ||
    typeof m.index.sha256 !== 'string' ||
    typeof m.source?.path !== 'string'
  ) {
    throw new LowtideError('REPO_CORRUPT', `${where}: damaged manifest`);
  }
  return m as Manifest;
}

/** Backup ids sort by time: 20261125T174501Z-3fa9c2. */
export function newBackupId(now: Date, random: string): string {
  const iso = now
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d+Z$/, 'Z');
  return `${iso}-${random}`;
}

export const BACKUP_ID_PATTERN = /^\d{8}T\d{6}Z-[0-9a-f]{6}$/;
