// npm run bench:impact — the headline benchmark: how much a lowtide
// read hurts a production workload on the same disk, and how much it reads.
//
// Production: fio, 4 KiB random 70/30 read/write, iodepth 4, io_uring,
// O_DIRECT, on its own file, with every I/O's latency logged (a per-I/O lat
// log on tmpfs, Unix-epoch timestamps: exact per-interval p99 and IOPS; fio's
// own docs warn that percentiles from log_avg_msec averages are wrong).
// lowtide: bench/impact-driver.mjs in its own process, reading a separate
// 4 GiB file with O_DIRECT through openSource().read() under a JobThrottle,
// consuming the blocks without writing them (read impact only).
//
// Scenarios, in one run: production alone; lowtide unthrottled; each
// controller with `latencyTarget: 'auto'`; fixed rate caps; and a phased
// production load (fio jobs on for P s, off for P s) with the default
// controller and the fixed caps. Then two blocks where lowtide also writes
// what it reads to a file on the same disk (as `lowtide image` does), the
// default against unthrottled: idle (no production at all) and light
// (fio 4 KiB random reads, QD 1, rate-limited to BENCH_LIGHT_IOPS). Production alone and the default controller
// run BENCH_REPEATS times per block (first/last and interleaved), each fixed
// cap BENCH_RATE_REPEATS times.
//
// How harm is measured: in every scenario lowtide runs 2 s, is stopped
// (SIGSTOP) 2 s, runs again, ... and production's p99 while lowtide ran is
// divided by its p99 while lowtide was stopped, in the same fio run (250 ms
// after each switch are left out). The disk's own speed drifts several-fold
// between scenarios and within one, so any baseline from another run or
// another minute measures the drift. The 'alone' rows get the same split
// with nothing to stop: their ratio is the noise of the method. A key's
// ratio is the median of its runs; lowtide's MB/s are while it ran.
//
// Targets: with the default controller, production p99 within 1.5x of its
// p99 alone, and lowtide >= 90 % of the throughput of the best fixed rate
// that meets the same bound; under the phased load, lowtide (default
// controller) beats every fixed rate that meets the bound; idle, the default
// moves >= 0.8x of unthrottled; under the light load, production p99 within
// 1.5x alone and the default moves >= 0.5x of what it moves idle. The light
// block also runs a peer at that target's throughput: fio writing a new file
// sequentially (O_DIRECT, 1 MiB, 4 in flight) at half of what the default
// moved idle in this run, toggled like lowtide. When the peer breaks the bound
// too, no writer at that rate keeps it on this disk.
//
// Output: a table and verdicts on stdout, bench/results/impact-<date>.json,
// bench/results/impact-latest.svg (and .png when ImageMagick or rsvg-convert
// is installed).
//
// Options (environment):
//   BENCH_SECONDS (24)        time per scenario (lowtide on half of it, see BENCH_TOGGLE_SECONDS)
//   BENCH_TOGGLE_SECONDS (2)  lowtide runs this long, then is stopped (SIGSTOP) as long, and so on
//   BENCH_WARMUP_SECONDS (2)  production alone before lowtide starts (not measured)
//   BENCH_INTERVAL_MS (250)   time series resolution
//   BENCH_RATES (25,50,100,200,400)  fixed caps in MB/s (10^6 B/s)
//   BENCH_PHASE_SECONDS (3)   phased load: on for this long, then off as long
//   BENCH_REPEATS (6)         runs of 'alone' and of the default controller per block (single
//                            runs of the default ranged 1.1-2.6x on the phased load: 3 were too few)
//   BENCH_RATE_REPEATS (3)    runs of each fixed rate (one run of 50 MB/s measured 1.07x in one
//                            run and 1.50x in the next)
//   BENCH_LATENCY_TARGET (auto)  the controllers' latencyTarget (ms or auto)
//   BENCH_AUTO_RULE           experiments: '{"multiplier":1,"floorPercentile":null}' replaces the
//                             auto-target rule (the driver probes and passes a fixed target)
//   BENCH_ONLY                a regular expression: run only matching scenarios (plus alone in their blocks)
//   BENCH_SMALL_REPEATS (3)   runs of the default and of unthrottled in the idle and light blocks
//   BENCH_LIGHT_IOPS (200)    the light load's rate (fio --rate_iops)
//   BENCH_LIGHT_RATES         comma list of fixed caps (MB/s) to run in the light block too
//   BENCH_LIGHT_RATE_SHAPE    JSON merged into those runs' settings, e.g. '{"blockSize":131072,"queueDepth":2}'
//                             (driver experiments: "directOutput":true writes O_DIRECT, "writesInFlight":N)
//   BENCH_LIGHT_RATE_WRITES   0: those runs read only (default: they write, as the light block's others)
//   BENCH_LIGHT_PEER_MBPS     the light block's fio peer writes at this rate (MB/s) instead of half of
//                             the idle default's (700 when the idle block did not run)
//   BENCH_PROBE_MS            comma list of canary probe intervals (ms): each run of the default
//                             controller becomes one run per interval, named canary@<ms>ms
//   BENCH_CANARY_VARIANTS     ';'-separated JSON canary tuning overrides, e.g. '{"factor":1.15};{}':
//                             like BENCH_PROBE_MS, each run of the default becomes one run of each
//                             (a "minBlockSize" key sets the job's smallest request instead)
//   BENCH_CHART_FROM=FILE     print the table and verdicts of a saved JSON and redraw its chart
//                             (to FILE with .svg, or to BENCH_CHART_OUT)
//                             (runs with BENCH_ONLY/BENCH_AUTO_RULE/BENCH_LATENCY_TARGET are
//                             experiments: their chart is impact-<date>.svg, not impact-latest.svg)
//   BENCH_DRY                 print the scenario list and exit
//   BENCH_DIR (bench/work), BENCH_SRC_GIB (4), BENCH_PROD_GIB (1), BENCH_BOUND (1.5)
import { spawn, spawnSync } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { createInterface } from 'node:readline';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { ensureRandomFile } from './fat-volume.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const env = process.env;
const num = (k, d) => {
  const v = env[k] === undefined || env[k] === '' ? d : Number(env[k]);
  if (!Number.isFinite(v) || v <= 0) {
    console.error(`${k}: expected a positive number, got ${env[k]}`);
    process.exit(2);
  }
  return v;
};
const SECONDS = num('BENCH_SECONDS', 24);
// lowtide runs TOGGLE s, is stopped (SIGSTOP) TOGGLE s, and so on: production's
// p99 while lowtide runs is compared with its p99 while lowtide is stopped,
// in the same fio run, interleaved, so that the disk's drift hits both.
const TOGGLE = num('BENCH_TOGGLE_SECONDS', 2);
const SETTLE_MS = 250; // after each switch, left out of both sides
const WARMUP = num('BENCH_WARMUP_SECONDS', 2);
const INTERVAL_MS = num('BENCH_INTERVAL_MS', 250);
const PHASE = num('BENCH_PHASE_SECONDS', 3);
const REPEATS = Math.max(1, Math.round(num('BENCH_REPEATS', 6)));
const RATE_REPEATS = Math.max(1, Math.round(num('BENCH_RATE_REPEATS', 3)));
const BOUND = num('BENCH_BOUND', 1.5);
const SRC_GIB = num('BENCH_SRC_GIB', 4);
const PROD_GIB = num('BENCH_PROD_GIB', 1);
// Runs of each scenario of the idle and light blocks (default and unthrottled, interleaved).
const SMALL_REPEATS = Math.max(1, Math.round(num('BENCH_SMALL_REPEATS', 3)));
const LIGHT_IOPS = num('BENCH_LIGHT_IOPS', 200);
const RATES = (env.BENCH_RATES ?? '25,50,100,200,400')
  .split(',')
  .map((s) => Number(s.trim()))
  .filter((x) => x > 0);
// Fixed caps (MB/s) also run in the light block, writing: where the bound lies under a light load.
const LIGHT_RATES = (env.BENCH_LIGHT_RATES ?? '')
  .split(',')
  .map((s) => Number(s.trim()))
  .filter((x) => x > 0);
