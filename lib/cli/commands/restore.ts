/** `lowtide restore`: a backup written to an image file or a block device. */
import { Option, type Command } from 'commander';
import { restore } from '../../index.js';
import { intArg } from '../args.js';
import { withInterrupt } from '../interrupt.js';
import { printJson } from '../output.js';
import { formatBytes, formatRate, progressBarFor } from '../progress.js';
import { addThrottleOptions, throttleInfo, throttleSettings } from '../throttle-flags.js';

export function addRestoreCommand(program: Command): void {
  const restoreCmd = program
    .command('restore')
    .description('restore a backup to an image file or a block device')
    .argument('<backup>', 'backup id or "latest"')
    .argument('<target>', 'image file to create, or block device to overwrite')
    .requiredOption('--repo <repo>', 'repository directory')
    .option('-f, --force', 'replace an existing target file', false)
    .addOption(
      new Option('--queue-depth <n>', 'chunk writes in flight').default(8).argParser(intArg('--queue-depth', 1, 256)),
    )
    .option('--json', 'print JSON', false)
    .option('--no-progress', 'no progress bar');
  addThrottleOptions(restoreCmd).action(async (id: string, target: string, o: Record<string, unknown>) => {
    const bar = progressBarFor(o);
    const r = await withInterrupt((signal) =>
      restore({
        repository: o.repo as string,
        backup: id,
        target,
        force: o.force === true,
        queueDepth: o.queueDepth as number,
        ...throttleSettings(o),
        signal,
        onProgress: bar
          ? (p) =>
              bar.update(p.bytesDone, p.bytesTotal, `${formatRate(p.bytesPerSecond)} | ${throttleInfo(p.throttle)}`)
          : undefined,
      }).finally(() => bar?.stop()),
    );
    if (o.json === true) printJson(r);
    else
      process.stdout.write(
        `restored ${r.backup} to ${r.target}: ${formatBytes(r.size)} in ${r.seconds.toFixed(2)} s (${r.chunksVerified} chunks verified)\n`,
      );
  });
}
