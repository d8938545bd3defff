// node bench/interference.mjs — what one interfering load does to production on
// this disk, without lowtide: fio's production workload (4 KiB random 70/30,
// QD 4, O_DIRECT, io_uring, per-I/O latency log) on bench:impact's production
// file, and an interferer toggled like bench:impact toggles lowtide (runs 2 s,
// SIGSTOP 2 s, ...). Production's p99 while the interferer ran ÷ while it was
// stopped (250 ms after each switch left out), per configuration, median of
// BENCH_ROUNDS rounds (configurations interleaved within a round).
//
// Interferers (env BENCH_INTERFERERS, JSON {name: spec}; default below):
//   {"bs":"64k","qd":1,"rate":"190m"}  fio sequential O_DIRECT read of bench:impact's source
//                                      file (fio's rate: 190m = 190 MiB/s)
//   {"cpu":0.3}                        a busy loop 30 % of the time, no I/O
//   {"idle":true}                      nothing (the noise of the method)
//   {"bs":"256k","rate":"667m","write":true}  fio sequential write of a new file beside the
//                                      others (made anew each run, removed and synced outside
//                                      the measured windows); "buffered":true writes through
//                                      the page cache (default O_DIRECT)
// BENCH_PRODUCTION=light: production is bench:impact's light load instead (4 KiB random
// reads, QD 1, BENCH_LIGHT_IOPS a second, default 200).
// Uses bench:impact's files in bench/work (made with dd when missing); fio must be installed.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ensureRandomFile, GiB, root } from './fat-volume.mjs';

