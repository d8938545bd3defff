/**
 * The storage under a path, found through sysfs, checked against lsblk's
 * inverse dependency list (the disks a device sits on); and its I/O count
 * against reads we make ourselves.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { basename } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { StorageIoCounter, storageDevices } from '../../lib/throttle/index.js';
import { BTRFS_READ_META_BYTES, splitDevT } from '../../lib/throttle/storage-counters.js';
import { hasCommand, loopUnavailableReason, skipReason } from '../helpers/system.js';
import { LoopFs, loopFsUnavailableReason } from '../helpers/loop-fs.js';
import { TempDir, patternBytes } from '../helpers/tmp.js';
import { closeSync, openSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { openSource } from '../../lib/index.js';

const tmp = new TempDir();
afterAll(() => tmp.remove());
const file = tmp.file('data.bin');
writeFileSync(file, patternBytes(8 << 20, 5));

/** The disks under the file system holding `path`, by lsblk; undefined when it has no block device. */
function disksByLsblk(path: string): string[] | undefined {
  const src = execFileSync('findmnt', ['-n', '-o', 'SOURCE', '--target', path], { encoding: 'utf8' }).trim();
  if (!src.startsWith('/dev/')) return undefined;
  const out = execFileSync('lsblk', ['-s', '-n', '-r', '-o', 'NAME,TYPE', src.replace(/\[.*$/, '')], {
    encoding: 'utf8',
  });
  return [
    ...new Set(
      out
        .trim()
        .split('\n')
        .map((l) => l.split(' '))
        .filter(([, t]) => t === 'disk')
        .map(([n]) => n!),
    ),
  ].sort();
}

describe('storageDevices', () => {
  const expected = hasCommand('lsblk') && hasCommand('findmnt') ? disksByLsblk(file) : undefined;

  it('finds the disks under a file, as lsblk does', () => {
    if (
      skipReason(
        'storage of a file',
        expected === undefined ? `${tmp.path} is not on a block device (or lsblk/findmnt are missing)` : undefined,
      )
    )
      return;
    expect(
      storageDevices(file)
        .map((d) => basename(d))
        .sort(),
    ).toEqual(expected);
  });

  it('a loop device (and its partition, where partitions appear) counts as the storage of its backing file', () => {
    if (
      skipReason(
        'loop partition',
        loopUnavailableReason() ??
          (expected === undefined ? 'no block device under the temp dir' : undefined) ??
          (hasCommand('sfdisk') ? undefined : 'sfdisk is missing'),
      )
    )
      return;
    const img = tmp.file('disk.img');
    writeFileSync(img, Buffer.alloc(16 << 20));
    execFileSync('sfdisk', ['-q', img], { input: 'label: dos\nstart=2048, type=83\n' });
    const loop = execFileSync('losetup', ['--find', '--show', '--read-only', '--partscan', img], {
      encoding: 'utf8',
    }).trim();
    try {
      expect(
        storageDevices(loop)
          .map((d) => basename(d))
          .sort(),
      ).toEqual(expected);
      for (let i = 0; i < 20 && spawnSync('test', ['-b', `${loop}p1`]).status !== 0; i++) spawnSync('sleep', ['0.1']);
      const part = spawnSync('test', ['-b', `${loop}p1`]).status === 0;
      if (
        skipReason(
          'partition of a loop device',
          part ? undefined : `no ${loop}p1 appeared (partition scanning or device nodes unavailable here)`,
        )
      )
        return;
      expect(
        storageDevices(`${loop}p1`)
          .map((d) => basename(d))
          .sort(),
      ).toEqual(expected);
    } finally {
      spawnSync('losetup', ['--detach', loop], { stdio: 'ignore' });
    }
  });

  it('a file on btrfs (anonymous device numbers, a new one per subvolume) counts as the storage of its devices', () => {
    if (
      skipReason(
        'btrfs storage',
        loopFsUnavailableReason('btrfs') ??
          (hasCommand('btrfs') ? undefined : 'btrfs is missing (btrfs-progs)') ??
          (expected === undefined ? 'no block device under the temp dir' : undefined),
      )
    )
      return;
    const fs = new LoopFs('btrfs', 160);
    try {
      const top = fs.file('top.bin');
      writeFileSync(top, 'x');
      execFileSync('btrfs', ['-q', 'subvolume', 'create', fs.file('sub')]);
      const inner = fs.file('sub/inner.bin');
      writeFileSync(inner, 'y');
      execFileSync('btrfs', ['-q', 'subvolume', 'snapshot', '-r', fs.file('sub'), fs.file('snap')]);
      const { major } = splitDevT(statSync(inner).dev);
      expect(major).toBe(0);
      // Nothing else is on the loop device: its storage is the backing file's.
      for (const p of [top, inner, fs.file('snap/inner.bin'), fs.mountPoint]) {
        expect(
          storageDevices(p)
            .map((d) => basename(d))
            .sort(),
        ).toEqual(expected);
      }
      const c = StorageIoCounter.open(inner);
      expect(c).toBeDefined();
      // Reads of a btrfs file become reads of the devices (checksums, metadata): not one for one.
      expect(c!.exact).toBe(false);
      c!.close();
    } finally {
      fs.remove();
    }
  });

  it('a file on btrfs of one device that does not compress: its O_DIRECT reads reach the device one for one, besides checksum reads', async () => {
    const shm = spawnSync('findmnt', ['-n', '-o', 'FSTYPE', '--target', '/dev/shm'], { encoding: 'utf8' })
      .stdout?.split('\n')[0]
      ?.trim();
    if (
      skipReason(
        'btrfs read counts',
        loopFsUnavailableReason('btrfs') ?? (shm === 'tmpfs' ? undefined : '/dev/shm is not tmpfs here'),
      )
    )
      return;
    // Over a file on tmpfs: the loop device is the storage, and only this test uses it.
    const fs = new LoopFs('btrfs', 640, false, '/dev/shm');
    try {
      const data = fs.file('data.bin');
      const size = 256 << 20;
      const out = openSync(data, 'w');
      for (let i = 0; i < size; i += 16 << 20) writeSync(out, randomBytes(16 << 20));
      closeSync(out);
      // Mounted again: nothing of its metadata cached.
      execFileSync('umount', [fs.mountPoint]);
      execFileSync('mount', [fs.device!, fs.mountPoint]);
      const c = StorageIoCounter.open(data)!;
      expect(c.devices).toEqual([basename(fs.loop!)]);
      expect(c.exact).toBe(true);
      expect(c.readMetaBytes).toBe(BTRFS_READ_META_BYTES);
      const src = await openSource(data, { direct: 'on' });
      try {
        const before = c.read()!.readsSubmitted;
        const r = src.read(undefined, { blockSize: 512 << 10, queueDepth: 8 });
        for await (const _ of r);
        const extra = c.read()!.readsSubmitted - before - r.submittedReads();
        // Beyond the job's reads, the checksum tree's leaves and what the
        // file system reads for itself after a mount: 24-74 here for these
        // 512 reads (MetaReads explains one per readMetaBytes). A device
        // that split the reads would count one more for each of them.
        expect(extra).toBeGreaterThanOrEqual(0);
        expect(extra).toBeLessThan(r.submittedReads() / 4);
      } finally {
        await src.close();
        c.close();
      }
      // A file system that compresses: not one for one.
      execFileSync('mount', ['-o', 'remount,compress=zstd', fs.mountPoint]);
      const z = StorageIoCounter.open(data)!;
      expect(z.exact).toBe(false);
      expect(z.readMetaBytes).toBeUndefined();
      z.close();
    } finally {
      fs.remove();
    }
  }, 60_000);

  it('a file system without a block device (tmpfs) has none, and a missing path none', () => {
    const shm = spawnSync('findmnt', ['-n', '-o', 'FSTYPE', '--target', '/dev/shm'], { encoding: 'utf8' })
      .stdout?.split('\n')[0]
      ?.trim();
    if (!skipReason('tmpfs', shm === 'tmpfs' ? undefined : '/dev/shm is not tmpfs here')) {
      const f = `/dev/shm/lowtide-sc-${process.pid}`;
      writeFileSync(f, 'x');
      try {
        expect(storageDevices(f)).toEqual([]);
        expect(StorageIoCounter.open(f)).toBeUndefined();
      } finally {
        spawnSync('rm', ['-f', f]);
      }
    }
    expect(storageDevices(tmp.file('missing'))).toEqual([]);
  });

  it('splits dev_t as glibc encodes it', () => {
    expect(splitDevT(0xfe00)).toEqual({ major: 254, minor: 0 });
    expect(splitDevT(0x0801)).toEqual({ major: 8, minor: 1 });
    // major 259 (blkext), minor 300: minor bits above 8 sit at bits 20-31.
    expect(splitDevT(((300 & 0xff) | ((259 & 0xfff) << 8) | ((300 & ~0xff) << 12)) >>> 0)).toEqual({
      major: 259,
      minor: 300,
    });
  });
});

describe('StorageIoCounter', () => {
  it('counts reads that reach the device: 32 direct 64 KiB reads add at least 32', () => {
    const c = StorageIoCounter.open(file);
    if (skipReason('I/O count', c ? undefined : `${tmp.path} is not on a block device`)) return;
    try {
      const before = c!.read()!.ios;
      execFileSync('dd', [`if=${file}`, 'of=/dev/null', 'bs=64k', 'count=32', 'iflag=direct', 'status=none']);
      const after = c!.read()!.ios;
      expect(after - before).toBeGreaterThanOrEqual(32);
      expect(c!.devices.length).toBeGreaterThan(0);
    } finally {
      c!.close();
    }
  });
});
