/**
 * `lowtide backup`: sources backed up into a repository. One source is one
 * backup job (with --parent and --changed); several run as backupMany() jobs.
 */
import { readFile } from 'node:fs/promises';
import { Option, type Command } from 'commander';
import {
  backup,
  backupMany,
  LowtideError,
  type BackupJobEvent,
  type BackupProgress,
  type BackupResult,
  type DiskFormat,
  type Extent,
} from '../../index.js';
import { collect, intArg, sourceFormatOption } from '../args.js';
import { withInterrupt } from '../interrupt.js';
import { printJson, printWarnings, ReportedFailure } from '../output.js';
import {
  addProgressOptions,
  formatBytes,
  formatFigures,
  formatRate,
  jobFigures,
  progressMode,
  ProgressOutput,
  writeEvent,
  type Figures,
} from '../progress.js';
import { addThrottleOptions, throttleInfo, throttleSettings } from '../throttle-flags.js';

/** The extents of a --changed file: a JSON array of [offset, length] pairs (or {offset, length} objects). */
async function readChangedFile(path: string): Promise<Extent[]> {
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(path, 'utf8'));
  } catch (err) {
    throw new LowtideError('INVALID_ARGUMENT', `--changed: cannot read ${path} as JSON: ${(err as Error).message}`);
  }
  if (!Array.isArray(raw))
    throw new LowtideError('INVALID_ARGUMENT', `--changed: expected a JSON array of [offset, length] pairs in ${path}`);
  return raw.map((e: unknown, i) => {
    if (Array.isArray(e) && e.length === 2) return { offset: e[0] as number, length: e[1] as number };
    if (e && typeof e === 'object') return e as Extent;
    throw new LowtideError('INVALID_ARGUMENT', `--changed: element ${i} of ${path} is not [offset, length]`);
  });
}

/** The job options the flags shared by one and several sources stand for. */
function jobOptions(o: Record<string, unknown>, several: boolean) {
  return {
    repository: o.repo as string,
    allBlocks: o.allBlocks === true,
    exclude: o.exclude as string[],
    strict: o.strict === true,
    queueDepth: o.queueDepth as number,
    readFrom: o.readFromDevice === true ? ('device' as const) : ('file' as const),
    format: o.format as DiskFormat,
    ...throttleSettings(o, several),
  };
}

/** Bytes read from the source, and stored into the repository, per wall second. */
function backupFigures(m: BackupResult['manifest']): Figures {
  return jobFigures(m.size, m.timing.seconds, m.stats.bytesRead, m.stats.bytesStored);
}

function printBackupSummary(result: BackupResult): void {
  const m = result.manifest;
  printWarnings(m.filesystems.warnings);
  process.stdout.write(`${result.id}\n`);
  process.stderr.write(
    `backed up ${m.source.path} (${formatBytes(m.size)}): ${formatFigures(backupFigures(m))}; ` +
      `${m.stats.chunksNew} new chunks (${formatBytes(m.stats.bytesStored)} stored), ${m.stats.chunksReused} reused, ` +
      `${m.stats.chunksZero} zero, ${m.stats.chunksFromParent} from parent ${m.parent ?? '-'}\n`,
  );
}

async function backupOne(source: string, o: Record<string, unknown>): Promise<void> {
  const progress = new ProgressOutput(o, 'backup', (p: BackupProgress) => ({
    ...p,
    info: `${formatRate(p.bytesPerSecond)} | ${throttleInfo(p.throttle)} | new ${p.chunksNew}`,
    extra: { chunksNew: p.chunksNew, bytesStored: p.bytesStored, latencyP50Ms: p.latencyP50Ms },
  }));
  const changed = typeof o.changed === 'string' ? await readChangedFile(o.changed) : undefined;
  const parent = o.parent === false ? null : typeof o.parent === 'string' ? o.parent : undefined;
  const result = await withInterrupt((signal) =>
    progress.around(
      backup({
        source,
        ...jobOptions(o, false),
        parent,
        changed,
        ...(typeof o.changedBitmap === 'string' ? { changedBitmap: o.changedBitmap } : {}),
        signal,
        onProgress: progress.onProgress,
      }),
    ),
  );
  printStaleFiles(result.staleFilesRemoved);
  if (result.fallback !== undefined) printWarnings([result.fallback]);
  if (o.json === true)
    printJson({
      ...result.manifest,
      figures: backupFigures(result.manifest),
      ...(result.readFrom !== undefined ? { readFrom: result.readFrom } : {}),
    });
  else printBackupSummary(result);
}

