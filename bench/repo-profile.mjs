// node bench/repo-profile.mjs — where does a lowtide backup spend its time?
// A diagnostic companion of bench/repo.mjs (not a benchmark against a peer):
// on the same cached FAT32 volume (bench/work/fat32-<N>g.img) it measures, in
// isolation, each stage a backup goes through, with the library's own code:
//   start-up    `node dist/bin/lowtide.cjs --version` (process start + module loading)
//   plan        planImage() (partition table, FAT → allocation map → extents)
//   read        Source.read() of the planned extents, 1 MiB, QD 32, O_DIRECT (caches dropped)
//   hash        native.digest(chunk, zeroCheck) for every chunk, 1 and 6 in flight
//   compress    zstd level 3 (lib/repo/compress.js) for every chunk, 1 and 6 in flight
//   store       writeAtomic() (lib/repo/files.js: temp file, write, fsync, rename) of every
//               compressed chunk into 256 prefix directories, 6 in flight; and the same
//               without the fsync (plain write + rename) for comparison
// then real backups through the CLI: full backups with zstd level 3 and 1
// (alternating), a backup whose chunks are all present already (read + hash
// only), the syscall counts of a full backup (strace -f -c), and an incremental
// with changed extents next to what it does outside its job (process start-up
// cold and warm, planImage, the catalog's directory walk and per-file extents).
//
// Options (environment): BENCH_DIR (default bench/work), BENCH_REPO_GIB (2).
import { spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { mkdir, rename, open } from 'node:fs/promises';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import {
  changedExtents,
  changeFiles,
  dropCaches,
  ensureFatVolume,
  fmtBytes,
  GiB,
  median,
  root,
  snapshotLowtide,
  timed,
} from './fat-volume.mjs';

const dir = process.env.BENCH_DIR ?? join(root, 'bench', 'work');
const volGiB = Number(process.env.BENCH_REPO_GIB ?? 2);
const started = Date.now();
mkdirSync(dir, { recursive: true });
const snap = snapshotLowtide(join(dir, `lowtide-snapshot-${process.pid}`));
const work = join(dir, `repo-profile-${process.pid}`);
const cleanup = () => {
  rmSync(work, { recursive: true, force: true });
  rmSync(snap.dir, { recursive: true, force: true });
};
process.on('exit', cleanup);
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(130));
mkdirSync(work, { recursive: true });

const lib = async (p) => import(pathToFileURL(join(snap.dir, 'dist', p)).href);
const { planImage } = await lib('fs/plan.js');
const { openSource } = await lib('io/source.js');
const { native } = await lib('native.js');
const { compress } = await lib('repo/compress.js');
const { writeAtomic } = await lib('repo/files.js');

const base = join(dir, `fat32-${volGiB}g.img`);
const meta = ensureFatVolume({ image: base, size: volGiB * GiB, seed: 2000 + volGiB });
const image = join(work, 'disk.img');
cpSync(base, image);
const CS = 1 << 20;
const out = { date: new Date().toISOString(), lowtide: snap.version, volume: base };
const now = () => Number(process.hrtime.bigint()) / 1e9;

/** Runs `fn(i)` for i in [0, n) with at most `k` in flight; returns seconds. */
async function pool(n, k, fn) {
  const t0 = now();
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(k, n) }, async () => {
      while (next < n) await fn(next++);
    }),
  );
  return now() - t0;
}

// ---------------------------------------------------------------- start-up
{
  const xs = [];
  for (let i = 0; i < 5; i++) xs.push((await timed(process.execPath, [snap.cli, '--version'])).seconds);
  out.startupSeconds = median(xs);
  console.log(`start-up (node + CLI modules + addon): ${(out.startupSeconds * 1000).toFixed(0)} ms (median of 5)`);
}

// ---------------------------------------------------------------- plan
dropCaches();
let t = now();
const plan = await planImage({ source: image });
out.planSeconds = now() - t;
console.log(
  `planImage: ${(out.planSeconds * 1000).toFixed(0)} ms cold; ${plan.extents.length} extents, ${fmtBytes(plan.bytesToRead)} to read`,
);

// ---------------------------------------------------------------- read into chunks
dropCaches();
const src = await openSource(image, { direct: 'on' });
const chunks = new Map();
t = now();
const reader = src.read(plan.extents, { blockSize: CS, maxBlockSize: CS, queueDepth: 32 });
for await (const b of reader) {
  const i = Math.floor(b.offset / CS);
  let c = chunks.get(i);
  if (!c) chunks.set(i, (c = Buffer.alloc(CS)));
  b.data.copy(c, b.offset - i * CS);
}
out.readSeconds = now() - t;
await src.close();
const list = [...chunks.values()];
const bytes = list.length * CS;
console.log(
  `read: ${fmtBytes(plan.bytesToRead)} in ${out.readSeconds.toFixed(2)} s = ${(plan.bytesToRead / out.readSeconds / 1e6).toFixed(0)} MB/s (${list.length} chunks touched)`,
);

