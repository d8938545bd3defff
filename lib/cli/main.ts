#!/usr/bin/env node
/**
 * The `lowtide` command: the program built from one module per command
 * (commands/), and the exit codes: 0 success, 1 failure, 2 usage error,
 * 3 verify found damage, 130 interrupted. Every error is one line
 * `lowtide: error [CODE]: message` on stderr; with --json also a JSON
 * document on stdout (docs/cli-json.md).
 */
import { readFileSync } from 'node:fs';
import { Command, CommanderError } from 'commander';
import { LowtideError, version } from '../index.js';
import { addBackupCommand } from './commands/backup.js';
import { addBitmapsCommand } from './commands/bitmaps.js';
import { addExtractCommand } from './commands/extract.js';
import { addFilesCommand } from './commands/files.js';
import { addImageCommand } from './commands/image.js';
import { addInitCommand } from './commands/init.js';
import { addInspectCommand } from './commands/inspect.js';
import { addListCommand } from './commands/list.js';
import { addMapCommand } from './commands/map.js';
import { addPruneCommand } from './commands/prune.js';
import { addRestoreCommand } from './commands/restore.js';
import { addVerifyCommand } from './commands/verify.js';
import { addVmCommand } from './commands/vm.js';
import { CliError, EXIT, ReportedFailure, reportError, wantsJson } from './output.js';

export function buildProgram(): Command {
  const program = new Command();
  program
    .name('lowtide')
    .description('Low-impact, image-level backup and replication')
    .version(version)
    .exitOverride()
    // Commander's own error lines are not printed: exitCode() reports them in
    // the form of every other error. Help still goes to stderr or stdout.
    .configureOutput({ writeErr: (s) => process.stderr.write(s), outputError: () => undefined });
  // Commands take these settings from the program when they are added, and
  // are listed by --help in this order.
  addImageCommand(program);
  addInspectCommand(program);
  addMapCommand(program);
  addFilesCommand(program);
  addExtractCommand(program);
  addBitmapsCommand(program);
  addInitCommand(program);
  addBackupCommand(program);
  addListCommand(program);
  addRestoreCommand(program);
  addVerifyCommand(program);
  addPruneCommand(program);
  addVmCommand(program);
  // Every command that takes a repository can reach one on S3.
  for (const c of program.commands) {
    if (c.options.some((opt) => opt.long === '--repo')) {
      c.option('--s3-endpoint <url>', 'S3 endpoint of an s3://bucket/prefix repository (default: AWS_ENDPOINT_URL_S3)');
      c.option(
        '--cache-dir <dir>',
        'where the known-chunks index of an S3 repository is kept (default: $XDG_CACHE_HOME/lowtide)',
      );
      c.option(
        '--password-file <file>',
        'file holding the passphrase of an encrypted repository (default: LOWTIDE_PASSWORD)',
      );
    }
  }
  program.hook('preAction', (_program, action) => {
    const endpoint = action.opts().s3Endpoint as string | undefined;
    // The S3 client reads its default endpoint from here (lib/repo/storage/s3.ts).
    if (endpoint !== undefined) process.env.AWS_ENDPOINT_URL_S3 = endpoint;
    // And the known-chunks index its directory (lib/repo/storage/known-chunks.ts).
    const cacheDir = action.opts().cacheDir as string | undefined;
    if (cacheDir !== undefined) process.env.LOWTIDE_CACHE_DIR = cacheDir;
    const passwordFile = action.opts().passwordFile as string | undefined;
    // Repositories are opened with LOWTIDE_PASSWORD unless told otherwise (lib/repo/crypto.ts).
    if (passwordFile !== undefined) process.env.LOWTIDE_PASSWORD = readPasswordFile(passwordFile);
  });
  return program;
}

/** The passphrase in a file: its first line (one trailing newline is not part of it). */
function readPasswordFile(path: string): string {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new CliError('USAGE', `--password-file: cannot read ${path}: ${(err as Error).message}`, EXIT.usage);
  }
  const password = text.replace(/\r?\n$/, '');
  if (password === '' || /[\r\n]/.test(password)) {
    throw new CliError('USAGE', `--password-file: ${path} must hold the passphrase on one line`, EXIT.usage);
  }
  return password;
}

/** Commander's codes whose help or version it has printed already. */
const HELP_CODES = new Set(['commander.help', 'commander.helpDisplayed', 'commander.version']);

/** The exit code for an error a command threw; reports it (stderr, and stdout with --json). */
function exitCode(err: unknown, json: boolean, help: string): number {
  if (err instanceof CommanderError) {
    if (HELP_CODES.has(err.code)) return err.exitCode === 0 ? EXIT.ok : EXIT.usage;
    // "error: unknown option '--x'" -> "unknown option '--x'"
    reportError('USAGE', `${err.message.replace(/^error: /, '')} (see ${help})`, json);
    return EXIT.usage;
  }
  if (err instanceof ReportedFailure) return err.exitCode;
  if (err instanceof CliError) {
    reportError(err.code, err.message, json);
    return err.exitCode;
  }
  if (err instanceof LowtideError) {
    reportError(err.code, err.message, json);
    if (err.code === 'ABORTED') return EXIT.interrupted;
    return err.code === 'INVALID_ARGUMENT' ? EXIT.usage : EXIT.failure;
  }
  const e = err as Error;
  // A bug: the line every error has, then the stack to report it with.
  reportError('INTERNAL', e?.message ?? String(err), json);
  if (e?.stack) process.stderr.write(`${e.stack}\n`);
  return EXIT.failure;
}

export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv, { from: 'user' });
    return 0;
  } catch (err) {
    const command = program.commands.find((c) => c.name() === argv[0]);
    return exitCode(err, wantsJson(argv), command ? `lowtide ${command.name()} --help` : 'lowtide --help');
  }
}

// Not a top-level await: the bundled command (rolldown.config.mjs) is a
// CommonJS file, which cannot have one. main() reports its own errors.
void main(process.argv.slice(2)).then((code) => {
  process.exitCode = code;
});
