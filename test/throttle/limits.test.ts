import { describe, expect, it } from 'vitest';
import {
  AdmissionGate,
  LatencyEstimator,
  LatencyHistogram,
  RateLimiter,
  autoTargetLatencyMs,
  createController,
} from '../../lib/throttle/index.js';
import { SimulatedDevice } from './simulated-device.js';

describe('RateLimiter', () => {
  for (const rate of [20e6, 100e6, 250e6]) {
    it(`holds an unthrottled job on the simulated device to ${rate / 1e6} MB/s`, () => {
      const limiter = new RateLimiter({ bytesPerSecond: rate });
      const r = new SimulatedDevice({ bytesPerSecond: 400e6 }).run(createController('off'), {
        durationMs: 10_000,
        rateLimiter: limiter,
      });
      // Over the run, including the initial burst: within 2 % of the cap.
      const measured = r.throughput(1000, 10_000);
      expect(Math.abs(measured - rate) / rate).toBeLessThan(0.02);
      const whole = r.bytes / 10;
      expect(whole).toBeLessThanOrEqual(rate * 1.001 + limiter.burstBytes / 10 + (1 << 20) / 10);
    });
  }

  it('does not raise a job above what the device gives', () => {
    const r = new SimulatedDevice({ bytesPerSecond: 400e6 }).run(createController('off'), {
      durationMs: 5000,
      rateLimiter: new RateLimiter({ bytesPerSecond: 10e9 }),
    });
    expect(r.throughput(1000, 5000)).toBeLessThan(400e6);
    expect(r.throughput(1000, 5000)).toBeGreaterThan(380e6);
  });

  it('answers the delay of a token bucket: burst first, then the rate, exactly', () => {
    const l = new RateLimiter({ bytesPerSecond: 1e6, burstBytes: 2e6 });
    expect(l.reserve(1e6, 0)).toBe(0);
    expect(l.reserve(1e6, 0)).toBe(0); // the burst is spent
    expect(l.reserve(1e6, 0)).toBeCloseTo(1000, 9); // 1 MB more at 1 MB/s
    expect(l.reserve(5e5, 0)).toBeCloseTo(1500, 9); // queued behind it
    // After waiting 1.5 s the balance is back at zero: the next block waits its own time.
    expect(l.reserve(1e5, 1.5e9)).toBeCloseTo(100, 9);
    // A long idle spell refills only up to the burst.
    expect(l.reserve(2e6, 100e9)).toBe(0);
    expect(l.reserve(1, 100e9)).toBeGreaterThan(0);
  });

  it('ignores garbage sizes and a clock that runs back', () => {
    const l = new RateLimiter({ bytesPerSecond: 1e6, burstBytes: 1e6 });
    for (const b of [NaN, -1, Infinity, 0]) expect(l.reserve(b, 0)).toBe(0);
    expect(l.reserve(1e6, 10e9)).toBe(0);
    const d = l.reserve(1e6, 5e9); // time went back: no refill, a full wait
    expect(d).toBeCloseTo(1000, 9);
    expect(l.reserve(0, NaN)).toBe(0);
  });

  it('validates its options', () => {
    expect(() => new RateLimiter({ bytesPerSecond: 0 })).toThrow(
      /bytesPerSecond: expected a number greater than 0, got 0/,
    );
    expect(() => new RateLimiter({ bytesPerSecond: NaN })).toThrow(/bytesPerSecond/);
    expect(() => new RateLimiter({ bytesPerSecond: 1e6, burstBytes: -1 })).toThrow(/burstBytes.*got -1/);
  });
});

