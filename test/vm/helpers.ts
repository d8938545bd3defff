/**
 * Block-layer VMs for the VM backup tests: QEMU started with -S (no guest
 * OS), -blockdev nodes and virtio-blk devices, and two QMP monitors: one for
 * lowtide (which takes it for the length of a run) and one for the test's
 * own commands (HMP qemu-io writes, query-block). File systems on loop
 * devices. Everything is removed by identity (PID, device, mount point).
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect } from 'vitest';
import { QmpClient } from '../../lib/advanced.js';
import { hasCommand, loopUnavailableReason } from '../helpers/system.js';
import { TempDir } from '../helpers/tmp.js';

/** Why the VM tests cannot run here, or undefined. */
export function vmUnavailableReason(): string | undefined {
  const loop = loopUnavailableReason();
  if (loop) return loop;
  for (const [cmd, pkg] of [
    ['qemu-system-x86_64', 'qemu-system-x86'],
    ['qemu-io', 'qemu-utils'],
    ['qemu-img', 'qemu-utils'],
    ['mkfs.xfs', 'xfsprogs'],
  ] as const)
    if (!hasCommand(cmd)) return `${cmd} is not installed (Debian package ${pkg})`;
  return undefined;
}

/** A VM suite's scratch space: a temporary directory, and an XFS (reflink=1) on a loop device in it. */
export interface VmScratch {
  readonly tmp: TempDir;
  readonly xfs: LoopFs;
}

/**
 * Makes a VM suite's scratch space in beforeAll and removes it in afterAll
 * (call it inside describe()): a temporary directory named after `prefix`
 * and an XFS on a loop device in it. `setup` runs once both exist (in the
 * same beforeAll, within `timeoutMs`); `teardown` (stopping the suite's VM)
 * before they are removed, even when it fails.
 */
export function useVmScratch(
  prefix: string,
  options: {
    setup?: ((s: VmScratch) => void | Promise<void>) | undefined;
    teardown?: (() => void | Promise<void>) | undefined;
    timeoutMs?: number | undefined;
  } = {},
): VmScratch {
  let tmp: TempDir | undefined;
  let xfs: LoopFs | undefined;
  const scratch: VmScratch = {
    get tmp(): TempDir {
      if (tmp === undefined) throw new Error('the scratch space is made in beforeAll');
      return tmp;
    },
    get xfs(): LoopFs {
      if (xfs === undefined) throw new Error('the scratch space is made in beforeAll');
      return xfs;
    },
  };
  beforeAll(async () => {
    tmp = new TempDir(prefix);
    xfs = LoopFs.make(tmp.path, 'xfs');
    await options.setup?.(scratch);
  }, options.timeoutMs);
  afterAll(async () => {
    try {
      await options.teardown?.();
    } finally {
      xfs?.remove();
      tmp?.remove();
    }
  });
  return scratch;
}

/** A file system made on a loop device and mounted; remove() unmounts and detaches. */
export class LoopFs {
  readonly mountPoint: string;
  readonly device: string;
  readonly #image: string;

  private constructor(image: string, device: string, mountPoint: string) {
    this.#image = image;
    this.device = device;
    this.mountPoint = mountPoint;
  }

  /** kind 'xfs' (mkfs.xfs -m reflink=1), 'btrfs' or 'ext4'; a sparse image of `sizeMiB`. */
  static make(dir: string, kind: 'xfs' | 'btrfs' | 'ext4', sizeMiB = 320): LoopFs {
    const image = join(dir, `${kind}.img`);
    execFileSync('truncate', ['-s', `${sizeMiB}M`, image]);
    const device = execFileSync('losetup', ['--find', '--show', image], { encoding: 'utf8' }).trim();
    const mountPoint = join(dir, `${kind}-mnt`);
    try {
      if (kind === 'xfs') execFileSync('mkfs.xfs', ['-q', '-f', '-m', 'reflink=1', device]);
      else if (kind === 'btrfs') execFileSync('mkfs.btrfs', ['-q', '-f', device]);
      else execFileSync('mkfs.ext4', ['-q', '-F', device]);
      mkdirSync(mountPoint);
      execFileSync('mount', [device, mountPoint]);
    } catch (err) {
      spawnSync('losetup', ['--detach', device]);
      throw err;
    }
    return new LoopFs(image, device, mountPoint);
  }

