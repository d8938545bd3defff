/** `lowtide extract`: a file or directory tree out of a FAT volume, in a disk or image or in a backup. */
import { Option, type Command } from 'commander';
import { extractFromBackup, extractPath, type DiskFormat } from '../../index.js';
import { intArg, sourceFormatOption } from '../args.js';
import { withInterrupt } from '../interrupt.js';
import { addSourceOption, selectBackup } from '../latest.js';
import { printJson } from '../output.js';
import { sourceFlag } from './files.js';
import { formatBytes } from '../progress.js';

export function addExtractCommand(program: Command): void {
  const cmd = program
    .command('extract')
    .description('copy a file or a directory tree out of a FAT volume in a disk or image, or in a backup (--repo)')
    .argument('<source>', 'disk, partition or image (opened read-only); with --repo, a backup id or "latest"')
    .option('--repo <repo>', 'extract from a backup in this repository, reading only the chunks the files need')
    .argument('<path>', 'path in the volume, from its root')
    .argument('<dest>', 'where to write it (an existing directory receives it by name)')
    .addOption(new Option('--partition <n>', 'partition number').argParser(intArg('--partition', 0, 1e6)))
    .option('-f, --force', 'replace existing files', false)
    .addOption(sourceFormatOption())
    .option('--json', 'print JSON', false);
  addSourceOption(cmd).action(async (source: string, path: string, dest: string, o: Record<string, unknown>) => {
    const xo = { path, dest, partition: o.partition as number | undefined, force: o.force === true };
    const repo = typeof o.repo === 'string' ? o.repo : undefined;
    const only = sourceFlag(o);
    const selected = repo !== undefined ? await selectBackup(repo, source, only) : undefined;
    const r = await withInterrupt((signal) =>
      repo !== undefined
        ? extractFromBackup({ repository: repo, backup: selected!.id, ...xo, signal })
        : extractPath({ source, ...xo, format: o.format as DiskFormat, signal }),
    );
    if (o.json === true) printJson({ ...(selected ? { selectedBackup: selected } : {}), ...r });
    else
      process.stdout.write(
        `extracted ${r.files} files and ${r.directories} directories (${formatBytes(r.bytes)}) to ${r.dest}\n`,
      );
  });
}
