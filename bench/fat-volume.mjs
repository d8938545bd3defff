// Shared helpers for bench/fat.mjs and bench/repo.mjs: building a realistic,
// half-full, fragmented FAT32 volume image with the real tools (mkfs.fat,
// mtools), changing ~1 % of its files, computing changed extents the way a
// changed-block-tracking bitmap would report them, and running/timing child
// processes (wall time plus the kernel's per-process I/O counters).
//
// Plain ESM, no dependencies beyond node and the Debian tools.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import {
  closeSync,
  cpSync,
  existsSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readFileSync,
  readSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const root = join(dirname(fileURLToPath(import.meta.url)), '..');

/** The built `lowtide` command inside a copy of the package (default: this one), as package.json's "bin" names it. */
export function cliPath(dir = root) {
  return join(dir, JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).bin.lowtide);
}

/** Exits with a hint when the command has not been built. */
export function requireBuiltCli() {
  if (!existsSync(cliPath())) {
    console.error('run `npm run compile` first (dist/ is missing)');
    process.exit(1);
  }
}
export const KiB = 1024;
export const MiB = 1024 ** 2;
export const GiB = 1024 ** 3;

/** Bump when the volume recipe changes: cached volumes of another version are rebuilt. */
export const RECIPE_VERSION = 1;

export const toolEnv = { ...process.env, MTOOLS_SKIP_CHECK: '1', LC_ALL: 'C.UTF-8', LANG: 'C.UTF-8' };
// Timed commands (every tool, lowtide and its peers alike) run with only these
// variables from the bench's environment, plus what each call adds: this
// machine's environment sets NODE_EXTRA_CA_CERTS, which makes every Node
// process read and parse a CA bundle before it runs (~30-40 ms with cold
// caches), a cost of the sandbox that a backup command has no use for.
const TIMED_ENV_KEEP = ['PATH', 'HOME', 'USER', 'LOGNAME', 'TMPDIR', 'TERM'];
export const timedEnv = {
  ...Object.fromEntries(TIMED_ENV_KEEP.filter((k) => process.env[k] !== undefined).map((k) => [k, process.env[k]])),
  MTOOLS_SKIP_CHECK: '1',
  LC_ALL: 'C.UTF-8',
  LANG: 'C.UTF-8',
};

export const median = (xs) => {
  const s = [...xs].filter((x) => x !== null && x !== undefined && !Number.isNaN(x)).sort((a, b) => a - b);
  if (s.length === 0) return null;
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
/** Median of per-round ratios xs[i] / ys[i]. */
export const pairedMedian = (xs, ys) => median(xs.map((x, i) => x / ys[i]));

/** True when `cmd` is on PATH (or in /sbin, /usr/sbin). */
export function hasCommand(cmd) {
  const dirs = [...(process.env.PATH ?? '').split(':'), '/sbin', '/usr/sbin'];
  return dirs.some((d) => d !== '' && existsSync(join(d, cmd)));
}

export function need(bench, cmd, pkg) {
  if (!hasCommand(cmd)) {
    console.error(`${bench} needs ${cmd} (Debian package ${pkg})`);
    process.exit(1);
  }
}

export function isRoot() {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}

function diskSectors() {
  // Sum of sectors read and written, and I/Os in flight, over whole disks.
  let sectors = 0;
  let inFlight = 0;
  for (const line of readFileSync('/proc/diskstats', 'utf8').split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f.length < 14 || !/^(vd[a-z]+|sd[a-z]+|nvme\d+n\d+|xvd[a-z]+)$/.test(f[2])) continue;
    sectors += Number(f[5]) + Number(f[9]);
    inFlight += Number(f[11]);
  }
  return { sectors, inFlight };
}
/**
 * Syncs, then waits (up to 30 s) until the disks have been idle for 2 s. This
 * VM's disk runs slowly for a while after large writes and deletes (the root
 * file system is mounted with `discard`); a timed command started right after
 * one would pay for the previous command's I/O.
 */
