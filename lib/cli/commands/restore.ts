/** `lowtide restore`: a backup written to an image file or a block device. */
import { Option, type Command } from 'commander';
import { restore, type RestoreProgress } from '../../index.js';
import { intArg } from '../args.js';
import { withInterrupt } from '../interrupt.js';
import { addSourceOption, selectBackup } from '../latest.js';
import { printJson } from '../output.js';
import { addProgressOptions, formatBytes, formatFigures, formatRate, jobFigures, ProgressOutput } from '../progress.js';
import { addThrottleOptions, throttleInfo, throttleSettings } from '../throttle-flags.js';

export function addRestoreCommand(program: Command): void {
  const restoreCmd = program
    .command('restore')
    .description('restore a backup to an image file or a block device')
    .argument('<backup>', 'backup id or "latest"')
    .argument('<target>', 'image file to create, or block device to overwrite')
    .requiredOption('--repo <repo>', 'repository directory or s3://bucket/prefix')
    .option('-f, --force', 'replace an existing target file', false)
    .addOption(
      new Option('--format <format>', 'raw, or qcow2: the target file is a qcow2 image of the backup')
        .choices(['raw', 'qcow2'])
        .default('raw'),
    )
    .addOption(
      new Option('--queue-depth <n>', 'chunk writes in flight').default(8).argParser(intArg('--queue-depth', 1, 256)),
    )
    .option('--json', 'print JSON', false);
  addSourceOption(restoreCmd);
  addProgressOptions(restoreCmd);
  addThrottleOptions(restoreCmd).action(async (id: string, target: string, o: Record<string, unknown>) => {
    const selected = await selectBackup(o.repo as string, id, o.source as string | undefined);
    const progress = new ProgressOutput(o, 'restore', (p: RestoreProgress) => ({
      ...p,
      info: `${formatRate(p.bytesPerSecond)} | ${throttleInfo(p.throttle)}`,
    }));
    const r = await withInterrupt((signal) =>
      progress.around(
        restore({
          repository: o.repo as string,
          backup: selected.id,
          target,
          force: o.force === true,
          format: o.format as 'raw' | 'qcow2',
          queueDepth: o.queueDepth as number,
          ...throttleSettings(o),
          signal,
          onProgress: progress.onProgress,
        }),
      ),
    );
    // What restore reads is compressed chunks in the repository: not counted.
    const figures = jobFigures(r.size, r.seconds, null, r.bytesWritten);
    if (o.json === true) printJson({ ...r, selectedBackup: selected, figures });
    else
      process.stdout.write(
        `restored ${r.backup} to ${r.target}: ${formatBytes(r.size)}, ${formatFigures(figures)} (${r.chunksVerified} chunks verified)\n`,
      );
  });
}