/** --progress ndjson with several sources: a `job` line for each job event. */
function writeJobEvent(e: BackupJobEvent): void {
  const { kind, source } = e;
  if (e.kind === 'failed')
    writeEvent('backup', 'job', { kind, source, error: { code: e.error.code, message: e.error.message } });
  else if (e.kind === 'done') writeEvent('backup', 'job', { kind, source, id: e.result.id });
  else writeEvent('backup', 'job', { ...e });
}

/** The warning for temporary files a killed run left in the repository, if any were removed. */
function printStaleFiles(stale: { files: number; bytes: number }): void {
  if (stale.files > 0)
    printWarnings([
      `removed ${stale.files} temporary files (${formatBytes(stale.bytes)}) that an unfinished earlier run left in the repository`,
    ]);
}

/** A line on stderr for each job event of several sources (a source that waits, starts or fails). */
function printJobEvent(e: BackupJobEvent): void {
  if (e.kind === 'waiting') {
    const why =
      e.latencyMs < 0
        ? 'the running jobs have not measured latency yet'
        : `latency ${e.latencyMs.toFixed(2)} ms is above the admission limit ${e.admissionLimitMs} ms`;
    process.stderr.write(`lowtide: ${e.source} waits: ${why}\n`);
  } else if (e.kind === 'start') {
    process.stderr.write(`lowtide: started ${e.source} (${e.running} running)\n`);
  } else if (e.kind === 'failed') {
    process.stderr.write(`lowtide: error [${e.error.code}]: ${e.source}: ${e.error.message}\n`);
  }
}

async function backupSeveral(sources: string[], o: Record<string, unknown>): Promise<void> {
  if (o.changed !== undefined || o.changedBitmap !== undefined || typeof o.parent === 'string') {
    throw new LowtideError('INVALID_ARGUMENT', '--changed, --changed-bitmap and --parent: only with a single source');
  }
  const json = o.json === true;
  const r = await withInterrupt((signal) =>
    backupMany({
      sources,
      ...jobOptions(o, true),
      parallel: o.parallel as number,
      signal,
      onJob: progressMode(o) === 'ndjson' ? writeJobEvent : json ? undefined : printJobEvent,
    }),
  );
  printStaleFiles(r.staleFilesRemoved);
  printWarnings(r.results.flatMap((x) => (x.fallback !== undefined ? [`${x.source}: ${x.fallback}`] : [])));
  if (json) printJson(r);
  else for (const x of r.results) if (x.ok) process.stdout.write(`${x.id}  ${x.source}\n`);
  if (r.results.some((x) => !x.ok)) throw new ReportedFailure();
}

export function addBackupCommand(program: Command): void {
  const backupCmd = program
    .command('backup')
    .description('back up files or block devices into a repository; prints the backup id (one line per source)')
    .argument('<source...>', 'files or block devices (opened read-only)')
    .addOption(
      new Option('--parallel <n>', 'backups running at once (several sources)')
        .default(1)
        .argParser(intArg('--parallel', 1, 64)),
    )
    .requiredOption('--repo <repo>', 'repository directory or s3://bucket/prefix')
    .option('--parent <id>', 'parent backup (default: the latest backup of the same source)')
    .option('--no-parent', 'no parent: read everything, still deduplicated against the repository')
    .option('--changed <file>', 'JSON file with the extents changed since the parent: [[offset, length], ...]')
    .option(
      '--changed-bitmap <name>',
      "the qcow2 image's persistent dirty bitmap NAME gives the extents changed since the parent (--format qcow2|auto)",
    )
    .option('--all-blocks', 'read every block (default: only what FAT file systems use)', false)
    .option(
      '--exclude <glob>',
      'leave out files/directories of FAT volumes (repeatable; "N:glob" for partition N)',
      collect,
      [],
    )
    .option('--strict', 'fail on an unparseable file system instead of backing it up in full', false)
    .option(
      '--read-from-device',
      "read file sources' blocks from the block device under their file system (O_DIRECT)",
      false,
    )
    .addOption(
      new Option('--queue-depth <n>', 'reads in flight').default(32).argParser(intArg('--queue-depth', 1, 1024)),
    )
    .addOption(sourceFormatOption())
    .option('--json', 'print the manifest as JSON', false);
  addProgressOptions(backupCmd);
  addThrottleOptions(backupCmd, true).action(async (sources: string[], o: Record<string, unknown>) => {
    if (sources.length > 1) await backupSeveral(sources, o);
    else await backupOne(sources[0]!, o);
  });
}
