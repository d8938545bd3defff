/**
 * Real system parts for tests (loop devices, external tools), with cleanup by
 * identity (device name, PID), never by name pattern.
 */
import { execFileSync, spawnSync } from 'node:child_process';

export function hasCommand(cmd: string): boolean {
  return spawnSync('sh', ['-c', 'command -v "$1"', 'sh', cmd], { stdio: 'ignore' }).status === 0;
}

export function isRoot(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}

/** Why loop devices cannot be used here, or undefined when they can. */
export function loopUnavailableReason(): string | undefined {
  if (!isRoot()) return 'loop devices need root';
  if (!hasCommand('losetup')) return 'losetup is not installed (util-linux / mount)';
  const r = spawnSync('losetup', ['--find'], { encoding: 'utf8' });
  if (r.status !== 0) return `losetup --find failed: ${r.stderr.trim()}`;
  return undefined;
}

/** Attaches `file` to a free loop device (read-only unless asked) and returns its path. */
export function attachLoop(
  file: string,
  options: { readOnly?: boolean; offset?: number; sizelimit?: number } = {},
): string {
  const args = ['--find', '--show'];
  if (options.readOnly !== false) args.push('--read-only');
  if (options.offset !== undefined) args.push('--offset', String(options.offset));
  if (options.sizelimit !== undefined) args.push('--sizelimit', String(options.sizelimit));
  args.push(file);
  return execFileSync('losetup', args, { encoding: 'utf8' }).trim();
}

export function detachLoop(device: string): void {
  spawnSync('losetup', ['--detach', device], { stdio: 'ignore' });
}

/** Prints why a test is skipped, so skips are never silent. */
export function skipReason(what: string, reason: string | undefined): boolean {
  if (reason !== undefined) {
    console.warn(`[skip] ${what}: ${reason}`);
    return true;
  }
  return false;
}

/**
 * Runs `node args...` under strace, following threads, and returns the calls
 * of `syscalls` in order as [name, path of the first fd argument] (strace -y).
 */
export function traceFileCalls(
  args: string[],
  syscalls: string[],
): { status: number | null; stderr: string; calls: [string, string][] } {
  const r = spawnSync('strace', ['-f', '-qq', '-y', '-e', `trace=${syscalls.join(',')}`, process.execPath, ...args], {
    encoding: 'utf8',
    maxBuffer: 64 << 20,
  });
  const calls: [string, string][] = [];
  for (const m of r.stderr.matchAll(/(?:^|\n)(?:\[pid +\d+\] )?(\w+)\(\d+<([^>]*)>/g)) calls.push([m[1]!, m[2]!]);
  return { status: r.status, stderr: r.stderr, calls };
}
