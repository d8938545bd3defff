/**
 * A persistent known-chunks index for a remote repository: a local file per
 * repository (in the cache directory, named by the repository's id) listing
 * chunks known to exist, so that a backup without a parent (or with another
 * parent) does not ask the storage about every chunk.
 *
 * A chunk in the file may have been deleted since by a prune, from this
 * machine or another one. Every prune that deletes chunks first rewrites the
 * object `prune-epoch.json` with a new random epoch; the file records the
 * epoch it was made under, and a backup trusts it only while the repository's
 * epoch is still that one (read once, after the backup's lease is written:
 * no prune deletes a chunk while a lease is live). Otherwise it is dropped.
 *
 * File: one line of JSON ({"format":"lowtide-known-chunks","version":1,
 * "repository":<id>,"epoch":<epoch>}), then the 32-byte chunk ids, unsorted;
 * for a packed repository version 2, then 64-byte records: the chunk id and
 * where its record is, as in a chunk index (packs.ts).
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rename, unlink, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { decodePackedLocation, encodePackedEntry, PACKED_ENTRY_SIZE, type PackLocation } from './packs.js';
import type { ObjectStorage } from './types.js';

export const PRUNE_EPOCH_KEY = 'prune-epoch.json';
const FORMAT = 'lowtide-known-chunks';
/** Larger files are not read (about 8 million chunks); the backup asks the storage instead. */
const MAX_FILE_BYTES = 256 * 1024 * 1024;
const DIGEST = 32;

/** The cache directory: the option, LOWTIDE_CACHE_DIR, $XDG_CACHE_HOME/lowtide, or ~/.cache/lowtide. */
export function cacheDirectory(option: string | undefined): string {
  if (option !== undefined) return option;
  const env = process.env.LOWTIDE_CACHE_DIR;
  if (env !== undefined && env !== '') return env;
  const xdg = process.env.XDG_CACHE_HOME;
  return join(xdg !== undefined && xdg.startsWith('/') ? xdg : join(homedir(), '.cache'), 'lowtide');
}

/** The repository's prune epoch now ('none' before its first prune that deleted chunks). */
export async function readPruneEpoch(storage: ObjectStorage): Promise<string> {
  const data = await storage.get(PRUNE_EPOCH_KEY, undefined, 64 * 1024);
  if (data === undefined) return 'none';
  try {
    const epoch = (JSON.parse(data.toString('utf8')) as { epoch?: unknown }).epoch;
    if (typeof epoch === 'string' && /^[0-9a-f]{32}$/.test(epoch)) return epoch;
  } catch {
    /* damaged: below */
  }
  // Unreadable: a value no cache file has, so nothing is trusted.
  return `damaged-${randomBytes(8).toString('hex')}`;
}

/** Starts a new prune epoch: every known-chunks file made before is dropped by its next reader. */
export async function newPruneEpoch(storage: ObjectStorage): Promise<void> {
  const epoch = randomBytes(16).toString('hex');
  await storage.put(PRUNE_EPOCH_KEY, Buffer.from(JSON.stringify({ epoch, started: new Date().toISOString() }) + '\n'));
}

/** The cache file of a repository; none for an id that is not a UUID (it names a file). */
function cacheFile(dir: string, repositoryId: string): string | undefined {
  if (!/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(repositoryId)) return undefined;
  return join(resolve(dir), `${repositoryId}.known-chunks`);
}

/**
 * The chunk ids (hex) the cache lists, with where their records are in a
 * packed repository (`packed`), when it was made under `epoch`; none
 * otherwise (a stale file is removed). A missing, unreadable or damaged file
 * is an empty cache, never an error: the backup then asks the storage (or,
 * packed, stores chunks it does not know again).
 */
export async function loadKnownChunks(
  dir: string,
  repositoryId: string,
  epoch: string,
  packed = false,
): Promise<[string, PackLocation | undefined][]> {
  const record = packed ? PACKED_ENTRY_SIZE : DIGEST;
  const path = cacheFile(dir, repositoryId);
  if (path === undefined) return [];
  let data: Buffer;
  try {
    data = await readFile(path, { flag: 'r' });
  } catch {
    return [];
  }
  const nl = data.indexOf(0x0a);
  let header: { format?: unknown; version?: unknown; repository?: unknown; epoch?: unknown } | undefined;
  try {
    header = nl > 0 ? (JSON.parse(data.subarray(0, nl).toString('utf8')) as typeof header) : undefined;
  } catch {
    header = undefined;
  }
  const body = data.subarray(nl + 1);
  if (
    data.length > MAX_FILE_BYTES ||
    header?.format !== FORMAT ||
    header.version !== (packed ? 2 : 1) ||
    header.repository !== repositoryId ||
    header.epoch !== epoch ||
    body.length % record !== 0
  ) {
    await unlink(path).catch(() => undefined);
    return [];
  }
  const out: [string, PackLocation | undefined][] = [];
  try {
    for (let o = 0; o < body.length; o += record) {
      const e = body.subarray(o, o + record);
      out.push([e.toString('hex', 0, DIGEST), packed ? decodePackedLocation(e, path) : undefined]);
    }
  } catch {
    await unlink(path).catch(() => undefined);
    return [];
  }
  return out;
}

/** Writes the cache (a temporary file renamed into place); a failure is no error, the cache is only a hint. */
export async function saveKnownChunks(
  dir: string,
  repositoryId: string,
  epoch: string,
  chunks: Iterable<[string, PackLocation | null | undefined]>,
  packed = false,
): Promise<void> {
  const path = cacheFile(dir, repositoryId);
  if (path === undefined) return;
  const ids: Buffer[] = [];
  for (const [hex, loc] of chunks) {
    if (!/^[0-9a-f]{64}$/.test(hex)) continue;
    if (!packed) ids.push(Buffer.from(hex, 'hex'));
    else if (loc) {
      const e = Buffer.alloc(PACKED_ENTRY_SIZE);
      encodePackedEntry(e, 0, Buffer.from(hex, 'hex'), loc);
      ids.push(e);
    }
  }
  if ((ids.length + 1) * (packed ? PACKED_ENTRY_SIZE : DIGEST) > MAX_FILE_BYTES) return;
  const header = JSON.stringify({ format: FORMAT, version: packed ? 2 : 1, repository: repositoryId, epoch }) + '\n';
  const tmp = `${path}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`;
  try {
    await mkdir(dirname(path), { recursive: true, mode: 0o700 });
    await writeFile(tmp, Buffer.concat([Buffer.from(header), ...ids]), { flag: 'wx', mode: 0o600 });
    await rename(tmp, path);
  } catch {
    await unlink(tmp).catch(() => undefined);
  }
}
