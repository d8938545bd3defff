/**
 * The classic rule as written (`threshold` with the 'proportional' law):
 * every block's latency is measured and smoothed, compared with the
 * threshold, and the next block is delayed by a time proportional to how far
 * above the threshold it is; at or below the threshold there is no delay.
 */
import { describe, expect, it } from 'vitest';
import { createController, resolveThrottleSettings } from '../../lib/throttle/index.js';
import { SimulatedDevice } from './simulated-device.js';
import { THROTTLE_PRESETS } from '../../lib/index.js';

const law = { threshold: { law: 'proportional' as const } };

/** Feeds `n` blocks of `latencyMs` each, 1 ms apart, and returns the decision after them. */
function feed(c: ReturnType<typeof createController>, latencyMs: number, n: number, at: { ns: number }): number {
  for (let i = 0; i < n; i++) {
    at.ns += 1e6;
    c.observe({ latencyNs: latencyMs * 1e6, bytes: 1 << 20, atNs: at.ns });
  }
  return c.decide().delayMs;
}

describe('threshold, proportional law (the classic rule)', () => {
  it('delays by the excess over the threshold, in proportion, and not at all below it', () => {
    const c = createController('threshold', { targetLatencyMs: 10, ...law });
    const at = { ns: 1e9 };
    // 60 samples: the EWMA (alpha 0.2) is within 1e-5 of the sample value.
    const d15 = feed(c, 15, 60, at);
    const d30 = feed(c, 30, 60, at);
    const d50 = feed(c, 50, 60, at);
    // Throttling value e = (L - T) / T; delay = e * T at gain 1: the excess.
    expect(d15).toBeCloseTo(5, 2);
    expect(d30).toBeCloseTo(20, 2);
    expect(d50).toBeCloseTo(40, 2);
    // Below the threshold: no delay at all, as soon as the smoothed latency
    // is there (no memory of how long it was above).
    expect(feed(c, 8, 10, at)).toBeGreaterThan(0); // the EWMA is still above 10 ms
    expect(feed(c, 8, 60, at)).toBe(0);
    expect(feed(c, 4, 60, at)).toBe(0);
    // Queue depth and request size stay at their maxima.
    const d = c.decide();
    expect(d.queueDepth).toBe(c.options.maxQueueDepth);
    expect(d.blockSize).toBe(c.options.maxBlockSize);
  });

  it('scales with its gain and stops at maxDelayMs', () => {
    const c = createController('threshold', {
      targetLatencyMs: 10,
      maxDelayMs: 100,
      threshold: { law: 'proportional', proportionalGain: 2 },
    });
    const at = { ns: 1e9 };
    expect(feed(c, 15, 60, at)).toBeCloseTo(10, 2);
    expect(feed(c, 1000, 60, at)).toBe(100);
  });

  it('on a simulated device: delays under a production load, more under a heavier one, none without', () => {
    const meanDelay = (iops: number): number => {
      const c = createController('threshold', { targetLatencyMs: 30, ...law });
      const load = iops > 0 ? [{ startMs: 0, endMs: 6000, iops }] : [];
      const r = new SimulatedDevice({ bytesPerSecond: 400e6, overheadUs: 50, load }).run(c, { durationMs: 6000 });
      const late = r.steps.filter((s) => s.atNs >= 2e9);
      expect(late.length).toBeGreaterThan(3);
      return late.reduce((a, s) => a + s.delayMs, 0) / late.length;
    };
    // 32 blocks of 1 MiB at 400 MB/s: ~84 ms for the last of a full queue,
    // so the idle device needs a target above that to see no delay.
    const idle = (() => {
      const c = createController('threshold', { targetLatencyMs: 150, ...law });
      const r = new SimulatedDevice({ bytesPerSecond: 400e6, overheadUs: 50 }).run(c, { durationMs: 4000 });
      return r.steps.filter((s) => s.atNs >= 2e9);
    })();
    expect(idle.length).toBeGreaterThan(100);
    for (const s of idle) expect(s.delayMs).toBe(0);
    const moderate = meanDelay(20000);
    const heavy = meanDelay(60000);
    expect(moderate).toBeGreaterThan(0);
    expect(heavy).toBeGreaterThan(moderate);
  });

  it('is selected by a job setting, and the classic preset names it with 30 ms and 20 ms', () => {
    expect(resolveThrottleSettings({ throttle: 'threshold', thresholdLaw: 'proportional' }).thresholdLaw).toBe(
      'proportional',
    );
    expect(resolveThrottleSettings({ throttle: 'threshold' }).thresholdLaw).toBe('integral');
    expect(() => resolveThrottleSettings({ throttle: 'parda', thresholdLaw: 'proportional' })).toThrow(
      /thresholdLaw: only the threshold controller has a law, and throttle is 'parda'/,
    );
    expect(() => resolveThrottleSettings({ throttle: 'threshold', thresholdLaw: 'linear' })).toThrow(
      /thresholdLaw: expected one of "integral", "proportional", got "linear"/,
    );
    const classic = resolveThrottleSettings(THROTTLE_PRESETS.classic);
    expect(classic).toMatchObject({
      throttle: 'threshold',
      thresholdLaw: 'proportional',
      latencyTargetMs: 30,
      admissionLimitMs: 20,
    });
  });
});
