/**
 * `lowtide vm`: running QEMU VMs. `vm disks` lists a VM's disks, `vm backup`
 * backs up every disk from a storage snapshot (one backup id per disk),
 * `vm recover` cleans up after runs that crashed.
 */
import { Option, type Command } from 'commander';
import {
  backupVm,
  defaultStateDir,
  describeVm,
  recoverVm,
  STORAGE_KINDS,
  type VmBackupProgress,
  type VmRecoveryReport,
} from '../../index.js';
import { collect, intArg } from '../args.js';
import { withInterrupt } from '../interrupt.js';
import { CliError, EXIT, printJson, printWarnings, ReportedFailure } from '../output.js';
import { formatBytes } from '../progress.js';
import { addThrottleOptions, throttleSettings } from '../throttle-flags.js';

function stateDirOf(o: Record<string, unknown>): string {
  if (typeof o.stateDir === 'string') return o.stateDir;
  if (typeof o.repo === 'string') return defaultStateDir(o.repo);
  throw new Error('unreachable: --state-dir or --repo is required');
}

function printRecovery(r: VmRecoveryReport): void {
  for (const x of r.recovered)
    process.stderr.write(
      `lowtide: recovered run ${x.runId} (${x.qmp}): ${x.actions.length > 0 ? x.actions.join('; ') : 'nothing was left'}\n`,
    );
  for (const x of r.failed)
    process.stderr.write(`lowtide: error [${x.error.code}]: run ${x.runId} not recovered: ${x.error.message}\n`);
  printWarnings(r.damaged.map((p) => `${p}: not a journal lowtide can read; left in place`));
}

function recoveryJson(r: VmRecoveryReport): object {
  return {
    recovered: r.recovered,
    failed: r.failed.map((f) => ({ ...f, error: { code: f.error.code, message: f.error.message } })),
    damaged: r.damaged,
  };
}

