// npm run bench:qcow2 — the guest disk of a qcow2 image, on XFS on a loop
// device, in two phases, alternating within each round (the order rotates),
// caches dropped before every timed run; ratios are medians of per-round ratios.
//
// 1. To a raw sparse file: `lowtide image SRC OUT --format qcow2` (with
//    --throttle off, as a user types it, and --throttle off --read-from-device:
//    the blocks read at device offsets through the image's L1/L2 tables and
//    FIEMAP) against `qemu-img convert -O raw -t none -T none SRC OUT` (both
//    bypass the page cache). The outputs are compared (cmp) in the first round.
// 2. A full backup into a fresh repository: `lowtide backup SRC --format qcow2`
//    (the same three ways) against what a user of restic or borg does today,
//    `qemu-img convert -O raw` to a file and then `restic backup --stdin` or
//    `borg create` of that file (the convert is timed once per round and
//    counted in both). A peer that is not installed is skipped, saying so.
//
// The image (bench/work/qcow2-<N>g.qcow2) is made once and reused: 64 KiB
// clusters, about half of the guest disk written by qemu-io at pseudo-random
// offsets in pieces of 64 KiB to 4 MiB. Each run copies it onto a fresh XFS
// (reflink=1) on a loop device in BENCH_DIR; outputs and repositories are
// written beside it. Needs root (losetup, mount, dropping caches, reading the
// device). Everything made is removed at the end, also on failure or Ctrl-C.
//
// Options (environment): BENCH_DIR (default bench/work), BENCH_ROUNDS (3),
// BENCH_QCOW2_GIB (4).
import { copyFileSync, existsSync, mkdirSync, rmSync, statSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import {
  cliPath,
  dropCaches,
  fsyncFile,
  GiB,
  hasCommand,
  isRoot,
  KiB,
  machineInfo,
  median,
  MiB,
  need,
  pairedMedian,
  Prng,
  requireBuiltCli,
  root,
  run,
  timed,
} from './fat-volume.mjs';
import { borgPeer, resticPeer, rotate, writeResults, xfsLoopDevice } from './common.mjs';

const dir = process.env.BENCH_DIR ?? join(root, 'bench', 'work');
const rounds = Number(process.env.BENCH_ROUNDS ?? 3);
const gib = Number(process.env.BENCH_QCOW2_GIB ?? 4);
requireBuiltCli();
need('bench:qcow2', 'qemu-img', 'qemu-utils');
need('bench:qcow2', 'qemu-io', 'qemu-utils');
need('bench:qcow2', 'mkfs.xfs', 'xfsprogs');
need('bench:qcow2', 'losetup', 'mount');
if (!isRoot()) {
  console.error('bench:qcow2 needs root (losetup, mount, dropping caches, reading a block device)');
  process.exit(1);
}
const peers = [
  ['restic', 'restic'],
  ['borg', 'borgbackup'],
].filter(([cmd, pkg]) => {
  if (hasCommand(cmd)) return true;
  console.log(`skipping the ${cmd} peer: ${cmd} is not installed (Debian package ${pkg})`);
  return false;
});
mkdirSync(dir, { recursive: true });

// ------------------------------------------------------------ the image
const stored = join(dir, `qcow2-${gib}g.qcow2`);
const size = gib * GiB;
if (!existsSync(stored)) {
  console.log(`making ${stored} (${gib} GiB guest disk, about half written)`);
  const tmp = `${stored}.tmp`;
  run('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=65536', tmp, String(size)]);
  const prng = new Prng(20);
  let written = 0;
  while (written < size / 2) {
    const cmds = [];
    for (let i = 0; i < 64 && written < size / 2; i++) {
      const len = 64 * KiB * prng.int(1, 64); // 64 KiB .. 4 MiB
      const off = 64 * KiB * prng.int(0, (size - len) / (64 * KiB));
      cmds.push('-c', `write -P ${prng.int(1, 255)} ${off} ${len}`);
      written += len; // overlaps make the allocation a little less than this
    }
    run('qemu-io', ['-f', 'qcow2', ...cmds, tmp]);
  }
  spawnSync('mv', [tmp, stored]);
}
const fileBytes = statSync(stored).size;
const fs = xfsLoopDevice(dir, Math.ceil(fileBytes / MiB) + 512, 'qcow2-bench');
const image = join(fs.mnt, 'disk.qcow2');
console.log(`copying the image onto XFS on ${fs.loop} ...`);
copyFileSync(stored, image);
fsyncFile(image);
const map = JSON.parse(run('qemu-img', ['map', '--output=json', image]));
const allocated = map.filter((m) => m.data).reduce((n, m) => n + m.length, 0);
console.log(
  `image: ${gib} GiB guest disk, ${(allocated / GiB).toFixed(2)} GiB allocated, file ${(fileBytes / GiB).toFixed(2)} GiB`,
);

