/** `lowtide verify`: every chunk re-read and its digest checked; exit 1 when a backup is damaged. */
import type { Command } from 'commander';
import { openRepository, verifyRepository } from '../../index.js';
import { withInterrupt } from '../interrupt.js';
import { printJson, ReportedFailure } from '../output.js';
import { formatBytes } from '../progress.js';

export function addVerifyCommand(program: Command): void {
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
        process.stdout.write(
          `checked ${report.chunksChecked} chunks (${formatBytes(report.bytesChecked)}) and ${report.backupsChecked} backups in ${report.seconds.toFixed(2)} s\n`,
        );
        for (const p of report.problems) {
          process.stdout.write(
            `${p.problem} chunk ${p.digest}: ${p.message}; needed by ${p.backups.join(', ') || 'no backup'}\n`,
          );
        }
        for (const d of report.damagedManifests) process.stdout.write(`damaged backup ${d.id}: ${d.message}\n`);
        process.stdout.write(
          report.ok ? 'repository OK\n' : `damaged backups: ${report.damagedBackups.join(', ') || 'none'}\n`,
        );
      }
      if (!report.ok) throw new ReportedFailure();
    });
}
