/**
 * Properties of the controllers against the simulated device: latency held
 * near the target under sustained competing load, throughput recovered
 * when the load goes away, no growing oscillation, bounded decisions, and
 * sanity on garbage samples. Simulated time only; no wall clock.
 */
import { describe, expect, it } from 'vitest';
import {
  CONTROLLER_NAMES,
  DEFAULT_CONTROLLER,
  LatencyHistogram,
  RateLimiter,
  createController,
  type ThrottleDecision,
  type ThrottleOptions,
} from '../../lib/throttle/index.js';
import { SimulatedDevice, type SimulatedDeviceOptions, type SimulationStep } from './simulated-device.js';
import { seeded, spread } from './helpers.js';

const ACTIVE = ['threshold', 'aimd', 'parda'] as const;

interface Scenario {
  name: string;
  device: SimulatedDeviceOptions;
  /** Production: 4 KiB Poisson requests per second. */
  iops: number;
  targetMs: number;
  /** Allowed p95 of the job's latency, in units of the target. */
  p95Factor: number;
}

// Devices: an SSD-like FIFO device (400 MB/s, 50 µs per request), the same
// under heavier production (≈ 72 % busy with it alone), a disk-like device
// (8 ms per request: production alone makes long queues), and a device with
// 4 parallel channels.
const SCENARIOS: Scenario[] = [
  {
    name: 'ssd, moderate load',
    device: { bytesPerSecond: 400e6, overheadUs: 50 },
    iops: 6000,
    targetMs: 5,
    p95Factor: 2,
  },
  {
    name: 'ssd, heavy load',
    device: { bytesPerSecond: 400e6, overheadUs: 50 },
    iops: 12000,
    targetMs: 4,
    p95Factor: 2,
  },
  { name: 'disk', device: { bytesPerSecond: 150e6, overheadUs: 8000 }, iops: 60, targetMs: 50, p95Factor: 2.5 },
  {
    name: '4 channels',
    device: { bytesPerSecond: 150e6, overheadUs: 100, channels: 4 },
    iops: 20000,
    targetMs: 15,
    p95Factor: 2,
  },
];

function latencies(steps: SimulationStep[], fromNs: number, toNs: number): LatencyHistogram {
  const h = new LatencyHistogram();
  for (const s of steps) if (s.atNs >= fromNs && s.atNs < toNs) h.record(s.latencyNs);
  return h;
}

/** Throughput the device gives an unthrottled job when idle. */
function unthrottledRate(device: SimulatedDeviceOptions): number {
  const r = new SimulatedDevice(device).run(createController('off'), { durationMs: 3000 });
  return r.throughput(1000, 3000);
}

function expectBounded(d: ThrottleDecision, o: Required<Pick<ThrottleOptions, 'maxDelayMs'>> & ThrottleOptions): void {
  expect(Number.isFinite(d.delayMs)).toBe(true);
  expect(d.delayMs).toBeGreaterThanOrEqual(0);
  expect(d.delayMs).toBeLessThanOrEqual(o.maxDelayMs);
  expect(Number.isInteger(d.queueDepth)).toBe(true);
  expect(d.queueDepth).toBeGreaterThanOrEqual(o.minQueueDepth ?? 1);
  expect(d.queueDepth).toBeLessThanOrEqual(o.maxQueueDepth ?? 32);
  expect(d.blockSize % (o.alignment ?? 4096)).toBe(0);
  expect(d.blockSize).toBeGreaterThanOrEqual(o.minBlockSize ?? 65536);
  expect(d.blockSize).toBeLessThanOrEqual(o.maxBlockSize ?? 1 << 20);
}