const work = join(dir, `qcow2-bench-${process.pid}`);
const p = (n) => join(work, n);
const removeWork = () => rmSync(work, { recursive: true, force: true });
process.on('exit', removeWork);
removeWork();
mkdirSync(work, { recursive: true });

// ------------------------------------------------------------ runners
const lt = (args) => timed(process.execPath, [cliPath(), ...args]);
const OFF = ['--throttle', 'off'];
const DEVICE = ['--throttle', 'off', '--read-from-device'];

async function lowtideImage(flags, out) {
  rmSync(out, { force: true });
  dropCaches();
  const r = await lt(['image', image, out, '--format', 'qcow2', '--force', '--json', '--no-progress', ...flags]);
  const s = JSON.parse(r.stdout);
  return { seconds: r.seconds, bytesFromDevice: s.readFrom?.bytesFromDevice ?? null };
}
async function qemuConvert(out, cacheFlags) {
  rmSync(out, { force: true });
  dropCaches();
  const r = await timed('qemu-img', ['convert', '-O', 'raw', ...cacheFlags, image, out]);
  return { seconds: r.seconds };
}
async function lowtideBackup(flags) {
  const repo = p('lowtide-repo');
  rmSync(repo, { recursive: true, force: true });
  await lt(['init', repo, '--chunk-size', '1M', '--zstd-level', '3', '--json']);
  dropCaches();
  const r = await lt(['backup', image, '--repo', repo, '--format', 'qcow2', '--json', '--no-progress', ...flags]);
  const m = JSON.parse(r.stdout);
  rmSync(repo, { recursive: true, force: true });
  return {
    seconds: r.seconds,
    bytesRead: m.stats.bytesRead,
    bytesStored: m.stats.bytesStored,
    bytesFromDevice: m.readFrom?.bytesFromDevice ?? null,
  };
}
/** qemu-img convert to a raw file, then each peer's full backup of it (each into a fresh repository). */
async function convertThenPeers() {
  const raw = p('disk.img');
  const convert = await qemuConvert(raw, []);
  fsyncFile(raw);
  const out = { convert };
  for (const [name] of peers) {
    const state = p(`${name}-state`);
    const repo = p(`${name}-repo`);
    rmSync(state, { recursive: true, force: true });
    rmSync(repo, { recursive: true, force: true });
    if (name === 'restic') {
      const restic = resticPeer(state, { before: dropCaches });
      await restic.init(repo);
      out.restic = await restic.backup(repo, raw);
    } else {
      const borg = borgPeer(state, { before: dropCaches });
      await borg.init(repo);
      out.borg = await borg.create(repo, 'full', work, 'disk.img');
    }
    out[name].seconds += convert.seconds;
    rmSync(state, { recursive: true, force: true });
    rmSync(repo, { recursive: true, force: true });
  }
  rmSync(raw, { force: true });
  return out;
}

// ------------------------------------------------------------ phase 1: images
const outLowtide = p('out-lowtide.raw');
const outDevice = p('out-device.raw');
const outQemu = p('out-qemu.raw');
const imaging = [
  ['lowtide', () => lowtideImage(OFF, outLowtide)],
  ['lowtideDefault', () => lowtideImage([], outLowtide)],
  ['lowtideDevice', () => lowtideImage(DEVICE, outDevice)],
  ['qemu', () => qemuConvert(outQemu, ['-t', 'none', '-T', 'none'])],
];
const images = Object.fromEntries(imaging.map(([n]) => [n, []]));
for (let round = 0; round < rounds; round++) {
  for (const [name, fn] of rotate(imaging, round)) images[name].push(await fn());
  if (round === 0) {
    for (const out of [outLowtide, outDevice]) {
      if (spawnSync('cmp', [out, outQemu]).status !== 0) throw new Error(`${out} and qemu-img's guest disk differ`);
    }
  }
  for (const out of [outLowtide, outDevice, outQemu]) rmSync(out, { force: true });
  console.log(
    `image round ${round + 1}/${rounds}: ` +
      imaging.map(([n]) => `${n} ${images[n].at(-1).seconds.toFixed(2)} s`).join(', '),
  );
}

