// npm run bench:vm — backing up a running QEMU VM's qcow2 disk while the VM
// writes: lowtide's flow (VM snapshot → storage snapshot → commit → read the
// storage snapshot) against backing up while the VM snapshot is held for the
// whole backup (what a tool without storage snapshots does: blockdev-snapshot-
// sync, read the frozen base, block-commit at the end). Same VM, same disk,
// same run.
//
// The VM is QEMU with -blockdev and a virtio-blk device (no guest OS); its
// qcow2 disk lives on an XFS file system (reflink=1) made on a loop device
// under BENCH_DIR, about half of it written. A writer sends HMP qemu-io writes
// of 64 KiB at pseudo-random offsets in a loop during both backups; its
// latency (the HMP round trip of each write) stands for the guest's write
// latency. The writer pauses while an overlay is committed (QEMU 7.2 asserts
// when a qemu-io write overlaps a block-commit's completion).
//
// Measured: how long the VM ran on a snapshot, the overlay's largest size,
// writer latency during the backup, backup MB/s (guest bytes read ÷ seconds),
// and an incremental after 1 % of the disk changed against the full backup.
// Needs root (loop device, mount). Both methods run with --throttle off; lowtide's
// plain command (the default throttle) is timed too, as a full backup of its own.
//
// Options (environment): BENCH_DIR (default bench/work), BENCH_VM_DISK_MIB
// (guest disk size, default 4096).
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { isRoot, KiB, machineInfo, MiB, need, Prng, root, run } from './fat-volume.mjs';

const dir = process.env.BENCH_DIR ?? join(root, 'bench', 'work');
const diskMiB = Number(process.env.BENCH_VM_DISK_MIB ?? 4096);
if (!Number.isInteger(diskMiB) || diskMiB < 64) throw new Error('BENCH_VM_DISK_MIB: an integer of at least 64');
if (!isRoot()) throw new Error('bench:vm needs root (loop device, mount)');
for (const [cmd, pkg] of [
  ['qemu-system-x86_64', 'qemu-system-x86'],
  ['qemu-img', 'qemu-utils'],
  ['qemu-io', 'qemu-utils'],
  ['mkfs.xfs', 'xfsprogs'],
])
  need('vm', cmd, pkg);
const dist = join(root, 'dist');
if (!existsSync(join(dist, 'index.js'))) throw new Error('run npm run build:ts first');
const { backup, backupVm, initRepository, openRepository } = await import(join(dist, 'index.js'));
const { QmpClient } = await import(join(dist, 'advanced.js'));

const size = diskMiB * MiB;
const work = join(dir, `vm-${process.pid}`);
mkdirSync(work, { recursive: true });
const cleanups = [];
const cleanup = async () => {
  for (const f of cleanups.reverse()) await f().catch((e) => console.error(`cleanup: ${e.message}`));
  rmSync(work, { recursive: true, force: true });
};
process.once('SIGINT', () => cleanup().then(() => process.exit(130)));

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const percentile = (xs, p) => {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};