const dir = process.env.BENCH_DIR ?? join(root, 'bench', 'work');
const SECONDS = Number(process.env.BENCH_SECONDS ?? 24);
const LIGHT = process.env.BENCH_PRODUCTION === 'light';
const LIGHT_IOPS = Number(process.env.BENCH_LIGHT_IOPS ?? 200);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const configs = JSON.parse(
  process.env.BENCH_INTERFERERS ??
    JSON.stringify({
      idle: { idle: true },
      '16k': { bs: '16k', rate: '190m' },
      '64k': { bs: '64k', rate: '190m' },
      '256k': { bs: '256k', rate: '190m' },
      '1m': { bs: '1m', rate: '190m' },
      '1m-qd32': { bs: '1m', qd: 32, rate: '190m' },
      cpu30: { cpu: 0.3 },
    }),
);
if (spawnSync('fio', ['--version']).status !== 0) {
  console.log('bench:interference skipped: fio is not installed (apt-get install fio)');
  process.exit(0);
}
mkdirSync(dir, { recursive: true });
const prodFile = join(dir, 'impact-prod-1g.bin');
const srcFile = join(dir, 'impact-src-4g.bin');
const outFile = join(dir, 'interference-out.bin');
ensureRandomFile(prodFile, GiB, "production's file");
ensureRandomFile(srcFile, 4 * GiB, "the interferer's file");
const logDir = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : '/tmp', 'lowtide-interference-'));
const children = new Set();
const track = (c) => (children.add(c), c.on('exit', () => children.delete(c)), c);
const cleanup = () => {
  for (const c of children) {
    try {
      process.kill(c.pid, 'SIGCONT');
      process.kill(c.pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  rmSync(logDir, { recursive: true, force: true });
};
process.on('exit', cleanup);
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(130));

const quantile = (s, p) => s[Math.min(s.length - 1, Math.floor(p * s.length))];
const median = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];

async function one(cfg) {
  for (const f of readdirSync(logDir)) rmSync(join(logDir, f));
  const prod = track(
    spawn(
      'fio',
      [
        '--thread',
        `--filename=${prodFile}`,
        '--size=1G',
        ...(LIGHT
          ? ['--rw=randread', '--iodepth=1', `--rate_iops=${LIGHT_IOPS}`]
          : ['--rw=randrw', '--rwmixread=70', '--iodepth=4']),
        '--bs=4k',
        '--ioengine=io_uring',
        '--direct=1',
        '--time_based',
        '--norandommap',
        '--disable_slat=1',
        '--disable_clat=1',
        '--log_unix_epoch=1',
        `--write_lat_log=${join(logDir, 'p')}`,
        '--name=prod',
        `--runtime=${SECONDS + 3}s`,
      ],
      { stdio: 'ignore' },
    ),
  );
  await sleep(2000);
  // --thread: the job runs in the process we stop (without it fio forks the job).
  const intf = track(
    cfg.cpu
      ? spawn(
          process.execPath,
          ['-e', `setInterval(() => { const t = Date.now() + ${cfg.cpu * 10}; while (Date.now() < t); }, 10)`],
          { stdio: 'ignore' },
        )
      : cfg.idle
        ? spawn('sleep', [String(SECONDS + 10)], { stdio: 'ignore' })
        : spawn(
            'fio',
            [
              '--thread',
              '--name=intf',
              ...(cfg.write
                ? [`--filename=${outFile}`, '--rw=write', `--size=${SECONDS * 2}G`, '--fallocate=none']
                : [`--filename=${srcFile}`, '--rw=read']),
              `--bs=${cfg.bs}`,
              `--iodepth=${cfg.qd ?? 1}`,
              '--ioengine=io_uring',
              `--direct=${cfg.buffered ? 0 : 1}`,
              '--time_based',
              `--runtime=${SECONDS + 5}s`,
              ...(cfg.rate ? [`--rate=${cfg.rate}`] : []),
            ],
            { stdio: 'ignore' },
          ),
  );
  const on = [];
  const off = [];
  const t0 = Date.now();
  for (let k = 0; k * 2000 < SECONDS * 1000; k++) {
    const a = t0 + k * 2000;
    if (k > 0) process.kill(intf.pid, k % 2 === 0 ? 'SIGCONT' : 'SIGSTOP');
    (k % 2 === 0 ? on : off).push([a + 250, a + 2000]);
    await sleep(Math.max(0, a + 2000 - Date.now()));
  }
  process.kill(intf.pid, 'SIGCONT');
  process.kill(intf.pid, 'SIGKILL');
  await new Promise((r) => (prod.exitCode !== null ? r() : prod.on('exit', r)));
  if (cfg.write) {
    // Freeing the output costs discards (and writeback of what is left): outside the windows.
    rmSync(outFile, { force: true });
    spawnSync('sync');
  }
  const sOn = [];
  const sOff = [];
  for (const f of readdirSync(logDir).filter((n) => /_lat\.\d+\.log$/.test(n))) {
    for (const line of readFileSync(join(logDir, f), 'utf8').split('\n')) {
      const [t, v] = line.split(',').map(Number);
      if (!Number.isFinite(v)) continue;
      if (on.some(([a, b]) => t >= a && t < b)) sOn.push(v / 1000);
      else if (off.some(([a, b]) => t >= a && t < b)) sOff.push(v / 1000);
    }
  }
  sOn.sort((a, b) => a - b);
  sOff.sort((a, b) => a - b);
  return {
    ratio: quantile(sOn, 0.99) / quantile(sOff, 0.99),
    p99OnUs: quantile(sOn, 0.99),
    p99OffUs: quantile(sOff, 0.99),
    iopsRatio: sOn.length / sOff.length,
  };
}

const res = {};
for (let r = 0; r < ROUNDS; r++) {
  for (const [name, cfg] of Object.entries(configs)) {
    const x = await one(cfg);
    (res[name] ??= []).push(x);
    console.log(
      `round ${r + 1} ${name.padEnd(10)} p99 on/off ${x.ratio.toFixed(2)}x (${x.p99OnUs.toFixed(0)} / ${x.p99OffUs.toFixed(0)} µs), production IOPS on/off ${x.iopsRatio.toFixed(2)}`,
    );
  }
}
console.log('\n| interferer | p99 on ÷ off (median) | production IOPS on ÷ off |\n|---|---|---|');
for (const [n, xs] of Object.entries(res)) {
  console.log(
    `| ${n} ${JSON.stringify(configs[n])} | ${median(xs.map((x) => x.ratio)).toFixed(2)}× | ${median(xs.map((x) => x.iopsRatio)).toFixed(2)} |`,
  );
}
