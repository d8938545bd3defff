/**
 * qcow2 disks of running block-layer VMs (QEMU -S, qcow2 on XFS with reflink
 * and on btrfs) and their changed-block tracking: the restored disk equals
 * the guest disk at the snapshot (the same qemu-io writes replayed offline on
 * a copy of the image, converted to raw), the incremental reads the changed
 * extents and not much more, a lost bitmap gives a full backup with the
 * reason, and a run killed after the generation rotated is undone by
 * `vm recover` so that the next backup is still right.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { backupVm, initRepository, restore, type VmBackupResult } from '../../lib/index.js';
import { cmp, lowtide } from '../helpers/cli.js';
import { hasCommand, skipReason } from '../helpers/system.js';
import {
  checkNothingLeft,
  LoopFs,
  qcow2ToRaw,
  replayWrite,
  TestVm,
  useVmScratch,
  vmUnavailableReason,
  type DiskSpec,
} from './helpers.js';

const MiB = 1 << 20;
const KILL_AT = join(import.meta.dirname, 'kill-at.mjs');
const skip = skipReason('VM backup of qcow2 disks', vmUnavailableReason());

describe.skipIf(skip)('vm backup of qcow2 disks with changed-block tracking', () => {
  const scratch = useVmScratch('lowtide-vmcbt-');
  let vm: TestVm | undefined;
  let n = 0;

  afterEach(async () => {
    await vm?.stop();
    vm = undefined;
  });

  /**
   * A qcow2 disk of `sizeMiB`, its first half written, in a new directory on
   * `mount`; `expected` is a copy of it that the test replays the VM's writes on.
   */
  function makeQcow2(mount: string, sizeMiB = 32): { disk: DiskSpec; expected: string; dir: string } {
    const dir = join(mount, `vm${n++}`);
    execFileSync('mkdir', [dir]);
    const path = join(dir, 'disk0.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', path, `${sizeMiB}M`]);
    replayWrite(path, 0x11, 0, (sizeMiB / 2) * MiB, 'qcow2');
    const expected = join(scratch.tmp.path, `expected-${n}.qcow2`);
    copyFileSync(path, expected);
    return { disk: { id: 'vd0', path, format: 'qcow2' }, expected, dir };
  }

  /** The VM writes, and the same write replayed on the expected copy. */
  async function write(v: TestVm, expected: string, pattern: number, offset: number, length: number): Promise<void> {
    await v.write('vd0', pattern, offset, length);
    replayWrite(expected, pattern, offset, length, 'qcow2');
  }

  async function startVm(disks: DiskSpec[]): Promise<TestVm> {
    const v = await TestVm.start(scratch.tmp.path, disks);
    await v.monitor.execute('human-monitor-command', { 'command-line': 'cont' });
    return v;
  }

  async function restoresTo(repo: string, id: string, expected: string): Promise<boolean> {
    const target = join(scratch.tmp.path, `restored-${n}-${id}.raw`);
    await restore({ repository: repo, backup: id, target });
    return cmp(target, qcow2ToRaw(expected, join(scratch.tmp.path, `expected-${n}-${id}.raw`)));
  }

  async function lowtideBitmaps(v: TestVm): Promise<{ name: string; recording: boolean }[]> {
    const b = (await v.monitor.execute('query-block', {})).find((x) => x.inserted?.['node-name'] === 'vd0-fmt');
    return (b?.inserted?.['dirty-bitmaps'] ?? [])
      .filter((x) => x.name.startsWith('lowtide-'))
      .map((x) => ({ name: x.name, recording: x.recording }));
  }

  /** Nothing left (helpers.ts), and the VM still runs. */
  async function nothingLeft(v: TestVm, disk: DiskSpec, dir: string, stateDir: string): Promise<void> {
    await checkNothingLeft(v, [disk], dir, stateDir);
    expect((await v.monitor.execute('query-status', {})).status).toBe('running');
  }

  /** A new repository and state directory. */
  async function newRepo(): Promise<{ repo: string; stateDir: string }> {
    const repo = join(scratch.tmp.path, `repo${n}`);
    await initRepository(repo);
    return { repo, stateDir: join(scratch.tmp.path, `state${n}`) };
  }

  it('full, then incremental of the changed extents only; a removed bitmap gives a full backup with the reason', async () => {
    const { disk, expected, dir } = makeQcow2(scratch.xfs.mountPoint);
    vm = await startVm([disk]);
    const { repo, stateDir } = await newRepo();
    await write(vm, expected, 0xa1, 20 * MiB, MiB);

    // A write while the VM is on its overlay: not in this backup, in the next one.
    const later: Promise<void>[] = [];
    const first = await backupVm({
      qmp: vm.qmpPath,
      repository: repo,
      stateDir,
      onProgress: (p) => {
        if (p.phase === 'storage-snapshot' && later.length === 0) later.push(vm!.write('vd0', 0xa2, 24 * MiB, MiB));
      },
    });
    await Promise.all(later);
    const d1 = first.record.disks[0]!;
    expect(d1.format).toBe('qcow2');
    expect(d1.cbt).toMatchObject({ mode: 'full', changedBitmap: null, parent: null });
    expect(d1.cbt.reason).toBe('first backup of the disk with changed-block tracking');
    expect(d1.cbt.bitmap).toMatch(/^lowtide-/);
    expect(await restoresTo(repo, d1.id, expected)).toBe(true);
    expect(await lowtideBitmaps(vm)).toEqual([{ name: d1.cbt.bitmap, recording: true }]);
    await nothingLeft(vm, disk, dir, stateDir);

    // 3 MiB written at known places, plus the 1 MiB written during the first run.
    replayWrite(expected, 0xa2, 24 * MiB, MiB, 'qcow2');
    await write(vm, expected, 0xb1, 2 * MiB, MiB);
    await write(vm, expected, 0xb2, 28 * MiB + 65536, 2 * MiB);
    const second = await backupVm({ qmp: vm.qmpPath, repository: repo, stateDir });
    const d2 = second.record.disks[0]!;
    expect(d2.cbt).toMatchObject({ mode: 'incremental', reason: null, changedBitmap: d1.cbt.bitmap, parent: d1.id });
    // The changed 4 MiB, grown to whole 1 MiB chunks: 5 MiB; never the whole 32 MiB disk.
    expect(d2.bytesRead).toBeGreaterThanOrEqual(4 * MiB);
    expect(d2.bytesRead).toBeLessThanOrEqual(5 * MiB);
    expect(await restoresTo(repo, d2.id, expected)).toBe(true);
    expect(await lowtideBitmaps(vm)).toEqual([{ name: d2.cbt.bitmap, recording: true }]);
    await nothingLeft(vm, disk, dir, stateDir);

    // The bitmap removed behind lowtide's back: full, with the reason.
    await vm.monitor.execute('block-dirty-bitmap-remove', { node: 'vd0-fmt', name: d2.cbt.bitmap! });
    await write(vm, expected, 0xc1, 6 * MiB, MiB);
    const r = lowtide(['vm', 'backup', '--qmp', vm.qmpPath, '--repo', repo, '--state-dir', stateDir, '--json']);
    expect(r.status, r.stderr).toBe(0);
    const third = JSON.parse(r.stdout) as VmBackupResult;
    const d3 = third.record.disks[0]!;
    expect(d3.cbt.mode).toBe('full');
    expect(d3.cbt.reason).toBe(
      `the dirty bitmap ${d2.cbt.bitmap} of the last backup is not on the disk (removed, or the VM runs from another image)`,
    );
    expect(d3.bytesRead).toBeGreaterThan(16 * MiB);
    expect(await restoresTo(repo, d3.id, expected)).toBe(true);
    await nothingLeft(vm, disk, dir, stateDir);
  });

  it('a VM killed and started again from its image: the bitmap is inconsistent, the backup full with the reason', async () => {
    const { disk, expected, dir } = makeQcow2(scratch.xfs.mountPoint, 16);
    vm = await startVm([disk]);
    const { repo, stateDir } = await newRepo();
    const first = await backupVm({ qmp: vm.qmpPath, repository: repo, stateDir });
    const gen = first.record.disks[0]!.cbt.bitmap!;
    await write(vm, expected, 0xf1, 9 * MiB, MiB);
    await vm.flush('vd0');
    await vm.stop(); // SIGKILL: QEMU never stores the bitmap, it stays flagged in use in the image
    vm = await startVm([disk]);
    const again = await backupVm({ qmp: vm.qmpPath, repository: repo, stateDir });
    const d = again.record.disks[0]!;
    expect(d.cbt.mode).toBe('full');
    expect(d.cbt.reason).toBe(
      `the dirty bitmap ${gen} is inconsistent (the image was not closed cleanly): its content is not valid`,
    );
    expect(await restoresTo(repo, d.id, expected)).toBe(true);
    // The inconsistent generation is gone; the new one makes the next backup an incremental.
    expect(await lowtideBitmaps(vm)).toEqual([{ name: d.cbt.bitmap, recording: true }]);
    await write(vm, expected, 0xf2, 2 * MiB, MiB);
    const next = await backupVm({ qmp: vm.qmpPath, repository: repo, stateDir });
    expect(next.record.disks[0]!.cbt).toMatchObject({ mode: 'incremental', parent: d.id });
    expect(next.record.disks[0]!.bytesRead).toBe(MiB);
    expect(await restoresTo(repo, next.record.disks[0]!.id, expected)).toBe(true);
    await nothingLeft(vm, disk, dir, stateDir);
  });

  it('SIGKILL after the generation rotated, then vm recover: the rotation is undone, the next backup is right', async () => {
    const { disk, expected, dir } = makeQcow2(scratch.xfs.mountPoint);
    vm = await startVm([disk]);
    const { repo, stateDir } = await newRepo();
    const first = await backupVm({ qmp: vm.qmpPath, repository: repo, stateDir });
    const gen = first.record.disks[0]!.cbt.bitmap!;
    let pattern = 0xd0;
    for (const at of [
      ['commit', 'vd0'],
      ['backup', 'vd0'],
    ]) {
      await write(vm, expected, pattern, (pattern - 0xc0) * MiB, MiB);
      pattern++;
      const k = spawnSync(process.execPath, [KILL_AT, vm.qmpPath, repo, stateDir, ...at], {
        encoding: 'utf8',
        timeout: 120_000,
      });
      expect(k.signal, k.stderr).toBe('SIGKILL');
      const rec = lowtide(['vm', 'recover', '--state-dir', stateDir, '--json']);
      expect(rec.status, rec.stderr).toBe(0);
      expect(rec.stdout).toMatch(new RegExp(`merged the dirty bitmap lowtide-\\S+ of vd0-fmt back into ${gen}`));
      // Only the generation of the last recorded backup is left, recording again.
      expect(await lowtideBitmaps(vm)).toEqual([{ name: gen, recording: true }]);
      await nothingLeft(vm, disk, dir, stateDir);
    }
    // Both writes made during the killed runs are in the incremental.
    const next = await backupVm({ qmp: vm.qmpPath, repository: repo, stateDir });
    const d = next.record.disks[0]!;
    expect(d.cbt).toMatchObject({ mode: 'incremental', changedBitmap: gen, parent: first.record.disks[0]!.id });
    expect(d.bytesRead).toBe(2 * MiB);
    expect(await restoresTo(repo, d.id, expected)).toBe(true);
    await nothingLeft(vm, disk, dir, stateDir);
  });

  it('readFrom device: raw and qcow2 disks are read from the device under the clone', async () => {
    const { disk, expected, dir } = makeQcow2(scratch.xfs.mountPoint, 8);
    const raw = join(dir, 'disk1.raw');
    execFileSync('truncate', ['-s', '8M', raw]);
    replayWrite(raw, 0x21, 0, 8 * MiB);
    const rawExpected = join(scratch.tmp.path, `expected-${n}-raw.raw`);
    copyFileSync(raw, rawExpected);
    vm = await startVm([disk, { id: 'vd1', path: raw, format: 'raw' }]);
    const { repo, stateDir } = await newRepo();
    const r = await backupVm({ qmp: vm.qmpPath, repository: repo, stateDir, readFrom: 'device' });
    const [q, w] = r.record.disks;
    expect(typeof q!.readFrom).toBe('object');
    const qReport = q!.readFrom as Exclude<typeof q.readFrom, string | undefined>;
    expect(qReport.device).toBe(scratch.xfs.device);
    expect(qReport.bytesFromDevice).toBeGreaterThan(0);
    expect(typeof w!.readFrom).toBe('object');
    const report = w!.readFrom as Exclude<typeof w.readFrom, string | undefined>;
    expect(report.device).toBe(scratch.xfs.device);
    expect(report.bytesFromDevice).toBe(8 * MiB);
    expect(await restoresTo(repo, q!.id, expected)).toBe(true);
    const target = join(scratch.tmp.path, `restored-${n}-raw.raw`);
    await restore({ repository: repo, backup: w!.id, target });
    expect(cmp(target, rawExpected)).toBe(true);
    await nothingLeft(vm, disk, dir, stateDir);
  });

  it.skipIf(
    skipReason(
      'btrfs storage snapshot',
      hasCommand('mkfs.btrfs') ? undefined : 'mkfs.btrfs is not installed (btrfs-progs)',
    ),
  )('a qcow2 disk on btrfs: full and incremental from read-only subvolume snapshots', async () => {
    const btrfs = LoopFs.make(scratch.tmp.path, 'btrfs', 256);
    try {
      const { disk, expected, dir } = makeQcow2(btrfs.mountPoint, 16);
      vm = await startVm([disk]);
      const { repo, stateDir } = await newRepo();
      await write(vm, expected, 0xe1, 12 * MiB, MiB);
      const first = await backupVm({ qmp: vm.qmpPath, repository: repo, stateDir, storage: 'btrfs' });
      expect(first.record.storage.kind).toBe('btrfs');
      expect(await restoresTo(repo, first.record.disks[0]!.id, expected)).toBe(true);
      await write(vm, expected, 0xe2, 3 * MiB, MiB);
      const second = await backupVm({
        qmp: vm.qmpPath,
        repository: repo,
        stateDir,
        storage: 'btrfs',
        readFrom: 'device',
      });
      const d = second.record.disks[0]!;
      expect(d.cbt.mode).toBe('incremental');
      expect(d.bytesRead).toBe(MiB);
      expect(await restoresTo(repo, d.id, expected)).toBe(true);
      await nothingLeft(vm, disk, dir, stateDir);
      expect(execFileSync('btrfs', ['subvolume', 'list', btrfs.mountPoint], { encoding: 'utf8' }).trim()).toBe('');
    } finally {
      await vm?.stop();
      vm = undefined;
      btrfs.remove();
    }
  });
});
