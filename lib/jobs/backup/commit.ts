/** The end of a backup: its manifest, written with the index and catalog once every chunk is durable. */
import { randomBytes } from 'node:crypto';
import type { BlockReader } from '../../io/reader.js';
import type { Source } from '../../io/source.js';
import { newBackupId, type Manifest } from '../../repo/format.js';
import type { IndexReader, IndexWriter, RepoLock, Repository } from '../../repo/repository.js';
import { summarizeLatency, type Stopwatch } from '../progress.js';
import type { JobThrottle } from '../../throttle/job-throttle.js';
import type { BackupCatalog } from './catalog.js';
import type { ChunkPipeline } from './pipeline.js';
import type { BackupPlan } from './plan.js';
import type { ExtentList } from '../../io/extent-list.js';

/**
 * Extents a manifest lists one by one at most. Past that (a file system with
 * millions of free fragments), gaps shorter than a chunk are joined, which
 * leaves at most about one extent per two chunks.
 */
export const MANIFEST_EXTENTS_MAX = 65_536;

/** The manifest's `plan`: the extents read, joined across gaps below a chunk when there are too many. */
export function manifestPlan(mode: Manifest['plan']['mode'], extents: ExtentList, chunkSize: number): Manifest['plan'] {
  if (extents.length <= MANIFEST_EXTENTS_MAX) return { mode, extents: pairs(extents) };
  return { mode, extents: pairs(extents.joinGaps(chunkSize)), gapsJoinedBelow: chunkSize };
}

function pairs(extents: ExtentList): [number, number][] {
  const out: [number, number][] = [];
  for (let i = 0; i < extents.length; i++) out.push([extents.offsetAt(i), extents.lengthAt(i)]);
  return out;
}

/** What a backup's manifest is made from. */
export interface BackupRecord {
  repo: Repository;
  source: Source;
  plan: BackupPlan;
  index: IndexWriter;
  pipeline: ChunkPipeline;
  reader: BlockReader;
  throttle: JobThrottle;
  started: Date;
  clock: Stopwatch;
}

function backupManifest(r: BackupRecord): Manifest {
  const { plan, index } = r;
  const { image } = plan;
  const seconds = r.clock.seconds();
  const id = newBackupId(r.started, randomBytes(3).toString('hex'));
  return {
    format: 'lowtide-backup',
    version: 1,
    id,
    created: r.started.toISOString(),
    source: plan.identity,
    size: r.source.size,
    chunkSize: r.repo.chunkSize,
    chunkCount: plan.chunkCount,
    index: { file: `${id}.index`, sha256: index.digestHex() },
    plan: {
      ...manifestPlan(plan.mode, plan.extents, r.repo.chunkSize),
      ...(plan.fallback !== undefined ? { fallback: plan.fallback } : {}),
    },
    filesystems: {
      table: image.table,
      partitions: image.partitions.map((p) => ({ ...p, fat: p.fat && { ...p.fat } })),
      excluded: image.excluded.map((e) => ({ ...e })),
      bytesExcluded: image.bytesExcluded,
      // The same array as the plan's: a warning the catalog adds later is in the manifest too.
      warnings: image.warnings,
    },
    parent: plan.parent?.id ?? null,
    stats: r.pipeline.stats,
    timing: {
      started: r.started.toISOString(),
      finished: new Date().toISOString(),
      seconds,
      mbPerSecond: seconds > 0 ? plan.bytesTotal / seconds / 1e6 : 0,
    },
    latency: summarizeLatency(r.pipeline.latency),
    engine: r.reader.engine,
    direct: r.source.direct,
    throttle: { ...r.throttle.report() },
    catalog: null,
  };
}

/**
 * Makes every chunk the backup wrote durable, checks the parent's index it
 * took chunks from, and commits the manifest with its index and catalog.
 */
export async function commitBackup(
  r: BackupRecord,
  parentIndex: IndexReader | undefined,
  catalog: BackupCatalog,
  lock?: RepoLock,
): Promise<Manifest> {
  if (parentIndex) await parentIndex.verify();
  await r.repo.syncChunkDirs(r.pipeline.touchedDirs);
  const manifest = backupManifest(r);
  await catalog.addTo(manifest, r.repo);
  await r.repo.commitBackup(manifest, r.index, lock);
  return manifest;
}
