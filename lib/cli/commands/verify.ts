/**
 * `lowtide verify`: every chunk re-read and its digest checked; exit 3 when a
 * backup is damaged, 1 when verify could not run.
 */
import type { Command } from 'commander';
import { verifyRepository } from '../../index.js';
import { withInterrupt } from '../interrupt.js';
import { EXIT, printJson, ReportedFailure } from '../output.js';
import { addProgressOptions, formatBytes, progressMode, writeEvent } from '../progress.js';

/** --progress ndjson: a line at most every 200 ms (verify reports every chunk), none otherwise. */
function verifyProgress(o: Record<string, unknown>) {
  if (progressMode(o) !== 'ndjson') return { onProgress: undefined, end: (): void => undefined };
  const t0 = process.hrtime.bigint();
  const elapsed = (): number => Number(process.hrtime.bigint() - t0) / 1e9;
  let last = -Infinity;
  let done = { chunksChecked: 0, bytesChecked: 0 };
  const line = (t: number): void =>
    writeEvent('verify', 'progress', {
      elapsedSeconds: t,
      bytesDone: done.bytesChecked,
      bytesTotal: null,
      bytesPerSecond: t > 0 ? done.bytesChecked / t : 0,
      chunksChecked: done.chunksChecked,
    });
  return {
    onProgress: (p: { chunksChecked: number; bytesChecked: number }): void => {
      done = p;
      const t = elapsed();
      if ((t - last) * 1000 < 200) return;
      last = t;
      line(t);
    },
    end: (ok: boolean): void => {
      const t = elapsed();
      line(t);
      writeEvent('verify', 'end', { ok, elapsedSeconds: t, bytesDone: done.bytesChecked });
    },
  };
}

export function addVerifyCommand(program: Command): void {
  const cmd = program
    .command('verify')
    .description('re-read every chunk, check digests, report damaged backups (exit 3 if any)')
    .requiredOption('--repo <repo>', 'repository directory or s3://bucket/prefix')
    .option('--json', 'print JSON', false);
  addProgressOptions(cmd).action(async (o: Record<string, unknown>) => {
    const progress = verifyProgress(o);
    const report = await withInterrupt((signal) =>
      verifyRepository({ repository: o.repo as string, signal, onProgress: progress.onProgress }).then(
        (r) => {
          progress.end(true);
          return r;
        },
        (err: unknown) => {
          progress.end(false);
          throw err;
        },
      ),
    );
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
    // Damage found is not a failure to run: its own exit code.
    if (!report.ok) throw new ReportedFailure(EXIT.damage);
  });
}
