// npm run bench:io — lowtide's reader against fio, and `lowtide image` against dd,
// on the same file in the same run, alternating. Prints medians and ratios and
// writes JSON to bench/results/.
//
// lowtide's reader runs unthrottled here: this measures the engine against
// peers that do not throttle either; bench:impact measures throttling. The
// image phase times `lowtide image` twice, with --throttle off (the engine) and
// as a user runs it (the default controller, output on the same disk).
//
// Options (environment): BENCH_DIR (default bench/work), BENCH_SIZE_GIB (2),
// BENCH_ROUNDS (9).
//
// A virtual disk's speed can swing from run to run (host caching),
// so each round runs lowtide and its peer back to back, the order alternating,
// and the ratio reported is the median of the per-round ratios. Reads and
// images are measured in separate phases, each run after the disk settled
// (see settleDisk() in fat-volume.mjs).
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, statSync, writeFileSync, openSync, closeSync, ftruncateSync } from 'node:fs';
import { join } from 'node:path';
import {
  cliPath,
  dropCaches,
  ensureRandomFile,
  GiB,
  median,
  need,
  requireBuiltCli,
  root,
  settleDisk,
} from './fat-volume.mjs';
import { writeResults } from './common.mjs';

const dir = process.env.BENCH_DIR ?? join(root, 'bench', 'work');
const sizeGiB = Number(process.env.BENCH_SIZE_GIB ?? 2);
const rounds = Number(process.env.BENCH_ROUNDS ?? 9);
const cli = cliPath();

need('bench:io', 'fio', 'fio');
need('bench:io', 'dd', 'coreutils');
requireBuiltCli();

mkdirSync(dir, { recursive: true });
const data = join(dir, `data-${sizeGiB}g.bin`);
ensureRandomFile(data, sizeGiB * GiB, 'the read data');

function lowtideRead(file) {
  const out = execFileSync(process.execPath, [join(root, 'bench', 'read-child.mjs'), file, String(1 << 20), '32'], {
    encoding: 'utf8',
  });
  return JSON.parse(out);
}

function fioRead(file, extra = []) {
  const out = execFileSync(
    'fio',
    [
      '--name=seqread',
      `--filename=${file}`,
      '--rw=read',
      '--bs=1M',
      '--iodepth=32',
      '--ioengine=io_uring',
      '--direct=1',
      '--numjobs=1',
      `--size=${statSync(file).size}`,
      '--output-format=json',
      ...extra,
    ],
    { encoding: 'utf8' },
  );
  const job = JSON.parse(out).jobs[0];
  return { bytes: job.read.io_bytes, seconds: job.read.runtime / 1000, mbPerSecond: job.read.bw_bytes / 1e6 };
}

function lowtideImage(file, target, throttle = ['--throttle', 'off']) {
  rmSync(target, { force: true });
  dropCaches();
  const t0 = process.hrtime.bigint();
  const out = execFileSync(
    process.execPath,
    [cli, 'image', file, target, '--json', '--force', ...throttle, '--all-blocks'],
    { encoding: 'utf8' },
  );
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const s = JSON.parse(out);
  rmSync(target, { force: true });
  return { seconds, mbPerSecond: s.size / seconds / 1e6 };
}

function ddImage(file, target) {
  rmSync(target, { force: true });
  dropCaches();
  const t0 = process.hrtime.bigint();
  // conv=fsync so that dd, like lowtide, has the image on disk when it ends.
  execFileSync('dd', [`if=${file}`, `of=${target}`, 'iflag=direct', 'bs=1M', 'conv=sparse,fsync', 'status=none']);
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  rmSync(target, { force: true });
  return { seconds, mbPerSecond: statSync(file).size / seconds / 1e6 };
}

// The disk is mounted with `discard`: deleting a 2 GiB image sends the host a
// large discard, and writes of an image are still being absorbed by the host
// after fsync. A read started right then runs in the disk's slow mode (on a virtio
// disk: ~1.4-1.9 GB/s right after a write and delete, ~2.9-3.3 GB/s a few
// seconds later). So reads and images are measured in separate phases, and
// every measured run waits first until the disk has been idle for 2 s.
const measured =
  (fn) =>
  (...args) => {
    settleDisk();
    return fn(...args);
  };

