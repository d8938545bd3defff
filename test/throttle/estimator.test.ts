import { describe, expect, it } from 'vitest';
import { LatencyEstimator } from '../../lib/throttle/index.js';
import { exactPercentile, seeded } from './helpers.js';

describe('LatencyEstimator', () => {
  it('smooths with an EWMA that converges to a new level', () => {
    const e = new LatencyEstimator({ alpha: 0.2 });
    expect(e.smoothedNs).toBe(0);
    e.observe(1e6, 1);
    expect(e.smoothedNs).toBe(1e6); // the first sample initialises it
    for (let i = 0; i < 50; i++) e.observe(5e6, 2 + i);
    expect(Math.abs(e.smoothedNs - 5e6) / 5e6).toBeLessThan(1e-3);
    // One step moves it by alpha of the difference.
    const before = e.smoothedNs;
    e.observe(before + 1e6, 100);
    expect(e.smoothedNs - before).toBeCloseTo(0.2e6, 0);
  });

  it('gives the median of the last k samples whatever their age', () => {
    const e = new LatencyEstimator({ windowSamples: 16, windowMs: 1000 });
    expect(e.recentMedianNs()).toBe(0);
    e.observe(7, 1);
    expect(e.recentMedianNs()).toBe(7);
    const random = seeded(9);
    const all: number[] = [];
    for (let i = 0; i < 40; i++) {
      const v = 1 + Math.floor(1e6 * random());
      all.push(v);
      e.observe(v, i * 1e6);
    }
    for (const k of [1, 2, 5, 9, 16, 100]) {
      const last = all.slice(-Math.min(k, 16)).sort((a, b) => a - b);
      expect(e.recentMedianNs(k)).toBe(last[(last.length - 1) >> 1]);
    }
    // A stall: the time window empties down to the late samples, the last 9 do not.
    for (let i = 0; i < 9; i++) e.observe(1e5, 1e9 + i);
    e.observe(2e9, 4e9);
    e.observe(2e9, 4e9 + 1);
    expect(e.percentiles().p50Ns).toBe(2e9);
    expect(e.recentMedianNs(9)).toBe(1e5);
  });

  it('gives the exact percentiles of the last N samples', () => {
    const random = seeded(5);
    const e = new LatencyEstimator({ windowSamples: 256, windowMs: 1e9 });
    const all: number[] = [];
    for (let i = 0; i < 1000; i++) {
      const v = 1e5 + 1e7 * random() ** 4;
      all.push(v);
      e.observe(v, i * 1e6);
    }
    const last = all.slice(-256);
    const p = e.percentiles();
    expect(p.count).toBe(256);
    expect(p.p50Ns).toBe(exactPercentile(last, 50));
    expect(p.p95Ns).toBe(exactPercentile(last, 95));
    expect(p.p99Ns).toBe(exactPercentile(last, 99));
    // Cached until the next sample, recomputed after it.
    expect(e.percentiles()).toBe(p);
    e.observe(1e9, 1000 * 1e6);
    const q = e.percentiles();
    expect(q).not.toBe(p);
    expect(q.p99Ns).toBe(exactPercentile([...all.slice(-255), 1e9], 99));
  });

  it('drops samples older than the time window', () => {
    const e = new LatencyEstimator({ windowSamples: 1000, windowMs: 100 });
    for (let i = 0; i < 100; i++) e.observe(50e6, i * 1e6); // 50 ms latencies during 0..99 ms
    for (let i = 0; i < 20; i++) e.observe(1e6, (300 + i) * 1e6); // 1 ms latencies at 300..319 ms
    const p = e.percentiles();
    expect(p.count).toBe(20);
    expect(p.p99Ns).toBe(1e6);
  });

  it('ignores garbage and clamps huge samples, as documented', () => {
    const e = new LatencyEstimator({ maxLatencyNs: 10e9 });
    e.observe(2e6, 1e6);
    for (const v of [0, -1, NaN, Infinity, -Infinity, 'x' as unknown as number]) {
      expect(e.observe(v, 2e6)).toBe('invalid');
    }
    expect(e.invalid).toBe(6);
    expect(e.count).toBe(1);
    expect(e.smoothedNs).toBe(2e6);
    expect(e.observe(1e15, 3e6)).toBe('clamped');
    expect(e.clamped).toBe(1);
    expect(e.lastNs).toBe(10e9);
    expect(Number.isFinite(e.smoothedNs)).toBe(true);
    expect(e.percentiles().p99Ns).toBe(10e9);
  });

  it('never lets its clock run back', () => {
    const e = new LatencyEstimator();
    e.observe(1e6, 5e9);
    e.observe(1e6, 1e9);
    e.observe(1e6, NaN);
    e.observe(1e6);
    expect(e.nowNs).toBe(5e9);
    expect(e.percentiles().count).toBe(4);
  });

  it('keeps percentile queries cheap: 100k samples with a query after each stay fast', () => {
    // Not a timing assertion: a bound on work. The window is fixed, so every
    // query selects over at most windowSamples values.
    const e = new LatencyEstimator({ windowSamples: 512 });
    const random = seeded(9);
    let checksum = 0;
    for (let i = 0; i < 100_000; i++) {
      e.observe(1e5 + 1e6 * random(), i * 1e5);
      checksum += e.percentiles().p95Ns;
    }
    expect(e.percentiles().count).toBe(512);
    expect(Number.isFinite(checksum)).toBe(true);
  });

  it('validates its options with messages that name them', () => {
    expect(() => new LatencyEstimator({ alpha: 0 })).toThrow(
      /estimator\.alpha: expected a number greater than 0 up to 1, got 0/,
    );
    expect(() => new LatencyEstimator({ windowSamples: 0 })).toThrow(/estimator\.windowSamples/);
    expect(() => new LatencyEstimator({ windowMs: -5 })).toThrow(/estimator\.windowMs.*got -5/);
  });
});