describe('controllers on the simulated device', () => {
  for (const sc of SCENARIOS) {
    const durationMs = sc.targetMs >= 50 ? 60_000 : 15_000;
    const loadEndMs = (durationMs * 2) / 3;
    const warmupMs = durationMs / 5;
    const device = new SimulatedDevice({ ...sc.device, load: [{ startMs: 0, endMs: loadEndMs, iops: sc.iops }] });

    it(`${sc.name}: unthrottled, the job's latency is far above the target (the scenario is a real test)`, () => {
      const r = device.run(createController('off'), { durationMs: loadEndMs });
      const p95 = latencies(r.steps, warmupMs * 1e6, loadEndMs * 1e6).percentile(95) / 1e6;
      expect(p95).toBeGreaterThan(4 * sc.targetMs);
    });

    for (const name of ACTIVE) {
      describe(`${name}, ${sc.name} (target ${sc.targetMs} ms)`, () => {
        const controller = createController(name, { targetLatencyMs: sc.targetMs });
        const r = device.run(controller, { durationMs });
        const underLoad = latencies(r.steps, warmupMs * 1e6, loadEndMs * 1e6);

        it('holds the latency near the target under sustained competing load', () => {
          const p50 = underLoad.percentile(50) / 1e6;
          const p95 = underLoad.percentile(95) / 1e6;
          expect(p95, `p95 ${p95.toFixed(2)} ms`).toBeLessThanOrEqual(sc.p95Factor * sc.targetMs);
          // ... and is not throttled far below it (which would waste throughput).
          expect(p50, `p50 ${p50.toFixed(2)} ms`).toBeGreaterThanOrEqual(0.5 * sc.targetMs);
        });

        it('keeps production latency well below what an unthrottled job causes', () => {
          const off = device.run(createController('off'), { durationMs: loadEndMs });
          const prodOff = off.productionBetween(warmupMs, loadEndMs).percentile(99);
          const prod = r.productionBetween(warmupMs, loadEndMs).percentile(99);
          expect(prod).toBeLessThan(0.5 * prodOff);
        });

        it('recovers ≥ 90 % of the unthrottled rate within 60 steps once the load is gone', () => {
          const rate = unthrottledRate(sc.device);
          const after = r.steps.filter((s) => s.atNs >= loadEndMs * 1e6);
          const window = 20;
          let recoveredAt = -1;
          for (let i = window; i < after.length && recoveredAt < 0; i++) {
            const bytes = after.slice(i - window + 1, i + 1).reduce((a, s) => a + s.bytes, 0);
            const seconds = (after[i]!.atNs - after[i - window]!.atNs) / 1e9;
            if (bytes / seconds >= 0.9 * rate) recoveredAt = i;
          }
          expect(recoveredAt, 'steps to recover').toBeGreaterThan(0);
          expect(recoveredAt).toBeLessThanOrEqual(60);
          // And it stays there: the last part of the run is at ≥ 90 %.
          expect(r.throughput(loadEndMs + (durationMs - loadEndMs) / 2, durationMs)).toBeGreaterThanOrEqual(0.9 * rate);
        });

        it('keeps every decision within bounds, delays under maxDelayMs', () => {
          for (const s of r.steps) expectBounded(s, { maxDelayMs: 500 });
        });
      });
    }
  }

  for (const name of ACTIVE) {
    it(`${name}: no growing oscillation under steady load (last third no wider than the middle third)`, () => {
      const device = new SimulatedDevice({ load: [{ startMs: 0, endMs: 30_000, iops: 8000 }], seed: 3 });
      const r = device.run(createController(name, { targetLatencyMs: 5 }), { durationMs: 30_000 });
      const third = (k: number): SimulationStep[] =>
        r.steps.filter((s) => s.atNs >= k * 10e9 && s.atNs < (k + 1) * 10e9);
      const inFlightBytes = (s: SimulationStep): number => s.queueDepth * s.blockSize;
      for (const knob of [inFlightBytes, (s: SimulationStep) => s.delayMs, (s: SimulationStep) => s.latencyNs]) {
        const middle = spread(third(1).map(knob));
        const last = spread(third(2).map(knob));
        // 25 % slack for sampling noise, plus a floor for knobs that sit still.
        expect(last).toBeLessThanOrEqual(1.25 * middle + 1e-9 + 0.01 * Math.max(...third(1).map(knob)));
      }
    });
  }

  describe('phased production load (2 s on, 2 s off)', () => {
    const load = Array.from({ length: 5 }, (_, i) => ({ startMs: i * 4000, endMs: i * 4000 + 2000, iops: 8000 }));
    const device = new SimulatedDevice({ load });
    const durationMs = 20_000;
    // threshold keeps the queue depth at its maximum, so a job starts with a
    // burst of 32 blocks at once, whatever the load: its known weakness, left
    // out of the comparison by judging production from the first second on.
    const fromMs: Record<(typeof ACTIVE)[number], number> = { threshold: 1000, aimd: 0, parda: 0 };
    const fixed = [25, 50, 75, 100, 125, 150, 175, 200, 225, 250, 300].map((mb) => {
      const r = device.run(createController('off'), {
        durationMs,
        rateLimiter: new RateLimiter({ bytesPerSecond: mb * 1e6 }),
      });
      return { mb, r };
    });

    for (const name of ACTIVE) {
      it(`${name} moves more data than every fixed rate that keeps production latency as low`, () => {
        const r = device.run(createController(name, { targetLatencyMs: 5 }), { durationMs });
        const prodP99 = r.productionBetween(fromMs[name], durationMs).percentile(99);
        const meeting = fixed.filter((f) => f.r.productionBetween(fromMs[name], durationMs).percentile(99) <= prodP99);
        expect(meeting.length).toBeGreaterThan(0);
        const best = Math.max(...meeting.map((f) => f.r.bytes));
        expect(r.bytes).toBeGreaterThan(1.3 * best);
      });
    }
  });

  it('the throttle report adds up', () => {
    const device = new SimulatedDevice({ load: [{ startMs: 0, endMs: 5000, iops: 6000 }] });
    const c = createController('parda', { targetLatencyMs: 5 });
    const r = device.run(c, { durationMs: 8000 });
    const rep = c.report();
    expect(rep.controller).toBe('parda');
    expect(rep.targetLatencyMs).toBe(5);
    expect(rep.samples).toBe(r.steps.length);
    expect(rep.latency.count).toBe(r.steps.length);
    expect(rep.bytes).toBe(r.bytes);
    expect(rep.decisions).toBe(r.steps.length + 1); // one before the first block
    const sumDecisions = (xs: { decisions: number }[]): number => xs.reduce((a, x) => a + x.decisions, 0);
    expect(sumDecisions(rep.queueDepth)).toBe(rep.decisions);
    expect(sumDecisions(rep.blockSize)).toBe(rep.decisions);
    // Time at each queue depth adds up to the time of the last sample.
    const lastMs = r.steps.at(-1)!.atNs / 1e6;
    const sumTime = (xs: { timeMs: number }[]): number => xs.reduce((a, x) => a + x.timeMs, 0);
    expect(sumTime(rep.queueDepth)).toBeCloseTo(lastMs, 6);
    expect(sumTime(rep.blockSize)).toBeCloseTo(lastMs, 6);
    expect(rep.delayedMs).toBeCloseTo(
      r.steps.reduce((a, s) => a + s.delayMs, 0),
      6,
    );
    expect(rep.queueDepth.map((e) => e.value)).toEqual([...rep.queueDepth.map((e) => e.value)].sort((a, b) => a - b));
    expect(rep.latency.p50Ms).toBeGreaterThan(0);
    expect(JSON.parse(JSON.stringify(rep))).toEqual(rep);
  });

  it('counts the time at each queue depth from the first block, not from the clock origin', () => {
    // A job's clock is process.hrtime: its origin is the boot, hours before the job.
    const origin = 3.6e12; // one hour of uptime, in ns
    for (const name of ['parda', 'aimd', 'threshold', 'off'] as const) {
      const c = createController(name, { targetLatencyMs: 5 });
      c.decide(); // before the first block, as a job does
      let at = origin;
      for (let i = 0; i < 200; i++) {
        at += 2e6;
        c.observe({ latencyNs: 2e6, bytes: 1 << 20, atNs: at });
        c.decide();
      }
      const rep = c.report();
      const sumTime = (xs: { timeMs: number }[]): number => xs.reduce((a, x) => a + x.timeMs, 0);
      // The first block was issued at (first completion − its latency) = origin.
      expect(sumTime(rep.queueDepth)).toBeCloseTo((at - origin) / 1e6, 6);
      expect(sumTime(rep.blockSize)).toBeCloseTo((at - origin) / 1e6, 6);
    }
  });

  it('threshold reports time spent delayed under load, and none without load', () => {
    const loaded = createController('threshold', { targetLatencyMs: 5 });
    new SimulatedDevice({ load: [{ startMs: 0, endMs: 5000, iops: 8000 }] }).run(loaded, { durationMs: 5000 });
    expect(loaded.report().delayedMs).toBeGreaterThan(1000);
    const idle = createController('threshold', { targetLatencyMs: 150 });
    const r = new SimulatedDevice({ bytesPerSecond: 400e6 }).run(idle, { durationMs: 4000 });
    // A target above what even a full queue (32 blocks of 2.7 ms) gives on the
    // idle device: once the start-up burst is over, the delay returns to zero.
    const late = r.steps.filter((s) => s.atNs >= 2e9);
    expect(late.length).toBeGreaterThan(100);
    for (const s of late) expect(s.delayMs).toBe(0);
  });

  it('off never throttles', () => {
    const c = createController('off', { maxQueueDepth: 8, maxBlockSize: 256 * 1024 });
    const r = new SimulatedDevice({ load: [{ startMs: 0, endMs: 2000, iops: 12000 }] }).run(c, { durationMs: 2000 });
    for (const s of r.steps) expect(s).toMatchObject({ delayMs: 0, queueDepth: 8, blockSize: 256 * 1024 });
  });
});

