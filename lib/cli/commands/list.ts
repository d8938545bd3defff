/** `lowtide list`: the backups in a repository. */
import type { Command } from 'commander';
import { openRepository } from '../../index.js';
import { printJson } from '../output.js';
import { formatBytes } from '../progress.js';

export function addListCommand(program: Command): void {
  program
    .command('list')
    .description('list the backups in a repository')
    .requiredOption('--repo <repo>', 'repository directory or s3://bucket/prefix')
    .option('--json', 'print JSON', false)
    .action(async (o: Record<string, unknown>) => {
      const repo = await openRepository(o.repo as string);
      let listing;
      try {
        listing = await repo.listBackups();
      } finally {
        repo.close();
      }
      const { backups, damaged } = listing;
      if (o.json === true) {
        // Each entry is a subset of the backup's manifest (docs/cli-json.md):
        // the same names, types and values, the extent list left out of plan.
        printJson({
          backups: backups.map((b) => ({
            id: b.id,
            created: b.created,
            source: b.source,
            size: b.size,
            chunkSize: b.chunkSize,
            chunkCount: b.chunkCount,
            parent: b.parent,
            plan: { mode: b.plan.mode },
            stats: b.stats,
            timing: b.timing,
          })),
          damaged: damaged.map((d) => ({ id: d.id, error: { code: d.error.code, message: d.error.message } })),
        });
        return;
      }
      for (const b of backups) {
        process.stdout.write(
          `${b.id}  ${b.created}  ${formatBytes(b.size).padStart(10)}  ${b.plan.mode.padEnd(7)}  ${b.source.path}\n`,
        );
      }
      for (const d of damaged) process.stdout.write(`${d.id}  DAMAGED: ${d.error.message}\n`);
    });
}