describe('AdmissionGate', () => {
  it('admits below the limit and refuses above it', () => {
    const gate = new AdmissionGate({ admissionLimitMs: 20 });
    expect(gate.mayStart(5)).toBe(true);
    expect(gate.mayStart(20)).toBe(true);
    expect(gate.mayStart(20.01)).toBe(false);
  });

  it('admits when there is no evidence of load (no estimate yet, or garbage)', () => {
    const gate = new AdmissionGate({ admissionLimitMs: 20 });
    for (const v of [0, NaN, -1, Infinity]) expect(gate.mayStart(v)).toBe(true);
    expect(gate.mayStart(new LatencyEstimator())).toBe(true);
  });

  it('reads an estimator’s smoothed latency', () => {
    const gate = new AdmissionGate({ admissionLimitMs: 10 });
    const e = new LatencyEstimator();
    for (let i = 0; i < 20; i++) e.observe(30e6, i);
    expect(gate.mayStart(e)).toBe(false);
    for (let i = 0; i < 40; i++) e.observe(2e6, 100 + i);
    expect(gate.mayStart(e)).toBe(true);
  });

  it('decides when the next task of a parallel backup may start on a loaded device', () => {
    // Tasks start one by one while the device's latency (seen by the tasks'
    // own controllers) stays under the admission limit.
    const device = new SimulatedDevice({ load: [{ startMs: 0, endMs: 5000, iops: 12000 }] });
    const c = createController('parda', { targetLatencyMs: 8 });
    device.run(c, { durationMs: 5000 });
    expect(new AdmissionGate({ admissionLimitMs: 4 }).mayStart(c.latency)).toBe(false);
    expect(new AdmissionGate({ admissionLimitMs: 50 }).mayStart(c.latency)).toBe(true);
  });

  it('validates its option', () => {
    expect(() => new AdmissionGate({ admissionLimitMs: 0 })).toThrow(
      /admissionLimitMs: expected a number greater than 0/,
    );
    expect(() => new AdmissionGate({} as { admissionLimitMs: number })).toThrow(/admissionLimitMs.*got undefined/);
  });
});

describe('autoTargetLatencyMs', () => {
  it('sets the target at the idle median, within the bounds', () => {
    const h = new LatencyHistogram();
    for (let i = 0; i < 99; i++) h.record(2.5e6);
    h.record(3e6);
    expect(autoTargetLatencyMs(h)).toBeCloseTo(2.5, 1);
    expect(autoTargetLatencyMs(h, { multiplier: 2 })).toBeCloseTo(5, 1);
    const fast = new LatencyHistogram();
    fast.record(20e3);
    expect(autoTargetLatencyMs(fast)).toBe(0.25);
    const slow = new LatencyHistogram();
    slow.record(5e9);
    expect(autoTargetLatencyMs(slow)).toBe(1000);
  });

  it('is not set by the tail of a short probe beside other load, unless asked to', () => {
    // 32 reads at 0.6 ms and one stall of 30 ms: the p99 of 32 samples is the stall.
    const probe = new LatencyHistogram();
    for (let i = 0; i < 31; i++) probe.record(0.6e6 + i * 1e3);
    probe.record(30e6);
    expect(autoTargetLatencyMs(probe)).toBeCloseTo(0.615, 2);
    // The old rule, max(2 · p50, p99), on request.
    expect(autoTargetLatencyMs(probe, { multiplier: 2, floorPercentile: 99 })).toBeCloseTo(30, 0);
    const noisy = new LatencyHistogram();
    for (let i = 0; i < 90; i++) noisy.record(1e6);
    for (let i = 0; i < 10; i++) noisy.record(8e6);
    expect(autoTargetLatencyMs(noisy)).toBeCloseTo(1, 1);
    expect(autoTargetLatencyMs(noisy, { floorPercentile: 95 })).toBeCloseTo(8, 1);
    expect(() => autoTargetLatencyMs(noisy, { floorPercentile: 101 })).toThrow(
      /floorPercentile: expected a number from 0 up to 100, got 101/,
    );
    expect(() => autoTargetLatencyMs(noisy, { multiplier: 0 })).toThrow(
      /multiplier: expected a number greater than 0 up to 1000, got 0/,
    );
  });

  it('gives a target the controllers can hold on the simulated device', () => {
    // Probe: queue depth 1, largest requests, idle device.
    const probe = new LatencyHistogram();
    const pc = createController('off', { maxQueueDepth: 1 });
    const device = new SimulatedDevice({ bytesPerSecond: 400e6, overheadUs: 50 });
    for (const s of device.run(pc, { durationMs: 200 }).steps) probe.record(s.latencyNs);
    const target = autoTargetLatencyMs(probe);
    const c = createController('parda', { targetLatencyMs: target });
    const r = device.run(c, { durationMs: 3000 });
    // Full throughput on the idle device with the automatic target.
    expect(r.throughput(1000, 3000)).toBeGreaterThan(0.95 * device.bytesPerSecond * (2.62 / 2.67));
  });

  it('refuses an empty probe', () => {
    expect(() => autoTargetLatencyMs(new LatencyHistogram())).toThrow(
      /probe: expected a LatencyHistogram with at least one sample/,
    );
  });
});
