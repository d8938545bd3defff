// npm run bench:device — `lowtide image` of a file on XFS read through the file
// system against the same image read from the block device under it
// (--read-from-device), in the same run, alternating. Prints medians and the
// ratio and writes JSON to bench/results/.
//
// The XFS file system is made on a loop device (direct I/O to its backing
// file, so neither read is served by the backing file's page cache) over a
// sparse file in BENCH_DIR. Both runs use --throttle off and --all-blocks:
// the reader is measured, not the throttle. Needs root (losetup, mount).
// Everything made is removed at the end, also on failure or Ctrl-C.
//
// Options (environment): BENCH_DIR (default bench/work), BENCH_SIZE_MIB (1024),
// BENCH_ROUNDS (7).
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cliPath, requireBuiltCli, settleDisk } from './fat-volume.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const dir = process.env.BENCH_DIR ?? join(root, 'bench', 'work');
const sizeMiB = Number(process.env.BENCH_SIZE_MIB ?? 1024);
const rounds = Number(process.env.BENCH_ROUNDS ?? 7);
const cli = cliPath();
requireBuiltCli();

for (const [cmd, pkg] of [
  ['mkfs.xfs', 'xfsprogs'],
  ['losetup', 'mount'],
]) {
  if (spawnSync('sh', ['-c', 'command -v "$1"', 'sh', cmd], { stdio: 'ignore' }).status !== 0) {
    console.error(`bench:device needs ${cmd} (Debian package ${pkg})`);
    process.exit(1);
  }
}
if (process.getuid?.() !== 0) {
  console.error('bench:device needs root (losetup, mount, reading a block device)');
  process.exit(1);
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

function dropCaches() {
  spawnSync('sync');
  try {
    writeFileSync('/proc/sys/vm/drop_caches', '3');
  } catch {
    /* not allowed here: every read is O_DIRECT anyway */
  }
}

mkdirSync(dir, { recursive: true });
const backing = join(dir, `device-bench-${process.pid}.img`);
const mnt = join(dir, `device-bench-${process.pid}.mnt`);
const target = join(dir, `device-bench-${process.pid}.out`);
let loop;
let mounted = false;
function cleanup() {
  rmSync(target, { force: true });
  if (mounted) spawnSync('umount', [mnt], { stdio: 'ignore' });
  mounted = false;
  if (loop) spawnSync('losetup', ['--detach', loop], { stdio: 'ignore' });
  loop = undefined;
  rmSync(mnt, { recursive: true, force: true });
  rmSync(backing, { force: true });
}
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    cleanup();
    process.exit(130);
  });
}

function image(source, extra) {
  rmSync(target, { force: true });
  dropCaches();
  settleDisk();
  const t0 = process.hrtime.bigint();
  const out = execFileSync(
    process.execPath,
    [cli, 'image', source, target, '--json', '--force', '--throttle', 'off', '--all-blocks', ...extra],
    { encoding: 'utf8' },
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

try {
  execFileSync('truncate', ['-s', `${sizeMiB + 512}M`, backing]);
  loop = execFileSync('losetup', ['--find', '--show', '--direct-io=on', backing], { encoding: 'utf8' }).trim();
  execFileSync('mkfs.xfs', ['-q', '-f', '-m', 'reflink=1', loop]);
  mkdirSync(mnt, { recursive: true });
  execFileSync('mount', [loop, mnt]);
  mounted = true;
  const file = join(mnt, 'disk.img');
  console.log(`writing ${sizeMiB} MiB of random data to ${file} on XFS on ${loop} ...`);
  execFileSync('dd', [
    'if=/dev/urandom',
    `of=${file}`,
    'bs=4M',
    `count=${sizeMiB / 4}`,
    'iflag=fullblock',
    'status=none',
  ]);
  execFileSync('sync', ['-f', file]);
  const map = JSON.parse(execFileSync(process.execPath, [cli, 'map', file, '--json'], { encoding: 'utf8' }));
  console.log(`offset table: ${map.runs.length} runs, ${map.bytesOnDevice} bytes on ${map.device}`);

  const results = { throughFile: [], fromDevice: [] };
  for (let r = 0; r < rounds; r++) {
    const order = r % 2 === 0 ? ['throughFile', 'fromDevice'] : ['fromDevice', 'throughFile'];
    for (const k of order) results[k].push(image(file, k === 'fromDevice' ? ['--read-from-device'] : []));
    console.log(
      `round ${r + 1}/${rounds}: through the file ${results.throughFile.at(-1).seconds.toFixed(2)} s, ` +
        `from the device ${results.fromDevice.at(-1).seconds.toFixed(2)} s`,
    );
  }
  const ratios = results.throughFile.map((x, i) => x.seconds / results.fromDevice[i].seconds);
  const summary = {
    bench: 'device',
    date: new Date().toISOString(),
    sizeMiB,
    rounds,
    fileSystem: 'xfs',
    device: map.device,
    runs: map.runs.length,
    engine: results.fromDevice[0].engine,
    throughFileMBps: median(results.throughFile.map((x) => x.mbPerSecond)),
    fromDeviceMBps: median(results.fromDevice.map((x) => x.mbPerSecond)),
    /** Time through the file over time from the device, per round: > 1 means the device read is faster. */
    ratioMedian: median(ratios),
    raw: results,
  };
  console.log(
    `median: through the file ${summary.throughFileMBps.toFixed(0)} MB/s, from the device ${summary.fromDeviceMBps.toFixed(0)} MB/s, ` +
      `ratio (file time / device time) ${summary.ratioMedian.toFixed(3)}`,
  );
  mkdirSync(join(root, 'bench', 'results'), { recursive: true });
  const out = join(root, 'bench', 'results', `device-${summary.date.replace(/[:.]/g, '-')}.json`);
  writeFileSync(out, JSON.stringify(summary, null, 2));
  console.log(`wrote ${out}`);
} finally {
  cleanup();
}
