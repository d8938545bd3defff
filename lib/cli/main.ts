#!/usr/bin/env node
/**
 * The `lowtide` command: the program built from one module per command
 * (commands/), and the exit codes: 0 success, 1 failure (one line on
 * stderr), 2 usage error, 130 interrupted.
 */
import { Command, CommanderError } from 'commander';
import { LowtideError, version } from '../index.js';
import { addBackupCommand } from './commands/backup.js';
import { addExtractCommand } from './commands/extract.js';
import { addFilesCommand } from './commands/files.js';
import { addImageCommand } from './commands/image.js';
import { addInitCommand } from './commands/init.js';
import { addInspectCommand } from './commands/inspect.js';
import { addListCommand } from './commands/list.js';
import { addPruneCommand } from './commands/prune.js';
import { addRestoreCommand } from './commands/restore.js';
import { addVerifyCommand } from './commands/verify.js';
import { ReportedFailure } from './output.js';

export function buildProgram(): Command {
  const program = new Command();
  program
    .name('lowtide')
    .description('Low-impact, image-level backup and replication')
    .version(version)
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) });
  // Commands take these settings from the program when they are added, and
  // are listed by --help in this order.
  addImageCommand(program);
  addInspectCommand(program);
  addFilesCommand(program);
  addExtractCommand(program);
  addInitCommand(program);
  addBackupCommand(program);
  addListCommand(program);
  addRestoreCommand(program);
  addVerifyCommand(program);
  addPruneCommand(program);
  return program;
}

/** The exit code for an error a command threw; prints its line on stderr. */
function exitCode(err: unknown): number {
  if (err instanceof CommanderError) {
    // --help and --version end here too, with exit code 0.
    return err.exitCode === 0 ? 0 : 2;
  }
  if (err instanceof ReportedFailure) return 1;
  if (err instanceof LowtideError) {
    process.stderr.write(`lowtide: error [${err.code}]: ${err.message}\n`);
    if (err.code === 'ABORTED') return 130;
    return err.code === 'INVALID_ARGUMENT' ? 2 : 1;
  }
  const e = err as Error;
  process.stderr.write(`lowtide: internal error: ${e?.stack ?? String(err)}\n`);
  return 1;
}

export async function main(argv: string[]): Promise<number> {
  try {
    await buildProgram().parseAsync(argv, { from: 'user' });
    return 0;
  } catch (err) {
    return exitCode(err);
  }
}

// Not a top-level await: the bundled command (rolldown.config.mjs) is a
// CommonJS file, which cannot have one. main() reports its own errors.
void main(process.argv.slice(2)).then((code) => {
  process.exitCode = code;
});
