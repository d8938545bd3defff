// npm run bench:jobs — two jobs at once on one local disk, as a user starts
// them, against the same work with --throttle off and against peers.
//
//   image:  two `lowtide image a.bin a.img` commands started together, each of
//           its own file of random data, output beside the sources (the same
//           disk). Peer: two `dd iflag=direct bs=1M conv=sparse,fsync` at once.
//   backup: `lowtide backup a.bin b.bin --parallel 2` into a new repository on
//           the same disk (chunk 1 MiB, zstd 3, as bench:repo). Peer: two
//           `restic backup --stdin` at once into one new repository (skipped
//           with a note when restic is not installed).
//
// The first round's images are compared with their sources (cmp).
//
// Each job finds the other's reads on the disk: with the default throttle
// they must not take each other for production (they share counts through
// /dev/shm/lowtide-jobs). Caches are dropped and the disk settles before each
// timed run; every round runs all variants, the order rotating. Wall time is
// until both jobs ended. Ratios are per round (that variant's time ÷ the
// other's), median over rounds.
//
// Options (environment): BENCH_DIR (bench/work), BENCH_SIZE_GIB (1, per
// source), BENCH_ROUNDS (3).
import { execFileSync } from 'node:child_process';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import {
  cliPath,
  dropCaches,
  ensureRandomFile,
  GiB,
  hasCommand,
  machineInfo,
  median,
  need,
  requireBuiltCli,
  root,
  settleDisk,
  timed,
} from './fat-volume.mjs';
import { resticPeer, rotate, writeResults } from './common.mjs';

const dir = process.env.BENCH_DIR ?? join(root, 'bench', 'work');
const sizeGiB = Number(process.env.BENCH_SIZE_GIB ?? 1);
const rounds = Number(process.env.BENCH_ROUNDS ?? 3);
if (!(sizeGiB > 0) || !(rounds >= 1)) {
  console.error('BENCH_SIZE_GIB and BENCH_ROUNDS must be positive numbers');
  process.exit(2);
}
const cli = cliPath();
need('bench:jobs', 'dd', 'coreutils');
requireBuiltCli();
const haveRestic = hasCommand('restic');

mkdirSync(dir, { recursive: true });
const work = join(dir, 'jobs');
rmSync(work, { recursive: true, force: true });
mkdirSync(work, { recursive: true });
const sources = ['a', 'b'].map((n) => join(dir, `jobs-src-${n}-${sizeGiB}g.bin`));
for (const s of sources) ensureRandomFile(s, sizeGiB * GiB, 'a source');
const outputs = ['a', 'b'].map((n) => join(work, `${n}.img`));
process.on('exit', () => rmSync(work, { recursive: true, force: true }));
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(130));

function clean() {
  for (const o of outputs) rmSync(o, { force: true });
  rmSync(join(work, 'repo'), { recursive: true, force: true });
  rmSync(join(work, 'restic'), { recursive: true, force: true });
  settleDisk();
}

/** Runs the commands at once after dropping caches; seconds until the last ended. */
async function together(cmds) {
  dropCaches();
  settleDisk();
  const t0 = process.hrtime.bigint();
  const results = await Promise.all(cmds.map(([cmd, args, opts]) => timed(cmd, args, opts)));
  return { seconds: Number(process.hrtime.bigint() - t0) / 1e9, results };
}

const throttleArgs = (v) => (v === 'off' ? ['--throttle', 'off'] : []);
const lowtideImages = (v) =>
  together(sources.map((s, i) => [process.execPath, [cli, 'image', s, outputs[i], '--json', ...throttleArgs(v)]]));
const image = {
  default: () => lowtideImages('default'),
  off: () => lowtideImages('off'),
  dd: () =>
    together(
      sources.map((s, i) => [
        'dd',
        [`if=${s}`, `of=${outputs[i]}`, 'iflag=direct', 'bs=1M', 'conv=sparse,fsync', 'status=none'],
      ]),
    ),
};

