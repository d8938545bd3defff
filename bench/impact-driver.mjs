// The lowtide side of `npm run bench:impact`: a job that reads a source
// again and again through the public reader (openSource + read) under a
// JobThrottle. Without `output` it consumes the blocks without writing them
// anywhere (the impact of lowtide's reads alone); with `output` it writes
// each block at its offset of that file, through the page cache, with early
// writeback and its writes reported to the throttle, as `lowtide image`
// does. It runs in its own process (its CPU and RSS are its own) until
// SIGTERM/SIGINT.
//
// usage: node bench/impact-driver.mjs '<json settings>'
//   { file, output, throttle, latencyTarget, rateLimit, queueDepth, blockSize,
//     minBlockSize, intervalMs, probeIntervalMs, canaryTuning }
//
// Output on stdout, one JSON object a line, times in Unix epoch ms:
//   {"type":"start","t":...}                        before the idle probe
//   {"type":"ready","t":...,"target":{...}}         probe done, reading starts
//   {"type":"interval","t":...,"ms":250,"bytes":...,"blocks":...,"latP50Ms":...,
//    "latP99Ms":...,"latMeanMs":...,"smoothedMs":...,"qd":...,"blockSize":...,"delayMs":...}
//   {"type":"summary","tStart":...,"tStop":...,"bytes":...,"report":{...},"cpuMs":...,"maxRssMiB":...}
import { openSource } from '../dist/index.js';
import { JobThrottle, probeIdleLatency } from '../dist/throttle/job-throttle.js';
import { resolveThrottleSettings } from '../dist/throttle/job-settings.js';
import { EarlyWriteback } from '../dist/jobs/writeback.js';
import { open } from 'node:fs/promises';
import { constants } from 'node:fs';

const cfg = JSON.parse(process.argv[2] ?? '{}');
const {
  file,
  output,
  throttle: controller = 'canary',
  latencyTarget = 'auto',
  rateLimit,
  queueDepth = 32,
  blockSize = 1 << 20,
  minBlockSize = 64 * 1024,
  intervalMs = 250,
  // Experiments only (env BENCH_AUTO_RULE of bench/impact.mjs): derive the
  // target from the same idle probe with another rule,
  //   target = clamp(max(multiplier · p50, p<floorPercentile>), 0.25, 1000) ms
  // (floorPercentile null: no floor), and hand it to the throttle as fixed.
  autoRule,
  // canary's time between probes (default: the library's).
  probeIntervalMs,
  // Experiments only (env BENCH_CANARY_VARIANTS): canary tuning overrides,
  // e.g. {"factor":1.15} (lib/throttle/job-settings.ts canaryTuning).
  canaryTuning,
} = cfg;
if (!file) {
  process.stderr.write('usage: node bench/impact-driver.mjs \'{"file":"..."}\'\n');
  process.exit(2);
}

const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const ac = new AbortController();
let stopT;
const stop = () => {
  stopT ??= Date.now();
  ac.abort();
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);

const tStart = Date.now();
const cpu0 = process.cpuUsage();
out({ type: 'start', t: tStart, pid: process.pid });

const src = await openSource(file, { direct: 'on' });
if (!src.direct) throw new Error(`${file}: O_DIRECT is not in use`);
let target = latencyTarget;
let probeInfo;
if (autoRule && latencyTarget === 'auto' && controller !== 'off') {
  const probe = await probeIdleLatency(src, blockSize, ac.signal);
  const p50 = probe.percentile(50) / 1e6;
  const floor = autoRule.floorPercentile == null ? 0 : probe.percentile(autoRule.floorPercentile) / 1e6;
  target = Math.min(1000, Math.max(0.25, autoRule.multiplier * p50, floor));
  probeInfo = { rule: autoRule, idleP50Ms: p50, idleP99Ms: probe.percentile(99) / 1e6, ms: target };
}
const settings = resolveThrottleSettings({
  throttle: controller,
  latencyTargetMs: target,
  rateLimitBytesPerSecond: rateLimit ?? undefined,
  probeIntervalMs,
});
if (canaryTuning) settings.canaryTuning = canaryTuning;
let throttle;
try {
  throttle = await JobThrottle.create(
    settings,
    { maxQueueDepth: queueDepth, maxBlockSize: blockSize, minBlockSize, alignment: Math.max(4096, src.sectorSize) },
    src,
    ac.signal,
  );
} catch (err) {
  if (!ac.signal.aborted) throw err;
}

