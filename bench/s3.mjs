// npm run bench:s3 — lowtide against restic, both into S3 buckets of one local
// Ceph RADOS Gateway (started here with test/services/ceph-rgw/start.sh and
// stopped at the end), in one run: full backup of the FAT32 image of bench:repo,
// incremental after ~1 % of the files changed, restore of the latest backup;
// then 1 against 4 concurrent lowtide writers (4 different disks of half the
// image's size) into one repository: the throughput ratio.
//
// Options (environment): BENCH_DIR (default bench/work), BENCH_S3_MIB (image
// size, default 2048), BENCH_CHANGE (0.01), BENCH_S3_ONLY=writers (only the
// 1 against 4 writers part) or BENCH_S3_ONLY=restore (one backup of each
// tool, lowtide's with --throttle off, then BENCH_S3_ROUNDS rounds, default
// 3, of the restores: lowtide default, lowtide --throttle off, restic, in
// turn; the table gives the medians, and the CPU-s per GB of image of every
// process). Needs restic, dosfstools, mtools and Ceph
// (ceph-mon ceph-osd radosgw ceph-common curl uuid-runtime).
//
// The writers part also gives the CPU time (user + system) that lowtide,
// radosgw and ceph-osd spent per GB read: on a small machine the gateway
// shares the cores with the writers, and that is what bounds 4 writers.
//
// Every lowtide row runs twice: the plain command (default throttle) and with
// --throttle off. restic always encrypts; when `lowtide init --help` offers
// --encryption, lowtide's repositories are encrypted too (aes-256-gcm, the
// passphrase from LOWTIDE_PASSWORD), and the output says which mode ran.
// Before every timed run the disk settles and caches are dropped (root). The
// restores are checked: restic's is cmp-identical to the image, lowtide's
// (used blocks: free clusters are zeros) passes fsck.fat -n and matches the
// image in its metadata and every allocated cluster.
import { spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import {
  changeFiles,
  compareRanges,
  dropCaches,
  ensureFatVolume,
  fmtBytes,
  fsckFat,
  fsyncFile,
  isRoot,
  machineInfo,
  MiB,
  need,
  requireBuiltCli,
  root,
  sameFiles,
  settleDisk,
  snapshotLowtide,
  timed,
} from './fat-volume.mjs';

const dir = process.env.BENCH_DIR ?? join(root, 'bench', 'work');
const sizeMiB = Number(process.env.BENCH_S3_MIB ?? 2048);
const changeFraction = Number(process.env.BENCH_CHANGE ?? 0.01);
const started = Date.now();
const WRITERS = 4;
/** Each writer's disk: half the image (4 distinct FAT32 volumes, built once and cached like the image). */
const writerMiB = Math.max(64, Math.round(sizeMiB / 2));

for (const [cmd, pkg] of [
  ['mkfs.fat', 'dosfstools'],
  ['fsck.fat', 'dosfstools'],
  ['mcopy', 'mtools'],
  ['restic', 'restic'],
  ['radosgw', 'radosgw'],
  ['ceph-mon', 'ceph-mon'],
  ['ceph-osd', 'ceph-osd'],
  ['cmp', 'diffutils'],
])
  need('bench:s3', cmd, pkg);
requireBuiltCli();
if (!isRoot()) console.warn('warning: not root — caches cannot be dropped');
mkdirSync(dir, { recursive: true });

const work = join(dir, `s3-${process.pid}`);
const rgwDir = join('/var/tmp', `lowtide-bench-rgw-${process.pid}`, 'cluster');
const snap = snapshotLowtide(join(dir, `lowtide-snapshot-${process.pid}`));
const services = join(root, 'test', 'services', 'ceph-rgw');
let rgwEnv;
const cleanup = () => {
  if (rgwEnv) spawnSync('bash', [join(services, 'stop.sh')], { env: rgwEnv, stdio: 'ignore', timeout: 120_000 });
  rmSync(join(rgwDir, '..'), { recursive: true, force: true });
  rmSync(work, { recursive: true, force: true });
  rmSync(snap.dir, { recursive: true, force: true });
};
process.on('exit', cleanup);
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(130));
mkdirSync(work, { recursive: true });
const fsLib = await import(pathToFileURL(join(snap.dir, 'dist', 'fs', 'index.js')).href);

