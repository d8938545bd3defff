// npm run bench:qcow2 — the guest disk of a qcow2 image to a raw sparse file:
// `lowtide image SRC OUT --format qcow2` against
// `qemu-img convert -O raw -t none -T none SRC OUT` (both bypass the page
// cache), on the same image in the same run, alternating, caches dropped
// before every timed run (root). Each round runs both back to back with the
// order rotating; the ratio reported is the median of per-round ratios.
//
// The image (bench/work/qcow2-<N>g.qcow2) is made once and reused: 64 KiB
// clusters, about half of the guest disk written by qemu-io at pseudo-random
// offsets in pieces of 64 KiB to 4 MiB.
//
// Options (environment): BENCH_DIR (default bench/work), BENCH_ROUNDS (3),
// BENCH_QCOW2_GIB (2).
import { existsSync, mkdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import {
  cliPath,
  dropCaches,
  GiB,
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

const dir = process.env.BENCH_DIR ?? join(root, 'bench', 'work');
const rounds = Number(process.env.BENCH_ROUNDS ?? 3);
const gib = Number(process.env.BENCH_QCOW2_GIB ?? 2);
requireBuiltCli();
need('qcow2', 'qemu-img', 'qemu-utils');
need('qcow2', 'qemu-io', 'qemu-utils');
mkdirSync(dir, { recursive: true });

const image = join(dir, `qcow2-${gib}g.qcow2`);
const size = gib * GiB;
if (!existsSync(image)) {
  console.log(`making ${image} (${gib} GiB guest disk, about half written)`);
  const tmp = `${image}.tmp`;
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
  spawnSync('mv', [tmp, image]);
}
const map = JSON.parse(run('qemu-img', ['map', '--output=json', image]));
const allocated = map.filter((m) => m.data).reduce((n, m) => n + m.length, 0);
console.log(
  `image: ${gib} GiB guest disk, ${(allocated / GiB).toFixed(2)} GiB allocated, file ${(statSync(image).size / GiB).toFixed(2)} GiB`,
);

const outLowtide = join(dir, 'qcow2-out-lowtide.raw');
const outQemu = join(dir, 'qcow2-out-qemu.raw');
const runners = {
  lowtide: async () => {
    rmSync(outLowtide, { force: true });
    dropCaches();
    const r = await timed(process.execPath, [
      cliPath(),
      'image',
      image,
      outLowtide,
      '--format',
      'qcow2',
      '--throttle',
      'off',
      '--no-progress',
    ]);
    return { seconds: r.seconds };
  },
  lowtideDefault: async () => {
    rmSync(outLowtide, { force: true });
    dropCaches();
    const r = await timed(process.execPath, [
      cliPath(),
      'image',
      image,
      outLowtide,
      '--format',
      'qcow2',
      '--no-progress',
    ]);
    return { seconds: r.seconds };
  },
  qemu: async () => {
    rmSync(outQemu, { force: true });
    dropCaches();
    const r = await timed('qemu-img', ['convert', '-O', 'raw', '-t', 'none', '-T', 'none', image, outQemu]);
    return { seconds: r.seconds };
  },
};
const names = Object.keys(runners);
const results = Object.fromEntries(names.map((n) => [n, []]));
for (let round = 0; round < rounds; round++) {
  const order = names.map((_, i) => names[(i + round) % names.length]);
  for (const name of order) results[name].push(await runners[name]());
  if (round === 0) {
    const same = spawnSync('cmp', [outLowtide, outQemu]).status === 0;
    if (!same) throw new Error('lowtide and qemu-img wrote different guest disks');
  }
  console.log(`round ${round + 1}: ` + names.map((n) => `${n} ${results[n].at(-1).seconds.toFixed(2)} s`).join(', '));
}
rmSync(outLowtide, { force: true });
rmSync(outQemu, { force: true });

const secs = (n) => results[n].map((x) => x.seconds);
const summary = {
  bench: 'qcow2',
  date: new Date().toISOString(),
  machine: machineInfo(),
  image: { guestBytes: size, allocatedBytes: allocated, clusterSize: 65536 },
  rounds,
  medianSeconds: Object.fromEntries(names.map((n) => [n, median(secs(n))])),
  speedup: {
    lowtideVsQemuImg: pairedMedian(secs('qemu'), secs('lowtide')),
    lowtideDefaultThrottleVsQemuImg: pairedMedian(secs('qemu'), secs('lowtideDefault')),
  },
  results,
};
mkdirSync(join(root, 'bench', 'results'), { recursive: true });
const file = join(root, 'bench', 'results', `qcow2-${summary.date.replace(/[:.]/g, '-')}.json`);
writeFileSync(file, JSON.stringify(summary, null, 2) + '\n');
console.log(
  `lowtide (--throttle off) is ${summary.speedup.lowtideVsQemuImg.toFixed(2)}x qemu-img convert ` +
    `(default throttle: ${summary.speedup.lowtideDefaultThrottleVsQemuImg.toFixed(2)}x); ` +
    `median ${(allocated / MiB / summary.medianSeconds.lowtide).toFixed(0)} MiB/s of allocated data; ${file}`,
);