describe('garbage samples', () => {
  const GARBAGE = [0, -1, 1e15, NaN, Infinity, -Infinity, Number.MAX_VALUE, -0, 1e-300];
  const options = {
    targetLatencyMs: 2,
    minQueueDepth: 2,
    maxQueueDepth: 16,
    minBlockSize: 16 * 1024,
    maxBlockSize: 512 * 1024,
    alignment: 4096,
    maxDelayMs: 100,
  };

  for (const name of CONTROLLER_NAMES) {
    it(`${name}: never produces NaN, negative or out-of-bounds decisions`, () => {
      const c = createController(name, options);
      expectBounded(c.decide(), options);
      // Garbage alone, before any real sample.
      for (const g of GARBAGE) {
        c.observe({ latencyNs: g, bytes: g, atNs: g });
        expectBounded(c.decide(), options);
      }
      // Garbage mixed with real samples in every field.
      const random = seeded(17);
      let t = 0;
      for (let i = 0; i < 5000; i++) {
        t += 1e5 * random();
        const pick = (): number => GARBAGE[Math.floor(random() * GARBAGE.length)]!;
        const real = 1e5 + 2e7 * random() ** 3;
        c.observe({
          latencyNs: random() < 0.3 ? pick() : real,
          bytes: random() < 0.1 ? pick() : 65536,
          atNs: random() < 0.1 ? pick() : t,
        });
        expectBounded(c.decide(), options);
      }
      // Not even a sample object.
      c.observe(undefined as unknown as { latencyNs: number; bytes: number; atNs: number });
      c.observe({} as unknown as { latencyNs: number; bytes: number; atNs: number });
      expectBounded(c.decide(), options);
      const rep = c.report();
      expect(rep.invalidSamples).toBeGreaterThan(0);
      expect(rep.clampedSamples).toBeGreaterThan(0);
      for (const v of Object.values(rep.latency)) expect(Number.isFinite(v)).toBe(true);
      expect(Number.isFinite(rep.delayedMs) && rep.delayedMs >= 0).toBe(true);
    });

    it(`${name}: a run with garbage injected into 5 % of the samples stays in bounds and keeps working`, () => {
      const device = new SimulatedDevice({ load: [{ startMs: 0, endMs: 10_000, iops: 6000 }] });
      const c = createController(name, { targetLatencyMs: 5 });
      const random = seeded(23);
      const r = device.run(c, {
        durationMs: 10_000,
        transformSample: (s) =>
          random() < 0.05 ? { ...s, latencyNs: GARBAGE[Math.floor(random() * GARBAGE.length)]! } : s,
      });
      for (const s of r.steps) expectBounded(s, { maxDelayMs: 500 });
      // Still moving data at a useful rate (a tenth of the device at least).
      expect(r.throughput(2000, 10_000)).toBeGreaterThan(40e6);
    });
  }
});

