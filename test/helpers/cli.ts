/** Runs the built CLI (dist/) as a child process. */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';

export const CLI = join(import.meta.dirname, '../../dist/bin/lowtide.cjs');

export interface CliResult {
  status: number;
  stdout: string;
  stderr: string;
}

export function lowtide(args: string[], options: { timeoutMs?: number } = {}): CliResult {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: options.timeoutMs ?? 120_000 });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

export function cmp(a: string, b: string): boolean {
  return spawnSync('cmp', [a, b], { stdio: 'ignore' }).status === 0;
}
