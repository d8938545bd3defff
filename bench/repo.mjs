// npm run bench:repo — lowtide's repository against restic and borg on the same
// FAT32 disk image in the same run: first full backup, an incremental after ~1 %
// of the files changed (lowtide once with a changed-extent list, once without),
// restore of the latest backup, and repository size after both backups.
//
// Options (environment): BENCH_DIR (default bench/work), BENCH_ROUNDS (3 series),
// BENCH_REPO_GIB (2), BENCH_CHANGE (0.01 = fraction of files rewritten; half as
// many are added).
//
// lowtide's full backup and restore also run without --throttle (the default
// controller, repository and restore target on the same disk), reported beside
// the --throttle off runs.
//
// Each series starts from a fresh copy of the cached volume (bench/work/fat32-<N>g.img:
// pseudo-random old data, then mkfs.fat -F 32, then ~50 % filled with mtools, with
// deletes so that files are fragmented and free space is scattered) and fresh
// repositories:
//   lowtide          init (1 MiB chunks, zstd 3); backup = used blocks only
//   lowtide --all-blocks   the same tool reading the whole image, like the peers
//   restic           init --repository-version 2 (zstd "auto"); backup --stdin < image
//   borg             init -e none; create --read-special --compression zstd,3
// Then ~1 % of the files are rewritten and some added with mtools; the changed
// extents are computed by comparing the image before and after in 64 KiB blocks
// (what a changed-block-tracking bitmap reports) and handed to lowtide --changed.
// Before every timed run the disk settles (idle for 2 s) and caches are dropped
// (root); every command is timed as a whole process (start-up included); outputs
// of restores are fsynced and that is counted. The order of the tools rotates
// from series to series, ratios are medians of per-series ratios. Correctness is
// checked as it goes: lowtide's restored used-blocks image passes fsck.fat -n
// and matches the image in its metadata and every allocated cluster; the
// all-blocks, restic and borg restores are byte-identical to the image (cmp).
import { spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import {
  changedExtents,
  changeFiles,
  compareRanges,
  diskUsage,
  dropCaches,
  ensureFatVolume,
  settleDisk,
  fmtBytes,
  fsckFat,
  fsyncFile,
  GiB,
  isRoot,
  machineInfo,
  median,
  need,
  pairedMedian,
  requireBuiltCli,
  root,
  sameFiles,
  snapshotLowtide,
  timed,
} from './fat-volume.mjs';
import { borgPeer, resticPeer, writeResults } from './common.mjs';

/** Before every timed command, lowtide's and the peers' alike: the disk idle, the page cache empty. */
function beforeTimedRun() {
  settleDisk();
  dropCaches();
}

const dir = process.env.BENCH_DIR ?? join(root, 'bench', 'work');
const seriesCount = Number(process.env.BENCH_ROUNDS ?? 3);
const volGiB = Number(process.env.BENCH_REPO_GIB ?? 2);
const changeFraction = Number(process.env.BENCH_CHANGE ?? 0.01);
const started = Date.now();

for (const [cmd, pkg] of [
  ['mkfs.fat', 'dosfstools'],
  ['fsck.fat', 'dosfstools'],
  ['mcopy', 'mtools'],
  ['restic', 'restic'],
  ['borg', 'borgbackup'],
  ['cmp', 'diffutils'],
])
  need('bench:repo', cmd, pkg);
requireBuiltCli();
if (!isRoot())
  console.warn('warning: not root — caches cannot be dropped; restic and borg then read the image from the page cache');
mkdirSync(dir, { recursive: true });

const snap = snapshotLowtide(join(dir, `lowtide-snapshot-${process.pid}`));
const seriesDir = join(dir, `repo-series-${process.pid}`);
const cleanup = () => {
  rmSync(seriesDir, { recursive: true, force: true });
  rmSync(snap.dir, { recursive: true, force: true });
};
process.on('exit', cleanup);
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(130));
const fsLib = await import(pathToFileURL(join(snap.dir, 'dist', 'fs', 'index.js')).href);