// ------------------------------------------------------------ phase 2: full backups
const backingUp = [
  ['lowtide', () => lowtideBackup(OFF)],
  ['lowtideDefault', () => lowtideBackup([])],
  ['lowtideDevice', () => lowtideBackup(DEVICE)],
  ['peers', () => convertThenPeers()],
];
const backups = Object.fromEntries(backingUp.map(([n]) => [n, []]));
for (let round = 0; round < rounds; round++) {
  for (const [name, fn] of rotate(backingUp, round)) backups[name].push(await fn());
  const last = backups.peers.at(-1);
  console.log(
    `backup round ${round + 1}/${rounds}: ` +
      ['lowtide', 'lowtideDefault', 'lowtideDevice']
        .map((n) => `${n} ${backups[n].at(-1).seconds.toFixed(2)} s`)
        .join(', ') +
      `; qemu-img convert ${last.convert.seconds.toFixed(2)} s` +
      peers.map(([n]) => `, + ${n} ${last[n].seconds.toFixed(2)} s`).join(''),
  );
}
fs.remove();

// ------------------------------------------------------------ summary
const secs = (list, f = (x) => x.seconds) => list.map(f);
const imageSecs = (n) => secs(images[n]);
const backupSecs = (n) => secs(backups[n]);
const peerSecs = (n) => secs(backups.peers, (x) => x[n].seconds);
const summary = {
  bench: 'qcow2',
  date: new Date().toISOString(),
  machine: machineInfo(),
  image: { guestBytes: size, allocatedBytes: allocated, fileBytes, clusterSize: 65536, fileSystem: 'xfs (loop)' },
  rounds,
  medianSeconds: {
    image: Object.fromEntries(imaging.map(([n]) => [n, median(imageSecs(n))])),
    backup: {
      ...Object.fromEntries(['lowtide', 'lowtideDefault', 'lowtideDevice'].map((n) => [n, median(backupSecs(n))])),
      qemuImgConvert: median(peerSecs('convert')),
      ...Object.fromEntries(
        peers.map(([n]) => [`qemuImgConvertPlus${n[0].toUpperCase()}${n.slice(1)}`, median(peerSecs(n))]),
      ),
    },
  },
  /** Peer time over lowtide time, median of per-round ratios: > 1 means lowtide is faster. */
  speedup: {
    image: {
      lowtideVsQemuImg: pairedMedian(imageSecs('qemu'), imageSecs('lowtide')),
      lowtideDefaultVsQemuImg: pairedMedian(imageSecs('qemu'), imageSecs('lowtideDefault')),
      lowtideDeviceVsQemuImg: pairedMedian(imageSecs('qemu'), imageSecs('lowtideDevice')),
      deviceVsFile: pairedMedian(imageSecs('lowtide'), imageSecs('lowtideDevice')),
    },
    backup: Object.fromEntries(
      peers.flatMap(([n]) =>
        ['lowtide', 'lowtideDefault', 'lowtideDevice'].map((l) => [
          `${l}VsConvertPlus${n[0].toUpperCase()}${n.slice(1)}`,
          pairedMedian(peerSecs(n), backupSecs(l)),
        ]),
      ),
    ),
  },
  skippedPeers: ['restic', 'borg'].filter((n) => !peers.some(([m]) => m === n)),
  results: { images, backups },
};
summary.speedup.backup.deviceVsFile = pairedMedian(backupSecs('lowtide'), backupSecs('lowtideDevice'));
const file = writeResults('qcow2', summary);
const sp = summary.speedup;
console.log(
  `image: lowtide (--throttle off) ${sp.image.lowtideVsQemuImg.toFixed(2)}x qemu-img convert, ` +
    `default throttle ${sp.image.lowtideDefaultVsQemuImg.toFixed(2)}x, from the device ${sp.image.lowtideDeviceVsQemuImg.toFixed(2)}x ` +
    `(device vs file ${sp.image.deviceVsFile.toFixed(2)}x); ` +
    `median ${(allocated / MiB / summary.medianSeconds.image.lowtide).toFixed(0)} MiB/s of allocated data`,
);
console.log(
  `backup: ` +
    Object.entries(sp.backup)
      .map(([k, v]) => `${k} ${v.toFixed(2)}x`)
      .join(', '),
);
console.log(`written ${file}`);
