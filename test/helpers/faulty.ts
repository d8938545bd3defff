/** Mounts test/fixtures/faulty_fs.py: a FUSE file whose reads fail with EIO in a byte range. */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { isRoot } from './system.js';

const SCRIPT = join(import.meta.dirname, '../fixtures/faulty_fs.py');
const PYTHON = '/usr/bin/python3';

export function faultyFsUnavailableReason(): string | undefined {
  if (!isRoot()) return 'mounting FUSE needs root here';
  if (!existsSync('/dev/fuse')) return '/dev/fuse is missing';
  if (spawnSync(PYTHON, ['-c', 'import fusepy'], { stdio: 'ignore' }).status !== 0) {
    return `${PYTHON} cannot import fusepy (Debian package python3-fusepy)`;
  }
  return undefined;
}

export interface FaultyMount {
  file: string;
  unmount(): Promise<void>;
}

/** The file's content: byte = (offset / 512) & 0xff. */
export function faultyByte(offset: number): number {
  return Math.floor(offset / 512) & 0xff;
}

export async function mountFaulty(
  dir: string,
  size: number,
  badOffset: number,
  badLength: number,
): Promise<FaultyMount> {
  mkdirSync(dir, { recursive: true });
  const child: ChildProcess = spawn(PYTHON, [SCRIPT, dir, String(size), String(badOffset), String(badLength)], {
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const file = join(dir, 'disk.img');
  const deadline = Date.now() + 10_000;
  while (!existsSync(file)) {
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error('the FUSE fixture did not come up');
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    file,
    async unmount() {
      // The kernel may still hold the mount busy for a moment after the last close.
      for (let i = 0; i < 50; i++) {
        if (spawnSync('umount', [dir], { stdio: 'ignore' }).status === 0) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      const exited = new Promise<void>((r) => child.once('exit', () => r()));
      if (child.exitCode === null) {
        const t = setTimeout(() => child.kill('SIGKILL'), 3000);
        await exited;
        clearTimeout(t);
      }
    },
  };
}