// Experiments: settings merged into those light-block fixed rates (e.g. '{"blockSize":131072,"queueDepth":2}'),
// and BENCH_LIGHT_RATE_WRITES=0 to run them reading only.
const LIGHT_RATE_SHAPE = env.BENCH_LIGHT_RATE_SHAPE ? JSON.parse(env.BENCH_LIGHT_RATE_SHAPE) : {};
const LIGHT_RATE_WRITES = env.BENCH_LIGHT_RATE_WRITES !== '0';
const LIGHT_PEER_MBPS = env.BENCH_LIGHT_PEER_MBPS ? num('BENCH_LIGHT_PEER_MBPS', 700) : undefined;
// MB/s of each idle run of the default so far: the light block's peer writes at half their mean.
const idleDefaultMBps = [];
const TARGET =
  env.BENCH_LATENCY_TARGET && env.BENCH_LATENCY_TARGET !== 'auto' ? Number(env.BENCH_LATENCY_TARGET) : 'auto';
const CHART_FROM = env.BENCH_CHART_FROM; // re-render table, verdicts and chart from a saved JSON
const EXPERIMENT = Boolean(
  env.BENCH_ONLY || env.BENCH_AUTO_RULE || env.BENCH_LATENCY_TARGET || env.BENCH_PROBE_MS || env.BENCH_CANARY_VARIANTS,
);
const AUTO_RULE = env.BENCH_AUTO_RULE ? JSON.parse(env.BENCH_AUTO_RULE) : undefined;
const ONLY = env.BENCH_ONLY ? new RegExp(env.BENCH_ONLY) : undefined;
const PROBE_MS = env.BENCH_PROBE_MS
  ? env.BENCH_PROBE_MS.split(',')
      .map((x) => Number(x.trim()))
      .filter((x) => x > 0)
  : undefined;
// ';'-separated JSON objects of canary tuning, e.g. '{"factor":1.15};{}' ({} = the library's defaults).
const CANARY_VARIANTS = env.BENCH_CANARY_VARIANTS
  ? env.BENCH_CANARY_VARIANTS.split(';').map((x) => JSON.parse(x.trim()))
  : undefined;
const dir = env.BENCH_DIR ?? join(root, 'bench', 'work');
const resultsDir = join(root, 'bench', 'results');
const GiB = 1024 ** 3;
const TAIL = 1; // s of production after lowtide stops, so that the window is fully covered

// ---------------------------------------------------------------- processes
// Every child is tracked by PID and killed on any exit path.
const children = new Set(); // { proc, group }
let shmDir;
function killChild(c, sig = 'SIGKILL') {
  if (c.proc.exitCode !== null || c.proc.signalCode !== null) return;
  try {
    if (c.group)
      process.kill(-c.proc.pid, sig); // fio runs in its own process group
    else process.kill(c.proc.pid, sig);
  } catch {
    /* already gone */
  }
}
/**
 * Removes what a writing run wrote and waits until the disk has done with it,
 * outside every measured window. Freeing a 4 GiB file costs the disk seconds
 * of work (on a file system mounted with `discard`, the discards of every
 * freed block at the next journal commit; elsewhere the metadata), which
 * would otherwise land at the start of the next run as if its lowtide caused
 * it. Each writing run then writes a new file, as `lowtide image` does.
 */
async function dropOutput() {
  rmSync(outFile, { force: true });
  spawnSync('sync', ['-f', dir], { stdio: 'ignore' });
  await sleep(1000);
}

function cleanup() {
  for (const c of children) killChild(c);
  children.clear();
  rmSync(outFile, { force: true });
  if (shmDir) rmSync(shmDir, { recursive: true, force: true });
}
process.on('exit', cleanup);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => {
    console.error(`\n${sig}: stopping fio and the lowtide driver`);
    cleanup();
    process.exit(130);
  });
}
function track(proc, group) {
  const c = { proc, group };
  children.add(c);
  const done = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
  done.then(() => children.delete(c));
  return { c, done };
}

// ---------------------------------------------------------------- checks and files
function need(cmd, pkg) {
  if (spawnSync('sh', ['-c', 'command -v "$1"', 'sh', cmd], { stdio: 'ignore' }).status !== 0) {
    console.error(`bench:impact needs ${cmd} (Debian package ${pkg})`);
    process.exit(1);
  }
}
const have = (cmd) => spawnSync('sh', ['-c', 'command -v "$1"', 'sh', cmd], { stdio: 'ignore' }).status === 0;
if (!CHART_FROM) {
  need('fio', 'fio');
  need('dd', 'coreutils');
}
for (const f of ['dist/index.js', 'dist/throttle/job-throttle.js', 'dist/throttle/job-settings.js']) {
  if (!existsSync(join(root, f))) {
    console.error(`${f} is missing: run \`npx tsc -p tsconfig.json\` (and build the addon) first`);
    process.exit(1);
  }
}
mkdirSync(dir, { recursive: true });
const srcFile = join(dir, `impact-src-${SRC_GIB}g.bin`);
const prodFile = join(dir, `impact-prod-${PROD_GIB}g.bin`);
// Where lowtide writes what it reads in the idle and light blocks: the same disk.
const outFile = join(dir, 'impact-out.bin');
if (!CHART_FROM) {
  ensureRandomFile(srcFile, SRC_GIB * GiB, 'the source lowtide reads');
  ensureRandomFile(prodFile, PROD_GIB * GiB, "production's file");
}
if (!CHART_FROM) shmDir = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'lowtide-impact-'));

// ---------------------------------------------------------------- statistics
const quantile = (sorted, q) =>
  sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] : null;
const mean = (xs) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : null);
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length === 0 ? null : s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

/** Production's I/O in [t0, t1): overall and per interval, from fio's per-I/O lat logs. */
/** Every non-empty line of fio's per-I/O lat logs in logDir. */
function* latLogLines(logDir) {
  for (const f of readdirSync(logDir).filter((n) => /_lat\.\d+\.log$/.test(n))) {
    const text = readFileSync(join(logDir, f), 'utf8');
    let pos = 0;
    while (pos < text.length) {
      let nl = text.indexOf('\n', pos);
      if (nl < 0) nl = text.length;
      const line = text.slice(pos, nl);
      pos = nl + 1;
      if (line) yield line;
    }
  }
}

function analyseProduction(logDir, t0, t1) {
  const all = [];
  const reads = [];
  const writes = [];
  const nBins = Math.max(1, Math.ceil((t1 - t0) / INTERVAL_MS));
  const bins = Array.from({ length: nBins }, () => []);
  let firstT = Infinity;
  for (const line of latLogLines(logDir)) {
    const [ts, vs, ds] = line.split(', ');
    const t = Number(ts);
    if (t < firstT) firstT = t;
    if (t < t0 || t >= t1) continue;
    const lat = Number(vs) / 1e3; // µs
    all.push(lat);
    (ds === '1' ? writes : reads).push(lat);
    bins[Math.min(nBins - 1, Math.floor((t - t0) / INTERVAL_MS))].push(lat);
  }
  const sortNum = (a) => Float64Array.from(a).sort();
  const s = sortNum(all);
  const seconds = (t1 - t0) / 1e3;
  return {
    fioStartMs: Number.isFinite(firstT) ? firstT : null,
    ios: s.length,
    iops: s.length / seconds,
    p50Us: quantile(s, 0.5),
    p99Us: quantile(s, 0.99),
    p999Us: quantile(s, 0.999),
    maxUs: s.length ? s[s.length - 1] : null,
    readP99Us: quantile(sortNum(reads), 0.99),
    writeP99Us: quantile(sortNum(writes), 0.99),
    intervals: bins.map((b, i) => {
      const x = sortNum(b);
      const ms = Math.min(INTERVAL_MS, t1 - t0 - i * INTERVAL_MS);
      return {
        t: (i * INTERVAL_MS) / 1e3,
        iops: x.length / (ms / 1e3),
        p50Us: quantile(x, 0.5),
        p99Us: quantile(x, 0.99),
      };
    }),
  };
}

