/**
 * The schemas of the repository's JSON: config.json, manifests and the lines
 * of a file catalog. Every one of them is checked against its schema before
 * any of its fields is used, and the TypeScript types of these documents are
 * the schemas' outputs, so the checks and the types cannot drift apart.
 *
 * Unknown fields are accepted and dropped (readers ignore fields they do not
 * know). Values the code relies on are checked as strictly as the format
 * defines them: ids and digests by pattern, sizes as non-negative safe
 * integers, times as ISO 8601 UTC, file names as exactly the names the format
 * derives from the backup id.
 */
import * as v from 'valibot';
import { LowtideError, type ErrorCode } from '../errors.js';

export const BACKUP_ID_PATTERN = /^\d{8}T\d{6}Z-[0-9a-f]{6}$/;
export const HEX64_PATTERN = /^[0-9a-f]{64}$/;
export const MIN_CHUNK_SIZE = 64 * 1024;
export const MAX_CHUNK_SIZE = 8 * 1024 * 1024;

const ISO_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/;

const count = v.pipe(v.number(), v.safeInteger('expected an integer'), v.minValue(0, 'expected a non-negative number'));
const finite = v.pipe(v.number(), v.finite());
const digest = v.pipe(v.string(), v.regex(HEX64_PATTERN, 'expected 64 lowercase hex characters'));
const backupId = v.pipe(v.string(), v.regex(BACKUP_ID_PATTERN, 'expected a backup id like 20261125T174501Z-3fa9c2'));
const time = v.pipe(
  v.string(),
  v.check((s) => ISO_UTC.test(s) && Number.isFinite(Date.parse(s)), 'expected an ISO 8601 UTC time'),
);
const chunkSize = v.pipe(
  v.number(),
  v.check(
    (n) => Number.isSafeInteger(n) && n >= MIN_CHUNK_SIZE && n <= MAX_CHUNK_SIZE && (n & (n - 1)) === 0,
    'expected a power of two from 64 KiB to 8 MiB',
  ),
);

// [offset, length] pairs of non-negative safe integers, lengths above zero (checked in one loop: lists can be long).
function isExtentList(x: unknown): x is [number, number][] {
  if (!Array.isArray(x)) return false;
  for (const e of x as unknown[]) {
    if (!Array.isArray(e) || e.length !== 2) return false;
    const [o, l] = e as unknown[];
    if (!Number.isSafeInteger(o) || !Number.isSafeInteger(l) || (o as number) < 0 || (l as number) <= 0) return false;
    if (!Number.isSafeInteger((o as number) + (l as number))) return false;
  }
  return true;
}
const extents = v.custom<[number, number][]>(isExtentList, 'expected a list of [offset, length] pairs');

export const RepoConfigSchema = v.object({
  format: v.literal('lowtide-repository'),
  version: v.number(),
  // Random UUID of the repository (informational).
  id: v.string(),
  // ISO 8601 time of init (informational).
  created: v.string(),
  // Bytes per chunk for new backups.
  chunkSize,
  // Chunk ids: SHA-256 of the plain bytes, or HMAC-SHA256 with the master key's MAC key (encrypted).
  hash: v.picklist(['sha256', 'hmac-sha256']),
  compression: v.object({
    algorithm: v.literal('zstd'),
    level: v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(19)),
  }),
  // Present in an encrypted repository only (docs/repository-format.md, "Encryption").
  encryption: v.optional(v.object({ algorithm: v.literal('aes-256-gcm') })),
  // Version 2 (a remote repository with packs) only: the bytes a writer fills a pack with.
  packSize: v.optional(
    v.pipe(
      v.number(),
      v.check(
        (n) => Number.isSafeInteger(n) && n >= 1024 * 1024 && n <= 256 * 1024 * 1024,
        'expected a whole number of bytes from 1 MiB to 256 MiB',
      ),
    ),
  ),
});

export const SourceIdentitySchema = v.object({
  // The path given to the backup.
  path: v.string(),
  // Resolved path (symlinks followed).
  realPath: v.string(),
  kind: v.picklist(['file', 'block']),
  size: count,
});

export const BackupStatsSchema = v.object({
  // Bytes read from the source.
  bytesRead: count,
  // Plain bytes of chunks stored by this backup.
  bytesNew: count,
  // Bytes those chunks take in the repository (compressed, with headers).
  bytesStored: count,
  chunks: count,
  chunksZero: count,
  chunksNew: count,
  chunksReused: count,
  // Chunks taken from the parent without reading (changed-extent backups).
  chunksFromParent: count,
});

// A partition as the backup's plan saw it (PlannedPartition).
export const ManifestPartitionSchema = v.looseObject({
  index: count,
  start: count,
  size: count,
  fileSystem: v.nullable(v.string()),
  // 'used': only allocated data; 'all': read in full; 'container': an MBR extended container.
  mode: v.picklist(['used', 'all', 'container']),
  bytesToRead: count,
  fat: v.nullable(
    v.looseObject({
      type: v.string(),
      clusterSize: count,
      totalClusters: count,
      usedClusters: count,
      freeClusters: count,
      badClusters: count,
      label: v.nullable(v.string()),
    }),
  ),
  warnings: v.array(v.string()),
});

// A file or directory left out by an exclusion (ExcludedEntry).
export const ManifestExcludedSchema = v.looseObject({
  partition: count,
  path: v.string(),
  size: count,
  isDirectory: v.boolean(),
});

