/**
 * The `canary` controller against the simulated device, with probes issued
 * the way JobThrottle issues them (one small read at a time, every 2 ms):
 * production protected, calibration pauses, recovery when the load goes,
 * bounded decisions on garbage probes. Simulated time only.
 */
import { describe, expect, it } from 'vitest';
import { SimulatedDevice, createController, type SimulationStep, type ThrottleDecision } from '../../lib/throttle/index.js';
import { seeded } from './helpers.js';

const PROBE = { everyMs: 2 };
const WAITED = (d: ThrottleDecision): boolean => d.delayMs >= 400;

function gaps(steps: SimulationStep[]): { atMs: number; ms: number }[] {
  const out: { atMs: number; ms: number }[] = [];
  for (let i = 1; i < steps.length; i++) {
    const ms = (steps[i]!.atNs - steps[i - 1]!.atNs) / 1e6;
    out.push({ atMs: steps[i - 1]!.atNs / 1e6, ms });
  }
  return out;
}

describe('canary on the simulated device', () => {
  // An SSD-like FIFO device, production at 6000 IOPS for 12 s, then idle.
  const loadEndMs = 12_000;
  const durationMs = 20_000;
  const device = new SimulatedDevice({ bytesPerSecond: 400e6, overheadUs: 50, load: [{ startMs: 0, endMs: loadEndMs, iops: 6000 }] });
  const controller = createController('canary');
  const r = device.run(controller, { durationMs, probe: PROBE });
  const off = device.run(createController('off'), { durationMs: loadEndMs });

  it('keeps production latency far below what an unthrottled job causes, and still moves data', () => {
    const prod = r.productionBetween(1000, loadEndMs).percentile(99);
    const prodOff = off.productionBetween(1000, loadEndMs).percentile(99);
    expect(prod).toBeLessThan(0.1 * prodOff);
    expect(r.throughput(1000, loadEndMs)).toBeGreaterThan(20e6);
  });

  it('calibrates at the start and every 10 s, pausing its own requests meanwhile', () => {
    const rep = controller.report();
    expect(rep.controller).toBe('canary');
    expect(rep.probes!.calibrations).toBe(2); // at 0 s and at ~10 s
    expect(rep.probes!.count).toBeGreaterThan(5000);
    expect(rep.probes!.targetMs).toBeGreaterThan(0);
    // The pause at ~10 s: a gap of at least 50 ms between two completions of ours.
    const pause = gaps(r.steps).filter((g) => g.atMs > 9_000 && g.atMs < 11_000 && g.ms >= 50);
    expect(pause.length).toBeGreaterThanOrEqual(1);
    // ... and nowhere else while the load runs (after the start).
    const others = gaps(r.steps).filter((g) => g.atMs > 1_000 && g.atMs < loadEndMs && (g.atMs < 9_000 || g.atMs > 11_000) && g.ms >= 50);
    expect(others).toEqual([]);
    expect(r.steps.some((s) => WAITED(s))).toBe(true);
  });

  it('speeds up once the load is gone (to what a newcomer\'s small request would tolerate, not to full speed)', () => {
    // With nobody else on the device the probes still wait behind the job's
    // own queue, as a production request arriving would: canary keeps that
    // queue short on purpose, so it does not return to the unthrottled rate.
    // (Here, until the next calibration, H is still the p90 of probes that
    // met production: 95 -> 106 MB/s with the defaults; with 1.25 x the
    // median, the default before, 69 -> 116 MB/s.)
    const under = r.throughput(2000, loadEndMs);
    const after = r.throughput(loadEndMs + 1500, durationMs);
    expect(after).toBeGreaterThan(1.08 * under);
    expect(after).toBeLessThan(0.5 * 400e6); // the device's rate; unthrottled, the job gets ~390 MB/s
  });

  it('shrinks requests before it shrinks the queue: under load it uses requests smaller than the largest', () => {
    const under = r.steps.filter((s) => s.atNs > 1e9 && s.atNs < loadEndMs * 1e6 && !WAITED(s));
    const small = under.filter((s) => s.blockSize < 1 << 20).length;
    expect(small / under.length).toBeGreaterThan(0.5);
  });

  it('with a fixed target it never pauses to calibrate', () => {
    const c = createController('canary', { targetLatencyMs: 0.5, canary: { calibrate: false } });
    const run = device.run(c, { durationMs: 12_000, probe: PROBE });
    expect(c.report().probes!.calibrations).toBe(0);
    expect(c.report().probes!.targetMs).toBe(0.5);
    expect(run.steps.some((s) => WAITED(s))).toBe(false);
  });

  it('with a fixed target, probes above it are harm: half of them over the target shrinks the job to paced blocks', () => {
    const c = createController('canary', { targetLatencyMs: 1, canary: { calibrate: false } });
    const first = c.decide();
    expect(first.delayMs).toBe(0);
    let t = 0;
    for (let i = 0; i < 400; i++) {
      t += 2e6;
      c.observeProbe({ latencyNs: i % 2 ? 0.5e6 : 2e6, bytes: 4096, atNs: t });
      c.observe({ latencyNs: 3e5, bytes: 65536, atNs: t });
    }
    const d = c.decide();
    expect(d.delayMs).toBeGreaterThan(0);
    expect(d.queueDepth * d.blockSize).toBeLessThan(first.queueDepth * first.blockSize);
    // ... while probes all under the target let it grow.
    const g = createController('canary', { targetLatencyMs: 1, canary: { calibrate: false } });
    t = 0;
    for (let i = 0; i < 400; i++) {
      t += 2e6;
      g.observeProbe({ latencyNs: 0.5e6, bytes: 4096, atNs: t });
    }
    const e = g.decide();
    expect(e.queueDepth * e.blockSize).toBeGreaterThan(first.queueDepth * first.blockSize);
  });

  it('garbage probes are counted and ignored; decisions stay in bounds', () => {
    const c = createController('canary');
    const GARBAGE = [0, -1, NaN, Infinity, -Infinity, 1e15];
    const random = seeded(5);
    let t = 0;
    for (let i = 0; i < 20_000; i++) {
      t += 2e6;
      const g = random() < 0.2;
      c.observeProbe({ latencyNs: g ? GARBAGE[Math.floor(random() * GARBAGE.length)]! : 1e5 + 1e5 * random(), bytes: 4096, atNs: t });
      if (i % 7 === 0) c.observe({ latencyNs: 3e5, bytes: 65536, atNs: t });
      const d = c.decide();
      expect(Number.isFinite(d.delayMs) && d.delayMs >= 0 && d.delayMs <= 500).toBe(true);
      expect(d.queueDepth >= 1 && d.queueDepth <= 32 && Number.isInteger(d.queueDepth)).toBe(true);
      expect(d.blockSize % 4096).toBe(0);
    }
    const rep = c.report();
    expect(rep.probes!.invalid).toBeGreaterThan(1000);
    expect(Number.isFinite(rep.probes!.targetMs)).toBe(true);
    // 1e15 ns probes were clamped, not taken as a target: the calibrated
    // target stays within the real probes' range times the factor.
    expect(rep.probes!.targetMs).toBeLessThan(1);
  });

  it('rejects bad canary options with the option named', () => {
    expect(() => createController('canary', { canary: { factor: 0.5 } })).toThrow(/canary\.factor/);
    expect(() => createController('canary', { canary: { quantile: 1 } })).toThrow(/canary\.quantile/);
    expect(() => createController('canary', { canary: { calibrate: 'yes' as unknown as boolean } })).toThrow(/canary\.calibrate/);
  });
});
