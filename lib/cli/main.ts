#!/usr/bin/env node
/**
 * The `lowtide` command. Exit codes: 0 success, 1 failure (one line on
 * stderr), 2 usage error, 130 interrupted.
 */
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { readFile } from 'node:fs/promises';
import {
  LowtideError,
  backup,
  imageSource,
  initRepository,
  ioUringAvailable,
  openRepository,
  openSource,
  parseSize,
  pruneRepository,
  restore,
  verifyRepository,
  version,
  type ImageSummary,
} from '../index.js';
import { listFiles, extractPath, describeDisk, listBackupFiles, extractFromBackup } from '../jobs/files.js';
import { backupMany } from '../jobs/backup-many.js';
import type { ThrottleState } from '../throttle/job-throttle.js';
import { CONTROLLER_NAMES, DEFAULT_CONTROLLER, type ControllerName } from '../throttle/types.js';
import { formatBytes, formatRate, ProgressBar } from './progress.js';

/** Errors that mean "the command line is wrong" rather than "the work failed". */
class UsageError extends Error {}

function sizeArg(name: string) {
  return (text: string): number => {
    try {
      return parseSize(name, text);
    } catch (err) {
      throw new InvalidArgumentError((err as Error).message);
    }
  };
}

function intArg(name: string, min: number, max: number) {
  return (text: string): number => {
    const n = Number(text);
    if (!/^\d+$/.test(text.trim()) || !Number.isSafeInteger(n) || n < min || n > max) {
      throw new InvalidArgumentError(`${name}: expected an integer from ${min} to ${max}, got ${JSON.stringify(text)}`);
    }
    return n;
  };
}

function numberArg(name: string, min: number) {
  return (text: string): number => {
    const n = Number(text);
    if (text.trim() === '' || !Number.isFinite(n) || n < min) {
      throw new InvalidArgumentError(`${name}: expected a number of at least ${min}, got ${JSON.stringify(text)}`);
    }
    return n;
  };
}

/**
 * The throttle flags shared by every job that touches production storage.
 * The admission limit decides when the next of several jobs may start, so only
 * commands that run several jobs (backup of several sources) take it.
 */
function addThrottleOptions(cmd: Command, withAdmission = false): Command {
  cmd
    .addOption(new Option('--throttle <name>', 'latency controller').choices([...CONTROLLER_NAMES]).default(DEFAULT_CONTROLLER))
    .addOption(
      new Option('--latency-target <ms|auto>', 'throttling limit: latency to hold, in ms, or auto (measured idle latency)')
        .default('auto')
        .argParser((t: string) => (t === 'auto' ? 'auto' : numberArg('--latency-target', 0.001)(t))),
    )
    .addOption(new Option('--rate-limit <MB/s>', 'fixed cap in MB/s (10^6 bytes), on top of the controller').argParser(numberArg('--rate-limit', 0.001)));
  if (withAdmission) {
    cmd.addOption(
      new Option('--admission-limit <ms>', 'with several sources: start no new backup while latency is above this').argParser(
        numberArg('--admission-limit', 0.001),
      ),
    );
  }
  return cmd;
}

function throttleSettings(o: Record<string, unknown>): {
  throttle: ControllerName;
  latencyTarget: number | 'auto';
  admissionLimit?: number;
  rateLimit?: number;
} {
  return {
    throttle: o.throttle as ControllerName,
    latencyTarget: o.latencyTarget as number | 'auto',
    ...(o.admissionLimit !== undefined ? { admissionLimit: o.admissionLimit as number } : {}),
    ...(o.rateLimit !== undefined ? { rateLimit: (o.rateLimit as number) * 1e6 } : {}),
  };
}

function throttleInfo(t: ThrottleState): string {
  const probe = t.probeLatencyMs !== undefined ? `probe ${t.probeLatencyMs.toFixed(2)}/${t.probeTargetMs!.toFixed(2)} ms, ` : '';
  return `${probe}lat ${t.latencyMs.toFixed(2)} ms, delay ${t.delayMs.toFixed(1)} ms, QD ${t.queueDepth}, ${formatBytes(t.blockSize)}`;
}

function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