// ---------------------------------------------------------------- one scenario
function fioArgs(logPrefix, outJson, load, runtimeS) {
  const phased = load === 'phased';
  // The light load: 4 KiB random reads, one at a time, LIGHT_IOPS a second.
  const light = load === 'light';
  const args = [
    '--thread',
    `--filename=${prodFile}`,
    `--size=${PROD_GIB}G`,
    ...(light
      ? ['--rw=randread', `--rate_iops=${LIGHT_IOPS}`, '--iodepth=1']
      : ['--rw=randrw', '--rwmixread=70', '--iodepth=4']),
    '--bs=4k',
    '--ioengine=io_uring',
    '--direct=1',
    '--time_based',
    '--norandommap',
    '--disable_slat=1',
    '--disable_clat=1',
    '--log_unix_epoch=1',
    `--write_lat_log=${logPrefix}`,
    '--output-format=json',
    `--output=${outJson}`,
  ];
  if (!phased) return [...args, '--name=prod', `--runtime=${Math.ceil(runtimeS * 1000)}ms`];
  // Phased load: one fio job per burst, each starting at k·2P and running P
  // seconds: exact, deterministic on/off phases.
  for (let k = 0; 2 * k * PHASE < runtimeS; k++) {
    const start = 2 * k * PHASE;
    const len = Math.min(PHASE, runtimeS - start);
    args.push(
      `--name=burst${k}`,
      `--startdelay=${Math.round(start * 1000)}ms`,
      `--runtime=${Math.round(len * 1000)}ms`,
    );
  }
  return args;
}

function readLines(stream, onLine) {
  const rl = createInterface({ input: stream });
  rl.on('line', onLine);
}

/**
 * From t0 to t0 + SECONDS: lowtide on for TOGGLE s, stopped (SIGSTOP) for
 * TOGGLE s, ... (proc null: production alone, the same windows for the
 * record). Returns the on and off windows, epoch ms [start, end).
 */
async function toggle(proc, t0) {
  const on = [];
  const off = [];
  const end = t0 + SECONDS * 1000;
  for (let k = 0, a = t0; a < end; k++, a += TOGGLE * 1000) {
    const b = Math.min(end, a + TOGGLE * 1000);
    const running = k % 2 === 0;
    if (proc && k > 0) {
      try {
        process.kill(proc.pid, running ? 'SIGCONT' : 'SIGSTOP');
      } catch {
        /* ended */
      }
    }
    (running ? on : off).push([a, b]);
    await sleep(Math.max(0, b - Date.now()));
  }
  if (proc) {
    try {
      process.kill(proc.pid, 'SIGCONT');
    } catch {
      /* ended */
    }
  }
  return { on, off };
}

const onSeconds = (windows, tStop) => windows.reduce((s, [a, b]) => s + Math.max(0, Math.min(b, tStop) - a), 0) / 1e3;

/**
 * Production's latency over named sets of windows (epoch ms), each window shortened by `skipMs`
 * at its start; one pass over the fio lat logs for all sets.
 */
function analyseWindows(logDir, sets, skipMs) {
  const names = Object.keys(sets);
  const samples = names.map(() => []);
  const inWindow = (windows, t) => windows.some(([a, b]) => t >= a + skipMs && t < b);
  // The same fio lat logs analyseProduction() reads: "time, latency ns, dir, ...".
  for (const line of latLogLines(logDir)) {
    const c1 = line.indexOf(', ');
    const t = Number(line.slice(0, c1));
    const k = names.findIndex((n) => inWindow(sets[n], t));
    if (k < 0) continue;
    samples[k].push(Number(line.slice(c1 + 2, line.indexOf(', ', c1 + 2))) / 1e3);
  }
  const result = {};
  names.forEach((n, k) => {
    const sorted = Float64Array.from(samples[k]).sort();
    const seconds = sets[n].reduce((x, [a, b]) => x + Math.max(0, b - a - skipMs), 0) / 1e3;
    result[n] = {
      ios: sorted.length,
      iops: seconds > 0 ? sorted.length / seconds : 0,
      p50Us: quantile(sorted, 0.5),
      p99Us: quantile(sorted, 0.99),
    };
  });
  return result;
}