// ------------------------------------------------------------ the gateway
async function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}
mkdirSync(join(rgwDir, '..'), { recursive: true });
let monPort = await freePort();
if (monPort > 65000) monPort = 40000 + (monPort % 20000);
rgwEnv = {
  ...process.env,
  RGW_DIR: rgwDir,
  RGW_PORT: String(await freePort()),
  MON_PORT: String(monPort),
  OSD_SIZE_GB: String(Math.max(8, Math.ceil((sizeMiB * 12) / 1024))),
};
const startRgw = spawnSync('bash', [join(services, 'start.sh')], { env: rgwEnv, encoding: 'utf8', timeout: 300_000 });
if (startRgw.status !== 0) {
  console.error(`bench:s3: Ceph RGW did not start:\n${startRgw.stdout}\n${startRgw.stderr}`);
  process.exit(1);
}
const vars = Object.fromEntries(
  [...readFileSync(join(rgwDir, 'env'), 'utf8').matchAll(/^export (\w+)=(.*)$/gm)].map((m) => [m[1], m[2]]),
);
const endpoint = vars.S3_ENDPOINT;
const awsEnv = {
  AWS_ACCESS_KEY_ID: vars.S3_ACCESS_KEY,
  AWS_SECRET_ACCESS_KEY: vars.S3_SECRET_KEY,
  AWS_REGION: vars.S3_REGION ?? 'us-east-1',
  AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
};
const bucket = 'bench';
{
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  const { S3Client, CreateBucketCommand } = await import('@aws-sdk/client-s3');
  const c = new S3Client({
    endpoint,
    region: awsEnv.AWS_REGION,
    forcePathStyle: true,
    credentials: { accessKeyId: awsEnv.AWS_ACCESS_KEY_ID, secretAccessKey: awsEnv.AWS_SECRET_ACCESS_KEY },
  });
  await c.send(new CreateBucketCommand({ Bucket: bucket }));
  c.destroy();
}

// ------------------------------------------------------------ tools
const initHelp = spawnSync(process.execPath, [snap.cli, 'init', '--help'], { encoding: 'utf8' }).stdout;
const encrypted = initHelp.includes('--encryption');
// A lowtide that has packs makes packed S3 repositories by default (16 MiB packs).
const packed = initHelp.includes('--pack-size');
const ltEnv = { ...awsEnv, LOWTIDE_PASSWORD: 'bench', LOWTIDE_CACHE_DIR: join(work, 'lowtide-cache') };
const lt = (args, opts = {}) =>
  timed(process.execPath, [snap.cli, ...args, '--s3-endpoint', endpoint], { env: ltEnv, ...opts });
let repos = 0;
async function lowtideInit() {
  const url = `s3://${bucket}/lowtide-${repos++}`;
  await lt([
    'init',
    url,
    '--chunk-size',
    '1M',
    '--zstd-level',
    '3',
    ...(encrypted ? ['--encryption', 'aes-256-gcm'] : []),
  ]);
  return url;
}
function beforeTimedRun() {
  settleDisk();
  dropCaches();
}
async function lowtideBackup(url, image, throttle) {
  beforeTimedRun();
  const r = await lt(['backup', image, '--repo', url, ...throttle, '--json', '--no-progress']);
  const m = JSON.parse(r.stdout);
  return { seconds: r.seconds, bytesRead: m.stats.bytesRead, chunksNew: m.stats.chunksNew, id: m.id };
}
/** A backup once the disk has settled and caches were dropped (the caller's beforeTimedRun()). */
async function lowtideBackupSettled(url, image, throttle) {
  const r = await lt(['backup', image, '--repo', url, ...throttle, '--json', '--no-progress']);
  const m = JSON.parse(r.stdout);
  return { seconds: r.seconds, bytesRead: m.stats.bytesRead };
}
async function lowtideRestore(url, target, throttle) {
  rmSync(target, { force: true });
  beforeTimedRun();
  return lowtideRestoreSettled(url, target, throttle);
}
/** A restore (and the fsync of what it wrote) once the caller's beforeTimedRun() ran. */
async function lowtideRestoreSettled(url, target, throttle) {
  const r = await lt(['restore', 'latest', target, '--repo', url, ...throttle, '--json', '--no-progress']);
  const syncSeconds = fsyncFile(target);
  return { seconds: r.seconds + syncSeconds };
}
const resticEnv = { ...awsEnv, RESTIC_PASSWORD: 'bench', RESTIC_CACHE_DIR: join(work, 'restic-cache') };
const resticRepo = `s3:${endpoint}/${bucket}/restic`;
const restic = (args, opts = {}) => timed('restic', ['-r', resticRepo, ...args], { env: resticEnv, ...opts });
async function resticBackup(image) {
  beforeTimedRun();
  const r = await restic(['backup', '--stdin', '--stdin-filename', 'disk.img', '--json'], { stdinFile: image });
  return { seconds: r.seconds };
}
async function resticRestore(targetDir) {
  rmSync(targetDir, { recursive: true, force: true });
  beforeTimedRun();
  return resticRestoreSettled(targetDir);
}
async function resticRestoreSettled(targetDir) {
  const r = await restic(['restore', 'latest', '--target', targetDir]);
  const syncSeconds = fsyncFile(join(targetDir, 'disk.img'));
  return { seconds: r.seconds + syncSeconds, file: join(targetDir, 'disk.img') };
}
async function usedRestoreMatches(restored, image) {
  const v = await fsLib.openVolume(image);
  let ranges;
  try {
    const m = await v.allocationMap();
    ranges = [[0, m.dataOffset], ...m.extents().map((e) => [e.offset, e.length])];
  } finally {
    v.close();
  }
  return fsckFat(restored).clean && compareRanges(image, restored, ranges) === null;
}