  remove(): void {
    spawnSync('umount', [this.mountPoint]);
    spawnSync('losetup', ['--detach', this.device]);
    rmSync(this.#image, { force: true });
  }
}

export interface DiskSpec {
  /** Device id (-device ...,id=ID); the node is ID-fmt, its file node ID-file. */
  id: string;
  path: string;
  format: 'raw' | 'qcow2';
}

/** A QEMU process with a block-layer VM and the test's own QMP monitor. */
export class TestVm {
  readonly pid: number;
  /** The monitor lowtide uses. */
  readonly qmpPath: string;
  /** The guest agent channel's socket (with `qga` or `guest`). */
  readonly qgaPath: string;
  /** The real guest's console. */
  readonly serialLog: string;
  /** The test's monitor (connected). */
  readonly monitor: QmpClient;
  readonly #child: ChildProcess;
  #stderr: () => string = () => '';

  /** What QEMU wrote to stderr so far (why it failed, when it did). */
  get stderr(): string {
    return this.#stderr();
  }

  private constructor(child: ChildProcess, qmpPath: string, qgaPath: string, serialLog: string, monitor: QmpClient) {
    this.#child = child;
    this.pid = child.pid!;
    this.qmpPath = qmpPath;
    this.qgaPath = qgaPath;
    this.serialLog = serialLog;
    this.monitor = monitor;
  }

