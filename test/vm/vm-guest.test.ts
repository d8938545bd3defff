/**
 * The guest agent: a real Linux guest (Debian kernel, busybox, qemu-ga, ext4
 * on /dev/vda, a writer keeping a counter in /mnt/seq) booted under TCG from
 * test/fixtures/qemu-guest/build-guest.sh. The backup of a frozen guest is a
 * clean file system (no journal replay needed) whose counter the writer had
 * reached; a SIGKILL while the guest is frozen is thawed by vm recover; an
 * agent that never answers stops the run before any snapshot.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { backupVm, initRepository, restore } from '../../lib/index.js';
import { GuestAgentClient } from '../../lib/advanced.js';
import { lowtide } from '../helpers/cli.js';
import { hasCommand, skipReason } from '../helpers/system.js';
import { TempDir } from '../helpers/tmp.js';
import { LoopFs, lowtideLeftovers, TestVm, useVmScratch, vmUnavailableReason } from './helpers.js';

const BUILD = join(import.meta.dirname, '../fixtures/qemu-guest/build-guest.sh');
const KILL_AT = join(import.meta.dirname, 'kill-at.mjs');
/** Where the Debian kernel package is: / when installed, or a `dpkg -x` of its .deb. */
const KROOT = process.env.LOWTIDE_GUEST_KROOT ?? '/';

function kernelInstalled(): boolean {
  const boot = join(KROOT, 'boot');
  return existsSync(boot) && readdirSync(boot).some((f) => f.startsWith('vmlinuz-'));
}

function guestUnavailableReason(): string | undefined {
  const vm = vmUnavailableReason();
  if (vm) return vm;
  if (!kernelInstalled())
    return `no Debian kernel in ${KROOT}boot (apt-get install linux-image-amd64, or LOWTIDE_GUEST_KROOT=a dpkg -x of it)`;
  if (!existsSync('/bin/busybox') || spawnSync('/bin/busybox', ['--list-full']).status !== 0)
    return 'busybox is not installed (busybox-static)';
  if (!existsSync('/usr/sbin/qemu-ga')) return 'qemu-ga is not installed (qemu-guest-agent)';
  for (const [cmd, pkg] of [
    ['cpio', 'cpio'],
    ['modprobe', 'kmod'],
    ['mkfs.ext4', 'e2fsprogs'],
    ['debugfs', 'e2fsprogs'],
  ] as const)
    if (!hasCommand(cmd)) return `${cmd} is not installed (${pkg})`;
  return undefined;
}

const MAX_FROZEN_MS = 5000;