// ------------------------------------------------------------ images
const base = join(dir, `fat32-${sizeMiB}m.img`);
const meta = ensureFatVolume({ image: base, size: sizeMiB * MiB, seed: 3000 + sizeMiB });
// The full backups read a copy (the incremental changes it); the writers part only its size.
const image = process.env.BENCH_S3_ONLY === 'writers' ? base : join(work, 'disk.img');
if (image !== base) {
  cpSync(base, image);
  fsyncFile(image);
}
const onlyRestore = process.env.BENCH_S3_ONLY === 'restore';
const disks = [];
for (let i = 0; i < (onlyRestore ? 0 : WRITERS); i++) {
  const p = join(dir, `fat32-${writerMiB}m-writer${i}.img`);
  ensureFatVolume({ image: p, size: writerMiB * MiB, seed: 4000 + 10 * writerMiB + i });
  disks.push(p);
}

// ------------------------------------------------------------ CPU time
const onlyWriters = process.env.BENCH_S3_ONLY === 'writers';
const HZ = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;
/** utime + stime (fields 14, 15) of a process, or cutime + cstime (16, 17): its reaped children's. */
function cpuSeconds(pid, children = false) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const at = children ? 13 : 11; // fields after "pid (comm)", counted from 3
  return (Number(f[at]) + Number(f[at + 1])) / HZ;
}
const daemonPid = (name) => Number(readFileSync(join(rgwDir, 'run', `${name}.pid`), 'utf8').trim());
/** CPU seconds so far: lowtide (every command this process ran and reaped), radosgw, ceph-osd. */
function cpuNow() {
  return {
    lowtide: cpuSeconds(process.pid, true),
    radosgw: cpuSeconds(daemonPid('client.rgw.s3')),
    cephOsd: cpuSeconds(daemonPid('osd.0')),
  };
}
/** CPU seconds per GB read of each process between two cpuNow() readings. */
function cpuPerGB(before, after, bytes) {
  return Object.fromEntries(Object.keys(before).map((k) => [k, (after[k] - before[k]) / (bytes / 1e9)]));
}

// ------------------------------------------------------------ one run
const MODES = { default: [], off: ['--throttle', 'off'] };
const out = { full: {}, incremental: {}, restore: {}, writers: {}, checks: {} };
const urls = {};
let change; // the files changed for the incremental
const logPhase = (phase) =>
  console.log(
    `${phase}:`,
    Object.entries(out[phase])
      .map(([n, r]) => `${n} ${r.seconds.toFixed(2)} s`)
      .join(', '),
  );
