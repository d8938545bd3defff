/**
 * What commands print besides their progress, and how they end: every JSON
 * document on stdout carries SCHEMA_VERSION (docs/cli-json.md), and every
 * error is one line `lowtide: error [CODE]: message` on stderr (with --json,
 * also `{ schemaVersion, error: { code, message } }` on stdout).
 */

/** The version of every JSON document the CLI prints (docs/cli-json.md). */
export const SCHEMA_VERSION = 1;

/** Exit codes: 0 success, 1 failure, 2 usage, 3 verify found damage, 130 interrupted. */
export const EXIT = { ok: 0, failure: 1, usage: 2, damage: 3, interrupted: 130 } as const;

/** Prints an object as one JSON document on stdout, with schemaVersion first. */
export function printJson(value: object): void {
  process.stdout.write(`${JSON.stringify({ schemaVersion: SCHEMA_VERSION, ...value }, null, 2)}\n`);
}

export function printWarnings(warnings: readonly string[]): void {
  for (const w of warnings) process.stderr.write(`lowtide: warning: ${w}\n`);
}

/**
 * The command has reported what failed (verify's report, a failed source):
 * exit with this code without another line.
 */
export class ReportedFailure extends Error {
  readonly exitCode: number;

  constructor(exitCode: number = EXIT.failure) {
    super('reported');
    this.exitCode = exitCode;
  }
}

/** An error of the command line itself (not of the library), with its code and exit code. */
export class CliError extends Error {
  readonly code: string;
  readonly exitCode: number;

  constructor(code: string, message: string, exitCode: number = EXIT.failure) {
    super(message);
    this.code = code;
    this.exitCode = exitCode;
  }
}

/** Whether a command line asks for JSON (looked at before parsing, for usage errors). */
export function wantsJson(argv: readonly string[]): boolean {
  const end = argv.indexOf('--');
  return (end < 0 ? argv : argv.slice(0, end)).includes('--json');
}

/** Reports an error: the line on stderr, and with --json the error document on stdout. */
export function reportError(code: string, message: string, json: boolean): void {
  process.stderr.write(`lowtide: error [${code}]: ${message}\n`);
  if (json) printJson({ error: { code, message } });
}