// Per-interval accounting.
let bytes = 0;
let blocks = 0;
let ivBytes = 0;
let ivLat = [];
let ivLast = Date.now();
const tick = () => {
  const now = Date.now();
  const lat = ivLat.sort((a, b) => a - b);
  const pick = (q) => (lat.length ? lat[Math.min(lat.length - 1, Math.floor(q * lat.length))] / 1e6 : null);
  const st = throttle.state();
  out({
    type: 'interval',
    t: now,
    ms: now - ivLast,
    bytes: ivBytes,
    blocks: lat.length,
    latP50Ms: pick(0.5),
    latP99Ms: pick(0.99),
    latMeanMs: lat.length ? lat.reduce((a, b) => a + b, 0) / lat.length / 1e6 : null,
    smoothedMs: st.latencyMs,
    qd: st.queueDepth,
    blockSize: st.blockSize,
    delayMs: st.delayMs,
    probeMs: st.probeLatencyMs ?? null,
    probeTargetMs: st.probeTargetMs ?? null,
  });
  ivLast = now;
  ivBytes = 0;
  ivLat = [];
};

// With an output: blocks written at their offsets, at most 4 writes in
// flight (each holds its block), as the image job does (experiments:
// writesInFlight).
const WRITES_IN_FLIGHT = cfg.writesInFlight ?? 4;
// Experiments (directOutput): the output opened O_DIRECT, each block one write
// of its own size, no page cache and no writeback.
const out_ = output
  ? await open(
      output,
      cfg.directOutput ? constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_DIRECT : 'w',
    )
  : undefined;
const writeback =
  out_ && !cfg.directOutput
    ? new EarlyWriteback(out_.fd, throttle ? () => throttle.writebackStepBytes() : undefined)
    : undefined;
const ownWrite = out_ && throttle ? throttle.ownWrites(output) : () => undefined;
const pending = new Set();
let written = 0;
const write = (b) => {
  b.retain();
  const p = out_
    .write(b.data, 0, b.length, b.offset)
    .then(({ bytesWritten: n }) => {
      written += n;
      ownWrite(n);
      writeback?.wrote(n);
    })
    .finally(() => {
      b.release();
      pending.delete(p);
    });
  pending.add(p);
};

let engine;
let passes = 0;
if (throttle) {
  out({
    type: 'ready',
    t: Date.now(),
    target: probeInfo ? { mode: 'rule', ...probeInfo } : throttle.report().target,
    rateLimit: settings.rateLimitBytesPerSecond ?? null,
  });
  ivLast = Date.now();
  const timer = setInterval(tick, intervalMs);
  try {
    while (!ac.signal.aborted) {
      const reader = src.read(undefined, {
        ...throttle.readerOptions(),
        maxBlockSize: blockSize,
        maxQueueDepth: queueDepth,
        signal: ac.signal,
      });
      throttle.attach(reader);
      engine ??= reader.engine;
      for await (const b of reader) {
        if (ac.signal.aborted) break;
        throttle.observe(b.latencyNs, b.length);
        if (out_) {
          write(b);
          if (pending.size >= WRITES_IN_FLIGHT) await Promise.race(pending);
        }
        bytes += b.length;
        ivBytes += b.length;
        ivLat.push(b.latencyNs);
        blocks++;
      }
      await Promise.all(pending);
      passes++;
    }
  } catch (err) {
    if (!(ac.signal.aborted && err?.code === 'ABORTED')) throw err;
  } finally {
    clearInterval(timer);
  }
}
stopT ??= Date.now();
await Promise.allSettled(pending);
await out_?.close();
const cpu = process.cpuUsage(cpu0);
await throttle?.stop();
const report = throttle?.report();
await src.close();
out({
  type: 'summary',
  tStart,
  tStop: stopT,
  bytes,
  blocks,
  passes,
  written,
  engine,
  mbPerSecond: bytes / ((stopT - tStart) / 1e3) / 1e6,
  cpuMs: (cpu.user + cpu.system) / 1e3,
  maxRssMiB: process.resourceUsage().maxRSS / 1024,
  report,
});