export function settleDisk() {
  spawnSync('sync');
  const deadline = Date.now() + 30_000;
  let quietSince = Date.now();
  let last = diskSectors();
  while (Date.now() < deadline && Date.now() - quietSince < 2000) {
    spawnSync('sleep', ['0.25']);
    const now = diskSectors();
    // A few sectors a second from the rest of the machine count as quiet.
    if (now.inFlight > 0 || now.sectors - last.sectors > 2048) quietSince = Date.now();
    last = now;
  }
}
let warnedCaches = false;
/** sync; echo 3 > /proc/sys/vm/drop_caches (root only). */
export function dropCaches() {
  spawnSync('sync');
  try {
    writeFileSync('/proc/sys/vm/drop_caches', '3');
    return true;
  } catch (err) {
    if (!warnedCaches) {
      console.warn(
        `warning: cannot drop caches (${err.code ?? err.message}); peers reading through the page cache are favoured`,
      );
      warnedCaches = true;
    }
    return false;
  }
}

/** A file of `bytes` random bytes at `path`, made with dd unless one of that size is there. */
export function ensureRandomFile(path, bytes, what) {
  if (existsSync(path) && statSync(path).size === bytes) return;
  console.log(`creating ${what}: ${bytes / GiB} GiB of random data in ${path} ...`);
  execFileSync('dd', [
    'if=/dev/urandom',
    `of=${path}`,
    'bs=4M',
    `count=${bytes / (4 << 20)}`,
    'iflag=fullblock',
    'conv=fsync',
    'status=none',
  ]);
}

export function run(cmd, args, opts = {}) {
  return execFileSync(cmd, args, {
    env: toolEnv,
    encoding: 'utf8',
    maxBuffer: 256 << 20,
    stdio: ['ignore', 'pipe', 'pipe'],
    ...opts,
  });
}

function parseProcIo(text) {
  const o = {};
  for (const line of text.split('\n')) {
    const m = /^(\w+): (\d+)$/.exec(line);
    if (m) o[m[1]] = Number(m[2]);
  }
  return o;
}

/**
 * Runs `cmd args` under a small sh wrapper that, after the command ends, dumps
 * its own /proc/self/io: the kernel adds a reaped child's I/O counters to its
 * parent, so read_bytes/write_bytes are those of the command and everything it
 * started (read_bytes = bytes fetched from storage; rchar = bytes passed
 * through read syscalls, page cache hits included).
 * Returns { seconds, stdout, stderr, io }. Throws when the command fails.
 */
export async function timed(cmd, args, { stdinFile, stdoutFile, env, cwd, allowFail = false } = {}) {
  const ioFile = join(root, 'bench', 'work', `.io-${process.pid}-${Math.random().toString(36).slice(2)}.txt`);
  // The shell's own builtins copy /proc/$$/io (the I/O of the command it
  // waited for): an external `cat`, started with cold caches, added a few ms
  // to every timed command.
  const script =
    '"$@"; rc=$?; while IFS= read -r l; do printf \'%s\\n\' "$l"; done < /proc/$$/io > "$IOFILE"; exit $rc';
  const stdio = [
    stdinFile ? openSync(stdinFile, 'r') : 'ignore',
    stdoutFile ? openSync(stdoutFile, 'w') : 'pipe',
    'pipe',
  ];
  const t0 = process.hrtime.bigint();
  const child = spawn('sh', ['-c', script, 'sh', cmd, ...args], {
    env: { ...timedEnv, ...(env ?? {}), IOFILE: ioFile },
    cwd,
    stdio,
  });
  let stdout = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8').on('data', (d) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d) => (stderr += d));
  const code = await new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (c, sig) => resolve(sig ? 128 : c));
  });
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  for (const fd of stdio) if (typeof fd === 'number') closeSync(fd);
  let io = {};
  try {
    io = parseProcIo(readFileSync(ioFile, 'utf8'));
  } catch {
    /* the wrapper died */
  }
  rmSync(ioFile, { force: true });
  if (code !== 0 && !allowFail) {
    throw new Error(`${cmd} ${args.join(' ')} exited with ${code}\n${stderr.slice(-4000)}\n${stdout.slice(-2000)}`);
  }
  return { seconds, stdout, stderr, code, io };
}