const base = join(dir, `fat32-${volGiB}g.img`);
const meta = ensureFatVolume({ image: base, size: volGiB * GiB, seed: 2000 + volGiB });
const size = statSync(base).size;
const IMAGE_NAME = 'disk.img';

// ------------------------------------------------------------ tools
const lt = (args) => timed(process.execPath, [snap.cli, ...args]);

async function lowtideInit(repo) {
  await lt(['init', repo, '--chunk-size', '1M', '--zstd-level', '3', '--json']);
}
// Every lowtide command runs with --throttle off (the engine against peers that
// do not throttle), and the full backup and the restore once more as a user
// types them (the default controller): `throttle` [] below.
const OFF = ['--throttle', 'off'];
async function lowtideBackup(repo, image, extra, throttle = OFF) {
  beforeTimedRun();
  const r = await lt(['backup', image, '--repo', repo, ...throttle, '--json', '--no-progress', ...extra]);
  const m = JSON.parse(r.stdout);
  return {
    seconds: r.seconds,
    jobSeconds: m.timing.seconds,
    id: m.id,
    bytesRead: m.stats.bytesRead,
    diskReadBytes: r.io.read_bytes,
    diskWriteBytes: r.io.write_bytes,
    bytesStored: m.stats.bytesStored,
    chunksNew: m.stats.chunksNew,
    chunksReused: m.stats.chunksReused,
    chunksFromParent: m.stats.chunksFromParent,
    chunksZero: m.stats.chunksZero,
  };
}
async function lowtideRestore(repo, target, throttle = OFF) {
  rmSync(target, { force: true });
  beforeTimedRun();
  const r = await lt(['restore', 'latest', target, '--repo', repo, ...throttle, '--json', '--no-progress']);
  const syncSeconds = fsyncFile(target);
  return {
    seconds: r.seconds + syncSeconds,
    syncSeconds,
    diskReadBytes: r.io.read_bytes,
    bytesWritten: JSON.parse(r.stdout).bytesWritten,
  };
}

const restic = (s) => resticPeer(s, { before: beforeTimedRun, imageName: IMAGE_NAME });
const resticEnv = (s) => restic(s).env;
const resticInit = (s, repo) => restic(s).init(repo);
const resticBackup = (s, repo, image) => restic(s).backup(repo, image);
async function resticRestore(s, repo, targetDir) {
  rmSync(targetDir, { recursive: true, force: true });
  beforeTimedRun();
  const r = await timed('restic', ['-r', repo, 'restore', 'latest', '--target', targetDir], { env: resticEnv(s) });
  const out = join(targetDir, IMAGE_NAME);
  const syncSeconds = fsyncFile(out);
  return { seconds: r.seconds + syncSeconds, syncSeconds, diskReadBytes: r.io.read_bytes, file: out };
}

const borg = (s) => borgPeer(s, { before: beforeTimedRun });
const borgEnv = (s) => borg(s).env;
const borgInit = (s, repo) => borg(s).init(repo);
const borgCreate = (s, repo, archive, imageDir, imageName) => borg(s).create(repo, archive, imageDir, imageName);
async function borgExtract(s, repo, archive, imageName, target) {
  rmSync(target, { force: true });
  beforeTimedRun();
  const r = await timed('borg', ['extract', '--stdout', `${repo}::${archive}`, imageName], {
    env: borgEnv(s),
    stdoutFile: target,
  });
  const syncSeconds = fsyncFile(target);
  return { seconds: r.seconds + syncSeconds, syncSeconds, diskReadBytes: r.io.read_bytes };
}

// ------------------------------------------------------------ checks
async function allocatedRanges(image) {
  const v = await fsLib.openVolume(image);
  try {
    const m = await v.allocationMap();
    return [[0, m.dataOffset], ...m.extents().map((e) => [e.offset, e.length])];
  } finally {
    v.close();
  }
}
async function checkUsedRestore(restored, image) {
  const fsck = fsckFat(restored);
  const diff = compareRanges(image, restored, await allocatedRanges(image));
  return { fsckClean: fsck.clean, metadataAndAllocatedIdentical: diff === null, firstDifference: diff };
}