if (onlyRestore) await restoresOnly();
else if (!onlyWriters) await fullIncrementalRestore();
async function fullIncrementalRestore() {
  for (const [mode, throttle] of Object.entries(MODES)) {
    urls[mode] = await lowtideInit();
    out.full[`lowtide ${mode}`] = await lowtideBackup(urls[mode], image, throttle);
  }
  await restic(['init']);
  out.full.restic = await resticBackup(image);
  logPhase('full');

  change = changeFiles(image, meta, { fraction: changeFraction, seed: 77, tmpDir: join(work, 'change') });
  for (const [mode, throttle] of Object.entries(MODES))
    out.incremental[`lowtide ${mode}`] = await lowtideBackup(urls[mode], image, throttle);
  out.incremental.restic = await resticBackup(image);
  logPhase('incremental');

  const target = join(work, 'restored.img');
  for (const [mode, throttle] of Object.entries(MODES)) {
    out.restore[`lowtide ${mode}`] = await lowtideRestore(urls[mode], target, throttle);
    out.checks[`lowtide ${mode}`] = await usedRestoreMatches(target, image);
    rmSync(target, { force: true });
  }
  const rr = await resticRestore(join(work, 'restic-restore'));
  out.restore.restic = { seconds: rr.seconds };
  out.checks.restic = sameFiles(rr.file, image);
  rmSync(join(work, 'restic-restore'), { recursive: true, force: true });
  logPhase('restore');
}

/** One backup of each tool, then rounds of the three restores in turn; medians in out.restore. */
async function restoresOnly() {
  const url = await lowtideInit();
  await lowtideBackup(url, image, MODES.off);
  await restic(['init']);
  await resticBackup(image);
  const rounds = Number(process.env.BENCH_S3_ROUNDS ?? 3);
  const target = join(work, 'restored.img');
  const runs = {};
  const record = (name, seconds, before) => {
    const cpu = cpuPerGB(before, cpuNow(), statSync(image).size);
    (runs[name] ??= []).push({ seconds, cpuSecondsPerGB: cpu });
    return `${name} ${seconds.toFixed(2)} s (CPU-s/GB: client ${cpu.lowtide.toFixed(2)}, radosgw ${cpu.radosgw.toFixed(2)}, ceph-osd ${cpu.cephOsd.toFixed(2)})`;
  };
  for (let i = 0; i < rounds; i++) {
    const line = [];
    for (const [mode, throttle] of Object.entries(MODES)) {
      rmSync(target, { force: true });
      beforeTimedRun();
      const c = cpuNow();
      const r = await lowtideRestoreSettled(url, target, throttle);
      line.push(record(`lowtide ${mode}`, r.seconds, c));
      out.checks[`lowtide ${mode} #${i + 1}`] = await usedRestoreMatches(target, image);
      rmSync(target, { force: true });
    }
    const dirR = join(work, 'restic-restore');
    rmSync(dirR, { recursive: true, force: true });
    beforeTimedRun();
    const c = cpuNow();
    const rr = await resticRestoreSettled(dirR);
    line.push(record('restic', rr.seconds, c));
    out.checks[`restic #${i + 1}`] = sameFiles(rr.file, image);
    rmSync(dirR, { recursive: true, force: true });
    console.log(`restore round ${i + 1}: ${line.join('; ')}`);
  }
  const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  for (const [name, rs] of Object.entries(runs))
    out.restore[name] = { seconds: median(rs.map((r) => r.seconds)), runs: rs };
}

// 1 writer, then 4 at once (different disks), each into a fresh repository.
for (const [mode, throttle] of onlyRestore ? [] : Object.entries(MODES)) {
  const one = await lowtideInit();
  beforeTimedRun();
  const c1 = cpuNow();
  const r1 = await lowtideBackupSettled(one, disks[0], throttle);
  const oneCpu = cpuPerGB(c1, cpuNow(), r1.bytesRead);
  const many = await lowtideInit();
  beforeTimedRun();
  const c4 = cpuNow();
  const t0 = process.hrtime.bigint();
  const rs = await Promise.all(
    disks.map((d) => lt(['backup', d, '--repo', many, ...throttle, '--json', '--no-progress'])),
  );
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const bytes = rs.reduce((n, r) => n + JSON.parse(r.stdout).stats.bytesRead, 0);
  const manyCpu = cpuPerGB(c4, cpuNow(), bytes);
  out.writers[mode] = {
    oneSeconds: r1.seconds,
    oneMBps: r1.bytesRead / 1e6 / r1.seconds,
    manySeconds: seconds,
    manyMBps: bytes / 1e6 / seconds,
    cpuSecondsPerGB: { one: oneCpu, many: manyCpu },
  };
  out.writers[mode].ratio = out.writers[mode].manyMBps / out.writers[mode].oneMBps;
  const cpu = (c) =>
    `lowtide ${c.lowtide.toFixed(1)}, radosgw ${c.radosgw.toFixed(1)}, ceph-osd ${c.cephOsd.toFixed(1)} CPU-s/GB`;
  console.log(
    `writers (${mode}): 1 → ${out.writers[mode].oneMBps.toFixed(1)} MB/s (${cpu(oneCpu)}), ${WRITERS} → ${out.writers[mode].manyMBps.toFixed(1)} MB/s (${cpu(manyCpu)})`,
  );
}

