// node bench/host-latency.mjs — what a backup running inside a host process
// does to the host's own libuv work: an fs.stat loop's latency while idle
// and during an in-process backup of a file of random data into a new
// repository, side by side in one run. lowtide's hashing, compression and
// chunk writes run on the addon's own threads; the host's calls use libuv's.
//
// Options (environment): BENCH_HOST_MIB (256), BENCH_HOST_ROUNDS (3).
import { randomFillSync } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { root } from './fat-volume.mjs';

const { backup, initRepository, workerPoolStats } = await import(join(root, 'dist', 'index.js'));
const mib = Number(process.env.BENCH_HOST_MIB ?? 256);
const rounds = Number(process.env.BENCH_HOST_ROUNDS ?? 3);
const work = join(root, 'bench', 'work');
mkdirSync(work, { recursive: true });
const dir = mkdtempSync(join(work, 'host-latency-'));
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));

const src = join(dir, 'source.bin');
const buf = Buffer.alloc(1 << 20);
const parts = [];
for (let i = 0; i < mib; i++) parts.push(Buffer.from(randomFillSync(buf)));
writeFileSync(src, Buffer.concat(parts));

/** fs.stat latencies (ms) in a loop until `until()` says stop. */
async function statLoop(until) {
  const out = [];
  while (!until()) {
    const t = performance.now();
    await stat(src);
    out.push(performance.now() - t);
  }
  return out;
}
const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};

const results = [];
for (let r = 0; r < rounds; r++) {
  const t0 = performance.now();
  const idle = await statLoop(() => performance.now() - t0 > 1000);
  const repo = join(dir, `repo-${r}`);
  await initRepository(repo);
  let done = false;
  const before = workerPoolStats().executed;
  const started = performance.now();
  const job = backup({ source: src, repository: repo, throttle: 'off' }).finally(() => (done = true));
  const during = await statLoop(() => done);
  await job;
  const seconds = (performance.now() - started) / 1000;
  const row = {
    idleP50Ms: pct(idle, 50),
    idleP99Ms: pct(idle, 99),
    duringP50Ms: pct(during, 50),
    duringP99Ms: pct(during, 99),
    statsDuring: during.length,
    backupSeconds: seconds,
    poolTasks: workerPoolStats().executed - before,
  };
  row.p99Ratio = row.duringP99Ms / row.idleP99Ms;
  results.push(row);
  console.log(
    `round ${r + 1}: fs.stat p50 ${row.idleP50Ms.toFixed(3)} -> ${row.duringP50Ms.toFixed(3)} ms, p99 ${row.idleP99Ms.toFixed(3)} -> ${row.duringP99Ms.toFixed(3)} ms (${row.p99Ratio.toFixed(2)}x), backup ${seconds.toFixed(2)} s, ${row.poolTasks} pool tasks`,
  );
}
const med = (k) =>
  pct(
    results.map((x) => x[k]),
    50,
  );
console.log(`median p99 during / idle: ${med('p99Ratio').toFixed(2)}x (target <= 2x)`);
const out = join(root, 'bench', 'results');
mkdirSync(out, { recursive: true });
const date = new Date().toISOString();
writeFileSync(
  join(out, `host-latency-${date.replace(/[:.]/g, '-')}.json`),
  JSON.stringify({ date, mib, results }, null, 2),
);