// ------------------------------------------------------------ one series
async function series(k) {
  rmSync(seriesDir, { recursive: true, force: true });
  mkdirSync(seriesDir, { recursive: true });
  const p = (n) => join(seriesDir, n);
  const image = p(IMAGE_NAME);
  const repos = {
    lowtide: p('lt'),
    lowtideDefault: p('lt-default'),
    lowtideNoChanged: p('lt-nochanged'),
    lowtideAll: p('lt-all'),
    restic: p('restic'),
    borg: p('borg'),
  };
  const out = { series: k + 1, full: {}, incremental: {}, restore: {}, repoBytes: {}, checks: {} };
  cpSync(base, image);
  fsyncFile(image);
  await lowtideInit(repos.lowtide);
  await lowtideInit(repos.lowtideDefault);
  await lowtideInit(repos.lowtideAll);
  await resticInit(seriesDir, repos.restic);
  await borgInit(seriesDir, repos.borg);

  const rotate = (xs) => xs.map((_, i) => xs[(i + k) % xs.length]);
  const show = (phase) =>
    Object.entries(out[phase])
      .map(([n, r]) => `${n} ${r.seconds.toFixed(2)} s`)
      .join(', ');

  // Full backups.
  const full = [
    ['lowtide', async () => lowtideBackup(repos.lowtide, image, [])],
    ['lowtideDefault', async () => lowtideBackup(repos.lowtideDefault, image, [], [])],
    ['lowtideAllBlocks', async () => lowtideBackup(repos.lowtideAll, image, ['--all-blocks'])],
    ['restic', async () => resticBackup(seriesDir, repos.restic, image)],
    ['borg', async () => borgCreate(seriesDir, repos.borg, 'full', seriesDir, IMAGE_NAME)],
  ];
  for (const [n, fn] of rotate(full)) out.full[n] = await fn();
  console.log(`  full:        ${show('full')}`);

  // Incremental without a changed list: from a copy of the lowtide repository as it is now.
  cpSync(repos.lowtide, repos.lowtideNoChanged, { recursive: true });

  // ~1 % of the files change; the changed extents at 64 KiB granularity.
  const change = changeFiles(image, meta, { fraction: changeFraction, seed: 77, tmpDir: p('change-tmp') });
  const extents = changedExtents(base, image, 64 * 1024);
  const changedFile = p('changed.json');
  writeFileSync(changedFile, JSON.stringify(extents));
  out.change = { ...change, extents: extents.length, changedBytes: extents.reduce((a, e) => a + e[1], 0) };
  console.log(
    `  change:      ${change.filesRewritten} files rewritten (${fmtBytes(change.bytesRewritten)}), ${change.filesAdded} added (${fmtBytes(change.bytesAdded)}); ${extents.length} changed extents, ${fmtBytes(out.change.changedBytes)} at 64 KiB granularity`,
  );

  const incr = [
    [
      'lowtideChanged',
      async () => lowtideBackup(repos.lowtide, image, ['--parent', out.full.lowtide.id, '--changed', changedFile]),
    ],
    ['lowtideNoChanged', async () => lowtideBackup(repos.lowtideNoChanged, image, ['--parent', out.full.lowtide.id])],
    [
      'lowtideAllBlocksChanged',
      async () =>
        lowtideBackup(repos.lowtideAll, image, [
          '--all-blocks',
          '--parent',
          out.full.lowtideAllBlocks.id,
          '--changed',
          changedFile,
        ]),
    ],
    ['restic', async () => resticBackup(seriesDir, repos.restic, image)],
    ['borg', async () => borgCreate(seriesDir, repos.borg, 'incr', seriesDir, IMAGE_NAME)],
  ];
  for (const [n, fn] of rotate(incr)) out.incremental[n] = await fn();
  console.log(`  incremental: ${show('incremental')}`);

  for (const [n, r] of Object.entries(repos)) out.repoBytes[n] = diskUsage(r);

  // Restores of the latest backup, each checked, then removed.
  const restoreTarget = p('restored.img');
  const restores = [
    [
      'lowtide',
      async () => {
        const r = await lowtideRestore(repos.lowtide, restoreTarget);
        out.checks.lowtide = await checkUsedRestore(restoreTarget, image);
        rmSync(restoreTarget, { force: true });
        return r;
      },
    ],
    [
      'lowtideDefault',
      async () => {
        const r = await lowtideRestore(repos.lowtide, restoreTarget, []);
        out.checks.lowtideDefault = await checkUsedRestore(restoreTarget, image);
        rmSync(restoreTarget, { force: true });
        return r;
      },
    ],
    [
      'lowtideAllBlocks',
      async () => {
        const r = await lowtideRestore(repos.lowtideAll, restoreTarget);
        out.checks.lowtideAllBlocks = { identical: sameFiles(image, restoreTarget) };
        rmSync(restoreTarget, { force: true });
        return r;
      },
    ],
    [
      'restic',
      async () => {
        const r = await resticRestore(seriesDir, repos.restic, p('restic-restore'));
        out.checks.restic = { identical: sameFiles(image, r.file) };
        rmSync(p('restic-restore'), { recursive: true, force: true });
        return r;
      },
    ],
    [
      'borg',
      async () => {
        const r = await borgExtract(seriesDir, repos.borg, 'incr', IMAGE_NAME, restoreTarget);
        out.checks.borg = { identical: sameFiles(image, restoreTarget) };
        rmSync(restoreTarget, { force: true });
        return r;
      },
    ],
  ];
  for (const [n, fn] of rotate(restores)) out.restore[n] = await fn();
  console.log(`  restore:     ${show('restore')}`);
  console.log(
    `  repo sizes:  ${Object.entries(out.repoBytes)
      .map(([n, b]) => `${n} ${fmtBytes(b)}`)
      .join(', ')}`,
  );
  const c = out.checks;
  console.log(
    `  checks:      lowtide fsck.fat -n ${c.lowtide.fsckClean ? 'clean' : 'NOT CLEAN'}, metadata + allocated clusters ${c.lowtide.metadataAndAllocatedIdentical ? 'identical' : `DIFFER at ${c.lowtide.firstDifference}`}; ` +
      `default-throttle restore ${c.lowtideDefault.fsckClean && c.lowtideDefault.metadataAndAllocatedIdentical ? 'clean and identical' : 'NOT CLEAN OR DIFFERENT'}; ` +
      `all-blocks ${c.lowtideAllBlocks.identical ? 'identical' : 'DIFFERS'}; restic ${c.restic.identical ? 'identical' : 'DIFFERS'}; borg ${c.borg.identical ? 'identical' : 'DIFFERS'}`,
  );
  out.machineLoad = machineInfo().loadAverage;
  rmSync(seriesDir, { recursive: true, force: true });
  return out;
}