describe('a stall', () => {
  // The process stopped for 2 s (SIGSTOP, a suspended VM): the blocks in
  // flight complete 2 s late, once. A paced job must not wait the largest
  // delay block after block until an average forgets it (paced by the
  // EWMA, parda and aimd fall to ~0.1 MB/s in this scenario and canary to
  // 0.6x of its rate before the stall).
  for (const name of ['canary', 'parda', 'aimd'] as const) {
    it(`${name}: one 2 s sample does not stop a paced job for seconds`, () => {
      const device = new SimulatedDevice({
        bytesPerSecond: 400e6,
        overheadUs: 50,
        load: [{ startMs: 0, endMs: 12_000, iops: 6000 }],
      });
      const c = createController(name, name === 'canary' ? {} : { targetLatencyMs: 0.2 });
      let stalledAtMs: number | undefined;
      const r = device.run(c, {
        durationMs: 12_000,
        ...(name === 'canary' ? { probe: { everyMs: 2 } } : {}),
        transformSample: (s) => {
          if (stalledAtMs !== undefined || s.atNs < 6e9) return s;
          stalledAtMs = s.atNs / 1e6;
          return { ...s, latencyNs: 2e9 };
        },
      });
      expect(stalledAtMs).toBeDefined();
      const at = stalledAtMs!;
      // The scenario is a real test: the job was paced before the stall.
      const before = r.steps.filter((s) => s.atNs > (at - 2000) * 1e6 && s.atNs < at * 1e6);
      expect(before.filter((s) => s.delayMs > 0).length / before.length).toBeGreaterThan(0.5);
      const rateBefore = r.throughput(at - 2000, at);
      expect(r.throughput(at + 200, at + 1200)).toBeGreaterThan(0.8 * rateBefore);
      const waits = r.steps.filter((s) => s.atNs > at * 1e6 && s.atNs < (at + 1200) * 1e6 && s.delayMs >= 100);
      expect(waits.length).toBeLessThanOrEqual(2);
    });
  }
});