// lowtide's reader keeps its buffers in transparent huge pages (a 1 MiB request
// is then one or two segments for the device, not 256 pages); fio's default
// buffers are ordinary pages. A second fio run with huge-page buffers
// (--iomem=shmhuge, from the hugetlbfs pool, which this bench fills for the run
// and empties after) shows how much of a difference is the memory alone.
const HUGE_POOL = '/proc/sys/vm/nr_hugepages';
let hugePoolBefore;
try {
  hugePoolBefore = Number(readFileSync(HUGE_POOL, 'utf8'));
  writeFileSync(HUGE_POOL, String(hugePoolBefore + 24)); // 32 MiB of buffers + slack, in 2 MiB pages
  if (Number(readFileSync(HUGE_POOL, 'utf8')) < hugePoolBefore + 17)
    throw new Error('the kernel gave fewer huge pages');
} catch (e) {
  console.log(`fio with huge-page buffers skipped: ${e.message}`);
  if (hugePoolBefore !== undefined) writeFileSync(HUGE_POOL, String(hugePoolBefore));
  hugePoolBefore = undefined;
}
const restoreHugePool = () => {
  if (hugePoolBefore !== undefined) writeFileSync(HUGE_POOL, String(hugePoolBefore));
  hugePoolBefore = undefined;
};
process.on('exit', restoreHugePool);
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(130));

const results = {
  lowtideRead: [],
  fioRead: [],
  fioHugeRead: [],
  lowtideImage: [],
  lowtideDefaultImage: [],
  ddImage: [],
};
const target = join(dir, 'image-out.img');
// Order reversed every other round, so drift in the machine hits all alike.
const order = (r, ...xs) => (r % 2 === 0 ? xs : xs.reverse());
const readers = [
  ['lowtideRead', measured(() => lowtideRead(data))],
  ['fioRead', measured(() => fioRead(data))],
];
if (hugePoolBefore !== undefined) readers.push(['fioHugeRead', measured(() => fioRead(data, ['--iomem=shmhuge']))]);
const mbps = (k) => (results[k].length ? `${results[k].at(-1).mbPerSecond.toFixed(0)} MB/s` : '-');
for (let r = 0; r < rounds; r++) {
  for (const [name, fn] of order(r, ...readers)) results[name].push(fn());
  console.log(
    `read round ${r + 1}/${rounds}: lowtide ${mbps('lowtideRead')}, fio ${mbps('fioRead')}, fio huge pages ${mbps('fioHugeRead')}`,
  );
}
restoreHugePool();
for (let r = 0; r < rounds; r++) {
  for (const [name, fn] of order(
    r,
    ['lowtideImage', measured(() => lowtideImage(data, target))],
    ['lowtideDefaultImage', measured(() => lowtideImage(data, target, []))],
    ['ddImage', measured(() => ddImage(data, target))],
  )) {
    results[name].push(fn());
  }
  console.log(
    `image round ${r + 1}/${rounds}: lowtide --throttle off ${results.lowtideImage.at(-1).seconds.toFixed(2)} s, lowtide (default) ${results.lowtideDefaultImage.at(-1).seconds.toFixed(2)} s, dd ${results.ddImage.at(-1).seconds.toFixed(2)} s`,
  );
}

// Memory: peak RSS of the read must not grow with the source size.
const rss = {};
for (const gib of [1, 4]) {
  const sparse = join(dir, `sparse-${gib}g.bin`);
  const fd = openSync(sparse, 'w');
  ftruncateSync(fd, gib * GiB);
  closeSync(fd);
  rss[`${gib}GiB`] = lowtideRead(sparse).maxRssMiB;
  rmSync(sparse, { force: true });
}
rss.dataFile = Math.max(...results.lowtideRead.map((x) => x.maxRssMiB));