const all = [];
console.log(
  `\n${seriesCount} series on a copy of ${base} (${volGiB} GiB FAT32, ${meta.fileCount} files, ${(meta.usedFraction * 100).toFixed(1)} % of clusters used)`,
);
for (let k = 0; k < seriesCount; k++) {
  console.log(`series ${k + 1}/${seriesCount}:`);
  all.push(await series(k));
}

// ------------------------------------------------------------ summary
const col = (phase, name, field = 'seconds') => all.map((s) => s[phase][name]?.[field] ?? null);
const med = (phase, name, field) => median(col(phase, name, field));
const ratio = (phaseA, a, phaseB, b, field = 'seconds') => pairedMedian(col(phaseA, a, field), col(phaseB, b, field));
const size2 = (name) => median(all.map((s) => s.repoBytes[name]));

const summary = {
  date: new Date().toISOString(),
  bench: 'repo',
  lowtide: snap.version,
  peers: {
    restic: spawnSync('restic', ['version'], { encoding: 'utf8' }).stdout.trim(),
    borg: spawnSync('borg', ['--version'], { encoding: 'utf8' }).stdout.trim(),
  },
  machine: { ...machineInfo(), cachesDropped: isRoot() },
  volume: {
    path: base,
    sizeBytes: size,
    files: meta.fileCount,
    usedFraction: meta.usedFraction,
    clusterSize: meta.geometry.clusterSize,
  },
  series: seriesCount,
  change: all[0].change,
  medians: {
    full: Object.fromEntries(
      ['lowtide', 'lowtideDefault', 'lowtideAllBlocks', 'restic', 'borg'].map((n) => [
        n,
        {
          seconds: med('full', n, 'seconds'),
          jobSeconds: med('full', n, 'jobSeconds'),
          diskReadBytes: med('full', n, 'diskReadBytes'),
          bytesStored: med('full', n, 'bytesStored'),
        },
      ]),
    ),
    incremental: Object.fromEntries(
      ['lowtideChanged', 'lowtideNoChanged', 'lowtideAllBlocksChanged', 'restic', 'borg'].map((n) => [
        n,
        {
          seconds: med('incremental', n, 'seconds'),
          jobSeconds: med('incremental', n, 'jobSeconds'),
          diskReadBytes: med('incremental', n, 'diskReadBytes'),
          bytesStored: med('incremental', n, 'bytesStored'),
        },
      ]),
    ),
    restore: Object.fromEntries(
      ['lowtide', 'lowtideDefault', 'lowtideAllBlocks', 'restic', 'borg'].map((n) => [
        n,
        { seconds: med('restore', n, 'seconds') },
      ]),
    ),
    repoBytes: Object.fromEntries(
      ['lowtide', 'lowtideNoChanged', 'lowtideAll', 'restic', 'borg'].map((n) => [n, size2(n)]),
    ),
  },
  ratios: {
    // Speed ratios: peer seconds / lowtide seconds (> 1: lowtide faster), medians of per-series ratios.
    fullResticOverLowtide: ratio('full', 'restic', 'full', 'lowtide'),
    // The plain command against --throttle off (> 0.8: the default costs little on an idle disk).
    fullLowtideOffOverDefault: ratio('full', 'lowtide', 'full', 'lowtideDefault'),
    restoreLowtideOffOverDefault: ratio('restore', 'lowtide', 'restore', 'lowtideDefault'),
    fullResticOverLowtideDefault: ratio('full', 'restic', 'full', 'lowtideDefault'),
    fullBorgOverLowtideDefault: ratio('full', 'borg', 'full', 'lowtideDefault'),
    fullBorgOverLowtide: ratio('full', 'borg', 'full', 'lowtide'),
    fullResticOverLowtideAllBlocks: ratio('full', 'restic', 'full', 'lowtideAllBlocks'),
    fullBorgOverLowtideAllBlocks: ratio('full', 'borg', 'full', 'lowtideAllBlocks'),
    incrResticOverLowtideChanged: ratio('incremental', 'restic', 'incremental', 'lowtideChanged'),
    incrBorgOverLowtideChanged: ratio('incremental', 'borg', 'incremental', 'lowtideChanged'),
    incrResticOverLowtideNoChanged: ratio('incremental', 'restic', 'incremental', 'lowtideNoChanged'),
    incrBorgOverLowtideNoChanged: ratio('incremental', 'borg', 'incremental', 'lowtideNoChanged'),
    restoreResticOverLowtide: ratio('restore', 'restic', 'restore', 'lowtide'),
    restoreBorgOverLowtide: ratio('restore', 'borg', 'restore', 'lowtide'),
    restoreResticOverLowtideAllBlocks: ratio('restore', 'restic', 'restore', 'lowtideAllBlocks'),
    restoreBorgOverLowtideAllBlocks: ratio('restore', 'borg', 'restore', 'lowtideAllBlocks'),
    // Size ratios: lowtide bytes / peer bytes (< 1: lowtide smaller).
    repoLowtideOverRestic: pairedMedian(
      all.map((s) => s.repoBytes.lowtide),
      all.map((s) => s.repoBytes.restic),
    ),
    repoLowtideOverBorg: pairedMedian(
      all.map((s) => s.repoBytes.lowtide),
      all.map((s) => s.repoBytes.borg),
    ),
    repoLowtideAllOverRestic: pairedMedian(
      all.map((s) => s.repoBytes.lowtideAll),
      all.map((s) => s.repoBytes.restic),
    ),
    repoLowtideAllOverBorg: pairedMedian(
      all.map((s) => s.repoBytes.lowtideAll),
      all.map((s) => s.repoBytes.borg),
    ),
  },
  checks: all.map((s) => ({ series: s.series, ...s.checks })),
  raw: all,
};
const R = summary.ratios;
summary.targets = {
  fullVsRestic: { target: '>= 2x', value: R.fullResticOverLowtide, met: R.fullResticOverLowtide >= 2 },
  fullVsBorg: { target: '>= 2x', value: R.fullBorgOverLowtide, met: R.fullBorgOverLowtide >= 2 },
  incrementalChangedVsRestic: {
    target: '>= 10x',
    value: R.incrResticOverLowtideChanged,
    met: R.incrResticOverLowtideChanged >= 10,
  },
  incrementalChangedVsBorg: {
    target: '>= 10x',
    value: R.incrBorgOverLowtideChanged,
    met: R.incrBorgOverLowtideChanged >= 10,
  },
  repoVsRestic: { target: '<= 1.1x', value: R.repoLowtideOverRestic, met: R.repoLowtideOverRestic <= 1.1 },
  repoVsBorg: { target: '<= 1.1x', value: R.repoLowtideOverBorg, met: R.repoLowtideOverBorg <= 1.1 },
};
summary.allChecksPassed = all.every(
  (s) =>
    s.checks.lowtide.fsckClean &&
    s.checks.lowtide.metadataAndAllocatedIdentical &&
    s.checks.lowtideDefault.fsckClean &&
    s.checks.lowtideDefault.metadataAndAllocatedIdentical &&
    s.checks.lowtideAllBlocks.identical &&
    s.checks.restic.identical &&
    s.checks.borg.identical,
);
summary.runSeconds = (Date.now() - started) / 1000;