const repo = join(work, 'repo');
async function lowtideBackup(v) {
  await timed(process.execPath, [cli, 'init', repo, '--chunk-size', '1M', '--zstd-level', '3', '--json']);
  return together([
    [
      process.execPath,
      [cli, 'backup', ...sources, '--repo', repo, '--parallel', '2', ...throttleArgs(v), '--json', '--no-progress'],
    ],
  ]);
}
async function resticBackup() {
  const state = join(work, 'restic');
  const peer = resticPeer(join(state, 'state'));
  const rrepo = join(state, 'repo');
  await peer.init(rrepo);
  return together(
    sources.map((s, i) => [
      'restic',
      ['-r', rrepo, 'backup', '--stdin', '--stdin-filename', `disk${i}.img`],
      { env: peer.env, stdinFile: s },
    ]),
  );
}
const backup = {
  default: () => lowtideBackup('default'),
  off: () => lowtideBackup('off'),
  ...(haveRestic ? { restic: resticBackup } : {}),
};

const times = { image: {}, backup: {} };
const boosted = [];
for (let r = 0; r < rounds; r++) {
  for (const [what, variants] of Object.entries({ image, backup })) {
    for (const name of rotate(Object.keys(variants), r)) {
      clean();
      const { seconds, results } = await variants[name]();
      (times[what][name] ??= []).push(seconds);
      let note = '';
      if (what === 'image' && name === 'default') {
        // Each job's share of its time boosted, and the reads it took for someone else's.
        const jobs = results.map((x) => JSON.parse(x.stdout));
        const shares = jobs.map((j) => j.throttle.probes.boost.boostedMs / 1e3 / j.seconds);
        boosted.push(...shares);
        note = ` (boosted ${shares.map((x) => `${(x * 100).toFixed(0)} %`).join(', ')} of each job's time; someone else's reads counted while running ${jobs.map((j) => j.throttle.probes.boost.running?.reads ?? '-').join(', ')})`;
      }
      console.log(`round ${r + 1}/${rounds} ${what} ${name}: ${seconds.toFixed(2)} s${note}`);
      // Every image, once: the copies equal their sources (cmp exits non-zero otherwise).
      if (what === 'image' && r === 0) for (const [i, o] of outputs.entries()) execFileSync('cmp', [sources[i], o]);
    }
  }
}
clean();

const perRound = (xs, ys) => median(xs.map((x, i) => x / ys[i]));
const row = (what, name, peer) => {
  const xs = times[what][name];
  return {
    medianSeconds: median(xs),
    seconds: xs,
    offDividedByThis: name === 'off' ? 1 : perRound(times[what].off, xs),
    peerDividedByThis: times[what][peer] ? perRound(times[what][peer], xs) : null,
  };
};
const summary = {
  date: new Date().toISOString(),
  machine: machineInfo(),
  sizeGiBEach: sizeGiB,
  rounds,
  image: {
    boostedShareMedian: median(boosted),
    default: row('image', 'default', 'dd'),
    off: row('image', 'off', 'dd'),
    dd: { seconds: times.image.dd },
  },
  backup: {
    default: row('backup', 'default', 'restic'),
    off: row('backup', 'off', 'restic'),
    restic: haveRestic ? { seconds: times.backup.restic } : 'not installed',
  },
};
const f = (x) => (x === null ? '-' : `${x.toFixed(2)}×`);
const s = (xs) => `${median(xs).toFixed(2)} s (${xs.map((x) => x.toFixed(2)).join(', ')})`;
console.log(`\ntwo jobs at once, ${sizeGiB} GiB of random data each, output on the same disk, ${rounds} rounds`);
console.log(
  '| work | lowtide (default) | lowtide --throttle off | peer | off ÷ default | peer ÷ default | peer ÷ off |',
);
console.log('|---|---|---|---|---|---|---|');
console.log(
  `| 2 × image | ${s(times.image.default)} | ${s(times.image.off)} | dd ${s(times.image.dd)} | ${f(summary.image.default.offDividedByThis)} | ${f(summary.image.default.peerDividedByThis)} | ${f(summary.image.off.peerDividedByThis)} |`,
);
console.log(
  `| backup --parallel 2 | ${s(times.backup.default)} | ${s(times.backup.off)} | ${haveRestic ? `2 × restic ${s(times.backup.restic)}` : 'restic not installed'} | ${f(summary.backup.default.offDividedByThis)} | ${f(summary.backup.default.peerDividedByThis)} | ${f(summary.backup.off.peerDividedByThis)} |`,
);
console.log(
  `each default image job boosted ${(median(boosted) * 100).toFixed(0)} % of its time (median of ${boosted.length})`,
);
console.log(`written ${writeResults('jobs', summary)}`);