function withInterrupt<T>(run: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const controller = new AbortController();
  const onSignal = (): void => {
    if (controller.signal.aborted) process.exit(130);
    controller.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return run(controller.signal).finally(() => {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  });
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

function printImageSummary(s: ImageSummary): void {
  for (const w of s.plan.warnings) process.stderr.write(`lowtide: warning: ${w}\n`);
  const lines = [
    `imaged ${s.source} -> ${s.output}`,
    `  size        ${formatBytes(s.size)}`,
    `  read        ${formatBytes(s.bytesRead)}  (${s.direct ? 'O_DIRECT' : 'buffered'}, ${s.engine}, ${formatBytes(s.blockSize)} x QD ${s.queueDepth})`,
    `  written     ${formatBytes(s.bytesWritten)}`,
    `  not read    ${formatBytes(s.bytesNotRead)} (free or excluded clusters)`,
    `  holes       ${formatBytes(s.bytesSkipped)} (all-zero blocks not written)`,
    ...s.plan.partitions.map(
      (p) =>
        `  partition ${p.index}  ${(p.fileSystem ?? 'extended').padEnd(7)} ${p.mode.padEnd(9)} read ${formatBytes(p.bytesToRead)} of ${formatBytes(p.size)}` +
        (p.fat ? `, ${p.fat.usedClusters}/${p.fat.totalClusters} clusters used` : ''),
    ),
    ...(s.plan.excluded.length > 0
      ? [`  excluded    ${s.plan.excluded.length} entries, ${formatBytes(s.plan.bytesExcluded)}: ${s.plan.excluded.slice(0, 10).map((e) => `${e.partition}:${e.path}`).join(', ')}${s.plan.excluded.length > 10 ? ', ...' : ''}`]
      : []),
    `  time        ${s.seconds.toFixed(2)} s, ${formatRate(s.size / Math.max(s.seconds, 1e-9))}`,
    `  latency     p50 ${s.latency.p50Ms.toFixed(3)} ms, p99 ${s.latency.p99Ms.toFixed(3)} ms, max ${s.latency.maxMs.toFixed(3)} ms`,
    `  throttle    ${s.throttle.controller}, target ${s.throttle.target.ms.toFixed(2)} ms (${s.throttle.target.mode}), delayed ${(s.throttle.delayedMs / 1000).toFixed(2)} s`,
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
}

export function buildProgram(): Command {
  const program = new Command();
  program
    .name('lowtide')
    .description('Low-impact, image-level backup and replication')
    .version(version)
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) });

  const image = program
    .command('image')
    .description('copy a file or block device to a sparse image file')
    .argument('<source>', 'file or block device to read (opened read-only)')
    .argument('<output>', 'image file to write')
    .addOption(new Option('--block-size <size>', 'read request size').default(1 << 20, '1M').argParser(sizeArg('--block-size')))
    .addOption(new Option('--queue-depth <n>', 'reads in flight').default(32).argParser(intArg('--queue-depth', 1, 1024)))
    .addOption(new Option('--engine <name>', 'read engine').choices(['auto', 'io_uring', 'threads']).default('auto'))
    .addOption(new Option('--direct <mode>', 'O_DIRECT use').choices(['auto', 'on', 'off']).default('auto'))
    .option('--no-sparse', 'write all-zero blocks instead of leaving holes')
    .option('--all-blocks', 'copy every block (default: only what FAT file systems use)', false)
    .option('--exclude <glob>', 'leave out files/directories of FAT volumes (repeatable; "N:glob" for partition N)', collect, [])
    .option('--strict', 'fail on an unparseable file system instead of copying it in full', false)
    .option('-f, --force', 'replace an existing output file', false)
    .option('--json', 'print a machine-readable summary', false)
    .option('--no-progress', 'no progress bar');
  addThrottleOptions(image).action(async (source: string, output: string, o: Record<string, unknown>) => {
      const json = o.json === true;
      const bar = !json && o.progress !== false && process.stderr.isTTY ? new ProgressBar() : undefined;
      const summary = await withInterrupt((signal) =>
        imageSource(source, output, {
          blockSize: o.blockSize as number,
          queueDepth: o.queueDepth as number,
          engine: o.engine as 'auto' | 'io_uring' | 'threads',
          direct: o.direct as 'auto' | 'on' | 'off',
          sparse: o.sparse !== false,
          force: o.force === true,
          allBlocks: o.allBlocks === true,
          exclude: o.exclude as string[],
          strict: o.strict === true,
          ...throttleSettings(o),
          signal,
          onProgress: bar ? (p) => bar.update(p.bytesDone, p.bytesTotal, `${formatRate(p.bytesPerSecond)} | ${throttleInfo(p.throttle)}`) : undefined,
        }).finally(() => bar?.stop()),
      );
      if (json) printJson(summary);
      else printImageSummary(summary);
    });

  program
    .command('inspect')
    .description('show what lowtide sees of a source: size, sector sizes, I/O mode')
    .argument('<source>', 'file or block device (opened read-only)')
    .addOption(new Option('--direct <mode>', 'O_DIRECT use').choices(['auto', 'on', 'off']).default('auto'))
    .option('--json', 'print JSON', false)
    .action(async (path: string, o: Record<string, unknown>) => {
      const source = await openSource(path, { direct: o.direct as 'auto' | 'on' | 'off' });
      try {
        const disk = await describeDisk(path);
        const info = {
          ...source.info(),
          ioMode: source.direct ? 'O_DIRECT' : 'buffered',
          engine: ioUringAvailable() ? 'io_uring' : 'threads',
          ...disk,
        };
        if (o.json === true) {
          printJson(info);
        } else {
          process.stdout.write(
            [
              `${info.path}`,
              `  kind                 ${info.kind === 'block' ? 'block device' : 'regular file'}`,
              `  size                 ${formatBytes(info.size)} (${info.size} bytes)`,
              `  logical sector       ${info.sectorSize} bytes`,
              `  physical sector      ${info.physicalSectorSize} bytes`,
              `  I/O mode             ${info.ioMode}`,
              `  read engine          ${info.engine}`,
              `  partition table      ${info.table}`,
              ...info.partitions.map(
                (p) =>
                  `  partition ${String(p.index).padEnd(3)}        ${formatBytes(p.start).padStart(10)} +${formatBytes(p.size).padEnd(10)} ${(p.fileSystem ?? 'extended').padEnd(8)}` +
                  (p.fat
                    ? ` ${p.fat.type}, ${formatBytes(p.fat.clusterSize)} clusters, ${p.fat.usedClusters}/${p.fat.totalClusters} used, ${p.fat.freeClusters} free${p.fat.label ? `, label ${JSON.stringify(p.fat.label)}` : ''}`
                    : '') +
                  (p.error ? ` (${p.error})` : ''),
              ),
              ...info.warnings.map((w) => `  warning              ${w}`),
            ].join('\n') + '\n',
          );
        }
      } finally {
        await source.close();
      }
    });
  program
    .command('files')
    .description('list the files and directories of a FAT volume in a disk or image, or in a backup (--repo)')
    .argument('<source>', 'disk, partition or image (opened read-only); with --repo, a backup id or "latest"')
    .option('--repo <repo>', 'read from a backup in this repository (no chunk is read: the backup\'s catalog lists the files)')
    .addOption(new Option('--partition <n>', 'partition number (as Linux numbers them)').argParser(intArg('--partition', 0, 1e6)))
    .option('--json', 'print JSON', false)
    .action(async (source: string, o: Record<string, unknown>) => {
      const choice = { partition: o.partition as number | undefined };
      const entries = typeof o.repo === 'string' ? await listBackupFiles(o.repo, source, choice) : await listFiles(source, choice);
      if (o.json === true) {
        printJson(entries);
        return;
      }
      for (const e of entries) {
        const attrs = `${e.isDirectory ? 'd' : '-'}${e.readOnly ? 'r' : '-'}${e.hidden ? 'h' : '-'}${e.system ? 's' : '-'}${e.archive ? 'a' : '-'}`;
        process.stdout.write(`${attrs} ${String(e.isDirectory ? '' : e.size).padStart(12)}  ${e.modified}  ${e.path}\n`);
      }
    });

  program
    .command('extract')
    .description('copy a file or a directory tree out of a FAT volume in a disk or image, or in a backup (--repo)')
    .argument('<source>', 'disk, partition or image (opened read-only); with --repo, a backup id or "latest"')
    .option('--repo <repo>', 'extract from a backup in this repository, reading only the chunks the files need')
    .argument('<path>', 'path in the volume, from its root')
    .argument('<dest>', 'where to write it (an existing directory receives it by name)')
    .addOption(new Option('--partition <n>', 'partition number').argParser(intArg('--partition', 0, 1e6)))
    .option('-f, --force', 'replace existing files', false)
    .option('--json', 'print JSON', false)
    .action(async (source: string, path: string, dest: string, o: Record<string, unknown>) => {
      const xo = { partition: o.partition as number | undefined, force: o.force === true };
      const r = await withInterrupt((signal) =>
        typeof o.repo === 'string'
          ? extractFromBackup(o.repo, source, path, dest, { ...xo, signal })
          : extractPath(source, path, dest, { ...xo, signal }),
      );
      if (o.json === true) printJson(r);
      else process.stdout.write(`extracted ${r.files} files and ${r.directories} directories (${formatBytes(r.bytes)}) to ${r.dest}\n`);
    });

  program
    .command('init')
    .description('create a backup repository in an empty or new directory')
    .argument('<repo>', 'directory for the repository')
    .addOption(new Option('--chunk-size <size>', 'chunk size: a power of two from 64K to 8M').default(1 << 20, '1M').argParser(sizeArg('--chunk-size')))
    .addOption(new Option('--zstd-level <n>', 'zstd compression level').default(3).argParser(intArg('--zstd-level', 1, 19)))
    .option('--json', 'print JSON', false)
    .action(async (path: string, o: Record<string, unknown>) => {
      const repo = await initRepository(path, { chunkSize: o.chunkSize as number, zstdLevel: o.zstdLevel as number });
      if (o.json === true) printJson({ path: repo.path, ...repo.config });
      else process.stdout.write(`created repository ${repo.path} (chunk size ${formatBytes(repo.chunkSize)}, zstd level ${repo.config.compression.level})\n`);
    });

  const backupCmd = program
    .command('backup')
    .description('back up files or block devices into a repository; prints the backup id (one line per source)')
    .argument('<source...>', 'files or block devices (opened read-only)')
    .addOption(new Option('--parallel <n>', 'backups running at once (several sources)').default(1).argParser(intArg('--parallel', 1, 64)))
    .requiredOption('--repo <repo>', 'repository directory')
    .option('--parent <id>', 'parent backup (default: the latest backup of the same source)')
    .option('--no-parent', 'no parent: read everything, still deduplicated against the repository')
    .option('--changed <file>', 'JSON file with the extents changed since the parent: [[offset, length], ...]')
    .option('--all-blocks', 'read every block (default: only what FAT file systems use)', false)
    .option('--exclude <glob>', 'leave out files/directories of FAT volumes (repeatable; "N:glob" for partition N)', collect, [])
    .option('--strict', 'fail on an unparseable file system instead of backing it up in full', false)
    .addOption(new Option('--queue-depth <n>', 'reads in flight').default(32).argParser(intArg('--queue-depth', 1, 1024)))
    .option('--json', 'print the manifest as JSON', false)
    .option('--no-progress', 'no progress bar');
  addThrottleOptions(backupCmd, true).action(async (sources: string[], o: Record<string, unknown>) => {
      if (sources.length > 1) {
        await backupSeveral(sources, o);
        return;
      }
      const source = sources[0]!;
      const json = o.json === true;
      const bar = !json && o.progress !== false && process.stderr.isTTY ? new ProgressBar() : undefined;
      let changed: { offset: number; length: number }[] | undefined;
      if (typeof o.changed === 'string') changed = await readChangedFile(o.changed);
      const parent = o.parent === false ? null : typeof o.parent === 'string' ? o.parent : undefined;
      const result = await withInterrupt((signal) =>
        backup({
          source,
          repository: o.repo as string,
          parent,
          changed,
          allBlocks: o.allBlocks === true,
          exclude: o.exclude as string[],
          strict: o.strict === true,
          queueDepth: o.queueDepth as number,
          ...throttleSettings(o),
          signal,
          onProgress: bar ? (p) => bar.update(p.bytesDone, p.bytesTotal, `${formatRate(p.bytesPerSecond)} | ${throttleInfo(p.throttle)} | new ${p.chunksNew}`) : undefined,
        }).finally(() => bar?.stop()),
      );
      if (json) {
        printJson(result.manifest);
      } else {
        const m = result.manifest;
        for (const w of (m.filesystems.warnings as string[] | undefined) ?? []) process.stderr.write(`lowtide: warning: ${w}\n`);
        process.stdout.write(`${result.id}\n`);
        process.stderr.write(
          `backed up ${m.source.path}: ${formatBytes(m.size)} in ${m.timing.seconds.toFixed(2)} s; read ${formatBytes(m.stats.bytesRead)}, ` +
            `${m.stats.chunksNew} new chunks (${formatBytes(m.stats.bytesStored)} stored), ${m.stats.chunksReused} reused, ` +
            `${m.stats.chunksZero} zero, ${m.stats.chunksFromParent} from parent ${m.parent ?? '-'}\n`,
        );
      }
    });

  program
    .command('list')
    .description('list the backups in a repository')
    .requiredOption('--repo <repo>', 'repository directory')
    .option('--json', 'print JSON', false)
    .action(async (o: Record<string, unknown>) => {
      const repo = await openRepository(o.repo as string);
      const { backups, damaged } = await repo.listBackups();
      if (o.json === true) {
        printJson({
          backups: backups.map((b) => ({ id: b.id, created: b.created, source: b.source.path, size: b.size, parent: b.parent, mode: b.plan.mode, stats: b.stats })),
          damaged: damaged.map((d) => ({ id: d.id, error: d.error.message })),
        });
        return;
      }
      for (const b of backups) {
        process.stdout.write(`${b.id}  ${b.created}  ${formatBytes(b.size).padStart(10)}  ${b.plan.mode.padEnd(7)}  ${b.source.path}\n`);
      }
      for (const d of damaged) process.stdout.write(`${d.id}  DAMAGED: ${d.error.message}\n`);
    });

  const restoreCmd = program
    .command('restore')
    .description('restore a backup to an image file or a block device')
    .argument('<backup>', 'backup id or "latest"')
    .argument('<target>', 'image file to create, or block device to overwrite')
    .requiredOption('--repo <repo>', 'repository directory')
    .option('-f, --force', 'replace an existing target file', false)
    .addOption(new Option('--queue-depth <n>', 'chunk writes in flight').default(8).argParser(intArg('--queue-depth', 1, 256)))
    .option('--json', 'print JSON', false)
    .option('--no-progress', 'no progress bar');
  addThrottleOptions(restoreCmd).action(async (id: string, target: string, o: Record<string, unknown>) => {
      const json = o.json === true;
      const bar = !json && o.progress !== false && process.stderr.isTTY ? new ProgressBar() : undefined;
      const r = await withInterrupt((signal) =>
        restore({
          repository: o.repo as string,
          backup: id,
          target,
          force: o.force === true,
          queueDepth: o.queueDepth as number,
          ...throttleSettings(o),
          signal,
          onProgress: bar ? (p) => bar.update(p.bytesDone, p.bytesTotal, `${formatRate(p.bytesPerSecond)} | ${throttleInfo(p.throttle)}`) : undefined,
        }).finally(() => bar?.stop()),
      );
      if (json) printJson(r);
      else process.stdout.write(`restored ${r.backup} to ${r.target}: ${formatBytes(r.size)} in ${r.seconds.toFixed(2)} s (${r.chunksVerified} chunks verified)\n`);
    });

  program
    .command('verify')
    .description('re-read every chunk, check digests, report damaged backups (exit 1 if any)')
    .requiredOption('--repo <repo>', 'repository directory')
    .option('--json', 'print JSON', false)
    .action(async (o: Record<string, unknown>) => {
      const repo = await openRepository(o.repo as string);
      const report = await withInterrupt((signal) => verifyRepository(repo, { signal }));
      if (o.json === true) {
        printJson(report);
      } else {
        process.stdout.write(`checked ${report.chunksChecked} chunks (${formatBytes(report.bytesChecked)}) and ${report.backupsChecked} backups in ${report.seconds.toFixed(2)} s\n`);
        for (const p of report.problems) {
          process.stdout.write(`${p.problem} chunk ${p.digest}: ${p.message}; needed by ${p.backups.join(', ') || 'no backup'}\n`);
        }
        for (const d of report.damagedManifests) process.stdout.write(`damaged backup ${d.id}: ${d.message}\n`);
        process.stdout.write(report.ok ? 'repository OK\n' : `damaged backups: ${report.damagedBackups.join(', ') || 'none'}\n`);
      }
      if (!report.ok) throw new VerifyFailed();
    });

  program
    .command('prune')
    .description('remove old backups by a retention rule, then chunks no backup needs')
    .requiredOption('--repo <repo>', 'repository directory')
    .addOption(new Option('--keep-last <n>', 'keep the newest N backups of each source').argParser(intArg('--keep-last', 0, 1e9)))
    .addOption(new Option('--keep-daily <n>', 'keep one backup for each of the last N days').argParser(intArg('--keep-daily', 0, 1e9)))
    .addOption(new Option('--keep-weekly <n>', 'keep one backup for each of the last N weeks').argParser(intArg('--keep-weekly', 0, 1e9)))
    .option('--dry-run', 'show what would be removed', false)
    .option('--json', 'print JSON', false)
    .action(async (o: Record<string, unknown>) => {
      const repo = await openRepository(o.repo as string);
      const r = await pruneRepository(repo, {
        keepLast: o.keepLast as number | undefined,
        keepDaily: o.keepDaily as number | undefined,
        keepWeekly: o.keepWeekly as number | undefined,
        dryRun: o.dryRun === true,
      });
      if (o.json === true) printJson(r);
      else {
        process.stdout.write(
          `${r.dryRun ? 'would remove' : 'removed'} ${r.removed.length} backups (${r.removed.join(', ') || 'none'}), kept ${r.kept.length}; ` +
            `${r.chunksRemoved} chunks removed, ${formatBytes(r.bytesFreed)} freed\n`,
        );
      }
    });
  return program;
}

