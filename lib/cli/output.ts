/** What commands print besides their progress bar, and how they end when they have said why they failed. */

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

export function printWarnings(warnings: readonly string[]): void {
  for (const w of warnings) process.stderr.write(`lowtide: warning: ${w}\n`);
}

/** The command has reported what failed (verify's report, a failed source): exit 1 without another line. */
export class ReportedFailure extends Error {}