const med = (k, f) => median(results[k].map((x) => x[f]));
const summary = {
  date: new Date().toISOString(),
  sizeGiB,
  rounds,
  engine: results.lowtideRead[0].engine,
  read: {
    lowtideMBps: med('lowtideRead', 'mbPerSecond'),
    fioMBps: med('fioRead', 'mbPerSecond'),
    fioHugeMBps: results.fioHugeRead.length ? med('fioHugeRead', 'mbPerSecond') : null,
    lowtideSetupMs: med('lowtideRead', 'setupMs'),
  },
  image: {
    lowtideSeconds: med('lowtideImage', 'seconds'),
    lowtideDefaultSeconds: med('lowtideDefaultImage', 'seconds'),
    ddSeconds: med('ddImage', 'seconds'),
  },
  peakRssMiB: rss,
  raw: results,
};
const pairedMedian = (xs, ys) => median(xs.map((x, i) => x / ys[i]));
summary.read.ratio = pairedMedian(
  results.lowtideRead.map((x) => x.mbPerSecond),
  results.fioRead.map((x) => x.mbPerSecond),
);
summary.read.hugeRatio = results.fioHugeRead.length
  ? pairedMedian(
      results.lowtideRead.map((x) => x.mbPerSecond),
      results.fioHugeRead.map((x) => x.mbPerSecond),
    )
  : null;
summary.image.speedRatio = pairedMedian(
  results.ddImage.map((x) => x.seconds),
  results.lowtideImage.map((x) => x.seconds),
);
// The plain command against the engine: the default's cost on an idle disk.
summary.image.defaultRatio = pairedMedian(
  results.lowtideImage.map((x) => x.seconds),
  results.lowtideDefaultImage.map((x) => x.seconds),
);
summary.image.defaultDdRatio = pairedMedian(
  results.ddImage.map((x) => x.seconds),
  results.lowtideDefaultImage.map((x) => x.seconds),
);

const rows = [
  [
    'sequential read, 1 MiB, QD 32, O_DIRECT',
    `${summary.read.lowtideMBps.toFixed(0)} MB/s`,
    `fio ${summary.read.fioMBps.toFixed(0)} MB/s`,
    `${summary.read.ratio.toFixed(3)}x`,
    '>= 0.95x',
  ],
  ...(summary.read.hugeRatio !== null
    ? [
        [
          'same, fio with huge-page buffers (--iomem=shmhuge)',
          `${summary.read.lowtideMBps.toFixed(0)} MB/s`,
          `fio ${summary.read.fioHugeMBps.toFixed(0)} MB/s`,
          `${summary.read.hugeRatio.toFixed(3)}x`,
          '(for reference)',
        ],
      ]
    : []),
  [
    'image to sparse file (fsync), --throttle off',
    `${summary.image.lowtideSeconds.toFixed(2)} s`,
    `dd ${summary.image.ddSeconds.toFixed(2)} s`,
    `${summary.image.speedRatio.toFixed(3)}x`,
    '>= 1.0x',
  ],
  [
    'image to sparse file (fsync), default throttle',
    `${summary.image.lowtideDefaultSeconds.toFixed(2)} s`,
    `dd ${summary.image.ddSeconds.toFixed(2)} s`,
    `${summary.image.defaultDdRatio.toFixed(3)}x`,
    '(for reference)',
  ],
  [
    'image, default against --throttle off',
    `${summary.image.lowtideDefaultSeconds.toFixed(2)} s`,
    `lowtide --throttle off ${summary.image.lowtideSeconds.toFixed(2)} s`,
    `${summary.image.defaultRatio.toFixed(3)}x`,
    '>= 0.8x',
  ],
];
console.log(`\nmedians of ${rounds} alternating rounds on ${sizeGiB} GiB (engine ${summary.engine})`);
console.log('| measurement | lowtide (median) | peer (median) | speed ratio (median of rounds) | target |');
console.log('|---|---|---|---|---|');
for (const r of rows) console.log(`| ${r.join(' | ')} |`);
console.log(
  `lowtide's read set-up (ring, buffers; not in its MB/s, as fio's is not in fio's): median ${summary.read.lowtideSetupMs.toFixed(1)} ms`,
);
console.log(
  `peak RSS of the read: 1 GiB source ${rss['1GiB'].toFixed(0)} MiB, 4 GiB source ${rss['4GiB'].toFixed(0)} MiB, ${sizeGiB} GiB data ${rss.dataFile.toFixed(0)} MiB (limit 200 MiB)`,
);

const file = writeResults('io', summary);
console.log(`written ${file}`);