// The throttle's report (JobThrottleReport): the fields checked here are typed; the rest (the
// controller's distributions, probes, boost) is kept as it was written.
export const ManifestThrottleSchema = v.looseObject({
  controller: v.string(),
  targetLatencyMs: finite,
  samples: count,
  decisions: count,
  bytes: count,
  // Sum of the delays the decisions handed out, ms.
  delayedMs: finite,
  // Wall time the decisions held the job back, ms (absent in backups made before it was reported).
  heldBackMs: v.optional(finite),
  rateLimitBytesPerSecond: v.optional(v.nullable(finite)),
});

export const ManifestSchema = v.object({
  format: v.literal('lowtide-backup'),
  version: v.number(),
  id: backupId,
  created: time,
  source: SourceIdentitySchema,
  size: count,
  chunkSize,
  chunkCount: count,
  // backups/<id>.index and the SHA-256 of that whole file.
  index: v.object({ file: v.string(), sha256: digest }),
  // How the extents to read were chosen.
  plan: v.object({
    mode: v.picklist(['all', 'used', 'changed']),
    // The extents that were read, as [offset, length] pairs.
    extents,
    // Present when the extents were too many to list: gaps shorter than this many bytes are joined.
    gapsJoinedBelow: v.optional(count),
    // Present when the backup was read in full instead of building on its parent: why.
    fallback: v.optional(v.string()),
  }),
  // Partitions and file systems as planned: table, per-partition mode and FAT numbers, exclusions, warnings.
  filesystems: v.looseObject({
    table: v.string(),
    partitions: v.array(ManifestPartitionSchema),
    excluded: v.array(ManifestExcludedSchema),
    bytesExcluded: count,
    warnings: v.array(v.string()),
  }),
  parent: v.nullable(backupId),
  stats: BackupStatsSchema,
  timing: v.object({ started: time, finished: time, seconds: finite, mbPerSecond: finite }),
  latency: v.object({ count, meanMs: finite, p50Ms: finite, p99Ms: finite, maxMs: finite }),
  engine: v.string(),
  direct: v.boolean(),
  // The throttle's report (controller, target, delays, queue-depth and block-size distributions).
  throttle: v.nullable(ManifestThrottleSchema),
  // backups/<id>.catalog: the files of the FAT volumes, for file-level restore; null when there are none.
  catalog: v.nullable(v.object({ file: v.string(), sha256: digest, entries: count })),
});

// A path in a catalog: '/' and names, none empty, '.' or '..', no NUL or other control character.
function isCatalogPath(p: string): boolean {
  if (!p.startsWith('/') || p.length < 2) return false;
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(p)) return false;
  return p
    .slice(1)
    .split('/')
    .every((n) => n !== '' && n !== '.' && n !== '..');
}

export const CatalogEntrySchema = v.object({
  // Partition number (0: a table-less disk).
  partition: count,
  // Path from the volume root, '/'-separated, long names.
  path: v.pipe(
    v.string(),
    v.check(isCatalogPath, "expected an absolute path of names (no empty, '.' or '..' name, no control character)"),
  ),
  shortName: v.string(),
  // Why the name shown is not the name as stored (a refused long name, an escaped 8.3 name); absent when it is.
  unsafeName: v.optional(v.string()),
  size: count,
  isDirectory: v.boolean(),
  attributes: v.pipe(count, v.maxValue(255)),
  // ISO 8601 (FAT local time read as local time).
  modified: v.string(),
  // File data on the image, in file order: [offset, length] pairs. Empty for directories and empty files.
  extents,
});

export type RepoConfig = v.InferOutput<typeof RepoConfigSchema>;
export type SourceIdentity = v.InferOutput<typeof SourceIdentitySchema>;
export type BackupStats = v.InferOutput<typeof BackupStatsSchema>;
export type Manifest = v.InferOutput<typeof ManifestSchema>;
export type ManifestThrottle = v.InferOutput<typeof ManifestThrottleSchema>;
export type ManifestPartition = v.InferOutput<typeof ManifestPartitionSchema>;
export type CatalogEntry = v.InferOutput<typeof CatalogEntrySchema>;

function shown(x: unknown): string {
  const s = typeof x === 'string' ? x : String(x);
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
}

// "plan is missing; created: expected an ISO 8601 UTC time, got "yesterday"" (the first few problems).
export function describeIssues(issues: readonly v.BaseIssue<unknown>[]): string {
  const parts = issues.slice(0, 3).map((i) => {
    const path = v.getDotPath(i) ?? '(the document)';
    if (i.kind === 'schema' && i.received === 'undefined') return `${path} is missing`;
    if (i.kind === 'schema' && i.type !== 'custom')
      return `${path}: expected ${shown(i.expected)}, got ${shown(i.received)}`;
    return `${path}: ${i.message}, got ${shown(i.received)}`;
  });
  if (issues.length > 3) parts.push(`${issues.length - 3} more`);
  return parts.join('; ');
}

// Parses `raw` with `schema`, or throws `code` with `where` and what is wrong.
export function parseWith<S extends v.GenericSchema>(
  schema: S,
  raw: unknown,
  code: ErrorCode,
  where: string,
  path?: string,
): v.InferOutput<S> {
  const r = v.safeParse(schema, raw, { abortEarly: false });
  if (r.success) return r.output;
  throw new LowtideError(code, `${where}: ${describeIssues(r.issues)}`, path === undefined ? {} : { path });
}