async function backupSeveral(sources: string[], o: Record<string, unknown>): Promise<void> {
  if (o.changed !== undefined || typeof o.parent === 'string') {
    throw new LowtideError('INVALID_ARGUMENT', '--changed and --parent: only with a single source');
  }
  const json = o.json === true;
  const r = await withInterrupt((signal) =>
    backupMany({
      sources,
      repository: o.repo as string,
      parallel: o.parallel as number,
      allBlocks: o.allBlocks === true,
      exclude: o.exclude as string[],
      strict: o.strict === true,
      queueDepth: o.queueDepth as number,
      ...throttleSettings(o),
      signal,
      onJob: json
        ? undefined
        : (e) => {
            if (e.kind === 'waiting') {
              const why = e.latencyMs < 0 ? 'the running jobs have not measured latency yet' : `latency ${e.latencyMs.toFixed(2)} ms is above the admission limit ${e.admissionLimitMs} ms`;
              process.stderr.write(`lowtide: ${e.source} waits: ${why}\n`);
            } else if (e.kind === 'start') {
              process.stderr.write(`lowtide: started ${e.source} (${e.running} running)\n`);
            } else if (e.kind === 'failed') {
              process.stderr.write(`lowtide: error [${e.error.code}]: ${e.source}: ${e.error.message}\n`);
            }
          },
    }),
  );
  if (json) printJson(r);
  else for (const x of r.results) if (x.ok) process.stdout.write(`${x.id}  ${x.source}\n`);
  if (r.results.some((x) => !x.ok)) throw new VerifyFailed();
}