async function runScenario(sc, index, total) {
  const scDir = join(shmDir, `s${index}`);
  mkdirSync(scDir, { recursive: true });
  const runtimeS = WARMUP + SECONDS + TAIL;
  const fioOut = join(scDir, 'fio.json');
  const fioStderr = [];
  const tFio = Date.now();
  // The idle block has no production at all.
  const noFio = sc.load === 'idle';
  const fio = noFio
    ? null
    : spawn('fio', fioArgs(join(scDir, 'prod'), fioOut, sc.load, runtimeS), {
        detached: true, // own process group: killed as a group on exit
        stdio: ['ignore', 'ignore', 'pipe'],
      });
  const fioT = fio
    ? track(fio, true)
    : { c: { proc: { exitCode: 0, signalCode: null } }, done: Promise.resolve({ code: 0, signal: null }) };
  fio?.stderr.on('data', (d) => fioStderr.push(d));
  await sleep(WARMUP * 1000);

  let t0;
  let t1;
  let toggles;
  let driver = null;
  let askedMBps = sc.rateMBps ?? null;
  if (sc.peer) {
    ({ t0, t1, toggles, driver, askedMBps } = await runPeer(sc));
  } else if (sc.lowtide) {
    const cfg = { file: srcFile, intervalMs: INTERVAL_MS, ...(sc.writes ? { output: outFile } : {}), ...sc.lowtide };
    const proc = spawn(process.execPath, [join(root, 'bench', 'impact-driver.mjs'), JSON.stringify(cfg)], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const drvT = track(proc, false);
    const lines = [];
    const errs = [];
    proc.stderr.on('data', (d) => errs.push(d));
    let started;
    const startedP = new Promise((r) => (started = r));
    readLines(proc.stdout, (l) => {
      try {
        const o = JSON.parse(l);
        lines.push(o);
        if (o.type === 'start') started(o);
      } catch {
        /* not JSON */
      }
    });
    const first = await Promise.race([startedP, drvT.done.then(() => null), sleep(10_000).then(() => null)]);
    if (!first) {
      killChild(drvT.c);
      killChild(fioT.c);
      throw new Error(`lowtide driver did not start: ${Buffer.concat(errs).toString()}`);
    }
    t0 = first.t;
    toggles = await toggle(proc, t0);
    killChild(drvT.c, 'SIGTERM');
    killChild(drvT.c, 'SIGCONT');
    const ended = await Promise.race([drvT.done, sleep(10_000).then(() => null)]);
    if (!ended) killChild(drvT.c);
    await new Promise((r) => setImmediate(r));
    const summary = lines.find((o) => o.type === 'summary');
    if (!summary) throw new Error(`lowtide driver ended without a summary: ${Buffer.concat(errs).toString()}`);
    t1 = summary.tStop;
    if (sc.writes) await dropOutput();
    driver = {
      ready: lines.find((o) => o.type === 'ready') ?? null,
      intervals: lines
        .filter((o) => o.type === 'interval')
        .map((o) => ({ ...o, t: (o.t - t0) / 1e3, mbPerSecond: o.bytes / (o.ms / 1e3) / 1e6 })),
      summary,
    };
  } else {
    t0 = tFio + WARMUP * 1000;
    toggles = await toggle(null, t0);
    t1 = Date.now();
  }
  const fioEnd = await Promise.race([fioT.done, sleep((runtimeS + 30) * 1000).then(() => null)]);
  if (!fioEnd) {
    killChild(fioT.c);
    throw new Error('fio did not finish in time');
  }
  if (fioEnd.code !== 0)
    throw new Error(`fio failed (${fioEnd.code ?? fioEnd.signal}): ${Buffer.concat(fioStderr).toString()}`);
  const tParse = Date.now();
  const prod = analyseProduction(scDir, t0, t1);
  // The paired comparison: production while lowtide ran vs while it was stopped.
  const { on: onSide, off: offSide } = analyseWindows(scDir, toggles, SETTLE_MS);
  if (env.BENCH_DEBUG)
    console.error(
      `  timing: fio spawn→t0 ${t0 - tFio} ms, window ${t1 - t0} ms, t1→fio exit ${tParse - t1} ms, parse ${Date.now() - tParse} ms`,
    );
  let fioJobs = null;
  try {
    if (noFio) throw new Error('no production');
    fioJobs = JSON.parse(readFileSync(fioOut, 'utf8')).jobs.map((j) => ({
      name: j.jobname,
      readIops: j.read.iops,
      writeIops: j.write.iops,
      readClatP99Us: (j.read.clat_ns?.percentile?.['99.000000'] ?? 0) / 1e3,
    }));
  } catch {
    /* fio's JSON is a cross-check only */
  }
  rmSync(scDir, { recursive: true, force: true });

  const seconds = (t1 - t0) / 1e3;
  const result = {
    name: sc.name,
    key: sc.key,
    block: sc.load,
    writes: Boolean(sc.writes),
    kind: sc.kind,
    label: sc.label,
    // A fixed rate's cap, or the rate the peer was asked for.
    rateMBps: askedMBps,
    controller: sc.peer ? 'fio' : (sc.lowtide?.throttle ?? null),
    windowSeconds: seconds,
    // Phases relative to the window start (phased load only).
    phasesOn: sc.load === 'phased' && prod.fioStartMs !== null ? phaseList(prod.fioStartMs - t0, seconds) : null,
    production: prod,
    on: onSide,
    off: offSide,
    toggles,
    pairedP99Ratio: onSide.p99Us && offSide.p99Us ? onSide.p99Us / offSide.p99Us : null,
    lowtide: driver && {
      // While it ran (it was stopped half of the time).
      mbPerSecond: driver.summary.bytes / onSeconds(toggles.on, t1) / 1e6,
      bytes: driver.summary.bytes,
      // The final report's target: canary calibrates during the run.
      target: sc.kind === 'controller' ? (driver.summary.report?.target ?? driver.ready?.target ?? null) : null,
      cpuPercent: (driver.summary.cpuMs / (seconds * 1e3)) * 100,
      maxRssMiB: driver.summary.maxRssMiB,
      engine: driver.summary.engine,
      report: driver.summary.report,
      intervals: driver.intervals,
    },
    fio: fioJobs && {
      jobs: fioJobs.length,
      readIops: fioJobs.reduce((a, j) => a + j.readIops, 0),
      writeIops: fioJobs.reduce((a, j) => a + j.writeIops, 0),
    },
  };
  if (sc.load === 'idle' && sc.kind === 'controller') idleDefaultMBps.push(result.lowtide.mbPerSecond);
  const lt = result.lowtide ? `, lowtide ${result.lowtide.mbPerSecond.toFixed(0)} MB/s` : '';
  const tgt = result.lowtide?.target ? ` (target ${result.lowtide.target.ms.toFixed(2)} ms)` : '';
  console.log(
    `[${index + 1}/${total}] ${sc.name.padEnd(22)} prod ${prod.iops.toFixed(0)} IOPS, p50 ${fmtUs(prod.p50Us)}, p99 ${fmtUs(prod.p99Us)}${lt}${tgt}`,
  );
  return result;
}

/**
 * The light block's peer: fio writing a new file on lowtide's disk
 * sequentially, O_DIRECT, 1 MiB, 4 in flight, at the light target's
 * throughput (half of the idle default's), stopped and continued like
 * lowtide. Returns what runScenario needs of a lowtide run.
 */
async function runPeer(sc) {
  const mbps = sc.peerMBps();
  const bytesCap = Math.ceil((mbps * 1e6 * SECONDS * 1.5) / GiB) + 1;
  const proc = spawn(
    'fio',
    [
      '--thread', // the job runs in the process we stop (without it fio forks it)
      '--name=peer',
      `--filename=${outFile}`,
      '--rw=write',
      '--bs=1m',
      '--iodepth=4',
      '--ioengine=io_uring',
      '--direct=1',
      '--fallocate=none', // allocated as written, like lowtide's output
      `--size=${bytesCap}G`,
      `--rate=${Math.round((mbps * 1e6) / 1024)}k`,
      '--time_based',
      `--runtime=${SECONDS + 10}s`,
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  const peerT = track(proc, false);
  const errs = [];
  proc.stderr.on('data', (d) => errs.push(d));
  const t0 = Date.now();
  const toggles = await toggle(proc, t0);
  const t1 = Date.now();
  const early = proc.exitCode ?? proc.signalCode;
  killChild(peerT.c);
  await peerT.done;
  if (early !== null) throw new Error(`the fio peer ended early (${early}): ${Buffer.concat(errs).toString()}`);
  let bytes;
  try {
    bytes = statSync(outFile).size;
  } catch {
    throw new Error(`the fio peer wrote nothing: ${Buffer.concat(errs).toString()}`);
  }
  await dropOutput();
  return {
    t0,
    t1,
    toggles,
    askedMBps: mbps,
    driver: {
      ready: null,
      intervals: [],
      summary: { bytes, tStop: t1, cpuMs: 0, maxRssMiB: null, report: null, engine: null },
    },
  };
}

function phaseList(offsetMs, seconds) {
  const out = [];
  for (let k = 0; ; k++) {
    const a = (offsetMs + 2 * k * PHASE * 1000) / 1e3;
    if (a > seconds) break;
    const b = a + PHASE;
    if (b > 0) out.push([Math.max(0, a), Math.min(seconds, b)]);
  }
  return out;
}

const fmtUs = (us) =>
  us === null || us === undefined ? '-' : us >= 1000 ? `${(us / 1000).toFixed(2)} ms` : `${us.toFixed(0)} µs`;

// ---------------------------------------------------------------- scenarios
const DEFAULT = 'canary';
const ctl = (throttle) => ({ throttle, latencyTarget: TARGET, ...(AUTO_RULE ? { autoRule: AUTO_RULE } : {}) });
const rate = (mb) => ({ throttle: 'off', rateLimit: mb * 1e6 });
function scenarios() {
  const list = [];
  const add = (phased, key, kind, label, lowtide, extra = {}) => {
    const load = extra.load ?? (phased ? 'phased' : 'steady');
    list.push({ phased, load, key: `${load}/${key}`, kind, label, lowtide, ...extra });
  };
  for (const phased of [false, true]) {
    // Production alone first and last; controllers spread evenly between the
    // fixed rates (ascending), so that drift in the machine hits all of them.
    const ctls = phased
      ? [DEFAULT, 'off', ...Array(REPEATS - 1).fill(DEFAULT)]
      : ['off', DEFAULT, 'parda', 'aimd', 'threshold', ...Array(REPEATS - 1).fill(DEFAULT)];
    // Each fixed rate RATE_REPEATS times (ascending passes): the best fixed
    // rate in bound is the baseline, and single runs of it flip in and out.
    const rates = Array.from({ length: RATE_REPEATS }, () => RATES).flat();
    const n = ctls.length + rates.length;
    const items = [];
    let ci = 0;
    let ri = 0;
    for (let i = 0; i < n; i++) {
      const ctlDue = ci < ctls.length && (ri >= rates.length || (ci * n) / ctls.length <= i);
      items.push(ctlDue ? ['ctl', ctls[ci++]] : ['rate', rates[ri++]]);
    }
    add(phased, 'alone', 'alone', 'production alone', null);
    for (const [t, v] of items) {
      if (t === 'ctl' && v === DEFAULT && PROBE_MS) {
        for (const ms of PROBE_MS)
          add(phased, `${v}@${ms}ms`, 'controller', `lowtide ${v}, probes every ${ms} ms`, {
            ...ctl(v),
            probeIntervalMs: ms,
          });
      } else if (t === 'ctl' && v === DEFAULT && CANARY_VARIANTS) {
        for (const variant of CANARY_VARIANTS) {
          const tag =
            Object.entries(variant)
              .map(([k, x]) => `${k}=${x}`)
              .join(',') || 'defaults';
          // minBlockSize is the job's smallest request, not a canary knob.
          const { minBlockSize, ...tuning } = variant;
          add(phased, `${v}@${tag}`, 'controller', `lowtide ${v}, ${tag}`, {
            ...ctl(v),
            canaryTuning: tuning,
            ...(minBlockSize ? { minBlockSize } : {}),
          });
        }
      } else if (t === 'ctl')
        add(
          phased,
          v,
          v === 'off' ? 'off' : 'controller',
          v === 'off' ? 'lowtide unthrottled' : `lowtide ${v}${v === DEFAULT ? ' (default)' : ''}`,
          ctl(v),
        );
      else add(phased, `rate-${v}`, 'rate', `lowtide fixed ${v} MB/s`, rate(v), { rateMBps: v });
    }
    for (let r = 1; r < REPEATS; r++) add(phased, 'alone', 'alone', 'production alone', null);
  }
  // No production, and a light one, with lowtide writing what it reads to
  // a file on the same disk (as `lowtide image` does): the default against
  // unthrottled, interleaved.
  const label = (v) => (v === 'off' ? 'lowtide unthrottled, writing' : `lowtide ${v} (default), writing`);
  for (let r = 0; r < SMALL_REPEATS; r++) {
    for (const v of ['off', DEFAULT])
      add(false, v, v === 'off' ? 'off' : 'controller', label(v), ctl(v), { load: 'idle', writes: true });
  }
  add(false, 'alone', 'alone', 'light production alone', null, { load: 'light' });
  // The peer writes at the light target's throughput: half of the idle default's, measured above.
  const peerMBps = () => LIGHT_PEER_MBPS ?? (idleDefaultMBps.length ? mean(idleDefaultMBps) / 2 : 700);
  for (let r = 0; r < SMALL_REPEATS; r++) {
    for (const v of r === 0 ? [DEFAULT, 'off'] : [DEFAULT])
      add(false, v, v === 'off' ? 'off' : 'controller', label(v), ctl(v), { load: 'light', writes: true });
    add(false, 'peer', 'peer', 'fio writing at half the idle rate', null, {
      load: 'light',
      peer: true,
      peerMBps,
    });
    add(false, 'alone', 'alone', 'light production alone', null, { load: 'light' });
  }
  for (const v of LIGHT_RATES) {
    add(
      false,
      `rate-${v}`,
      'rate',
      `lowtide fixed ${v} MB/s${LIGHT_RATE_WRITES ? ', writing' : ''}`,
      { ...rate(v), ...LIGHT_RATE_SHAPE },
      { load: 'light', writes: LIGHT_RATE_WRITES, rateMBps: v },
    );
    add(false, 'alone', 'alone', 'light production alone', null, { load: 'light' });
  }
  const counts = {};
  for (const s of list) {
    counts[s.key] = (counts[s.key] ?? 0) + 1;
    s.name = `${s.key}${counts[s.key] > 1 ? `#${counts[s.key]}` : ''}`;
  }
  if (!ONLY) return list;
  // Production alone in the blocks that keep a scenario.
  const blocks = new Set(list.filter((s) => s.kind !== 'alone' && ONLY.test(s.name)).map((s) => s.load));
  return list.filter((s) => (s.kind === 'alone' && blocks.has(s.load)) || ONLY.test(s.name));
}

// ---------------------------------------------------------------- analysis
function aggregate(runs) {
  const groups = new Map();
  for (const r of runs) {
    if (!groups.has(r.key)) groups.set(r.key, []);
    groups.get(r.key).push(r);
  }
  const rows = [];
  for (const [key, rs] of groups) {
    const r0 = rs[0];
    rows.push({
      key,
      block: r0.block,
      kind: r0.kind,
      label: r0.label,
      controller: r0.controller,
      rateMBps: r0.rateMBps,
      runs: rs.length,
      iops: mean(rs.map((r) => r.production.iops)),
      p50Us: mean(rs.map((r) => r.production.p50Us)),
      p99Us: mean(rs.map((r) => r.production.p99Us)),
      p99UsRuns: rs.map((r) => r.production.p99Us),
      onP99UsRuns: rs.map((r) => r.on.p99Us),
      offP99UsRuns: rs.map((r) => r.off.p99Us),
      pairedP99Ratios: rs.map((r) => r.pairedP99Ratio),
      pairedP99Ratio: median(rs.map((r) => r.pairedP99Ratio).filter((x) => x !== null)),
      mbPerSecond: r0.lowtide ? mean(rs.map((r) => r.lowtide.mbPerSecond)) : null,
      mbPerSecondRuns: r0.lowtide ? rs.map((r) => r.lowtide.mbPerSecond) : null,
      targetMs: r0.lowtide?.target ? rs.map((r) => r.lowtide.target.ms) : null,
      cpuPercent: r0.lowtide && r0.kind !== 'peer' ? mean(rs.map((r) => r.lowtide.cpuPercent)) : null,
      maxRssMiB: r0.lowtide && r0.kind !== 'peer' ? Math.max(...rs.map((r) => r.lowtide.maxRssMiB)) : null,
    });
  }
  for (const block of ['steady', 'phased', 'light', 'idle']) {
    const alone = rows.find((r) => r.block === block && r.kind === 'alone');
    for (const r of rows.filter((x) => x.block === block)) {
      // Production while lowtide ran against production while it was stopped,
      // interleaved in the same run: the disk's own speed drifts several-fold
      // between scenarios minutes apart (seen: alone p99 269 µs in one run,
      // 3.3 ms in another) and within one run, so a baseline from other runs
      // or from before lowtide started measures the drift, not lowtide. The
      // 'alone' rows get the same on/off split: their ratio is the noise.
      r.p99RatioVsAloneRuns = alone && r.p99Us ? r.p99Us / alone.p99Us : null;
      r.p99Ratio = r.pairedP99Ratio ?? null;
      r.meetsBound = r.p99Ratio !== null ? r.p99Ratio <= BOUND : null;
    }
  }
  return rows;
}

function verdicts(rows) {
  const out = {};
  for (const block of ['steady', 'phased']) {
    const inBlock = rows.filter((r) => r.block === block);
    const alone = inBlock.find((r) => r.kind === 'alone');
    const def = inBlock.find((r) => r.controller === DEFAULT && r.kind === 'controller');
    if (!alone || !def) continue;
    const fixed = inBlock.filter((r) => r.kind === 'rate');
    const ok = fixed.filter((r) => r.meetsBound);
    const best = ok.reduce((a, r) => (a === null || r.mbPerSecond > a.mbPerSecond ? r : a), null);
    const v = {
      aloneP99Us: alone.p99Us,
      aloneP99UsRuns: alone.p99UsRuns,
      boundP99Us: alone.p99Us * BOUND,
      default: {
        key: def.key,
        p99Us: def.p99Us,
        p99Ratio: def.p99Ratio,
        meetsBound: def.meetsBound,
        mbPerSecond: def.mbPerSecond,
      },
      fixedMeetingBound: ok.map((r) => ({ rateMBps: r.rateMBps, mbPerSecond: r.mbPerSecond, p99Ratio: r.p99Ratio })),
      bestFixed: best && { rateMBps: best.rateMBps, mbPerSecond: best.mbPerSecond, p99Ratio: best.p99Ratio },
    };
    if (block === 'steady') {
      v.throughputVsBestFixed = best ? def.mbPerSecond / best.mbPerSecond : null;
      v.target = 'p99 <= 1.5x alone and throughput >= 90% of the best fixed rate meeting the bound';
      v.pass = def.meetsBound && (best ? v.throughputVsBestFixed >= 0.9 : true);
      v.others = inBlock
        .filter((r) => r.kind === 'controller' && r.controller !== DEFAULT)
        .map((r) => ({
          controller: r.controller,
          p99Ratio: r.p99Ratio,
          meetsBound: r.meetsBound,
          mbPerSecond: r.mbPerSecond,
          vsBestFixed: best ? r.mbPerSecond / best.mbPerSecond : null,
        }));
    } else {
      v.target = 'p99 <= 1.5x alone and more throughput than every fixed rate meeting the bound';
      v.beatsAll = ok.every((r) => def.mbPerSecond > r.mbPerSecond);
      v.pass = def.meetsBound && v.beatsAll;
    }
    out[block] = v;
  }
  // Idle: the default's throughput against unthrottled; light: production's
  // p99 within the bound, and the default's throughput against idle.
  const row = (block, kind) =>
    rows.find((r) => r.block === block && r.kind === kind && (kind !== 'controller' || r.controller === DEFAULT));
  const idleDef = row('idle', 'controller');
  const idleOff = row('idle', 'off');
  if (idleDef && idleOff) {
    const ratio = idleDef.mbPerSecond / idleOff.mbPerSecond;
    out.idle = {
      target: 'default >= 0.8x the throughput of --throttle off',
      default: { mbPerSecond: idleDef.mbPerSecond },
      off: { mbPerSecond: idleOff.mbPerSecond },
      ratio,
      pass: ratio >= 0.8,
    };
  }
  const lightDef = row('light', 'controller');
  const lightAlone = row('light', 'alone');
  if (lightDef && lightAlone) {
    const vsIdle = idleDef ? lightDef.mbPerSecond / idleDef.mbPerSecond : null;
    out.light = {
      target: 'p99 <= 1.5x alone and throughput >= 0.5x of idle',
      aloneP99Us: lightAlone.p99Us,
      aloneP99UsRuns: lightAlone.p99UsRuns,
      default: {
        p99Us: lightDef.p99Us,
        p99Ratio: lightDef.p99Ratio,
        meetsBound: lightDef.meetsBound,
        mbPerSecond: lightDef.mbPerSecond,
      },
      off: row('light', 'off')
        ? { p99Ratio: row('light', 'off').p99Ratio, mbPerSecond: row('light', 'off').mbPerSecond }
        : null,
      vsIdle,
      // fio at the target's throughput: did any writer at that rate keep the bound here?
      peer: row('light', 'peer')
        ? {
            p99Ratio: row('light', 'peer').p99Ratio,
            meetsBound: row('light', 'peer').meetsBound,
            mbPerSecond: row('light', 'peer').mbPerSecond,
            askedMBps: row('light', 'peer').rateMBps,
          }
        : null,
      pass: Boolean(lightDef.meetsBound) && vsIdle !== null && vsIdle >= 0.5,
    };
  }
  return out;
}

// ---------------------------------------------------------------- chart
const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}
function chart({ runs, rows, verdicts: ver, config: cfg, date }) {
  const BOUND = cfg.bound;
  const INTERVAL_MS = cfg.intervalMs;
  const W = 1280;
  const colW = 620;
  const panelH = 150;
  const padL = 58;
  const padR = 58;
  const parts = [];
  let y = 0;
  const text = (x, yy, s, o = {}) =>
    `<text x="${x.toFixed(1)}" y="${yy.toFixed(1)}" ${o.rotate ? `transform="rotate(-90 ${x.toFixed(1)} ${yy.toFixed(1)})" text-anchor="middle"` : ''} font-size="${o.size ?? 11}" ${o.anchor ? `text-anchor="${o.anchor}"` : ''} fill="${o.fill ?? '#222'}" ${o.weight ? `font-weight="${o.weight}"` : ''}>${esc(s)}</text>`;

  parts.push(
    text(
      20,
      28,
      'lowtide bench:impact — production (fio 4 KiB random 70/30, QD 4, O_DIRECT) vs lowtide sequential read (O_DIRECT)',
      { size: 16, weight: 'bold' },
    ),
  );
  parts.push(
    text(
      20,
      48,
      `${date.slice(0, 16)}Z · ${cfg.seconds} s per scenario · interval ${INTERVAL_MS} ms · phased load ${cfg.phaseSeconds} s on / ${cfg.phaseSeconds} s off · bound: production p99 ≤ ${BOUND}× alone`,
      { size: 12, fill: '#555' },
    ),
  );
  y = 64;

  // Trade-off panels: lowtide MB/s (x, log) against production p99 ratio (y, log).
  const tH = 260;
  for (const [i, block] of ['steady', 'phased'].entries()) {
    const x0 = 20 + i * (colW + 20) + padL;
    const w = colW - padL - 30;
    const y0 = y + 30;
    const h = tH - 70;
    const pts = rows.filter((r) => r.block === block && r.kind !== 'alone' && r.mbPerSecond > 0 && r.p99Ratio);
    const xmin = 5;
    const xmax = Math.max(5000, ...pts.map((p) => p.mbPerSecond * 1.3));
    const ymin = 0.8;
    const ymax = Math.max(10, ...pts.map((p) => p.p99Ratio * 1.3));
    const X = (v) =>
      x0 + ((Math.log10(Math.max(v, xmin)) - Math.log10(xmin)) / (Math.log10(xmax) - Math.log10(xmin))) * w;
    const Y = (v) =>
      y0 + h - ((Math.log10(Math.max(v, ymin)) - Math.log10(ymin)) / (Math.log10(ymax) - Math.log10(ymin))) * h;
    parts.push(
      text(x0, y + 18, `${block} load: production p99 / alone vs lowtide throughput`, { size: 13, weight: 'bold' }),
    );
    parts.push(`<rect x="${x0}" y="${y0}" width="${w}" height="${h}" fill="#fafafa" stroke="#999"/>`);
    parts.push(
      `<rect x="${x0}" y="${Y(BOUND)}" width="${w}" height="${(y0 + h - Y(BOUND)).toFixed(1)}" fill="#e8f5e9"/>`,
    );
    parts.push(
      `<line x1="${x0}" x2="${x0 + w}" y1="${Y(BOUND)}" y2="${Y(BOUND)}" stroke="#2ca02c" stroke-dasharray="5,3"/>`,
    );
    parts.push(text(x0 + w - 4, Y(BOUND) - 4, `bound ${BOUND}×`, { anchor: 'end', fill: '#2ca02c', size: 10 }));
    for (const v of [10, 100, 1000, 10000]) {
      if (v > xmax) continue;
      parts.push(`<line x1="${X(v)}" x2="${X(v)}" y1="${y0 + h}" y2="${y0 + h + 4}" stroke="#999"/>`);
      parts.push(text(X(v), y0 + h + 16, `${v}`, { anchor: 'middle', size: 10 }));
    }
    parts.push(text(x0 + w / 2, y0 + h + 30, 'lowtide MB/s (log)', { anchor: 'middle', size: 10, fill: '#555' }));
    for (const v of [1, 2, 5, 10, 20, 50, 100, 200, 500]) {
      if (v > ymax) continue;
      parts.push(`<line x1="${x0 - 4}" x2="${x0}" y1="${Y(v)}" y2="${Y(v)}" stroke="#999"/>`);
      parts.push(text(x0 - 6, Y(v) + 3, `${v}×`, { anchor: 'end', size: 10 }));
    }
    parts.push(text(x0 - 50, y0 + h / 2, 'p99 / alone (log)', { size: 10, fill: '#555', rotate: true }));
    const fixed = pts.filter((p) => p.kind === 'rate').sort((a, b) => a.rateMBps - b.rateMBps);
    if (fixed.length > 1) {
      parts.push(
        `<polyline fill="none" stroke="#888" stroke-width="1.2" points="${fixed.map((p) => `${X(p.mbPerSecond).toFixed(1)},${Y(p.p99Ratio).toFixed(1)}`).join(' ')}"/>`,
      );
    }
    for (const p of pts) {
      const color =
        p.kind === 'rate' ? '#666' : p.controller === DEFAULT ? '#1f77b4' : p.kind === 'off' ? '#d62728' : '#9467bd';
      const lab = p.kind === 'rate' ? `${p.rateMBps}` : p.controller;
      parts.push(
        `<circle cx="${X(p.mbPerSecond).toFixed(1)}" cy="${Y(p.p99Ratio).toFixed(1)}" r="${p.controller === DEFAULT ? 5 : 3.5}" fill="${color}"/>`,
      );
      parts.push(text(X(p.mbPerSecond) + 6, Y(p.p99Ratio) - 5, lab, { size: 10, fill: color }));
    }
    const v = ver[block];
    if (v) {
      parts.push(
        text(
          x0 + 6,
          y0 + 14,
          `${v.pass ? 'PASS' : 'MISS'} · default ${v.default.p99Ratio?.toFixed(2)}×, ${v.default.mbPerSecond?.toFixed(0)} MB/s; best fixed in bound: ${v.bestFixed ? `${v.bestFixed.rateMBps} MB/s cap → ${v.bestFixed.mbPerSecond.toFixed(0)} MB/s` : 'none'}`,
          { size: 11, fill: v.pass ? '#2ca02c' : '#d62728', weight: 'bold' },
        ),
      );
    }
  }
  y += tH + 10;

  // Legend for the time series.
  parts.push(`<line x1="30" x2="55" y1="${y + 6}" y2="${y + 6}" stroke="#d62728" stroke-width="2"/>`);
  parts.push(text(60, y + 10, 'production p99 per interval (left axis, log ms)', { size: 11 }));
  parts.push(`<line x1="340" x2="365" y1="${y + 6}" y2="${y + 6}" stroke="#1f77b4" stroke-width="2"/>`);
  parts.push(text(370, y + 10, 'lowtide MB/s per interval (right axis, linear, per panel)', { size: 11 }));
  parts.push(`<line x1="700" x2="725" y1="${y + 6}" y2="${y + 6}" stroke="#2ca02c" stroke-dasharray="5,3"/>`);
  parts.push(text(730, y + 10, `bound: ${BOUND}× p99 alone`, { size: 11 }));
  parts.push(`<rect x="880" y="${y}" width="20" height="10" fill="#eeeeee"/>`);
  parts.push(text(905, y + 10, 'production bursts (phased)', { size: 11 }));
  y += 24;

  // Time series, one panel per run.
  const ymin = 0.05; // ms
  const ymax = 200;
  runs.forEach((r, i) => {
    const col = i % 2;
    if (col === 0 && i > 0) y += panelH + 34;
    const x0 = 20 + col * (colW + 20) + padL;
    const w = colW - padL - padR;
    const y0 = y + 18;
    const h = panelH - 24;
    const T = r.windowSeconds;
    const X = (t) => x0 + (Math.max(0, Math.min(T, t)) / T) * w;
    const Y = (ms) =>
      y0 +
      h -
      ((Math.log10(Math.max(ymin, Math.min(ymax, ms))) - Math.log10(ymin)) / (Math.log10(ymax) - Math.log10(ymin))) * h;
    const row = rows.find((x) => x.key === r.key);
    const alone = rows.find((x) => x.block === r.block && x.kind === 'alone');
    const lt = r.lowtide;
    const title = `${r.name} — p99 ${fmtUs(r.production.p99Us)} (${alone ? (r.production.p99Us / alone.p99Us).toFixed(2) : '?'}×), ${r.production.iops.toFixed(0)} IOPS${lt ? `, lowtide ${lt.mbPerSecond.toFixed(0)} MB/s` : ''}${lt?.target ? `, target ${lt.target.ms.toFixed(2)} ms` : ''}`;
    parts.push(text(x0 - padL + 4, y + 12, title, { size: 11, weight: 'bold' }));
    parts.push(`<rect x="${x0}" y="${y0}" width="${w}" height="${h}" fill="#fff" stroke="#999"/>`);
    for (const [a, b] of r.phasesOn ?? [])
      parts.push(
        `<rect x="${X(a).toFixed(1)}" y="${y0}" width="${(X(b) - X(a)).toFixed(1)}" height="${h}" fill="#eeeeee"/>`,
      );
    for (const v of [0.1, 1, 10, 100]) {
      parts.push(`<line x1="${x0}" x2="${x0 + w}" y1="${Y(v).toFixed(1)}" y2="${Y(v).toFixed(1)}" stroke="#eee"/>`);
      parts.push(
        text(x0 - 4, Y(v) + 3, v < 1 ? `${v * 1000} µs` : `${v} ms`, { anchor: 'end', size: 9, fill: '#d62728' }),
      );
    }
    for (let t = 0; t <= T; t += 5)
      parts.push(text(X(t), y0 + h + 11, `${t} s`, { anchor: 'middle', size: 9, fill: '#555' }));
    if (alone)
      parts.push(
        `<line x1="${x0}" x2="${x0 + w}" y1="${Y((alone.p99Us * BOUND) / 1000).toFixed(1)}" y2="${Y((alone.p99Us * BOUND) / 1000).toFixed(1)}" stroke="#2ca02c" stroke-dasharray="5,3"/>`,
      );
    // Production p99, broken where an interval had no I/O.
    let seg = [];
    const segs = [];
    for (const iv of r.production.intervals) {
      if (iv.p99Us === null) {
        if (seg.length) segs.push(seg);
        seg = [];
        continue;
      }
      seg.push(`${X(iv.t + INTERVAL_MS / 2000).toFixed(1)},${Y(iv.p99Us / 1000).toFixed(1)}`);
    }
    if (seg.length) segs.push(seg);
    for (const s of segs)
      parts.push(
        s.length === 1
          ? `<circle cx="${s[0].split(',')[0]}" cy="${s[0].split(',')[1]}" r="1.5" fill="#d62728"/>`
          : `<polyline fill="none" stroke="#d62728" stroke-width="1.5" points="${s.join(' ')}"/>`,
      );
    // lowtide throughput.
    if (lt && lt.intervals.length) {
      const m = niceMax(Math.max(...lt.intervals.map((iv) => iv.mbPerSecond), 1));
      const YB = (v) => y0 + h - (v / m) * h;
      parts.push(text(x0 + w + 4, y0 + 8, `${m} MB/s`, { size: 9, fill: '#1f77b4' }));
      parts.push(text(x0 + w + 4, YB(m / 2) + 3, `${m / 2}`, { size: 9, fill: '#1f77b4' }));
      parts.push(text(x0 + w + 4, y0 + h, '0', { size: 9, fill: '#1f77b4' }));
      const pts = lt.intervals.map((iv) => `${X(iv.t - iv.ms / 2000).toFixed(1)},${YB(iv.mbPerSecond).toFixed(1)}`);
      parts.push(`<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="${pts.join(' ')}"/>`);
    }
    void row;
  });
  y += panelH + 40;
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${Math.ceil(y)}" viewBox="0 0 ${W} ${Math.ceil(y)}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">\n<rect width="100%" height="100%" fill="#fff"/>\n${parts.join('\n')}\n</svg>\n`;
}

// ---------------------------------------------------------------- main
function printReport({ rows, verdicts: ver, config: cfg, host }) {
  const pct = (x) => (x === null ? '-' : `${x.toFixed(2)}×`);
  console.log(
    `\nproduction: fio 4 KiB randrw 70/30, iodepth 4, io_uring, O_DIRECT; lowtide: sequential read, max 1 MiB × QD 32, O_DIRECT; ${cfg.seconds} s each`,
  );
  console.log(
    '| scenario | runs | prod IOPS | prod p50 | prod p99 | p99 lowtide on / off | lowtide MB/s (while on) | meets bound? | notes |',
  );
  console.log('|---|---|---|---|---|---|---|---|---|');
  for (const r of rows) {
    const notes = [];
    if (r.targetMs) notes.push(`target ${r.targetMs.map((t) => t.toFixed(2)).join('/')} ms`);
    if (r.runs > 1) notes.push(`p99 runs ${r.p99UsRuns.map(fmtUs).join(', ')}`);
    if (r.runs > 1 && r.mbPerSecondRuns)
      notes.push(`MB/s runs ${r.mbPerSecondRuns.map((x) => x.toFixed(0)).join(', ')}`);
    if (r.cpuPercent !== null) notes.push(`CPU ${r.cpuPercent.toFixed(0)} %`);
    console.log(
      `| ${r.key} | ${r.runs} | ${r.iops.toFixed(0)} | ${fmtUs(r.p50Us)} | ${fmtUs(r.p99Us)} | ${pct(r.p99Ratio)} | ${r.mbPerSecond === null ? '-' : r.mbPerSecond.toFixed(0)} | ${r.kind === 'alone' ? '(baseline)' : r.meetsBound ? 'yes' : 'no'} | ${notes.join('; ')} |`,
    );
  }
  console.log('\nverdicts:');
  if (ver.steady) {
    const v = ver.steady;
    console.log(
      `- steady load: default (${DEFAULT}) p99 ${fmtUs(v.default.p99Us)} = ${v.default.p99Ratio.toFixed(2)}× alone (${fmtUs(v.aloneP99Us)}; bound ${fmtUs(v.boundP99Us)}) → ${v.default.meetsBound ? 'within' : 'OUTSIDE'} the bound; ` +
        (v.bestFixed
          ? `throughput ${v.default.mbPerSecond.toFixed(0)} MB/s = ${(v.throughputVsBestFixed * 100).toFixed(0)} % of the best fixed rate in bound (${v.bestFixed.rateMBps} MB/s cap, ${v.bestFixed.mbPerSecond.toFixed(0)} MB/s measured; target ≥ 90 %)`
          : 'no fixed rate met the bound (throughput comparison vacuous)') +
        ` → ${v.pass ? 'PASS' : 'MISS'}`,
    );
    for (const o of v.others) {
      console.log(
        `  (${o.controller}: ${o.p99Ratio.toFixed(2)}× alone, ${o.mbPerSecond.toFixed(0)} MB/s${o.vsBestFixed !== null ? ` = ${(o.vsBestFixed * 100).toFixed(0)} % of best fixed` : ''}, ${o.meetsBound ? 'in' : 'out of'} bound)`,
      );
    }
  }
  if (ver.phased) {
    const v = ver.phased;
    console.log(
      `- phased load: default p99 ${fmtUs(v.default.p99Us)} = ${v.default.p99Ratio.toFixed(2)}× alone (${fmtUs(v.aloneP99Us)}) → ${v.default.meetsBound ? 'within' : 'OUTSIDE'} the bound; ` +
        `${v.default.mbPerSecond.toFixed(0)} MB/s vs fixed rates in bound [${v.fixedMeetingBound.map((f) => `${f.rateMBps}: ${f.mbPerSecond.toFixed(0)}`).join(', ') || 'none'}] → ${v.pass ? 'PASS' : 'MISS'}`,
    );
  }
  if (ver.idle) {
    const v = ver.idle;
    console.log(
      `- idle (lowtide writing to the same disk): default ${v.default.mbPerSecond.toFixed(0)} MB/s = ${v.ratio.toFixed(2)}× of --throttle off (${v.off.mbPerSecond.toFixed(0)} MB/s; target ≥ 0.8) → ${v.pass ? 'PASS' : 'MISS'}`,
    );
  }
  if (ver.light) {
    const v = ver.light;
    console.log(
      `- light load (${LIGHT_IOPS} IOPS random reads, QD 1): default p99 ${fmtUs(v.default.p99Us)} = ${v.default.p99Ratio?.toFixed(2)}× alone (${fmtUs(v.aloneP99Us)}), ${v.default.mbPerSecond.toFixed(0)} MB/s = ${v.vsIdle === null ? '?' : v.vsIdle.toFixed(2)}× of idle` +
        `${v.off ? `; unthrottled ${v.off.p99Ratio?.toFixed(2)}×, ${v.off.mbPerSecond.toFixed(0)} MB/s` : ''} → ${v.pass ? 'PASS' : 'MISS'}` +
        (v.peer
          ? `\n  peer: fio writing O_DIRECT at ${v.peer.mbPerSecond.toFixed(0)} MB/s (asked ${v.peer.askedMBps?.toFixed(0) ?? '?'}): p99 ${v.peer.p99Ratio?.toFixed(2)}× alone` +
            (v.peer.meetsBound ? '' : ' (outside the bound too: no writer at that rate kept it on this disk)')
          : ''),
    );
  }
  const aloneSpread = ['steady', 'phased', 'light']
    .map(
      (b) =>
        ver[b] &&
        ver[b].aloneP99UsRuns.length > 1 &&
        `${b} alone p99 runs ${ver[b].aloneP99UsRuns.map(fmtUs).join(' / ')}`,
    )
    .filter(Boolean);
  console.log(
    `noise: load average before ${host.loadavgBefore.split(' ').slice(0, 3).join(' ')}, after ${host.loadavgAfter.split(' ').slice(0, 3).join(' ')}; ${aloneSpread.join('; ')}`,
  );
}

function writeChart(summary, svgFile) {
  writeFileSync(svgFile, chart(summary));
  console.log(`written ${svgFile}`);
  const pngFile = svgFile.replace(/\.svg$/, '.png');
  if (have('rsvg-convert')) {
    const r = spawnSync('rsvg-convert', ['-o', pngFile, svgFile], { stdio: 'inherit' });
    if (r.status === 0) console.log(`written ${pngFile}`);
  } else if (
    have('convert') &&
    /ImageMagick/.test(spawnSync('convert', ['-version'], { encoding: 'utf8' }).stdout ?? '')
  ) {
    const r = spawnSync('convert', ['-density', '96', svgFile, pngFile], { stdio: 'inherit' });
    if (r.status === 0) console.log(`written ${pngFile}`);
  } else {
    console.log('(no SVG to PNG converter: install librsvg2-bin or imagemagick for a PNG)');
  }
}

if (CHART_FROM) {
  const saved = JSON.parse(readFileSync(CHART_FROM, 'utf8'));
  printReport(saved);
  writeChart(saved, env.BENCH_CHART_OUT ?? CHART_FROM.replace(/\.json$/, '.svg'));
  process.exit(0);
}
const list = scenarios();
if (env.BENCH_DRY) {
  for (const sc of list) console.log(sc.name, JSON.stringify(sc.lowtide));
  process.exit(0);
}
const estimate = list.length * (WARMUP + SECONDS + TAIL + 1.5);
console.log(
  `bench:impact — ${list.length} scenarios × ${SECONDS} s (+${WARMUP} s warm-up), about ${(estimate / 60).toFixed(1)} min; ` +
    `production file ${prodFile} (${PROD_GIB} GiB), lowtide source ${srcFile} (${SRC_GIB} GiB)`,
);
const loadBefore = readFileSync('/proc/loadavg', 'utf8').trim();
const runs = [];
const started = new Date();
try {
  for (const [i, sc] of list.entries()) runs.push(await runScenario(sc, i, list.length));
} catch (err) {
  cleanup();
  throw err;
}
const loadAfter = readFileSync('/proc/loadavg', 'utf8').trim();

const date = started.toISOString();
const summary = {
  date,
  host: { cpus: (await import('node:os')).cpus().length, loadavgBefore: loadBefore, loadavgAfter: loadAfter },
  config: {
    autoRule: AUTO_RULE ?? null,
    seconds: SECONDS,
    warmupSeconds: WARMUP,
    intervalMs: INTERVAL_MS,
    phaseSeconds: PHASE,
    repeats: REPEATS,
    rateRepeats: RATE_REPEATS,
    bound: BOUND,
    rates: RATES,
    latencyTarget: TARGET,
    srcGiB: SRC_GIB,
    prodGiB: PROD_GIB,
  },
  production: {
    tool: 'fio',
    rw: 'randrw',
    rwmixread: 70,
    bs: 4096,
    iodepth: 4,
    ioengine: 'io_uring',
    direct: true,
    latency: 'lat (submit to completion), per I/O',
  },
  lowtide: {
    read: 'openSource().read() under JobThrottle',
    direct: true,
    maxBlockSize: 1 << 20,
    minBlockSize: 64 * 1024,
    maxQueueDepth: 32,
  },
  verdicts: null,
  rows: null,
  runs,
};
summary.rows = aggregate(runs);
summary.verdicts = verdicts(summary.rows);
printReport(summary);
mkdirSync(resultsDir, { recursive: true });
const jsonFile = join(resultsDir, `impact-${date.replace(/[:.]/g, '-')}.json`);
writeFileSync(jsonFile, JSON.stringify(summary, null, 1) + '\n');
console.log(`written ${jsonFile}`);
writeChart(summary, EXPERIMENT ? jsonFile.replace(/\.json$/, '.svg') : join(resultsDir, 'impact-latest.svg'));
cleanup();
