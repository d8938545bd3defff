/** `lowtide prune`: old backups removed by a retention rule, then the chunks no backup needs. */
import { Option, type Command } from 'commander';
import { pruneRepository } from '../../index.js';
import { intArg } from '../args.js';
import { printJson, printWarnings } from '../output.js';
import { formatBytes } from '../progress.js';

export function addPruneCommand(program: Command): void {
  program
    .command('prune')
    .description('remove old backups by a retention rule, then chunks no backup needs')
    .requiredOption('--repo <repo>', 'repository directory or s3://bucket/prefix')
    .addOption(
      new Option('--keep-last <n>', 'keep the newest N backups of each source').argParser(
        intArg('--keep-last', 0, 1e9),
      ),
    )
    .addOption(
      new Option('--keep-daily <n>', 'keep one backup for each of the last N days').argParser(
        intArg('--keep-daily', 0, 1e9),
      ),
    )
    .addOption(
      new Option('--keep-weekly <n>', 'keep one backup for each of the last N weeks').argParser(
        intArg('--keep-weekly', 0, 1e9),
      ),
    )
    .option('--dry-run', 'show what would be removed', false)
    .option('--json', 'print JSON', false)
    .action(async (o: Record<string, unknown>) => {
      const r = await pruneRepository({
        repository: o.repo as string,
        keepLast: o.keepLast as number | undefined,
        keepDaily: o.keepDaily as number | undefined,
        keepWeekly: o.keepWeekly as number | undefined,
        dryRun: o.dryRun === true,
      });
      const stale = r.staleFilesRemoved;
      if (stale.files > 0)
        printWarnings([
          `removed ${stale.files} temporary files (${formatBytes(stale.bytes)}) that an unfinished earlier run left in the repository`,
        ]);
      printWarnings(r.damaged.map((d) => `kept backup ${d.id} and its chunks: ${d.message}`));
      if (r.chunksKept !== undefined) printWarnings([r.chunksKept]);
      if (o.json === true) {
        printJson(r);
      } else {
        process.stdout.write(
          `${r.dryRun ? 'would remove' : 'removed'} ${r.removed.length} backups (${r.removed.join(', ') || 'none'}), kept ${r.kept.length}; ` +
            `${r.packsRemoved !== undefined ? `${r.packsRemoved} packs` : `${r.chunksRemoved} chunks`} removed, ${formatBytes(r.bytesFreed)} freed\n`,
        );
      }
    });
}