// ------------------------------------------------------------ report
const x = (v) => `${v.toFixed(2)}x`;
const s = (v) => `${v.toFixed(2)} s`;
const ratio = (phase, mode) => out[phase].restic.seconds / out[phase][`lowtide ${mode}`].seconds;
const summary = {
  bench: 's3',
  date: new Date().toISOString(),
  imageBytes: statSync(image).size,
  files: meta.fileCount,
  change: { ...change, fraction: changeFraction },
  lowtideEncrypted: encrypted,
  lowtidePacked: packed,
  lowtide: snap.version,
  restic: spawnSync('restic', ['version'], { encoding: 'utf8' }).stdout.trim(),
  machine: machineInfo(),
  results: out,
  runSeconds: (Date.now() - started) / 1000,
};
console.log(
  `\n## bench:s3 — ${fmtBytes(summary.imageBytes)} FAT32 image (${meta.fileCount} files, ${(meta.usedFraction * 100).toFixed(1)} % used) into S3 buckets of one local Ceph RGW; ${onlyRestore ? `restores: the median of ${process.env.BENCH_S3_ROUNDS ?? 3} rounds` : 'one run'}`,
);
console.log(
  `lowtide ${encrypted ? 'encrypted (aes-256-gcm), as restic always is' : 'NOT encrypted (this lowtide has no --encryption); restic encrypts'}; ${packed ? 'lowtide chunks in 16 MiB packs' : 'one lowtide object per chunk'}; lowtide reads used blocks only, restic the whole image (--stdin)\n`,
);
console.log('| | lowtide (default) | lowtide --throttle off | restic | restic ÷ lowtide (default / off) | target |');
console.log('|---|---|---|---|---|---|');
for (const phase of onlyWriters ? [] : onlyRestore ? ['restore'] : ['full', 'incremental', 'restore']) {
  const r = out[phase];
  const d = ratio(phase, 'default');
  const o = ratio(phase, 'off');
  console.log(
    `| ${phase} | ${s(r['lowtide default'].seconds)} | ${s(r['lowtide off'].seconds)} | ${s(r.restic.seconds)} | ${x(d)} / ${x(o)} | >= 2x: ${Math.min(d, o) >= 2 ? 'met' : 'MISSED'} |`,
  );
}
for (const mode of onlyRestore ? [] : Object.keys(MODES)) {
  const w = out.writers[mode];
  console.log(
    `| ${WRITERS} writers vs 1 (${mode}) | 1: ${w.oneMBps.toFixed(1)} MB/s | ${WRITERS}: ${w.manyMBps.toFixed(1)} MB/s | | ${x(w.ratio)} | >= 1.5x: ${w.ratio >= 1.5 ? 'met' : 'MISSED'} |`,
  );
}
const ok = Object.values(out.checks).every(Boolean);
console.log(
  `\nchecks: ${ok ? 'all passed' : 'FAILED'} (lowtide restores: fsck.fat -n clean, metadata and allocated clusters identical; restic: cmp identical)`,
);
console.log(
  `machine: ${summary.machine.cpus} CPUs, load ${summary.machine.loadAverage.join(' ')} (shared); run took ${summary.runSeconds.toFixed(0)} s`,
);
mkdirSync(join(root, 'bench', 'results'), { recursive: true });
const file = join(root, 'bench', 'results', `s3-${summary.date.replace(/[:.]/g, '-')}.json`);
writeFileSync(file, JSON.stringify(summary, null, 2) + '\n');
console.log(`written ${file}`);
if (!ok) process.exitCode = 1;
