/**
 * Nothing left behind: lowtide SIGKILLed at each step of a VM backup, then
 * `lowtide vm recover` puts the VM back on its base files (committing a
 * leftover overlay), removes overlay files and deletes the storage snapshot;
 * the repository stays valid and the next backup works.
 */
import { spawnSync } from 'node:child_process';
import { copyFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { backupVm, initRepository, restore } from '../../lib/index.js';
import { cmp, lowtide } from '../helpers/cli.js';
import { skipReason } from '../helpers/system.js';
import {
  checkNothingLeft as nothingLeft,
  replayWrite,
  TestVm,
  useVmScratch,
  vmUnavailableReason,
  type DiskSpec,
} from './helpers.js';
import { execFileSync } from 'node:child_process';

const MiB = 1 << 20;
const KILL_AT = join(import.meta.dirname, 'kill-at.mjs');

describe.skipIf(skipReason('VM backup recovery', vmUnavailableReason()))('vm recover after SIGKILL', () => {
  let vm: TestVm;
  let disks: DiskSpec[];
  let dir: string;
  let repo: string;
  let stateDir: string;
  /** The disks as the VM's writes made them (replayed offline). */
  let current: string[];

  const scratch = useVmScratch('lowtide-vmrec-', {
    setup: async ({ tmp, xfs }) => {
      dir = join(xfs.mountPoint, 'vm');
      execFileSync('mkdir', [dir]);
      disks = [0, 1].map((i) => {
        const path = join(dir, `disk${i}.raw`);
        execFileSync('truncate', ['-s', '16M', path]);
        replayWrite(path, 0x40 + i, 0, 16 * MiB);
        return { id: `vd${i}`, path, format: 'raw' as const };
      });
      current = disks.map((d, i) => {
        const c = join(tmp.path, `current${i}.raw`);
        copyFileSync(d.path, c);
        return c;
      });
      vm = await TestVm.start(tmp.path, disks);
      repo = join(tmp.path, 'repo');
      stateDir = join(tmp.path, 'state');
      await initRepository(repo);
    },
    teardown: () => vm?.stop(),
  });

  const checkNothingLeft = (): Promise<void> => nothingLeft(vm, disks, dir, stateDir);

  const points: [string, string[]][] = [
    ['before the VM snapshot', ['vm-snapshot']],
    ['on the overlays, before the storage snapshot', ['storage-snapshot']],
    ['with the storage snapshot, before any commit', ['commit', 'vd0']],
    ['during the commits (one done)', ['commit', 'vd1']],
    ['while a commit job runs', ['commit', 'vd0', '3']],
    ['while a disk is read', ['backup', 'vd1']],
    ['before the storage snapshot is deleted', ['storage-delete']],
  ];
  let pattern = 0x50;
  for (const [name, args] of points) {
    it(`SIGKILL ${name}, then vm recover: VM on its files, nothing left`, async () => {
      // A write before each run, so the overlays and commits carry data.
      await vm.write('vd0', pattern, (pattern - 0x50) * MiB, MiB);
      await vm.write('vd1', pattern, (pattern - 0x50) * MiB + 512, 4096);
      replayWrite(current[0]!, pattern, (pattern - 0x50) * MiB, MiB);
      replayWrite(current[1]!, pattern, (pattern - 0x50) * MiB + 512, 4096);
      pattern++;
      const r = spawnSync(process.execPath, [KILL_AT, vm.qmpPath, repo, stateDir, ...args], {
        encoding: 'utf8',
        timeout: 120_000,
      });
      expect(r.signal, r.stderr).toBe('SIGKILL');
      expect(readdirSync(stateDir).some((f) => f.endsWith('.journal'))).toBe(true);
      const rec = lowtide(['vm', 'recover', '--state-dir', stateDir, '--json']);
      expect(rec.status, rec.stderr).toBe(0);
      const report = JSON.parse(rec.stdout) as { recovered: { actions: string[] }[]; failed: unknown[] };
      expect(report.recovered).toHaveLength(1);
      const actions = report.recovered[0]!.actions.join('\n');
      if (args[0] === 'storage-snapshot' || (args[0] === 'commit' && args[1] === 'vd0' && !args[2]))
        expect(actions).toMatch(/committed the overlay of vd0 into/);
      if (args[0] === 'commit' || args[0] === 'backup' || args[0] === 'storage-delete')
        expect(actions).toMatch(/deleted the storage snapshot \(reflink clones in /);
      expect(report.failed).toEqual([]);
      await checkNothingLeft();
    });
  }

  it('the repository is valid and the next backup restores the disks as they are', async () => {
    const v = lowtide(['verify', '--repo', repo]);
    expect(v.status, v.stderr).toBe(0);
    // No write was lost by a kill: every overlay went back into its base.
    for (let i = 0; i < disks.length; i++) {
      await vm.flush(disks[i]!.id);
      expect(cmp(disks[i]!.path, current[i]!), `disk ${i} holds every write`).toBe(true);
    }
    const expected = disks.map((d, i) => {
      const e = join(scratch.tmp.path, `expected${i}.raw`);
      copyFileSync(d.path, e);
      return e;
    });
    // A crashed run left just before this one is recovered by the run itself.
    const k = spawnSync(process.execPath, [KILL_AT, vm.qmpPath, repo, stateDir, 'commit', 'vd1'], { timeout: 120_000 });
    expect(k.signal).toBe('SIGKILL');
    const result = await backupVm({ qmp: vm.qmpPath, repository: repo, stateDir });
    expect(result.recovered).toHaveLength(1);
    for (let i = 0; i < disks.length; i++) {
      const target = join(scratch.tmp.path, `restored${i}.raw`);
      await restore({ repository: repo, backup: result.record.disks[i]!.id, target });
      expect(cmp(target, expected[i]!)).toBe(true);
    }
    await checkNothingLeft();
  });
});
