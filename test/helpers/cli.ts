/** Runs the built CLI (dist/) as a child process. */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

const root = join(import.meta.dirname, '../..');
/** The bundled command, as package.json's "bin" names it. */
export const CLI = join(
  root,
  (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { bin: { lowtide: string } }).bin.lowtide,
);

export interface CliResult {
  status: number;
  stdout: string;
  stderr: string;
}

export function lowtide(args: string[], options: { timeoutMs?: number } = {}): CliResult {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: options.timeoutMs ?? 120_000 });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** A CLI run in the background; `done` resolves when it ends (status -1 when a signal ended it). */
export function lowtideAsync(
  args: string[],
  env: NodeJS.ProcessEnv = process.env,
): { child: ChildProcess; done: Promise<CliResult> } {
  const child = spawn(process.execPath, [CLI, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const done = new Promise<CliResult>((resolve) => {
    child.on('close', (code, signal) => resolve({ status: code ?? (signal ? -1 : -2), stdout, stderr }));
  });
  return { child, done };
}

export function cmp(a: string, b: string): boolean {
  return spawnSync('cmp', [a, b], { stdio: 'ignore' }).status === 0;
}

const TIME = '/usr/bin/time';

/** Why a child process's peak RSS cannot be measured here, or undefined. */
export function timeMissing(): string | undefined {
  return existsSync(TIME) ? undefined : `needs ${TIME} (Debian package time) to read a child process peak RSS`;
}

export interface Measured extends CliResult {
  peakRssBytes: number;
  seconds: number;
}

/** Runs the built CLI; its peak RSS and wall time as /usr/bin/time reports them (the last stderr line). */
export function lowtideMeasured(args: string[], timeoutMs = 300_000): Measured {
  const r = spawnSync(TIME, ['-f', 'peak-rss-kib %M seconds %e', process.execPath, CLI, ...args], {
    encoding: 'utf8',
    timeout: timeoutMs,
    maxBuffer: 64 << 20,
  });
  const m = /peak-rss-kib (\d+) seconds ([\d.]+)\s*$/.exec(r.stderr);
  if (!m) throw new Error(`no peak RSS from ${TIME}: ${r.stderr.slice(-2000)}`);
  return {
    status: r.status ?? -1,
    stdout: r.stdout,
    stderr: r.stderr,
    peakRssBytes: Number(m[1]) * 1024,
    seconds: Number(m[2]),
  };
}