/** verify found problems: exit 1 without another error line (the report says what). */
class VerifyFailed extends Error {}

async function readChangedFile(path: string): Promise<{ offset: number; length: number }[]> {
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(path, 'utf8'));
  } catch (err) {
    throw new LowtideError('INVALID_ARGUMENT', `--changed: cannot read ${path} as JSON: ${(err as Error).message}`);
  }
  if (!Array.isArray(raw)) throw new LowtideError('INVALID_ARGUMENT', `--changed: expected a JSON array of [offset, length] pairs in ${path}`);
  return raw.map((e: unknown, i) => {
    if (Array.isArray(e) && e.length === 2) return { offset: e[0] as number, length: e[1] as number };
    if (e && typeof e === 'object') return e as { offset: number; length: number };
    throw new LowtideError('INVALID_ARGUMENT', `--changed: element ${i} of ${path} is not [offset, length]`);
  });
}

export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv, { from: 'user' });
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      // --help and --version end here too, with exit code 0.
      if (err.exitCode === 0) return 0;
      return 2;
    }
    if (err instanceof VerifyFailed) return 1;
    if (err instanceof UsageError) {
      process.stderr.write(`lowtide: ${err.message}\n`);
      return 2;
    }
    if (err instanceof LowtideError) {
      process.stderr.write(`lowtide: error [${err.code}]: ${err.message}\n`);
      if (err.code === 'ABORTED') return 130;
      return err.code === 'INVALID_ARGUMENT' ? 2 : 1;
    }
    const e = err as Error;
    process.stderr.write(`lowtide: internal error: ${e?.stack ?? String(err)}\n`);
    return 1;
  }
}

// Not a top-level await: the bundled command (rolldown.config.mjs) is a
// CommonJS file, which cannot have one. main() reports its own errors.
void main(process.argv.slice(2)).then((code) => {
  process.exitCode = code;
});