// ---------------------------------------------------------------- hash
const digests = new Array(list.length);
out.hash1Seconds = await pool(list.length, 1, async (i) => {
  digests[i] = await native.digest(list[i], true);
});
out.hash6Seconds = await pool(list.length, 6, async (i) => {
  digests[i] = await native.digest(list[i], true);
});
console.log(
  `hash (SHA-256 + zero check): 1 in flight ${(bytes / out.hash1Seconds / 1e6).toFixed(0)} MB/s, 6 in flight ${(bytes / out.hash6Seconds / 1e6).toFixed(0)} MB/s`,
);

// ---------------------------------------------------------------- compress
const packed = new Array(list.length);
out.zstd1Seconds = await pool(list.length, 1, async (i) => {
  packed[i] = await compress(list[i], 3);
});
out.zstd6Seconds = await pool(list.length, 6, async (i) => {
  packed[i] = await compress(list[i], 3);
});
const packedBytes = packed.reduce((a, p, i) => a + Math.min(p.length, list[i].length), 0);
console.log(
  `zstd -3: 1 in flight ${(bytes / out.zstd1Seconds / 1e6).toFixed(0)} MB/s, 6 in flight ${(bytes / out.zstd6Seconds / 1e6).toFixed(0)} MB/s; ${fmtBytes(bytes)} → ${fmtBytes(packedBytes)}`,
);

// ---------------------------------------------------------------- store
const hexes = digests.map((d, i) => (d ? d.toString('hex') : `zero${i}`));
const body = (i) => (packed[i].length < list[i].length ? packed[i] : list[i]);
const storeInto = async (name, fsync) => {
  const r = join(work, name);
  const tmp = join(r, 'tmp');
  mkdirSync(tmp, { recursive: true });
  for (let p = 0; p < 256; p++) mkdirSync(join(r, 'chunks', p.toString(16).padStart(2, '0')), { recursive: true });
  spawnSync('sync');
  return pool(list.length, 6, async (i) => {
    const hex = hexes[i];
    const final = join(r, 'chunks', hex.slice(0, 2), hex);
    if (fsync) {
      await writeAtomic(tmp, final, [Buffer.alloc(16), body(i)], { syncDirectory: false });
    } else {
      await mkdir(join(r, 'chunks', hex.slice(0, 2)), { recursive: true });
      const tmpPath = join(tmp, `${hex}.tmp`);
      const fh = await open(tmpPath, 'wx');
      await fh.writev([Buffer.alloc(16), body(i)]);
      await fh.close();
      await rename(tmpPath, final);
    }
  });
};
out.storeFsyncSeconds = await storeInto('store-fsync', true);
rmSync(join(work, 'store-fsync'), { recursive: true, force: true });
out.storeNoFsyncSeconds = await storeInto('store-nofsync', false);
t = now();
spawnSync('sync');
out.storeNoFsyncSyncSeconds = now() - t;
rmSync(join(work, 'store-nofsync'), { recursive: true, force: true });
console.log(
  `store ${list.length} chunk files (${fmtBytes(packedBytes)}), 6 in flight: writeAtomic with fsync per chunk ${out.storeFsyncSeconds.toFixed(2)} s (${(list.length / out.storeFsyncSeconds).toFixed(0)} chunks/s); ` +
    `without fsync ${out.storeNoFsyncSeconds.toFixed(2)} s + one sync(1) ${out.storeNoFsyncSyncSeconds.toFixed(2)} s`,
);
chunks.clear();

// ---------------------------------------------------------------- real backups
const cli = (args) => timed(process.execPath, [snap.cli, ...args]);
const backupRun = async (repo, extra = []) => {
  dropCaches();
  const r = await cli(['backup', image, '--repo', repo, '--throttle', 'off', '--json', '--no-progress', ...extra]);
  const m = JSON.parse(r.stdout);
  return { seconds: r.seconds, jobSeconds: m.timing.seconds, id: m.id, stats: m.stats };
};
const fmtRun = (r) => `${r.seconds.toFixed(2)} s wall, job ${r.jobSeconds.toFixed(2)} s`;

// Full backups, zstd level 3 (default) against level 1, alternating.
out.fullByLevel = { 3: [], 1: [] };
for (let i = 0; i < 2; i++) {
  for (const level of [3, 1]) {
    const repo = join(work, `repo-l${level}`);
    rmSync(repo, { recursive: true, force: true });
    await cli(['init', repo, '--zstd-level', String(level), '--json']);
    out.fullByLevel[level].push(await backupRun(repo));
  }
}
console.log(`full backup, zstd -3: ${out.fullByLevel[3].map(fmtRun).join('; ')}`);
console.log(`full backup, zstd -1: ${out.fullByLevel[1].map(fmtRun).join('; ')}`);