try {
  // An XFS with reflink on a loop device: the disk, the overlays and the clones live there.
  const fsImage = join(work, 'xfs.img');
  run('truncate', ['-s', String(Math.max(512 * MiB, 3 * size)), fsImage]);
  const loop = execFileSync('losetup', ['--find', '--show', fsImage], { encoding: 'utf8' }).trim();
  cleanups.push(async () => run('losetup', ['--detach', loop]));
  run('mkfs.xfs', ['-q', '-f', '-m', 'reflink=1', loop]);
  const mnt = join(work, 'mnt');
  mkdirSync(mnt);
  run('mount', [loop, mnt]);
  cleanups.push(async () => run('umount', [mnt]));

  const disk = join(mnt, 'disk.qcow2');
  console.log(`making a ${diskMiB} MiB qcow2 disk, about half written`);
  run('qemu-img', ['create', '-q', '-f', 'qcow2', disk, String(size)]);
  const fill = new Prng(21);
  for (let written = 0; written < size / 2;) {
    const cmds = [];
    for (let i = 0; i < 64 && written < size / 2; i++) {
      const len = 64 * KiB * fill.int(1, 64);
      const off = 64 * KiB * fill.int(0, (size - len) / (64 * KiB));
      cmds.push('-c', `write -P ${fill.int(1, 255)} ${off} ${len}`);
      written += len;
    }
    run('qemu-io', ['-f', 'qcow2', ...cmds, disk]);
  }

  const qmpPath = join(work, 'qmp.sock');
  const monPath = join(work, 'mon.sock');
  const qemu = spawn(
    'qemu-system-x86_64',
    [
      '-nodefaults',
      '-display',
      'none',
      '-S',
      '-machine',
      'q35,accel=kvm:tcg',
      '-m',
      '64',
      '-name',
      'lowtide-bench-vm',
      '-qmp',
      `unix:${qmpPath},server=on,wait=off`,
      '-qmp',
      `unix:${monPath},server=on,wait=off`,
      '-blockdev',
      `driver=file,filename=${disk},node-name=vd0-file`,
      '-blockdev',
      'driver=qcow2,file=vd0-file,node-name=vd0-fmt',
      '-device',
      'virtio-blk-pci,drive=vd0-fmt,id=vd0',
    ],
    { stdio: ['ignore', 'ignore', 'inherit'] },
  );
  cleanups.push(async () => {
    if (qemu.exitCode === null) {
      const exited = new Promise((r) => qemu.once('exit', r));
      process.kill(qemu.pid, 'SIGKILL');
      await exited;
    }
  });
  for (let i = 0; i < 200 && !(existsSync(qmpPath) && existsSync(monPath)); i++) await sleep(50);
  const mon = await QmpClient.connect(monPath, { timeoutMs: 10_000 });
  cleanups.push(async () => mon.close());
  await mon.execute('human-monitor-command', { 'command-line': 'cont' });

  // The writer: 64 KiB writes through HMP qemu-io, 5 ms apart; latencies in ms per window.
  const prng = new Prng(22);
  const writer = { on: false, stop: false, samples: [], bytes: 0 };
  const writerDone = (async () => {
    while (!writer.stop) {
      if (!writer.on) {
        await sleep(5);
        continue;
      }
      const off = 64 * KiB * prng.int(0, size / (64 * KiB) - 1);
      const cmd = `qemu-io -d /machine/peripheral/vd0/virtio-backend "write -P ${prng.int(1, 255)} ${off} 65536"`;
      const t = performance.now();
      await mon.execute('human-monitor-command', { 'command-line': cmd });
      writer.samples.push(performance.now() - t);
      writer.bytes += 64 * KiB;
      await sleep(5);
    }
  })();
  const latency = (samples) => ({
    writes: samples.length,
    p50Ms: percentile(samples, 50),
    p99Ms: percentile(samples, 99),
    maxMs: samples.length ? Math.max(...samples) : null,
  });
  // The largest size of the overlays (`files()`) until the returned function is called.
  const overlayWatch = (files) => {
    let max = 0;
    const timer = setInterval(() => {
      try {
        for (const p of files()) max = Math.max(max, statSync(p).size);
      } catch {
        // Not there yet, or gone.
      }
    }, 10);
    return () => {
      clearInterval(timer);
      return max;
    };
  };

  // Idle latency of the writer, for reference.
  writer.on = true;
  await sleep(2000);
  writer.on = false;
  const idle = latency(writer.samples.splice(0));

  // 1. Held VM snapshot: the VM runs on an overlay for the whole backup.
  const repoHeld = join(work, 'repo-held');
  await initRepository(repoHeld);
  const heldOverlay = join(mnt, 'held-overlay.qcow2');
  writer.on = true;
  await sleep(500);
  const stopWatchHeld = overlayWatch(() => (existsSync(heldOverlay) ? [heldOverlay] : []));
  const t0 = performance.now();
  await mon.execute('blockdev-snapshot-sync', {
    'node-name': 'vd0-fmt',
    'snapshot-file': heldOverlay,
    'snapshot-node-name': 'held-ov',
    format: 'qcow2',
  });
  const tb = performance.now();
  const held = await backup({ source: disk, format: 'qcow2', repository: repoHeld, parent: null, throttle: 'off' });
  const heldBackupSeconds = (performance.now() - tb) / 1000;
  const heldSamples = writer.samples.splice(0);
  writer.on = false;
  const heldOverlayBytes = Math.max(stopWatchHeld(), statSync(heldOverlay).size);
  await mon.execute('block-commit', { 'job-id': 'held-commit', device: 'held-ov' });
  await mon.waitForEvent('BLOCK_JOB_READY', (d) => d.device === 'held-commit', 600_000);
  await mon.execute('block-job-complete', { device: 'held-commit' });
  await mon.waitForEvent('BLOCK_JOB_COMPLETED', (d) => d.device === 'held-commit', 600_000);
  const heldSnapshotSeconds = (performance.now() - t0) / 1000;
  rmSync(heldOverlay);

  // 2. lowtide's flow. The writer pauses while an overlay is committed.
  const repo = join(work, 'repo');
  await initRepository(repo);
  // The plain command (default throttle), a full backup into a repository of
  // its own, before the measured chain starts (CBT follows one repository).
  const repoPlain = join(work, 'repo-plain');
  await initRepository(repoPlain);
  const stateDir = join(work, 'state');
  const vmBackup = async (withWriter, plain = false) => {
    writer.on = withWriter;
    await sleep(withWriter ? 500 : 0);
    const overlays = () =>
      (existsSync(stateDir) ? readdirSync(stateDir, { recursive: true }) : [])
        .map((f) => join(stateDir, String(f)))
        .filter((p) => p.endsWith('.qcow2'));
    const stopWatch = overlayWatch(overlays);
    writer.samples.splice(0);
    const t = performance.now();
    let readStart = 0;
    let readEnd = 0;
    const r = await backupVm({
      qmp: qmpPath,
      repository: plain ? repoPlain : repo,
      stateDir,
      ...(plain ? {} : { throttle: 'off' }),
      onProgress: (p) => {
        if (p.phase === 'commit') writer.on = false;
        if (p.phase === 'backup') writer.on = withWriter;
        if (p.phase === 'backup' && readStart === 0) readStart = performance.now();
        if (p.phase === 'storage-delete') readEnd = performance.now();
      },
    });
    const seconds = (performance.now() - t) / 1000;
    writer.on = false;
    return {
      r,
      seconds,
      readSeconds: (readEnd - readStart) / 1000,
      overlayBytes: stopWatch(),
      samples: writer.samples.splice(0),
    };
  };
  const plainRun = await vmBackup(true, true);
  const full = await vmBackup(true);
  // An incremental that takes in the writer's writes, so the next one sees only the 1 % change.
  await vmBackup(false);
  const change = new Prng(23);
  const changed = Math.round(size / 100 / (64 * KiB));
  for (let i = 0; i < changed; i += 64) {
    const cmds = [];
    for (let j = i; j < Math.min(changed, i + 64); j++)
      cmds.push(`write -P ${change.int(1, 255)} ${64 * KiB * change.int(0, size / (64 * KiB) - 1)} 65536`);
    for (const c of cmds)
      await mon.execute('human-monitor-command', {
        'command-line': `qemu-io -d /machine/peripheral/vd0/virtio-backend "${c}"`,
      });
  }
  const incr = await vmBackup(false);
  writer.stop = true;
  await writerDone;

  const fd = full.r.record.disks[0];
  const id = incr.r.record.disks[0];
  const heldRead = held.manifest.stats.bytesRead;
  const summary = {
    bench: 'vm',
    date: new Date().toISOString(),
    machine: machineInfo(),
    diskBytes: size,
    writer: { idle, blockSize: 64 * KiB, gapMs: 5 },
    held: {
      vmSnapshotSeconds: heldSnapshotSeconds,
      backupSeconds: heldBackupSeconds,
      bytesRead: heldRead,
      mbPerSecond: heldRead / 1e6 / heldBackupSeconds,
      overlayBytes: heldOverlayBytes,
      latency: latency(heldSamples),
    },
    lowtide: {
      vmSnapshotSeconds: full.r.record.vmSnapshotSeconds,
      runSeconds: full.seconds,
      backupSeconds: full.readSeconds,
      bytesRead: fd.bytesRead,
      mbPerSecond: fd.bytesRead / 1e6 / full.readSeconds,
      overlayBytes: full.overlayBytes,
      storageSnapshotSeconds: full.r.record.storage.createSeconds,
      latency: latency(full.samples),
      cbt: fd.cbt,
    },
    plain: {
      runSeconds: plainRun.seconds,
      backupSeconds: plainRun.readSeconds,
      bytesRead: plainRun.r.record.disks[0].bytesRead,
      mbPerSecond: plainRun.r.record.disks[0].bytesRead / 1e6 / plainRun.readSeconds,
      vmSnapshotSeconds: plainRun.r.record.vmSnapshotSeconds,
      latency: latency(plainRun.samples),
      // What the default throttle saw: boosted and light-load time, someone else's I/Os.
      throttle: await (async () => {
        const t = (await (await openRepository(repoPlain)).readManifest(plainRun.r.record.disks[0].id)).throttle;
        const b = t?.probes?.boost;
        return b
          ? { boostedMs: b.boostedMs, lightMs: b.lightMs, foreignIops: b.foreignIops, checks: b.checks, busy: b.busy }
          : null;
      })(),
    },
    incremental: {
      changedBytes: changed * 64 * KiB,
      runSeconds: incr.seconds,
      bytesRead: id.bytesRead,
      vmSnapshotSeconds: incr.r.record.vmSnapshotSeconds,
      cbt: id.cbt,
    },
  };
  mkdirSync(join(root, 'bench', 'results'), { recursive: true });
  const file = join(root, 'bench', 'results', `vm-${summary.date.replace(/[:.]/g, '-')}.json`);
  writeFileSync(file, `${JSON.stringify(summary, null, 2)}\n`);

  const ms = (s) => `${(s * 1000).toFixed(0)} ms`;
  const mib = (b) => `${(b / MiB).toFixed(1)} MiB`;
  const lat = (l) => `${l.p50Ms?.toFixed(1)} / ${l.p99Ms?.toFixed(1)} ms (${l.writes} writes)`;
  const h = summary.held;
  const l = summary.lowtide;
  console.log(`\nqcow2 disk ${mib(size)}, about half written; writer idle p50/p99 ${lat(idle)}\n`);
  console.log('| measurement | lowtide (storage snapshot) | VM snapshot held for the backup |');
  console.log('|---|---|---|');
  console.log(`| VM-snapshot lifetime | ${ms(l.vmSnapshotSeconds)} | ${ms(h.vmSnapshotSeconds)} |`);
  console.log(`| overlay's largest size | ${mib(l.overlayBytes)} | ${mib(h.overlayBytes)} |`);
  console.log(`| writer latency p50 / p99 during the backup | ${lat(l.latency)} | ${lat(h.latency)} |`);
  console.log(
    `| backup: guest bytes read, MB/s | ${mib(l.bytesRead)} in ${l.backupSeconds.toFixed(2)} s, ` +
      `${l.mbPerSecond.toFixed(0)} MB/s (whole run ${l.runSeconds.toFixed(2)} s) | ${mib(h.bytesRead)} in ${h.backupSeconds.toFixed(2)} s, ${h.mbPerSecond.toFixed(0)} MB/s |`,
  );
  const pl = summary.plain;
  console.log(
    `| plain command (default throttle): VM-snapshot lifetime, read, MB/s | ${ms(pl.vmSnapshotSeconds)}, ` +
      `${mib(pl.bytesRead)} in ${pl.backupSeconds.toFixed(2)} s, ${pl.mbPerSecond.toFixed(0)} MB/s ` +
      `(${(pl.mbPerSecond / l.mbPerSecond).toFixed(2)}× --throttle off; whole run ${pl.runSeconds.toFixed(2)} s) | |`,
  );
  console.log(`| plain command: writer latency p50 / p99 during the backup | ${lat(pl.latency)} | |`);
  if (pl.throttle)
    console.log(
      `\nplain command's throttle: boosted ${(pl.throttle.boostedMs / 1e3).toFixed(2)} s, light load ${(pl.throttle.lightMs / 1e3).toFixed(2)} s, ` +
        `someone else's I/Os ${pl.throttle.foreignIops.toFixed(0)}/s in ${pl.throttle.busy} of ${pl.throttle.checks} checks`,
    );
  const inc = summary.incremental;
  console.log(
    `\nincremental after ${mib(inc.changedBytes)} (1 %) changed: ${inc.cbt.mode}, read ${mib(inc.bytesRead)} ` +
      `in ${inc.runSeconds.toFixed(2)} s vs the full ${mib(l.bytesRead)} in ${l.runSeconds.toFixed(2)} s ` +
      `(${((100 * inc.bytesRead) / l.bytesRead).toFixed(1)} % of the bytes, ` +
      `${((100 * inc.runSeconds) / l.runSeconds).toFixed(0)} % of the time)`,
  );
  console.log(`\n${file}`);
} finally {
  await cleanup();
}
