/**
 * A file system made by its own mkfs on a loop device over a sparse file,
 * mounted in a temporary directory. Everything is removed by exact name
 * (mount point, loop device), also when setting up fails half way.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { TempDir } from './tmp.js';
import { hasCommand, loopUnavailableReason } from './system.js';

export type LoopFsKind = 'xfs' | 'ext4' | 'btrfs';

const MKFS: Record<LoopFsKind, { command: string; package: string; args: string[] }> = {
  xfs: { command: 'mkfs.xfs', package: 'xfsprogs', args: ['-q', '-f', '-m', 'reflink=1'] },
  ext4: {
    command: 'mkfs.ext4',
    package: 'e2fsprogs',
    args: ['-q', '-F', '-E', 'lazy_itable_init=0,lazy_journal_init=0'],
  },
  btrfs: { command: 'mkfs.btrfs', package: 'btrfs-progs', args: ['-q', '-f'] },
};

/** Why a `kind` file system on a loop device cannot be made here, or undefined. */
export function loopFsUnavailableReason(kind: LoopFsKind, partitioned = false): string | undefined {
  const m = MKFS[kind];
  return (
    loopUnavailableReason() ??
    (hasCommand('mount') ? undefined : 'mount is not installed') ??
    (hasCommand(m.command) ? undefined : `${m.command} is missing (${m.package})`) ??
    (!partitioned || hasCommand('sfdisk') ? undefined : 'sfdisk is missing (fdisk)')
  );
}

/** Why a loop device over a file on tmpfs (/dev/shm: a device nothing else reads or writes) cannot be had, or undefined. */
export function shmLoopUnavailableReason(kind: LoopFsKind): string | undefined {
  return (
    loopFsUnavailableReason(kind) ??
    (spawnSync('findmnt', ['-n', '-o', 'FSTYPE', '--target', '/dev/shm'], { encoding: 'utf8' })
      .stdout?.split('\n')[0]
      ?.trim() === 'tmpfs'
      ? undefined
      : '/dev/shm is not tmpfs here')
  );
}

export class LoopFs {
  readonly dir: TempDir;
  readonly mountPoint: string;
  /** The loop device over the whole backing file. */
  loop: string | undefined;
  /** The device the file system is on: the loop device, or its first partition. */
  device: string | undefined;
  #mounted = false;

  /**
   * Makes and mounts the file system (`sizeMiB`, sparse). With `partitioned`,
   * the loop device gets a partition table with one partition starting at
   * 1 MiB, and the file system is on that partition. `parent`: where the
   * backing file and the mount point are made (default: the system's
   * temporary directory; '/dev/shm' for a device only the test uses).
   */
  constructor(
    readonly kind: LoopFsKind,
    sizeMiB: number,
    partitioned = false,
    parent?: string,
  ) {
    this.dir = new TempDir('lowtide-loopfs-', parent);
    this.mountPoint = this.dir.file('mnt');
    try {
      const backing = this.dir.file('backing.img');
      execFileSync('truncate', ['-s', `${sizeMiB}M`, backing]);
      this.loop = execFileSync('losetup', ['--find', '--show', ...(partitioned ? ['--partscan'] : []), backing], {
        encoding: 'utf8',
      }).trim();
      this.device = this.loop;
      if (partitioned) {
        execFileSync('sfdisk', ['--quiet', this.loop], { input: 'label: dos\nstart=2048, type=83\n' });
        this.device = `${this.loop}p1`;
        // The kernel may not rescan by itself (no udev): add the partition if it is not there.
        if (spawnSync('test', ['-b', this.device]).status !== 0) {
          spawnSync('partx', ['--add', this.loop], { stdio: 'ignore' });
        }
        for (let i = 0; i < 50 && spawnSync('test', ['-b', this.device]).status !== 0; i++) {
          spawnSync('sleep', ['0.1']);
        }
      }
      const m = MKFS[kind];
      execFileSync(m.command, [...m.args, this.device], { stdio: 'ignore' });
      mkdirSync(this.mountPoint);
      execFileSync('mount', [this.device, this.mountPoint]);
      this.#mounted = true;
    } catch (err) {
      this.remove();
      throw err;
    }
  }

  file(name: string): string {
    return `${this.mountPoint}/${name}`;
  }

  remove(): void {
    // A file the test read may stay referenced for a moment after it was
    // closed (an io_uring ring is torn down by the kernel in the
    // background): the file system is busy until then.
    for (let i = 0; this.#mounted && i < 50; i++) {
      if (spawnSync('umount', [this.mountPoint], { stdio: 'ignore' }).status === 0) this.#mounted = false;
      else spawnSync('sleep', ['0.1']);
    }
    if (this.#mounted) console.error(`[cleanup] ${this.mountPoint} stays mounted: umount failed for 5 s`);
    this.#mounted = false;
    if (this.loop !== undefined) spawnSync('losetup', ['--detach', this.loop], { stdio: 'ignore' });
    this.loop = undefined;
    this.dir.remove();
  }
}

/**
 * Options for a job read from the device (readFrom: 'device', 64 KiB blocks)
 * that run `change` once, at the job's first progress report: a source that
 * changes while it is read. `changed()` tells whether it ran.
 */
export function changeWhileReading(change: () => void): {
  options: { readFrom: 'device'; blockSize: number; progressIntervalMs: number; onProgress: () => void };
  changed: () => boolean;
} {
  let done = false;
  return {
    options: {
      readFrom: 'device',
      blockSize: 64 * 1024,
      progressIntervalMs: 0,
      onProgress: () => {
        if (done) return;
        done = true;
        change();
      },
    },
    changed: () => done,
  };
}