  /**
   * `qga`: a guest agent channel (virtio-serial port org.qemu.guest_agent.0) on `qgaPath`.
   * `guest`: boot this kernel and initramfs under TCG (a real guest; its console goes to
   * `serialLog`) instead of staying paused with -S.
   */
  static async start(
    dir: string,
    disks: readonly DiskSpec[],
    options: { qga?: boolean; guest?: { kernel: string; initrd: string } } = {},
  ): Promise<TestVm> {
    // A directory of its own, so no socket of an earlier VM is mistaken for this one's.
    const sockets = mkdtempSync(join(dir, 'vm-'));
    const qmpPath = join(sockets, 'qmp.sock');
    const testPath = join(sockets, 'qmp-test.sock');
    const qgaPath = join(sockets, 'qga.sock');
    const serialLog = join(sockets, 'serial.log');
    const args = ['-nodefaults', '-display', 'none'];
    if (options.guest) {
      // /dev/kvm here cannot boot a real kernel (DESIGN.md): real guests run under TCG.
      args.push('-machine', 'q35', '-accel', 'tcg', '-cpu', 'max', '-m', '256', '-smp', '1', '-no-reboot');
      args.push('-kernel', options.guest.kernel, '-initrd', options.guest.initrd);
      args.push('-append', 'console=ttyS0 quiet panic=-1', '-serial', `file:${serialLog}`);
    } else args.push('-S', '-machine', 'q35,accel=kvm:tcg', '-m', '64');
    if (options.qga || options.guest) {
      args.push('-chardev', `socket,path=${qgaPath},server=on,wait=off,id=qga0`);
      args.push('-device', 'virtio-serial-pci,id=vser0');
      args.push('-device', 'virtserialport,chardev=qga0,name=org.qemu.guest_agent.0');
    }
    args.push('-name', 'lowtide-test-vm');
    args.push('-qmp', `unix:${qmpPath},server=on,wait=off`, '-qmp', `unix:${testPath},server=on,wait=off`);
    for (const d of disks) {
      args.push('-blockdev', `driver=file,filename=${d.path},node-name=${d.id}-file`);
      args.push('-blockdev', `driver=${d.format},file=${d.id}-file,node-name=${d.id}-fmt`);
      args.push('-device', `virtio-blk-pci,drive=${d.id}-fmt,id=${d.id}`);
    }
    const child = spawn('qemu-system-x86_64', args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (b: Buffer) => (stderr += b.toString()));
    const stderrText = (): string => stderr;
    for (let i = 0; i < 200 && !(existsSync(qmpPath) && existsSync(testPath)); i++) {
      if (child.exitCode !== null) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    if (!existsSync(testPath)) {
      child.kill('SIGKILL');
      throw new Error(`QEMU did not start: ${stderr}`);
    }
    try {
      const monitor = await QmpClient.connect(testPath, { timeoutMs: 10_000 });
      const vm = new TestVm(child, qmpPath, qgaPath, serialLog, monitor);
      vm.#stderr = stderrText;
      return vm;
    } catch (err) {
      const exited = new Promise((r) => child.once('exit', r));
      if (child.exitCode === null) process.kill(child.pid!, 'SIGKILL');
      await exited;
      throw err;
    }
  }

  /** Writes `pattern` at [offset, offset+length) of disk `id` through HMP qemu-io (the guest's view). */
  async write(id: string, pattern: number, offset: number, length: number): Promise<void> {
    const cmd = `qemu-io -d /machine/peripheral/${id}/virtio-backend "write -P 0x${pattern.toString(16)} ${offset} ${length}"`;
    await this.monitor.execute('human-monitor-command', { 'command-line': cmd });
  }

  async flush(id: string): Promise<void> {
    await this.monitor.execute('human-monitor-command', {
      'command-line': `qemu-io -d /machine/peripheral/${id}/virtio-backend "flush"`,
    });
  }

  /** Waits for `marker` at a line start in the guest's console (a real guest). */
  async waitForConsole(marker: string, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const text = existsSync(this.serialLog) ? readFileSync(this.serialLog, 'utf8') : '';
      if (text.split('\n').some((l) => l.startsWith(marker))) return;
      if (text.includes('GUEST-ERROR')) throw new Error(`the guest failed: ${text.slice(-2000)}`);
      if (this.#child.exitCode !== null) throw new Error(`QEMU exited: ${text.slice(-2000)}`);
      if (Date.now() > deadline) throw new Error(`no ${marker} within ${timeoutMs} ms: ${text.slice(-2000)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  async stop(): Promise<void> {
    this.monitor.close();
    if (this.#child.exitCode === null && this.#child.signalCode === null) {
      const exited = new Promise((r) => this.#child.once('exit', r));
      try {
        process.kill(this.pid, 'SIGKILL');
        await exited;
      } catch {
        // It has exited meanwhile.
      }
    }
  }
}

/** Replays a write on an image offline, as the VM made it. */
export function replayWrite(
  image: string,
  pattern: number,
  offset: number,
  length: number,
  format: 'raw' | 'qcow2' = 'raw',
): void {
  execFileSync('qemu-io', ['-f', format, '-c', `write -P 0x${pattern.toString(16)} ${offset} ${length}`, image], {
    stdio: 'ignore',
  });
}

/** The guest disk of a qcow2 image as a raw file (qemu-img convert). */
export function qcow2ToRaw(image: string, raw: string): string {
  execFileSync('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', image, raw]);
  return raw;
}

/** Entries of `dir` whose names start with `.lowtide-`. */
export function lowtideLeftovers(dir: string): string[] {
  return readdirSync(dir).filter((n) => n.startsWith('.lowtide-'));
}

/**
 * After a run: each disk on its own file with no backing chain, no lowtide
 * node or block job in QEMU, nothing of lowtide's in `dir`, the state
 * directory empty.
 */
export async function checkNothingLeft(
  v: TestVm,
  disks: readonly DiskSpec[],
  dir: string,
  stateDir: string,
): Promise<void> {
  const blocks = await v.monitor.execute('query-block', {});
  for (const d of disks) {
    const b = blocks.find((x) => x.qdev === `/machine/peripheral/${d.id}/virtio-backend`);
    expect(b?.inserted?.['node-name']).toBe(`${d.id}-fmt`);
    expect(b?.inserted?.file).toBe(d.path);
    expect(b?.inserted?.backing_file_depth ?? 0).toBe(0);
  }
  const nodes = await v.monitor.execute('query-named-block-nodes', { flat: true });
  expect(nodes.filter((x) => x['node-name'].startsWith('lt-'))).toEqual([]);
  expect(await v.monitor.execute('query-block-jobs', {})).toEqual([]);
  expect(lowtideLeftovers(dir)).toEqual([]);
  expect(existsSync(stateDir) ? readdirSync(stateDir) : []).toEqual([]);
}