const M = summary.medians;
const sec = (x) => (x === null ? '–' : `${x.toFixed(2)} s`);
const x = (v) => `${v.toFixed(2)}x`;
const verdict = (t) => `${t.target}: **${t.met ? 'met' : 'MISSED'}**`;
const T = summary.targets;
const ch = summary.change;
console.log(
  `\n## bench:repo — ${volGiB} GiB FAT32 image, ${(meta.usedFraction * 100).toFixed(1)} % used (free space: old random data), ${meta.fileCount} files; medians of ${seriesCount} series, disk idle and caches dropped before each run`,
);
console.log(
  `change between the backups: ${ch.filesRewritten} files rewritten + ${ch.filesAdded} added (${(changeFraction * 100).toFixed(1)} % of ${ch.fileCount}), ${fmtBytes(ch.bytesRewritten + ch.bytesAdded)} of file data; ${ch.extents} changed extents, ${fmtBytes(ch.changedBytes)} at 64 KiB granularity\n`,
);
console.log(
  '| | lowtide (used blocks) | lowtide --all-blocks | restic | borg | restic ÷ lowtide | borg ÷ lowtide | target |',
);
console.log('|---|---|---|---|---|---|---|---|');
console.log(
  `| full backup | ${sec(M.full.lowtide.seconds)} | ${sec(M.full.lowtideAllBlocks.seconds)} | ${sec(M.full.restic.seconds)} | ${sec(M.full.borg.seconds)} | ${x(R.fullResticOverLowtide)} (all-blocks ${x(R.fullResticOverLowtideAllBlocks)}) | ${x(R.fullBorgOverLowtide)} (all-blocks ${x(R.fullBorgOverLowtideAllBlocks)}) | ${verdict(T.fullVsRestic)} / ${verdict(T.fullVsBorg)} |`,
);
console.log(
  `| full backup, default throttle (no --throttle flag) | ${sec(M.full.lowtideDefault.seconds)} | | | | ${x(R.fullResticOverLowtideDefault)} | ${x(R.fullBorgOverLowtideDefault)} | default ÷ off: ${x(R.fullLowtideOffOverDefault)} (>= 0.8x) |`,
);
console.log(
  `| full: read from disk | ${fmtBytes(M.full.lowtide.diskReadBytes)} | ${fmtBytes(M.full.lowtideAllBlocks.diskReadBytes)} | ${fmtBytes(M.full.restic.diskReadBytes)} | ${fmtBytes(M.full.borg.diskReadBytes)} | | | |`,
);
console.log(
  `| incremental, --changed extents | ${sec(M.incremental.lowtideChanged.seconds)} | ${sec(M.incremental.lowtideAllBlocksChanged.seconds)} | ${sec(M.incremental.restic.seconds)} | ${sec(M.incremental.borg.seconds)} | ${x(R.incrResticOverLowtideChanged)} | ${x(R.incrBorgOverLowtideChanged)} | ${verdict(T.incrementalChangedVsRestic)} / ${verdict(T.incrementalChangedVsBorg)} |`,
);
console.log(
  `| incremental, no extent list | ${sec(M.incremental.lowtideNoChanged.seconds)} | | (same) | (same) | ${x(R.incrResticOverLowtideNoChanged)} | ${x(R.incrBorgOverLowtideNoChanged)} | |`,
);
console.log(
  `| incremental: read from disk | ${fmtBytes(M.incremental.lowtideChanged.diskReadBytes)} (no list: ${fmtBytes(M.incremental.lowtideNoChanged.diskReadBytes)}) | ${fmtBytes(M.incremental.lowtideAllBlocksChanged.diskReadBytes)} | ${fmtBytes(M.incremental.restic.diskReadBytes)} | ${fmtBytes(M.incremental.borg.diskReadBytes)} | | | |`,
);
console.log(
  `| restore latest to a file (+ fsync) | ${sec(M.restore.lowtide.seconds)} | ${sec(M.restore.lowtideAllBlocks.seconds)} | ${sec(M.restore.restic.seconds)} | ${sec(M.restore.borg.seconds)} | ${x(R.restoreResticOverLowtide)} | ${x(R.restoreBorgOverLowtide)} | |`,
);
console.log(
  `| restore, default throttle | ${sec(M.restore.lowtideDefault.seconds)} | | | | | | default ÷ off: ${x(R.restoreLowtideOffOverDefault)} |`,
);
console.log(
  `| repository after both (du -sb) | ${fmtBytes(M.repoBytes.lowtide)} (no list: ${fmtBytes(M.repoBytes.lowtideNoChanged)}) | ${fmtBytes(M.repoBytes.lowtideAll)} | ${fmtBytes(M.repoBytes.restic)} | ${fmtBytes(M.repoBytes.borg)} | lowtide ${x(R.repoLowtideOverRestic)} of restic (all-blocks ${x(R.repoLowtideAllOverRestic)}) | ${x(R.repoLowtideOverBorg)} of borg (all-blocks ${x(R.repoLowtideAllOverBorg)}) | ${verdict(T.repoVsRestic)} / ${verdict(T.repoVsBorg)} |`,
);
const J = (phase, n) => median(col(phase, n, 'jobSeconds'));
console.log(
  `\nlowtide wall time vs its job (reading, hashing, compressing, storing; the rest is process start-up, lock, plan, catalog, commit): ` +
    `full ${sec(M.full.lowtide.seconds)} / job ${sec(J('full', 'lowtide'))}; incremental --changed ${sec(M.incremental.lowtideChanged.seconds)} / job ${sec(J('incremental', 'lowtideChanged'))}; ` +
    `incremental without list ${sec(M.incremental.lowtideNoChanged.seconds)} / job ${sec(J('incremental', 'lowtideNoChanged'))}`,
);
console.log(
  `\nchecks: ${summary.allChecksPassed ? 'all passed' : 'FAILED — see checks in the JSON'} (lowtide restore: fsck.fat -n clean and metadata + allocated clusters identical to the image; all-blocks, restic, borg restores: cmp identical)`,
);
console.log(
  `machine: ${summary.machine.cpus} CPUs, load average ${all.map((s) => s.machineLoad[0].toFixed(1)).join(', ')} after the series (shared with other work); run took ${summary.runSeconds.toFixed(0)} s`,
);

const file = writeResults('repo', summary);
console.log(`written ${file}`);
