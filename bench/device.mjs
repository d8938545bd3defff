// npm run bench:device — `lowtide image` of a file on XFS read through the file
// system against the same image read from the block device under it
// (--read-from-device), in the same run, alternating. Each is timed with
// --throttle off (the reader) and as a user types it (the default throttle).
// Prints medians and the ratios and writes JSON to bench/results/.
//
// The XFS file system is made on a loop device (direct I/O to its backing
// file, so neither read is served by the backing file's page cache) over a
// sparse file in BENCH_DIR. All runs use --all-blocks: the reader is
// measured, not the planner. Needs root (losetup, mount). Everything made is
// removed at the end, also on failure or Ctrl-C.
//
// Options (environment): BENCH_DIR (default bench/work), BENCH_SIZE_MIB (1024),
// BENCH_ROUNDS (7).
import { execFileSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import {
  cliPath,
  dropCaches,
  ensureRandomFile,
  isRoot,
  median,
  MiB,
  need,
  pairedMedian,
  requireBuiltCli,
  root,
  settleDisk,
} from './fat-volume.mjs';
import { rotate, writeResults, xfsLoopDevice } from './common.mjs';

const dir = process.env.BENCH_DIR ?? join(root, 'bench', 'work');
const sizeMiB = Number(process.env.BENCH_SIZE_MIB ?? 1024);
const rounds = Number(process.env.BENCH_ROUNDS ?? 7);
const cli = cliPath();
requireBuiltCli();
need('bench:device', 'mkfs.xfs', 'xfsprogs');
need('bench:device', 'losetup', 'mount');
if (!isRoot()) {
  console.error('bench:device needs root (losetup, mount, reading a block device)');
  process.exit(1);
}

const fs = xfsLoopDevice(dir, sizeMiB + 512, 'device-bench');
const target = join(dir, `device-bench-${process.pid}.out`);
process.on('exit', () => rmSync(target, { force: true }));

function image(source, extra) {
  rmSync(target, { force: true });
  dropCaches();
  settleDisk();
  const t0 = process.hrtime.bigint();
  const out = execFileSync(
    process.execPath,
    [cli, 'image', source, target, '--json', '--force', '--all-blocks', ...extra],
    {
      encoding: 'utf8',
    },
  );
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const s = JSON.parse(out);
  rmSync(target, { force: true });
  return {
    seconds,
    mbPerSecond: s.size / seconds / 1e6,
    engine: s.engine,
    bytesFromDevice: s.readFrom?.bytesFromDevice ?? 0,
  };
}

const file = join(fs.mnt, 'disk.img');
console.log(`the source: ${file} on XFS on ${fs.loop}`);
ensureRandomFile(file, sizeMiB * MiB, 'the source file');
execFileSync('sync', ['-f', file]);
const map = JSON.parse(execFileSync(process.execPath, [cli, 'map', file, '--json'], { encoding: 'utf8' }));
console.log(`offset table: ${map.runs.length} runs, ${map.bytesOnDevice} bytes on ${map.device}`);

const OFF = ['--throttle', 'off'];
const DEVICE = ['--read-from-device'];
const contestants = [
  ['throughFile', () => image(file, OFF)],
  ['fromDevice', () => image(file, [...OFF, ...DEVICE])],
  ['throughFileDefault', () => image(file, [])],
  ['fromDeviceDefault', () => image(file, DEVICE)],
];
const results = Object.fromEntries(contestants.map(([n]) => [n, []]));
const secs = (k) => results[k].map((x) => x.seconds);
for (let r = 0; r < rounds; r++) {
  for (const [name, fn] of rotate(contestants, r)) results[name].push(fn());
  const f = (k) => results[k].at(-1).seconds.toFixed(2);
  console.log(
    `round ${r + 1}/${rounds}: --throttle off: through the file ${f('throughFile')} s, from the device ${f('fromDevice')} s; ` +
      `default throttle: through the file ${f('throughFileDefault')} s, from the device ${f('fromDeviceDefault')} s`,
  );
}
const mbps = (k) => median(results[k].map((x) => x.mbPerSecond));
const summary = {
  bench: 'device',
  date: new Date().toISOString(),
  sizeMiB,
  rounds,
  fileSystem: 'xfs',
  device: map.device,
  runs: map.runs.length,
  engine: results.fromDevice[0].engine,
  throughFileMBps: mbps('throughFile'),
  fromDeviceMBps: mbps('fromDevice'),
  throughFileDefaultMBps: mbps('throughFileDefault'),
  fromDeviceDefaultMBps: mbps('fromDeviceDefault'),
  /** Time through the file over time from the device, per round: > 1 means the device read is faster. */
  ratioMedian: pairedMedian(secs('throughFile'), secs('fromDevice')),
  ratioDefaultMedian: pairedMedian(secs('throughFileDefault'), secs('fromDeviceDefault')),
  raw: results,
};
console.log(
  `median (--throttle off): through the file ${summary.throughFileMBps.toFixed(0)} MB/s, from the device ${summary.fromDeviceMBps.toFixed(0)} MB/s, ` +
    `ratio (file time / device time) ${summary.ratioMedian.toFixed(3)}; default throttle: ${summary.throughFileDefaultMBps.toFixed(0)} and ` +
    `${summary.fromDeviceDefaultMBps.toFixed(0)} MB/s, ratio ${summary.ratioDefaultMedian.toFixed(3)}`,
);
console.log(`wrote ${writeResults('device', summary)}`);
fs.remove();
