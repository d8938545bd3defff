/** `lowtide files`: the files and directories of a FAT volume, in a disk or image or in a backup. */
import { Option, type Command } from 'commander';
import { listBackupFiles, listFiles, type DiskFormat } from '../../index.js';
import { intArg, sourceFormatOption } from '../args.js';
import { addSourceOption, selectBackup } from '../latest.js';
import { CliError, EXIT, printJson } from '../output.js';

/** --source, which only a backup (--repo) has. */
export function sourceFlag(o: Record<string, unknown>): string | undefined {
  if (o.source !== undefined && typeof o.repo !== 'string') {
    throw new CliError('USAGE', '--source: only with --repo (it chooses among the backups)', EXIT.usage);
  }
  return o.source as string | undefined;
}

export function addFilesCommand(program: Command): void {
  const cmd = program
    .command('files')
    .description('list the files and directories of a FAT volume in a disk or image, or in a backup (--repo)')
    .argument('<source>', 'disk, partition or image (opened read-only); with --repo, a backup id or "latest"')
    .option(
      '--repo <repo>',
      "read from a backup in this repository (no chunk is read: the backup's catalog lists the files)",
    )
    .addOption(
      new Option('--partition <n>', 'partition number (as Linux numbers them)').argParser(
        intArg('--partition', 0, 1e6),
      ),
    )
    .addOption(sourceFormatOption())
    .option('--json', 'print JSON', false);
  addSourceOption(cmd).action(async (source: string, o: Record<string, unknown>) => {
    const choice = { partition: o.partition as number | undefined };
    const only = sourceFlag(o);
    const selected = typeof o.repo === 'string' ? await selectBackup(o.repo, source, only) : undefined;
    const entries =
      typeof o.repo === 'string'
        ? await listBackupFiles({ repository: o.repo, backup: selected!.id, ...choice })
        : await listFiles({ source, ...choice, format: o.format as DiskFormat });
    if (o.json === true) {
      printJson({ ...(selected ? { selectedBackup: selected } : {}), entries });
      return;
    }
    for (const e of entries) {
      const attrs = `${e.isDirectory ? 'd' : '-'}${e.readOnly ? 'r' : '-'}${e.hidden ? 'h' : '-'}${e.system ? 's' : '-'}${e.archive ? 'a' : '-'}`;
      process.stdout.write(`${attrs} ${String(e.isDirectory ? '' : e.size).padStart(12)}  ${e.modified}  ${e.path}\n`);
    }
  });
}