/** fsync one file (its data reaches the disk); returns seconds taken. */
export function fsyncFile(path) {
  const t0 = process.hrtime.bigint();
  const fd = openSync(path, 'r+');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

/** du -sb */
export function diskUsage(path) {
  return Number(run('du', ['-sb', path]).split(/\s+/)[0]);
}

/** Allocated bytes of a (sparse) file. */
export function allocatedBytes(path) {
  return Number(
    run('stat', ['-c', '%b*%B', path])
      .trim()
      .split('*')
      .reduce((a, b) => a * Number(b), 1),
  );
}

// ---------------------------------------------------------------- data

/** Seeded xorshift128 stream: fast (~800 MB/s on one core) and reproducible. */
export class Prng {
  constructor(seed) {
    this.s = new Uint32Array([seed >>> 0 || 1, 0x9e3779b9, 0x243f6a88, 0xb7e15162]);
    for (let i = 0; i < 16; i++) this.next();
  }
  next() {
    const s = this.s;
    let t = s[0] ^ (s[0] << 11);
    s[0] = s[1];
    s[1] = s[2];
    s[2] = s[3];
    s[3] = s[3] ^ (s[3] >>> 19) ^ (t ^ (t >>> 8));
    return s[3];
  }
  /** Uniform in [0, 1). */
  random() {
    return this.next() / 4294967296;
  }
  int(lo, hi) {
    return lo + Math.floor(this.random() * (hi - lo + 1));
  }
  /** Log-uniform size in [lo, hi], rounded to 512 bytes (at least 1 byte). */
  logSize(lo, hi) {
    const v = Math.exp(Math.log(lo) + this.random() * (Math.log(hi) - Math.log(lo)));
    return Math.max(1, Math.round(v / 512) * 512 - (this.next() & 511));
  }
  /** Fills `u8` (a Uint8Array whose byteOffset is a multiple of 4 or not). */
  fill(u8) {
    const words = u8.length >>> 2;
    const aligned = (u8.byteOffset & 3) === 0;
    if (aligned && words > 0) {
      const w = new Uint32Array(u8.buffer, u8.byteOffset, words);
      const s = this.s;
      let s0 = s[0],
        s1 = s[1],
        s2 = s[2],
        s3 = s[3];
      for (let i = 0; i < words; i++) {
        const t = s0 ^ (s0 << 11);
        s0 = s1;
        s1 = s2;
        s2 = s3;
        s3 = (s3 ^ (s3 >>> 19) ^ (t ^ (t >>> 8))) >>> 0;
        w[i] = s3;
      }
      s[0] = s0;
      s[1] = s1;
      s[2] = s2;
      s[3] = s3;
    }
    for (let i = aligned ? words * 4 : 0; i < u8.length; i++) u8[i] = this.next() & 0xff;
    return u8;
  }
}

/** A fresh 4-byte-aligned buffer. */
export function alignedBuffer(n) {
  return Buffer.from(new ArrayBuffer(n));
}

/**
 * "Text": printable bytes with ~4.6 bits of entropy each, in lines — zstd -3
 * packs it to about 60 %, like logs, documents or source code.
 */
export function textify(buf) {
  for (let i = 0; i < buf.length; i++) {
    const r = buf[i];
    buf[i] = i % 73 === 72 ? 10 : r < 40 ? 32 : 97 + (r % 26);
  }
  return buf;
}

/** File content of `kind` ('random' | 'text'). */
export function content(prng, size, kind) {
  const b = prng.fill(alignedBuffer(size));
  return kind === 'text' ? textify(b) : b;
}

/** Writes `size` pseudo-random bytes to `path` (4 MiB at a time). */
export function writeRandomFile(path, size, prng) {
  const fd = openSync(path, 'w');
  try {
    const buf = alignedBuffer(4 * MiB);
    for (let done = 0; done < size;) {
      const n = Math.min(buf.length, size - done);
      prng.fill(buf);
      writeSync(fd, buf, 0, n, done);
      done += n;
    }
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

// ---------------------------------------------------------------- FAT tools

export function fsckFat(image) {
  const r = spawnSync('fsck.fat', ['-n', '-v', image], { env: toolEnv, encoding: 'utf8', maxBuffer: 256 << 20 });
  const output = `${r.stdout ?? ''}${r.stderr ?? ''}`;
  const m = /: (\d+) files, (\d+)\/(\d+) clusters/.exec(output);
  const cs = /(\d+) bytes per cluster/.exec(output);
  return {
    clean: r.status === 0,
    status: r.status,
    files: m ? Number(m[1]) : null,
    usedClusters: m ? Number(m[2]) : null,
    totalClusters: m ? Number(m[3]) : null,
    clusterSize: cs ? Number(cs[1]) : null,
    tail: output.split('\n').slice(-6).join('\n'),
  };
}

/** Boot-sector geometry of a FAT32 volume at offset 0 (for our own checks). */
export function fatGeometry(image) {
  const fd = openSync(image, 'r');
  const b = Buffer.alloc(512);
  readSync(fd, b, 0, 512, 0);
  closeSync(fd);
  const bps = b.readUInt16LE(0x0b);
  const spc = b[0x0d];
  const reserved = b.readUInt16LE(0x0e);
  const fats = b[0x10];
  const fatSectors = b.readUInt16LE(0x16) || b.readUInt32LE(0x24);
  const total = b.readUInt16LE(0x13) || b.readUInt32LE(0x20);
  const dataStart = (reserved + fats * fatSectors) * bps; // FAT32: no fixed root directory area
  return {
    bytesPerSector: bps,
    clusterSize: bps * spc,
    reservedBytes: reserved * bps,
    fatCount: fats,
    fatBytes: fatSectors * bps,
    dataOffset: dataStart,
    clusterCount: Math.floor((total * bps - dataStart) / (bps * spc)),
    fsinfoSector: b.readUInt16LE(0x30),
  };
}

/**
 * FAT32: sets FSInfo's next-free hint to "unknown", so mtools searches from
 * cluster 2 and the next files fill the holes deletes left (fragmentation).
 */
export function resetAllocationHint(image) {
  const g = fatGeometry(image);
  if (!g.fsinfoSector || g.fsinfoSector === 0xffff) return;
  const fd = openSync(image, 'r+');
  writeSync(fd, Buffer.from([0xff, 0xff, 0xff, 0xff]), 0, 4, g.fsinfoSector * g.bytesPerSector + 492);
  closeSync(fd);
}

const mt = (image) => ['-i', image];

/** Writes a local tree {dir: [{name, size, kind}]} then copies it into the image with one mcopy -s per top directory group. */
function copyTree(image, tmpDir, files, prng) {
  rmSync(tmpDir, { recursive: true, force: true });
  mkdirSync(tmpDir, { recursive: true });
  const tops = new Set();
  for (const f of files) {
    const local = join(tmpDir, f.path);
    mkdirSync(dirname(local), { recursive: true });
    writeFileSync(local, content(prng, f.size, f.kind));
    tops.add(f.path.split('/')[1]);
  }
  for (const t of tops) run('mcopy', ['-s', '-Q', ...mt(image), join(tmpDir, t), '::/']);
  rmSync(tmpDir, { recursive: true, force: true });
}

function mdelMany(image, paths) {
  for (let i = 0; i < paths.length; i += 200) {
    run('mdel', [...mt(image), ...paths.slice(i, i + 200).map((p) => `::${p}`)]);
  }
}

/**
 * Builds (or reuses, when `image` and its `.json` meta match) a FAT32 volume
 * of `size` bytes, about `fill` full: random bytes first (old data), then
 * mkfs.fat -F 32, then files copied with mtools in two phases with deletes in
 * between so that the second phase fragments into the holes.
 * Returns the meta: file list (path, size, kind), counts, geometry.
 */
export function ensureFatVolume({ image, size, fill = 0.5, seed = 1, sectorsPerCluster, log = console.log }) {
  const metaPath = `${image}.json`;
  if (existsSync(image) && existsSync(metaPath)) {
    try {
      const meta = JSON.parse(readFileSync(metaPath, 'utf8'));
      if (meta.recipe === RECIPE_VERSION && meta.size === size && meta.seed === seed && statSync(image).size === size) {
        log(
          `reusing ${image} (${meta.files.length} files, ${(meta.usedFraction * 100).toFixed(1)} % used, built in ${meta.buildSeconds.toFixed(0)} s)`,
        );
        return meta;
      }
    } catch {
      /* rebuild */
    }
  }
  const t0 = Date.now();
  rmSync(metaPath, { force: true });
  const tmpImage = `${image}.building`;
  const tmpDir = `${image}.tree`;
  const prng = new Prng(seed);
  log(`building ${image}: ${size / GiB} GiB of old data (pseudo-random) ...`);
  writeRandomFile(tmpImage, size, prng);
  const mk = ['-F', '32', '-n', 'BENCH'];
  if (sectorsPerCluster) mk.push('-s', String(sectorsPerCluster));
  run('mkfs.fat', [...mk, tmpImage]);
  const geo = fatGeometry(tmpImage);
  const dataBytes = geo.clusterCount * geo.clusterSize;
  const V = size;
  const files = [];
  const kind = () => (prng.random() < 0.5 ? 'random' : 'text');

  // Phase A: a few large files, medium files in folders of 25, many small ones in folders of 100.
  const phaseA = [];
  [0.06, 0.04, 0.03].forEach((f, i) =>
    phaseA.push({
      path: `/big/large-${i}.bin`,
      size: Math.round((f * V) / 4096) * 4096 + 1234 * i,
      kind: i === 1 ? 'text' : 'random',
    }),
  );
  for (let n = 0, total = 0; total < 0.16 * V; n++) {
    const s = prng.logSize(256 * KiB, 8 * MiB);
    phaseA.push({
      path: `/media/set-${String(Math.floor(n / 25)).padStart(2, '0')}/clip-${n}.dat`,
      size: s,
      kind: kind(),
    });
    total += s;
  }
  for (let n = 0, total = 0; total < 0.02 * V; n++) {
    const s = prng.logSize(512, 128 * KiB);
    phaseA.push({
      path: `/docs/d${String(Math.floor(n / 100)).padStart(3, '0')}/Document number ${n}.txt`,
      size: s,
      kind: kind(),
    });
    total += s;
  }
  log(
    `  phase A: ${phaseA.length} files, ${(phaseA.reduce((a, f) => a + f.size, 0) / MiB).toFixed(0)} MiB (mcopy) ...`,
  );
  copyTree(tmpImage, tmpDir, phaseA, prng);

  // Deletes: one large file, ~30 % of the medium files, ~20 % of the small ones.
  const dels = [];
  for (const f of phaseA) {
    const p = f.path.startsWith('/big/')
      ? f.path.endsWith('-1.bin')
        ? 1
        : 0
      : f.path.startsWith('/media/')
        ? 0.3
        : 0.2;
    if (prng.random() < p) dels.push(f.path);
    else files.push(f);
  }
  log(`  deleting ${dels.length} files (mdel) ...`);
  mdelMany(tmpImage, dels);
  resetAllocationHint(tmpImage);

  // Phase B: fill up to `fill` + 8 % of the data area; these fall into the holes first.
  const used = fsckFat(tmpImage).usedClusters * geo.clusterSize;
  const budget = (fill + 0.08) * dataBytes - used;
  const phaseB = [];
  for (let n = 0, total = 0; total < budget; n++) {
    const small = n % 4 === 3;
    const s = small ? prng.logSize(1024, 256 * KiB) : prng.logSize(64 * KiB, 16 * MiB);
    const rounded = Math.ceil(s / geo.clusterSize) * geo.clusterSize;
    if (total + rounded > budget + geo.clusterSize * 64) break;
    phaseB.push({
      path: `/projects/p${String(Math.floor(n / 40)).padStart(2, '0')}/${small ? 'notes' : 'asset'}-${n}.${small ? 'txt' : 'bin'}`,
      size: s,
      kind: kind(),
    });
    total += rounded;
  }
  log(
    `  phase B: ${phaseB.length} files, ${(phaseB.reduce((a, f) => a + f.size, 0) / MiB).toFixed(0)} MiB into the holes (mcopy) ...`,
  );
  copyTree(tmpImage, tmpDir, phaseB, prng);
  files.push(...phaseB);

  // Phase C: delete files anywhere (not the large ones) down to `fill`, so that
  // free space is scattered over the whole volume, not one block at its end.
  const usedB = fsckFat(tmpImage).usedClusters * geo.clusterSize;
  let excess = usedB - fill * dataBytes;
  const delsC = [];
  while (excess > 0) {
    const k = prng.int(0, files.length - 1);
    const f = files[k];
    if (f.path.startsWith('/big/')) continue;
    files.splice(k, 1);
    delsC.push(f.path);
    excess -= Math.ceil(f.size / geo.clusterSize) * geo.clusterSize;
  }
  log(`  phase C: deleting ${delsC.length} files all over the volume (mdel) ...`);
  mdelMany(tmpImage, delsC);
  dels.push(...delsC);

  const fsck = fsckFat(tmpImage);
  if (!fsck.clean) throw new Error(`fsck.fat -n finds the new volume unclean:\n${fsck.tail}`);
  const fd = openSync(tmpImage, 'r+');
  fsyncSync(fd);
  closeSync(fd);
  rmSync(image, { force: true });
  run('mv', [tmpImage, image]);
  const meta = {
    recipe: RECIPE_VERSION,
    size,
    seed,
    geometry: geo,
    files,
    deleted: dels.length,
    fileCount: files.length,
    directories: new Set(files.map((f) => dirname(f.path))).size,
    fsck: { files: fsck.files, usedClusters: fsck.usedClusters, totalClusters: fsck.totalClusters },
    usedFraction: fsck.usedClusters / fsck.totalClusters,
    buildSeconds: (Date.now() - t0) / 1000,
  };
  writeFileSync(metaPath, JSON.stringify(meta) + '\n');
  log(
    `  done in ${meta.buildSeconds.toFixed(0)} s: ${files.length} files, ${fsck.usedClusters}/${fsck.totalClusters} clusters used (${(meta.usedFraction * 100).toFixed(1)} %), fsck.fat clean`,
  );
  return meta;
}

/**
 * Changes ~`fraction` of the files of `image` with mtools: rewrites that many
 * (chosen among files up to 16 MiB, new content, same size) and adds half as
 * many new ones. Returns what was done.
 */
export function changeFiles(image, meta, { fraction = 0.01, seed = 7, tmpDir }) {
  const prng = new Prng(seed);
  const candidates = meta.files.filter((f) => f.size <= 16 * MiB);
  const nRewrite = Math.max(1, Math.round(fraction * meta.files.length));
  const nAdd = Math.max(1, Math.round((fraction / 2) * meta.files.length));
  const chosen = new Set();
  while (chosen.size < nRewrite) chosen.add(candidates[prng.int(0, candidates.length - 1)]);
  rmSync(tmpDir, { recursive: true, force: true });
  // Group by target directory: mcopy copies many local files into one directory.
  const byDir = new Map();
  let bytesRewritten = 0;
  for (const f of chosen) {
    const d = dirname(f.path);
    if (!byDir.has(d)) byDir.set(d, { local: join(tmpDir, `dir-${byDir.size}`), names: [] });
    const g = byDir.get(d);
    mkdirSync(g.local, { recursive: true });
    const name = f.path.slice(d.length + 1);
    writeFileSync(join(g.local, name), content(prng, f.size, f.kind));
    g.names.push(name);
    bytesRewritten += f.size;
  }
  for (const [d, g] of byDir)
    run('mcopy', ['-o', '-Q', ...mt(image), ...g.names.map((n) => join(g.local, n)), `::${d}/`]);
  const added = [];
  const addDir = join(tmpDir, 'added');
  mkdirSync(addDir, { recursive: true });
  for (let n = 0; n < nAdd; n++) {
    const s = n % 3 === 0 ? prng.logSize(256 * KiB, 8 * MiB) : prng.logSize(1024, 128 * KiB);
    const name = `new file ${n}.dat`;
    writeFileSync(join(addDir, name), content(prng, s, prng.random() < 0.5 ? 'random' : 'text'));
    added.push({ path: `/added/${name}`, size: s });
  }
  run('mcopy', ['-s', '-Q', ...mt(image), addDir, '::/']);
  rmSync(tmpDir, { recursive: true, force: true });
  const fd = openSync(image, 'r+');
  fsyncSync(fd);
  closeSync(fd);
  return {
    filesRewritten: chosen.size,
    bytesRewritten,
    filesAdded: added.length,
    bytesAdded: added.reduce((a, f) => a + f.size, 0),
    fileCount: meta.files.length,
  };
}

/**
 * The extents where `before` and `after` differ, at `granularity` (what a CBT
 * bitmap of that block size reports), merged: [[offset, length], ...].
 */
export function changedExtents(before, after, granularity = 64 * KiB) {
  const size = statSync(after).size;
  if (statSync(before).size !== size) throw new Error('changedExtents: sizes differ');
  const fa = openSync(before, 'r');
  const fb = openSync(after, 'r');
  const step = 8 * MiB;
  const a = Buffer.alloc(step);
  const b = Buffer.alloc(step);
  const out = [];
  try {
    for (let off = 0; off < size; off += step) {
      const n = Math.min(step, size - off);
      readFully(fa, a, n, off);
      readFully(fb, b, n, off);
      for (let p = 0; p < n; p += granularity) {
        const q = Math.min(n, p + granularity);
        if (a.compare(b, p, q, p, q) !== 0) {
          const last = out[out.length - 1];
          if (last && last[0] + last[1] === off + p) last[1] += q - p;
          else out.push([off + p, q - p]);
        }
      }
    }
  } finally {
    closeSync(fa);
    closeSync(fb);
  }
  return out;
}

function readFully(fd, buf, n, pos) {
  for (let done = 0; done < n;) {
    const r = readSync(fd, buf, done, n - done, pos + done);
    if (r === 0) throw new Error('short read');
    done += r;
  }
}

/** Compares [offset, offset+length) ranges of two files; returns the first differing offset or null. */
export function compareRanges(fileA, fileB, ranges) {
  const fa = openSync(fileA, 'r');
  const fb = openSync(fileB, 'r');
  const step = 8 * MiB;
  const a = Buffer.alloc(step);
  const b = Buffer.alloc(step);
  try {
    for (const [offset, length] of ranges) {
      for (let done = 0; done < length; done += step) {
        const n = Math.min(step, length - done);
        readFully(fa, a, n, offset + done);
        readFully(fb, b, n, offset + done);
        if (a.compare(b, 0, n, 0, n) !== 0) {
          for (let i = 0; i < n; i++) if (a[i] !== b[i]) return offset + done + i;
        }
      }
    }
    return null;
  } finally {
    closeSync(fa);
    closeSync(fb);
  }
}

/** cmp -s a b */
export function sameFiles(a, b) {
  return spawnSync('cmp', ['-s', a, b]).status === 0;
}

/**
 * Copies the built lowtide (dist/, the addon, package.json) into `dir`, so that
 * a rebuild by someone else during a long benchmark cannot change what is
 * measured half-way. node_modules is a symlink to the checkout's.
 */
export function snapshotLowtide(dir) {
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(join(dir, 'build', 'Release'), { recursive: true });
  cpSync(join(root, 'dist'), join(dir, 'dist'), { recursive: true });
  cpSync(join(root, 'package.json'), join(dir, 'package.json'));
  symlinkSync(join(root, 'node_modules'), join(dir, 'node_modules'), 'dir');
  const addon = join(root, 'build', 'Release', 'lowtide.node');
  if (existsSync(addon)) cpSync(addon, join(dir, 'build', 'Release', 'lowtide.node'));
  else if (existsSync(join(root, 'prebuilds')))
    cpSync(join(root, 'prebuilds'), join(dir, 'prebuilds'), { recursive: true });
  const head = spawnSync('git', ['-C', root, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).stdout.trim();
  const dirty =
    spawnSync('git', ['-C', root, 'status', '--porcelain', '--', 'lib', 'native'], {
      encoding: 'utf8',
    }).stdout.trim() !== '';
  return {
    dir,
    cli: cliPath(dir),
    version: { commit: head, dirtyWorkingTree: dirty, distBuilt: statSync(cliPath()).mtime.toISOString() },
  };
}

export function fmtBytes(n) {
  if (n === null || n === undefined) return '–';
  if (n >= GiB) return `${(n / GiB).toFixed(2)} GiB`;
  if (n >= MiB) return `${(n / MiB).toFixed(1)} MiB`;
  return `${(n / KiB).toFixed(0)} KiB`;
}

export function machineInfo() {
  const load = readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).map(Number);
  return {
    cpus: Number(run('nproc', []).trim()),
    loadAverage: load,
    kernel: run('uname', ['-r']).trim(),
    node: process.version,
  };
}
