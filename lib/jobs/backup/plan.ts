/**
 * What a backup reads: the source's used blocks (or all of them), the
 * parent it builds on, and with a list of changed extents only the chunks
 * those touch (every other chunk is the parent's).
 */
import { realpath } from 'node:fs/promises';
import { LowtideError, toLowtideError } from '../../errors.js';
import { mergeExtents, type Extent } from '../../io/extents.js';
import type { ExtentList } from '../../io/extent-list.js';
import type { Source } from '../../io/source.js';
import type { ImagePlan } from '../../fs/plan.js';
import type { Manifest, SourceIdentity } from '../../repo/format.js';
import type { Repository } from '../../repo/repository.js';

export interface BackupPlan {
  identity: SourceIdentity;
  /** The backup this one builds on. */
  parent: Manifest | undefined;
  /** The file systems' view: used blocks, overlay writes of exclusions, partitions, warnings. */
  image: ImagePlan;
  /** The changed extents grown to whole chunks; chunks outside them are the parent's. */
  changedChunks: Extent[] | undefined;
  /** What to read: sorted, merged, compact. */
  extents: ExtentList;
  bytesTotal: number;
  chunkCount: number;
  mode: Manifest['plan']['mode'];
  /** Why the backup is read in full instead of building on its parent (the parent's index is damaged). */
  fallback: string | undefined;
}

/** The parent and changed extents a backup was asked for. */
export interface PlanRequest {
  /** A backup id, undefined or 'auto' (the latest backup of the same source), or null (none). */
  parent: string | null | undefined;
  changed: readonly Extent[] | undefined;
}

async function sourceIdentity(source: Source): Promise<SourceIdentity> {
  return {
    path: source.path,
    realPath: await realpath(source.path).catch(() => source.path),
    kind: source.kind,
    size: source.size,
  };
}

async function chooseParent(
  repo: Repository,
  identity: SourceIdentity,
  parent: string | null | undefined,
): Promise<Manifest | undefined> {
  if (parent === null) return undefined;
  if (parent === undefined || parent === 'auto') {
    const { backups } = await repo.listBackups();
    for (let i = backups.length - 1; i >= 0; i--) {
      const b = backups[i]!;
      if (b.source.realPath === identity.realPath && b.size === identity.size && b.chunkSize === repo.chunkSize)
        return b;
    }
    return undefined;
  }
  const m = await repo.readManifest(parent);
  if (m.size !== identity.size) {
    throw new LowtideError(
      'INVALID_ARGUMENT',
      `parent: backup ${m.id} is of a ${m.size}-byte source, but ${identity.path} has ${identity.size} bytes`,
    );
  }
  return m;
}

/** Changed extents grown to whole chunks, merged, clipped to the source. */
export function chunkAlignedExtents(extents: readonly Extent[], chunkSize: number, size: number): Extent[] {
  const grown = extents
    .filter((e) => e.length > 0)
    .map((e) => {
      const start = Math.floor(e.offset / chunkSize) * chunkSize;
      const end = Math.min(size, Math.ceil((e.offset + e.length) / chunkSize) * chunkSize);
      return { offset: start, length: end - start };
    });
  return mergeExtents(grown);
}

function checkChanged(changed: readonly Extent[] | undefined, parent: Manifest | undefined, source: Source): void {
  if (changed !== undefined && parent === undefined) {
    throw new LowtideError(
      'INVALID_ARGUMENT',
      'changed: a list of changed extents needs a parent backup of the same source',
    );
  }
  for (const e of changed ?? []) {
    if (e.offset + e.length > source.size) {
      throw new LowtideError(
        'OUT_OF_RANGE',
        `changed: extent [${e.offset}, ${e.offset + e.length}) reaches past the end of ${source.path} (${source.size} bytes)`,
      );
    }
  }
}

/**
 * Plans a backup of the open `source` into `repo`. `planning` is the file
 * systems' plan (planImage), started before the repository was opened.
 */
export async function planBackup(
  repo: Repository,
  source: Source,
  request: PlanRequest,
  planning: Promise<ImagePlan>,
): Promise<BackupPlan> {
  const cs = repo.chunkSize;
  if (cs % source.sectorSize !== 0) {
    throw new LowtideError(
      'UNSUPPORTED',
      `the repository's chunk size ${cs} is not a multiple of ${source.path}'s sector size ${source.sectorSize}`,
    );
  }
  const identity = await sourceIdentity(source);
  const parent = await chooseParent(repo, identity, request.parent);
  const { changed } = request;
  checkChanged(changed, parent, source);
  const image = await planning;
  const changedChunks = changed !== undefined ? chunkAlignedExtents(changed, cs, source.size) : undefined;
  const extents = changedChunks !== undefined ? image.extents.intersect(changedChunks) : image.extents;
  return {
    identity,
    parent,
    image,
    changedChunks,
    extents,
    bytesTotal: extents.totalLength,
    chunkCount: Math.ceil(source.size / cs),
    mode: changed !== undefined ? 'changed' : image.table === 'not-parsed' ? 'all' : 'used',
    fallback: undefined,
  };
}

/**
 * Reads the parent's index whole and checks it against its manifest before
 * anything is built on it. A damaged index (unreadable, wrong size or
 * digest) does not fail the backup: it becomes a full one without a parent,
 * every planned block read, and `fallback` says why. (The commit checks the
 * index again, for a change while the backup ran.)
 */
export async function checkParentIndex(repo: Repository, plan: BackupPlan): Promise<BackupPlan> {
  const parent = plan.parent;
  if (parent === undefined) return plan;
  try {
    const index = await repo.openIndex(parent);
    try {
      await index.verify();
    } finally {
      await index.close();
    }
    return plan;
  } catch (err) {
    const e = toLowtideError(err, 'REPO_CORRUPT');
    if (e.code !== 'REPO_CORRUPT') throw e;
    const { image } = plan;
    return {
      ...plan,
      parent: undefined,
      changedChunks: undefined,
      extents: image.extents,
      bytesTotal: image.extents.totalLength,
      mode: image.table === 'not-parsed' ? 'all' : 'used',
      fallback: `the index of parent backup ${parent.id} is damaged (${e.message}): backed up in full without a parent`,
    };
  }
}