// The same backup again without a parent into a repository that has every chunk:
// reading + hashing + one stat per chunk, nothing compressed or written.
const repo = join(work, 'repo-l3');
out.dedupOnly = [await backupRun(repo, ['--no-parent']), await backupRun(repo, ['--no-parent'])];
console.log(
  `backup whose chunks are all in the repository already (read + hash + stat only): ${out.dedupOnly.map(fmtRun).join('; ')}`,
);

// Syscall counts of a full backup (strace slows it down: counts, not times).
const repoS = join(work, 'repo-strace');
await cli(['init', repoS, '--json']);
dropCaches();
const sc = join(work, 'strace-full.txt');
await timed('strace', [
  '-f',
  '-c',
  '-o',
  sc,
  process.execPath,
  snap.cli,
  'backup',
  image,
  '--repo',
  repoS,
  '--throttle',
  'off',
  '--json',
  '--no-progress',
]);
{
  const counts = {};
  for (const line of readFileSync(sc, 'utf8').split('\n')) {
    const m = /^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$/.exec(line);
    if (m) counts[m[2]] = Number(m[1]);
  }
  out.fullSyscallCounts = counts;
  const pick = [
    'fsync',
    'fdatasync',
    'openat',
    'rename',
    'renameat2',
    'statx',
    'newfstatat',
    'mkdir',
    'pwritev',
    'pwrite64',
    'write',
    'io_uring_enter',
    'futex',
  ];
  console.log(
    `full backup syscalls: ${pick
      .filter((k) => counts[k])
      .map((k) => `${k} ${counts[k]}`)
      .join(', ')}`,
  );
}

// Incremental with changed extents: where the time outside the job goes.
const full = out.fullByLevel[3].at(-1);
changeFiles(image, meta, { fraction: 0.01, seed: 77, tmpDir: join(work, 'change-tmp') });
const ext = changedExtents(base, image, 64 * 1024);
const changed = join(work, 'changed.json');
writeFileSync(changed, JSON.stringify(ext));
{
  const cold = [];
  const warm = [];
  for (let i = 0; i < 3; i++) {
    dropCaches();
    cold.push((await cli(['--version'])).seconds);
    warm.push((await cli(['--version'])).seconds);
  }
  out.startupColdSeconds = median(cold);
  out.startupWarmSeconds = median(warm);
  const { openVolume } = await lib('fs/index.js');
  dropCaches();
  let t1 = now();
  const p2 = await planImage({ source: image });
  const planCold = now() - t1;
  t1 = now();
  const vol = await openVolume(image, { partition: p2.partitions[0].index });
  const entries = await vol.files();
  const walk = now() - t1;
  t1 = now();
  let calls = 0;
  for (const e of entries) {
    if (!e.isDirectory && e.size > 0) {
      await vol.fileExtents(e.path);
      calls++;
    }
  }
  const extentsSec = now() - t1;
  vol.close();
  out.catalogWork = {
    planColdSeconds: planCold,
    walkSeconds: walk,
    entries: entries.length,
    fileExtentsCalls: calls,
    fileExtentsSeconds: extentsSec,
  };
  const incRepo = join(work, 'repo-incr');
  cpSync(repo, incRepo, { recursive: true });
  out.incremental = [];
  for (let i = 0; i < 2; i++) {
    const r = join(work, `repo-incr-${i}`);
    cpSync(incRepo, r, { recursive: true });
    out.incremental.push(await backupRun(r, ['--parent', full.id, '--changed', changed]));
  }
  const ms = (x) => `${(x * 1000).toFixed(0)} ms`;
  console.log(
    `incremental --changed (${ext.length} extents): ${out.incremental.map(fmtRun).join('; ')}; read ${fmtBytes(out.incremental[0].stats.bytesRead)}, ${out.incremental[0].stats.chunksNew} new chunks`,
  );
  console.log(
    `  outside the job: start-up ${ms(out.startupColdSeconds)} cold / ${ms(out.startupWarmSeconds)} warm (node + CLI modules + addons); ` +
      `planImage ${ms(planCold)} cold; catalog: directory walk ${ms(walk)} (${entries.length} entries) + ${calls} fileExtents() calls ${ms(extentsSec)}`,
  );
}
out.runSeconds = (Date.now() - started) / 1000;
mkdirSync(join(root, 'bench', 'results'), { recursive: true });
const file = join(root, 'bench', 'results', `repo-profile-${out.date.replace(/[:.]/g, '-')}.json`);
writeFileSync(file, JSON.stringify(out, null, 2) + '\n');
console.log(`written ${file} (${out.runSeconds.toFixed(0)} s)`);
