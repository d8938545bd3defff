/**
 * Backing up running block-layer VMs (QEMU -S, raw disks on XFS with
 * reflink) from a storage snapshot: the restored disks equal the content at
 * the snapshot moment (built by replaying the same writes offline), writes
 * made after it are not in the backup, and nothing is left behind.
 */
import { copyFileSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { backupVm, describeVm, initRepository, restore, LowtideError } from '../../lib/index.js';
import { cmp, lowtide } from '../helpers/cli.js';
import { hasCommand, skipReason } from '../helpers/system.js';
import {
  checkNothingLeft,
  LoopFs,
  lowtideLeftovers,
  replayWrite,
  TestVm,
  useVmScratch,
  vmUnavailableReason,
  type DiskSpec,
} from './helpers.js';
import { execFileSync, spawnSync } from 'node:child_process';

const MiB = 1 << 20;
const KILL_AT = join(import.meta.dirname, 'kill-at.mjs');
const reason = vmUnavailableReason();
const skip = skipReason('VM backup', reason);

describe.skipIf(skip)('vm backup from a reflink storage snapshot', () => {
  const scratch = useVmScratch('lowtide-vm-');
  let vm: TestVm | undefined;
  let n = 0;

  afterEach(async () => {
    await vm?.stop();
    vm = undefined;
  });

  /** Raw disks on the XFS mount with a known pattern, and their expected copies beside. */
  function makeDisks(count: number, sizeMiB = 16): { disks: DiskSpec[]; expected: string[]; dir: string } {
    const dir = join(scratch.xfs.mountPoint, `vm${n++}`);
    execFileSync('mkdir', [dir]);
    const disks: DiskSpec[] = [];
    const expected: string[] = [];
    for (let i = 0; i < count; i++) {
      const path = join(dir, `disk${i}.raw`);
      execFileSync('truncate', ['-s', `${sizeMiB}M`, path]);
      replayWrite(path, 0x10 + i, 0, sizeMiB * MiB);
      const e = join(scratch.tmp.path, `expected-${n}-${i}.raw`);
      copyFileSync(path, e);
      disks.push({ id: `vd${i}`, path, format: 'raw' });
      expected.push(e);
    }
    return { disks, expected, dir };
  }

  it('backs up every disk as it was at the snapshot; later writes are not in it; nothing is left', async () => {
    const { disks, expected, dir } = makeDisks(2);
    vm = await TestVm.start(scratch.tmp.path, disks);
    await vm.monitor.execute('human-monitor-command', { 'command-line': 'cont' });
    const repo = join(scratch.tmp.path, `repo${n}`);
    await initRepository(repo);
    const stateDir = join(scratch.tmp.path, `state${n}`);

    // Before the snapshot: in the backup.
    await vm.write('vd0', 0xa1, 1 * MiB, MiB);
    await vm.write('vd1', 0xb1, 3 * MiB + 4096, 8192);
    replayWrite(expected[0]!, 0xa1, 1 * MiB, MiB);
    replayWrite(expected[1]!, 0xb1, 3 * MiB + 4096, 8192);
    const current = expected.map((e, i) => {
      const c = join(scratch.tmp.path, `current-${n}-${i}.raw`);
      copyFileSync(e, c);
      return c;
    });

    // While the VM is on its overlays, and while the backups read: not in the backup.
    const later: Promise<void>[] = [];
    const phases: string[] = [];
    const result = await backupVm({
      qmp: vm.qmpPath,
      repository: repo,
      stateDir,
      onProgress: (p) => {
        const key = `${p.phase}:${p.disk ?? ''}`;
        if (phases.at(-1) === key) return;
        phases.push(key);
        if (p.phase === 'storage-snapshot') later.push(vm!.write('vd0', 0xa2, 2 * MiB, MiB));
        if (p.phase === 'backup' && p.disk === 'vd0') later.push(vm!.write('vd1', 0xb2, 5 * MiB, 2 * MiB));
      },
    });
    await Promise.all(later);
    replayWrite(current[0]!, 0xa2, 2 * MiB, MiB);
    replayWrite(current[1]!, 0xb2, 5 * MiB, 2 * MiB);

    expect(phases).toEqual([
      'recover:',
      'vm-snapshot:',
      'storage-snapshot:',
      'commit:vd0',
      'commit:vd1',
      'backup:vd0',
      'backup:vd1',
      'storage-delete:',
      'done:',
    ]);
    expect(result.record.disks.map((d) => d.name)).toEqual(['vd0', 'vd1']);
    expect(result.record.consistency).toBe('crash-consistent');
    expect(result.record.guestFrozenSeconds).toBeNull();
    expect(result.record.vm.name).toBe('lowtide-test-vm');
    expect(result.record.storage.kind).toBe('reflink');
    expect(result.record.vmSnapshotSeconds).toBeGreaterThan(0);
    for (const d of result.record.disks) {
      expect(d.cbt).toMatchObject({ mode: 'full', bitmap: null, parent: null });
      expect(d.cbt.reason).toMatch(/^raw disk: QEMU keeps persistent dirty bitmaps in qcow2 images only/);
    }
    expect(JSON.parse(readFileSync(result.recordPath, 'utf8'))).toEqual(result.record);

    for (let i = 0; i < 2; i++) {
      const target = join(scratch.tmp.path, `restored-${n}-${i}.raw`);
      await restore({ repository: repo, backup: result.record.disks[i]!.id, target });
      expect(cmp(target, expected[i]!), `disk ${i} restored equals the snapshot moment`).toBe(true);
      // The VM's own disk has every write: the overlay was committed into it.
      await vm.flush(`vd${i}`);
      expect(cmp(disks[i]!.path, current[i]!), `disk ${i} holds every write`).toBe(true);
    }
    await checkNothingLeft(vm, disks, dir, stateDir);
    expect((await vm.monitor.execute('query-status', {})).status).toBe('running');
  });

  it('vm disks lists the disks; vm backup prints one id per disk', async () => {
    const { disks, expected, dir } = makeDisks(2, 8);
    vm = await TestVm.start(scratch.tmp.path, disks);
    const info = await describeVm(vm.qmpPath);
    expect(info.disks.map((d) => [d.name, d.nodeName, d.format, d.realPath, d.virtualSize])).toEqual([
      ['vd0', 'vd0-fmt', 'raw', disks[0]!.path, 8 * MiB],
      ['vd1', 'vd1-fmt', 'raw', disks[1]!.path, 8 * MiB],
    ]);
    const listed = lowtide(['vm', 'disks', '--qmp', vm.qmpPath, '--json']);
    expect(listed.status, listed.stderr).toBe(0);
    expect((JSON.parse(listed.stdout) as { disks: unknown[] }).disks).toHaveLength(2);

    const repo = join(scratch.tmp.path, `repo${n}`);
    expect(lowtide(['init', repo]).status).toBe(0);
    const r = lowtide(['vm', 'backup', '--qmp', vm.qmpPath, '--repo', repo, '--throttle', 'off']);
    expect(r.status, r.stderr).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines.map((l) => l.split(/\s+/)[1])).toEqual(['vd0', 'vd1']);
    const target = join(scratch.tmp.path, `restored-cli-${n}.raw`);
    expect(lowtide(['restore', '--repo', repo, lines[1]!.split(/\s+/)[0]!, target]).status).toBe(0);
    expect(cmp(target, expected[1]!)).toBe(true);
    await checkNothingLeft(vm, disks, dir, `${repo}.vm-state`);
  });

  it('refuses a disk on a file system without reflink before any snapshot (UNSUPPORTED, naming it)', async () => {
    const ext4 = LoopFs.make(scratch.tmp.path, 'ext4', 64);
    try {
      const path = join(ext4.mountPoint, 'disk.raw');
      execFileSync('truncate', ['-s', '4M', path]);
      vm = await TestVm.start(scratch.tmp.path, [{ id: 'vd0', path, format: 'raw' }]);
      const repo = join(scratch.tmp.path, 'repo-ext4');
      await initRepository(repo);
      const err = (await backupVm({ qmp: vm.qmpPath, repository: repo }).catch((e: unknown) => e)) as LowtideError;
      expect(err).toBeInstanceOf(LowtideError);
      expect(err.code).toBe('UNSUPPORTED');
      expect(err.message).toMatch(/ext2\/3\/4, which cannot clone files/);
      const b = await vm.monitor.execute('query-block', {});
      expect(b[0]!.inserted!.backing_file_depth ?? 0).toBe(0);
      expect(lowtideLeftovers(ext4.mountPoint)).toEqual([]);
    } finally {
      await vm?.stop();
      vm = undefined;
      ext4.remove();
    }
  });

  it('vm recover with the VM gone keeps an overlay that may hold writes, and says so', async () => {
    const { disks, dir } = makeDisks(1, 4);
    vm = await TestVm.start(scratch.tmp.path, disks);
    const repo = join(scratch.tmp.path, `repo${n}`);
    await initRepository(repo);
    const stateDir = join(scratch.tmp.path, `state${n}`);
    const k = spawnSync(process.execPath, [KILL_AT, vm.qmpPath, repo, stateDir, 'commit', 'vd0'], { timeout: 120_000 });
    expect(k.signal).toBe('SIGKILL');
    await vm.stop();
    vm = undefined;
    const overlays = readdirSync(stateDir).filter((f) => f.endsWith('.overlays'));
    expect(overlays).toHaveLength(1);
    const rec = lowtide(['vm', 'recover', '--state-dir', stateDir]);
    expect(rec.status).toBe(1);
    expect(rec.stderr).toMatch(/not recovered: .*is not reachable.*may hold writes their base files do not have/);
    // The overlay and the journal stay; the storage snapshot was not deleted either (the run is kept whole).
    expect(readdirSync(join(stateDir, overlays[0]!))).toEqual(['vd0.qcow2']);
    expect(readdirSync(stateDir).filter((f) => f.endsWith('.journal'))).toHaveLength(1);
    expect(lowtideLeftovers(dir)).toHaveLength(1);
  });

  it('an abort while a disk is read still commits the overlays and deletes the snapshot', async () => {
    const { disks, dir } = makeDisks(2, 8);
    vm = await TestVm.start(scratch.tmp.path, disks);
    const repo = join(scratch.tmp.path, `repo${n}`);
    await initRepository(repo);
    const stateDir = join(scratch.tmp.path, `state${n}`);
    const ac = new AbortController();
    await expect(
      backupVm({
        qmp: vm.qmpPath,
        repository: repo,
        stateDir,
        throttle: 'off',
        progressIntervalMs: 1,
        signal: ac.signal,
        onProgress: (p) => {
          if (p.phase === 'backup' && p.disk === 'vd0') ac.abort();
        },
      }),
    ).rejects.toMatchObject({ code: 'ABORTED' });
    await checkNothingLeft(vm, disks, dir, stateDir);
  });

  it.skipIf(
    skipReason(
      'btrfs storage snapshot',
      hasCommand('mkfs.btrfs') ? undefined : 'mkfs.btrfs is not installed (btrfs-progs)',
    ),
  )('backs up from a read-only btrfs subvolume snapshot and deletes it', async () => {
    const btrfs = LoopFs.make(scratch.tmp.path, 'btrfs', 256);
    try {
      const path = join(btrfs.mountPoint, 'disk.raw');
      execFileSync('truncate', ['-s', '8M', path]);
      replayWrite(path, 0x77, 0, 8 * MiB);
      const expected = join(scratch.tmp.path, 'expected-btrfs.raw');
      copyFileSync(path, expected);
      const disks: DiskSpec[] = [{ id: 'vd0', path, format: 'raw' }];
      vm = await TestVm.start(scratch.tmp.path, disks);
      await vm.write('vd0', 0x78, 4096, 65536);
      replayWrite(expected, 0x78, 4096, 65536);
      const repo = join(scratch.tmp.path, 'repo-btrfs');
      await initRepository(repo);
      const stateDir = join(scratch.tmp.path, 'state-btrfs');
      const later: Promise<void>[] = [];
      const r = await backupVm({
        qmp: vm.qmpPath,
        repository: repo,
        stateDir,
        storage: 'btrfs',
        onProgress: (p) => {
          if (p.phase === 'backup' && later.length === 0) later.push(vm!.write('vd0', 0x79, 0, MiB));
        },
      });
      await Promise.all(later);
      expect(r.record.storage.kind).toBe('btrfs');
      expect(r.record.storage.description).toMatch(/^btrfs read-only snapshots /);
      const target = join(scratch.tmp.path, 'restored-btrfs.raw');
      await restore({ repository: repo, backup: r.record.disks[0]!.id, target });
      expect(cmp(target, expected)).toBe(true);
      await checkNothingLeft(vm, disks, btrfs.mountPoint, stateDir);
      const subvolumes = execFileSync('btrfs', ['subvolume', 'list', btrfs.mountPoint], { encoding: 'utf8' });
      expect(subvolumes.trim()).toBe('');
    } finally {
      await vm?.stop();
      vm = undefined;
      btrfs.remove();
    }
  });
});