describe('createController options', () => {
  it('defaults to a controller that works without tuning', () => {
    const c = createController();
    expect(c.name).toBe(DEFAULT_CONTROLLER);
    expect(c.options).toMatchObject({
      targetLatencyMs: 20,
      minQueueDepth: 1,
      maxQueueDepth: 32,
      minBlockSize: 65536,
      maxBlockSize: 1 << 20,
      alignment: 4096,
      maxDelayMs: 500,
    });
  });

  it('keeps block sizes multiples of the alignment it is given', () => {
    // A target below the service time of one largest block: the window
    // controllers must shrink requests, to sizes that are not powers of two.
    const o = { alignment: 512, minBlockSize: 1536, maxBlockSize: 1 << 20, targetLatencyMs: 1 };
    for (const name of ['aimd', 'parda']) {
      const c = createController(name, o);
      const r = new SimulatedDevice({ load: [{ startMs: 0, endMs: 2000, iops: 6000 }] }).run(c, { durationMs: 2000 });
      for (const s of r.steps) expectBounded(s, { ...o, maxDelayMs: 500 });
      const sizes = new Set(r.steps.map((s) => s.blockSize));
      expect(sizes.size).toBeGreaterThan(3);
      expect([...sizes].some((b) => b % 4096 !== 0)).toBe(true);
    }
  });

  it('adapts the other bound when only one is given', () => {
    expect(createController('aimd', { maxBlockSize: 32768 }).options.minBlockSize).toBe(32768);
    expect(createController('aimd', { minBlockSize: 4 << 20 }).options.maxBlockSize).toBe(4 << 20);
    expect(createController('aimd', { maxQueueDepth: 1 }).options.minQueueDepth).toBe(1);
    expect(createController('aimd', { minQueueDepth: 64 }).options.maxQueueDepth).toBe(64);
  });

  it('rejects bad options with messages that name the option, the expectation and the value', () => {
    expect(() => createController('nope')).toThrow(
      /throttle: expected one of "canary", "threshold", "aimd", "parda", "off", got "nope"/,
    );
    expect(() => createController('parda', { targetLatencyMs: 0 })).toThrow(
      /targetLatencyMs: expected a number greater than 0.*got 0/,
    );
    expect(() => createController('parda', { targetLatencyMs: NaN })).toThrow(/targetLatencyMs.*got NaN/);
    expect(() => createController('parda', { minBlockSize: 5000 })).toThrow(
      /minBlockSize: expected a multiple of alignment \(4096 bytes\), got 5000/,
    );
    expect(() => createController('parda', { minQueueDepth: 8, maxQueueDepth: 4 })).toThrow(
      /maxQueueDepth: expected an integer from 8 to 1024, got 4/,
    );
    expect(() => createController('parda', { maxDelayMs: -1 })).toThrow(/maxDelayMs.*got -1/);
    expect(() => createController('parda', { parda: { gamma: 2 } })).toThrow(/parda\.gamma.*got 2/);
    expect(() => createController('aimd', { aimd: { decreaseFactor: 1.5 } })).toThrow(/aimd\.decreaseFactor.*got 1\.5/);
    try {
      createController('parda', { alignment: 0 });
      expect.unreachable();
    } catch (err) {
      expect((err as { code?: string }).code).toBe('INVALID_ARGUMENT');
    }
  });
});