export function addVmCommand(program: Command): void {
  const vm = program.command('vm').description('running QEMU VMs: list disks, back up, recover');

  vm.command('disks')
    .description("list a running VM's disks (device, node, format, file)")
    .requiredOption('--qmp <socket>', "the VM's QMP socket")
    .addOption(
      new Option('--timeout <ms>', 'QMP timeout in ms').default(5000).argParser(intArg('--timeout', 1, 3_600_000)),
    )
    .option('--json', 'print JSON', false)
    .action(async (o: Record<string, unknown>) => {
      const r = await describeVm(o.qmp as string, { timeoutMs: o.timeout as number });
      if (o.json === true) {
        printJson(r);
        return;
      }
      for (const d of r.disks)
        process.stdout.write(
          `${d.name.padEnd(12)} ${d.nodeName.padEnd(16)} ${d.format.padEnd(6)} ${formatBytes(d.virtualSize).padStart(10)}  ${d.realPath}` +
            `${d.backingDepth > 0 ? `  (on a backing chain of ${d.backingDepth})` : ''}\n`,
        );
    });

  const backupCmd = vm
    .command('backup')
    .description('back up every disk of a running VM from a storage snapshot; prints one backup id per disk')
    .requiredOption('--qmp <socket>', "the VM's QMP socket")
    .requiredOption('--repo <repo>', 'repository directory')
    .option(
      '--password-file <file>',
      'file holding the passphrase of an encrypted repository (default: LOWTIDE_PASSWORD)',
    )
    .addOption(new Option('--storage <kind>', 'storage snapshot').choices([...STORAGE_KINDS]).default('reflink'))
    .option('--qga <socket>', "the guest agent's socket: freeze the guest's file systems around the VM snapshot")
    .addOption(
      new Option('--max-frozen-ms <ms>', 'longest time the guest stays frozen (a timer thaws it)')
        .default(5000)
        .argParser(intArg('--max-frozen-ms', 100, 60_000)),
    )
    .option('--state-dir <dir>', 'journals and overlays (default: <repo>.vm-state beside the repository)')
    .option('--exclude <glob>', 'leave out files/directories of FAT volumes in the disks (repeatable)', collect, [])
    .addOption(
      new Option('--read-from <where>', "read the disks' blocks from the device under the storage snapshot")
        .choices(['file', 'device'])
        .default('file'),
    )
    .addOption(
      new Option('--qmp-timeout <ms>', 'timeout of each QMP command')
        .default(30000)
        .argParser(intArg('--qmp-timeout', 1, 3_600_000)),
    )
    .option('--json', 'print the result as JSON', false);
  addThrottleOptions(backupCmd).action(async (o: Record<string, unknown>) => {
    const json = o.json === true;
    let last = '';
    const onProgress = (p: VmBackupProgress): void => {
      if (json) return;
      const line = p.disk ? `${p.phase} ${p.disk}` : p.phase;
      if (line !== last && p.phase !== 'done') process.stderr.write(`lowtide: ${line}\n`);
      last = line;
    };
    const r = await withInterrupt((signal) =>
      backupVm({
        qmp: o.qmp as string,
        qga: o.qga as string | undefined,
        maxFrozenMs: o.maxFrozenMs as number,
        repository: o.repo as string,
        storage: o.storage as 'reflink' | 'btrfs',
        stateDir: o.stateDir as string | undefined,
        exclude: o.exclude as string[],
        readFrom: o.readFrom as 'file' | 'device',
        qmpTimeoutMs: o.qmpTimeout as number,
        ...throttleSettings(o),
        signal,
        onProgress,
      }),
    );
    if (json) {
      printJson(r);
      return;
    }
    for (const x of r.recovered)
      process.stderr.write(
        `lowtide: recovered an earlier run ${x.runId}: ${x.actions.join('; ') || 'nothing was left'}\n`,
      );
    for (const d of r.record.disks) process.stdout.write(`${d.id}  ${d.name}\n`);
    for (const d of r.record.disks) {
      const how =
        d.cbt.mode === 'incremental'
          ? `incremental from ${d.cbt.parent} (dirty bitmap ${d.cbt.changedBitmap})`
          : `full: ${d.cbt.reason}`;
      const from = typeof d.readFrom === 'string' ? `; read through the file: ${d.readFrom}` : '';
      process.stderr.write(`lowtide: ${d.name}: ${how}; read ${formatBytes(d.bytesRead)}${from}\n`);
    }
    const rec = r.record;
    process.stderr.write(
      `backed up ${rec.disks.length} disks of ${rec.vm.name ?? rec.vm.uuid} (${rec.consistency}` +
        `${rec.guestFrozenSeconds === null ? '' : `, frozen ${(rec.guestFrozenSeconds * 1000).toFixed(0)} ms`}); ` +
        `VM snapshot held ${(rec.vmSnapshotSeconds * 1000).toFixed(0)} ms; ${rec.storage.description}, ` +
        `taken in ${(rec.storage.createSeconds * 1000).toFixed(1)} ms and deleted; record ${r.recordPath}\n`,
    );
  });

  vm.command('recover')
    .description('finish or undo what crashed vm backup runs left: overlays, storage snapshots')
    .option('--repo <repo>', 'repository directory (its state directory is <repo>.vm-state)')
    .option('--state-dir <dir>', 'the state directory (instead of the one beside --repo)')
    .option('--json', 'print the report as JSON', false)
    .action(async (o: Record<string, unknown>) => {
      if (o.repo === undefined && o.stateDir === undefined)
        throw new CliError('USAGE', 'vm recover: --repo or --state-dir is required', EXIT.usage);
      const r = await withInterrupt((signal) => recoverVm({ stateDir: stateDirOf(o), signal }));
      if (o.json === true) printJson(recoveryJson(r));
      else {
        printRecovery(r);
        if (r.recovered.length === 0 && r.failed.length === 0) process.stderr.write('lowtide: nothing to recover\n');
      }
      if (r.failed.length > 0) throw new ReportedFailure();
    });
}