describe.skipIf(skipReason('VM backup with a guest agent', guestUnavailableReason()))(
  'vm backup of a real guest with the guest agent',
  () => {
    let guestDir = '';
    const scratch = useVmScratch('lowtide-vmguest-', {
      setup: ({ tmp }) => {
        guestDir = tmp.file('guest');
        execFileSync('bash', [BUILD, guestDir], { env: { ...process.env, KROOT }, stdio: 'ignore' });
      },
      timeoutMs: 300_000,
    });
    let vm: TestVm | undefined;
    let n = 0;
    afterEach(async () => {
      await vm?.stop();
      vm = undefined;
    });

    /** A raw ext4 disk on XFS and the guest booted on it. */
    async function bootGuest(): Promise<{ disk: string; dir: string }> {
      const dir = join(scratch.xfs.mountPoint, `g${n++}`);
      execFileSync('mkdir', [dir]);
      const disk = join(dir, 'disk.raw');
      execFileSync('truncate', ['-s', '64M', disk]);
      execFileSync('mkfs.ext4', ['-q', '-F', '-E', 'lazy_itable_init=0,lazy_journal_init=0,nodiscard', disk]);
      const kernel = existsSync(join(guestDir, 'vmlinux')) ? join(guestDir, 'vmlinux') : join(guestDir, 'vmlinuz');
      vm = await TestVm.start(scratch.tmp.path, [{ id: 'vd0', path: disk, format: 'raw' }], {
        guest: { kernel, initrd: join(guestDir, 'initrd.cpio.gz') },
      });
      await vm.waitForConsole('GUEST-READY', 120_000);
      await vm.waitForConsole('W 5', 60_000); // the writer is running
      return { disk, dir };
    }

    /** The counters the writer printed ("W <n>"), in order. */
    function counters(): number[] {
      return readFileSync(vm!.serialLog, 'utf8')
        .split('\n')
        .flatMap((l) => (/^W (\d+)\s*$/.exec(l) ? [Number(/^W (\d+)/.exec(l)![1])] : []));
    }

    it('freezes the guest around the snapshot: a clean file system with the counter of the freeze', async () => {
      const { dir } = await bootGuest();
      const repo = scratch.tmp.file(`repo${n}`);
      await initRepository(repo);
      const stateDir = scratch.tmp.file(`state${n}`);
      const r = await backupVm({
        qmp: vm!.qmpPath,
        qga: vm!.qgaPath,
        maxFrozenMs: MAX_FROZEN_MS,
        repository: repo,
        stateDir,
      });
      expect(r.record.consistency).toBe('application-consistent');
      expect(r.record.guestAgent).toMatchObject({ frozenFileSystems: 1, thawedByTimer: false });
      expect(r.record.guestFrozenSeconds).toBeGreaterThan(0);
      expect(r.record.guestFrozenSeconds! * 1000).toBeLessThan(MAX_FROZEN_MS);

      const restored = scratch.tmp.file(`restored${n}.raw`);
      await restore({ repository: repo, backup: r.record.disks[0]!.id, target: restored });
      // Clean: no journal replay needed, and e2fsck finds nothing.
      const features = execFileSync('dumpe2fs', ['-h', restored], {
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'ignore'],
      });
      expect(features).not.toMatch(/needs_recovery/);
      const fsck = spawnSync('e2fsck', ['-fn', restored], { encoding: 'utf8' });
      expect(fsck.status, fsck.stdout + fsck.stderr).toBe(0);
      const seq = Number(
        execFileSync('debugfs', ['-R', 'cat /seq', restored], {
          encoding: 'utf8',
          stdio: ['ignore', 'pipe', 'ignore'],
        }).trim(),
      );
      // The counter is one the writer reached and went on from after the thaw.
      await vm!.waitForConsole(`W ${seq + 2}`, 30_000);
      expect(counters()).toContain(seq);
      expect(seq).toBeGreaterThanOrEqual(5);

      const agent = await GuestAgentClient.connect(vm!.qgaPath);
      try {
        expect(await agent.execute('guest-fsfreeze-status', {})).toBe('thawed');
      } finally {
        agent.close();
      }
      expect(lowtideLeftovers(dir)).toEqual([]);
      expect(readdirSync(stateDir)).toEqual([]);
    });

    it('SIGKILL while the guest is frozen: the watchdog thaws it, vm recover commits the overlay', async () => {
      const { dir } = await bootGuest();
      const repo = scratch.tmp.file(`repo${n}`);
      await initRepository(repo);
      const stateDir = scratch.tmp.file(`state${n}`);
      const k = spawnSync(process.execPath, [KILL_AT, vm!.qmpPath, repo, stateDir, 'thaw', '', '', vm!.qgaPath], {
        encoding: 'utf8',
        timeout: 120_000,
      });
      expect(k.signal, k.stderr).toBe('SIGKILL');
      // The run's watchdog thaws the guest when the run dies, before any recovery (the agent
      // serves one client at a time: ask until the watchdog has had its turn).
      let status = '';
      for (let i = 0; i < 40 && status !== 'thawed'; i++) {
        if (i > 0) await new Promise((r) => setTimeout(r, 500));
        const agent = await GuestAgentClient.connect(vm!.qgaPath, { timeoutMs: 20_000 });
        try {
          status = await agent.execute('guest-fsfreeze-status', {});
        } finally {
          agent.close();
        }
      }
      expect(status).toBe('thawed');
      const rec = lowtide(['vm', 'recover', '--state-dir', stateDir, '--json']);
      expect(rec.status, rec.stderr).toBe(0);
      const actions = (JSON.parse(rec.stdout) as { recovered: { actions: string[] }[] }).recovered[0]!.actions;
      expect(actions.join('\n')).not.toMatch(/thawed the guest's file systems/);
      expect(actions.join('\n')).toMatch(/committed the overlay of vd0/);
      const last = Math.max(...counters());
      await vm!.waitForConsole(`W ${last + 2}`, 30_000); // the writer goes on
      const b = await vm!.monitor.execute('query-block', {});
      expect(b[0]!.inserted!.backing_file_depth ?? 0).toBe(0);
      expect(lowtideLeftovers(dir)).toEqual([]);
      expect(readdirSync(stateDir)).toEqual([]);
    });
  },
);

describe.skipIf(skipReason('VM backup with a silent guest agent', vmUnavailableReason()))(
  'vm backup with a guest agent that never answers',
  () => {
    it('fails with TIMEOUT before any snapshot; nothing is frozen or left', async () => {
      const tmp = new TempDir('lowtide-vmqga-');
      const xfs = LoopFs.make(tmp.path, 'xfs');
      let vm: TestVm | undefined;
      try {
        const disk = join(xfs.mountPoint, 'disk.raw');
        execFileSync('truncate', ['-s', '4M', disk]);
        // A paused VM: the agent channel exists, nobody in the guest answers on it.
        vm = await TestVm.start(tmp.path, [{ id: 'vd0', path: disk, format: 'raw' }], { qga: true });
        const repo = tmp.file('repo');
        await initRepository(repo);
        const stateDir = tmp.file('state');
        await expect(
          backupVm({ qmp: vm.qmpPath, qga: vm.qgaPath, qgaTimeoutMs: 500, repository: repo, stateDir }),
        ).rejects.toMatchObject({ code: 'TIMEOUT', message: expect.stringMatching(/guest-sync-delimited/) });
        const b = await vm.monitor.execute('query-block', {});
        expect(b[0]!.inserted!.backing_file_depth ?? 0).toBe(0);
        expect(lowtideLeftovers(xfs.mountPoint)).toEqual([]);
        expect(existsSync(stateDir) ? readdirSync(stateDir) : []).toEqual([]);
      } finally {
        await vm?.stop();
        xfs.remove();
        tmp.remove();
      }
    });
  },
);
